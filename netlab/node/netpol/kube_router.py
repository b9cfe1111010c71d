"""kube-router's network policy controller (v2.6.3, pkg/controllers/netpol), as k3s runs it
beside flannel and kube-proxy (RunFirewall only): a node's filter-table chains and its ipsets
from the NetworkPolicies, the pods and the namespaces' labels.

`inputs(state)` takes what the controller's informers hold (an immutable snapshot, so a partial
sync can plan the last state and this one and write only what differs); `node_table(...)` and
`ipsets(...)` are pure functions of it. The rules are written the way `iptables-save` prints
them back, so a plan compares with a node's table line for line:

- INPUT, FORWARD and OUTPUT jump to KUBE-ROUTER-INPUT/-FORWARD/-OUTPUT at position 1, ahead of
  kube-proxy's jumps, with the comment "kube-router netpol - <uuid>" (uuid = base32(sha256(
  built-in chain + the rule's words))[:16]), re-asserted every sync.
- KUBE-ROUTER-INPUT starts by letting traffic to the service CIDR and to local NodePorts
  through (RETURN); each top-level chain then steers a local pod's traffic (-d / -s its IP,
  and the bridged, physdev form in FORWARD) into its KUBE-POD-FW- chain.
- The ACCEPT of traffic marked 0x20000 ("complies with the policies") is where k3s's fork
  puts it: in INPUT, FORWARD and OUTPUT right after the last KUBE- rule (kube-proxy's jumps),
  its comment prefixed "KUBE-ROUTER ". Upstream kube-router ends each top-level chain with it
  instead, which, jumped at position 1, accepts a flow before kube-proxy's filter rules see
  it (the REJECT of a Service without endpoints); k3s moved it for that reason.
- A pod's chain: KUBE-NWPLCY-COMMON (INVALID dropped, RELATED/ESTABLISHED and some ICMP
  accepted: the firewall is stateful, so a connection set up before a policy change lives
  on); traffic from the node accepted; KUBE-NWPLCY-DEFAULT (marks 0x10000: allowed) for a
  direction no policy isolates; one jump per policy that selects the pod; then unmarked
  traffic is logged (NFLOG group 100) and REJECTed (icmp-port-unreachable: a TCP client sees
  "connection refused" at once), the 0x10000 mark cleared and 0x20000 set.
- A policy's chain KUBE-NWPLCY-<hash> marks and returns what one of its rules allows, two
  lines per allow, matching on ipsets: KUBE-DST-/KUBE-SRC- sets of the pods it selects, of
  each rule's peer pods, ipBlocks (hash:net, excepts `nomatch`) and named ports.

Where netlab differs from kube-router, and why:
- kube-router hashes the sync's nanosecond timestamp (syncVersion) into the KUBE-POD-FW- and
  KUBE-NWPLCY- names, so every sync renames, rewrites and deletes every chain; netlab hashes a
  fixed syncVersion, SYNC_VERSION = "1", so an unchanged sync writes nothing and a change
  writes only the chains it changes. The names are still kube-router's hashes (with that
  version: nsA/simple-egress's chain is KUBE-NWPLCY-C23KD7UE4TAT3Y5M).
- kube-router lists pods and policies from unordered caches, so the order of the pods' jumps
  and of a pod's policy jumps varies between nodes and syncs; netlab orders pods by namespace
  and name and policies likewise (a pod chain holds the policy jumps in reverse, as kube-router
  inserts each at position 1). The order decides nothing: every policy only marks.
- A rule whose ports are all named ports that no selected pod has (or has with another
  protocol) allows nothing here; kube-router then has no port to match on and writes its
  all-ports rule, allowing every port (a bug against the API's semantics, which the
  evaluator and Kubernetes' tests follow).
- A named-port set is hash:ip wherever it is made (kube-router makes it hash:net when only an
  ipBlock peer needs it; it holds pod addresses either way).

A dual-stack lab's nodes run the sync once per family, as kube-router does with one iptables and
one ipset handler per family: the IPv6 side is the same layout in ip6tables (NetnsPlan.ip6tables)
with the pods' IPv6 addresses (/128), the IPv6 service subnet in KUBE-ROUTER-INPUT's head, the
policy chains hashed with "IPv6" (the pod chains' hash has no family: the same names in both),
ICMPv6's types in KUBE-NWPLCY-COMMON (neighbour discovery and echo-reply besides IPv4's three),
REJECT with icmp6-port-unreachable; its sets are named "inet6:" + the name hashed with "IPv6",
created `family inet6`, and hold the pods' IPv6 addresses and the IPv6 ipBlocks (an ipBlock of
the other family is ignored on each side; an IPv6 /0 is 2000::/3 and fd00::/8, kube-router's
halves). A pod without an address of a family has nothing of it on that side.
"""

