"""`netlab probe --area policy`, `netlab policy explain` and trace's naming of kube-router's
chains, without a lab: the policy area against a fake prober (the expected matrix, the observed
one, the cells that differ marked, the JSON), real non-blocking sockets over loopback for the
connections themselves, explain on pods, ports and Services, and the trace's reading of
kube-router's rules from iptables-save text captured on a lab with two policies.

Expected matrices are written out by hand from the API's semantics, as Kubernetes' e2e suite
derives them (ExpectAllIngress, AllowLoopback), never taken from the evaluator."""

import json
import socket
import threading
from contextlib import nullcontext
from types import SimpleNamespace

import pytest

from netlab import cli
from netlab.api.objects import Address, ClusterState, Endpoints, Node, Pod, Port, Subset
from netlab.api.spec import (ClusterConfig, Container, ContainerPort, LabelSelector, NetworkPolicyManifest, PodTemplate,
                             PolicyPeer, PolicyPort, PolicyRule, ServiceManifest, ServicePort)
from netlab.errors import NetlabError
from netlab.observe import probes, trace

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"


def serve(port, protocol):
    """A container of the e2e model (model.go): serve-hostname on one port and protocol."""
    p = protocol.lower()
    return Container(f"cont-{port}-{p}", AGNHOST, ("/agnhost", "serve-hostname", f"--{p}", "--http=false", "--port",
                                                  str(port)), (), (ContainerPort(port, protocol, f"serve-{port}-{p}"),))


def pod(namespace, name, node, ip, containers=None):
    containers = containers if containers is not None else [serve(80, "TCP"), serve(80, "UDP")]
    return Pod(namespace, name, f"uid-{namespace}-{name}", node, PodTemplate({"pod": name}, tuple(containers)),
               container_id="", host_veth="", netns=f"pp-{namespace}.{name}", ip=ip)


def lab_state(pods=None, policies=()):
    nodes = [Node("pp-control-plane", "control-plane", "172.18.0.2", "10.244.0.0/24", "", {}, []),
             Node("pp-worker", "worker", "172.18.0.3", "10.244.1.0/24", "", {}, [])]
    state = ClusterState(lab="pp", cluster=ClusterConfig(name="pp"), nodes=nodes)
    state.pods = pods if pods is not None else [
        pod("x", "a", "pp-worker", "10.244.1.2"), pod("x", "b", "pp-control-plane", "10.244.0.2"),
        pod("y", "a", "pp-worker", "10.244.1.3"), pod("y", "b", "pp-control-plane", "10.244.0.3")]
    state.network_policies = list(policies)
    return state


def deny_all_ingress(namespace="x"):
    return NetworkPolicyManifest(namespace, "deny-all", LabelSelector({}), ("Ingress",))


def allow_b_to_a_on_80():
    return NetworkPolicyManifest("x", "allow-b", LabelSelector({"pod": "a"}), ("Ingress",),
                                 (PolicyRule(peers=(PolicyPeer(LabelSelector({"pod": "b"})),),
                                             ports=(PolicyPort("TCP", 80),)),))


class FakeProber:
    """What a kernel answers, decided by `decide(src key, dst key, port, protocol)` -> (connected,
    how); every call of connect() is kept."""

    def __init__(self, state, decide):
        self.by_netns = {p.netns: p.key for p in state.pods}
        self.by_ip = {p.ip: p.key for p in state.pods}
        self.decide, self.calls = decide, []

    def connect(self, connections, timeout=None):
        self.calls.append(list(connections))
        return [self.decide(self.by_netns[c.netns], self.by_ip[c.ip], c.port, c.protocol) for c in connections]


def everything_connects(src, dst, port, protocol):
    return True, "connected" if protocol == "TCP" else "answered"


def x_isolated(src, dst, port, protocol):
    """A kernel enforcing deny-all ingress in x: kube-router REJECTs, so TCP and UDP are refused."""
    if dst.startswith("x/") and src != dst:
        return False, "refused"
    return True, "connected"


def checks_of(state, prober):
    return probes.policy_checks(prober, state, probes._running(state))


# The e2e suite's expectation for deny-all ingress in x: ExpectAllIngress(x/a, false),
# ExpectAllIngress(x/b, false), then AllowLoopback.
DENY_X = ("-\tx/a\tx/b\ty/a\ty/b\n"
          "x/a\t.\tX\t.\t.\n"
          "x/b\tX\t.\t.\t.\n"
          "y/a\tX\tX\t.\t.\n"
          "y/b\tX\tX\t.\t.")
