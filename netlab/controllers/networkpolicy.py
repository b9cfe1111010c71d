"""NetworkPolicy's semantics (networking.k8s.io/v1) as kube-router's controller enforces them,
without the kernel: for a source, a destination and a port/protocol, allowed or not, and why.

Pure: a function of the cluster state (pods, namespaces and their labels, policies). It is
what `netlab probe --area policy` expects and `netlab policy explain` prints; the root tests
compare it with what real packets do.

The rules (Kubernetes' API reference, and what the e2e suite test/e2e/network/netpol asserts):
- isolation is per direction: a pod is isolated for ingress (egress) once a policy of its
  namespace selects it with Ingress (Egress) in policyTypes; a pod no policy selects for a
  direction allows everything in that direction;
- an isolated pod allows what some rule of some selecting policy allows (a union: there is no
  deny rule); `ingress: []` allows nothing, `ingress: [{}]` everything;
- a connection passes when the source's egress AND the destination's ingress allow it; a side
  that is not a pod (the external client, a node, any IP outside the pod network) is subject to
  no policy of its own, only to the other side's ipBlock peers;
- a peer: podSelector alone = those pods of the policy's namespace; namespaceSelector alone =
  every pod of those namespaces; both = the pods matching both (AND); several peers = any (OR);
  ipBlock = the IPs in cidr and in none of except, pod IPs included (the e2e CIDR cases rely on
  it: they allow egress to a pod by its IP);
- ports: protocol defaults to TCP; a number, a number..endPort range, or a container port name
  resolved on the destination pod (name and protocol must both match, so a pod without that
  name is not matched); no ports = every port and protocol.

kube-router adds two things before any policy, both kept here because a probe sees them: its
pod chain accepts traffic to a pod from a local address of the pod's own node (`-m addrtype
--src-type LOCAL`, what lets kubelet's probes through), and KUBE-NWPLCY-COMMON accepts ICMP
echo-request, destination-unreachable and time-exceeded in both directions.

Where kube-router's rules read policies differently from the API, the API's reading is the
default and PolicyIndex(state, kube_router=True) gives kube-router's (v2.6.3); Kubernetes' e2e
cases pass with either. The differences:
- an egress named port is resolved on the policy's own namespace when the rule has no `to`, and
  never given to an ipBlock peer;
- a policy of both types is jumped to from its pods' chains with no -d/-s, so its ingress rules
  also run on the egress of the pods it selects (and its egress rules on their ingress): traffic
  between two pods it selects passes a side when a rule of the other direction allows it;
- the ipBlocks of one rule fill one hash:net set, their excepts as nomatch entries, and the most
  specific entry decides: one peer's except can take addresses out of another peer's cidr.

Traffic to a Service is judged on the backend pod after DNAT: callers pass the backend.

A connection has a family (a dual-stack lab's pods have an IPv6 address too, and kube-router
enforces each family with its own chains and sets): the addresses it uses decide it (an IPv6
address on either end, or ICMPv6: IPv6), or `family`. An ipBlock matches a pod through the
pod's address of the block's family, and only on a connection of that family (an IPv4 block
allows nothing over IPv6 and the other way round); kube-router's --src-type LOCAL and
KUBE-NWPLCY-COMMON hold on both sides (its IPv6 COMMON chain accepts ICMPv6 echo-request,
destination-unreachable, time-exceeded, neighbour discovery and echo-reply).
"""

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

from netlab.api.apiserver import namespace_labels
from netlab.api.objects import Pod
from netlab.errors import NetlabError

INGRESS, EGRESS = "Ingress", "Egress"
ICMP = "ICMP"
ICMPV6 = "ICMPv6"
PROTOCOLS = ("TCP", "UDP", "SCTP")
IPV4, IPV6 = "IPv4", "IPv6"


# ---- the pieces: which pods a policy selects, whether a peer or a port matches ----

def _state(state):
    """The ClusterState of a ClusterState or a PolicyIndex."""
    return state.state if isinstance(state, PolicyIndex) else state


def schedulable(pod):
    """A pod policies can see: bound to a node and given an IP (kube-router skips the others:
    they have no address to put in an ipset)."""
    return pod.node is not None and bool(pod.ips)


