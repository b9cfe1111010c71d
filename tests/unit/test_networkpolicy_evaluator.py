"""The NetworkPolicy evaluator (netlab.controllers.networkpolicy) on Kubernetes' own e2e cases.

Each test is one `f.It` case of test/e2e/network/netpol/network_policy.go, named after it: the
policies are built as the case builds them (GenNetworkPolicyWithNameAndPodSelector /
...PodMatchLabel with SetSpecIngressRules / SetSpecEgressRules, CreatePolicy into its namespace,
UpdatePolicy, AddNamespaceLabel, AddPodLabels, cleanNetworkPolicies), and the expected matrix
is derived as the case derives it, with a copy of upstream's Reachability (a default-true
table changed by Expect, ExpectAllIngress, ExpectAllEgress and ExpectPeer), never from the
evaluator. The model is upstream's defaultModel: namespaces x, y, z labelled `ns: <name>` (plus
the API server's kubernetes.io/metadata.name), pods a, b, c labelled `pod: <name>`, one container
`cont-<port>-<proto>` per port x protocol of the case with the container port `serve-<port>-<proto>`;
all 81 cells compared, loopback ignored (ignoreLoopback). Later upstream versions cut each case
down to the pods it needs; the expectations are the same cells.

Cases with upstream's DNS allowances are the v1.20 policies.go forms (GetAllowEgressByPort,
GetAllowEgressByNamespaceAndPod, GetAllowEgressByCIDR, GetDenyAllWithEgressDNS: an extra egress
rule allowing UDP 53 to anywhere), with a kube-dns pod added to the model. endPort has no matrix
case upstream (only API validation, network_policy_api.go): its cases here follow the API
reference ("the range of ports from port to endPort, inclusive") with the same helpers.
"""

import dataclasses
import ipaddress

import pytest

from netlab.api.objects import ClusterState, Node, Pod
from netlab.api.spec import (ClusterConfig, Container, ContainerPort, IPBlock, LabelSelector, NetworkPolicyManifest,
                             PodTemplate, PolicyPeer, PolicyPort, PolicyRule)
from netlab.controllers import networkpolicy as np
from netlab.errors import NetlabError

NS_NAME = "kubernetes.io/metadata.name"      # namespaceLabelKey, v1.LabelMetadataName
NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
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


# ============ Netpol: NetworkPolicy between server and client ============