ALL = ("-\tx/a\tx/b\ty/a\ty/b\n"
       "x/a\t.\t.\t.\t.\n"
       "x/b\t.\t.\t.\t.\n"
       "y/a\t.\t.\t.\t.\n"
       "y/b\t.\t.\t.\t.")
DIFFER_X = ("-\tx/a\tx/b\ty/a\ty/b\n"          # the comparison: X where observed is not expected
            "x/a\t.\tX\t.\t.\n"
            "x/b\tX\t.\t.\t.\n"
            "y/a\tX\tX\t.\t.\n"
            "y/b\tX\tX\t.\t.")


# ---- the policy area ----

def test_without_policies_every_pair_is_expected_connected_one_check_per_port_and_protocol():
    state = lab_state()
    prober = FakeProber(state, everything_connects)
    checks = checks_of(state, prober)
    assert [(c.area, c.name, c.result) for c in checks] == [("policy", "80/TCP matrix", "pass"),
                                                            ("policy", "80/UDP matrix", "pass")]
    assert checks[0].expected == "12 of 12 connected, as the policies say"
    assert checks[0].observed == "12 of 12 connected"
    [asked] = prober.calls                                   # all at once, and nothing asked again
    assert len(asked) == 2 * 16
    first = asked[0]
    assert (first.netns, first.ip, first.port, first.protocol) == ("pp-x.a", "10.244.1.2", 80, "TCP")
    assert {(c.port, c.protocol) for c in asked} == {(80, "TCP"), (80, "UDP")}
    report = probes.policy_report(checks[0])
    assert report.splitlines()[:4] == ["network policy 80/TCP:",
                                       "warning: the results of 4 pod->pod cases have been ignored",
                                       "reachability: correct:12, incorrect:0, result=true", ""]
    assert report.endswith("expected = observed:\n\n" + ALL)


def test_a_kernel_that_ignores_a_deny_all_is_caught_cell_by_cell_and_explained():
    state = lab_state(policies=[deny_all_ingress()])
    prober = FakeProber(state, everything_connects)
    tcp, udp = checks_of(state, prober)
    assert (tcp.ok, udp.ok) == (False, False)
    assert tcp.expected == "6 of 12 connected, as the policies say"
    assert tcp.observed == ("12 of 12 connected; 6 differ: x/a -> x/b (X expected, connected), x/b -> x/a "
                            "(X expected, connected), y/a -> x/a (X expected, connected), and 3 more")
    assert tcp.hint.startswith("netlab policy explain x/a x/b:80/TCP (the reasons), netlab trace x/a x/b:80 ")
    assert udp.hint.startswith("netlab policy explain x/a x/b:80/UDP (the reasons), netlab trace x/a x/b:80 --udp ")
    assert len(prober.calls) == 2 and len(prober.calls[1]) == 12     # the 6 cells of each matrix, once more
    report = probes.policy_report(tcp)
    assert "reachability: correct:6, incorrect:6, result=false" in report
    assert f"expected:\n\n{DENY_X}\n\nobserved:\n\n{ALL}\n\ncomparison:\n\n{DIFFER_X}\n" in report
    first = tcp.matrix["differences"][0]
    assert (first["from"], first["to"], first["expected"], first["observed"]) == ("x/a", "x/b", False, True)
    assert first["explanation"].splitlines() == [
        "x/a -> x/b 80/TCP: denied",
        "egress (x/a): not isolated: no policy selects x/a for egress",
        "ingress (x/b): isolated by 1 policy: x/deny-all",
        "  denied: no rule of the 1 policy that selects it allows it",
        "observed: connected (connected)"]
    assert first["explanation"] in report


def test_the_json_output_carries_the_matrices():
    state = lab_state(policies=[deny_all_ingress()])
    tcp = checks_of(state, FakeProber(state, x_isolated))[0]
    out = json.loads(json.dumps([{**c.__dict__, "result": c.result} for c in [tcp]]))[0]
    assert set(out) == {"area", "name", "expected", "observed", "ok", "hint", "skipped", "matrix", "result"}
    m = out["matrix"]
    assert (m["port"], m["protocol"], m["sample"], m["ignored"], m["differences"]) == (80, "TCP", "", 4, [])
    assert m["sources"] == m["destinations"] == ["x/a", "x/b", "y/a", "y/b"]
    assert m["expected"]["y/a"] == {"x/a": False, "x/b": False, "y/a": True, "y/b": True}
    assert m["observed"] == m["expected"]
    assert m["how"]["y/a"]["x/a"] == "refused"