def namespace_labels_of(state, name):
    """The labels of namespace `name` as the API serves them (its request's labels, plus the
    immutable kubernetes.io/metadata.name)."""
    state = _state(state)
    return namespace_labels(name, state.namespaces.get(name, {}).get("labels"))


def selected_pods(state, policy):
    """The pods `policy` selects: those of its namespace whose labels its podSelector matches
    (an empty podSelector selects every pod of the namespace), scheduled and with an IP."""
    state = _state(state)
    return [p for p in state.pods
            if p.namespace == policy.namespace and schedulable(p) and policy.pod_selector.matches(p.labels)]


@lru_cache(maxsize=4096)
def _network(cidr):
    return ipaddress.ip_network(cidr, strict=False)


@lru_cache(maxsize=65536)
def _address(ip):
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


def in_block(block, ip):
    """Whether `ip` is in the ipBlock: inside cidr and outside every except."""
    address = _address(ip)
    if address is None or address not in _network(block.cidr):
        return False
    return not any(address in _network(e) for e in block.excepts)


def pod_address(pod, family):
    """A pod's address of `family` (IPv4: pod.ip; IPv6: pod.ip6, None on a single-stack lab)."""
    return pod.ip6 if family == IPV6 else pod.ip


def peer_matches(state, policy, peer, pod=None, ip=None, family=None):
    """Whether `peer` (one entry of a rule's from/to) of `policy` matches `pod`, or, for
    something that is not a pod, the address `ip`. A pod is matched by the selectors (its labels
    and its namespace's) or by an ipBlock holding its address of the block's family; an address
    only by an ipBlock. `family`: the connection's, when known (an ipBlock of the other family
    then matches nothing). A peer with no field at all matches nothing (the API refuses it)."""
    if peer.ip_block is not None:
        block_family = IPV6 if _network(peer.ip_block.cidr).version == 6 else IPV4
        if family is not None and family != block_family:
            return False
        address = pod_address(pod, block_family) if pod is not None else ip
        return bool(address) and in_block(peer.ip_block, address)
    if pod is None or (peer.pod_selector is None and peer.namespace_selector is None):
        return False
    if peer.namespace_selector is None:
        if pod.namespace != policy.namespace:
            return False
    elif not _namespace_matches(state, peer.namespace_selector, pod.namespace):
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)


def resolve_port(rule_port, pod):
    """The number a rule's port stands for on `pod`: a number as is, a name looked up among the
    pod's container ports of the rule's protocol (None when the pod has none, or is no pod)."""
    if rule_port.port is None or isinstance(rule_port.port, int):
        return rule_port.port
    if not isinstance(pod, Pod):
        return None
    protocol = rule_port.protocol or "TCP"
    for container in pod.template.containers:
        for cp in container.ports:
            if cp.name == rule_port.port and (cp.protocol or "TCP") == protocol:
                return cp.container_port
    return None


def port_matches(rule_port, dst_pod, port, protocol):
    """Whether one entry of a rule's ports matches traffic to `dst_pod` on port/protocol: the
    protocol (TCP when unset) must be the traffic's; then no port = every port of it, a number
    (with endPort, the range port..endPort), or a named port of the destination pod."""
    if (rule_port.protocol or "TCP") != protocol.upper():
        return False
    if rule_port.port is None:
        return True
    if isinstance(rule_port.port, str):
        return resolve_port(rule_port, dst_pod) == port
    if rule_port.end_port is not None:
        return rule_port.port <= port <= rule_port.end_port
    return rule_port.port == port


def _namespace_matches(state, selector, namespace):
    if isinstance(state, PolicyIndex):
        return state.namespace_matches(selector, namespace)
    return selector.matches(namespace_labels_of(state, namespace))


# ---- the index: built once per state, so a cell costs only the policies selecting its pods ----

