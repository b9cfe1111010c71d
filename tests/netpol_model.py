"""Kubernetes' NetworkPolicy e2e model and cases (test/e2e/network/netpol), shared by the
evaluator's unit tests (tests/unit/test_networkpolicy_evaluator.py: the cases judged by the
evaluator alone) and the root tests on a real lab (tests/integration/test_netpol_e2e.py: the
same cases applied to topologies/netpol-e2e.yaml and probed with real packets).

Each case is one `f.It` case of network_policy.go, named after it, written as upstream writes it
against its kubeManager `k8s`: the policies are built as the case builds them
(GenNetworkPolicyWithNameAndPodSelector / ...PodMatchLabel with SetSpecIngressRules /
SetSpecEgressRules), and the case calls CreatePolicy, UpdatePolicy, AddNamespaceLabel,
AddPodLabels and cleanNetworkPolicies on the cluster it is given, then ValidateOrFail with the
expected matrix, derived as upstream derives it with a copy of its Reachability (a default-true
table changed by Expect, ExpectAllIngress, ExpectAllEgress and ExpectPeer), never from the
evaluator. A cluster is anything with those methods: EvaluatorCluster below (the model as a
ClusterState, validated by the evaluator), or the root tests' lab (validated by probing).

The model is upstream's defaultModel: namespaces x, y, z labelled `ns: <name>` (plus the API
server's kubernetes.io/metadata.name), pods a, b, c labelled `pod: <name>`, one container
`cont-<port>-<proto>` per port x protocol of the case with the container port
`serve-<port>-<proto>`; all 81 cells compared, loopback ignored (ignoreLoopback). Later upstream
versions cut each case down to the pods it needs; the expectations are the same cells.

endPort has no matrix case upstream (only API validation, network_policy_api.go): its cases
here follow the API reference ("the range of ports from port to endPort, inclusive") with the
same helpers.
"""

import dataclasses
import ipaddress

from netlab.api.objects import ClusterState, Node, Pod
from netlab.api.spec import (ClusterConfig, Container, ContainerPort, IPBlock, LabelSelector, NetworkPolicyManifest,
                             PodTemplate, PolicyPeer, PolicyPort, PolicyRule)
from netlab.controllers import networkpolicy as np

NS_NAME = "kubernetes.io/metadata.name"      # namespaceLabelKey, v1.LabelMetadataName
NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
KEYS = tuple(f"{ns}/{name}" for ns in NAMESPACES for name in POD_NAMES)    # AllPodStrings()
LAN_CLIENT = "172.18.0.100"                  # an address on the lab's LAN that is no node


# ---- the model (model.go) ----

def node(i):
    return Node(f"netpol-worker{i + 1 if i else ''}", "worker", f"172.18.0.{i + 2}", f"10.244.{i + 1}.0/24",
                "", {}, [])


def container(port, protocol):
    return Container(f"cont-{port}-{protocol.lower()}", "agnhost",
                     ports=(ContainerPort(port, protocol, f"serve-{port}-{protocol.lower()}"),))


def make_pod(namespace, name, node_name, ip, labels, containers):
    return Pod(namespace, name, f"uid-{namespace}-{name}", node_name, PodTemplate(dict(labels), tuple(containers)),
               container_id="", host_veth="", netns="", ip=ip)


def model(ports=(80,), protocols=("TCP",), dns=False):
    """upstream's NewModel(x/y/z, a/b/c, ports, protocols): pod a on the first worker, b on the
    second, c on the third, each with the next address of its node's podCIDR."""
    nodes = [node(i) for i in range(3)]
    state = ClusterState(lab="netpol", cluster=ClusterConfig(name="netpol"), nodes=nodes)
    state.namespaces = {ns: {"labels": {"ns": ns}, "created": ""} for ns in NAMESPACES}
    for i, ns in enumerate(NAMESPACES):
        for j, name in enumerate(POD_NAMES):
            state.pods.append(make_pod(ns, name, nodes[j].name, f"10.244.{j + 1}.{i + 2}", {"pod": name},
                                       [container(p, proto) for p in ports for proto in protocols]))
    if dns:
        dns_containers = [Container("coredns", "coredns", ports=(ContainerPort(53, "UDP", "dns"),
                                                                 ContainerPort(53, "TCP", "dns-tcp")))]
        state.pods.append(make_pod("kube-system", "coredns-0", nodes[0].name, "10.244.1.100",
                                   {"k8s-app": "kube-dns"}, dns_containers))
    return state


def model_pods(state):
    """AllPods(): x/a, x/b, x/c, y/a, ... z/c."""
    return [state.pod(ns, name) for ns in NAMESPACES for name in POD_NAMES]


def pod_ip(state, key):
    ns, name = key.split("/")
    return state.pod(ns, name).ip


