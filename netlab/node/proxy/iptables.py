"""kube-proxy, iptables mode: a node's nat and filter rules from the Services and their
EndpointSlices (what kube-proxy has read since 1.21; Endpoints objects it ignores).

`node_tables(services, slices, node, cluster_cidr)` is a pure function. It yields the rules
in the form `iptables-save` prints them back (the kernel's canonical form), so a plan can be
compared with a node's tables line for line. kube-proxy's own restore input differs only in
argument order and in writing probabilities with 10 decimals; the kernel stores the same rule.

Chain names hash "<namespace>/<name>[:<portName>]<protocol>" (sha256, base32, 16 characters);
endpoint chains hash the same string followed by "<ip>:<port>" ("[<ip>]:<port>" for IPv6).

A dual-stack node runs two proxiers (`family` "IPv4" and "IPv6"): the same chain layout
and the same KUBE-SVC/SVL/EXT/FW names in iptables and ip6tables (the hash has no family).
IPv6 differs where the kernel does: /128 host addresses, icmp6 rejects, an xt_recent mask
of 128 bits, and no localhost NodePorts (no route_localnet, so no KUBE-FIREWALL localnet
rule, and `! -d ::1/128` on the jump to KUBE-NODEPORTS).
"""

import base64
import hashlib
import ipaddress
import math
import re
from collections import defaultdict
from dataclasses import dataclass

from netlab.node.proxy.endpointslicecache import (  # noqa: F401  (kube-proxy's shared reading of the state)
    NO_PROXY_LABELS, categorize, endpoint_ip, family_view, port_inputs, port_name, proxied, ready_endpoints,
    slices_by_service, stale_udp_flows)
from netlab.values.desired import NetnsPlan
from netlab.values.iptables import Table

MASQ_MARK = "0x4000"
RECENT_TAIL = "--mask 255.255.255.255 --rsource"      # what iptables-save adds to a `recent` match

# Chains every service port writes lines into; every other chain belongs to one port.
SHARED = {"nat": ("KUBE-SERVICES", "KUBE-NODEPORTS"),
          "filter": ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL")}

NAT_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")
FILTER_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS",
                 "KUBE-PROXY-FIREWALL", "KUBE-FIREWALL")


def port_key(namespace, name, port_name, protocol):
    return f"{namespace}/{name}" + (f":{port_name}" if port_name else "") + protocol.lower()


def _hash(text):
    # Base32 turns each 5 bytes into 8 characters: the first 16 come from the first 10 bytes.
    return base64.b32encode(hashlib.sha256(text.encode()).digest()[:10]).decode()


def service_chain(prefix, key):
    """KUBE-SVC-, KUBE-SVL-, KUBE-EXT- or KUBE-FW- + the service port's hash."""
    return f"{prefix}{_hash(key)}"


def endpoint_chain(key, endpoint):
    """KUBE-SEP- + the hash of the service port and the endpoint "ip:port"."""
    return f"KUBE-SEP-{_hash(key + endpoint)}"


_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPED = re.compile(r"([\"\\'])")


def comment(text):
    """`-m comment`, quoted as iptables-save quotes it (only when a character needs it)."""
    if _PLAIN.fullmatch(text):
        return f"-m comment --comment {text}"
    escaped = _ESCAPED.sub(r"\\\1", text)
    return f'-m comment --comment "{escaped}"'


def probability(n):
    """1/n as kube-proxy writes it ("%0.10f"), as the kernel stores it (a 31-bit fraction,
    rounded) and as iptables-save prints it back ("%.11f")."""
    stored = math.floor(0x80000000 * float(f"{1.0 / n:0.10f}") + 0.5)
    return f"{stored / 0x80000000:.11f}"


REJECT = "REJECT --reject-with icmp-port-unreachable"


@dataclass(frozen=True)
class Family:
    """What one proxier's rules depend on its IP family for, as iptables-save prints it."""
    name: str
    host: str                      # a single address's prefix length
    reject: str                    # REJECT's default for the family
    recent_tail: str               # what iptables-save adds to a `recent` match
    localnet: bool                 # localhost NodePorts (route_localnet and the KUBE-FIREWALL guard)
    nodeports_tail: str            # the jump to KUBE-NODEPORTS' address match


FAMILIES = {
    "IPv4": Family("IPv4", "/32", REJECT, RECENT_TAIL, True, ""),
    # ip6tables' REJECT defaults to icmp6-port-unreachable; xt_recent's mask is 128 bits.
    "IPv6": Family("IPv6", "/128", "REJECT --reject-with icmp6-port-unreachable",
                   "--mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource", False, "! -d ::1/128 "),
}