def test_should_support_a_default_deny_ingress_policy():
    """should support a 'default-deny-ingress' policy"""
    state = model()
    create_policy(state, gen("deny-ingress", sel(), ingress=()), "x")
    reach = reachability(state)
    reach.expect_peer(Peer(), Peer("x"), False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_support_a_default_deny_all_policy():
    """should support a 'default-deny-all' policy"""
    state = model()
    create_policy(state, gen("deny-all", sel(), ingress=(), egress=()), "x")
    reach = reachability(state)
    reach.expect_peer(Peer(), Peer("x"), False)
    reach.expect_peer(Peer("x"), Peer(), False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_podselector():
    """should enforce policy to allow traffic from pods within server namespace based on PodSelector"""
    state = model()
    policy = gen_match_label("x-a-allows-x-b", {"pod": "a"}, ingress=[rule(peer(pods=sel({"pod": "b"})))])
    create_policy(state, policy, "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", False)
    reach.expect("x/b", "x/a", True)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_policy_to_allow_ingress_traffic_for_a_target():
    """should enforce policy to allow ingress traffic for a target"""
    state = model()
    create_policy(state, gen("deny-all", sel(), ingress=()), "x")
    allow = gen_match_label("allow-all-to-a", {"pod": "a"}, ingress=[rule(peer(pods=sel(), namespaces=sel()))])
    create_policy(state, allow, "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", True)
    reach.expect_all_ingress("x/b", False)
    reach.expect_all_ingress("x/c", False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces():
    """should enforce policy to allow ingress traffic from pods in all namespaces"""
    state = model()
    create_policy(state, gen_match_label("allow-from-another-ns", {"pod": "a"},
                                         ingress=[rule(peer(namespaces=sel({})))]), "x")
    validate_or_fail(state, 80, "TCP", reachability(state))


def test_should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespaceselector():
    """should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector"""
    state = model()
    create_policy(state, gen_match_label("allow-client-a-via-ns-selector", {"pod": "a"},
                                         ingress=[rule(peer(namespaces=sel({NS_NAME: "y"})))]), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_policy_based_on_podselector_with_matchexpressions():
    """should enforce policy based on PodSelector with MatchExpressions"""
    state = model()
    allowed = sel(None, ("pod", "In", ["b"]))
    create_policy(state, gen_match_label("x-a-allows-x-b", {"pod": "a"}, ingress=[rule(peer(pods=allowed))]), "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", False)
    reach.expect("x/b", "x/a", True)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_policy_based_on_namespaceselector_with_matchexpressions():
    """should enforce policy based on NamespaceSelector with MatchExpressions"""
    state = model()
    allowed = sel(None, (NS_NAME, "In", ["y"]))
    create_policy(state, gen_match_label("allow-ns-y-match-selector", {"pod": "a"},
                                         ingress=[rule(peer(namespaces=allowed))]), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_policy_based_on_podselector_or_namespaceselector():
    """should enforce policy based on PodSelector or NamespaceSelector"""
    state = model()
    not_x = sel(None, (NS_NAME, "NotIn", ["x"]))
    rules = [rule(peer(namespaces=not_x), peer(pods=sel({"pod": "b"})))]
    create_policy(state, gen_match_label("allow-ns-y-match-selector", {"pod": "a"}, ingress=rules), "x")
    reach = reachability(state)
    reach.expect("x/a", "x/a", False)
    reach.expect("x/c", "x/a", False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_policy_based_on_podselector_and_namespaceselector():
    """should enforce policy based on PodSelector and NamespaceSelector"""
    state = model()
    not_x = sel(None, (NS_NAME, "NotIn", ["x"]))
    rules = [rule(peer(pods=sel({"pod": "b"}), namespaces=not_x))]
    create_policy(state, gen_match_label("allow-ns-y-podselector-and-nsselector", {"pod": "a"}, ingress=rules), "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", False)
    reach.expect("y/b", "x/a", True)
    reach.expect("z/b", "x/a", True)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_policy_based_on_multiple_podselectors_and_namespaceselectors():
    """should enforce policy based on Multiple PodSelectors and NamespaceSelectors"""
    state = model()
    not_x = sel(None, (NS_NAME, "NotIn", ["x"]))
    b_or_c = sel(None, ("pod", "In", ["b", "c"]))
    create_policy(state, gen_match_label("allow-ns-y-z-pod-b-c", {"pod": "a"},
                                         ingress=[rule(peer(pods=b_or_c, namespaces=not_x))]), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect("y/a", "x/a", False)
    reach.expect("z/a", "x/a", False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_policy_based_on_any_podselectors():
    """should enforce policy based on any PodSelectors"""
    state = model()
    rules = [rule(peer(pods=sel({"pod": "b"})), peer(pods=sel({"pod": "c"})))]
    create_policy(state, gen_match_label("allow-ns-x-pod-b-c", {"pod": "a"}, ingress=rules), "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", False)
    reach.expect("x/b", "x/a", True)
    reach.expect("x/c", "x/a", True)
    validate_or_fail(state, 80, "TCP", reach)


def y_pod_a_policy():
    rules = [rule(peer(pods=sel({"pod": "a"}), namespaces=sel({NS_NAME: "y"})))]
    return gen_match_label("allow-ns-y-pod-a-via-namespace-pod-selector", {"pod": "a"}, ingress=rules)


def test_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_podselector_and_namespaceselector():
    """should enforce policy to allow traffic only from a pod in a different namespace based on
    PodSelector and NamespaceSelector"""
    state = model()
    create_policy(state, y_pod_a_policy(), "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", False)
    reach.expect("y/a", "x/a", True)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_policy_based_on_ports():
    """should enforce policy based on Ports"""
    state = model(ports=(81,))
    rules = [rule(peer(namespaces=sel({NS_NAME: "y"})), ports=[port(81, "TCP")])]
    create_policy(state, gen_match_label("allow-client-a-via-ns-selector", {"pod": "a"}, ingress=rules), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("y"), Peer("x", "a"), True)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    validate_or_fail(state, 81, "TCP", reach)


def test_should_enforce_multiple_stacked_policies_with_overlapping_podselectors():
    """should enforce multiple, stacked policies with overlapping podSelectors"""
    state = model(ports=(80, 81))
    from_y = peer(namespaces=sel({NS_NAME: "y"}))
    create_policy(state, gen_match_label("allow-client-a-via-ns-selector", {"pod": "a"},
                                         ingress=[rule(from_y, ports=[port(81, "TCP")])]), "x")
    allow = reachability(state)
    allow.expect_peer(Peer("x"), Peer("x", "a"), False)
    allow.expect_peer(Peer("y"), Peer("x", "a"), True)
    allow.expect_peer(Peer("z"), Peer("x", "a"), False)
    validate_or_fail(state, 81, "TCP", allow)
    deny = reachability(state)
    deny.expect_all_ingress("x/a", False)
    validate_or_fail(state, 80, "TCP", deny)
    create_policy(state, gen_match_label("allow-client-a-via-ns-selector-80", {"pod": "a"},
                                         ingress=[rule(from_y, ports=[port(80, "TCP")])]), "x")
    validate_or_fail(state, 80, "TCP", allow)


def test_should_support_allow_all_policy():
    """should support allow-all policy"""
    state = model(ports=(80, 81))
    create_policy(state, gen_match_label("allow-all", {}, ingress=[rule()]), "x")
    validate_or_fail(state, 80, "TCP", reachability(state))
    validate_or_fail(state, 81, "TCP", reachability(state))


def test_should_allow_ingress_access_on_one_named_port():
    """should allow ingress access on one named port"""
    state = model(ports=(80, 81))
    create_policy(state, gen_match_label("allow-all", {}, ingress=[rule(ports=[port("serve-81-tcp")])]), "x")
    validate_or_fail(state, 81, "TCP", reachability(state))
    reach80 = reachability(state)
    reach80.expect_peer(Peer(), Peer("x"), False)
    validate_or_fail(state, 80, "TCP", reach80)


def test_should_allow_ingress_access_from_namespace_on_one_named_port():
    """should allow ingress access from namespace on one named port"""
    state = model(ports=(80, 81))
    rules = [rule(peer(namespaces=sel({NS_NAME: "y"})), ports=[port("serve-80-tcp", "TCP")])]
    create_policy(state, gen_match_label("allow-client-a-via-ns-selector-80", {"pod": "a"}, ingress=rules), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    validate_or_fail(state, 80, "TCP", reach)
    fail = reachability(state)
    fail.expect_all_ingress("x/a", False)
    validate_or_fail(state, 81, "TCP", fail)


def test_should_allow_egress_access_on_one_named_port():
    """should allow egress access on one named port"""
    state = model(ports=(80, 81))
    create_policy(state, gen_match_label("allow-egress", {}, egress=[rule(ports=[port("serve-80-tcp")])]), "x")
    validate_or_fail(state, 80, "TCP", reachability(state))
    reach81 = reachability(state)
    reach81.expect_peer(Peer("x"), Peer(), False)
    validate_or_fail(state, 81, "TCP", reach81)


def test_should_enforce_updated_policy():
    """should enforce updated policy"""
    state = model(ports=(81,))
    policy = gen_match_label("allow-all-mutate-to-deny-all", {}, ingress=[rule()])
    create_policy(state, policy, "x")
    validate_or_fail(state, 81, "TCP", reachability(state))
    update_policy(state, dataclasses.replace(policy, ingress=()), "x")
    deny = reachability(state)
    deny.expect_peer(Peer(), Peer("x"), False)
    validate_or_fail(state, 81, "TCP", deny)


def test_should_allow_ingress_access_from_updated_namespace():
    """should allow ingress access from updated namespace"""
    state = model()
    create_policy(state, gen_match_label("allow-client-a-via-ns-selector", {"pod": "a"},
                                         ingress=[rule(peer(namespaces=sel({"ns2": "updated"})))]), "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", False)
    validate_or_fail(state, 80, "TCP", reach)
    add_namespace_label(state, "y", "ns2", "updated")
    with_label = reachability(state)
    with_label.expect_all_ingress("x/a", False)
    with_label.expect_peer(Peer("y"), Peer(), True)
    validate_or_fail(state, 80, "TCP", with_label)


def test_should_allow_ingress_access_from_updated_pod():
    """should allow ingress access from updated pod"""
    state = model()
    match = {"pod": "b", "pod2": "updated"}
    create_policy(state, gen_match_label("allow-client-a-via-pod-selector", {"pod": "a"},
                                         ingress=[rule(peer(pods=sel(match)))]), "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", False)
    validate_or_fail(state, 80, "TCP", reach)
    add_pod_labels(state, "x", "b", match)
    with_label = reachability(state)
    with_label.expect_all_ingress("x/a", False)
    with_label.expect("x/b", "x/a", True)
    validate_or_fail(state, 80, "TCP", with_label)


def test_should_deny_ingress_from_pods_on_other_namespaces():
    """should deny ingress from pods on other namespaces"""
    state = model()
    create_policy(state, gen("deny-empty-policy", sel(), ingress=[rule(peer(pods=sel({})))]), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("y"), Peer("x"), False)
    reach.expect_peer(Peer("z"), Peer("x"), False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_deny_ingress_access_to_updated_pod():
    """should deny ingress access to updated pod"""
    state = model()
    create_policy(state, gen("deny-ingress-via-label-selector", sel({"target": "isolated"}), ingress=()), "x")
    validate_or_fail(state, 80, "TCP", reachability(state))
    add_pod_labels(state, "x", "a", {"target": "isolated"})
    isolated = reachability(state)
    isolated.expect_all_ingress("x/a", False)
    validate_or_fail(state, 80, "TCP", isolated)


def test_should_deny_egress_from_pods_based_on_podselector():
    """should deny egress from pods based on PodSelector"""
    state = model()
    create_policy(state, gen("deny-egress-pod-a", sel({"pod": "a"}), egress=()), "x")
    reach = reachability(state)
    reach.expect_all_egress("x/a", False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_deny_egress_from_all_pods_in_a_namespace():
    """should deny egress from all pods in a namespace"""
    state = model()
    create_policy(state, gen("deny-egress-ns-x", sel(), egress=()), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x"), Peer(), False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_work_with_ingress_egress_specified_together():
    """should work with Ingress, Egress specified together"""
    state = model(ports=(80, 81))
    policy = gen_match_label("allow-client-a-via-pod-selector", {"pod": "a"},
                             ingress=[rule(peer(pods=sel({"pod": "b"})))], egress=[rule(ports=[port(80)])],
                             types=("Egress", "Ingress"))
    create_policy(state, policy, "x")
    reach80 = reachability(state)
    reach80.expect_all_ingress("x/a", False)
    reach80.expect("x/b", "x/a", True)
    validate_or_fail(state, 80, "TCP", reach80)
    reach81 = reachability(state)
    reach81.expect_all_ingress("x/a", False)
    reach81.expect_all_egress("x/a", False)
    reach81.expect("x/b", "x/a", True)
    validate_or_fail(state, 81, "TCP", reach81)


def test_should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic():
    """should support denying of egress traffic on the client side (even if the server explicitly
    allows this traffic)"""
    state = model()
    to_y_a = rule(peer(pods=sel({"pod": "a"}), namespaces=sel({NS_NAME: "y"})))
    create_policy(state, gen_match_label("allow-to-ns-y-pod-a", {"pod": "a"}, egress=[to_y_a]), "x")
    from_x_a = rule(peer(pods=sel({"pod": "a"}), namespaces=sel({NS_NAME: "x"})))
    create_policy(state, gen_match_label("allow-from-xa-on-ya-match-selector", {"pod": "a"}, ingress=[from_x_a]), "y")
    create_policy(state, gen_match_label("allow-from-xa-on-yb-match-selector", {"pod": "b"}, ingress=[from_x_a]), "y")
    reach = reachability(state)
    reach.expect_peer(Peer("x", "a"), Peer(), False)
    reach.expect_peer(Peer(), Peer("y", "a"), False)
    reach.expect_peer(Peer("x", "a"), Peer("y", "a"), True)
    reach.expect_peer(Peer(), Peer("y", "b"), False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_podselector_and_namespaceselector():
    """should enforce egress policy allowing traffic to a server in a different namespace based on
    PodSelector and NamespaceSelector"""
    state = model()
    to_y_a = rule(peer(pods=sel({"pod": "a"}), namespaces=sel({NS_NAME: "y"})))
    create_policy(state, gen_match_label("allow-to-ns-y-pod-a", {"pod": "a"}, egress=[to_y_a]), "x")
    reach = reachability(state)
    reach.expect_all_egress("x/a", False)
    reach.expect("x/a", "y/a", True)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol():
    """should enforce ingress policy allowing any port traffic to a server on a specific protocol"""
    state = model(protocols=("TCP", "UDP"))
    create_policy(state, gen_match_label("allow-ingress-by-proto", {"pod": "a"},
                                         ingress=[rule(ports=[port(None, "TCP")])]), "x")
    validate_or_fail(state, 80, "TCP", reachability(state))
    udp = reachability(state)
    udp.expect_peer(Peer(), Peer("x", "a"), False)
    validate_or_fail(state, 80, "UDP", udp)


def test_should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence():
    """should enforce multiple ingress policies with ingress allow-all policy taking precedence"""
    state = model(ports=(81,))
    create_policy(state, gen_match_label("allow-ingress-port-80", {}, ingress=[rule(ports=[port(80)])]), "x")
    reach = reachability(state)
    reach.expect_peer(Peer(), Peer("x"), False)
    validate_or_fail(state, 81, "TCP", reach)
    create_policy(state, gen_match_label("allow-ingress", {}, ingress=[rule()]), "x")
    validate_or_fail(state, 81, "TCP", reachability(state))


def test_should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence():
    """should enforce multiple egress policies with egress allow-all policy taking precedence"""
    state = model(ports=(81,))
    create_policy(state, gen_match_label("allow-egress-port-80", {}, egress=[rule(ports=[port(80)])]), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x"), Peer(), False)
    validate_or_fail(state, 81, "TCP", reach)
    create_policy(state, gen_match_label("allow-egress", {}, egress=[rule()]), "x")
    validate_or_fail(state, 81, "TCP", reachability(state))


def test_should_stop_enforcing_policies_after_they_are_deleted():
    """should stop enforcing policies after they are deleted"""
    state = model()
    create_policy(state, gen("deny-all", sel(), ingress=(), egress=()), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x"), Peer(), False)
    reach.expect_peer(Peer(), Peer("x"), False)
    validate_or_fail(state, 80, "TCP", reach)
    clean_network_policies(state)
    validate_or_fail(state, 80, "TCP", reachability(state))


def test_should_allow_egress_access_to_server_in_cidr_block():
    """should allow egress access to server in CIDR block"""
    state = model()
    cidr = f"{pod_ip(state, 'y/b')}/32"
    create_policy(state, gen_match_label("allow-client-a-via-cidr-egress-rule", {"pod": "a"},
                                         egress=[rule(peer(block=IPBlock(cidr)))]), "x")
    reach = reachability(state)
    reach.expect_all_egress("x/a", False)
    reach.expect("x/a", "y/b", True)
    validate_or_fail(state, 80, "TCP", reach)


def cidr_except_policy(state):
    block = IPBlock(make_large_cidr_for_ip(pod_ip(state, "x/b")), (f"{pod_ip(state, 'x/b')}/32",))
    return gen_match_label("allow-client-a-via-cidr-egress-rule", {"pod": "a"}, egress=[rule(peer(block=block))])


def test_should_enforce_except_clause_while_egress_access_to_server_in_cidr_block():
    """should enforce except clause while egress access to server in CIDR block"""
    state = model()
    create_policy(state, cidr_except_policy(state), "x")
    reach = reachability(state)
    reach.expect("x/a", "x/b", False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_ensure_an_ip_overlapping_both_ipblock_cidr_and_ipblock_except_is_allowed():
    """should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed"""
    state = model()
    create_policy(state, cidr_except_policy(state), "x")
    reach = reachability(state)
    reach.expect("x/a", "x/b", False)
    validate_or_fail(state, 80, "TCP", reach)
    allow = gen_match_label("allow-client-a-via-cidr-egress-rule", {"pod": "a"},
                            egress=[rule(peer(block=IPBlock(f"{pod_ip(state, 'x/b')}/32")))])
    update_policy(state, allow, "x")
    reach_allow = reachability(state)
    reach_allow.expect_all_egress("x/a", False)
    reach_allow.expect("x/a", "x/b", True)
    validate_or_fail(state, 80, "TCP", reach_allow)


def test_should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently_based_on_podselector():
    """should enforce policies to check ingress and egress policies can be controlled independently
    based on PodSelector"""
    state = model()
    target = sel({"pod": "a"})
    create_policy(state, gen("allow-egress-for-target", target, egress=[rule()]), "x")
    validate_or_fail(state, 80, "TCP", reachability(state))
    create_policy(state, gen("deny-ingress-via-label-selector", target, ingress=()), "x")
    deny = reachability(state)
    deny.expect_all_ingress("x/a", False)
    validate_or_fail(state, 80, "TCP", deny)


def test_should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_even_if_the_plugin_doesnt_support_sctp():
    """should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't
    support SCTP"""
    state = model(ports=(81,))
    create_policy(state, gen("deny-ingress", sel(), ingress=()), "x")
    create_policy(state, gen_match_label("allow-only-sctp-ingress-on-port-81", {"pod": "a"},
                                         ingress=[rule(ports=[port(81, "SCTP")])]), "x")
    reach = reachability(state)
    reach.expect_peer(Peer(), Peer("x"), False)
    validate_or_fail(state, 81, "TCP", reach)


def test_should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp_even_if_the_plugin_doesnt_support_sctp():
    """should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin
    doesn't support SCTP"""
    state = model(ports=(81,))
    create_policy(state, gen_match_label("allow-only-sctp-ingress-on-port-80", {"pod": "a"},
                                         ingress=[rule(ports=[port(80, "SCTP")])]), "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", False)
    validate_or_fail(state, 81, "TCP", reach)


def test_should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp():
    """should not allow access by TCP when a policy specifies only UDP"""
    state = model(ports=(81,))
    create_policy(state, gen_match_label("allow-only-udp-ingress-on-port-81", {"pod": "a"},
                                         ingress=[rule(ports=[port(81, "UDP")])]), "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", False)
    validate_or_fail(state, 81, "TCP", reach)


def test_should_enforce_policy_to_allow_traffic_based_on_namespaceselector_with_matchlabels_using_default_ns_label():
    """should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using
    default ns label"""
    state = model()
    for ns in state.namespaces.values():       # only the API server's label can select it now
        ns["labels"] = {}
    create_policy(state, gen_match_label("allow-client-a-via-ns-selector-for-immutable-ns-label", {"pod": "a"},
                                         ingress=[rule(peer(namespaces=sel({NS_NAME: "y"})))]), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_policy_based_on_namespaceselector_with_matchexpressions_using_default_ns_label():
    """should enforce policy based on NamespaceSelector with MatchExpressions using default ns label"""
    state = model()
    not_y = sel(None, (NS_NAME, "NotIn", ["y"]))
    create_policy(state, gen_match_label("allow-ns-y-match-selector-for-immutable-ns-label", {"pod": "a"},
                                         egress=[rule(peer(namespaces=not_y))]), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x", "a"), Peer("y"), False)
    validate_or_fail(state, 80, "TCP", reach)


def test_should_enforce_default_deny_ingress_policy_against_loadbalancer_traffic_with_externaltrafficpolicy_local():
    """should enforce default-deny ingress policy against LoadBalancer traffic with
    ExternalTrafficPolicy: Local. With Local, kube-proxy keeps the client's address, so the
    backend sees it: neither the load balancer's path nor the NodePort's reaches a pod of x."""
    state = model()
    create_policy(state, gen("deny-ingress", sel(), ingress=()), "x")
    for name in POD_NAMES:
        verdict = np.evaluate(state, LAN_CLIENT, state.pod("x", name), 80, "TCP")
        assert (verdict.allowed, verdict.egress.is_pod, verdict.ingress.policies) == (False, False, ("x/deny-ingress",))
    assert np.evaluate(state, LAN_CLIENT, state.pod("y", "a"), 80, "TCP").allowed


# ============ Netpol [LinuxOnly]: NetworkPolicy between server and client using UDP ============

def test_udp_should_support_a_default_deny_ingress_policy():
    """using UDP: should support a 'default-deny-ingress' policy"""
    state = model(protocols=("UDP",))
    create_policy(state, gen("deny-all", sel(), ingress=()), "x")
    reach = reachability(state)
    reach.expect_peer(Peer(), Peer("x"), False)
    validate_or_fail(state, 80, "UDP", reach)


def test_udp_should_enforce_policy_based_on_ports():
    """using UDP: should enforce policy based on Ports"""
    state = model(ports=(81,), protocols=("UDP",))
    rules = [rule(peer(namespaces=sel({NS_NAME: "y"})), ports=[port(81, "UDP")])]
    create_policy(state, gen_match_label("allow-ingress-on-port-81-ns-x", {"pod": "a"}, ingress=rules), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    validate_or_fail(state, 81, "UDP", reach)


def test_udp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_podselector_and_namespaceselector():
    """using UDP: should enforce policy to allow traffic only from a pod in a different namespace
    based on PodSelector and NamespaceSelector"""
    state = model(protocols=("UDP",))
    create_policy(state, y_pod_a_policy(), "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", False)
    reach.expect("y/a", "x/a", True)
    validate_or_fail(state, 80, "UDP", reach)


# ============ Netpol [Feature:SCTPConnectivity]: ... using SCTP ============

def test_sctp_should_support_a_default_deny_ingress_policy():
    """using SCTP: should support a 'default-deny-ingress' policy"""
    state = model(protocols=("SCTP",))
    create_policy(state, gen("deny-all", sel(), ingress=()), "x")
    reach = reachability(state)
    reach.expect_peer(Peer(), Peer("x"), False)
    validate_or_fail(state, 80, "SCTP", reach)


def test_sctp_should_enforce_policy_based_on_ports():
    """using SCTP: should enforce policy based on Ports"""
    state = model(ports=(81,), protocols=("SCTP",))
    rules = [rule(peer(namespaces=sel({NS_NAME: "y"})), ports=[port(81, "SCTP")])]
    create_policy(state, gen_match_label("allow-ingress-on-port-81-ns-x", {"pod": "a"}, ingress=rules), "x")
    reach = reachability(state)
    reach.expect_peer(Peer("x"), Peer("x", "a"), False)
    reach.expect_peer(Peer("z"), Peer("x", "a"), False)
    validate_or_fail(state, 81, "SCTP", reach)


def test_sctp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_podselector_and_namespaceselector():
    """using SCTP: should enforce policy to allow traffic only from a pod in a different namespace
    based on PodSelector and NamespaceSelector"""
    state = model(protocols=("SCTP",))
    create_policy(state, y_pod_a_policy(), "x")
    reach = reachability(state)
    reach.expect_all_ingress("x/a", False)
    reach.expect("y/a", "x/a", True)
    validate_or_fail(state, 80, "SCTP", reach)


# ============ the v1.20 forms with a DNS allowance (policies.go), kube-dns in the model ============

DNS_RULE = rule(ports=[port(53, "UDP")])


def dns_pod(state):
    return state.pod("kube-system", "coredns-0")


def assert_dns(state, pods, udp, tcp):
    for pod in pods:
        assert np.allowed(state, pod, dns_pod(state), 53, "UDP") is udp, pod.key
        assert np.allowed(state, pod, dns_pod(state), 53, "TCP") is tcp, pod.key


def test_dns_should_allow_egress_access_on_one_named_port():
    """should allow egress access on one named port, with GetAllowEgressByPort's UDP 53 rule"""
    state = model(ports=(80, 81), dns=True)
    policy = gen_match_label("allow-egress", {}, egress=[rule(ports=[port("serve-80-tcp"), port(53, "UDP")])])
    create_policy(state, policy, "x")
    validate_or_fail(state, 80, "TCP", reachability(state))
    reach81 = reachability(state)
    reach81.expect_peer(Peer("x"), Peer(), False)
    validate_or_fail(state, 81, "TCP", reach81)
    assert_dns(state, [p for p in model_pods(state) if p.namespace == "x"], udp=True, tcp=False)


def test_dns_should_support_a_default_deny_all_policy():
    """should support a 'default-deny-all' policy, with GetDenyAllWithEgressDNS"""
    state = model(dns=True)
    create_policy(state, gen("deny-all-tcp-allow-dns", sel(), ingress=(), egress=[DNS_RULE],
                             types=("Egress", "Ingress")), "x")
    reach = reachability(state)
    reach.expect_peer(Peer(), Peer("x"), False)
    reach.expect_peer(Peer("x"), Peer(), False)
    validate_or_fail(state, 80, "TCP", reach)
    assert_dns(state, [p for p in model_pods(state) if p.namespace == "x"], udp=True, tcp=False)
    assert not np.allowed(state, dns_pod(state), state.pod("x", "a"), 80, "TCP")
    assert np.allowed(state, dns_pod(state), state.pod("y", "a"), 80, "TCP")


def test_dns_should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace():
    """should enforce egress policy allowing traffic to a server in a different namespace based on
    PodSelector and NamespaceSelector, with GetAllowEgressByNamespaceAndPod's UDP 53 rule"""
    state = model(dns=True)
    to_y_a = rule(peer(pods=sel({"pod": "a"}), namespaces=sel({NS_NAME: "y"})))
    create_policy(state, gen_match_label("allow-to-ns-y-pod-a", {"pod": "a"}, egress=[to_y_a, DNS_RULE]), "x")
    reach = reachability(state)
    reach.expect_all_egress("x/a", False)
    reach.expect("x/a", "y/a", True)
    validate_or_fail(state, 80, "TCP", reach)
    assert_dns(state, [state.pod("x", "a")], udp=True, tcp=False)
    assert_dns(state, [state.pod("x", "b")], udp=True, tcp=True)      # not selected: not isolated


def test_dns_should_allow_egress_access_to_server_in_cidr_block():
    """should allow egress access to server in CIDR block, with GetAllowEgressByCIDR's UDP 53 rule"""
    state = model(dns=True)
    block = rule(peer(block=IPBlock(f"{pod_ip(state, 'y/b')}/32")))
    create_policy(state, gen_match_label("allow-client-a-via-cidr-egress-rule", {"pod": "a"},
                                         egress=[block, DNS_RULE]), "x")
    reach = reachability(state)
    reach.expect_all_egress("x/a", False)
    reach.expect("x/a", "y/b", True)
    validate_or_fail(state, 80, "TCP", reach)
    assert_dns(state, [state.pod("x", "a")], udp=True, tcp=False)


# ============ endPort (the API reference's ranges; no matrix case upstream) ============

@pytest.mark.parametrize("start, end, protocol, open_ports", [
    (80, 81, "TCP", {80, 81}),        # the whole range, inclusive
    (79, 80, "TCP", {80}),            # 81 is past the end
    (81, 81, "TCP", {81}),            # endPort == port: one port
    (80, 81, "UDP", set()),           # a UDP range opens no TCP port
])
def test_endport_should_allow_ingress_from_namespace_on_a_port_range(start, end, protocol, open_ports):
    state = model(ports=(80, 81))
    rules = [rule(peer(namespaces=sel({NS_NAME: "y"})), ports=[port(start, protocol, end)])]
    create_policy(state, gen_match_label("allow-ns-y-port-range", {"pod": "a"}, ingress=rules), "x")
    for probe in (80, 81):
        reach = reachability(state)
        reach.expect_all_ingress("x/a", False)
        if probe in open_ports:
            reach.expect_peer(Peer("y"), Peer("x", "a"), True)
        validate_or_fail(state, probe, "TCP", reach)


def test_endport_should_allow_egress_on_a_port_range_and_deny_outside_it():
    state = model(ports=(80, 81))
    create_policy(state, gen_match_label("allow-egress-80-80", {}, egress=[rule(ports=[port(80, "TCP", 80)])]), "x")
    validate_or_fail(state, 80, "TCP", reachability(state))
    reach81 = reachability(state)
    reach81.expect_peer(Peer("x"), Peer(), False)
    validate_or_fail(state, 81, "TCP", reach81)


# ============ where kube-router reads an egress named port differently from the API ============

def test_kube_router_resolves_an_egress_named_port_without_to_on_the_policys_own_namespace():
    """No `to`: the API resolves the name on each destination; kube-router resolves it on the
    pods of the policy's namespace and opens those numbers to every destination."""
    state = model(ports=(80,))
    y_a = state.pod("y", "a")                  # serve-80-tcp is 8080 here
    y_a.template = dataclasses.replace(y_a.template, containers=(
        Container("cont-80-tcp", "agnhost", ports=(ContainerPort(8080, "TCP", "serve-80-tcp"),)),))
    create_policy(state, gen_match_label("allow-egress", {}, egress=[rule(ports=[port("serve-80-tcp")])]), "x")
    api, kube_router = np.PolicyIndex(state), np.PolicyIndex(state, kube_router=True)
    x_a = state.pod("x", "a")
    assert [np.allowed(api, x_a, y_a, n) for n in (80, 8080)] == [False, True]
    assert [np.allowed(kube_router, x_a, y_a, n) for n in (80, 8080)] == [True, False]
    assert np.allowed(kube_router, x_a, LAN_CLIENT, 80)          # every destination
    empty = model()
    create_policy(empty, gen_match_label("allow-egress", {}, egress=[rule(ports=[port("serve-80-tcp")])]), "w")
    w_pod = make_pod("w", "only", "netpol-worker", "10.244.1.90", {}, [container(81, "TCP")])
    empty.pods.append(w_pod)                   # no pod of w has the name: kube-router opens nothing
    assert np.allowed(np.PolicyIndex(empty), w_pod, empty.pod("x", "a"), 80)
    assert not np.allowed(np.PolicyIndex(empty, kube_router=True), w_pod, empty.pod("x", "a"), 80)


def test_kube_router_gives_an_egress_ipblock_peer_no_named_port():
    state = model(ports=(80,))
    to_y_b = rule(peer(block=IPBlock(f"{pod_ip(state, 'y/b')}/32")), ports=[port("serve-80-tcp")])
    create_policy(state, gen_match_label("allow-cidr-named", {"pod": "a"}, egress=[to_y_b]), "x")
    x_a, y_b = state.pod("x", "a"), state.pod("y", "b")
    assert np.allowed(np.PolicyIndex(state), x_a, y_b, 80)
    assert not np.allowed(np.PolicyIndex(state, kube_router=True), x_a, y_b, 80)
    both = rule(peer(block=IPBlock(f"{pod_ip(state, 'y/b')}/32")), peer(pods=sel(), namespaces=sel()),
                ports=[port("serve-80-tcp")])
    update_policy(state, gen_match_label("allow-cidr-named", {"pod": "a"}, egress=[both]), "x")
    verdict = np.evaluate(np.PolicyIndex(state, kube_router=True), x_a, y_b, 80)
    assert verdict.allowed and (verdict.egress.allowed_by[0].peer, verdict.egress.allowed_by[0].port) == (1, 0)


# ============ the pieces ============

def test_empty_podselector_selects_all_pods_in_the_namespace_with_an_ip():
    state = model()
    pending = make_pod("x", "pending", None, None, {"pod": "d"}, [])
    unaddressed = make_pod("x", "starting", "netpol-worker", None, {"pod": "e"}, [])
    state.pods += [pending, unaddressed]
    policy = dataclasses.replace(gen("all", sel(), ingress=()), namespace="x")
    assert [p.key for p in np.selected_pods(state, policy)] == ["x/a", "x/b", "x/c"]
    only_b = dataclasses.replace(policy, pod_selector=sel(None, ("pod", "NotIn", ["a", "c"])))
    assert [p.key for p in np.selected_pods(state, only_b)] == ["x/b"]


def test_peer_matches_by_namespace_and_pod_labels():
    state = model()
    policy = dataclasses.replace(gen("p", sel(), ingress=()), namespace="x")
    y_b = state.pod("y", "b")
    x_b = state.pod("x", "b")
    assert np.peer_matches(state, policy, peer(pods=sel({"pod": "b"})), pod=x_b)          # same namespace
    assert not np.peer_matches(state, policy, peer(pods=sel({"pod": "b"})), pod=y_b)      # alone: not y
    assert np.peer_matches(state, policy, peer(namespaces=sel({"ns": "y"})), pod=y_b)      # every pod of y
    assert np.peer_matches(state, policy, peer(namespaces=sel()), pod=y_b)                 # {}: every namespace
    both = peer(pods=sel({"pod": "a"}), namespaces=sel({"ns": "y"}))
    assert not np.peer_matches(state, policy, both, pod=y_b)                               # AND
    assert np.peer_matches(state, policy, both, pod=state.pod("y", "a"))
    assert not np.peer_matches(state, policy, peer(pods=sel()), ip=LAN_CLIENT)             # an IP: selectors never
    assert not np.peer_matches(state, policy, PolicyPeer(), pod=x_b)                       # no field: nothing


def test_peer_matches_ipblock_with_except_on_addresses_and_pod_ips():
    state = model()
    policy = dataclasses.replace(gen("p", sel(), ingress=()), namespace="x")
    block = peer(block=IPBlock("10.244.0.0/16", ("10.244.2.0/24", "10.244.1.3/32")))
    assert np.peer_matches(state, policy, block, pod=state.pod("x", "a"))        # 10.244.1.2
    assert not np.peer_matches(state, policy, block, pod=state.pod("y", "a"))    # 10.244.1.3: excepted
    assert not np.peer_matches(state, policy, block, pod=state.pod("x", "b"))    # 10.244.2.2: excepted /24
    assert np.peer_matches(state, policy, block, ip="10.244.3.200")
    assert not np.peer_matches(state, policy, block, ip=LAN_CLIENT)
    assert not np.peer_matches(state, policy, block, ip="not-an-ip")
    assert not np.peer_matches(state, policy, peer(block=IPBlock("::/0")), ip="10.244.3.200")


def test_port_matches_numbers_ranges_names_and_protocols():
    state = model(ports=(80, 81), protocols=("TCP", "UDP"))
    x_a = state.pod("x", "a")
    assert np.port_matches(port(80), x_a, 80, "TCP")
    assert np.port_matches(PolicyPort(None, 80), x_a, 80, "tcp")                 # protocol unset: TCP
    assert not np.port_matches(port(80), x_a, 80, "UDP")
    assert np.port_matches(port(None, "UDP"), x_a, 4242, "UDP")                  # no port: every port of it
    assert np.port_matches(port(80, "TCP", 90), x_a, 90, "TCP")
    assert not np.port_matches(port(80, "TCP", 90), x_a, 91, "TCP")
    assert np.port_matches(port("serve-81-udp", "UDP"), x_a, 81, "UDP")
    assert not np.port_matches(port("serve-81-udp", "TCP"), x_a, 81, "TCP")      # name and protocol both
    assert not np.port_matches(port("serve-81-tcp"), x_a, 80, "TCP")             # 81 is its number
    assert not np.port_matches(port("serve-81-tcp"), LAN_CLIENT, 81, "TCP")      # no pod: no names
    assert not np.port_matches(port("serve-82-tcp"), x_a, 82, "TCP")             # the pod has no such name


def test_a_pod_ip_is_the_pod_and_an_external_address_is_subject_only_to_the_other_side():
    state = model()
    create_policy(state, gen("deny-all", sel(), ingress=(), egress=()), "x")
    x_a = state.pod("x", "a")
    by_ip = np.evaluate(state, state.pod("y", "a").ip, x_a, 80)
    assert (by_ip.src, by_ip.egress.is_pod, by_ip.allowed) == ("y/a", True, False)
    out = np.evaluate(state, x_a, LAN_CLIENT, 80)
    assert (out.allowed, out.egress.policies, out.ingress.is_pod) == (False, ("x/deny-all",), False)
    create_policy(state, gen("allow-lan", sel({"pod": "a"}), ingress=[rule(peer(block=IPBlock("172.18.0.0/16")))]),
                  "x")
    assert np.allowed(state, LAN_CLIENT, x_a, 80)
    assert not np.allowed(state, LAN_CLIENT, state.pod("x", "b"), 80)


def test_ingress_from_the_pods_own_node_is_accepted_before_any_policy():
    state = model()
    create_policy(state, gen("deny-all", sel(), ingress=(), egress=()), "x")
    x_a = state.pod("x", "a")                       # on netpol-worker: 172.18.0.2, podCIDR 10.244.1.0/24
    for local in ("172.18.0.2", "10.244.1.1", "10.244.1.0"):
        verdict = np.evaluate(state, local, x_a, 80)
        assert (verdict.allowed, verdict.ingress.from_node) == (True, "netpol-worker"), local
    assert not np.allowed(state, "172.18.0.3", x_a, 80)       # another node
    assert not np.allowed(state, x_a, "172.18.0.2", 80)       # egress to it is still policy's


def test_icmp_is_accepted_by_the_common_chain():
    state = model()
    create_policy(state, gen("deny-all", sel(), ingress=(), egress=()), "x")
    verdict = np.evaluate(state, state.pod("x", "a"), state.pod("x", "b"), None, "icmp")
    assert verdict.allowed and verdict.ingress.icmp and verdict.egress.icmp
    with pytest.raises(NetlabError, match="protocol 'HTTP': not one of TCP, UDP, SCTP, ICMP"):
        np.evaluate(state, state.pod("x", "a"), state.pod("x", "b"), 80, "http")


def test_explain_names_the_selecting_policies_and_the_allowing_rule():
    state = model(ports=(80, 81))
    create_policy(state, gen("deny-all", sel(), ingress=()), "x")
    create_policy(state, gen_match_label("allow-b", {"pod": "a"}, ingress=[
        rule(peer(namespaces=sel({NS_NAME: "y"})), ports=[port(81)]),
        rule(peer(pods=sel({"pod": "b"})), ports=[port(81), port("serve-80-tcp")])]), "x")
    x_a, x_b = state.pod("x", "a"), state.pod("x", "b")
    assert np.explain(state, x_b, x_a, 80) == "\n".join([
        "x/b -> x/a 80/TCP: allowed",
        "egress (x/b): not isolated: no policy selects x/b for egress",
        "ingress (x/a): isolated by 2 policies: x/deny-all, x/allow-b",
        "  allowed by x/allow-b ingress rule 1: from pods {pod=b} in namespace x,"
        " named port serve-80-tcp/TCP (80 on x/a)",
    ])
    assert np.explain(state, state.pod("y", "c"), x_a, 80) == "\n".join([
        "y/c -> x/a 80/TCP: denied",
        "egress (y/c): not isolated: no policy selects y/c for egress",
        "ingress (x/a): isolated by 2 policies: x/deny-all, x/allow-b",
        "  denied: no rule of the 2 policies that select it allows it",
    ])
    assert np.explain(state, LAN_CLIENT, x_b, 81).splitlines()[1:] == [
        f"egress ({LAN_CLIENT}): not a pod: no policy applies to it",
        "ingress (x/b): isolated by 1 policy: x/deny-all",
        "  denied: no rule of the 1 policy that selects it allows it",
    ]
    verdict = np.evaluate(state, x_b, x_a, 81, every=True)
    assert [(m.policy, m.rule, m.peer, m.port) for m in verdict.ingress.allowed_by] == [("x/allow-b", 1, 0, 0)]
    assert verdict.ingress.allowed_by[0].text == \
        "x/allow-b ingress rule 1: from pods {pod=b} in namespace x, port 81/TCP"


def test_explain_describes_selectors_blocks_and_ranges_as_kubectl_does():
    policy = dataclasses.replace(gen("p", sel(), ingress=()), namespace="x")
    expressions = sel({"app": "web"}, ("tier", "In", ["b", "a"]), ("env", "NotIn", ["dev"]), ("k", "Exists", []),
                      ("old", "DoesNotExist", []))
    assert np.describe_selector(expressions) == "app=web,tier in (a,b),env notin (dev),k,!old"
    assert np.describe_peer(policy, peer(pods=sel(), namespaces=sel())) == "all pods in all namespaces"
    assert np.describe_peer(policy, peer(namespaces=sel({"ns": "y"}))) == "all pods in namespaces {ns=y}"
    assert np.describe_peer(policy, peer(block=IPBlock("10.0.0.0/8", ("10.1.0.0/16",)))) == \
        "ipBlock 10.0.0.0/8 except 10.1.0.0/16"
    assert np.describe_port(port(30000, "UDP", 32767)) == "ports 30000-32767/UDP"
    assert np.describe_port(port(None, "SCTP")) == "all ports/SCTP"
    egress = dataclasses.replace(gen("e", sel(), egress=[rule()]), namespace="x")
    assert np.describe_match(egress, "Egress", 0, None, None) == "x/e egress rule 0: to every peer, all ports"


def test_the_matrix_prints_as_the_e2e_truth_table():
    """TruthTable.PrettyPrint: "-" and the destinations, a row per source, tab-separated."""
    state = model()
    create_policy(state, gen("deny-ingress", sel(), ingress=()), "x")
    cells = np.matrix(state, model_pods(state), 80, "TCP")
    assert list(cells)[:4] == [("x/a", "x/a"), ("x/a", "x/b"), ("x/a", "x/c"), ("x/a", "y/a")]
    row = "X\tX\tX\t.\t.\t.\t.\t.\t."
    header = "-\tx/a\tx/b\tx/c\ty/a\ty/b\ty/c\tz/a\tz/b\tz/c"
    assert np.render_matrix(cells) == "\n".join([header] + [f"{p.key}\t{row}" for p in model_pods(state)])
    partial = {("x/a", "x/a"): True, ("x/a", "x/b"): False, ("x/b", "x/a"): None}
    assert np.render_matrix(partial, ["x/a", "x/b"]) == "-\tx/a\tx/b\nx/a\t.\tX\nx/b\t?\t?"


def test_differences_ignore_loopback_and_the_comparison_marks_each_cell():
    expected = {("x/a", "x/a"): False, ("x/a", "x/b"): True, ("x/b", "x/a"): False, ("x/b", "x/b"): True}
    observed = {("x/a", "x/a"): True, ("x/a", "x/b"): False, ("x/b", "x/a"): False, ("x/b", "x/b"): True}
    assert np.differences(expected, observed) == [("x/a", "x/b")]
    assert np.differences(expected, observed, ignore_loopback=False) == [("x/a", "x/a"), ("x/a", "x/b")]
    assert np.render_matrix(np.comparison(expected, observed)) == "-\tx/a\tx/b\nx/a\tX\tX\nx/b\t.\t."


def test_parse_target_and_endpoint_name_pods_nodes_and_addresses():
    assert np.parse_target("x/a") == ("x/a", None, "TCP")
    assert np.parse_target("x/a:81/udp") == ("x/a", 81, "UDP")
    assert np.parse_target("x/a:serve-80-tcp") == ("x/a", "serve-80-tcp", "TCP")
    assert np.parse_target("x/udp") == ("x/udp", None, "TCP")                  # pod udp of namespace x
    assert np.parse_target("x/a/sctp") == ("x/a", None, "SCTP")
    assert np.parse_target("10.244.1.2/icmp") == ("10.244.1.2", None, "ICMP")
    with pytest.raises(NetlabError, match="no port after"):
        np.parse_target("x/a:")
    state = model()
    state.pods.append(make_pod("default", "web", "netpol-worker", "10.244.1.50", {}, []))
    assert np.endpoint(state, "x/a") is state.pod("x", "a")
    assert np.endpoint(state, "web") is state.pod("default", "web")
    assert np.endpoint(state, "10.244.1.2") is state.pod("x", "a")
    assert np.endpoint(state, LAN_CLIENT) == LAN_CLIENT
    assert np.endpoint(state, "worker2") == "172.18.0.3"                       # a node: its address
    with pytest.raises(NetlabError, match=r"lab netpol: no pod x/d \(pods: x/a, x/b"):
        np.endpoint(state, "x/d")
    state.pods.append(make_pod("x", "new", "netpol-worker", None, {}, []))
    with pytest.raises(NetlabError, match="pod x/new has no IP yet"):
        np.endpoint(state, "x/new")


def test_a_cell_only_visits_the_policies_selecting_its_pods():
    """500 pods, 1,000 policies: the index gives each pod its own namespace's selecting policies,
    so a cell's work does not grow with the policies that select other pods."""
    state = ClusterState(lab="big", cluster=ClusterConfig(name="big"), nodes=[node(0)])
    for i in range(500):
        state.pods.append(make_pod(f"ns{i % 10}", f"p{i}", "netpol-worker", f"10.244.{i // 250 + 1}.{i % 250 + 2}",
                                   {"app": f"app{i % 50}"}, [container(80, "TCP")]))
    for i in range(1000):
        state.network_policies.append(NetworkPolicyManifest(
            f"ns{i % 10}", f"pol{i}", sel({"app": f"app{i % 50}"}), ("Ingress",),
            (rule(peer(pods=sel({"app": f"app{(i + 10) % 50}"}))),)))
    idx = np.PolicyIndex(state)
    p0 = state.pod("ns0", "p0")                   # app0 in ns0: policies i % 10 == 0 and i % 50 == 0
    assert [p.name for p in idx.selecting(p0, "Ingress")] == [f"pol{i}" for i in range(0, 1000, 50)]
    assert idx.selecting(p0, "Egress") == ()
    src = state.pod("ns0", "p10")                 # app10: what pol0, pol50, ... allow
    verdict = np.evaluate(idx, src, p0, 80)
    assert verdict.allowed and verdict.ingress.allowed_by[0].policy == "ns0/pol0"
    assert not np.allowed(idx, state.pod("ns0", "p20"), p0, 80)     # app20
    assert not np.allowed(idx, state.pod("ns1", "p11"), p0, 80)     # app11, another namespace



def test_the_index_peer_sets_agree_with_peer_matches():
    """The index works a selector peer out once over all pods (as kube-router fills a rule's
    ipset); every pod gets the answer peer_matches gives it alone."""
    state = model()
    state.namespaces["y"]["labels"]["team"] = "blue"
    policy = dataclasses.replace(gen("p", sel(), ingress=()), namespace="x")
    peers = [peer(pods=sel({"pod": "b"})), peer(namespaces=sel({"team": "blue"})), peer(namespaces=sel()),
             peer(pods=sel(None, ("pod", "NotIn", ["a"])), namespaces=sel(None, (NS_NAME, "In", ["x", "z"]))),
             peer(block=IPBlock("10.244.2.0/24", ("10.244.2.3/32",))), PolicyPeer()]
    idx = np.PolicyIndex(state)
    for pod in model_pods(state):
        got = [idx.peer_matches(policy, p, pod) for p in peers]
        assert got == [np.peer_matches(state, policy, p, pod=pod) for p in peers], pod.key
    assert sum(idx.peer_matches(policy, peers[3], pod) for pod in model_pods(state)) == 4   # x/b x/c z/b z/c