def make_large_cidr_for_ip(ip):
    """makeLargeCIDRForIP: the /4 that holds the address."""
    return str(ipaddress.ip_network(f"{ip}/4", strict=False))


# ---- reachability.go ----

@dataclasses.dataclass
class Peer:
    """Matches a pod by namespace and/or name; empty matches everything."""
    namespace: str = ""
    pod: str = ""

    def matches(self, key):
        ns, name = key.split("/")
        return (not self.namespace or self.namespace == ns) and (not self.pod or self.pod == name)


class Reachability:
    def __init__(self, pods, default=True):
        self.keys = [p.key for p in pods]
        self.expected = {(f, t): default for f in self.keys for t in self.keys}

    def _set(self, frm, to, connected):
        if (frm, to) not in self.expected:
            raise KeyError(f"{frm} -> {to} is no cell of the table")
        self.expected[(frm, to)] = connected

    def expect(self, frm, to, connected):
        self._set(frm, to, connected)

    def expect_all_ingress(self, pod, connected):
        for frm in self.keys:
            self._set(frm, pod, connected)

    def expect_all_egress(self, pod, connected):
        for to in self.keys:
            self._set(pod, to, connected)

    def expect_peer(self, frm, to, connected):
        for f in self.keys:
            if frm.matches(f):
                for t in self.keys:
                    if to.matches(t):
                        self._set(f, t, connected)


def reachability(state):
    return Reachability(model_pods(state), True)


def validate_or_fail(state, port, protocol, reach):
    """ValidateOrFail: probe every pair (here: evaluate it) and compare, loopback ignored. Both
    readings of the rules must pass: the API's, and kube-router's (egress named ports)."""
    for kube_router in (False, True):
        observed = np.matrix(np.PolicyIndex(state, kube_router=kube_router), model_pods(state), port, protocol)
        wrong = np.differences(reach.expected, observed)
        assert not wrong, (f"{port}/{protocol} kube_router={kube_router}: {wrong}\n"
                           f"expected:\n{np.render_matrix(reach.expected)}\n"
                           f"observed:\n{np.render_matrix(observed)}\n"
                           f"comparison:\n{np.render_matrix(np.comparison(reach.expected, observed))}")


# ---- policies.go / k8s_util.go ----

def sel(labels=None, *expressions):
    """metav1.LabelSelector{MatchLabels, MatchExpressions}: expressions are (key, op, values)."""
    return LabelSelector(dict(labels or {}), tuple((k, op, tuple(v)) for k, op, v in expressions))


def gen(name, pod_selector, ingress=None, egress=None, types=None):
    """GenNetworkPolicyWithNameAndPodSelector(name, selector, SetSpecIngressRules(ingress...),
    SetSpecEgressRules(egress...)): None = that setter not called; each setter called appends its
    type to policyTypes (in the order upstream's cases call them: ingress first)."""
    if types is None:
        types = tuple(t for t, rules in (("Ingress", ingress), ("Egress", egress)) if rules is not None)
    return NetworkPolicyManifest("", name, pod_selector, tuple(types), tuple(ingress or ()), tuple(egress or ()))


def gen_match_label(name, labels, **kw):
    """GenNetworkPolicyWithNameAndPodMatchLabel."""
    return gen(name, sel(labels), **kw)


def rule(*peers, ports=()):
    return PolicyRule(tuple(peers), tuple(ports))


def peer(pods=None, namespaces=None, block=None):
    return PolicyPeer(pod_selector=pods, namespace_selector=namespaces, ip_block=block)


def port(number=None, protocol="TCP", end=None):
    return PolicyPort(protocol, number, end)


def create_policy(state, policy, namespace):
    state.network_policies.append(dataclasses.replace(policy, namespace=namespace))


def update_policy(state, policy, namespace):
    policy = dataclasses.replace(policy, namespace=namespace)
    state.network_policies = [policy if p.key == policy.key else p for p in state.network_policies]


def add_namespace_label(state, namespace, key, value):
    state.namespaces[namespace]["labels"][key] = value


def add_pod_labels(state, namespace, name, labels):
    pod = state.pod(namespace, name)
    pod.template = dataclasses.replace(pod.template, labels={**pod.labels, **labels})


def clean_network_policies(state):
    state.network_policies = []


# ---- the cases, and the cluster they drive ----

@dataclasses.dataclass(frozen=True)
class Case:
    """One case: `name` its function's (the unit test's id), `title` upstream's f.It text,
    `ports` and `protocols` the model's containers it asks initializeResources for (SCTP: the
    [Feature:SCTPConnectivity] cases), `args` a parametrized case's arguments."""
    name: str
    title: str
    fn: object
    ports: tuple = (80,)
    protocols: tuple = ("TCP",)
    args: tuple = ()

    def run(self, cluster):
        """Run the case against `cluster` (its ValidateOrFail calls raise on a wrong cell)."""
        self.fn(cluster, *self.args)

    def __str__(self):
        return self.name


