"""kube-proxy's IPv6 proxier in a dual-stack cluster, in both modes, against
shared/reference/dual-stack.md and kube-proxy's pkg/proxy/{iptables,nftables}/proxier.go:
the same chain names as IPv4 (the hash has no family), KUBE-SEP- hashing the endpoint as
net.JoinHostPort writes it, bracketed DNAT targets, no localhost NodePorts (`! -d ::1/128`,
no KUBE-FIREWALL localnet rule, no route_localnet), icmp6 rejects, the IPv6 pod network's
masquerade, and the `ip6 kube-proxy` table. Every expected line is written out as
ip6tables-save / kube-proxy's own dump shows it; hashes are computed here as kube-proxy
computes them."""

import base64
import hashlib
from types import SimpleNamespace

import pytest

from netlab.api.objects import SERVICE_NAME_LABEL, EndpointSlice, Port, SliceEndpoint
from netlab.api.spec import ServiceManifest, ServicePort
from netlab.node.proxy import iptables as kube_proxy
from netlab.node.proxy import nftables as kube_proxy_nft
from netlab.values import nftables as nft

POD_CIDR, POD_CIDR6 = "10.244.0.0/16", "fd00:10:244::/56"
SERVICE_CIDR, SERVICE_CIDR6 = "10.96.0.0/16", "fd00:10:96::/112"
NODE = SimpleNamespace(name="node-a", ip="172.18.0.2", ip6="fc00:f853:ccd:e793::2", netns="lab-node-a")
CLUSTER = SimpleNamespace(pod_subnet=POD_CIDR, pod_subnet6=POD_CIDR6, service_subnet=SERVICE_CIDR,
                          service_subnet6=SERVICE_CIDR6, dual=True, families=("IPv4", "IPv6"),
                          kube_proxy_mode="iptables")
P80 = (ServicePort(80, "TCP", "p80", 80),)
EP6, EP4 = "fd00:10:180::1", "10.180.0.1"
NOTE = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'