import base64
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field, replace

from netlab.api.apiserver import namespace_labels
from netlab.api.spec import NODE_PORT_RANGE
from netlab.values.desired import NetnsPlan
from netlab.values.ipset import IPSet
from netlab.values.iptables import Table

SYNC_VERSION = "1"             # kube-router's is the sync's UnixNano: see the module's docstring
FAMILY = "IPv4"                # string(v1.IPv4Protocol), hashed into policy chain and set names
IPV6 = "IPv6"                  # string(v1.IPv6Protocol), the second family of a dual-stack lab
INET6_PREFIX = "inet6:"        # utils.IPSetName: an IPv6 set's name

INPUT, FORWARD, OUTPUT = "KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT"
TOP_LEVEL = {"INPUT": INPUT, "FORWARD": FORWARD, "OUTPUT": OUTPUT}
DEFAULT = "KUBE-NWPLCY-DEFAULT"
COMMON = "KUBE-NWPLCY-COMMON"
POD_FW_PREFIX = "KUBE-POD-FW-"
POLICY_PREFIX = "KUBE-NWPLCY-"
SRC_PREFIX, DST_PREFIX = "KUBE-SRC-", "KUBE-DST-"

MARK_POLICY = "0x10000/0x10000"        # "a policy allows it", reset after each pod chain
MARK_ACCEPT = "0x20000/0x20000"        # "complies with the policies": accepted at the end
NFLOG_GROUP = 100


def _b32(text):
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def pod_chain(namespace, name, version=SYNC_VERSION):
    """podFirewallChainName: KUBE-POD-FW- + base32(sha256(namespace + pod + syncVersion))[:16]."""
    return POD_FW_PREFIX + _b32(namespace + name + version)


def policy_chain(namespace, name, version=SYNC_VERSION, family=FAMILY):
    """networkPolicyChainName: KUBE-NWPLCY- + base32(sha256(ns + name + syncVersion + family))[:16]."""
    return POLICY_PREFIX + _b32(namespace + name + version + family)


def set_name(name, family=FAMILY):
    """ipSetName: an IPv6 set's name carries the "inet6:" prefix."""
    return INET6_PREFIX + name if family == IPV6 else name


def target_set(prefix, namespace, name, family=FAMILY):
    """The pods a policy selects: KUBE-DST- (matched as destinations, for its ingress rules) or
    KUBE-SRC- (as sources, for its egress rules) + the hash of ns + name + family."""
    return set_name(prefix + _b32(namespace + name + family), family)


def rule_set(prefix, namespace, name, direction, index, kind, port_index="", family=FAMILY):
    """A rule's set: `direction` "ingress" or "egress", `kind` "pod", "ipblock" or "namedport"
    (with the named port's index after the rule's): prefix + hash of ns + name + direction +
    "rule" + index [+ port index] + family + kind."""
    return set_name(prefix + _b32(f"{namespace}{name}{direction}rule{index}{port_index}{family}{kind}"), family)


def rule_uuid(chain, words):
    """kube-router's uuid of a rule it keeps at a fixed position: the first 16 characters of
    base32(sha256(chain + the rule's words run together)); it is appended to the rule's comment."""
    return _b32(chain + "".join(words))


_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPED = re.compile(r"([\"\\'])")


def comment(text):
    """`-m comment`, quoted as iptables-save quotes it (only when a character needs it)."""
    if _PLAIN.fullmatch(text):
        return f"-m comment --comment {text}"
    return '-m comment --comment "' + _ESCAPED.sub(r"\\\1", text) + '"'


# --- what the controller reads -----------------------------------------------------------------