class PolicyIndex:
    """The state seen as kube-router sees it after a sync: for every pod, the policies that
    select it for ingress and for egress (its namespace's policies only, worked out once per
    distinct label set), pods by IP, and the local addresses of every node. Build one per state
    and pass it wherever a state is taken; it does not follow later changes to the state.

    `kube_router`: read the policies as kube-router's rules do (the module's docstring: egress
    named ports, policies of both types, a rule's ipBlocks) instead of as the API defines them."""

    def __init__(self, state, kube_router=False):
        self.state = state
        self.kube_router = kube_router     # the policies read as kube-router's rules read them
        self.pods = [p for p in state.pods if schedulable(p)]
        self.by_ip = {p.ip: p for p in self.pods if p.ip}
        self.by_ip.update({p.ip6: p for p in self.pods if p.ip6})     # a dual-stack lab's pods' IPv6 addresses
        self.by_key = {p.key: p for p in self.pods}
        self._ns_labels = {}
        self._ns_matches = {}
        self._peers = {}               # (policy, peer) -> the keys of the pods its selectors match
        by_namespace = {}
        for policy in state.network_policies:
            by_namespace.setdefault(policy.namespace, []).append(policy)
        self._selecting = {}           # pod key -> ((ingress policies, their keys), (egress ..., ...))
        classes = {}                   # (namespace, labels) -> that pair, shared by pods alike
        for pod in self.pods:
            labels = tuple(sorted(pod.labels.items()))
            pair = classes.get((pod.namespace, labels))
            if pair is None:
                chosen = [p for p in by_namespace.get(pod.namespace, ()) if p.pod_selector.matches(pod.labels)]
                ingress = tuple(p for p in chosen if INGRESS in p.policy_types)
                egress = tuple(p for p in chosen if EGRESS in p.policy_types)
                pair = ((ingress, tuple(p.key for p in ingress)), (egress, tuple(p.key for p in egress)))
                classes[(pod.namespace, labels)] = pair
            self._selecting[pod.key] = pair
        # kube-router's `--src-type LOCAL`: eth0, cni0 (<podCIDR>.1) and flannel.1 (<podCIDR>.0);
        # on a dual-stack node their IPv6 twins (eth0's, cni0's <podCIDR6>::1, flannel-v6.1's <podCIDR6>::)
        self.local = {}
        for node in state.nodes:
            addresses = {a for a in (node.ip, node.ip6) if a}
            for cidr in (node.pod_cidr, node.pod_cidr6):
                if cidr:
                    net = ipaddress.ip_network(cidr, strict=False)
                    addresses |= {str(net.network_address), str(net.network_address + 1)}
            self.local[node.name] = addresses

    def selecting(self, pod, direction):
        """The policies selecting `pod` for `direction`, in the state's order."""
        return self.selecting_with_keys(pod, direction)[0]

    def selecting_with_keys(self, pod, direction):
        pair = self._selecting.get(pod.key)
        if pair is None or not schedulable(pod):       # a pod without an IP: none
            return (), ()
        return pair[0] if direction == INGRESS else pair[1]

    def peer_matches(self, policy, peer, other, family=None):
        """peer_matches for the other end of a connection (a Pod or an address) of `family`. A
        selector peer is worked out once over all pods, as kube-router fills a rule's ipset."""
        if not isinstance(other, Pod):
            return peer_matches(self, policy, peer, ip=other, family=family)
        if peer.ip_block is not None or other.key not in self.by_key:
            return peer_matches(self, policy, peer, pod=other, family=family)
        key = (id(policy), id(peer))
        members = self._peers.get(key)
        if members is None:
            members = self._peers[key] = frozenset(p.key for p in self.pods if peer_matches(self, policy, peer, pod=p))
        return other.key in members

    def namespace_labels(self, name):
        labels = self._ns_labels.get(name)
        if labels is None:
            labels = self._ns_labels[name] = namespace_labels_of(self.state, name)
        return labels

    def namespace_matches(self, selector, namespace):
        key = (id(selector), namespace)
        hit = self._ns_matches.get(key)
        if hit is None:
            hit = self._ns_matches[key] = selector.matches(self.namespace_labels(namespace))
        return hit

    def endpoint(self, thing):
        """A pod, or an address: an address a pod holds is that pod."""
        if isinstance(thing, str):
            return self.by_ip.get(thing, thing)
        return thing


def index(state):
    """A PolicyIndex of `state` (`state` itself when it already is one)."""
    return state if isinstance(state, PolicyIndex) else PolicyIndex(state)


# ---- the verdict ----

@dataclass(frozen=True)
class RuleMatch:
    """The rule that allows a connection: policy `policy` ("ns/name"), rule `rule` of its
    ingress or egress list, through its peer number `peer` and port number `port` (None: the
    rule has no peers, so every peer; no ports, so every port)."""
    policy: str
    direction: str
    rule: int
    peer: int | None
    port: int | None
    manifest: object = field(default=None, compare=False, repr=False)   # the policy itself
    dst: object = field(default=None, compare=False, repr=False)        # for a named port's number

    @property
    def text(self):
        """The rule as explain prints it."""
        return describe_match(self.manifest, self.direction, self.rule, self.peer, self.port, self.dst)