def test_a_kernel_that_enforces_it_passes_with_the_blocked_cells_shown():
    state = lab_state(policies=[deny_all_ingress()])
    prober = FakeProber(state, x_isolated)
    checks = checks_of(state, prober)
    assert all(c.ok for c in checks) and len(prober.calls) == 1
    assert probes.policy_report(checks[1]).endswith("expected = observed:\n\n" + DENY_X)


def test_an_allow_on_one_port_opens_only_that_cell():
    state = lab_state(policies=[deny_all_ingress(), allow_b_to_a_on_80()])
    tcp, udp = checks_of(state, FakeProber(state, everything_connects))
    assert [(d["from"], d["to"]) for d in tcp.matrix["differences"]] == [("x/a", "x/b"), ("y/a", "x/a"),
                                                                         ("y/a", "x/b"), ("y/b", "x/a"), ("y/b", "x/b")]
    assert ("x/b", "x/a") in [(d["from"], d["to"]) for d in udp.matrix["differences"]]   # the rule is TCP only
    assert tcp.matrix["expected"]["x/b"]["x/a"] is True


def test_a_cell_that_is_right_the_second_time_passes():
    state = lab_state()
    answers = iter([(False, "timeout")])

    def late(src, dst, port, protocol):
        if (src, dst, protocol) == ("y/b", "x/a", "UDP"):
            return next(answers, (True, "answered"))
        return True, "connected"
    prober = FakeProber(state, late)
    assert all(c.ok for c in checks_of(state, prober))
    assert [(c.netns, c.ip, c.protocol) for c in prober.calls[1]] == [("pp-y.b", "10.244.1.2", "UDP")]


def test_loopback_is_left_out_of_the_verdict():
    state = lab_state(policies=[deny_all_ingress()])

    def no_loopback(src, dst, port, protocol):
        return (False, "timeout") if src == dst else x_isolated(src, dst, port, protocol)
    checks = checks_of(state, FakeProber(state, no_loopback))
    assert all(c.ok for c in checks)
    assert checks[0].matrix["observed"]["x/a"]["x/a"] is False
    assert "warning: the results of 4 pod->pod cases have been ignored" in probes.policy_report(checks[0])


def test_each_port_has_the_pods_that_serve_it_as_destinations():
    pods = lab_state().pods[:3] + [pod("y", "b", "pp-control-plane", "10.244.0.3", [serve(81, "TCP")]),
                                   pod("y", "c", "pp-worker", "10.244.1.4", [Container("sleep", "busybox",
                                                                                      ("sleep", "infinity"))])]
    state = lab_state(pods)
    checks = checks_of(state, FakeProber(state, everything_connects))
    assert [c.name for c in checks] == ["80/TCP matrix", "80/UDP matrix", "81/TCP matrix"]
    m80, m81 = checks[0].matrix, checks[2].matrix
    assert m80["sources"] == ["x/a", "x/b", "y/a", "y/b"]               # y/c answers on no port: not in it
    assert m80["destinations"] == ["x/a", "x/b", "y/a"]
    assert m81["destinations"] == ["y/b"]
    assert probes.truth_table(probes._flat(m81["observed"]), m81["sources"], m81["destinations"]) == \
        "-\ty/b\nx/a\t.\nx/b\t.\ny/a\t.\ny/b\t."


def test_a_big_lab_is_sampled_from_every_namespace_and_says_so():
    pods = [pod(ns, f"p{i}", "pp-worker", f"10.244.{j + 1}.{i + 2}") for j, ns in enumerate("xyz") for i in range(7)]
    state = lab_state(pods)
    prober = FakeProber(state, everything_connects)
    checks = checks_of(state, prober)
    assert checks[0].name == "80/TCP matrix (a sample of 16 of 21 pods)"
    sample = checks[0].matrix["sources"]
    assert [sum(k.startswith(f"{ns}/") for k in sample) for ns in "xyz"] == [6, 5, 5]
    assert sample == sorted(sample)
    assert len(prober.calls[0]) == 2 * 16 * 16
    assert probes.policy_report(checks[0]).startswith("network policy 80/TCP (a sample of 16 of 21 pods):")