@dataclass(frozen=True)
class PodInfo:
    """What the controller reads of a pod; only pods with an IP are read (isNetPolActionable)."""
    namespace: str
    name: str
    node: str
    ip: str
    labels: dict = field(hash=False)
    ports: tuple = ()          # (name, protocol, number) of its containers' ports
    ip6: str = ""              # a dual-stack lab's pod: its IPv6 address (status.podIPs[1])

    def address(self, family):
        """getPodIPForFamily: the pod's address of `family` ("" when it has none)."""
        return self.ip6 if family == IPV6 else self.ip

    @property
    def primary(self):
        """status.podIP: the first family's address (IPv6 in an IPv6 lab)."""
        return self.ip or self.ip6


@dataclass(frozen=True)
class Inputs:
    """Everything a sync reads; two of them compare equal when a sync would write nothing."""
    policies: tuple            # NetworkPolicyManifest, in (namespace, name) order
    pods: tuple                # PodInfo, in (namespace, name) order
    namespaces: dict = field(hash=False)    # namespace -> labels (those of the pods' namespaces)
    service_cidr: str = "10.96.0.0/12"
    node_ports: str = "30000:32767"
    families: tuple = (FAMILY,)            # ("IPv4", "IPv6") on a dual-stack lab
    service_cidr6: str = ""                # the IPv6 service subnet (the second --service-cluster-ip-range)


def inputs(state):
    """What the controller's informers hold of a state: policies, pods with an IP, namespaces'
    labels, and its flags (--service-cluster-ip-range, --service-node-port-range)."""
    c = state.cluster
    pods = tuple(sorted((PodInfo(p.namespace, p.name, p.node, p.ip or "", dict(p.labels),
                                 tuple((port.name, port.protocol, port.container_port)
                                       for c in p.template.containers for port in c.ports),
                                 (p.ip6 or "") if c.ipv6 else "")
                         for p in state.pods if p.node is not None and p.ips), key=lambda p: (p.namespace, p.name)))
    used = {p.namespace for p in pods}
    labels = {n: namespace_labels(n, state.namespaces.get(n, {}).get("labels")) for n in sorted(used)}
    cidr = lambda subnet: str(ipaddress.ip_network(subnet, strict=False)) if subnet else ""  # noqa: E731
    return Inputs(tuple(sorted(state.network_policies, key=lambda p: (p.namespace, p.name))), pods, labels,
                  cidr(c.service_subnet), f"{NODE_PORT_RANGE[0]}:{NODE_PORT_RANGE[1]}", c.families,
                  cidr(c.service_subnet6))


# --- the policies, as buildNetworkPoliciesInfo reads them ------------------------------------------

@dataclass(frozen=True)
class _Rule:
    match_all_peers: bool      # no from/to: every source (ingress) or destination (egress)
    pods: tuple                # peer pods' IPs (of the family)
    ipblocks: tuple            # hash:net entries
    match_all_ports: bool
    ports: tuple               # (protocol, port or "", end port or "")
    named: tuple               # (protocol, port, the IPs of the pods that have that named port)


@dataclass(frozen=True)
class _Policy:
    namespace: str
    name: str
    kind: str                  # "ingress", "egress" or "both"
    targets: tuple             # PodInfo the policy selects
    ingress: tuple             # _Rule
    egress: tuple
    family: str = FAMILY


def _kind(policy):
    ingress, egress = "Ingress" in policy.policy_types, "Egress" in policy.policy_types
    return "both" if ingress and egress else "egress" if egress else "ingress"


def _peer_pods(inp, policy, peer):
    """evalPodPeer: a namespaceSelector's namespaces' pods (those its podSelector, if any, takes);
    a podSelector alone: the policy's namespace's pods; an ipBlock: none."""
    if peer.namespace_selector is not None:
        names = {n for n, labels in inp.namespaces.items() if peer.namespace_selector.matches(labels)}
        return [p for p in inp.pods if p.namespace in names
                and (peer.pod_selector is None or peer.pod_selector.matches(p.labels))]
    if peer.pod_selector is not None:
        return [p for p in inp.pods if p.namespace == policy.namespace and peer.pod_selector.matches(p.labels)]
    return []