CASES = []


def case(ports=(80,), protocols=("TCP",), each=None):
    """Register the function as a case; `each`: one case per tuple of arguments (its id the
    arguments that are not sets)."""
    def register(fn):
        title = " ".join((fn.__doc__ or fn.__name__.replace("_", " ")).split())
        for args in each or [()]:
            suffix = "-".join(str(a) for a in args if not isinstance(a, (set, frozenset)))
            CASES.append(Case(fn.__name__ + (f"[{suffix}]" if args else ""), title, fn, tuple(ports),
                              tuple(protocols), tuple(args)))
        return fn
    return register


class EvaluatorCluster:
    """A case's cluster as the evaluator sees it (no kernel): the model as a ClusterState,
    changed as upstream's kubeManager changes the API's objects, each ValidateOrFail the
    evaluator's matrix (both readings) against the expected one."""

    def __init__(self, state):
        self.state = state

    @classmethod
    def of(cls, c):
        """The model a case asks for."""
        return cls(model(ports=c.ports, protocols=c.protocols))

    def create_policy(self, policy, namespace):
        create_policy(self.state, policy, namespace)

    def update_policy(self, policy, namespace):
        update_policy(self.state, policy, namespace)

    def clean_network_policies(self):
        clean_network_policies(self.state)

    def add_namespace_label(self, namespace, key, value):
        add_namespace_label(self.state, namespace, key, value)

    def set_namespace_labels(self, namespace, labels):
        self.state.namespaces[namespace]["labels"] = dict(labels)

    def add_pod_labels(self, namespace, name, labels):
        add_pod_labels(self.state, namespace, name, labels)

    def pod_ip(self, key):
        return pod_ip(self.state, key)

    def reachability(self):
        return reachability(self.state)

    def validate(self, port, protocol, reach):
        validate_or_fail(self.state, port, protocol, reach)


# ============ Netpol: NetworkPolicy between server and client ============

@case()
def should_support_a_default_deny_ingress_policy(k):
    """should support a 'default-deny-ingress' policy"""
    k.create_policy(gen("deny-ingress", sel(), ingress=()), "x")
    reach = k.reachability()
    reach.expect_peer(Peer(), Peer("x"), False)
    k.validate(80, "TCP", reach)


@case()
def should_support_a_default_deny_all_policy(k):
    """should support a 'default-deny-all' policy"""
    k.create_policy(gen("deny-all", sel(), ingress=(), egress=()), "x")
    reach = k.reachability()
    reach.expect_peer(Peer(), Peer("x"), False)
    reach.expect_peer(Peer("x"), Peer(), False)
    k.validate(80, "TCP", reach)


@case()
def should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_podselector(k):
    """should enforce policy to allow traffic from pods within server namespace based on PodSelector"""
    policy = gen_match_label("x-a-allows-x-b", {"pod": "a"}, ingress=[rule(peer(pods=sel({"pod": "b"})))])
    k.create_policy(policy, "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", False)
    reach.expect("x/b", "x/a", True)
    k.validate(80, "TCP", reach)


@case()
def should_enforce_policy_to_allow_ingress_traffic_for_a_target(k):
    """should enforce policy to allow ingress traffic for a target"""
    k.create_policy(gen("deny-all", sel(), ingress=()), "x")
    allow = gen_match_label("allow-all-to-a", {"pod": "a"}, ingress=[rule(peer(pods=sel(), namespaces=sel()))])
    k.create_policy(allow, "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", True)
    reach.expect_all_ingress("x/b", False)
    reach.expect_all_ingress("x/c", False)
    k.validate(80, "TCP", reach)


@case()
def should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces(k):
    """should enforce policy to allow ingress traffic from pods in all namespaces"""
    k.create_policy(gen_match_label("allow-from-another-ns", {"pod": "a"},
                                    ingress=[rule(peer(namespaces=sel({})))]), "x")
    k.validate(80, "TCP", k.reachability())


