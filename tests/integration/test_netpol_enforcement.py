"""kube-router's network policy agent on real labs, in both kube-proxy modes: what policies
allow and refuse is what the kernel does to real connections (a denied TCP connection is
refused at once: kube-router REJECTs with icmp-port-unreachable), a connection to a ClusterIP is
judged on its backend pod after kube-proxy's DNAT, a change of a namespace's or a pod's labels
re-evaluates the policies, an established connection outlives a deny (the firewall is
stateful), and the chains and sets carry kube-router's names, follow every change on every node
and are gone with their policy; a sync that changes nothing writes nothing.

One lab per mode: two nodes, namespaces x and y with pods a and b each (x/a, x/b and y/b on the
worker, y/a on the control plane: same-node bridged, same-node routed and cross-node paths), and
a Service in front of x/a. Policies are put into the state through Lab.change, as the API's
writes put them."""

import base64
import errno
import hashlib
import socket
import subprocess
import sys
from dataclasses import replace

import pytest

from netlab.api.spec import IPBlock, LabelSelector, NetworkPolicyManifest, PolicyPeer, PolicyPort, PolicyRule
from netlab.kernel import netns as ns
from netlab.kernel.iptables_restore import parse_save
from netlab.node.netpol import kube_router
from netlab.values.ipset import parse_save as parse_ipset_save

from .conftest import lab_for_module

LAB = """kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: np
{networking}nodes:
  - role: control-plane
  - role: worker
"""
POD = """---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{pod: {name}}}}}
spec:
  nodeName: np-{node}
  tolerations: [{{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}}]
  containers:
    - {{name: netexec, ports: [{{name: http, containerPort: 8080}}, {{name: udp, containerPort: 8081, protocol: UDP}}]}}
"""
SERVICE = """---
apiVersion: v1
kind: Service
metadata: {name: s-x-a, namespace: x}
spec:
  selector: {pod: a}
  ports: [{name: http, port: 80, targetPort: http}]
"""
PODS = (("x", "a", "worker"), ("x", "b", "worker"), ("y", "a", "control-plane"), ("y", "b", "worker"))
SOURCES = ("x/b", "y/a", "y/b")            # every path to x/a: bridged, cross-node, bridged from another namespace


def b32(text):
    """The reference's hash: base32(sha256(text)), its first 16 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def lab(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"netpol-{request.param}")
    path = directory / "np.yaml"
    networking = "networking: {kubeProxyMode: nftables}\n" if request.param == "nftables" else ""
    path.write_text(LAB.format(networking=networking)
                    + "".join(POD.format(namespace=n, name=p, node=node) for n, p, node in PODS) + SERVICE)
    with lab_for_module(path, tmp_path_factory) as lab:
        yield lab


@pytest.fixture(autouse=True)
def clean(lab):
    """Each test starts and ends with no policy, the namespaces unlabelled and the pods' own labels."""
    def reset(state, log):
        state.network_policies = []
        state.namespaces = {n: v for n, v in state.namespaces.items() if n not in ("x", "y")}
        for p in state.pods:
            if p.namespace in ("x", "y"):
                p.template = replace(p.template, labels={"pod": p.name})
    lab.change("reset", reset)
    yield
    lab.change("reset", reset)


def policy(name, namespace="x", selector=None, types=("Ingress",), ingress=(), egress=()):
    return NetworkPolicyManifest(namespace, name, LabelSelector(selector or {}), types, tuple(ingress), tuple(egress))


def from_peers(*peers):
    return PolicyRule(peers=peers)


def apply(lab, *policies):
    """The policies put in (replacing any), then every node's chains and sets checked against the plan."""
    def mutate(state, log):
        state.network_policies = list(policies)
    lab.change("policies", mutate)
    converged(lab)
    return lab.last_changes


def change(lab, mutate):
    lab.change("labels", lambda state, log: mutate(state))
    converged(lab)