def test_the_report_explains_the_first_differing_cells_and_counts_the_rest():
    state = lab_state([pod(ns, f"p{i}", "pp-worker", f"10.244.{j + 1}.{i + 2}") for j, ns in enumerate("xy")
                       for i in range(3)], policies=[deny_all_ingress()])
    tcp = checks_of(state, FakeProber(state, everything_connects))[0]
    assert len(tcp.matrix["differences"]) == 15          # to each of x's 3 pods from the 5 others
    report = probes.policy_report(tcp)
    assert report.count("\nobserved: connected (connected)") == probes.POLICY_EXPLAINED
    assert report.endswith(f"... and {15 - probes.POLICY_EXPLAINED} more differing cells (-o json explains every one)")


def test_fewer_than_two_pods_skip_the_matrix_with_the_reason():
    state = lab_state(lab_state().pods[:1])
    [c] = checks_of(state, FakeProber(state, everything_connects))
    assert (c.result, c.skipped) == ("skipped", "x/a is the only running pod that answers on a port (agnhost)")


def test_the_policy_area_runs_by_default_only_where_the_lab_has_a_policy():
    assert "policy" in probes.AREAS and probes.TITLES["policy"] == "network policy"
    assert "policy" not in probes.default_areas(lab_state())
    assert probes.default_areas(lab_state(policies=[deny_all_ingress()])) == probes.AREAS
    assert cli.parse(["probe", "--area", "policy"]).area == ["policy"]


# ---- the connections themselves: real sockets over loopback ----

@pytest.fixture
def loopback(monkeypatch):
    """connect_all's namespace entered as a no-op: its sockets are this process's."""
    import netlab.kernel.netns
    monkeypatch.setattr(netlab.kernel.netns, "entered", lambda name: nullcontext())


def test_connections_say_connected_refused_answered_and_timeout(loopback):
    listening = socket.create_server(("127.0.0.1", 0))
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()                                         # nothing listens there: RST
    answering = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    answering.bind(("127.0.0.1", 0))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))                          # takes the datagram, never answers
    nobody = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    nobody.bind(("127.0.0.1", 0))
    nobody_port = nobody.getsockname()[1]
    nobody.close()                                         # ICMP port unreachable

    def echo():
        data, peer = answering.recvfrom(100)
        answering.sendto(b"a", peer)
    t = threading.Thread(target=echo, daemon=True)
    t.start()
    try:
        C = probes.Connection
        got = probes.connect_all([C("n", "127.0.0.1", listening.getsockname()[1], "TCP"),
                                  C("n", "127.0.0.1", closed_port, "TCP"),
                                  C("n", "127.0.0.1", answering.getsockname()[1], "UDP"),
                                  C("n", "127.0.0.1", silent.getsockname()[1], "UDP"),
                                  C("n", "127.0.0.1", nobody_port, "UDP")], timeout=0.5)
        assert got == [(True, "connected"), (False, "refused"), (True, "answered"), (False, "timeout"),
                       (False, "refused")]
        assert silent.recv(100) == b"hostname"             # what the probe sends, as agnhost's netexec takes it
    finally:
        t.join(1)
        for s in (listening, answering, silent):
            s.close()


def test_connections_beyond_one_batch_all_get_their_answer(loopback):
    listening = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        port = listening.getsockname()[1]
        got = probes.connect_all([probes.Connection(f"n{i % 3}", "127.0.0.1", port, "TCP") for i in range(40)],
                                 timeout=2, most=7)
        assert got == [(True, "connected")] * 40
    finally:
        listening.close()


# ---- policy explain ----

def explained_state():
    state = lab_state(policies=[deny_all_ingress(), allow_b_to_a_on_80()])
    state.services = [ServiceManifest("x", "s-x-a", cluster_ip="10.96.0.20", selector={"pod": "a"},
                                      ports=(ServicePort(8000, "TCP", "http", "serve-80-tcp"),
                                             ServicePort(8000, "UDP", "udp", "serve-80-udp"))),
                      ServiceManifest("x", "empty", cluster_ip="10.96.0.21", selector={"pod": "none"},
                                      ports=(ServicePort(80, "TCP", "", 80),))]
    a = Address("10.244.1.2", "pp-worker", "a", "uid-x-a")
    state.endpoints = [Endpoints("x", "s-x-a", (Subset((a,), (), (Port("http", 80, "TCP"),)),
                                               Subset((a,), (), (Port("udp", 80, "UDP"),)))),
                       Endpoints("x", "empty", ())]
    return state