@case()
def should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespaceselector(k):
    """should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector"""
    k.create_policy(gen_match_label("allow-client-a-via-ns-selector", {"pod": "a"},
                                    ingress=[rule(peer(namespaces=sel({NS_NAME: "y"})))]), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    k.validate(80, "TCP", reach)


@case()
def should_enforce_policy_based_on_podselector_with_matchexpressions(k):
    """should enforce policy based on PodSelector with MatchExpressions"""
    allowed = sel(None, ("pod", "In", ["b"]))
    k.create_policy(gen_match_label("x-a-allows-x-b", {"pod": "a"}, ingress=[rule(peer(pods=allowed))]), "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", False)
    reach.expect("x/b", "x/a", True)
    k.validate(80, "TCP", reach)


@case()
def should_enforce_policy_based_on_namespaceselector_with_matchexpressions(k):
    """should enforce policy based on NamespaceSelector with MatchExpressions"""
    allowed = sel(None, (NS_NAME, "In", ["y"]))
    k.create_policy(gen_match_label("allow-ns-y-match-selector", {"pod": "a"},
                                    ingress=[rule(peer(namespaces=allowed))]), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    k.validate(80, "TCP", reach)


@case()
def should_enforce_policy_based_on_podselector_or_namespaceselector(k):
    """should enforce policy based on PodSelector or NamespaceSelector"""
    not_x = sel(None, (NS_NAME, "NotIn", ["x"]))
    rules = [rule(peer(namespaces=not_x), peer(pods=sel({"pod": "b"})))]
    k.create_policy(gen_match_label("allow-ns-y-match-selector", {"pod": "a"}, ingress=rules), "x")
    reach = k.reachability()
    reach.expect("x/a", "x/a", False)
    reach.expect("x/c", "x/a", False)
    k.validate(80, "TCP", reach)


@case()
def should_enforce_policy_based_on_podselector_and_namespaceselector(k):
    """should enforce policy based on PodSelector and NamespaceSelector"""
    not_x = sel(None, (NS_NAME, "NotIn", ["x"]))
    rules = [rule(peer(pods=sel({"pod": "b"}), namespaces=not_x))]
    k.create_policy(gen_match_label("allow-ns-y-podselector-and-nsselector", {"pod": "a"}, ingress=rules), "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", False)
    reach.expect("y/b", "x/a", True)
    reach.expect("z/b", "x/a", True)
    k.validate(80, "TCP", reach)


@case()
def should_enforce_policy_based_on_multiple_podselectors_and_namespaceselectors(k):
    """should enforce policy based on Multiple PodSelectors and NamespaceSelectors"""
    not_x = sel(None, (NS_NAME, "NotIn", ["x"]))
    b_or_c = sel(None, ("pod", "In", ["b", "c"]))
    k.create_policy(gen_match_label("allow-ns-y-z-pod-b-c", {"pod": "a"},
                                    ingress=[rule(peer(pods=b_or_c, namespaces=not_x))]), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect("y/a", "x/a", False)
    reach.expect("z/a", "x/a", False)
    k.validate(80, "TCP", reach)


@case()
def should_enforce_policy_based_on_any_podselectors(k):
    """should enforce policy based on any PodSelectors"""
    rules = [rule(peer(pods=sel({"pod": "b"})), peer(pods=sel({"pod": "c"})))]
    k.create_policy(gen_match_label("allow-ns-x-pod-b-c", {"pod": "a"}, ingress=rules), "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", False)
    reach.expect("x/b", "x/a", True)
    reach.expect("x/c", "x/a", True)
    k.validate(80, "TCP", reach)


def y_pod_a_policy():
    rules = [rule(peer(pods=sel({"pod": "a"}), namespaces=sel({NS_NAME: "y"})))]
    return gen_match_label("allow-ns-y-pod-a-via-namespace-pod-selector", {"pod": "a"}, ingress=rules)


@case()
def should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_podselector_and_namespaceselector(k):
    """should enforce policy to allow traffic only from a pod in a different namespace based on
    PodSelector and NamespaceSelector"""
    k.create_policy(y_pod_a_policy(), "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", False)
    reach.expect("y/a", "x/a", True)
    k.validate(80, "TCP", reach)


@case(ports=(81,))
def should_enforce_policy_based_on_ports(k):
    """should enforce policy based on Ports"""
    rules = [rule(peer(namespaces=sel({NS_NAME: "y"})), ports=[port(81, "TCP")])]
    k.create_policy(gen_match_label("allow-client-a-via-ns-selector", {"pod": "a"}, ingress=rules), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("y"), Peer("x", "a"), True)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    k.validate(81, "TCP", reach)


@case(ports=(80, 81))
def should_enforce_multiple_stacked_policies_with_overlapping_podselectors(k):
    """should enforce multiple, stacked policies with overlapping podSelectors"""
    from_y = peer(namespaces=sel({NS_NAME: "y"}))
    k.create_policy(gen_match_label("allow-client-a-via-ns-selector", {"pod": "a"},
                                    ingress=[rule(from_y, ports=[port(81, "TCP")])]), "x")
    allow = k.reachability()
    allow.expect_peer(Peer("x"), Peer("x", "a"), False)
    allow.expect_peer(Peer("y"), Peer("x", "a"), True)
    allow.expect_peer(Peer("z"), Peer("x", "a"), False)
    k.validate(81, "TCP", allow)
    deny = k.reachability()
    deny.expect_all_ingress("x/a", False)
    k.validate(80, "TCP", deny)
    k.create_policy(gen_match_label("allow-client-a-via-ns-selector-80", {"pod": "a"},
                                    ingress=[rule(from_y, ports=[port(80, "TCP")])]), "x")
    k.validate(80, "TCP", allow)


@case(ports=(80, 81))
def should_support_allow_all_policy(k):
    """should support allow-all policy"""
    k.create_policy(gen_match_label("allow-all", {}, ingress=[rule()]), "x")
    k.validate(80, "TCP", k.reachability())
    k.validate(81, "TCP", k.reachability())


@case(ports=(80, 81))
def should_allow_ingress_access_on_one_named_port(k):
    """should allow ingress access on one named port"""
    k.create_policy(gen_match_label("allow-all", {}, ingress=[rule(ports=[port("serve-81-tcp")])]), "x")
    k.validate(81, "TCP", k.reachability())
    reach80 = k.reachability()
    reach80.expect_peer(Peer(), Peer("x"), False)
    k.validate(80, "TCP", reach80)


@case(ports=(80, 81))
def should_allow_ingress_access_from_namespace_on_one_named_port(k):
    """should allow ingress access from namespace on one named port"""
    rules = [rule(peer(namespaces=sel({NS_NAME: "y"})), ports=[port("serve-80-tcp", "TCP")])]
    k.create_policy(gen_match_label("allow-client-a-via-ns-selector-80", {"pod": "a"}, ingress=rules), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    k.validate(80, "TCP", reach)
    fail = k.reachability()
    fail.expect_all_ingress("x/a", False)
    k.validate(81, "TCP", fail)


@case(ports=(80, 81))
def should_allow_egress_access_on_one_named_port(k):
    """should allow egress access on one named port"""
    k.create_policy(gen_match_label("allow-egress", {}, egress=[rule(ports=[port("serve-80-tcp")])]), "x")
    k.validate(80, "TCP", k.reachability())
    reach81 = k.reachability()
    reach81.expect_peer(Peer("x"), Peer(), False)
    k.validate(81, "TCP", reach81)


@case(ports=(81,))
def should_enforce_updated_policy(k):
    """should enforce updated policy"""
    policy = gen_match_label("allow-all-mutate-to-deny-all", {}, ingress=[rule()])
    k.create_policy(policy, "x")
    k.validate(81, "TCP", k.reachability())
    k.update_policy(dataclasses.replace(policy, ingress=()), "x")
    deny = k.reachability()
    deny.expect_peer(Peer(), Peer("x"), False)
    k.validate(81, "TCP", deny)


@case()
def should_allow_ingress_access_from_updated_namespace(k):
    """should allow ingress access from updated namespace"""
    k.create_policy(gen_match_label("allow-client-a-via-ns-selector", {"pod": "a"},
                                    ingress=[rule(peer(namespaces=sel({"ns2": "updated"})))]), "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", False)
    k.validate(80, "TCP", reach)
    k.add_namespace_label("y", "ns2", "updated")
    with_label = k.reachability()
    with_label.expect_all_ingress("x/a", False)
    with_label.expect_peer(Peer("y"), Peer(), True)
    k.validate(80, "TCP", with_label)


@case()
def should_allow_ingress_access_from_updated_pod(k):
    """should allow ingress access from updated pod"""
    match = {"pod": "b", "pod2": "updated"}
    k.create_policy(gen_match_label("allow-client-a-via-pod-selector", {"pod": "a"},
                                    ingress=[rule(peer(pods=sel(match)))]), "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", False)
    k.validate(80, "TCP", reach)
    k.add_pod_labels("x", "b", match)
    with_label = k.reachability()
    with_label.expect_all_ingress("x/a", False)
    with_label.expect("x/b", "x/a", True)
    k.validate(80, "TCP", with_label)


@case()
def should_deny_ingress_from_pods_on_other_namespaces(k):
    """should deny ingress from pods on other namespaces"""
    k.create_policy(gen("deny-empty-policy", sel(), ingress=[rule(peer(pods=sel({})))]), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("y"), Peer("x"), False)
    reach.expect_peer(Peer("z"), Peer("x"), False)
    k.validate(80, "TCP", reach)


@case()
def should_deny_ingress_access_to_updated_pod(k):
    """should deny ingress access to updated pod"""
    k.create_policy(gen("deny-ingress-via-label-selector", sel({"target": "isolated"}), ingress=()), "x")
    k.validate(80, "TCP", k.reachability())
    k.add_pod_labels("x", "a", {"target": "isolated"})
    isolated = k.reachability()
    isolated.expect_all_ingress("x/a", False)
    k.validate(80, "TCP", isolated)


@case()
def should_deny_egress_from_pods_based_on_podselector(k):
    """should deny egress from pods based on PodSelector"""
    k.create_policy(gen("deny-egress-pod-a", sel({"pod": "a"}), egress=()), "x")
    reach = k.reachability()
    reach.expect_all_egress("x/a", False)
    k.validate(80, "TCP", reach)


@case()
def should_deny_egress_from_all_pods_in_a_namespace(k):
    """should deny egress from all pods in a namespace"""
    k.create_policy(gen("deny-egress-ns-x", sel(), egress=()), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x"), Peer(), False)
    k.validate(80, "TCP", reach)


@case(ports=(80, 81))
def should_work_with_ingress_egress_specified_together(k):
    """should work with Ingress, Egress specified together"""
    policy = gen_match_label("allow-client-a-via-pod-selector", {"pod": "a"},
                             ingress=[rule(peer(pods=sel({"pod": "b"})))], egress=[rule(ports=[port(80)])],
                             types=("Egress", "Ingress"))
    k.create_policy(policy, "x")
    reach80 = k.reachability()
    reach80.expect_all_ingress("x/a", False)
    reach80.expect("x/b", "x/a", True)
    k.validate(80, "TCP", reach80)
    reach81 = k.reachability()
    reach81.expect_all_ingress("x/a", False)
    reach81.expect_all_egress("x/a", False)
    reach81.expect("x/b", "x/a", True)
    k.validate(81, "TCP", reach81)


@case()
def should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic(k):
    """should support denying of egress traffic on the client side (even if the server explicitly
    allows this traffic)"""
    to_y_a = rule(peer(pods=sel({"pod": "a"}), namespaces=sel({NS_NAME: "y"})))
    k.create_policy(gen_match_label("allow-to-ns-y-pod-a", {"pod": "a"}, egress=[to_y_a]), "x")
    from_x_a = rule(peer(pods=sel({"pod": "a"}), namespaces=sel({NS_NAME: "x"})))
    k.create_policy(gen_match_label("allow-from-xa-on-ya-match-selector", {"pod": "a"}, ingress=[from_x_a]), "y")
    k.create_policy(gen_match_label("allow-from-xa-on-yb-match-selector", {"pod": "b"}, ingress=[from_x_a]), "y")
    reach = k.reachability()
    reach.expect_peer(Peer("x", "a"), Peer(), False)
    reach.expect_peer(Peer(), Peer("y", "a"), False)
    reach.expect_peer(Peer("x", "a"), Peer("y", "a"), True)
    reach.expect_peer(Peer(), Peer("y", "b"), False)
    k.validate(80, "TCP", reach)


@case()
def should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_podselector_and_namespaceselector(k):
    """should enforce egress policy allowing traffic to a server in a different namespace based on
    PodSelector and NamespaceSelector"""
    to_y_a = rule(peer(pods=sel({"pod": "a"}), namespaces=sel({NS_NAME: "y"})))
    k.create_policy(gen_match_label("allow-to-ns-y-pod-a", {"pod": "a"}, egress=[to_y_a]), "x")
    reach = k.reachability()
    reach.expect_all_egress("x/a", False)
    reach.expect("x/a", "y/a", True)
    k.validate(80, "TCP", reach)


@case(protocols=("TCP", "UDP"))
def should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol(k):
    """should enforce ingress policy allowing any port traffic to a server on a specific protocol"""
    k.create_policy(gen_match_label("allow-ingress-by-proto", {"pod": "a"},
                                    ingress=[rule(ports=[port(None, "TCP")])]), "x")
    k.validate(80, "TCP", k.reachability())
    udp = k.reachability()
    udp.expect_peer(Peer(), Peer("x", "a"), False)
    k.validate(80, "UDP", udp)


@case(ports=(81,))
def should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence(k):
    """should enforce multiple ingress policies with ingress allow-all policy taking precedence"""
    k.create_policy(gen_match_label("allow-ingress-port-80", {}, ingress=[rule(ports=[port(80)])]), "x")
    reach = k.reachability()
    reach.expect_peer(Peer(), Peer("x"), False)
    k.validate(81, "TCP", reach)
    k.create_policy(gen_match_label("allow-ingress", {}, ingress=[rule()]), "x")
    k.validate(81, "TCP", k.reachability())


@case(ports=(81,))
def should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence(k):
    """should enforce multiple egress policies with egress allow-all policy taking precedence"""
    k.create_policy(gen_match_label("allow-egress-port-80", {}, egress=[rule(ports=[port(80)])]), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x"), Peer(), False)
    k.validate(81, "TCP", reach)
    k.create_policy(gen_match_label("allow-egress", {}, egress=[rule()]), "x")
    k.validate(81, "TCP", k.reachability())


@case()
def should_stop_enforcing_policies_after_they_are_deleted(k):
    """should stop enforcing policies after they are deleted"""
    k.create_policy(gen("deny-all", sel(), ingress=(), egress=()), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x"), Peer(), False)
    reach.expect_peer(Peer(), Peer("x"), False)
    k.validate(80, "TCP", reach)
    k.clean_network_policies()
    k.validate(80, "TCP", k.reachability())


@case()
def should_allow_egress_access_to_server_in_cidr_block(k):
    """should allow egress access to server in CIDR block"""
    cidr = f"{k.pod_ip('y/b')}/32"
    k.create_policy(gen_match_label("allow-client-a-via-cidr-egress-rule", {"pod": "a"},
                                    egress=[rule(peer(block=IPBlock(cidr)))]), "x")
    reach = k.reachability()
    reach.expect_all_egress("x/a", False)
    reach.expect("x/a", "y/b", True)
    k.validate(80, "TCP", reach)


def cidr_except_policy(k):
    block = IPBlock(make_large_cidr_for_ip(k.pod_ip("x/b")), (f"{k.pod_ip('x/b')}/32",))
    return gen_match_label("allow-client-a-via-cidr-egress-rule", {"pod": "a"}, egress=[rule(peer(block=block))])


@case()
def should_enforce_except_clause_while_egress_access_to_server_in_cidr_block(k):
    """should enforce except clause while egress access to server in CIDR block"""
    k.create_policy(cidr_except_policy(k), "x")
    reach = k.reachability()
    reach.expect("x/a", "x/b", False)
    k.validate(80, "TCP", reach)


@case()
def should_ensure_an_ip_overlapping_both_ipblock_cidr_and_ipblock_except_is_allowed(k):
    """should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed"""
    k.create_policy(cidr_except_policy(k), "x")
    reach = k.reachability()
    reach.expect("x/a", "x/b", False)
    k.validate(80, "TCP", reach)
    allow = gen_match_label("allow-client-a-via-cidr-egress-rule", {"pod": "a"},
                            egress=[rule(peer(block=IPBlock(f"{k.pod_ip('x/b')}/32")))])
    k.update_policy(allow, "x")
    reach_allow = k.reachability()
    reach_allow.expect_all_egress("x/a", False)
    reach_allow.expect("x/a", "x/b", True)
    k.validate(80, "TCP", reach_allow)


@case()
def should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently_based_on_podselector(k):
    """should enforce policies to check ingress and egress policies can be controlled independently
    based on PodSelector"""
    target = sel({"pod": "a"})
    k.create_policy(gen("allow-egress-for-target", target, egress=[rule()]), "x")
    k.validate(80, "TCP", k.reachability())
    k.create_policy(gen("deny-ingress-via-label-selector", target, ingress=()), "x")
    deny = k.reachability()
    deny.expect_all_ingress("x/a", False)
    k.validate(80, "TCP", deny)


@case(ports=(81,))
def should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_even_if_the_plugin_doesnt_support_sctp(k):
    """should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't
    support SCTP"""
    k.create_policy(gen("deny-ingress", sel(), ingress=()), "x")
    k.create_policy(gen_match_label("allow-only-sctp-ingress-on-port-81", {"pod": "a"},
                                    ingress=[rule(ports=[port(81, "SCTP")])]), "x")
    reach = k.reachability()
    reach.expect_peer(Peer(), Peer("x"), False)
    k.validate(81, "TCP", reach)


@case(ports=(81,))
def should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp_even_if_the_plugin_doesnt_support_sctp(k):
    """should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin
    doesn't support SCTP"""
    k.create_policy(gen_match_label("allow-only-sctp-ingress-on-port-80", {"pod": "a"},
                                    ingress=[rule(ports=[port(80, "SCTP")])]), "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", False)
    k.validate(81, "TCP", reach)


@case(ports=(81,))
def should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp(k):
    """should not allow access by TCP when a policy specifies only UDP"""
    k.create_policy(gen_match_label("allow-only-udp-ingress-on-port-81", {"pod": "a"},
                                    ingress=[rule(ports=[port(81, "UDP")])]), "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", False)
    k.validate(81, "TCP", reach)


@case()
def should_enforce_policy_to_allow_traffic_based_on_namespaceselector_with_matchlabels_using_default_ns_label(k):
    """should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using
    default ns label"""
    for ns in NAMESPACES:                      # only the API server's label can select it now
        k.set_namespace_labels(ns, {})
    k.create_policy(gen_match_label("allow-client-a-via-ns-selector-for-immutable-ns-label", {"pod": "a"},
                                    ingress=[rule(peer(namespaces=sel({NS_NAME: "y"})))]), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    k.validate(80, "TCP", reach)


@case()
def should_enforce_policy_based_on_namespaceselector_with_matchexpressions_using_default_ns_label(k):
    """should enforce policy based on NamespaceSelector with MatchExpressions using default ns label"""
    not_y = sel(None, (NS_NAME, "NotIn", ["y"]))
    k.create_policy(gen_match_label("allow-ns-y-match-selector-for-immutable-ns-label", {"pod": "a"},
                                    egress=[rule(peer(namespaces=not_y))]), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x", "a"), Peer("y"), False)
    k.validate(80, "TCP", reach)


# ============ Netpol [LinuxOnly]: NetworkPolicy between server and client using UDP ============

@case(protocols=("UDP",))
def udp_should_support_a_default_deny_ingress_policy(k):
    """using UDP: should support a 'default-deny-ingress' policy"""
    k.create_policy(gen("deny-all", sel(), ingress=()), "x")
    reach = k.reachability()
    reach.expect_peer(Peer(), Peer("x"), False)
    k.validate(80, "UDP", reach)


@case(ports=(81,), protocols=("UDP",))
def udp_should_enforce_policy_based_on_ports(k):
    """using UDP: should enforce policy based on Ports"""
    rules = [rule(peer(namespaces=sel({NS_NAME: "y"})), ports=[port(81, "UDP")])]
    k.create_policy(gen_match_label("allow-ingress-on-port-81-ns-x", {"pod": "a"}, ingress=rules), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    k.validate(81, "UDP", reach)


@case(protocols=("UDP",))
def udp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_podselector_and_namespaceselector(k):
    """using UDP: should enforce policy to allow traffic only from a pod in a different namespace
    based on PodSelector and NamespaceSelector"""
    k.create_policy(y_pod_a_policy(), "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", False)
    reach.expect("y/a", "x/a", True)
    k.validate(80, "UDP", reach)


# ============ Netpol [Feature:SCTPConnectivity]: ... using SCTP ============

@case(protocols=("SCTP",))
def sctp_should_support_a_default_deny_ingress_policy(k):
    """using SCTP: should support a 'default-deny-ingress' policy"""
    k.create_policy(gen("deny-all", sel(), ingress=()), "x")
    reach = k.reachability()
    reach.expect_peer(Peer(), Peer("x"), False)
    k.validate(80, "SCTP", reach)


@case(ports=(81,), protocols=("SCTP",))
def sctp_should_enforce_policy_based_on_ports(k):
    """using SCTP: should enforce policy based on Ports"""
    rules = [rule(peer(namespaces=sel({NS_NAME: "y"})), ports=[port(81, "SCTP")])]
    k.create_policy(gen_match_label("allow-ingress-on-port-81-ns-x", {"pod": "a"}, ingress=rules), "x")
    reach = k.reachability()
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    k.validate(81, "SCTP", reach)


@case(protocols=("SCTP",))
def sctp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_podselector_and_namespaceselector(k):
    """using SCTP: should enforce policy to allow traffic only from a pod in a different namespace
    based on PodSelector and NamespaceSelector"""
    k.create_policy(y_pod_a_policy(), "x")
    reach = k.reachability()
    reach.expect_all_ingress("x/a", False)
    reach.expect("y/a", "x/a", True)
    k.validate(80, "SCTP", reach)


# ============ endPort (the API reference's ranges; no matrix case upstream) ============

@case(ports=(80, 81), each=[
    (80, 81, "TCP", {80, 81}),        # the whole range, inclusive
    (79, 80, "TCP", {80}),            # 81 is past the end
    (81, 81, "TCP", {81}),            # endPort == port: one port
    (80, 81, "UDP", set()),           # a UDP range opens no TCP port
])
def endport_should_allow_ingress_from_namespace_on_a_port_range(k, start, end, protocol, open_ports):
    rules = [rule(peer(namespaces=sel({NS_NAME: "y"})), ports=[port(start, protocol, end)])]
    k.create_policy(gen_match_label("allow-ns-y-port-range", {"pod": "a"}, ingress=rules), "x")
    for probe in (80, 81):
        reach = k.reachability()
        reach.expect_all_ingress("x/a", False)
        if probe in open_ports:
            reach.expect_peer(Peer("y"), Peer("x", "a"), True)
        k.validate(probe, "TCP", reach)


@case(ports=(80, 81))
def endport_should_allow_egress_on_a_port_range_and_deny_outside_it(k):
    k.create_policy(gen_match_label("allow-egress-80-80", {}, egress=[rule(ports=[port(80, "TCP", 80)])]), "x")
    k.validate(80, "TCP", k.reachability())
    reach81 = k.reachability()
    reach81.expect_peer(Peer("x"), Peer(), False)
    k.validate(81, "TCP", reach81)
