"""The NetworkPolicy evaluator (netlab.controllers.networkpolicy) on Kubernetes' own e2e cases.

The cases (one per `f.It` case of test/e2e/network/netpol/network_policy.go, named after it),
the model and the copy of upstream's Reachability are in tests/netpol_model.py, shared with the
root tests that apply the same cases to a real lab: here each runs against the model as a
ClusterState and every ValidateOrFail is the evaluator's matrix (both readings: the API's and
kube-router's) against the expected one, all 81 cells compared, loopback ignored.

Below them: the case that needs a LoadBalancer client, the v1.20 forms with upstream's DNS
allowances (policies.go: GetAllowEgressByPort, GetAllowEgressByNamespaceAndPod,
GetAllowEgressByCIDR, GetDenyAllWithEgressDNS: an extra egress rule allowing UDP 53 to
anywhere), with a kube-dns pod added to the model, where kube-router's reading of egress named
ports differs from the API's, and the evaluator's pieces.
"""

import dataclasses
import ipaddress

import pytest

from netlab.api.objects import ClusterState
from netlab.api.spec import (ClusterConfig, Container, ContainerPort, IPBlock, NetworkPolicyManifest, PolicyPeer,
                             PolicyPort)
from netlab.controllers import networkpolicy as np
from netlab.errors import NetlabError
from tests.netpol_model import (CASES, LAN_CLIENT, NS_NAME, POD_NAMES, EvaluatorCluster, Peer, container, create_policy,
                                gen, gen_match_label, make_pod, model, model_pods, node, peer, pod_ip, port,
                                reachability, rule, sel, update_policy, validate_or_fail)

# ============ upstream's cases (tests/netpol_model.py) ============

@pytest.mark.parametrize("case", CASES, ids=str)
def test_upstream_case(case):
    case.run(EvaluatorCluster.of(case))


# ============ Netpol: the case with a LoadBalancer's client ============

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


def test_kube_router_runs_a_policy_of_both_types_whole_in_each_selected_pods_chain():
    """pod.go jumps to a policy of both types with no -d/-s: its egress rule `{}` (KUBE-SRC-<policy>
    src) also passes the ingress of a pod it selects from a source it selects, and its ingress
    rule `{}` (KUBE-DST-<policy> dst) the egress of a selected source to a selected destination."""
    state = model(ports=(80,))
    create_policy(state, gen("deny-ingress-allow-egress", sel(), ingress=(), egress=[rule()]), "x")
    create_policy(state, gen("allow-ingress-deny-egress", sel(), ingress=[rule()], egress=()), "y")
    api, kube_router = np.PolicyIndex(state), np.PolicyIndex(state, kube_router=True)
    x_a, x_b, y_a, y_b, z_a = (state.pod(*k.split("/")) for k in ("x/a", "x/b", "y/a", "y/b", "z/a"))
    assert not np.allowed(api, x_a, x_b, 80) and np.allowed(kube_router, x_a, x_b, 80)
    assert not np.allowed(api, y_a, y_b, 80) and np.allowed(kube_router, y_a, y_b, 80)
    # Only between pods the policy selects: from z, or out of y, the readings agree.
    assert not np.allowed(kube_router, z_a, x_a, 80) and not np.allowed(kube_router, y_a, z_a, 80)
    verdict = np.evaluate(kube_router, x_a, x_b, 80)
    (match,) = verdict.ingress.allowed_by
    assert (match.policy, match.direction) == ("x/deny-ingress-allow-egress", "Egress")
    assert "kube-router runs a policy of both types whole" in verdict.explain()


def test_kube_router_lets_one_ipblocks_except_cut_another_ipblock_of_the_same_rule():
    """policy.go puts a rule's ipBlocks in one hash:net set (excepts as nomatch) where the most
    specific entry decides; the API ORs the peers."""
    state = model(ports=(80,))
    x_a, y_b = state.pod("x", "a"), state.pod("y", "b")
    net = f"{pod_ip(state, 'y/b')}/24"
    wide = str(ipaddress.ip_network(f"{pod_ip(state, 'y/b')}/16", strict=False))
    blocks = rule(peer(block=IPBlock(wide, (net,))), peer(block=IPBlock(wide)))
    create_policy(state, gen_match_label("two-blocks", {"pod": "a"}, egress=[blocks]), "x")
    assert np.allowed(np.PolicyIndex(state), x_a, y_b, 80)
    assert not np.allowed(np.PolicyIndex(state, kube_router=True), x_a, y_b, 80)
    # A more specific cidr of another peer wins over the except; a later entry of the same net wins.
    host = f"{pod_ip(state, 'y/b')}/32"
    update_policy(state, gen_match_label("two-blocks", {"pod": "a"}, egress=[
        rule(peer(block=IPBlock(wide, (net,))), peer(block=IPBlock(host)))]), "x")
    verdict = np.evaluate(np.PolicyIndex(state, kube_router=True), x_a, y_b, 80)
    assert verdict.allowed and verdict.egress.allowed_by[0].peer == 1
    update_policy(state, gen_match_label("two-blocks", {"pod": "a"}, egress=[
        rule(peer(block=IPBlock(net)), peer(block=IPBlock(wide, (net,))))]), "x")
    assert not np.allowed(np.PolicyIndex(state, kube_router=True), x_a, y_b, 80)
    update_policy(state, gen_match_label("two-blocks", {"pod": "a"}, egress=[
        rule(peer(block=IPBlock(wide, (net,))), peer(block=IPBlock(net)))]), "x")
    assert np.allowed(np.PolicyIndex(state, kube_router=True), x_a, y_b, 80)


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
