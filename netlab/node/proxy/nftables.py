"""kube-proxy, nftables mode (Kubernetes 1.33's layout): a node's `ip kube-proxy` table from
the Services and their EndpointSlices.

`node_table(services, slices, node, cluster)` is a pure function returning a
values.nftables.Table in the words kube-proxy writes (its `nft -f` input). A service is
found by one lookup in the `service-ips` verdict map, whatever the number of Services; each
service port has its own `service-`/`local-`/`external-`/`firewall-` chains and each
endpoint an `endpoint-` chain, named `<hash>-<base>` (see `chain_name`).

`sync(...)` is the partial sync: only the ports whose Service or endpoints changed are
written again (every chain of such a port, add + flush + rules), map elements are diffed,
the chains of a port that went away are flushed at once and deleted by a later sync.

A dual-stack node runs a second proxier with its own table, `ip6 kube-proxy` (`family`
"IPv6"): the same chains and names, `ip6 daddr`/`ip6 saddr`, ipv6_addr sets and maps,
the IPv6 pod and service networks, the node's IPv6 address in nodeport-ips; its `reject`
answers ICMPv6 port unreachable (the family's default, printed as plain `reject`).
"""

import base64
import hashlib
import ipaddress

from netlab.node.proxy.endpointslicecache import categorize, endpoint_ip, port_inputs, port_name, proxied
from netlab.values.desired import NetnsPlan
from netlab.values.nftables import Chain, Element, Hook, Set, Table

TABLE = "kube-proxy"
MASQ_MARK = "0x4000"
MARK_FOR_MASQUERADE = "mark-for-masquerade"
REJECT_CHAIN = "reject-chain"
# The nat and filter base chains: "${type}-${hook}", at kube-proxy 1.33's priorities.
BASE_CHAINS = {
    "filter-prerouting": Hook("filter", "prerouting", -110),
    "filter-input": Hook("filter", "input", -110),
    "filter-forward": Hook("filter", "forward", -110),
    "filter-output": Hook("filter", "output", -110),
    "filter-output-post-dnat": Hook("filter", "output", -90),
    "nat-prerouting": Hook("nat", "prerouting", -100),
    "nat-output": Hook("nat", "output", -100),
    "nat-postrouting": Hook("nat", "postrouting", 100),
}
SERVICE_IPS, SERVICE_NODEPORTS = "service-ips", "service-nodeports"
NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS = "no-endpoint-services", "no-endpoint-nodeports"
FIREWALL_IPS, CLUSTER_IPS, NODEPORT_IPS = "firewall-ips", "cluster-ips", "nodeport-ips"
# Per family: the table's family, the rules' address expression (ipX) and the address type.
FAMILIES = {"IPv4": ("ip", "ipv4_addr"), "IPv6": ("ip6", "ipv6_addr")}


