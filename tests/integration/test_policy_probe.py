"""`netlab probe --area policy`, `netlab policy explain` and `netlab trace` on a real lab: two
nodes, namespaces x and y, pods x/a and y/a on the worker and x/b on the control plane (bridged,
routed and cross-node paths), each serving the e2e model's way (agnhost serve-hostname, one
container per port and protocol: 80/TCP, 80/UDP, 81/TCP), and a Service in front of x/a.

Without a policy every cell connects, as Kubernetes promises of a cluster with none; explain's
verdicts and exit codes are the evaluator's. The last three tests need kube-router's enforcement
(netlab/node/netpol) in the kernel: with policies
the observed matrices are the ones Kubernetes' semantics give (written out here by hand, as the
e2e suite writes them), a REJECT is seen as a refusal, a chain flushed by hand shows as exactly
the cells it closes, and trace names the REJECT and the policy that let a flow in.
Policies are put into the state through Lab.change, as the API's writes put them."""

import json
import subprocess
import sys

import pytest

from netlab.api.spec import LabelSelector, NetworkPolicyManifest, PolicyPeer, PolicyPort, PolicyRule
from netlab.kernel import netns as ns

from .conftest import lab_for_module

LAB = """kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: pp
nodes:
  - role: control-plane
  - role: worker
"""
PODS = (("x", "a", "worker"), ("x", "b", "control-plane"), ("y", "a", "worker"))
PORTS = ((80, "TCP"), (80, "UDP"), (81, "TCP"))
KEYS = ["x/a", "x/b", "y/a"]
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"


def pod_yaml(namespace, name, node):
    containers = ", ".join(
        f'{{name: cont-{port}-{proto.lower()}, image: "{AGNHOST}", command: [/agnhost, serve-hostname, '
        f'--{proto.lower()}, --http=false, --port, "{port}"], ports: [{{containerPort: {port}, protocol: {proto}, '
        f'name: serve-{port}-{proto.lower()}}}]}}' for port, proto in PORTS)
    return f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{pod: {name}}}}}
spec:
  nodeName: pp-{node}
  tolerations: [{{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}}]
  containers: [{containers}]
"""


SERVICE = """---
apiVersion: v1
kind: Service
metadata: {name: s-x-a, namespace: x}
spec:
  selector: {pod: a}
  ports: [{name: http, port: 8000, targetPort: serve-80-tcp}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy-probe") / "pp.yaml"
    path.write_text(LAB + "".join(pod_yaml(*p) for p in PODS) + SERVICE)
    with lab_for_module(path, tmp_path_factory) as lab:
        yield lab


@pytest.fixture(autouse=True)
def no_policies(lab):
    def reset(state, log):
        state.network_policies = []
    lab.change("reset", reset)
    yield
    lab.change("reset", reset)
    lab.reconcile()                                      # what a test changed by hand is undone


def netlab(lab, *argv):
    return subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", lab.name, *argv], capture_output=True,
                          text=True, timeout=300)


def probe(lab):
    r = netlab(lab, "probe", "--area", "policy", "-o", "json")
    assert r.stdout, r.stderr
    return r.returncode, {c["name"]: c for c in json.loads(r.stdout)}


def put(lab, *policies):
    def mutate(state, log):
        state.network_policies = list(policies)
    lab.change("policies", mutate)


def deny_all_ingress():
    return NetworkPolicyManifest("x", "deny-all", LabelSelector({}), ("Ingress",))


def allow_b_to_a():
    """x/a takes x/b's connections on 81/TCP and 80/UDP."""
    return NetworkPolicyManifest("x", "allow-b", LabelSelector({"pod": "a"}), ("Ingress",),
                                 (PolicyRule(peers=(PolicyPeer(LabelSelector({"pod": "b"})),),
                                             ports=(PolicyPort("TCP", 81), PolicyPort("UDP", 80))),))


def table(blocked):
    """{src: {dst: connected}} over the three pods, every cell connected but `blocked`."""
    return {s: {d: (s, d) not in blocked for d in KEYS} for s in KEYS}


# Deny-all ingress in x: ExpectAllIngress(x/a, false), ExpectAllIngress(x/b, false), AllowLoopback.
INTO_X = {("x/b", "x/a"), ("y/a", "x/a"), ("x/a", "x/b"), ("y/a", "x/b")}


def test_without_policies_every_pod_reaches_every_pod_on_every_port(lab):
    code, checks = probe(lab)
    assert code == 0
    assert list(checks) == ["80/TCP matrix", "80/UDP matrix", "81/TCP matrix"]
    for name, c in checks.items():
        assert c["result"] == "pass", c
        assert c["matrix"]["sources"] == c["matrix"]["destinations"] == KEYS
        assert c["matrix"]["observed"] == table(set()), name
        assert {how for row in c["matrix"]["how"].values() for how in row.values()} == \
            ({"answered"} if name.endswith("UDP matrix") else {"connected"})
    text = netlab(lab, "probe", "--area", "policy")
    assert text.returncode == 0
    assert "network policy 80/UDP:\nwarning: the results of 3 pod->pod cases have been ignored\n" in text.stdout
    assert "expected = observed:\n\n-\tx/a\tx/b\ty/a\nx/a\t.\t.\t.\nx/b\t.\t.\t.\ny/a\t.\t.\t.\n" in text.stdout