def converged(lab):
    """Each node's kube-router chains and KUBE- sets are the plan's, whichever sync wrote them."""
    state = lab.state()
    inputs = kube_router.inputs(state)
    wanted_sets = {s.name: s.members() for s in kube_router.ipsets(inputs)}
    for node in state.nodes:
        have = parse_save(ns.run(node.netns, ["iptables-save", "-t", "filter"], capture_output=True, text=True).stdout)
        plan = kube_router.node_table(inputs, node.name).chains
        ours = {c: r for c, r in have.items() if kube_router.owned(c) or c.startswith("KUBE-NWPLCY-")}
        assert ours == {c: list(r) for c, r in plan.items() if c not in ("INPUT", "FORWARD", "OUTPUT")}, node.name
        for builtin, (jump,) in kube_router.hooks().items():
            assert have[builtin][0] == jump, (node.name, builtin)           # at position 1
        sets = parse_ipset_save(ns.run(node.netns, ["ipset", "save"], capture_output=True, text=True).stdout)
        assert {n: s.members() for n, s in sets.items() if n.startswith("KUBE-")} == wanted_sets, node.name


def ip(lab, key):
    return lab.state().pod(*key.split("/")).ip


def cluster_ip(lab):
    return lab.state().service("x", "s-x-a").cluster_ip


def open_socket(lab, src):
    """A TCP socket made inside the source pod's namespace (it stays there)."""
    with ns.entered(lab.state().pod(*src.split("/")).netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    return s


def connect(lab, src, dst_ip, port=8080):
    """"ok", or the error a client sees: ECONNREFUSED for a REJECT, ETIMEDOUT (timeout) for a DROP."""
    with open_socket(lab, src) as s:
        try:
            s.connect((dst_ip, port))
            return "ok"
        except socket.timeout:
            return "timeout"
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e))