def family_sets(family="IPv4"):
    """The sets and maps every node's table has, typed for the family."""
    addr = FAMILIES[family][1]
    addr_proto_port = f"{addr} . inet_proto . inet_service : verdict"
    return (
        Set(CLUSTER_IPS, addr, "Active ClusterIPs"),
        Set(NODEPORT_IPS, addr, "IPs that accept NodePort traffic"),
        Set(FIREWALL_IPS, addr_proto_port, "destinations that are subject to LoadBalancerSourceRanges"),
        Set(NO_ENDPOINT_NODEPORTS, "inet_proto . inet_service : verdict",
            "vmap to drop or reject packets to service nodeports with no endpoints"),
        Set(NO_ENDPOINT_SERVICES, addr_proto_port, "vmap to drop or reject packets to services with no endpoints"),
        Set(SERVICE_IPS, addr_proto_port, "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
        Set(SERVICE_NODEPORTS, "inet_proto . inet_service : verdict", "NodePort traffic"),
    )


SETS = family_sets("IPv4")
# Chains that belong to no service port; every other chain of the table belongs to one.
FIXED_CHAINS = (*BASE_CHAINS, "cluster-ips-check", "firewall-check", MARK_FOR_MASQUERADE, "masquerading",
                "nodeport-endpoints-check", REJECT_CHAIN, "services", "service-endpoints-check")


def chain_name(prefix, base):
    """kube-proxy's hashedName: the first 8 characters of base32(sha256(base)), "-", base
    (truncated to 237 characters + "..." past 240, which no valid Kubernetes name reaches)."""
    digest = base64.b32encode(hashlib.sha256(base.encode()).digest()).decode()[:8]
    name = f"{digest}-{base}"
    name = name if len(name) <= 240 else name[:237] + "..."
    return prefix + name


def port_base(service, port):
    """servicePortChainNameBase: "<ns>/<name>/<protocol>/<port name>"."""
    return f"{service.namespace}/{service.name}/{port.protocol.lower()}/{port.name or ''}"


def endpoint_base(service, port, endpoint):
    """servicePortEndpointChainNameBase: "<port base>__<ip>/<port>" (":" of IPv6 as ".")."""
    ip, _, number = endpoint.rpartition(":")
    return f"{port_base(service, port)}__{ip.strip('[]').replace(':', '.')}/{number}"


def base_chains(node, service_cidr, family="IPv4"):
    """The chains and jumps every node has, whatever its Services."""
    ip = FAMILIES[family][0]
    rules = {
        "cluster-ips-check": (
            f'{ip} daddr @{CLUSTER_IPS} reject comment "Reject traffic to invalid ports of ClusterIPs"',
            f'{ip} daddr {{ {service_cidr} }} drop comment "Drop traffic to unallocated ClusterIPs"'),
        "filter-prerouting": ("ct state new jump firewall-check",),
        "filter-forward": ("ct state new jump service-endpoints-check", "ct state new jump cluster-ips-check"),
        "filter-input": ("ct state new jump nodeport-endpoints-check", "ct state new jump service-endpoints-check"),
        "filter-output": ("ct state new jump service-endpoints-check", "ct state new jump firewall-check"),
        "filter-output-post-dnat": ("ct state new jump cluster-ips-check",),
        "firewall-check": (f"{ip} daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}",),
        MARK_FOR_MASQUERADE: (f"mark set mark or {MASQ_MARK}",),
        "masquerading": (f"mark and {MASQ_MARK} == 0 return", f"mark set mark xor {MASQ_MARK}",
                         "masquerade fully-random"),
        "nat-output": ("jump services",),
        "nat-postrouting": ("jump masquerading",),
        "nat-prerouting": ("jump services",),
        "nodeport-endpoints-check": (
            f"{ip} daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}",),
        REJECT_CHAIN: ("reject",),
        "services": (f"{ip} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}",
                     f"{ip} daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
        "service-endpoints-check": (f"{ip} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}",),
    }
    comments = {REJECT_CHAIN: "helper for @no-endpoint-services / @no-endpoint-nodeports"}
    return {name: Chain(name, rules[name], BASE_CHAINS.get(name), comments.get(name)) for name in FIXED_CHAINS}


def _networks(cluster, family):
    """(pod network, service network) of the family: the local-traffic detector's CIDR and
    the ClusterIP range."""
    if family == "IPv6":
        return cluster.pod_subnet6, cluster.service_subnet6
    return cluster.pod_subnet, cluster.service_subnet


def node_table(services, slices, node, cluster, family="IPv4"):
    """The whole `ip kube-proxy` (IPv6: `ip6 kube-proxy`) table of one node. `node` needs
    .name and .ip (IPv6: .ip6); `cluster` .pod_subnet (the local-traffic detector's CIDR)
    and .service_subnet (IPv6: .pod_subnet6 and .service_subnet6)."""
    pod_cidr, service_cidr = _networks(cluster, family)
    chains = base_chains(node, service_cidr, family)
    sets = {s.name: s for s in family_sets(family)}
    elements = [Element(NODEPORT_IPS, node.ip6 if family == "IPv6" else node.ip)]
    for key, inputs in sorted(port_inputs(services, slices, family).items()):
        block = port_block(*inputs, node, pod_cidr, family)
        chains.update(block.chains)
        sets.update(block.sets)
        elements += block.elements
    # dict.fromkeys: a ClusterIP is one element of cluster-ips for all of its Service's ports.
    return Table(FAMILIES[family][0], TABLE, "rules for kube-proxy", chains, sets, tuple(dict.fromkeys(elements)))


class Block:
    """One service port's objects: its chains and affinity sets, and its map elements."""

    def __init__(self):
        self.chains, self.sets, self.elements = {}, {}, []

    def rule(self, chain, text):
        c = self.chains.get(chain, Chain(chain))
        self.chains[chain] = Chain(chain, c.rules + (text,))

    def chain(self, name):
        self.chains.setdefault(name, Chain(name))


def port_block(svc, port, eps, node, pod_cidr, family="IPv4"):
    """syncProxyRules' loop body for one service port (`svc` as the family's proxier sees
    it). `eps`: ("ip:port", node name) of its ready endpoints, sorted."""
    ipx, addr_type = FAMILIES[family]
    b = Block()
    name = port_name(svc, port)
    base = port_base(svc, port)
    proto = port.protocol.lower()
    cluster_chain, local_chain = chain_name("service-", base), chain_name("local-", base)
    external_chain, fw_chain = chain_name("external-", base), chain_name("firewall-", base)

    c = categorize(svc, port, eps, node.name)
    lb_vips, externally_accessible, external_local = c.lb_vips, c.externally_accessible, c.external_local
    internal_local, cluster_eps, local_eps = c.internal_local, c.cluster_eps, c.local_eps
    has_endpoints, has_internal, has_external = c.has_endpoints, c.has_internal, c.has_external
    internal_chain = local_chain if internal_local else cluster_chain
    external_policy_chain = local_chain if external_local else cluster_chain
    internal_verdict = external_verdict = f"goto {REJECT_CHAIN}" if not has_endpoints else "drop"
    uses_external_chain = has_endpoints and externally_accessible
    uses_fw = has_endpoints and bool(lb_vips) and bool(svc.load_balancer_source_ranges)

    for chain in ([cluster_chain] if cluster_eps else []) + ([local_chain] if local_eps else []):
        b.chain(chain)
    if uses_external_chain:
        b.chain(external_chain)
    if uses_fw:
        b.chain(fw_chain)

    key = f"{svc.cluster_ip} . {proto} . {port.port}"
    b.elements.append(Element(CLUSTER_IPS, svc.cluster_ip))
    if has_internal:
        b.elements.append(Element(SERVICE_IPS, key, f"goto {internal_chain}"))
    else:
        b.elements.append(Element(NO_ENDPOINT_SERVICES, key, internal_verdict, name))

    for ip in svc.external_ips:
        key = f"{ip} . {proto} . {port.port}"
        if has_endpoints:
            b.elements.append(Element(SERVICE_IPS, key, f"goto {external_chain}"))
        if not has_external:
            b.elements.append(Element(NO_ENDPOINT_SERVICES, key, external_verdict, name))

    for ip in lb_vips:
        key = f"{ip} . {proto} . {port.port}"
        if has_endpoints:
            b.elements.append(Element(SERVICE_IPS, key, f"goto {external_chain}"))
        if uses_fw:
            b.elements.append(Element(FIREWALL_IPS, key, f"goto {fw_chain}"))
    if not has_external:
        b.elements += [Element(NO_ENDPOINT_SERVICES, f"{ip} . {proto} . {port.port}", external_verdict, name)
                       for ip in lb_vips]

    if port.node_port:
        key = f"{proto} . {port.node_port}"
        if has_endpoints:
            b.elements.append(Element(SERVICE_NODEPORTS, key, f"goto {external_chain}"))
        if not has_external:
            b.elements.append(Element(NO_ENDPOINT_NODEPORTS, key, external_verdict, name))

    if has_internal:
        b.rule(internal_chain, f"{ipx} daddr {svc.cluster_ip} {proto} dport {port.port} {ipx} saddr != {pod_cidr} "
                               f"jump {MARK_FOR_MASQUERADE}")

    if uses_external_chain:
        if not external_local:
            b.rule(external_chain, f"jump {MARK_FOR_MASQUERADE}")
        else:
            b.rule(external_chain, f'{ipx} saddr {pod_cidr} goto {cluster_chain} comment "short-circuit pod traffic"')
            b.rule(external_chain, f'fib saddr type local jump {MARK_FOR_MASQUERADE} comment "masquerade local traffic"')
            b.rule(external_chain, f'fib saddr type local goto {cluster_chain} comment "short-circuit local traffic"')
        if has_external:
            b.rule(external_chain, f"goto {external_policy_chain}")

    if uses_fw:
        sources = list(svc.load_balancer_source_ranges)
        node_ip = ipaddress.ip_address(node.ip6 if family == "IPv6" else node.ip)
        if any(node_ip in ipaddress.ip_network(c, strict=False) for c in sources):
            sources += lb_vips                      # the node reaching its own VIP comes from the VIP
        b.rule(fw_chain, f"{ipx} saddr != {{ {' , '.join(sources)} }} drop")

    affinity = svc.session_affinity == "ClientIP"
    for chain, chain_eps in ((cluster_chain, cluster_eps), (local_chain, local_eps)):
        if chain_eps:
            _to_endpoints(b, chain, svc, port, chain_eps, affinity, ipx)

    for endpoint in dict.fromkeys(e[0] for e in cluster_eps + local_eps):
        ep_base = endpoint_base(svc, port, endpoint)
        chain = chain_name("endpoint-", ep_base)
        b.chain(chain)
        b.rule(chain, f"{ipx} saddr {endpoint_ip(endpoint)} jump {MARK_FOR_MASQUERADE}")
        if affinity:
            affinity_set = chain_name("affinity-", ep_base)
            b.sets[affinity_set] = Set(affinity_set, addr_type, flags=("dynamic", "timeout"),
                                       timeout=svc.affinity_timeout)
            b.rule(chain, f"update @{affinity_set} {{ {ipx} saddr }}")
        b.rule(chain, f"meta l4proto {proto} dnat to {endpoint}")
    return b


def _to_endpoints(b, chain, svc, port, eps, affinity, ipx="ip"):
    """writeServiceToEndpointRules: with affinity, a source seen before goes back to its
    endpoint; then one random pick among all of them, by a numgen verdict map."""
    names = [chain_name("endpoint-", endpoint_base(svc, port, ep)) for ep, _ in eps]
    if affinity:
        for (ep, _), target in zip(eps, names):
            b.rule(chain, f"{ipx} saddr @{chain_name('affinity-', endpoint_base(svc, port, ep))} goto {target}")
    picks = " , ".join(f"{i} : goto {target}" for i, target in enumerate(names))
    b.rule(chain, f"numgen random mod {len(names)} vmap {{ {picks} }}")


def sync(old_services, old_slices, services, slices, node, cluster, family="IPv4"):
    """kube-proxy's partial sync on one node, as (changed ports' blocks before and after):
    [(Block | None, Block | None)] for every port whose Service or endpoints changed."""
    old, new = port_inputs(old_services, old_slices, family), port_inputs(services, slices, family)
    pod_cidr = _networks(cluster, family)[0]
    out = []
    for k in sorted(old.keys() | new.keys()):
        if old.get(k) == new.get(k):
            continue
        before = port_block(*old[k], node, pod_cidr, family) if k in old else None
        after = port_block(*new[k], node, pod_cidr, family) if k in new else None
        out.append((before, after))
    return out


def live_cluster_ips(services, family="IPv4"):
    """The ClusterIPs kube-proxy proxies: what cluster-ips holds (a Service left to another
    proxy, or headless, is not in it)."""
    return {s.cluster_ip_of(family) for s in services if proxied(s, family)}


def empty_table(family="IPv4"):
    """The table's name and family alone: what a partial sync's transaction writes into."""
    return Table(FAMILIES[family][0], TABLE)


def uses_nftables(cluster):
    return cluster.kube_proxy_mode == "nftables"


def node_plan(state, node, rules=True):
    """kube-proxy's part of a node in nftables mode: its table, and in a dual-stack cluster
    the IPv6 proxier's `ip6 kube-proxy` beside it (unless `rules` is False). No sysctl:
    nftables mode never accepts NodePorts on 127.0.0.1, so no route_localnet."""
    families = state.cluster.families if rules else ()
    tables = [node_table(state.services, state.endpoint_slices, node, state.cluster, f) for f in families]
    return NetnsPlan(node.netns, nftables={t.ref: t for t in tables}, owner="kube-proxy")