@dataclass(frozen=True)
class Side:
    """One direction of a connection: the egress of its source or the ingress of its
    destination. `policies` are the keys of the policies that select `subject` for it (none: not
    isolated); `allowed_by` the rules that allow the traffic (the first one, or all of them for
    an explanation)."""
    direction: str
    subject: str
    is_pod: bool
    policies: tuple = ()
    allowed_by: tuple = ()
    from_node: str = ""                # ingress from a local address of this node: kube-router accepts it
    icmp: bool = False                 # ICMP (ICMPv6) that KUBE-NWPLCY-COMMON accepts

    @property
    def isolated(self):
        return bool(self.policies)

    @property
    def allowed(self):
        return not self.policies or bool(self.allowed_by) or bool(self.from_node) or self.icmp

    def reasons(self):
        """This side's lines of an explanation."""
        head = f"{self.direction.lower()} ({self.subject}):"
        if not self.is_pod:
            return [f"{head} not a pod: no policy applies to it"]
        if self.icmp == ICMPV6:
            return [f"{head} ICMPv6: kube-router's IPv6 KUBE-NWPLCY-COMMON accepts echo-request, "
                    "destination-unreachable, time-exceeded, neighbor-solicitation, neighbor-advertisement "
                    "and echo-reply before any policy"]
        if self.icmp:
            return [f"{head} ICMP: kube-router's KUBE-NWPLCY-COMMON accepts echo-request, "
                    "destination-unreachable and time-exceeded before any policy"]
        if not self.policies:
            return [f"{head} not isolated: no policy selects {self.subject} for {self.direction.lower()}"]
        n = len(self.policies)
        lines = [f"{head} isolated by {n} {'policy' if n == 1 else 'policies'}: {', '.join(self.policies)}"]
        if self.from_node:
            lines.append(f"  allowed: from a local address of its node {self.from_node} "
                         "(kube-router accepts it before any policy)")
        lines += [f"  allowed by {m.text}" + ("" if m.direction == self.direction else
                  " (kube-router runs a policy of both types whole in the chain of each pod it selects)")
                  for m in self.allowed_by]
        if not self.allowed:
            lines.append(f"  denied: no rule of the {n} {'policy that selects' if n == 1 else 'policies that select'}"
                         " it allows it")
        return lines


@dataclass(frozen=True)
class Verdict:
    """A connection from `src` to `dst` on port/protocol ("x/a" for a pod, the address for
    anything else): allowed when the source's egress and the destination's ingress both are."""
    src: str
    dst: str
    port: int | None
    protocol: str
    egress: Side
    ingress: Side
    allowed: bool

    @property
    def loopback(self):
        return self.src == self.dst

    def reasons(self):
        return self.egress.reasons() + self.ingress.reasons()

    def explain(self):
        where = self.protocol if self.port is None else f"{self.port}/{self.protocol}"
        head = f"{self.src} -> {self.dst} {where}: {'allowed' if self.allowed else 'denied'}"
        return "\n".join([head] + self.reasons())


def _key(thing):
    return thing.key if isinstance(thing, Pod) else str(thing)


def _rule_matches(index, policy, direction, rule, peer, dst, port, protocol, family=IPV4):
    """(peer number, port number) of the first peer and port of `rule` that match, or None.
    `peer` is the other end of the connection, `dst` its destination (for named ports)."""
    if not rule.ports:
        hit = _peer_hit(index, policy, rule, peer, ipblocks=True, family=family)
        return None if hit is False else (hit, None)
    for i, rp in enumerate(rule.ports):
        if index.kube_router and direction == EGRESS and isinstance(rp.port, str):
            hit = _kube_router_named_egress(index, policy, rule, rp, peer, port, protocol, family)
        elif port_matches(rp, dst, port, protocol):
            hit = _peer_hit(index, policy, rule, peer, ipblocks=True, family=family)
        else:
            continue
        if hit is not False:
            return hit, i
    return None