def request(s):
    """One HTTP request on a kept-alive connection: the body netexec answers (the pod's name)."""
    s.sendall(b"GET /hostname HTTP/1.1\r\nHost: a\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, f"the connection closed: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += s.recv(4096)
    return body.decode()


def matrix(lab, dst="x/a", sources=SOURCES):
    return {src: connect(lab, src, ip(lab, dst)) for src in sources}


def test_deny_all_ingress_refuses_at_once_and_an_allow_opens_one_path(lab):
    assert matrix(lab) == {src: "ok" for src in SOURCES}
    apply(lab, policy("deny"))
    assert matrix(lab) == {src: "ECONNREFUSED" for src in SOURCES}
    assert connect(lab, "x/b", ip(lab, "y/a")) == "ok"                       # y is not isolated
    b_only = policy("allow-b", selector={"pod": "a"}, ingress=[from_peers(PolicyPeer(LabelSelector({"pod": "b"})))])
    apply(lab, policy("deny"), b_only)
    assert matrix(lab) == {"x/b": "ok", "y/a": "ECONNREFUSED", "y/b": "ECONNREFUSED"}   # y/b: another namespace


def test_a_clusterip_connection_is_judged_on_the_backend_pod_after_dnat(lab):
    assert {src: connect(lab, src, cluster_ip(lab), 80) for src in SOURCES} == {src: "ok" for src in SOURCES}
    b_only = policy("allow-b", selector={"pod": "a"}, ingress=[from_peers(PolicyPeer(LabelSelector({"pod": "b"})))])
    apply(lab, b_only)
    assert {src: connect(lab, src, cluster_ip(lab), 80) for src in SOURCES} == \
        {"x/b": "ok", "y/a": "ECONNREFUSED", "y/b": "ECONNREFUSED"}
    # The Service's port is 80; the policy allows the backend's port 8080 (the named port http).
    http = policy("http", selector={"pod": "a"}, ingress=[PolicyRule(ports=(PolicyPort("TCP", "http"),))])
    wrong = policy("port-80", selector={"pod": "a"}, ingress=[PolicyRule(ports=(PolicyPort("TCP", 80),))])
    apply(lab, http)
    assert {src: connect(lab, src, cluster_ip(lab), 80) for src in SOURCES} == {src: "ok" for src in SOURCES}
    apply(lab, wrong)
    assert {src: connect(lab, src, cluster_ip(lab), 80) for src in SOURCES} == {src: "ECONNREFUSED" for src in SOURCES}


def test_a_namespace_label_change_re_evaluates_the_policies(lab):
    blue = policy("from-blue", ingress=[from_peers(PolicyPeer(namespace_selector=LabelSelector({"team": "blue"})))])
    apply(lab, blue)
    assert matrix(lab) == {src: "ECONNREFUSED" for src in SOURCES}

    def label(state):
        state.namespaces["y"] = {**state.namespaces.get("y", {}), "labels": {"team": "blue"}}
    change(lab, label)
    assert matrix(lab) == {"x/b": "ECONNREFUSED", "y/a": "ok", "y/b": "ok"}

    def unlabel(state):
        state.namespaces["y"] = {**state.namespaces["y"], "labels": {}}
    change(lab, unlabel)
    assert matrix(lab) == {src: "ECONNREFUSED" for src in SOURCES}


def test_a_pod_label_change_re_evaluates_the_policies(lab):
    clients = policy("from-clients", ingress=[PolicyRule(peers=(
        PolicyPeer(pod_selector=LabelSelector({"role": "client"}), namespace_selector=LabelSelector()),))])
    apply(lab, clients)
    assert matrix(lab) == {src: "ECONNREFUSED" for src in SOURCES}

    def relabel(labels):
        def mutate(state):
            p = state.pod("y", "b")
            p.template = replace(p.template, labels=labels)
        return mutate
    change(lab, relabel({"pod": "b", "role": "client"}))
    assert matrix(lab) == {"x/b": "ECONNREFUSED", "y/a": "ECONNREFUSED", "y/b": "ok"}
    change(lab, relabel({"pod": "b"}))
    assert matrix(lab) == {src: "ECONNREFUSED" for src in SOURCES}


def test_an_ipblock_with_except_and_egress(lab):
    pods = lab.state().cluster.pod_subnet
    block = policy("block", ingress=[from_peers(PolicyPeer(ip_block=IPBlock(pods, (f"{ip(lab, 'y/b')}/32",))))])
    apply(lab, block)
    assert matrix(lab) == {"x/b": "ok", "y/a": "ok", "y/b": "ECONNREFUSED"}
    # y/b may only talk to x/b: x/a refuses nothing now, y/b's own chain refuses its connection.
    only_xb = policy("only-xb", namespace="y", selector={"pod": "b"}, types=("Egress",), egress=[PolicyRule(peers=(
        PolicyPeer(pod_selector=LabelSelector({"pod": "b"}),
                   namespace_selector=LabelSelector({"kubernetes.io/metadata.name": "x"})),))])
    apply(lab, only_xb)
    assert matrix(lab) == {"x/b": "ok", "y/a": "ok", "y/b": "ECONNREFUSED"}
    assert connect(lab, "y/b", ip(lab, "x/b")) == "ok"


def test_an_established_connection_outlives_a_deny_and_a_new_one_is_refused(lab):
    for src in ("x/b", "y/a"):                                  # bridged on one node, and across the overlay
        with open_socket(lab, src) as s:
            s.connect((ip(lab, "x/a"), 8080))
            assert request(s) == "a"
            apply(lab, policy("deny"))
            assert request(s) == "a"                            # RELATED,ESTABLISHED is accepted first
            assert connect(lab, src, ip(lab, "x/a")) == "ECONNREFUSED"
            apply(lab)
            assert request(s) == "a"


def test_an_unchanged_sync_writes_nothing(lab):
    changes = apply(lab, policy("deny"), policy("out", types=("Egress",), egress=[PolicyRule()]))
    assert changes.iptables_writes and changes.ipset_writes
    assert "kube-router" in changes.by_agent
    again = apply(lab, policy("deny"), policy("out", types=("Egress",), egress=[PolicyRule()]))
    assert (again.iptables_writes, again.ipset_writes) == (0, 0)
    full = lab.reconcile()                                          # every table and set read back
    assert (full.iptables_writes, full.ipset_writes, full.any()) == (0, 0, False)


def test_the_names_are_kube_routers_and_a_deleted_policy_takes_its_chain_and_sets(lab):
    ingress = policy("allow-web", selector={"pod": "a"}, ingress=[PolicyRule(peers=(PolicyPeer(LabelSelector()),))])
    apply(lab, ingress)
    chain = "KUBE-NWPLCY-" + b32("xallow-web1IPv4")
    sets = {"KUBE-DST-" + b32("xallow-webIPv4"), "KUBE-SRC-" + b32("xallow-webingressrule0IPv4pod")}
    state = lab.state()
    for node in state.nodes:
        rules = ns.run(node.netns, ["iptables", "-S"], capture_output=True, text=True).stdout.splitlines()
        assert f"-N {chain}" in rules
        assert next(r for r in rules if r.startswith("-A INPUT ")) == \
            '-A INPUT -m comment --comment "kube-router netpol - 4IA2OSFRMVNDXBVV" -j KUBE-ROUTER-INPUT'
        names = set(ns.run(node.netns, ["ipset", "list", "-n"], capture_output=True, text=True).stdout.split())
        assert sets <= names
    worker = state.node("worker")
    rules = ns.run(worker.netns, ["iptables", "-S"], capture_output=True, text=True).stdout.splitlines()
    assert f"-N KUBE-POD-FW-{b32('xa1')}" in rules and f"-N KUBE-POD-FW-{b32('ya1')}" not in rules   # local pods only
    assert any(r.startswith(f"-A KUBE-POD-FW-{b32('xa1')} ") and r.endswith(f"-j {chain}") for r in rules)

    apply(lab)
    for node in state.nodes:
        rules = ns.run(node.netns, ["iptables", "-S"], capture_output=True, text=True).stdout
        assert chain not in rules
        names = set(ns.run(node.netns, ["ipset", "list", "-n"], capture_output=True, text=True).stdout.split())
        assert not names & sets
        assert not [n for n in names if n.startswith(("KUBE-", "TMP-"))]


def test_get_ds_lists_the_agent_on_every_node(lab):
    out = subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", lab.name, "get", "ds", "-A"],
                         capture_output=True, text=True, timeout=60)
    rows = {tuple(line.split()[:2]): line.split() for line in out.stdout.splitlines()[1:]}
    assert rows[("kube-system", "kube-router")][2:7] == ["2"] * 5                # DESIRED ... AVAILABLE