def _ipblock_entries(block, family=FAMILY):
    """evalIPBlockPeer: the CIDR and its excepts (nomatch); a /0, which hash:net cannot hold,
    as two halves (IPv6: kube-router's 2000::/3 and fd00::/8). A block of the other family is
    ignored on this family's side."""
    zero = ("2000::/3", "fd00::/8") if family == IPV6 else ("0.0.0.0/1", "128.0.0.0/1")

    def entries(cidr, flag=""):
        halves = zero if cidr.endswith("/0") else (cidr,)
        return [f"{c} timeout 0{flag}" for c in halves]
    if ipaddress.ip_network(block.cidr, strict=False).version != (6 if family == IPV6 else 4):
        return []
    return entries(block.cidr) + [e for x in block.excepts for e in entries(x, " nomatch")]


def _named_ports(pods, family=FAMILY):
    """grabNamedPortFromPod over pods: {port name: {protocol: {number: [pod IPs of the family]}}}."""
    out = {}
    for p in pods:
        for name, protocol, number in p.ports:
            ips = out.setdefault(name, {}).setdefault(protocol, {}).setdefault(number, [])
            if p.address(family):
                ips.append(p.address(family))
    return out


def _ports(ports, named_map):
    """processNetworkPolicyPorts: numeric ports (and protocol-only ones), and named ports
    resolved through the pods' container ports (one entry per number they resolve to)."""
    numeric, named = [], []
    for pp in ports:
        if pp.port is None:
            numeric.append((pp.protocol, "", ""))
        elif isinstance(pp.port, int):
            end = str(pp.end_port) if pp.end_port is not None and pp.end_port >= pp.port else ""
            numeric.append((pp.protocol, str(pp.port), end))
        else:
            for number, ips in sorted(named_map.get(pp.port, {}).get(pp.protocol, {}).items()):
                named.append((pp.protocol, str(number), tuple(dict.fromkeys(ips))))
    return tuple(numeric), tuple(named)


def _rule(inp, policy, rule, named_map, family=FAMILY):
    pods, blocks = [], []
    for peer in rule.peers:
        pods += _peer_pods(inp, policy, peer)
        if peer.ip_block is not None and peer.pod_selector is None and peer.namespace_selector is None:
            blocks += _ipblock_entries(peer.ip_block, family)
    if named_map is None:                       # egress: the named ports of the destinations
        named_map = _named_ports(pods if rule.peers else [p for p in inp.pods if p.namespace == policy.namespace],
                                 family)
    numeric, named = _ports(rule.ports, named_map) if rule.ports else ((), ())
    return _Rule(not rule.peers, tuple(dict.fromkeys(p.address(family) for p in pods if p.address(family))),
                 _last_per_net(blocks), not rule.ports, numeric, named)


def _last_per_net(entries):
    """A rule's ipBlock entries as its hash:net set holds them once `ipset restore -exist` has
    added them in order: a later entry of a net replaces an earlier one (a cidr of one peer that
    is another's except is whichever came last)."""
    out = {}
    for entry in entries:
        net = ipaddress.ip_network(entry.split()[0], strict=False)
        out.pop(net, None)
        out[net] = entry
    return tuple(out.values())


def _policy(inp, policy, family=FAMILY):
    targets = tuple(p for p in inp.pods if p.namespace == policy.namespace and policy.pod_selector.matches(p.labels))
    kind = _kind(policy)
    ingress_map = _named_ports(targets, family)          # an ingress named port is the selected pod's own
    ingress = tuple(_rule(inp, policy, r, ingress_map, family) for r in policy.ingress) if kind != "egress" else ()
    egress = tuple(_rule(inp, policy, r, None, family) for r in policy.egress) if kind != "ingress" else ()
    return _Policy(policy.namespace, policy.name, kind, targets, ingress, egress, family)


# --- a policy's chain and sets (syncNetworkPolicyChains) -------------------------------------------

def _allow(text, src="", dst="", protocol="", port="", end=""):
    """appendRuleToPolicyChain: the mark, then the same matches returning once marked."""
    words = [f"-p {protocol.lower()}"] if protocol else []
    words.append(comment(text))
    if src:
        words.append(f"-m set --match-set {src} src")
    if dst:
        words.append(f"-m set --match-set {dst} dst")
    if port:
        words.append(f"-m {protocol.lower()} --dport {port}" + (f":{end}" if end else ""))
    match = " ".join(words)
    return [f"{match} -j MARK --set-xmark {MARK_POLICY}", f"{match} -m mark --mark {MARK_POLICY} -j RETURN"]