def _peer_hit(index, policy, rule, peer, ipblocks, family=IPV4):
    """The number of the first peer of `rule` matching `peer` (None: the rule has no peers, so
    every peer matches), or False."""
    if not rule.peers:
        return None
    block = _shared_block_hit(rule, peer, family) if index.kube_router and ipblocks else None
    for i, p in enumerate(rule.peers):
        if p.ip_block is not None and index.kube_router:
            if i == block:
                return i
        elif (ipblocks or p.ip_block is None) and index.peer_matches(policy, p, peer, family):
            return i
    return False


def _shared_block_hit(rule, other, family=IPV4):
    """The ipBlocks of `rule` as kube-router's one hash:net set of them holds them: each cidr an
    entry, each except a nomatch entry, a later entry of the same net replacing an earlier one
    (as `ipset restore -exist` does); the most specific entry holding the address decides. The
    number of the peer whose cidr matched, or None. A pod is looked up by its address of the
    connection's family (each family's side has a set of its own)."""
    address = _address(pod_address(other, family) if isinstance(other, Pod) else other)
    if address is None:
        return None
    entries = {}
    for i, p in enumerate(rule.peers):
        if p.ip_block is not None:
            for cidr, nomatch in [(p.ip_block.cidr, False)] + [(e, True) for e in p.ip_block.excepts]:
                net = _network(cidr)
                entries.pop(net, None)
                entries[net] = (i, nomatch)
    holding = [net for net in entries if net.version == address.version and address in net]
    if not holding:
        return None
    i, nomatch = entries[max(holding, key=lambda n: n.prefixlen)]
    return None if nomatch else i


def _kube_router_named_egress(index, policy, rule, rule_port, dst, port, protocol, family=IPV4):
    """An egress rule's named port as kube-router v2 builds it (buildNetworkPoliciesInfo,
    processEgressRules). Without `to`, the name is resolved on the pods of the policy's own
    namespace and each number found is allowed to every destination; with `to`, it is resolved on
    the pods the selector peers match and allowed to those only (an ipBlock peer gets the
    numeric ports alone). The API resolves it on whatever pod the destination is."""
    if (rule_port.protocol or "TCP") != protocol:
        return False
    if not rule.peers:
        numbers = {resolve_port(rule_port, p) for p in index.pods if p.namespace == policy.namespace}
        return None if port in numbers else False
    if resolve_port(rule_port, dst) != port:
        return False
    return _peer_hit(index, policy, rule, dst, ipblocks=False, family=family)


def _side(index, direction, subject, peer, dst, port, protocol, every, family=IPV4):
    if not isinstance(subject, Pod):
        return Side(direction, _key(subject), False)
    policies, keys = index.selecting_with_keys(subject, direction)
    if not policies:
        return Side(direction, subject.key, True)
    if protocol in (ICMP, ICMPV6):
        return Side(direction, subject.key, True, keys, icmp=ICMPV6 if protocol == ICMPV6 else True)
    if direction == INGRESS and isinstance(peer, str) and peer in index.local.get(subject.node, ()):
        return Side(direction, subject.key, True, keys, from_node=subject.node)
    found = []
    for policy in policies:
        for rule_direction, i, rule, other in _rules_run(index, policy, direction, subject, peer):
            hit = _rule_matches(index, policy, rule_direction, rule, other, dst, port, protocol, family)
            if hit is not None:
                found.append(RuleMatch(policy.key, rule_direction, i, hit[0], hit[1], policy, dst))
                if not every:
                    return Side(direction, subject.key, True, keys, tuple(found))
    return Side(direction, subject.key, True, keys, tuple(found))


def _rules_run(index, policy, direction, subject, peer):
    """The rules of `policy` that judge `direction` of `subject` (the other end: `peer`), each as
    (its direction, its number, the rule, the end its peers must match). kube-router also runs a
    policy of both types' rules of the other direction, which match when the policy selects the
    other end too: its ingress rules on a source's egress (their peers match the source), its
    egress rules on a destination's ingress (their peers match the destination)."""
    own = policy.ingress if direction == INGRESS else policy.egress
    out = [(direction, i, rule, peer) for i, rule in enumerate(own)]
    if index.kube_router and INGRESS in policy.policy_types and EGRESS in policy.policy_types \
            and isinstance(peer, Pod) and schedulable(peer) and peer.namespace == policy.namespace \
            and policy.pod_selector.matches(peer.labels):
        other = EGRESS if direction == INGRESS else INGRESS
        out += [(other, i, rule, subject) for i, rule in enumerate(policy.egress if other == EGRESS else policy.ingress)]
    return out