def test_a_node_that_joins_gets_kube_routers_chains_and_sets_and_flannels_rules(lab):
    """In either mode (in nftables mode a joining node used to get no iptables rules at all until
    a full sync: neither flannel's nor, now, kube-router's)."""
    apply(lab, policy("deny"))
    lab.add_node("worker2")
    try:
        converged(lab)                                           # the new node's chains and sets, too
        node = lab.state().node("worker2")
        def chains(table):
            return parse_save(ns.run(node.netns, ["iptables-save", "-t", table], capture_output=True, text=True).stdout)
        assert chains("filter")["FORWARD"][-1] == '-m comment --comment "flanneld forward" -j FLANNEL-FWD'
        assert chains("nat")["POSTROUTING"][-1] == '-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG'
        assert matrix(lab) == {src: "ECONNREFUSED" for src in SOURCES}
    finally:
        lab.remove_node("worker2")
    converged(lab)


DENY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""


def test_netlab_apply_and_delete_of_a_policy_manifest(lab, tmp_path):
    manifest = tmp_path / "deny.yaml"
    manifest.write_text(DENY)

    def netlab(*argv):
        return subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", lab.name, *argv, "-f", str(manifest)],
                              capture_output=True, text=True, timeout=120)
    applied = netlab("apply")
    assert applied.returncode == 0, applied.stderr
    converged(lab)
    assert matrix(lab) == {src: "ECONNREFUSED" for src in SOURCES}
    deleted = netlab("delete")
    assert deleted.returncode == 0, deleted.stderr
    converged(lab)
    assert matrix(lab) == {src: "ok" for src in SOURCES}