def iptables_hash(text):
    """iptables proxier: base32(sha256(text))[:16] (portProtoHash, servicePortEndpointChainName)."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def nft_name(prefix, base):
    """nftables proxier: prefix + base32(sha256(base))[:8] + "-" + base (hashedName)."""
    return f"{prefix}{base64.b32encode(hashlib.sha256(base.encode()).digest()).decode()[:8]}-{base}"


# ns1/svc1:p80 TCP, as kube-proxy's proxier_test.go names it; the same in both families.
SVC = "KUBE-SVC-XPGD46QRK7WJZT7O"
EXT = "KUBE-EXT-XPGD46QRK7WJZT7O"
# net.JoinHostPort("fd00:10:180::1", "80") == "[fd00:10:180::1]:80"
SEP6 = "KUBE-SEP-" + iptables_hash("ns1/svc1:p80tcp[fd00:10:180::1]:80")
SEP4 = "KUBE-SEP-SXIVWICOYRO3J4NJ"       # 10.180.0.1:80 (kube-proxy's test value)


def dual_service(ns="ns1", name="svc1", ips=("10.96.5.5", "fd00:10:96::5"), ports=P80, **kw):
    families = tuple("IPv6" if ":" in ip else "IPv4" for ip in ips)
    return ServiceManifest(ns, name, {}, cluster_ip=ips[0], cluster_ips=ips, ip_families=families,
                           ip_family_policy="PreferDualStack" if len(ips) == 2 else "SingleStack",
                           ports=ports, selector={"app": name}, **kw)


def slice_of(svc, family, *ips, node="node-b"):
    eps = tuple(SliceEndpoint((ip,), ready=True, serving=True, terminating=False, node=node, pod=f"p{i}")
                for i, ip in enumerate(ips))
    suffix = "v6xyz" if family == "IPv6" else "v4abc"
    return EndpointSlice(svc.namespace, f"{svc.name}-{suffix}", {SERVICE_NAME_LABEL: svc.name}, address_type=family,
                         endpoints=eps, ports=(Port("p80", 80, "TCP"),) if ips else ())


def tables6(services, slices):
    return kube_proxy.node_tables(services, slices, NODE, POD_CIDR6, "IPv6")


def chain(t, table, name):
    return list(t[table].chains.get(name, ()))


# --- iptables mode: ip6tables ----------------------------------------------------------------

def test_ipv6_endpoint_chain_hashes_the_bracketed_endpoint():
    key = kube_proxy.port_key("ns1", "svc1", "p80", "TCP")
    assert kube_proxy.endpoint_chain(key, "[fd00:10:180::1]:80") == SEP6
    assert SEP6 != "KUBE-SEP-" + iptables_hash("ns1/svc1:p80tcpfd00:10:180::1:80")


def test_a_dual_stack_service_in_ip6tables_exactly():
    svc = dual_service()
    t = tables6([svc], [slice_of(svc, "IPv4", EP4), slice_of(svc, "IPv6", EP6)])
    assert chain(t, "nat", "KUBE-SERVICES") == [
        f'-d fd00:10:96::5/128 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j {SVC}',
        f"! -d ::1/128 -m comment --comment {NOTE} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
    ]
    assert chain(t, "nat", SVC) == [
        '! -s fd00:10:244::/56 -d fd00:10:96::5/128 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" '
        "-m tcp --dport 80 -j KUBE-MARK-MASQ",
        f'-m comment --comment "ns1/svc1:p80 -> [fd00:10:180::1]:80" -j {SEP6}',
    ]
    assert chain(t, "nat", SEP6) == [
        '-s fd00:10:180::1/128 -m comment --comment "ns1/svc1:p80" -j KUBE-MARK-MASQ',
        '-p tcp -m comment --comment "ns1/svc1:p80" -m tcp -j DNAT --to-destination [fd00:10:180::1]:80',
    ]
    assert SEP4 not in t["nat"].chains                    # the IPv4 slice is the IPv4 proxier's


def test_the_ipv4_proxier_of_the_same_service_keeps_its_own_rules():
    svc = dual_service()
    t = kube_proxy.node_tables([svc], [slice_of(svc, "IPv4", EP4), slice_of(svc, "IPv6", EP6)], NODE, POD_CIDR)
    assert chain(t, "nat", SVC) == [
        '! -s 10.244.0.0/16 -d 10.96.5.5/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" '
        "-m tcp --dport 80 -j KUBE-MARK-MASQ",
        f'-m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j {SEP4}',
    ]
    assert SEP6 not in t["nat"].chains
    assert chain(t, "nat", "KUBE-SERVICES")[-1] == \
        f"-m comment --comment {NOTE} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"


def test_no_localhost_nodeports_in_ipv6():
    t = tables6([], [])
    # kube-proxy ensures KUBE-FIREWALL and kubelet's jumps to it in both families, but only
    # the IPv4 proxier (localhost NodePorts, route_localnet) writes the localnet guard.
    assert "KUBE-FIREWALL" in t["filter"].chains and chain(t, "filter", "KUBE-FIREWALL") == []
    assert chain(t, "filter", "INPUT")[-1] == chain(t, "filter", "OUTPUT")[-1] == "-j KUBE-FIREWALL"
    v4 = kube_proxy.node_tables([], [], NODE, POD_CIDR)
    assert chain(v4, "filter", "KUBE-FIREWALL") == [
        '! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" '
        "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"]
    assert chain(t, "nat", "KUBE-SERVICES") == [
        f"! -d ::1/128 -m comment --comment {NOTE} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"]


def test_the_same_plumbing_in_both_families():
    t6, t4 = tables6([], []), kube_proxy.node_tables([], [], NODE, POD_CIDR)
    for table in ("nat", "filter"):
        assert list(t6[table].chains) == list(t4[table].chains)
    assert chain(t6, "nat", "KUBE-POSTROUTING") == [
        "-m mark ! --mark 0x4000/0x4000 -j RETURN", "-j MARK --set-xmark 0x4000/0x0",
        '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully']
    assert chain(t6, "filter", "KUBE-FORWARD") == chain(t4, "filter", "KUBE-FORWARD")


def test_no_endpoints_rejects_with_icmp6_port_unreachable():
    svc = dual_service()
    t = tables6([svc], [slice_of(svc, "IPv4", EP4)])        # endpoints in IPv4 only
    assert chain(t, "filter", "KUBE-SERVICES") == [
        '-d fd00:10:96::5/128 -p tcp -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp --dport 80 '
        "-j REJECT --reject-with icmp6-port-unreachable"]
    assert SVC not in t["nat"].chains


def test_a_service_without_an_ipv6_cluster_ip_has_no_ipv6_rules():
    v4_only = dual_service(ips=("10.96.5.5",))
    t = tables6([v4_only], [slice_of(v4_only, "IPv4", EP4)])
    assert t == tables6([], [])
    headless = dual_service(ips=("None",))
    assert tables6([headless], []) == tables6([], [])


def test_an_ipv6_single_stack_service_is_the_ipv6_proxiers_alone():
    v6_only = dual_service(ips=("fd00:10:96::7",))
    slices = [slice_of(v6_only, "IPv6", EP6)]
    assert kube_proxy.node_tables([v6_only], slices, NODE, POD_CIDR) == kube_proxy.node_tables([], [], NODE, POD_CIDR)
    assert chain(tables6([v6_only], slices), "nat", "KUBE-SERVICES")[0].startswith("-d fd00:10:96::7/128 ")


def test_nodeport_in_ipv6():
    svc = dual_service(type="NodePort", external_traffic_policy="Cluster",
                       ports=(ServicePort(80, "TCP", "p80", 80, node_port=30080),))
    t = tables6([svc], [slice_of(svc, "IPv6", EP6)])
    assert chain(t, "nat", "KUBE-NODEPORTS") == ['-p tcp -m comment --comment "ns1/svc1:p80" -m tcp --dport 30080 '
                                                 f"-j {EXT}"]
    assert chain(t, "nat", EXT) == [
        '-m comment --comment "masquerade traffic for ns1/svc1:p80 external destinations" -j KUBE-MARK-MASQ',
        f"-j {SVC}"]
    # The node's own addresses (its IPv6 LAN address among them), not ::1.
    assert chain(t, "nat", "KUBE-SERVICES")[-1] == \
        f"! -d ::1/128 -m comment --comment {NOTE} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"


def test_external_ips_of_the_other_family_are_left_out():
    svc = dual_service(external_ips=("192.168.99.22", "fd00:99::22"))
    t = tables6([svc], [slice_of(svc, "IPv6", EP6)])
    assert [r for r in chain(t, "nat", "KUBE-SERVICES") if "external IP" in r] == [
        f'-d fd00:99::22/128 -p tcp -m comment --comment "ns1/svc1:p80 external IP" -m tcp --dport 80 -j {EXT}']


def test_affinity_in_ipv6_prints_the_128_bit_recent_mask():
    svc = dual_service(session_affinity="ClientIP", affinity_timeout=10800)
    t = tables6([svc], [slice_of(svc, "IPv6", EP6)])
    mask = "--mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource"
    assert chain(t, "nat", SVC)[1] == (f'-m comment --comment "ns1/svc1:p80 -> [fd00:10:180::1]:80" -m recent --rcheck '
                                       f"--seconds 10800 --reap --name {SEP6} {mask} -j {SEP6}")
    assert chain(t, "nat", SEP6)[1] == (f'-p tcp -m comment --comment "ns1/svc1:p80" -m recent --set --name {SEP6} '
                                        f"{mask} -m tcp -j DNAT --to-destination [fd00:10:180::1]:80")


def test_two_ipv6_endpoints_sorted_as_joinhostport_strings():
    svc = dual_service()
    t = tables6([svc], [slice_of(svc, "IPv6", "fd00:10:180::2", EP6)])
    key = "ns1/svc1:p80tcp"
    assert chain(t, "nat", SVC)[1:] == [
        '-m comment --comment "ns1/svc1:p80 -> [fd00:10:180::1]:80" -m statistic --mode random '
        f"--probability 0.50000000000 -j KUBE-SEP-{iptables_hash(key + '[fd00:10:180::1]:80')}",
        '-m comment --comment "ns1/svc1:p80 -> [fd00:10:180::2]:80" '
        f"-j KUBE-SEP-{iptables_hash(key + '[fd00:10:180::2]:80')}",
    ]


def test_ipv6_partial_sync_writes_the_changed_chains():
    svc = dual_service()
    before, after = [slice_of(svc, "IPv6", EP6)], [slice_of(svc, "IPv6", EP6, "fd00:10:180::2")]
    changes = kube_proxy.sync_changes([svc], before, [svc], after, NODE, POD_CIDR6, "IPv6")
    sep2 = "KUBE-SEP-" + iptables_hash("ns1/svc1:p80tcp[fd00:10:180::2]:80")
    assert set(changes["nat"][0]) == {SVC, sep2} and changes["nat"][1] == []
    assert changes["nat"][0][sep2][1].endswith("--to-destination [fd00:10:180::2]:80")
    # The IPv4 proxier saw nothing change.
    assert kube_proxy.sync_changes([svc], before, [svc], after, NODE, POD_CIDR) == {"nat": ({}, []), "filter": ({}, [])}


def state(mode="iptables", dual=True, services=(), slices=()):
    cluster = SimpleNamespace(**{**vars(CLUSTER), "kube_proxy_mode": mode, "dual": dual, "ipv4": True, "ipv6": dual,
                                 "families": ("IPv4", "IPv6") if dual else ("IPv4",)})
    return SimpleNamespace(cluster=cluster, services=list(services), endpoint_slices=list(slices))


def test_the_iptables_plan_of_a_dual_node_has_both_families():
    svc = dual_service()
    slices = [slice_of(svc, "IPv4", EP4), slice_of(svc, "IPv6", EP6)]
    plan = kube_proxy.node_plan(state(services=[svc], slices=slices), NODE)
    assert set(plan.ip6tables) == {"nat", "filter"}
    assert plan.ip6tables == tables6([svc], slices)
    assert plan.iptables == kube_proxy.node_tables([svc], slices, NODE, POD_CIDR)
    assert plan.sysctls == (("net/ipv4/conf/all/route_localnet", "1"),)     # IPv4's alone
    single = kube_proxy.node_plan(state(dual=False, services=[svc], slices=slices), NODE)
    assert single.ip6tables == {} and single.iptables == plan.iptables
    assert kube_proxy.node_plan(state(), NODE, rules=False).ip6tables == {}


# --- nftables mode: the ip6 kube-proxy table ---------------------------------------------------

def table6(services, slices):
    return kube_proxy_nft.node_table(services, slices, NODE, CLUSTER, "IPv6")


def test_the_ip6_table_base_rules():
    t = table6([], [])
    assert (t.family, t.ref, t.comment) == ("ip6", "ip6 kube-proxy", "rules for kube-proxy")
    dump = nft.dump(t)
    for line in [
        'add rule ip6 kube-proxy cluster-ips-check ip6 daddr @cluster-ips reject comment '
        '"Reject traffic to invalid ports of ClusterIPs"',
        'add rule ip6 kube-proxy cluster-ips-check ip6 daddr { fd00:10:96::/112 } drop comment '
        '"Drop traffic to unallocated ClusterIPs"',
        "add rule ip6 kube-proxy firewall-check ip6 daddr . meta l4proto . th dport vmap @firewall-ips",
        "add rule ip6 kube-proxy nodeport-endpoints-check ip6 daddr @nodeport-ips meta l4proto . th dport "
        "vmap @no-endpoint-nodeports",
        "add rule ip6 kube-proxy reject-chain reject",          # ICMPv6 port unreachable in an ip6 table
        "add rule ip6 kube-proxy services ip6 daddr . meta l4proto . th dport vmap @service-ips",
        "add rule ip6 kube-proxy services ip6 daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        "add rule ip6 kube-proxy service-endpoints-check ip6 daddr . meta l4proto . th dport vmap "
        "@no-endpoint-services",
        'add set ip6 kube-proxy cluster-ips { type ipv6_addr ; comment "Active ClusterIPs" ; }',
        'add set ip6 kube-proxy nodeport-ips { type ipv6_addr ; comment "IPs that accept NodePort traffic" ; }',
        "add element ip6 kube-proxy nodeport-ips { fc00:f853:ccd:e793::2 }",       # the node's IPv6 address
        'add map ip6 kube-proxy service-ips { type ipv6_addr . inet_proto . inet_service : verdict ; '
        'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }',
        'add map ip6 kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; '
        'comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }',
        "add chain ip6 kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }",
        "add rule ip6 kube-proxy masquerading masquerade fully-random",
    ]:
        assert line in dump
    assert not [line for line in dump if " ip daddr" in line or " ip saddr" in line or "ipv4_addr" in line]
    # The same chains and sets as the ip table's.
    t4 = kube_proxy_nft.node_table([], [], NODE, CLUSTER)
    assert list(t.chains) == list(t4.chains) and list(t.sets) == list(t4.sets)


def test_a_dual_stack_service_in_the_ip6_table_exactly():
    svc = dual_service()
    t = table6([svc], [slice_of(svc, "IPv4", EP4), slice_of(svc, "IPv6", EP6)])
    service = nft_name("service-", "ns1/svc1/tcp/p80")
    endpoint = nft_name("endpoint-", "ns1/svc1/tcp/p80__fd00.10.180..1/80")
    assert service == "service-ULMVA6XW-ns1/svc1/tcp/p80"          # the IPv4 table's name (kube-proxy's test)
    assert list(t.chains[service].rules) == [
        "ip6 daddr fd00:10:96::5 tcp dport 80 ip6 saddr != fd00:10:244::/56 jump mark-for-masquerade",
        f"numgen random mod 1 vmap {{ 0 : goto {endpoint} }}"]
    assert list(t.chains[endpoint].rules) == [
        "ip6 saddr fd00:10:180::1 jump mark-for-masquerade",
        "meta l4proto tcp dnat to [fd00:10:180::1]:80"]
    assert t.members("cluster-ips") == [nft.Element("cluster-ips", "fd00:10:96::5")]
    assert t.members("service-ips") == [nft.Element("service-ips", "fd00:10:96::5 . tcp . 80", f"goto {service}")]
    assert not [c for c in t.chains if "10.180.0.1" in c]


def test_ip6_table_no_endpoints_and_nodeport():
    svc = dual_service(type="NodePort", external_traffic_policy="Cluster",
                       ports=(ServicePort(80, "TCP", "p80", 80, node_port=30080),))
    t = table6([svc], [])
    assert t.members("no-endpoint-services") == [
        nft.Element("no-endpoint-services", "fd00:10:96::5 . tcp . 80", "goto reject-chain", "ns1/svc1:p80")]
    assert t.members("no-endpoint-nodeports") == [
        nft.Element("no-endpoint-nodeports", "tcp . 30080", "goto reject-chain", "ns1/svc1:p80")]
    t = table6([svc], [slice_of(svc, "IPv6", EP6)])
    external = nft_name("external-", "ns1/svc1/tcp/p80")
    assert t.members("service-nodeports") == [nft.Element("service-nodeports", "tcp . 30080", f"goto {external}")]


def test_ip6_table_affinity_set_is_ipv6_typed():
    svc = dual_service(session_affinity="ClientIP", affinity_timeout=10800)
    t = table6([svc], [slice_of(svc, "IPv6", EP6)])
    affinity = nft_name("affinity-", "ns1/svc1/tcp/p80__fd00.10.180..1/80")
    endpoint = nft_name("endpoint-", "ns1/svc1/tcp/p80__fd00.10.180..1/80")
    assert nft.add_set(t, t.sets[affinity]) == \
        f"add set ip6 kube-proxy {affinity} {{ type ipv6_addr ; flags dynamic,timeout ; timeout 10800s ; }}"
    assert f"update @{affinity} {{ ip6 saddr }}" in t.chains[endpoint].rules
    assert f"ip6 saddr @{affinity} goto {endpoint}" in t.chains[nft_name("service-", "ns1/svc1/tcp/p80")].rules


def test_the_nftables_plan_of_a_dual_node_has_both_tables():
    svc = dual_service()
    slices = [slice_of(svc, "IPv4", EP4), slice_of(svc, "IPv6", EP6)]
    plan = kube_proxy_nft.node_plan(state("nftables", services=[svc], slices=slices), NODE)
    assert list(plan.nftables) == ["ip kube-proxy", "ip6 kube-proxy"]
    assert plan.nftables["ip6 kube-proxy"] == table6([svc], slices)
    assert plan.nftables["ip kube-proxy"] == kube_proxy_nft.node_table([svc], slices, NODE, CLUSTER)
    assert list(kube_proxy_nft.node_plan(state("nftables", dual=False), NODE).nftables) == ["ip kube-proxy"]
    assert kube_proxy_nft.node_plan(state("nftables"), NODE, rules=False).nftables == {}


def test_ip6_partial_sync_blocks_and_live_cluster_ips():
    svc = dual_service()
    pairs = kube_proxy_nft.sync([svc], [], [svc], [slice_of(svc, "IPv6", EP6)], NODE, CLUSTER, "IPv6")
    (before, after), = pairs
    assert before.elements == [nft.Element("cluster-ips", "fd00:10:96::5"),
                               nft.Element("no-endpoint-services", "fd00:10:96::5 . tcp . 80", "goto reject-chain",
                                           "ns1/svc1:p80")]
    assert nft_name("endpoint-", "ns1/svc1/tcp/p80__fd00.10.180..1/80") in after.chains
    services = [svc, dual_service("ns2", "v4", ("10.96.0.9",))]
    assert kube_proxy_nft.live_cluster_ips(services, "IPv6") == {"fd00:10:96::5"}
    assert kube_proxy_nft.empty_table("IPv6").ref == "ip6 kube-proxy"


@pytest.mark.parametrize("rule", [
    "ip6 daddr fd00:10:96::5 tcp dport 80 ip6 saddr != fd00:10:244::/56 jump mark-for-masquerade",
    "meta l4proto tcp dnat to [fd00:10:180::1]:80",
])
def test_ipv6_rules_list_back_as_written(rule):
    """`nft list` prints these IPv6 rules back unchanged (checked on a 6.x kernel with nft 1.0)."""
    assert nft.listed(rule) == rule
    assert nft.listed("ip6 daddr { fd00:10:96::/112 } drop") == "ip6 daddr fd00:10:96::/112 drop"


def test_a_gone_ipv6_udp_endpoint_is_a_stale_flow_of_the_ipv6_proxier_only():
    """Each family's proxier clears its own conntrack table's UDP flows to endpoints that left."""
    from netlab.node.proxy import endpointslicecache as cache
    udp = (ServicePort(53, "UDP", "dns", 53),)
    svc = dual_service(ports=udp)

    def slices(*ips6):
        s4, s6 = slice_of(svc, "IPv4", EP4), slice_of(svc, "IPv6", *ips6)
        return [s4, s6.__class__(**{**s6.__dict__, "ports": (Port("dns", 53, "UDP"),) if ips6 else ()})]
    before, after = slices(EP6, "fd00:10:180::2"), slices("fd00:10:180::2")
    assert cache.stale_udp_flows([svc], before, [svc], after, "IPv6") == [("fd00:10:96::5", 53, EP6)]
    assert cache.stale_udp_flows([svc], before, [svc], after, "IPv4") == []