def connection_family(src, dst, protocol="TCP", family=None, primary=IPV4):
    """The family of a connection: `family` if given; IPv6 for ICMPv6 or when either end is
    given as an IPv6 address; IPv4 when one is an IPv4 address; else the cluster's `primary`
    (pods given as pods talk over status.podIP: IPv6 in an IPv6 lab)."""
    if family is not None:
        return family
    if protocol.upper() == ICMPV6.upper():
        return IPV6
    ends = [a for a in (_address(e) for e in (src, dst) if isinstance(e, str)) if a is not None]
    if any(a.version == 6 for a in ends):
        return IPV6
    return IPV4 if ends or protocol.upper() == ICMP.upper() else primary


def evaluate(state, src, dst, port, protocol="TCP", every=False, family=None):
    """The Verdict on a connection from `src` to `dst` (each a Pod, or an address: an address
    a pod holds, IPv4 or IPv6, is that pod) on `port`/`protocol` (TCP, UDP, SCTP, or ICMP /
    ICMPv6 with no port). The connection's family is the addresses' (connection_family; pass
    `family` "IPv6" for pods given as Pods over IPv6). `state` is a ClusterState or a
    PolicyIndex of one (build the index once for many calls). `every`: list every rule that
    allows each side, not only the first."""
    family = connection_family(src, dst, protocol, family, getattr(_state(state).cluster, "primary", IPV4))
    protocol = ICMPV6 if protocol.upper() == ICMPV6.upper() else protocol.upper()
    if protocol not in PROTOCOLS + (ICMP, ICMPV6):
        raise NetlabError(f"protocol {protocol!r}: not one of TCP, UDP, SCTP, ICMP, ICMPv6")
    idx = index(state)
    src, dst = idx.endpoint(src), idx.endpoint(dst)
    egress = _side(idx, EGRESS, src, dst, dst, port, protocol, every, family)
    ingress = _side(idx, INGRESS, dst, src, dst, port, protocol, every, family)
    return Verdict(_key(src), _key(dst), port, protocol, egress, ingress, egress.allowed and ingress.allowed)


def allowed(state, src, dst, port, protocol="TCP"):
    """evaluate(...).allowed."""
    return evaluate(state, src, dst, port, protocol).allowed


def explain(state, src, dst, port, protocol="TCP"):
    """The verdict and its reasons as text, every allowing rule named (policy-assistant's
    explain): which policies select the source for egress and the destination for ingress, and
    which rule of which policy allows each side, or that none of them does."""
    return evaluate(state, src, dst, port, protocol, every=True).explain()


# ---- the matrix, in the notation of Kubernetes' e2e suite ----

def matrix(state, pods, port, protocol="TCP"):
    """{(source key, destination key): allowed} for every ordered pair of `pods` (Pods or
    addresses), sources in the outer order; loopback pairs included."""
    idx = index(state)
    ends = [idx.endpoint(p) for p in pods]
    return {(_key(s), _key(d)): evaluate(idx, s, d, port, protocol).allowed for s in ends for d in ends}


def _keys(cells):
    """The endpoints of a table's cells, in the order they first appear."""
    keys = {}
    for src, dst in cells:
        keys.setdefault(src, None)
        keys.setdefault(dst, None)
    return list(keys)


def render_matrix(cells, keys=None):
    """The table as test/e2e/network/netpol's TruthTable.PrettyPrint prints it: a header
    "-" then the destinations, one row per source, tab-separated, `.` connected, `X` blocked,
    `?` not observed."""
    keys = list(keys) if keys is not None else _keys(cells)
    lines = ["\t".join(["-"] + keys)]
    for src in keys:
        marks = []
        for dst in keys:
            value = cells.get((src, dst))
            marks.append("?" if value is None else "." if value else "X")
        lines.append("\t".join([src] + marks))
    return "\n".join(lines)


def comparison(expected, observed):
    """The e2e suite's comparison table: for each cell, whether observed equals expected."""
    return {cell: observed.get(cell) == value for cell, value in expected.items()}