def test_explain_gives_the_verdict_and_every_reason():
    text, allowed = probes.policy_explain(explained_state(), "x/b", "x/a:80")
    assert allowed is True
    assert text.splitlines() == [
        "x/b -> x/a 80/TCP: allowed",
        "egress (x/b): not isolated: no policy selects x/b for egress",
        "ingress (x/a): isolated by 2 policies: x/deny-all, x/allow-b",
        "  allowed by x/allow-b ingress rule 0: from pods {pod=b} in namespace x, port 80/TCP"]
    text, allowed = probes.policy_explain(explained_state(), "y/a", "x/a:80/TCP")
    assert allowed is False and text.splitlines()[0] == "y/a -> x/a 80/TCP: denied"


def test_explain_without_a_port_judges_every_port_the_pod_declares():
    text, allowed = probes.policy_explain(explained_state(), "x/b", "x/a")
    assert allowed is False                                 # the UDP port is not allowed
    assert [line for line in text.splitlines() if line.startswith("x/b -> ")] == [
        "x/b -> x/a 80/TCP: allowed", "x/b -> x/a 80/UDP: denied"]
    assert text.endswith("allowed on 1 of 2 ports")
    text, _ = probes.policy_explain(explained_state(), "x/b", "x/a/udp")
    assert text.splitlines()[0] == "x/b -> x/a 80/UDP: denied" and "of 2 ports" not in text


def test_explain_takes_a_named_port_an_ip_a_node_and_icmp():
    state = explained_state()
    assert probes.policy_explain(state, "x/b", "x/a:serve-80-udp")[0].splitlines()[0] == "x/b -> x/a 80/UDP: denied"
    assert probes.policy_explain(state, "10.244.0.2", "10.244.1.2:80")[0].splitlines()[0] == \
        "x/b -> x/a 80/TCP: allowed"                       # a pod's IP is that pod
    text, allowed = probes.policy_explain(state, "pp-worker", "x/a:81")
    assert allowed and "allowed: from a local address of its node pp-worker" in text
    assert probes.policy_explain(state, "pp-control-plane", "x/a:81")[1] is False
    assert probes.policy_explain(state, "y/a", "x/a/icmp")[1] is True      # kube-router's COMMON chain


def test_explain_judges_a_service_on_its_backends_at_their_target_port():
    state = explained_state()
    text, allowed = probes.policy_explain(state, "x/b", "x/s-x-a:8000")
    assert allowed is True
    assert text.splitlines()[:2] == [
        "Service x/s-x-a (10.96.0.20) 8000/TCP is judged on its backend x/a, port 80/TCP (after kube-proxy's DNAT):",
        "x/b -> x/a 80/TCP: allowed"]
    assert probes.policy_explain(state, "x/b", "10.96.0.20:8000")[0] == text        # by its ClusterIP
    assert probes.policy_explain(state, "x/b", "x/s-x-a:http")[0] == text           # by the port's name
    text, allowed = probes.policy_explain(state, "x/b", "x/s-x-a")
    assert allowed is False and text.endswith("allowed to 1 of 2 backend connections")
    text, allowed = probes.policy_explain(state, "x/b", "x/empty:80")
    assert allowed is False and "no ready backend: kube-proxy rejects the connection before any policy" in text


