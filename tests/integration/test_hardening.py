"""Hardening on real labs: generated labs come up, two labs with the same addresses stay
apart, names never escape, and the lab's servers outlive garbage and floods."""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from netlab import Lab, names
from netlab.api import spec
from netlab.api.etcd import all_labs
from netlab.errors import NetlabError
from netlab.kernel import netns as ns
from netlab.observe import probes

from .conftest import TOPOLOGIES, leftovers, renamed, unique_name


@st.composite
def small_valid_lab(draw):
    workers = draw(st.integers(0, 2))
    docs = [{"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": unique_name("h"),
             "nodes": [{"role": "control-plane"}] + [{"role": "worker"}] * workers}]
    for i in range(draw(st.integers(1, 2))):
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"d{i}"},
                     "spec": {"replicas": draw(st.integers(1, 3)), "selector": {"matchLabels": {"app": f"d{i}"}},
                              "template": {"metadata": {"labels": {"app": f"d{i}"}},
                                           "spec": {"containers": [{"name": "c", "ports": [
                                               {"containerPort": 8080}, {"containerPort": 8081, "protocol": "UDP"}]}]}}}})
        if draw(st.booleans()):
            docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"},
                         "spec": {"type": draw(st.sampled_from(["ClusterIP", "NodePort"])), "selector": {"app": f"d{i}"},
                                  "ports": [{"port": 80, "targetPort": 8080}]}})
    return docs


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(small_valid_lab())
def test_generated_valid_labs_come_up_work_and_go(docs):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        lab_spec = spec.load(path)
        assume(lab_spec is not None)
        lab = Lab.up(path)
        try:
            checks = probes.suite(lab, ["pods-same-node", "pods-across-nodes", "services", "dns"])
            assert all(c.ok for c in checks), [c.name for c in checks if not c.ok]
        finally:
            lab.down()
        assert leftovers(lab.name) == []


def test_two_labs_with_the_same_addresses_stay_apart(tmp_path):
    a_name, b_name = unique_name("p"), unique_name("q")
    a = Lab.up(renamed(TOPOLOGIES / "two-nodes.yaml", a_name, tmp_path))
    b = Lab.up(renamed(TOPOLOGIES / "two-nodes.yaml", b_name, tmp_path))
    try:
        assert [p.ip for p in a.state().pods if p.namespace == "default"] == \
            [p.ip for p in b.state().pods if p.namespace == "default"]          # the very same addresses
        with a.prober() as prober:
            with prober.capture("lan", names.LAN_BRIDGE, "icmp or udp port 8472") as cap:
                pa, pb = (p for p in b.state().pods if p.namespace == "default")
                out = b.exec(f"default/{pa.name}", ["ping", "-c", "3", "-i", "0.2", "-W", "1", pb.ip], capture_output=True)
                assert out.returncode == 0
            assert cap.packets == []                      # nothing of lab b on lab a's LAN
        a.down()
        assert leftovers(a_name) == []
        assert all(c.ok for c in probes.suite(b, ["pods-across-nodes"]))          # b carries on alone
    finally:
        for lab in (a, b):
            if lab.name in all_labs():
                lab.down()
    assert leftovers(b_name) == []


def test_names_never_escape_into_paths_or_kernel_names(tmp_path):
    for bad in ("../etc", "a/b", "..", "A", "x" * 33, ""):
        with pytest.raises(NetlabError):
            Lab(bad)
    out = subprocess.run([sys.executable, "-m", "netlab.cli", "cleanup", "../../tmp"], capture_output=True, text=True)
    assert out.returncode == 1 and "not a lab name" in out.stderr and Path("/tmp").is_dir()
    base = unique_name("n")
    lab = Lab.up(renamed(TOPOLOGIES / "two-nodes.yaml", base, tmp_path))
    try:
        with pytest.raises(NetlabError, match="share"):          # base-x's namespaces would look like base's
            Lab.up(renamed(TOPOLOGIES / "two-nodes.yaml", f"{base}-x", tmp_path))
        assert not names.state_dir(f"{base}-x").exists()        # a refusal leaves nothing, not even a lock
        long_name = "w" + "x" * 40
        node = lab.add_node(long_name)
        port = names.lan_port(lab.name, node.name)
        assert len(port) <= 15
        links = ns.run(lab.state().lan_netns(), ["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert all(len(l.split(": ")[1].split("@")[0]) <= 15 for l in links.splitlines())
        assert f" {port}@" in links
        kernel_names = [p.netns for p in lab.state().pods] + [n.netns for n in lab.state().nodes]
        assert len(kernel_names) == len(set(kernel_names))
    finally:
        lab.down()
    assert leftovers(base) == []


FLOOD = textwrap.dedent("""
    import os, random, socket, sys
    rng = random.Random(2)
    for host, port in [(a.split(":")[0], int(a.split(":")[1])) for a in sys.argv[1:]]:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(3000):
            udp.sendto(os.urandom(rng.randrange(0, 1400)), (host, port))
        for _ in range(150):
            try:
                t = socket.create_connection((host, port), timeout=1)
                t.sendall(rng.choice([os.urandom(rng.randrange(1, 3000)), b"GET " + b"/" * 9000 + b" HTTP/1.1\\r\\n\\r\\n",
                                      b"\\r\\n\\r\\n", b"POST / HTTP/1.1\\r\\nContent-Length: 99999\\r\\n\\r\\nx"]))
                t.close()
            except OSError:
                pass
    print("flooded")
""")


def test_the_servers_outlive_garbage_and_floods(make_lab):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    state = lab.state()
    web = next(p for p in state.pods if p.owner == "Deployment/web")
    dns = next(p for p in state.pods if p.namespace == "kube-system")
    node = state.nodes[1]
    targets = [f"{web.ip}:8080", f"{web.ip}:8081", f"{dns.ip}:53", f"{dns.ip}:9153", f"{node.ip}:10256",
               f"{state.service('default', 'web').cluster_ip}:80"]
    before = {k: dict(v) for k, v in state.processes.items()}
    out = lab.exec("client", [sys.executable, "-c", FLOOD, *targets], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "flooded", out.stderr
    from netlab.node.kubelet import alive
    assert all(alive(rec) for rec in before.values())
    checks = probes.suite(lab, ["pods-across-nodes", "services", "dns", "pod-to-node"])
    assert all(c.ok for c in checks), [f"{c.name}: {c.observed}" for c in checks if not c.ok]


def test_a_dying_probe_never_hurts_the_lab(make_lab):
    lab = make_lab(TOPOLOGIES / "two-nodes.yaml")
    with lab.prober() as prober:
        prober.start("a")
        worker = prober.workers[lab.netns_of("a")]
        worker.ready()
        os.kill(worker.proc.pid, 9)
        worker.proc.wait()                    # reaped: it is gone, with its sockets
    checks = probes.suite(lab, ["pods-across-nodes"])
    assert checks and all(c.ok for c in checks)
    assert not lab.reconcile().any()