def _hash_set(name, kind, entries, family):
    return IPSet(name, kind, entries, "inet6" if family == IPV6 else "inet")


def _ingress(pol, dst_set, sets):
    ns, name, fam = pol.namespace, pol.name, pol.family
    from_pods = f"rule to ACCEPT traffic from source pods to dest pods selected by policy name {name} namespace {ns}"
    from_all = f"rule to ACCEPT traffic from all sources to dest pods selected by policy name: {name} namespace {ns}"
    from_blocks = ("rule to ACCEPT traffic from specified ipBlocks to dest pods selected by policy name: "
                   f"{name} namespace {ns}")
    out = []

    def named_set(i, j, ips):
        s = rule_set(DST_PREFIX, ns, name, "ingress", i, "namedport", j, fam)
        sets.setdefault(s, _hash_set(s, "hash:ip", tuple(f"{ip} timeout 0" for ip in ips), fam))
        return s

    for i, rule in enumerate(pol.ingress):
        if rule.pods:
            src = rule_set(SRC_PREFIX, ns, name, "ingress", i, "pod", family=fam)
            sets[src] = _hash_set(src, "hash:ip", tuple(f"{ip} timeout 0" for ip in rule.pods), fam)
            for protocol, port, end in rule.ports:
                out += _allow(from_pods, src, dst_set, protocol, port, end)
            for j, (protocol, port, ips) in enumerate(rule.named):
                out += _allow(from_pods, src, named_set(i, j, ips), protocol, port)
            if rule.match_all_ports:             # kube-router: no ports left (see the docstring)
                out += _allow(from_pods, src, dst_set)
        if rule.match_all_peers and not rule.match_all_ports:
            for protocol, port, end in rule.ports:
                out += _allow(from_all, "", dst_set, protocol, port, end)
            for j, (protocol, port, ips) in enumerate(rule.named):
                out += _allow(from_all, "", named_set(i, j, ips), protocol, port)
        if rule.match_all_peers and rule.match_all_ports:
            out += _allow(from_all, "", dst_set)
        if rule.ipblocks:
            src = rule_set(SRC_PREFIX, ns, name, "ingress", i, "ipblock", family=fam)
            sets[src] = _hash_set(src, "hash:net", rule.ipblocks, fam)
            if not rule.match_all_ports:
                for protocol, port, end in rule.ports:
                    out += _allow(from_blocks, src, dst_set, protocol, port, end)
                for j, (protocol, port, ips) in enumerate(rule.named):
                    out += _allow(from_blocks, src, named_set(i, j, ips), protocol, port)
            else:
                out += _allow(from_blocks, src, dst_set)
    return out


def _egress(pol, src_set, sets):
    ns, name, fam = pol.namespace, pol.name, pol.family
    to_pods = f"rule to ACCEPT traffic from source pods to dest pods selected by policy name {name} namespace {ns}"
    to_all = ("rule to ACCEPT traffic from source pods to all destinations selected by policy name: "
              f"{name} namespace {ns}")
    to_blocks = ("rule to ACCEPT traffic from source pods to specified ipBlocks selected by policy name: "
                 f"{name} namespace {ns}")
    out = []
    for i, rule in enumerate(pol.egress):
        if rule.pods:
            dst = rule_set(DST_PREFIX, ns, name, "egress", i, "pod", family=fam)
            sets[dst] = _hash_set(dst, "hash:ip", tuple(f"{ip} timeout 0" for ip in rule.pods), fam)
            for protocol, port, end in rule.ports:
                out += _allow(to_pods, src_set, dst, protocol, port, end)
            for j, (protocol, port, ips) in enumerate(rule.named):
                s = rule_set(DST_PREFIX, ns, name, "egress", i, "namedport", j, fam)
                sets.setdefault(s, _hash_set(s, "hash:ip", tuple(f"{ip} timeout 0" for ip in ips), fam))
                out += _allow(to_pods, src_set, s, protocol, port)
            if rule.match_all_ports:
                out += _allow(to_pods, src_set, dst)
        if rule.match_all_peers and not rule.match_all_ports:
            for protocol, port, end in rule.ports:
                out += _allow(to_all, src_set, "", protocol, port, end)
            for protocol, port, _ in rule.named:
                out += _allow(to_all, src_set, "", protocol, port)
        if rule.match_all_peers and rule.match_all_ports:
            out += _allow(to_all, src_set, "")
        if rule.ipblocks:
            dst = rule_set(DST_PREFIX, ns, name, "egress", i, "ipblock", family=fam)
            sets[dst] = _hash_set(dst, "hash:net", rule.ipblocks, fam)
            if not rule.match_all_ports:
                for protocol, port, end in rule.ports:   # kube-router matches no named port here
                    out += _allow(to_blocks, src_set, dst, protocol, port, end)
            else:
                out += _allow(to_blocks, src_set, dst)
    return out


