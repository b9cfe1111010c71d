"""kube-proxy's iptables mode against shared/REFERENCE.md: chain names, hooks, per-service
rules, endpoint order and probabilities, NodePort, externalTrafficPolicy Local, affinity,
services without endpoints. Every expected line is written out as a real node's
`iptables-save` shows it."""

from types import SimpleNamespace

import pytest

from netlab.api.objects import SERVICE_NAME_LABEL, EndpointSlice, Port, SliceEndpoint
from netlab.api.spec import ServiceManifest, ServicePort
from netlab.node.proxy import iptables as kube_proxy

POD_CIDR = "10.244.0.0/16"
NODE = SimpleNamespace(name="node-a")

# kube-proxy's names for ns1/svc1:p80 (TCP), written out: base32(sha256("ns1/svc1:p80tcp"))[:16]
# and, per endpoint, of that string + "ip:port". The FW, EXT, SVL and 10.180.2.1 names are
# the ones kube-proxy's own proxier_test.go expects.
SVC = "KUBE-SVC-XPGD46QRK7WJZT7O"
SVL = "KUBE-SVL-XPGD46QRK7WJZT7O"
EXT = "KUBE-EXT-XPGD46QRK7WJZT7O"
FW = "KUBE-FW-XPGD46QRK7WJZT7O"
SEP_1 = "KUBE-SEP-SXIVWICOYRO3J4NJ"          # 10.180.0.1:80
SEP_2 = "KUBE-SEP-LXVODXWDISEETFEF"          # 10.180.0.2:80
SEP_REMOTE = "KUBE-SEP-ZX7GRIZKSNUQ3LAJ"     # 10.180.2.1:80


@pytest.mark.parametrize("ns, name, port, proto, chain", [
    ("ns1", "svc1", "p80", "TCP", "KUBE-SVC-XPGD46QRK7WJZT7O"),
    ("ns1", "svc1", None, "TCP", "KUBE-SVC-AQI2S6QIMU7PVVRP"),
    ("kube-system", "kube-dns", "dns", "UDP", "KUBE-SVC-TCOU7JCQXEZGVUNU"),
    ("default", "kubernetes", "https", "TCP", "KUBE-SVC-NPX46M4PTMTKRN6Y"),
])
def test_service_chain(ns, name, port, proto, chain):
    assert kube_proxy.service_chain("KUBE-SVC-", kube_proxy.port_key(ns, name, port, proto)) == chain