@pytest.mark.parametrize("src, dst, message", [
    ("x/b", "x/nope:80", "lab pp has no pod or Service x/nope"),
    ("x/nope", "x/a:80", "no pod x/nope"),
    ("x/b", "x/a:99999", "port 99999 is not a port number (1-65535)"),
    ("x/b", "x/a:80/foo", "protocol 'foo' is not TCP, UDP, SCTP or ICMP"),
    ("x/b", "x/a:80/icmp", "ICMP has no ports"),
    ("x/b:80", "x/a:80", "SRC 'x/b:80' is a pod, a node, external or an address"),
    ("x/b", "x/a:nope", "pod x/a declares no container port named 'nope' (its ports: 80/TCP serve-80-tcp, "
                        "80/UDP serve-80-udp)"),
    ("x/b", "pp-worker", "is no pod, so it declares no port"),
    ("x/b", "x/s-x-a:9/udp", "Service x/s-x-a has no port 9/UDP (its ports: 8000/TCP http, 8000/UDP udp)"),
    ("x/b", "x/s-x-a/icmp", "a Service is reached on its ports, and ICMP has none"),
])
def test_explain_refuses_what_names_nothing_in_one_sentence(src, dst, message):
    with pytest.raises(NetlabError, match="^policy explain: ") as e:
        probes.policy_explain(explained_state(), src, dst)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.fixture
def explained_lab(monkeypatch):
    import netlab.lab
    monkeypatch.setattr(netlab.lab.Lab, "find", classmethod(lambda cls, name=None: SimpleNamespace(
        state=explained_state)))


@pytest.mark.parametrize("dst, code", [("x/a:80", 0), ("x/a:81", 1), ("x/s-x-a", 1), ("x/a:80/foo", 2),
                                       ("x/nope", 2)])
def test_policy_explain_exits_0_allowed_1_denied_2_for_bad_input(explained_lab, capsys, dst, code):
    assert cli.main(["policy", "explain", "x/b", dst]) == code
    out, err = capsys.readouterr()
    if code == 2:
        assert out == "" and err.startswith("netlab: policy explain: ") and err.count("\n") == 1
    else:
        assert err == "" and out.startswith("x/b -> x/a " if "s-x-a" not in dst else "Service x/s-x-a ")


def test_policy_takes_explain_and_without_it_is_a_usage_error(capsys):
    args = cli.parse(["policy", "explain", "x/b", "x/a:80"])
    assert (args.command, args.policy_command, args.src, args.dst) == ("policy", "explain", "x/b", "x/a:80")
    with pytest.raises(SystemExit) as e:
        cli.parse(["policy"])
    assert e.value.code == 2 and "the following arguments are required: COMMAND" in capsys.readouterr().err


# ---- trace: kube-router's chains, read from iptables-save -c ----