@dataclass(frozen=True)
class Policies:
    """What every node has alike: the policies' chains and sets, and which policies select
    each pod (by IP, in the policies' order)."""
    chains: dict               # KUBE-NWPLCY-<hash> -> rules
    sets: tuple                # IPSet (of every family: those of `ipv6` too)
    selecting: dict            # pod IP (its primary one) -> [(policy chain, kind, policy name)]
    ipv6: object = None        # the IPv6 family's Policies (chains, sets, selecting), if the lab has IPv6


def policies(inp, family=None):
    """The policies' chains and sets of the lab's first family, with the IPv6 family's as
    `ipv6` when the lab has IPv6 (an IPv6 lab's are both; `family`: that family's alone)."""
    if family is not None:
        return _compile(inp, family)
    if inp.families == (IPV6,):
        v6 = _compile(inp, IPV6)
        return replace(v6, ipv6=v6)
    v4 = _compile(inp, FAMILY)
    if IPV6 not in inp.families:
        return v4
    v6 = _compile(inp, IPV6)
    return Policies(v4.chains, v4.sets + v6.sets, v4.selecting, v6)


def _compile(inp, family):
    chains, sets, selecting = {}, {}, {}
    for manifest in inp.policies:
        pol = _policy(inp, manifest, family)
        chain = policy_chain(pol.namespace, pol.name, family=family)
        targets = tuple(f"{p.address(family)} timeout 0" for p in pol.targets if p.address(family))
        rules = []
        if pol.kind in ("ingress", "both"):
            dst = target_set(DST_PREFIX, pol.namespace, pol.name, family)
            sets[dst] = _hash_set(dst, "hash:ip", targets, family)
            rules += _ingress(pol, dst, sets)
        if pol.kind in ("egress", "both"):
            src = target_set(SRC_PREFIX, pol.namespace, pol.name, family)
            sets[src] = _hash_set(src, "hash:ip", targets, family)
            rules += _egress(pol, src, sets)
        chains[chain] = tuple(rules)
        for p in pol.targets:
            selecting.setdefault(p.primary, []).append((chain, pol.kind, pol.name))
    return Policies(chains, tuple(sets.values()), selecting)


def ipsets(inp, compiled=None):
    """The node's sets (every node has them all, local pods or not)."""
    return (compiled or policies(inp)).sets


# --- the node's chains (ensureTopLevelChains, syncPodFirewallChains, ensureExplicitAccept) ----------

EXPLICIT_ACCEPT = (f'{comment("KUBE-ROUTER rule to explicitly ACCEPT traffic that comply to network policies")} '
                   f"-m mark --mark {MARK_ACCEPT} -j ACCEPT")


def hooks():
    """The jumps from the built-in chains, kept at position 1."""
    out = {}
    for builtin, chain in TOP_LEVEL.items():
        uuid = rule_uuid(builtin, ["-m", "comment", "--comment", "kube-router netpol", "-j", chain])
        out[builtin] = (f"{comment(f'kube-router netpol - {uuid}')} -j {chain}",)
    return out