def test_endpoint_chain():
    key = kube_proxy.port_key("ns1", "svc1", "p80", "TCP")
    assert kube_proxy.endpoint_chain(key, "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"


def service(ns="ns1", name="svc1", ip="10.96.5.5", ports=(ServicePort(80, "TCP", "p80", 80),), **kw):
    return ServiceManifest(ns, name, kw.pop("labels", {}), cluster_ip=ip, ports=ports,
                           selector={"app": name}, **kw)


def endpoint(ip, node, i):
    return SliceEndpoint((ip,), ready=True, serving=True, terminating=False, node=node, pod=f"pod-{i}", uid=f"uid-{i}")


def endpoints(svc, ips, port=None, nodes=None):
    """Ready endpoints of a service, in one EndpointSlice: `ips` on `port` (the first service
    port's target)."""
    p = svc.ports[0]
    eps = tuple(endpoint(ip, (nodes or {}).get(ip, "node-b"), i) for i, ip in enumerate(ips))
    return EndpointSlice(svc.namespace, f"{svc.name}-x2b4c", {SERVICE_NAME_LABEL: svc.name}, endpoints=eps,
                         ports=(Port(p.name, port or p.target_port, p.protocol),) if ips else ())


def tables(svc, eps, node=NODE):
    return kube_proxy.node_tables([svc], [eps], node, POD_CIDR)


def rules(tables, table, chain):
    return list(tables[table].chains.get(chain, ()))


# --- the fixed part ----------------------------------------------------------------------

def test_hooks_in_a_real_nodes_order():
    t = kube_proxy.node_tables([], [], NODE, POD_CIDR)
    nat = [f"-A {c} {r}" for c in ("PREROUTING", "OUTPUT", "POSTROUTING") for r in rules(t, "nat", c)]
    assert nat == [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    ]
    flt = [f"-A {c} {r}" for c in ("INPUT", "FORWARD", "OUTPUT") for r in rules(t, "filter", c)]
    assert flt == [
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A INPUT -j KUBE-FIREWALL',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -j KUBE-FIREWALL',
    ]


def test_chains_always_declared_and_the_plumbing():
    t = kube_proxy.node_tables([], [], NODE, POD_CIDR)
    assert set(t["nat"].user_chains()) == {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"}
    assert set(t["filter"].user_chains()) == {"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD",
                                             "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL", "KUBE-FIREWALL"}
    assert rules(t, "nat", "KUBE-MARK-MASQ") == ["-j MARK --set-xmark 0x4000/0x4000"]
    assert rules(t, "nat", "KUBE-POSTROUTING") == [
        "-m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-j MARK --set-xmark 0x4000/0x0",
        '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    ]
    assert rules(t, "filter", "KUBE-FORWARD") == [
        "-m conntrack --ctstate INVALID -j DROP",
        '-m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
        '-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    ]
    assert rules(t, "filter", "KUBE-FIREWALL") == [
        '! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" '
        '-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP']
    assert rules(t, "nat", "KUBE-SERVICES") == [
        '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" '
        '-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS']
    assert not any(c.startswith(("KUBE-MARK-DROP", "KUBE-XLB-")) for c in t["nat"].chains)


# --- ClusterIP ---------------------------------------------------------------------------

def test_kube_dns_udp_exactly_as_reference_shows_it():
    svc = service("kube-system", "kube-dns", "10.96.0.10", (ServicePort(53, "UDP", "dns", 53),))
    t = tables(svc, endpoints(svc, ["10.244.0.2", "10.244.0.3"]))
    assert rules(t, "nat", "KUBE-SERVICES")[0] == (
        '-d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 '
        '-j KUBE-SVC-TCOU7JCQXEZGVUNU')
    assert rules(t, "nat", "KUBE-SVC-TCOU7JCQXEZGVUNU") == [
        '! -s 10.244.0.0/16 -d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" '
        '-m udp --dport 53 -j KUBE-MARK-MASQ',
        '-m comment --comment "kube-system/kube-dns:dns -> 10.244.0.2:53" -m statistic --mode random '
        '--probability 0.50000000000 -j KUBE-SEP-YIL6JZP7A3QYXJU2',
        '-m comment --comment "kube-system/kube-dns:dns -> 10.244.0.3:53" -j KUBE-SEP-6E7XQMQ4RAYOWTTM',
    ]
    assert rules(t, "nat", "KUBE-SEP-6E7XQMQ4RAYOWTTM") == [
        '-s 10.244.0.3/32 -m comment --comment "kube-system/kube-dns:dns" -j KUBE-MARK-MASQ',
        '-p udp -m comment --comment "kube-system/kube-dns:dns" -m udp -j DNAT --to-destination 10.244.0.3:53',
    ]


def test_one_endpoint_is_an_unconditional_jump():
    svc = service()
    t = tables(svc, endpoints(svc, ["10.180.0.1"]))
    assert rules(t, "nat", "KUBE-SVC-XPGD46QRK7WJZT7O")[1:] == [
        '-m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ']


def test_three_endpoints_probabilities_as_the_kernel_stores_them():
    svc = service()
    svc_rules = rules(tables(svc, endpoints(svc, ["10.180.0.3", "10.180.0.1", "10.180.0.2"])),
                      "nat", "KUBE-SVC-XPGD46QRK7WJZT7O")[1:]
    assert "-m statistic --mode random --probability 0.33333333349 -j" in svc_rules[0]
    assert "-m statistic --mode random --probability 0.50000000000 -j" in svc_rules[1]
    assert "--probability" not in svc_rules[2]
    assert ["10.180.0.1:80", "10.180.0.2:80", "10.180.0.3:80"] == [r.split("-> ")[1].split('"')[0] for r in svc_rules]


def test_eleven_endpoints_sorted_as_strings_with_one_rule_each():
    svc = service()
    ips = [f"10.180.0.{i}" for i in range(1, 12)]
    svc_rules = rules(tables(svc, endpoints(svc, ips)), "nat", "KUBE-SVC-XPGD46QRK7WJZT7O")[1:]
    order = [r.split("-> ")[1].split('"')[0] for r in svc_rules]
    assert order == sorted(f"{ip}:80" for ip in ips)           # "10.180.0.10:80" before "10.180.0.2:80"
    assert order[:3] == ["10.180.0.10:80", "10.180.0.11:80", "10.180.0.1:80"]
    assert [("--probability" in r) for r in svc_rules] == [True] * 10 + [False]
    assert "--probability 0.09090909082 -j" in svc_rules[0]                # 1/11 ("0.0909090909") as stored
    assert "--probability 0.50000000000 -j" in svc_rules[9]


def test_unnamed_port():
    svc = service(ports=(ServicePort(80, "TCP", "", 8080),))
    t = tables(svc, endpoints(svc, ["10.180.0.1"]))
    assert rules(t, "nat", "KUBE-SERVICES")[0] == (
        '-d 10.96.5.5/32 -p tcp -m comment --comment "ns1/svc1 cluster IP" -m tcp --dport 80 -j KUBE-SVC-AQI2S6QIMU7PVVRP')
    assert rules(t, "nat", "KUBE-SEP-SIJ6H26VECT3HUUR")[1] == '-p tcp -m comment --comment "ns1/svc1" -m tcp -j DNAT --to-destination 10.180.0.1:8080'


def test_session_affinity_recent_checks_before_the_probabilities():
    svc = service(session_affinity="ClientIP", affinity_timeout=10800)
    t = tables(svc, endpoints(svc, ["10.180.0.1", "10.180.0.2"]))
    sep1, sep2 = SEP_1, SEP_2
    assert rules(t, "nat", "KUBE-SVC-XPGD46QRK7WJZT7O")[1:] == [
        f'-m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m recent --rcheck --seconds 10800 --reap '
        f'--name {sep1} --mask 255.255.255.255 --rsource -j {sep1}',
        f'-m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -m recent --rcheck --seconds 10800 --reap '
        f'--name {sep2} --mask 255.255.255.255 --rsource -j {sep2}',
        f'-m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.50000000000 -j {sep1}',
        f'-m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j {sep2}',
    ]
    assert rules(t, "nat", sep1)[1] == (
        f'-p tcp -m comment --comment "ns1/svc1:p80" -m recent --set --name {sep1} --mask 255.255.255.255 --rsource '
        '-m tcp -j DNAT --to-destination 10.180.0.1:80')


def test_no_endpoints_rejects_in_filter_and_writes_no_nat_chain():
    svc = service()
    t = tables(svc, endpoints(svc, []))
    assert rules(t, "filter", "KUBE-SERVICES") == [
        '-d 10.96.5.5/32 -p tcp -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp --dport 80 '
        '-j REJECT --reject-with icmp-port-unreachable']
    assert not [c for c in t["nat"].chains if c.startswith(("KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-"))]
    assert len(rules(t, "nat", "KUBE-SERVICES")) == 1            # only the NodePorts jump


@pytest.mark.parametrize("svc", [
    service(ip="None"),
    service(labels={"service.kubernetes.io/headless": ""}),
    service(labels={"service.kubernetes.io/service-proxy-name": "other"}),
])
def test_services_kube_proxy_ignores(svc):
    t = tables(svc, endpoints(svc, ["10.180.0.1"]))
    assert t == kube_proxy.node_tables([], [], NODE, POD_CIDR)


# --- NodePort and externalTrafficPolicy -------------------------------------------------

def nodeport(policy="Cluster"):
    return service(type="NodePort", ports=(ServicePort(80, "TCP", "p80", 80, 30080),), external_traffic_policy=policy)


def test_nodeport_cluster_policy():
    svc = nodeport()
    t = tables(svc, endpoints(svc, ["10.180.0.1"]))
    assert rules(t, "nat", "KUBE-NODEPORTS") == [
        '-p tcp -m comment --comment "ns1/svc1:p80" -m tcp --dport 30080 -j KUBE-EXT-XPGD46QRK7WJZT7O']
    assert rules(t, "nat", EXT) == [
        '-m comment --comment "masquerade traffic for ns1/svc1:p80 external destinations" -j KUBE-MARK-MASQ',
        "-j KUBE-SVC-XPGD46QRK7WJZT7O"]
    assert rules(t, "nat", "KUBE-SERVICES")[-1].endswith("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")


def test_local_policy_with_a_local_endpoint_uses_the_svl_chain():
    svc = nodeport("Local")
    t = tables(svc, endpoints(svc, ["10.180.0.1", "10.180.2.1"], nodes={"10.180.2.1": "node-a"}))
    assert rules(t, "nat", EXT) == [
        '-s 10.244.0.0/16 -m comment --comment "pod traffic for ns1/svc1:p80 external destinations" -j KUBE-SVC-XPGD46QRK7WJZT7O',
        '-m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external destinations" '
        '-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
        '-m comment --comment "route LOCAL traffic for ns1/svc1:p80 external destinations" '
        '-m addrtype --src-type LOCAL -j KUBE-SVC-XPGD46QRK7WJZT7O',
        "-j KUBE-SVL-XPGD46QRK7WJZT7O",
    ]
    assert rules(t, "nat", SVL) == [
        '-m comment --comment "ns1/svc1:p80 -> 10.180.2.1:80" -j KUBE-SEP-ZX7GRIZKSNUQ3LAJ']
    assert [r.split(" -j ")[-1] for r in rules(t, "nat", SVC)] == ["KUBE-MARK-MASQ", SEP_1, SEP_REMOTE]
    assert rules(t, "filter", "KUBE-EXTERNAL-SERVICES") == []


def test_local_policy_without_a_local_endpoint_drops_external_traffic():
    svc = nodeport("Local")
    t = tables(svc, endpoints(svc, ["10.180.0.1"]))
    assert rules(t, "nat", EXT) == [                                     # no jump to a KUBE-SVL- chain
        '-s 10.244.0.0/16 -m comment --comment "pod traffic for ns1/svc1:p80 external destinations" '
        '-j KUBE-SVC-XPGD46QRK7WJZT7O',
        '-m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external destinations" '
        '-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
        '-m comment --comment "route LOCAL traffic for ns1/svc1:p80 external destinations" '
        '-m addrtype --src-type LOCAL -j KUBE-SVC-XPGD46QRK7WJZT7O',
    ]
    assert SVC in t["nat"].chains and not any(c.startswith("KUBE-SVL-") for c in t["nat"].chains)
    assert rules(t, "filter", "KUBE-EXTERNAL-SERVICES") == [
        '-p tcp -m comment --comment "ns1/svc1:p80 has no local endpoints" -m addrtype --dst-type LOCAL '
        '-m tcp --dport 30080 -j DROP']


def test_nodeport_without_endpoints_rejects_on_the_node_port_too():
    svc = nodeport()
    t = tables(svc, endpoints(svc, []))
    assert rules(t, "nat", "KUBE-NODEPORTS") == []
    assert rules(t, "filter", "KUBE-EXTERNAL-SERVICES") == [
        '-p tcp -m comment --comment "ns1/svc1:p80 has no endpoints" -m addrtype --dst-type LOCAL '
        '-m tcp --dport 30080 -j REJECT --reject-with icmp-port-unreachable']


def test_external_ips_go_to_the_ext_chain():
    svc = service(external_ips=("192.0.2.10",), external_traffic_policy="Cluster")
    t = tables(svc, endpoints(svc, ["10.180.0.1"]))
    assert rules(t, "nat", "KUBE-SERVICES")[1] == (
        '-d 192.0.2.10/32 -p tcp -m comment --comment "ns1/svc1:p80 external IP" -m tcp --dport 80 '
        '-j KUBE-EXT-XPGD46QRK7WJZT7O')


def test_tcp_and_udp_on_one_port_number_are_two_service_ports():
    svc = service(ports=(ServicePort(9000, "TCP", "tcp", 8080), ServicePort(9000, "UDP", "udp", 8081)))
    eps = EndpointSlice("ns1", "svc1-x2b4c", {SERVICE_NAME_LABEL: "svc1"},
                        endpoints=(endpoint("10.180.0.1", "node-b", 0),),
                        ports=(Port("tcp", 8080, "TCP"), Port("udp", 8081, "UDP")))
    t = tables(svc, eps)
    assert [r.split(" -j ")[0] for r in rules(t, "nat", "KUBE-SERVICES")[:2]] == [
        '-d 10.96.5.5/32 -p tcp -m comment --comment "ns1/svc1:tcp cluster IP" -m tcp --dport 9000',
        '-d 10.96.5.5/32 -p udp -m comment --comment "ns1/svc1:udp cluster IP" -m udp --dport 9000',
    ]


def test_comment_quoting_follows_iptables_save():
    assert kube_proxy.comment("flanneld-masq") == "-m comment --comment flanneld-masq"
    assert kube_proxy.comment("ns/svc") == '-m comment --comment "ns/svc"'


def test_internal_traffic_policy_local():
    svc = service(internal_traffic_policy="Local")
    t = tables(svc, endpoints(svc, ["10.180.0.1", "10.180.2.1"], nodes={"10.180.2.1": "node-a"}))
    assert rules(t, "nat", "KUBE-SERVICES")[0].endswith("-j KUBE-SVL-XPGD46QRK7WJZT7O")
    assert rules(t, "nat", SVL) == [
        '! -s 10.244.0.0/16 -d 10.96.5.5/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 '
        '-j KUBE-MARK-MASQ',
        '-m comment --comment "ns1/svc1:p80 -> 10.180.2.1:80" -j KUBE-SEP-ZX7GRIZKSNUQ3LAJ']
    assert SVC not in t["nat"].chains
    t = tables(svc, endpoints(svc, ["10.180.0.1"]))                      # no endpoint on this node
    assert rules(t, "filter", "KUBE-SERVICES") == [
        '-d 10.96.5.5/32 -p tcp -m comment --comment "ns1/svc1:p80 has no local endpoints" -m tcp --dport 80 -j DROP']


# --- partial sync ----------------------------------------------------------------------

def applied(tables, changes):
    """What a node's tables become after a partial sync's writes and deletions."""
    out = {t: {c: list(r) for c, r in tables[t].chains.items()} for t in tables}
    for t, (write, delete) in changes.items():
        for c in delete:
            del out[t][c]
        for c, rules in write.items():
            out[t][c] = list(rules)
    return out


def as_dicts(tables):
    return {t: {c: list(r) for c, r in tables[t].chains.items()} for t in tables}


def scenario(old, new):
    """old/new: lists of (service, endpoint IPs)."""
    def split(pairs):
        return [s for s, _ in pairs], [endpoints(s, ips) for s, ips in pairs]
    (os_, oe), (ns_, ne) = split(old), split(new)
    changes = kube_proxy.sync_changes(os_, oe, ns_, ne, NODE, POD_CIDR)
    before = kube_proxy.node_tables(os_, oe, NODE, POD_CIDR)
    assert applied(before, changes) == as_dicts(kube_proxy.node_tables(ns_, ne, NODE, POD_CIDR))
    return changes


A, B = service(name="a", ip="10.96.5.1"), nodeport()


def written(changes):
    return {t: sorted(w) for t, (w, _) in changes.items() if w}


def deleted(changes):
    return {t: sorted(d) for t, (_, d) in changes.items() if d}


def test_an_endpoint_added_rewrites_one_service_chain_and_adds_its_endpoint_chain():
    c = scenario([(A, ["10.180.0.1"]), (B, ["10.180.0.9"])], [(A, ["10.180.0.1", "10.180.0.2"]), (B, ["10.180.0.9"])])
    # ns1/a:p80's chain and its new endpoint's (10.180.0.2:80), and nothing of B's
    assert written(c) == {"nat": ["KUBE-SEP-NSPUW2IV45R4UDGC", "KUBE-SVC-RJR5Z2XEZW2NGSZC"]}
    assert deleted(c) == {}


def test_an_endpoint_removed_deletes_its_chain():
    c = scenario([(A, ["10.180.0.1", "10.180.0.2"])], [(A, ["10.180.0.1"])])
    assert deleted(c) == {"nat": ["KUBE-SEP-NSPUW2IV45R4UDGC"]}


def test_nothing_changed_writes_nothing():
    assert written(scenario([(A, ["10.180.0.1"])], [(A, ["10.180.0.1"])])) == {}


def test_the_last_endpoint_leaving_rewrites_the_shared_chains():
    c = scenario([(A, ["10.180.0.1"]), (B, ["10.180.0.9"])], [(A, []), (B, ["10.180.0.9"])])
    assert "KUBE-SERVICES" in written(c)["nat"] and "KUBE-SERVICES" in written(c)["filter"]
    assert "KUBE-SVC-RJR5Z2XEZW2NGSZC" in deleted(c)["nat"]


def test_a_service_added_and_one_removed():
    c = scenario([(A, ["10.180.0.1"])], [(B, ["10.180.0.9"])])
    assert {"KUBE-SERVICES", "KUBE-NODEPORTS"} <= set(written(c)["nat"])
    assert "KUBE-SVC-RJR5Z2XEZW2NGSZC" in deleted(c)["nat"]


def test_local_policy_follows_an_endpoint_moving_to_this_node():
    local = nodeport("Local")
    old = endpoints(local, ["10.180.0.1"])
    new = endpoints(local, ["10.180.0.1"], nodes={"10.180.0.1": "node-a"})
    c = kube_proxy.sync_changes([local], [old], [local], [new], NODE, POD_CIDR)
    before = kube_proxy.node_tables([local], [old], NODE, POD_CIDR)
    assert applied(before, c) == as_dicts(kube_proxy.node_tables([local], [new], NODE, POD_CIDR))
    assert "KUBE-EXTERNAL-SERVICES" in written(c)["filter"]             # the DROP goes away


# --- LoadBalancer ----------------------------------------------------------------------

def lb(mode="VIP", policy="Cluster", ranges=(), hc=None):
    return service(type="LoadBalancer", ports=(ServicePort(80, "TCP", "p80", 80, 30080),), external_traffic_policy=policy,
                   load_balancer_ip="172.18.255.200", load_balancer_ip_mode=mode,
                   load_balancer_source_ranges=ranges, health_check_node_port=hc)


def test_a_vip_load_balancer_ip_is_captured_into_the_ext_chain():
    t = tables(lb(), endpoints(lb(), ["10.180.0.1"]))
    assert rules(t, "nat", "KUBE-SERVICES")[1] == (
        '-d 172.18.255.200/32 -p tcp -m comment --comment "ns1/svc1:p80 loadbalancer IP" -m tcp --dport 80 '
        '-j KUBE-EXT-XPGD46QRK7WJZT7O')


def test_a_proxy_mode_load_balancer_ip_gets_no_rule():
    t = tables(lb("Proxy"), endpoints(lb("Proxy"), ["10.180.0.1"]))
    assert rules(t, "nat", "KUBE-SERVICES")[0] == (                      # the Service itself is there
        '-d 10.96.5.5/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 '
        '-j KUBE-SVC-XPGD46QRK7WJZT7O')
    assert rules(t, "nat", "KUBE-NODEPORTS") == [
        '-p tcp -m comment --comment "ns1/svc1:p80" -m tcp --dport 30080 -j KUBE-EXT-XPGD46QRK7WJZT7O']
    assert not any("172.18.255.200" in r for t_ in t.values() for c in t_.chains.values() for r in c)


def test_source_ranges_make_a_firewall_chain_and_a_drop():
    svc = lb(ranges=("10.0.0.0/8",))
    t = kube_proxy.node_tables([svc], [endpoints(svc, ["10.180.0.1"])], SimpleNamespace(name="node-a", ip="172.18.0.3"),
                               POD_CIDR)
    assert rules(t, "nat", "KUBE-SERVICES")[1].endswith("-j KUBE-FW-XPGD46QRK7WJZT7O")
    assert rules(t, "nat", FW) == [
        '-s 10.0.0.0/8 -m comment --comment "ns1/svc1:p80 loadbalancer IP" -j KUBE-EXT-XPGD46QRK7WJZT7O',
        '-m comment --comment "other traffic to ns1/svc1:p80 will be dropped by KUBE-PROXY-FIREWALL"']
    assert rules(t, "filter", "KUBE-PROXY-FIREWALL") == [
        '-d 172.18.255.200/32 -p tcp -m comment --comment "ns1/svc1:p80 traffic not accepted by '
        'KUBE-FW-XPGD46QRK7WJZT7O" -m tcp --dport 80 -j DROP']


def test_a_node_inside_the_source_ranges_may_reach_its_own_vip():
    svc = lb(ranges=("172.18.0.0/16",))
    t = kube_proxy.node_tables([svc], [endpoints(svc, ["10.180.0.1"])], SimpleNamespace(name="node-a", ip="172.18.0.3"),
                               POD_CIDR)
    assert '-s 172.18.255.200/32 -m comment --comment "ns1/svc1:p80 loadbalancer IP" -j KUBE-EXT-XPGD46QRK7WJZT7O' in \
        rules(t, "nat", FW)


def test_local_policy_opens_the_health_check_node_port():
    svc = lb(policy="Local", hc=32000)
    t = tables(svc, endpoints(svc, ["10.180.0.1"]))
    assert rules(t, "filter", "KUBE-NODEPORTS") == [
        '-p tcp -m comment --comment "ns1/svc1:p80 health check node port" -m tcp --dport 32000 -j ACCEPT']
    assert any('-d 172.18.255.200/32 -p tcp -m comment --comment "ns1/svc1:p80 has no local endpoints" '
               '-m tcp --dport 80 -j DROP' == r for r in rules(t, "filter", "KUBE-EXTERNAL-SERVICES"))