# A node's filter table as `iptables-save -c` printed it on a lab with x/deny-all-ingress (every
# pod of x) and x/allow-b-81 (x/a from x/b on 81): the rules of kube-router's layout a flow from
# y/a to x/a:80 moved (TCP: refused) and, in ALLOWED, a flow from x/b to x/a:81 (connected).
REJECTED = """*filter
:KUBE-NWPLCY-COMMON - [0:0]
[1:60] -A KUBE-NWPLCY-COMMON -m comment --comment "\\"rule for stateful firewall for pod\\"" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
[1:60] -A KUBE-POD-FW-ILNLQ5MTGH2IPFVR -m comment --comment "common bi-directional traffic policy rules" -j KUBE-NWPLCY-COMMON
[1:60] -A KUBE-POD-FW-QYUVA5AFBMRLTDZQ -m comment --comment "common bi-directional traffic policy rules" -j KUBE-NWPLCY-COMMON
[1:60] -A KUBE-POD-FW-QYUVA5AFBMRLTDZQ -d 10.244.1.3/32 -m comment --comment "run through nw policy deny-all-ingress" -j KUBE-NWPLCY-G7TD6QMPJH3T7N32
[1:60] -A KUBE-POD-FW-QYUVA5AFBMRLTDZQ -d 10.244.1.3/32 -m comment --comment "run through nw policy allow-b-81" -j KUBE-NWPLCY-CBSMQYSHNKVKWA5Y
[1:60] -A KUBE-POD-FW-QYUVA5AFBMRLTDZQ -m comment --comment "rule to log dropped traffic POD name:a namespace: x" -m mark ! --mark 0x10000/0x10000 -m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100
[1:60] -A KUBE-POD-FW-QYUVA5AFBMRLTDZQ -m comment --comment "rule to REJECT traffic destined for POD name:a namespace: x" -m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable
[0:0] -A KUBE-POD-FW-QYUVA5AFBMRLTDZQ -j MARK --set-xmark 0x0/0x10000
[1:60] -A KUBE-ROUTER-FORWARD -d 10.244.1.3/32 -m comment --comment "rule to jump traffic destined to POD name:a namespace: x to chain KUBE-POD-FW-QYUVA5AFBMRLTDZQ" -j KUBE-POD-FW-QYUVA5AFBMRLTDZQ
[1:88] -A KUBE-ROUTER-OUTPUT -d 10.244.1.4/32 -m comment --comment "rule to jump traffic destined to POD name:a namespace: y to chain KUBE-POD-FW-ILNLQ5MTGH2IPFVR" -j KUBE-POD-FW-ILNLQ5MTGH2IPFVR
[3:180] -A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https has no endpoints" -j REJECT
COMMIT
"""
ALLOWED = """*filter
[1:60] -A KUBE-NWPLCY-CBSMQYSHNKVKWA5Y -p tcp -m comment --comment "rule to ACCEPT traffic from source pods to dest pods selected by policy name allow-b-81 namespace x" -m set --match-set KUBE-SRC-72MLUNUS35JBJRNR src -m set --match-set KUBE-DST-PVFQTLYR4D6ZDMJB dst -m tcp --dport 81 -j MARK --set-xmark 0x10000/0x10000
[1:60] -A KUBE-NWPLCY-CBSMQYSHNKVKWA5Y -p tcp -m comment --comment "rule to ACCEPT traffic from source pods to dest pods selected by policy name allow-b-81 namespace x" -m set --match-set KUBE-SRC-72MLUNUS35JBJRNR src -m set --match-set KUBE-DST-PVFQTLYR4D6ZDMJB dst -m tcp --dport 81 -m mark --mark 0x10000/0x10000 -j RETURN
[7:420] -A KUBE-NWPLCY-COMMON -m comment --comment "\\"rule for stateful firewall for pod\\"" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
[8:480] -A KUBE-POD-FW-QYUVA5AFBMRLTDZQ -m comment --comment "common bi-directional traffic policy rules" -j KUBE-NWPLCY-COMMON
[1:60] -A KUBE-POD-FW-QYUVA5AFBMRLTDZQ -d 10.244.1.3/32 -m comment --comment "run through nw policy deny-all-ingress" -j KUBE-NWPLCY-G7TD6QMPJH3T7N32
[1:60] -A KUBE-POD-FW-QYUVA5AFBMRLTDZQ -d 10.244.1.3/32 -m comment --comment "run through nw policy allow-b-81" -j KUBE-NWPLCY-CBSMQYSHNKVKWA5Y
[1:60] -A KUBE-POD-FW-QYUVA5AFBMRLTDZQ -j MARK --set-xmark 0x0/0x10000
[1:60] -A KUBE-POD-FW-QYUVA5AFBMRLTDZQ -m comment --comment "set mark to ACCEPT traffic that comply to network policies" -j MARK --set-xmark 0x20000/0x20000
[4:240] -A KUBE-ROUTER-FORWARD -d 10.244.1.3/32 -m comment --comment "rule to jump traffic destined to POD name:a namespace: x to chain KUBE-POD-FW-QYUVA5AFBMRLTDZQ" -j KUBE-POD-FW-QYUVA5AFBMRLTDZQ
[4:240] -A KUBE-ROUTER-FORWARD -s 10.244.1.3/32 -m comment --comment "rule to jump traffic from POD name:a namespace: x to chain KUBE-POD-FW-QYUVA5AFBMRLTDZQ" -j KUBE-POD-FW-QYUVA5AFBMRLTDZQ
[1:60] -A FORWARD -m comment --comment "KUBE-ROUTER rule to explicitly ACCEPT traffic that comply to network policies" -m mark --mark 0x20000/0x20000 -j ACCEPT
COMMIT
"""


def hits(monkeypatch, text, node="pp-worker"):
    """The rules a flow moved, as trace lists them: the counters of `text` against none before."""
    monkeypatch.setattr(trace.iptables, "save", lambda netns, backend, *flags: text)
    after = trace.counters(node, "legacy")
    return [{"node": node, "table": t, "chain": c, "rule": r, "packets": n} for (t, c, r), n in after.items() if n]


