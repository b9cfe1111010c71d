"""kube-router's network policy agent on a dual-stack lab: its IPv6 family (ip6tables chains,
"inet6:" sets) refuses and allows real TCP connections to pods' IPv6 addresses as its IPv4
family does to their IPv4 ones (a denied connection is refused at once: REJECT with
icmp6-port-unreachable), an IPv6 ipBlock lets its client in over IPv6 and no one else, and the
chains and sets in the kernel are the plan's and go with their policy.

One lab: kind's `networking: {ipFamily: dual}`, two nodes; x/a and x/b on the worker, y/a on the
control plane (a bridged and a cross-node path to x/a)."""

import errno
import socket

import pytest

from netlab.api.spec import IPBlock, LabelSelector, NetworkPolicyManifest, PolicyPeer, PolicyRule
from netlab.controllers import networkpolicy
from netlab.kernel import netns as ns
from netlab.kernel.iptables_restore import parse_save
from netlab.node.netpol import kube_router
from netlab.values.ipset import parse_save as parse_ipset_save

from .conftest import lab_for_module, wait_for

LAB = """kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: np6
networking: {ipFamily: dual}
nodes:
  - role: control-plane
  - role: worker
"""
POD = """---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{pod: {name}}}}}
spec:
  nodeName: np6-{node}
  tolerations: [{{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}}]
  containers:
    - {{name: netexec, ports: [{{name: http, containerPort: 8080}}]}}
"""
PODS = (("x", "a", "worker"), ("x", "b", "worker"), ("y", "a", "control-plane"))
SOURCES = ("x/b", "y/a")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    path = tmp_path_factory.mktemp("netpol-dual") / "np6.yaml"
    path.write_text(LAB + "".join(POD.format(namespace=n, name=p, node=node) for n, p, node in PODS))
    with lab_for_module(path, tmp_path_factory) as lab:
        yield lab


@pytest.fixture(autouse=True)
def clean(lab):
    def reset(state, log):
        state.network_policies = []
    lab.change("reset", reset)
    yield
    lab.change("reset", reset)


def policy(name, ingress=None):
    """A policy selecting every pod of x for ingress (no rules: deny all)."""
    return NetworkPolicyManifest("x", name, LabelSelector({}), ("Ingress",), tuple(ingress or ()), ())


def apply(lab, *policies):
    def mutate(state, log):
        state.network_policies = list(policies)
    lab.change("policies", mutate)
    converged(lab)


def converged(lab):
    """Every node's IPv4 and IPv6 kube-router chains and sets are the plan's."""
    state = lab.state()
    inputs = kube_router.inputs(state)
    wanted = {s.name: (s.family, s.members()) for s in kube_router.ipsets(inputs)}
    assert any(n.startswith("inet6:") for n in wanted) == bool(state.network_policies)
    for node in state.nodes:
        for save, family in (("iptables-save", "IPv4"), ("ip6tables-save", "IPv6")):
            out = ns.run(node.netns, [save, "-t", "filter"], capture_output=True, text=True).stdout
            have = parse_save(out)
            plan = kube_router.node_table(inputs, node.name, family=family).chains
            ours = {c: r for c, r in have.items() if kube_router.owned(c) or c.startswith("KUBE-NWPLCY-")}
            assert ours == {c: list(r) for c, r in plan.items() if c not in ("INPUT", "FORWARD", "OUTPUT")}, \
                (node.name, family)
            for builtin, (jump,) in kube_router.hooks().items():
                assert have[builtin][0] == jump, (node.name, family, builtin)
                assert kube_router.EXPLICIT_ACCEPT in have[builtin], (node.name, family, builtin)     # k3s's ACCEPT
        sets = parse_ipset_save(ns.run(node.netns, ["ipset", "save"], capture_output=True, text=True).stdout)
        assert {n: (s.family, s.members()) for n, s in sets.items() if "KUBE-" in n} == wanted, node.name


def address(lab, key, family):
    pod = lab.state().pod(*key.split("/"))
    return pod.ip6 if family == "IPv6" else pod.ip


def connect(lab, src, dst_ip, port=8080):
    """"ok", or the error the client sees (ECONNREFUSED for kube-router's REJECT)."""
    af = socket.AF_INET6 if ":" in dst_ip else socket.AF_INET
    with ns.entered(lab.state().pod(*src.split("/")).netns):
        s = socket.socket(af, socket.SOCK_STREAM)
    with s:
        s.settimeout(3)
        try:
            s.connect((dst_ip, port))
            return "ok"
        except socket.timeout:
            return "timeout"
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e))


def matrix(lab, family, dst="x/a"):
    return {src: connect(lab, src, address(lab, dst, family)) for src in SOURCES}


def expected(lab, family, dst="x/a"):
    """The evaluator's verdicts on the same connections (by the addresses they use)."""
    state = lab.state()
    return {src: "ok" if networkpolicy.evaluate(state, address(lab, src, family), address(lab, dst, family),
                                                8080).allowed else "ECONNREFUSED" for src in SOURCES}


def test_the_pods_have_ipv6_addresses_and_answer_on_them(lab):
    state = lab.state()
    assert all(p.ip6 and p.ip6.startswith("fd00:10:244:") for p in state.pods if p.namespace in ("x", "y"))
    wait_for(lambda: matrix(lab, "IPv6") == {src: "ok" for src in SOURCES}, what="x/a answering over IPv6")
    assert matrix(lab, "IPv4") == {src: "ok" for src in SOURCES}


def test_default_deny_refuses_ipv6_as_ipv4_and_an_allow_reopens_both(lab):
    apply(lab, policy("deny"))
    refused = {src: "ECONNREFUSED" for src in SOURCES}
    assert matrix(lab, "IPv4") == refused == expected(lab, "IPv4")
    assert matrix(lab, "IPv6") == refused == expected(lab, "IPv6")
    apply(lab, policy("deny"), policy("all", ingress=[PolicyRule()]))
    assert matrix(lab, "IPv4") == {src: "ok" for src in SOURCES} == expected(lab, "IPv4")
    assert matrix(lab, "IPv6") == {src: "ok" for src in SOURCES} == expected(lab, "IPv6")
    apply(lab)                                  # the policies gone: their chains and both families' sets too
    assert matrix(lab, "IPv6") == {src: "ok" for src in SOURCES}


def test_an_ipv6_ipblock_lets_its_client_in_over_ipv6_and_no_one_else(lab):
    client = address(lab, "x/b", "IPv6")
    apply(lab, policy("b6", ingress=[PolicyRule(peers=(PolicyPeer(ip_block=IPBlock(f"{client}/128")),))]))
    assert matrix(lab, "IPv6") == {"x/b": "ok", "y/a": "ECONNREFUSED"} == expected(lab, "IPv6")
    # The block is IPv6's: over IPv4 it lets no one in.
    assert matrix(lab, "IPv4") == {"x/b": "ECONNREFUSED", "y/a": "ECONNREFUSED"} == expected(lab, "IPv4")