def differences(expected, observed, ignore_loopback=True):
    """The cells whose observed value differs from the expected one, in the expected table's
    order; loopback cells are ignored as upstream ignores them (ignoreLoopback: a pod reaching
    itself is left undefined by the API)."""
    return [cell for cell, value in expected.items()
            if not (ignore_loopback and cell[0] == cell[1]) and observed.get(cell) != value]


# ---- naming things on the command line ----

def parse_target(text):
    """DST[:PORT][/PROTO] -> (DST, PORT or None, PROTO). PORT is a number or a port name;
    PROTO is TCP (the default), UDP, SCTP or ICMP."""
    rest, protocol = text, "TCP"
    head, sep, tail = rest.rpartition("/")
    # "x/udp" is pod udp of namespace x; "x/a/udp", "x/a:53/udp" and "10.0.0.1/udp" carry a protocol
    if sep and tail.upper() in PROTOCOLS + (ICMP,) and (":" in head or "/" in head or _is_ip(head)):
        rest, protocol = head, tail.upper()
    port = None
    if ":" in rest:
        rest, port = rest.rsplit(":", 1)
        if not port:
            raise NetlabError(f"{text}: no port after ':'")
        port = int(port) if port.isdigit() else port
    if not rest:
        raise NetlabError(f"{text}: no pod or address")
    return rest, port, protocol


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def endpoint(state, name):
    """What `name` stands for: NAMESPACE/POD or POD (namespace default) for a pod, a node's
    name for its address, or any IP address (a pod's IP is that pod)."""
    state = _state(state)
    if _is_ip(name):
        return next((p for p in state.pods if name in (p.ip, p.ip6) and schedulable(p)), name)
    namespace, _, pod_name = name.rpartition("/")
    namespace = namespace or "default"
    pod = next((p for p in state.pods if p.namespace == namespace and p.name == pod_name), None)
    if pod is None:
        if "/" not in name and (node := state.find_node(name)) is not None:
            return node.internal_ip
        pods = ", ".join(p.key for p in state.pods) or "none"
        raise NetlabError(f"lab {state.lab}: no pod {namespace}/{pod_name} (pods: {pods})")
    if not schedulable(pod):
        raise NetlabError(f"lab {state.lab}: pod {pod.key} has no IP yet")
    return pod


# ---- how explain names selectors, peers, ports and rules ----

def describe_selector(selector):
    """A selector as kubectl prints one (metav1.FormatLabelSelector): k=v, k in (a,b),
    k notin (a), k, !k, comma-separated."""
    parts = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for key, op, values in selector.match_expressions:
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def describe_peer(policy, peer):
    if peer.ip_block is not None:
        excepts = f" except {', '.join(peer.ip_block.excepts)}" if peer.ip_block.excepts else ""
        return f"ipBlock {peer.ip_block.cidr}{excepts}"
    pods = "all pods" if peer.pod_selector is None or not describe_selector(peer.pod_selector) \
        else f"pods {{{describe_selector(peer.pod_selector)}}}"
    if peer.namespace_selector is None:
        return f"{pods} in namespace {policy.namespace}"
    ns = describe_selector(peer.namespace_selector)
    return f"{pods} in {'all namespaces' if not ns else f'namespaces {{{ns}}}'}"


def describe_port(rule_port, dst=None):
    protocol = rule_port.protocol or "TCP"
    if rule_port.port is None:
        return f"all ports/{protocol}"
    if isinstance(rule_port.port, str):
        number = resolve_port(rule_port, dst)
        on = f" ({number} on {dst.key})" if number is not None and isinstance(dst, Pod) else ""
        return f"named port {rule_port.port}/{protocol}{on}"
    if rule_port.end_port is not None:
        return f"ports {rule_port.port}-{rule_port.end_port}/{protocol}"
    return f"port {rule_port.port}/{protocol}"


def describe_match(policy, direction, rule, peer, port, dst=None):
    """"x/allow-b ingress rule 0: from pods {pod=b} in namespace x, port 80/TCP"."""
    r = (policy.ingress if direction == INGRESS else policy.egress)[rule]
    way = "from" if direction == INGRESS else "to"
    who = "every peer" if peer is None else describe_peer(policy, r.peers[peer])
    what = "all ports" if port is None else describe_port(r.ports[port], dst)
    return f"{policy.key} {direction.lower()} rule {rule}: {way} {who}, {what}"