def test_policy_explain_exits_0_allowed_1_denied_2_for_bad_input(lab):
    r = netlab(lab, "policy", "explain", "y/a", "x/a:80")
    assert (r.returncode, r.stdout.splitlines()[0]) == (0, "y/a -> x/a 80/TCP: allowed")
    assert "not isolated: no policy selects x/a for ingress" in r.stdout
    for bad in (["x/b", "x/a:80/bogus"], ["x/nope", "x/a:80"], ["x/b", "x/a:0"]):
        r = netlab(lab, "policy", "explain", *bad)
        assert (r.returncode, r.stdout) == (2, ""), bad
        assert r.stderr.startswith("netlab: policy explain: ") and r.stderr.count("\n") == 1, r.stderr
    put(lab, deny_all_ingress(), allow_b_to_a())
    r = netlab(lab, "policy", "explain", "y/a", "x/a:80")
    assert (r.returncode, r.stdout.splitlines()[0]) == (1, "y/a -> x/a 80/TCP: denied")
    r = netlab(lab, "policy", "explain", "x/b", "x/s-x-a:8000")             # judged on x/a's port 80
    assert r.returncode == 1 and "judged on its backend x/a, port 80/TCP" in r.stdout
    r = netlab(lab, "policy", "explain", "x/b", "x/a:81")
    assert r.returncode == 0 and "allowed by x/allow-b ingress rule 0" in r.stdout


def test_with_policies_the_kernel_shows_the_matrices_kubernetes_expects(lab):
    put(lab, deny_all_ingress(), allow_b_to_a())
    code, checks = probe(lab)
    assert code == 0, [c["observed"] for c in checks.values() if not c["ok"]]
    assert checks["80/TCP matrix"]["matrix"]["observed"] == table(INTO_X)
    assert checks["80/UDP matrix"]["matrix"]["observed"] == table(INTO_X - {("x/b", "x/a")})
    assert checks["81/TCP matrix"]["matrix"]["observed"] == table(INTO_X - {("x/b", "x/a")})
    for name in checks:
        how = checks[name]["matrix"]["how"]
        blocked = {how[s][d] for s, d in INTO_X - ({("x/b", "x/a")} if name != "80/TCP matrix" else set())}
        assert blocked == {"refused"}, name                  # kube-router REJECTs: an ICMP error, at once


def test_a_policy_chain_emptied_by_hand_shows_as_the_cells_it_closes(lab):
    put(lab, deny_all_ingress(), allow_b_to_a())
    worker = lab.state().pod("x", "a").node
    save = ns.run(worker, ["iptables-save", "-t", "filter"], capture_output=True, text=True).stdout
    chain = next(line.rsplit(" -j ", 1)[1] for line in save.splitlines()
                 if '"run through nw policy allow-b"' in line)
    assert ns.run(worker, ["iptables", "-t", "filter", "-F", chain]).returncode == 0
    code, checks = probe(lab)
    assert code == 1
    assert [c["name"] for c in checks.values() if not c["ok"]] == ["80/UDP matrix", "81/TCP matrix"]
    for name in ("80/UDP matrix", "81/TCP matrix"):
        [cell] = checks[name]["matrix"]["differences"]
        assert (cell["from"], cell["to"], cell["expected"], cell["observed"], cell["how"]) == \
            ("x/b", "x/a", True, False, "refused")
        assert "allowed by x/allow-b ingress rule 0" in cell["explanation"]
    lab.reconcile()
    assert probe(lab)[0] == 0


def test_trace_names_the_reject_that_stopped_a_flow_and_the_policy_that_let_one_in(lab):
    put(lab, deny_all_ingress(), allow_b_to_a())
    r = netlab(lab, "trace", "y/a", "x/a:80", "-o", "json")
    assert r.returncode == 1
    t = json.loads(r.stdout)
    stop = next(s for s in t["policy"] if s["what"] == "rejected")
    assert (stop["node"], stop["pod"]) == (lab.state().pod("x", "a").node, "x/a")
    assert {s["policy"] for s in t["policy"] if s["what"] == "policy"} == {"x/deny-all", "x/allow-b"}
    text = netlab(lab, "trace", "y/a", "x/a:80").stdout
    assert f"stopped by network policy: the REJECT in {stop['chain']} (x/a) on {stop['node']}" in text
    r = netlab(lab, "trace", "x/b", "x/a:80", "--udp", "-o", "json")
    assert r.returncode == 0, r.stderr                   # serve-hostname answered
    t = json.loads(r.stdout)
    assert not [s for s in t["policy"] if s["what"] == "rejected"]
    assert [s["policy"] for s in t["policy"] if s["what"] == "allowed"] == ["x/allow-b"]