def hooks():
    """The jumps from the built-in chains, as a real node shows them."""
    portals = comment("kubernetes service portals")
    new = "-m conntrack --ctstate NEW"
    firewall = f"{new} {comment('kubernetes load balancer firewall')} -j KUBE-PROXY-FIREWALL"
    external = f"{new} {comment('kubernetes externally-visible service portals')} -j KUBE-EXTERNAL-SERVICES"
    nat = {
        "PREROUTING": (f"{portals} -j KUBE-SERVICES",),
        "OUTPUT": (f"{portals} -j KUBE-SERVICES",),
        "POSTROUTING": (f"{comment('kubernetes postrouting rules')} -j KUBE-POSTROUTING",),
    }
    flt = {
        "INPUT": (firewall, f"{comment('kubernetes health check service ports')} -j KUBE-NODEPORTS",
                  external, "-j KUBE-FIREWALL"),
        "FORWARD": (firewall, f"{comment('kubernetes forwarding rules')} -j KUBE-FORWARD",
                    f"{new} {portals} -j KUBE-SERVICES", external),
        "OUTPUT": (firewall, f"{new} {portals} -j KUBE-SERVICES", "-j KUBE-FIREWALL"),
    }
    return nat, flt


def plumbing(family="IPv4"):
    """The rules kube-proxy writes whatever the Services: masquerade marking, forwarding
    acceptance, and the localnet guard that route_localnet makes necessary (IPv4 only: the
    IPv6 proxier has no localhost NodePorts, and leaves the KUBE-FIREWALL chain it ensures
    for kubelet's jumps empty)."""
    mark = f"{MASQ_MARK}/{MASQ_MARK}"
    nat = {
        "KUBE-POSTROUTING": (
            f"-m mark ! --mark {mark} -j RETURN",
            f"-j MARK --set-xmark {MASQ_MARK}/0x0",
            f"{comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully",
        ),
        "KUBE-MARK-MASQ": (f"-j MARK --set-xmark {mark}",),
    }
    flt = {
        "KUBE-FORWARD": (
            "-m conntrack --ctstate INVALID -j DROP",
            f"{comment('kubernetes forwarding rules')} -m mark --mark {mark} -j ACCEPT",
            f"{comment('kubernetes forwarding conntrack rule')} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ),
        "KUBE-FIREWALL": (
            f"! -s 127.0.0.0/8 -d 127.0.0.0/8 {comment('block incoming localnet connections')} "
            "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
        ) if FAMILIES[family].localnet else (),
    }
    return nat, flt


def node_tables(services, slices, node, cluster_cidr, family="IPv4"):
    """{"nat": Table, "filter": Table} of one node's `family` proxier. `node` needs .name
    (and .ip / .ip6 for source ranges); `slices` are EndpointSlice records (matched to
    Services by namespace and kubernetes.io/service-name); `cluster_cidr` is the family's
    --cluster-cidr (the pod network whose traffic is not masqueraded)."""
    fam = FAMILIES[family]
    nat_hooks, filter_hooks = hooks()
    nat_plumbing, filter_plumbing = plumbing(family)
    nat = {**nat_hooks, **{c: [] for c in NAT_CHAINS}}
    flt = {**filter_hooks, **{c: [] for c in FILTER_CHAINS}}
    for chain, rules in nat_plumbing.items():
        nat[chain] += rules
    for chain, rules in filter_plumbing.items():
        flt[chain] += rules
    by_key = slices_by_service(slices)
    ports = sorted(((family_view(s, family), p) for s in services if proxied(s, family) for p in s.ports),
                   key=lambda sp: (port_name(*sp), sp[1].protocol))
    for service, port in ports:
        _service_port(nat, flt, service, port, ready_endpoints(by_key.get(service.key), port, family), node,
                      cluster_cidr, fam)
    last = comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
    nat["KUBE-SERVICES"].append(f"{fam.nodeports_tail}{last} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    return {"nat": Table("nat", {c: tuple(r) for c, r in nat.items()}),
            "filter": Table("filter", {c: tuple(r) for c, r in flt.items()})}


def _block(svc, port, eps, node, cluster_cidr, fam):
    nat, flt = defaultdict(list), defaultdict(list)
    _service_port(nat, flt, svc, port, list(eps), node, cluster_cidr, fam)
    return {"nat": nat, "filter": flt}


def sync_changes(old_services, old_slices, services, slices, node, cluster_cidr, family="IPv4"):
    """kube-proxy's partial sync on one node: only the service ports whose Service or
    endpoints changed are planned again, and only their chains are written. Returns
    {table: (chains to write {chain: rules}, chains to flush and delete)}. The chains all
    ports share (KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES) are written whole
    when a changed port's lines in them changed; an endpoint change leaves them alone."""
    fam = FAMILIES[family]
    old, new = port_inputs(old_services, old_slices, family), port_inputs(services, slices, family)
    out = {"nat": ({}, []), "filter": ({}, [])}
    shared_changed = False
    empty = {"nat": {}, "filter": {}}
    for k in old.keys() | new.keys():
        if old.get(k) == new.get(k):
            continue
        before = _block(*old[k], node, cluster_cidr, fam) if k in old else empty
        after = _block(*new[k], node, cluster_cidr, fam) if k in new else empty
        for table, (write, delete) in out.items():
            for chain in set(before[table]) | set(after[table]):
                if chain in SHARED[table]:
                    shared_changed |= before[table].get(chain) != after[table].get(chain)
                elif chain not in after[table]:
                    delete.append(chain)
                elif before[table].get(chain) != after[table][chain]:
                    write[chain] = tuple(after[table][chain])
    if shared_changed:
        full = node_tables(services, slices, node, cluster_cidr, family)
        for table, (write, _) in out.items():
            for chain in SHARED[table]:
                write[chain] = full[table].chains[chain]
    return out


def _service_port(nat, flt, svc, port, eps, node, cluster_cidr, fam=FAMILIES["IPv4"]):
    """One service port's rules: kube-proxy's syncProxyRules loop body (`svc` as the
    family's proxier sees it)."""
    host = fam.host
    name = port_name(svc, port)
    key = port_key(svc.namespace, svc.name, port.name, port.protocol)
    proto = port.protocol.lower()
    h = _hash(key)                     # SVC, SVL, EXT and FW chains share the port's hash
    svc_chain, svl_chain, ext_chain = f"KUBE-SVC-{h}", f"KUBE-SVL-{h}", f"KUBE-EXT-{h}"

    c = categorize(svc, port, eps, node.name)
    lb_vips, externally_accessible, external_local = c.lb_vips, c.externally_accessible, c.external_local
    internal_local, cluster_eps, local_eps = c.internal_local, c.cluster_eps, c.local_eps
    has_endpoints, has_internal, has_external = c.has_endpoints, c.has_internal, c.has_external
    internal_chain = svl_chain if internal_local else svc_chain
    external_policy_chain = svl_chain if external_local else svc_chain

    if not has_endpoints:
        internal_target = external_target = fam.reject
        internal_comment = external_comment = f"{name} has no endpoints"
    else:
        internal_target = external_target = "DROP"
        internal_comment = external_comment = f"{name} has no local endpoints"

    dport = f"-m {proto} --dport {port.port}"
    cluster_ip = f"-d {svc.cluster_ip}{host} -p {proto}"
    if has_internal:
        nat["KUBE-SERVICES"].append(f"{cluster_ip} {comment(name + ' cluster IP')} {dport} -j {internal_chain}")
    else:
        flt["KUBE-SERVICES"].append(f"{cluster_ip} {comment(internal_comment)} {dport} -j {internal_target}")

    for ip in svc.external_ips:
        if has_endpoints:
            nat["KUBE-SERVICES"].append(f"-d {ip}{host} -p {proto} {comment(name + ' external IP')} {dport} "
                                        f"-j {ext_chain}")
        if not has_external:
            flt["KUBE-EXTERNAL-SERVICES"].append(
                f"-d {ip}{host} -p {proto} {comment(external_comment)} {dport} -j {external_target}")

    fw_chain = f"KUBE-FW-{h}"
    uses_fw = has_endpoints and bool(lb_vips) and bool(svc.load_balancer_source_ranges)
    for ip in lb_vips:
        if has_endpoints:
            nat["KUBE-SERVICES"].append(f"-d {ip}{host} -p {proto} {comment(name + ' loadbalancer IP')} {dport} "
                                        f"-j {fw_chain if uses_fw else ext_chain}")
        if uses_fw:
            flt["KUBE-PROXY-FIREWALL"].append(
                f"-d {ip}{host} -p {proto} {comment(f'{name} traffic not accepted by {fw_chain}')} {dport} -j DROP")
    if not has_external:
        for ip in lb_vips:
            flt["KUBE-EXTERNAL-SERVICES"].append(
                f"-d {ip}{host} -p {proto} {comment(external_comment)} {dport} -j {external_target}")

    if port.node_port:
        node_dport = f"-m {proto} --dport {port.node_port}"
        if has_endpoints:
            nat["KUBE-NODEPORTS"].append(f"-p {proto} {comment(name)} {node_dport} -j {ext_chain}")
        if not has_external:
            flt["KUBE-EXTERNAL-SERVICES"].append(
                f"-p {proto} {comment(external_comment)} -m addrtype --dst-type LOCAL {node_dport} -j {external_target}")

    if svc.health_check_node_port:
        flt["KUBE-NODEPORTS"].append(f"-p tcp {comment(name + ' health check node port')} "
                                     f"-m tcp --dport {svc.health_check_node_port} -j ACCEPT")

    chains = {}
    if has_internal:
        chains.setdefault(internal_chain, []).append(
            f"! -s {cluster_cidr} {cluster_ip} {comment(name + ' cluster IP')} {dport} -j KUBE-MARK-MASQ")

    if has_endpoints and externally_accessible:
        ext = chains.setdefault(ext_chain, [])
        if not external_local:
            ext.append(f"{comment(f'masquerade traffic for {name} external destinations')} -j KUBE-MARK-MASQ")
        else:
            ext += [f"-s {cluster_cidr} {comment(f'pod traffic for {name} external destinations')} -j {svc_chain}",
                    f"{comment(f'masquerade LOCAL traffic for {name} external destinations')} "
                    "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
                    f"{comment(f'route LOCAL traffic for {name} external destinations')} "
                    f"-m addrtype --src-type LOCAL -j {svc_chain}"]
        if has_external:
            ext.append(f"-j {external_policy_chain}")

    if uses_fw:
        fw = chains.setdefault(fw_chain, [])
        lb_comment = comment(name + " loadbalancer IP")
        fw += [f"-s {cidr} {lb_comment} -j {ext_chain}" for cidr in svc.load_balancer_source_ranges]
        node_ip = getattr(node, "ip6" if fam.name == "IPv6" else "ip", None)     # the proxier's node IP
        if node_ip and any(ipaddress.ip_address(node_ip) in ipaddress.ip_network(c) for c in svc.load_balancer_source_ranges):
            fw += [f"-s {ip}{host} {lb_comment} -j {ext_chain}" for ip in lb_vips]   # the node reaching its own VIP
        fw.append(comment(f"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL"))

    if cluster_eps:
        chains.setdefault(svc_chain, []).extend(_to_endpoints(svc, name, key, cluster_eps, fam))
    if local_eps:
        chains.setdefault(svl_chain, []).extend(_to_endpoints(svc, name, key, local_eps, fam))

    for endpoint in dict.fromkeys(e[0] for e in cluster_eps + local_eps):
        sep = endpoint_chain(key, endpoint)
        ip = endpoint_ip(endpoint)
        affinity = f" -m recent --set --name {sep} {fam.recent_tail}" if svc.session_affinity == "ClientIP" else ""
        chains[sep] = [f"-s {ip}{host} {comment(name)} -j KUBE-MARK-MASQ",
                       f"-p {proto} {comment(name)}{affinity} -m {proto} -j DNAT --to-destination {endpoint}"]
    for chain, rules in chains.items():
        nat.setdefault(chain, []).extend(rules)


def _to_endpoints(svc, name, key, eps, fam=FAMILIES["IPv4"]):
    """writeServiceToEndpointRules: affinity checks first, then one rule per endpoint, rule
    i of n matching with probability 1/(n-i), the last unconditionally."""
    rules = []
    if svc.session_affinity == "ClientIP":
        for endpoint, _ in eps:
            sep = endpoint_chain(key, endpoint)
            rules.append(f"{comment(f'{name} -> {endpoint}')} -m recent --rcheck --seconds {svc.affinity_timeout} "
                         f"--reap --name {sep} {fam.recent_tail} -j {sep}")
    n = len(eps)
    for i, (endpoint, _) in enumerate(eps):
        chance = f" -m statistic --mode random --probability {probability(n - i)}" if i < n - 1 else ""
        rules.append(f"{comment(f'{name} -> {endpoint}')}{chance} -j {endpoint_chain(key, endpoint)}")
    return rules


def node_plan(state, node, rules=True):
    """kube-proxy's part of a node: its sysctl and (unless `rules` is False) its two tables;
    in a dual-stack cluster the IPv6 proxier's two ip6tables tables too (kube-proxy's
    --cluster-cidr holds both pod networks: each proxier's local-traffic detector has its
    own). route_localnet is IPv4's alone: IPv6 has no localhost NodePorts. An IPv6 lab's
    kube-proxy has the IPv6 proxier alone."""
    c = state.cluster
    tables = node_tables(state.services, state.endpoint_slices, node, c.pod_subnet) if rules and c.ipv4 else {}
    tables6 = node_tables(state.services, state.endpoint_slices, node, c.pod_subnet6, "IPv6") \
        if rules and c.ipv6 else {}
    sysctls = (("net/ipv4/conf/all/route_localnet", "1"),) if c.ipv4 else ()
    return NetnsPlan(node.netns, sysctls=sysctls, iptables=tables, ip6tables=tables6, owner="kube-proxy")