def input_head(service_cidr, node_ports):
    """KUBE-ROUTER-INPUT's first rules: the service CIDR and the local NodePorts are not the
    pods' business (RETURN), each with its uuid."""
    text = "allow traffic to primary/secondary cluster IP range"
    uuid = rule_uuid(INPUT, ["-m", "comment", "--comment", text, "-d", service_cidr, "-j", "RETURN"])
    out = [f"-d {service_cidr} {comment(f'{text} - {uuid}')} -j RETURN"]
    for protocol in ("tcp", "udp"):
        text = f"allow LOCAL {protocol.upper()} traffic to node ports"
        words = ["-p", protocol, "-m", "comment", "--comment", text, "-m", "addrtype", "--dst-type", "LOCAL",
                 "-m", "multiport", "--dports", node_ports, "-j", "RETURN"]
        out.append(f"-p {protocol} {comment(f'{text} - {rule_uuid(INPUT, words)}')} -m addrtype --dst-type LOCAL "
                   f"-m multiport --dports {node_ports} -j RETURN")
    return out


# utils.CommonICMPRules, as iptables-save prints them back (the type by number)
ICMP_RULES = (("allow icmp echo requests", 8), ("allow icmp destination unreachable messages", 3),
              ("allow icmp time exceeded messages", 11))
ICMPV6_RULES = (("allow icmp echo requests", 128), ("allow icmp destination unreachable messages", 1),
                ("allow icmp time exceeded messages", 3), ("allow icmp neighbor solicitation messages", 135),
                ("allow icmp neighbor advertisement messages", 136), ("allow icmp echo reply messages", 129))


