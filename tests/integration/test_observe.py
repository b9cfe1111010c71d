"""See it and prove it: probes that fail exactly where the path is broken, a trace from kernel
evidence, the diagram, capture, and faults."""

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from netlab import Lab
from netlab.kernel import netns as ns
from netlab.observe import graph, probes

from .conftest import renamed, unique_name, wait_for

THREE = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: obs
nodes: [{role: control-plane}, {role: worker}, {role: worker}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
      containers: [{name: c, ports: [{name: http, containerPort: 8080}, {name: udp, containerPort: 8081, protocol: UDP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


@pytest.fixture
def lab(tmp_path):
    """A web pod on each of three nodes (the control plane tolerated)."""
    f = tmp_path / "obs.yaml"
    f.write_text(THREE)
    name = unique_name("o")
    lab = Lab.up(renamed(f, name, tmp_path))
    try:
        yield lab
    finally:
        lab.down()

def dead(pid):
    """Gone, or a zombie: its sockets are closed either way."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def kill(pid):
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: dead(pid), what=f"process {pid} gone")


def wait_until_listening(proc, timeout=10.0):
    """tcpdump says "listening on IFACE" on stderr once its capture is open. Read from the
    descriptor itself: a buffered reader may hold the line where select() cannot see it."""
    fd, seen = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while b"listening on" not in seen:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            raise AssertionError(f"tcpdump not listening after {timeout} s: {seen!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError(f"tcpdump ended before listening: {seen!r}")
        seen += chunk
    return seen.decode()


def vxlan_capture(netns, iface, bpf, send):
    """tcpdump's text of the first packet matching `bpf` on `iface` while `send()` runs, VXLAN
    decoded (-T vxlan: tcpdump reads UDP 8472 as OTV, IANA's port for it, unless told otherwise)."""
    cap = subprocess.Popen(["ip", "netns", "exec", netns, "tcpdump", "-nn", "-l", "-v", "-i", iface, "-T", "vxlan",
                            "-c", "1", bpf], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until_listening(cap)
        send()
        out, _ = cap.communicate(timeout=10)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    return out.decode()


def failed(checks, area=None):
    return {c.name for c in checks if not c.ok and (area is None or c.area == area)}


def matrix_pairs_between(lab, a, b):
    """Matrix check names for every pod pair across nodes a and b, both ways."""
    pods = {p.node: f"{p.namespace}/{p.name}" for p in lab.state().pods if p.owner == "Deployment/web"}
    return {f"{pods[a]} -> {pods[b]}", f"{pods[b]} -> {pods[a]}"}


def test_a_healthy_lab_passes_every_area(lab):
    checks = probes.suite(lab)
    assert not failed(checks), failed(checks)
    assert {c.area for c in checks} >= {"pod-matrix", "pods-across-nodes", "services", "dns", "pod-to-node", "overlay"}
    assert len([c for c in checks if c.area == "pod-matrix"]) == 6


@pytest.mark.parametrize("breakage", ["route", "fdb"])
def test_a_broken_overlay_path_fails_only_the_pairs_that_use_it(lab, breakage):
    state = lab.state()
    a, b = state.nodes[1], state.nodes[2]
    if breakage == "route":
        cmd = ["ip", "route", "del", b.pod_cidr]
    else:
        cmd = ["bridge", "fdb", "del", b.vtep_mac, "dev", "flannel.1", "dst", b.ip, "self"]
    assert ns.run(a.netns, cmd).returncode == 0
    checks = probes.suite(lab, ["pod-matrix"])
    assert failed(checks) == matrix_pairs_between(lab, a.name, b.name)
    hint = next(c.hint for c in checks if not c.ok)
    assert a.name in hint and b.name in hint                  # where to look
    lab.reconcile()
    assert not failed(probes.suite(lab, ["pod-matrix"]))


def test_a_deleted_kube_services_chain_fails_only_the_services_seen_from_that_node(lab):
    checks = probes.suite(lab, ["services"])
    source = next(c.name for c in checks if "cluster IP from" in c.name).split(" from ")[1]
    node = lab.state().pod(*source.split("/")).node
    for cmd in (["-D", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"],
                ["-D", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]):
        assert ns.run(node, ["iptables", "-t", "nat", *cmd]).returncode == 0
    checks = probes.suite(lab, ["services", "pod-matrix"])
    assert failed(checks, "services") and not failed(checks, "pod-matrix")
    assert all("KUBE-SERVICES" in c.hint or "KUBE-" in c.hint or "coredns" in c.hint
               for c in checks if not c.ok)


def test_a_stopped_pod_server_fails_tcp_and_udp_but_not_icmp(lab):
    kill(lab.state().processes["agnhost"]["pid"])
    checks = probes.suite(lab, ["pods-across-nodes", "overlay"])
    assert {c.name.split()[0] for c in checks if not c.ok} == {"tcp", "udp"}
    assert all(c.ok for c in checks if c.name.startswith("icmp") or c.area == "overlay")
    lab.reconcile()                                           # kubelet starts it again
    assert not failed(probes.suite(lab, ["pods-across-nodes"]))


def test_probe_exit_codes(lab):
    run = lambda *a: subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", lab.name, "probe", *a],  # noqa: E731
                                    capture_output=True, text=True)
    ok = run("--area", "pod-matrix")
    assert ok.returncode == 0 and "pod reachability" in ok.stdout and "✗" not in ok.stdout
    b = lab.state().nodes[2]
    ns.run(lab.state().nodes[1].netns, ["ip", "route", "del", b.pod_cidr])
    bad = run("--area", "pod-matrix")
    assert bad.returncode == 1 and "✗" in bad.stdout and "look at" in bad.stdout
    assert run("--area", "nonsense").returncode == 2


def test_trace_of_a_cross_node_cluster_ip_flow(lab):
    from netlab.observe import trace
    state = lab.state()
    src = next(p for p in state.pods if p.owner == "Deployment/web" and p.node == state.nodes[1].name)
    for _ in range(20):                                       # until the DNAT picks another node's pod
        t = trace.trace(lab, f"default/{src.name}", "web:80")
        dnat = [c for c in t["conntrack"] if c["dnat"]]
        target = dnat[0]["to"].split(":")[0] if dnat else None
        dst = next((p for p in state.pods if p.ip == target), None)
        if dst is not None and dst.node != src.node:
            break
    else:
        pytest.fail("no cross-node DNAT in 20 traces")
    hit = [(r["node"], r["table"], r["chain"], r["rule"]) for r in t["rules"]]
    on_src = [h for h in hit if h[0] == src.node and h[1] == "nat"]
    assert any(c == "KUBE-SERVICES" and "default/web:http cluster IP" in r for _, _, c, r in on_src)
    assert any(c.startswith("KUBE-SVC-") and f"-> {target}:8080" in r for _, _, c, r in on_src)
    assert any(c.startswith("KUBE-SEP-") and f"--to-destination {target}:8080" in r for _, _, c, r in on_src)
    vxlan = [h for h in t["hops"] if h["where"] == "lan:br0" and h.get("vxlan")]
    src_node, dst_node = state.node(src.node), state.node(dst.node)
    assert any(h["src"] == src_node.ip and h["dst"] == dst_node.ip and h["dport"] == 8472 and h["vxlan"]["vni"] == 1
               and h["inner"]["src"] == src.ip and h["inner"]["dst"] == target for h in vxlan)
    assert any(h["src"] == dst_node.ip and h["inner"]["src"] == target for h in vxlan)      # the reply's way back
    assert t["answer"]["body"] == dst.name
    text = trace.render(t)
    assert "rules hit" in text and "VXLAN vni 1" in text


def test_trace_exits_1_when_the_flow_gets_no_answer_and_refuses_what_is_no_port(lab):
    run = lambda *a: subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", lab.name, "trace", *a],  # noqa: E731
                                    capture_output=True, text=True)
    state = lab.state()
    workers = (state.nodes[1].name, state.nodes[2].name)
    src, dst = (p for p in state.pods if p.owner == "Deployment/web" and p.node in workers)
    answered = run(src.key, f"{dst.key}:8080")
    assert answered.returncode == 0 and f"answer: {dst.name}" in answered.stdout, answered.stderr
    refused = run(src.key, f"{dst.ip}:8082")                  # nothing listens there: the pod's kernel answers RST
    assert refused.returncode == 1 and "rules hit" in refused.stdout
    assert refused.stderr == f"netlab: trace: the tcp flow to {dst.ip}:8082 got no answer " \
                             "(ConnectionRefusedError: [Errno 111] Connection refused)\n"
    for port in ("99999", "0"):
        bad = run(src.key, f"web:{port}")
        assert (bad.returncode, bad.stdout) == (1, "")
        assert bad.stderr == f"netlab: trace: port '{port}' is not a port number (1-65535)\n"


def test_the_diagram_renders_from_kernel_state(lab, tmp_path):
    source = graph.dot(lab)
    state = lab.state()
    assert source.count("vxlan vni 1") == 3                   # three nodes, three tunnels
    assert all(n.ip in source for n in state.nodes) and "default/web:http" in source
    for fmt, magic in (("svg", b"<svg"), ("png", b"\x89PNG")):
        graph.render(lab, tmp_path / f"lab.{fmt}")
        assert magic in (tmp_path / f"lab.{fmt}").read_bytes()[:400]


def test_capture_decodes_the_overlay(lab):
    state = lab.state()
    a, b = (p for p in state.pods if p.owner == "Deployment/web" and p.node in (state.nodes[1].name, state.nodes[2].name))
    proc = subprocess.Popen([sys.executable, "-m", "netlab.cli", "--lab", lab.name, "capture", "lan", "-c", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on br0" in wait_until_listening(proc)
        ping = lab.exec(f"default/{a.name}", ["ping", "-c", "1", "-W", "1", b.ip], capture_output=True)
        assert ping.returncode == 0
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "VXLAN" in out and "vni 1" in out and f"{a.ip} > {b.ip}: ICMP echo request" in out


def test_faults_break_what_they_should_and_clear(lab):
    from netlab.errors import EnvironmentProblem
    from netlab.observe.faults import netem_available
    state = lab.state()
    a, b = state.nodes[1], state.nodes[2]
    lab.fault("partition", [a.name, b.name])
    assert failed(probes.suite(lab, ["pod-matrix"])) == matrix_pairs_between(lab, a.name, b.name)
    assert not lab.reconcile().any()                          # a fault is state: reconcile keeps it
    lab.clear_faults()
    assert not failed(probes.suite(lab, ["pod-matrix"]))
    lab.fault("node-down", [a.name])
    cut = failed(probes.suite(lab, ["pod-matrix"]))
    others = [n.name for n in state.nodes if n.name != a.name]
    assert cut == matrix_pairs_between(lab, a.name, others[0]) | matrix_pairs_between(lab, a.name, others[1])
    lab.clear_faults()
    web = next(p for p in state.pods if p.owner == "Deployment/web" and p.node == b.name)
    lab.fault("link-down", [f"default/{web.name}"])
    assert any(web.name in name for name in failed(probes.suite(lab, ["pod-matrix"])))
    lab.clear_faults()
    assert not failed(probes.suite(lab, ["pod-matrix"]))
    if not netem_available():                  # a node's loss has a stand-in (iptables' statistic match), a pod's not
        with pytest.raises(EnvironmentProblem, match="no netem"):
            lab.fault("loss", [f"default/{web.name}", "10"])


def test_dns_and_egress_checks_fail_on_their_own(lab):
    state = lab.state()
    kill(state.processes["coredns"]["pid"])                   # every coredns pod's server
    checks = probes.suite(lab, ["dns", "pod-matrix"])
    assert failed(checks, "dns") and not failed(checks, "pod-matrix")
    lab.reconcile()
    assert not failed(probes.suite(lab, ["dns"]))
    egress = next(c for c in probes.suite(lab, ["egress"]))
    source = egress.name.split()[1]
    node = state.pod(*source.split("/")).node
    assert ns.run(node, ["iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG"]).returncode == 0   # no masquerade
    ns.run(node, ["conntrack", "-F"], capture_output=True)     # flows already NATed would keep their mapping
    checks = probes.suite(lab, ["egress", "pod-matrix"])
    assert failed(checks, "egress") and not failed(checks, "pod-matrix")
    assert "FLANNEL-POSTRTG" in next(c.hint for c in checks if not c.ok)