def test_trace_names_the_reject_that_stopped_a_flow_and_the_policies_it_went_through(monkeypatch):
    rules = hits(monkeypatch, REJECTED)
    path = trace.policy_path(rules)
    assert [(s["depth"], s["chain"], s["what"]) for s in path] == [
        (0, "KUBE-ROUTER-FORWARD", "pod"),
        (1, "KUBE-POD-FW-QYUVA5AFBMRLTDZQ", "common"),
        (2, "KUBE-NWPLCY-COMMON", "established"),
        (1, "KUBE-POD-FW-QYUVA5AFBMRLTDZQ", "policy"),
        (1, "KUBE-POD-FW-QYUVA5AFBMRLTDZQ", "policy"),
        (1, "KUBE-POD-FW-QYUVA5AFBMRLTDZQ", "logged"),
        (1, "KUBE-POD-FW-QYUVA5AFBMRLTDZQ", "rejected"),
        (0, "KUBE-ROUTER-OUTPUT", "pod"),                # the REJECT's ICMP error, sent by the node to y/a
        (1, "KUBE-POD-FW-ILNLQ5MTGH2IPFVR", "common")]   # kube-proxy's own REJECT is no step of the policies'
    assert [(s["policy"], s["direction"], s["target"]) for s in path if s["what"] == "policy"] == [
        ("x/deny-all-ingress", "ingress", "KUBE-NWPLCY-G7TD6QMPJH3T7N32"),
        ("x/allow-b-81", "ingress", "KUBE-NWPLCY-CBSMQYSHNKVKWA5Y")]
    assert (path[0]["pod"], path[0]["direction"]) == ("x/a", "ingress")
    stop = trace.rejected({"policy": path})
    assert (stop["node"], stop["chain"], stop["pod"]) == ("pp-worker", "KUBE-POD-FW-QYUVA5AFBMRLTDZQ", "x/a")
    assert stop["text"] == "REJECT: rule to REJECT traffic destined for POD name:a namespace: x (no policy allowed it)"
    assert path[2]["text"] == "ACCEPT: RELATED,ESTABLISHED (the firewall is stateful)"
    lines = trace._render_policy({"policy": path, "network_policies": 2})
    assert lines[0] == "network policy (kube-router's chains in the filter table, as a packet meets them):"
    assert ("  pp-worker                +1     KUBE-POD-FW-QYUVA5AFBMRLTDZQ: ingress: through policy "
            "x/allow-b-81 (KUBE-NWPLCY-CBSMQYSHNKVKWA5Y)") in lines
    assert lines[-2] == "stopped by network policy: the REJECT in KUBE-POD-FW-QYUVA5AFBMRLTDZQ (x/a) on pp-worker"


def test_trace_names_the_policy_rule_that_let_a_flow_in(monkeypatch):
    path = trace.policy_path(hits(monkeypatch, ALLOWED))
    assert trace.rejected({"policy": path}) is None
    allowed = [s for s in path if s["what"] == "allowed"]
    assert [(s["chain"], s["policy"], s["depth"], s["text"]) for s in allowed] == [
        ("KUBE-NWPLCY-CBSMQYSHNKVKWA5Y", "x/allow-b-81", 2,
         "allowed: rule to ACCEPT traffic from source pods to dest pods selected by policy name allow-b-81 "
         "namespace x")]
    order = [(s["chain"], s["what"]) for s in path]
    jump = next(i for i, s in enumerate(path) if s.get("target") == "KUBE-NWPLCY-CBSMQYSHNKVKWA5Y")
    assert order[jump + 1:jump + 3] == [("KUBE-NWPLCY-CBSMQYSHNKVKWA5Y", "marked"),
                                        ("KUBE-NWPLCY-CBSMQYSHNKVKWA5Y", "allowed")]   # right after the jump to it
    assert ("FORWARD", "accepted") in order
    assert [(s["pod"], s["direction"]) for s in path if s["what"] == "pod"] == [("x/a", "ingress"), ("x/a", "egress")]
    text = "\n".join(trace._render_policy({"policy": path, "network_policies": 2}))
    assert "MARK 0x10000" not in text and "stopped by" not in text       # the MARK before the RETURN says it twice


def test_trace_of_a_lab_without_policies_says_so_in_one_line(monkeypatch):
    path = trace.policy_path(hits(monkeypatch, ALLOWED))
    assert trace._render_policy({"policy": path, "network_policies": 0}) == [
        f"network policy: the lab has none; kube-router's chains let the flow through ({len(path)} of their "
        "rules hit)", ""]
    assert trace._render_policy({"policy": [], "network_policies": 0}) == []