def common_chain(family=FAMILY):
    """KUBE-NWPLCY-COMMON. kube-router passes its first two comments to iptables with the double
    quotes inside the argument (as its restore input needs them), so they are part of the text.
    IPv6 accepts neighbour discovery and echo-reply too (ipv6-icmp, --icmpv6-type)."""
    if family == IPV6:
        icmp = tuple(f"-p ipv6-icmp {comment(text)} -m icmp6 --icmpv6-type {n} -j ACCEPT" for text, n in ICMPV6_RULES)
    else:
        icmp = tuple(f"-p icmp {comment(text)} -m icmp --icmp-type {n} -j ACCEPT" for text, n in ICMP_RULES)
    return (f"""{comment('"rule to drop invalid state for pod"')} -m conntrack --ctstate INVALID -j DROP""",
            f"""{comment('"rule for stateful firewall for pod"')} """
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT") + icmp


def default_chain():
    return (f"{comment('rule to mark traffic matching a network policy')} -j MARK --set-xmark {MARK_POLICY}",)


LOCAL_NODE = "rule to permit the traffic traffic to pods when source is the pod's local node"   # sic


def pod_rules(pod, chain, selecting, family=FAMILY):
    """A local pod's chain, in kube-router's order (its first rules are each inserted at 1)."""
    ip = f"{pod.ip6}/128" if family == IPV6 else f"{pod.ip}/32"
    kinds = {kind for _, kind, _ in selecting}
    jumps = []
    for policy, kind, name in selecting:
        where = {"ingress": f"-d {ip} ", "egress": f"-s {ip} "}.get(kind, "")
        jumps.insert(0, f"{where}{comment(f'run through nw policy {name}')} -j {policy}")
    out = [f"{comment('common bi-directional traffic policy rules')} -j {COMMON}",
           f"-d {ip} {comment(LOCAL_NODE)} -m addrtype --src-type LOCAL -j ACCEPT"]
    if not kinds & {"egress", "both"}:
        out.append(f"-s {ip} {comment('run through default egress network policy chain')} -j {DEFAULT}")
    if not kinds & {"ingress", "both"}:
        out.append(f"-d {ip} {comment('run through default ingress network policy chain')} -j {DEFAULT}")
    who = f"POD name:{pod.name} namespace: {pod.namespace}"
    return tuple(out + jumps + [
        f"{comment(f'rule to log dropped traffic {who}')} -m mark ! --mark {MARK_POLICY} "
        f"-m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group {NFLOG_GROUP}",
        f"{comment(f'rule to REJECT traffic destined for {who}')} -m mark ! --mark {MARK_POLICY} "
        f"-j REJECT --reject-with {'icmp6-port-unreachable' if family == IPV6 else 'icmp-port-unreachable'}",
        "-j MARK --set-xmark 0x0/0x10000",
        f"{comment('set mark to ACCEPT traffic that comply to network policies')} -j MARK --set-xmark {MARK_ACCEPT}",
    ])


def node_table(inp, node, compiled=None, family=FAMILY):
    """The node's filter table contribution (`node`: its name) for `family` (IPv6: the
    ip6tables table of a dual-stack node)."""
    compiled = compiled or policies(inp)
    if family == IPV6:
        compiled = compiled.ipv6 or policies(inp, IPV6)
    cidr = inp.service_cidr6 if family == IPV6 else inp.service_cidr
    top = {INPUT: input_head(cidr, inp.node_ports), FORWARD: [], OUTPUT: []}
    pods = {}
    for pod in (p for p in inp.pods if p.node == node and p.address(family)):
        chain = pod_chain(pod.namespace, pod.name)
        ip = f"{pod.ip6}/128" if family == IPV6 else f"{pod.ip}/32"
        who = f"POD name:{pod.name} namespace: {pod.namespace}"
        to = comment(f"rule to jump traffic destined to {who} to chain {chain}")
        frm = comment(f"rule to jump traffic from {who} to chain {chain}")
        bridged = "-m physdev --physdev-is-bridged"
        top[FORWARD] += [f"-d {ip} {to} -j {chain}", f"-d {ip} {bridged} {to} -j {chain}",
                         f"-s {ip} {frm} -j {chain}", f"-s {ip} {bridged} {frm} -j {chain}"]
        top[OUTPUT] += [f"-d {ip} {to} -j {chain}", f"-s {ip} {frm} -j {chain}"]
        top[INPUT].append(f"-s {ip} {frm} -j {chain}")
        pods[chain] = pod_rules(pod, chain, compiled.selecting.get(pod.primary, []), family)
    chains = {**hooks(), **{c: tuple(rules) for c, rules in top.items()},
              COMMON: common_chain(family), DEFAULT: default_chain(), **compiled.chains, **pods}
    return Table("filter", chains)


def node_plan(state, node, inp=None, compiled=None):
    """kube-router's part of a node's plan: its filter chains, and on a dual-stack lab its
    IPv6 family's in ip6tables (its ipsets: `ipsets`)."""
    inp = inp or inputs(state)
    compiled = compiled or policies(inp)
    four = {"iptables": {"filter": node_table(inp, node.name, compiled)}} if FAMILY in inp.families else {}
    six = {"ip6tables": {"filter": node_table(inp, node.name, compiled, IPV6)}} if IPV6 in inp.families else {}
    return NetnsPlan(node.netns, owner="kube-router", **four, **six)


def accept_plan(node, cluster):
    """k3s's explicit ACCEPT in each built-in chain of each family the cluster has: merged
    after kube-proxy's plan, so it lands right after kube-proxy's jumps (the last KUBE- rules)
    and before flanneld's, in ip6tables as in iptables."""
    rules = {builtin: (EXPLICIT_ACCEPT,) for builtin in TOP_LEVEL}
    four = {"iptables": {"filter": Table("filter", rules)}} if cluster.ipv4 else {}
    six = {"ip6tables": {"filter": Table("filter", dict(rules))}} if cluster.ipv6 else {}
    return NetnsPlan(node.netns, owner="kube-router", **four, **six)


def owned(chain):
    """Whether a filter chain is one this agent names (what it removes when no plan wants it)."""
    return chain in TOP_LEVEL.values() or chain.startswith((POD_FW_PREFIX, POLICY_PREFIX))


def sync_changes(old, new, node, old_compiled=None, new_compiled=None, family=FAMILY):
    """A partial sync of one family's handler on one node: the chains whose rules differ
    between the plans of the last inputs and these (written whole; a built-in chain's jump
    never changes), and the chains no longer planned (flushed and deleted): ({chain: rules}, [chains])."""
    before = node_table(old, node, old_compiled, family).chains
    after = node_table(new, node, new_compiled, family).chains
    return {c: r for c, r in after.items() if before.get(c) != r}, [c for c in before if c not in after]


def read(state):
    """The controller's inputs and the policies compiled from them, once for every node: (Inputs, Policies)."""
    inp = inputs(state)
    return inp, policies(inp)
