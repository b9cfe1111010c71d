"""A dual-stack lab seen by trace and graph: a flow to a Service's IPv6 ClusterIP is traced
through ip6tables' counters (kube-proxy's IPv6 proxier's KUBE-SVC and KUBE-SEP chains, the DNAT
to [pod IPv6]:port), and the diagram shows every pod's two addresses."""

import json
import subprocess
import sys

import pytest

from .conftest import TOPOLOGIES, lab_for_module


def netlab(*argv):
    return subprocess.run([sys.executable, "-m", "netlab.cli", *argv], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_for_module(TOPOLOGIES / "dual-stack.yaml", tmp_path_factory) as lab:
        yield lab


def test_a_flow_to_an_ipv6_cluster_ip_is_traced_through_ip6tables(lab):
    state = lab.state()
    web = state.service("default", "web")
    v6 = web.cluster_ip_of("IPv6")
    assert v6 is not None, "topologies/dual-stack.yaml's web Service is PreferDualStack"
    r = netlab("--lab", lab.name, "trace", "default/client", f"[{v6}]:80", "-o", "json")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    client = state.pod("default", "client")
    assert (t["family"], t["src_ip"], t["dst_ip"]) == ("IPv6", client.ip6, v6)
    backends = {p.ip6 for p in state.pods if p.labels.get("app") == "web"}
    nat = [h for h in t["rules"] if h["table"] == "nat"]
    # kube-proxy's layout in ip6tables: KUBE-SERVICES -d <v6>/128 jumps to KUBE-SVC-, which
    # picks a KUBE-SEP- that DNATs to [fd00:10:244:N::M]:8080.
    assert any(h["chain"] == "KUBE-SERVICES" and f"-d {v6}/128" in h["rule"] for h in nat), nat
    dnat = [h for h in nat if h["chain"].startswith("KUBE-SEP-") and "DNAT" in h["rule"]]
    assert len(dnat) == 1 and any(f"--to-destination [{ip}]:8080" in dnat[0]["rule"] for ip in backends), dnat
    assert t["answer"]["body"] in {p.name for p in state.pods if p.labels.get("app") == "web"}


def test_the_graph_shows_both_families(lab, tmp_path):
    out = tmp_path / "lab.dot"
    r = netlab("--lab", lab.name, "graph", "-o", str(out))
    assert r.returncode == 0, r.stderr
    dot = out.read_text()
    for pod in lab.state().pods:
        assert f"{pod.ip}/24, {pod.ip6}/64" in dot, pod.key
    assert "flannel-v6.1" in dot
