"""Looking at a lab whose kube-proxy runs in nftables mode: `netlab nft NODE`, `netlab trace`
(through `nft monitor trace`, leaving nothing behind) and `netlab graph`, on one lab built
from topologies/services.yaml with `kubeProxyMode: nftables`."""

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from netlab.kernel import netns as ns
from netlab.observe import graph, trace

from .conftest import TOPOLOGIES, lab_for_module, wait_for


def hashed(prefix, base):
    """kube-proxy's chain names, as the reference gives them: the first 8 characters of the
    base32 of sha256(base), "-", base."""
    return prefix + base64.b32encode(hashlib.sha256(base.encode()).digest()).decode()[:8] + "-" + base


def nft_tables(netns):
    return subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "tables"],
                          capture_output=True, text=True, check=True).stdout.splitlines()


def root_tables():
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    source = (TOPOLOGIES / "services.yaml").read_text()
    assert "\nname: svc\n" in source
    labfile = tmp_path_factory.mktemp("nftables") / "services-nftables.yaml"
    labfile.write_text(source.replace("\nname: svc\n", "\nname: svc\nnetworking: {kubeProxyMode: nftables}\n", 1))
    before = root_tables()
    with lab_for_module(labfile, tmp_path_factory) as lab:
        assert lab.state().cluster.kube_proxy_mode == "nftables"
        yield lab
    assert root_tables() == before                     # the host's own ruleset: never touched


def netlab(lab, *argv):
    return subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", lab.name, *argv], capture_output=True, text=True)


def leftovers(lab):
    """What a trace could leave in a node: its table, its monitor."""
    found = []
    for node in lab.state().nodes:
        found += [f"{node.name}: {t}" for t in nft_tables(node.netns) if "netlab-trace" in t]
        for pid in ns.pids_inside(node.netns):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if Path(argv[0].decode()).name == "nft":
                found.append(f"{node.name}: process {pid} {b' '.join(argv).decode()}")
    return found


def test_netlab_nft_prints_what_nft_list_table_prints_in_the_node(lab):
    state = lab.state()
    for node in state.nodes:
        short = node.name.removeprefix(f"{lab.name}-")
        shown = netlab(lab, "nft", short)
        real = subprocess.run(["ip", "netns", "exec", node.netns, "nft", "list", "table", "ip", "kube-proxy"],
                              capture_output=True, text=True, check=True).stdout
        assert (shown.returncode, shown.stderr) == (0, "")
        assert shown.stdout == real
        assert f"chain {hashed('service-', 'default/web/tcp/http')} {{" in real
    unknown = netlab(lab, "nft", "nowhere")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr == (f"netlab: lab {lab.name}: no node named 'nowhere' "
                              f"(nodes: {', '.join(n.name for n in state.nodes)})\n")


def test_a_trace_to_a_cluster_ip_names_the_services_chains_and_the_endpoint_that_answered(lab):
    state = lab.state()
    client = state.pod("default", "client")
    web = state.service("default", "web")
    done = netlab(lab, "trace", "client", "web:80", "-o", "json")
    assert done.returncode == 0, done.stderr
    t = json.loads(done.stdout)
    answered = next(p for p in state.pods if p.name == t["answer"]["body"])
    assert answered.owner == "Deployment/web"
    service = hashed("service-", "default/web/tcp/http")
    endpoint = hashed("endpoint-", f"default/web/tcp/http__{answered.ip}/8080")
    hops = [(h["chain"], h["rule"], h["verdict"]) for h in t["rules"]
            if h["node"] == client.node and h["table"] == "ip kube-proxy"]
    path = [("nat-prerouting", "jump services", "jump services"),
            ("services", "ip daddr . meta l4proto . th dport vmap @service-ips", f"goto {service}"),
            (service, next(r for c, r, _ in hops if c == service and r.startswith("numgen")), f"goto {endpoint}"),
            (endpoint, f"meta l4proto tcp dnat to {answered.ip}:8080", "accept")]
    assert [h for h in hops if h in path] == path, hops        # each once, in this order
    numgen = path[2][1]
    assert numgen.startswith("numgen random mod 4 vmap {") and f"goto {endpoint}" in numgen
    # The kernel's conntrack agrees on the endpoint, and the ClusterIP was the packet's.
    assert any(c["node"] == client.node and c["orig_dst"] == f"{web.cluster_ip}:80"
               and c["to"] == f"{answered.ip}:8080" for c in t["conntrack"])
    # No node DNATs it twice: only the client's node has the service's chains in the trace.
    assert {h["node"] for h in t["rules"] if h.get("chain") == service} == {client.node}
    assert leftovers(lab) == []


def test_the_printed_trace_shows_the_nftables_path(lab):
    done = netlab(lab, "trace", "client", "nobody:80")               # no endpoints: kube-proxy rejects
    assert done.returncode == 1
    assert done.stderr == ("netlab: trace: the tcp flow to nobody:80 got no answer "
                           "(ConnectionRefusedError: [Errno 111] Connection refused)\n")
    text = done.stdout
    assert "ip kube-proxy rules matched, in order (nft monitor trace):" in text
    assert "service-endpoints-check: ip daddr . meta l4proto . th dport vmap @no-endpoint-services  " \
           "(verdict goto reject-chain)" in text
    assert leftovers(lab) == []


def test_a_trace_that_fails_midway_removes_its_tables_and_monitors(lab):
    def broken():
        raise RuntimeError("the probe worker died")

    with pytest.raises(RuntimeError, match="the probe worker died"):
        trace.trace(SimpleNamespace(state=lab.state, prober=broken), "client", "web:80")
    assert leftovers(lab) == []


KILLED_MIDWAY = """
import os, signal, sys
from netlab import Lab
from netlab.observe import trace
state = Lab.find(sys.argv[1]).state()
with trace.nft_tracing(state, trace.flow_matches(state, "10.96.0.1", 443, "tcp")):
    print(os.getpid(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_trace_killed_midway_leaves_no_monitor_and_the_next_trace_removes_its_tables(lab):
    killed = subprocess.run([sys.executable, "-c", KILLED_MIDWAY, lab.name], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    table = f"table ip netlab-trace-{killed.stdout.strip()}"
    nodes = lab.state().nodes
    assert all(table in nft_tables(n.netns) for n in nodes)            # no finally ran
    wait_for(lambda: not any("process" in f for f in leftovers(lab)), what="the monitors to end with the trace")
    with trace.nft_tracing(lab.state(), ["ip daddr 10.96.0.1 tcp dport 443"]):
        assert not any(table in nft_tables(n.netns) for n in nodes)
    assert leftovers(lab) == []


def test_the_diagram_draws_each_service_to_its_endpoints(lab, tmp_path):
    state = lab.state()
    source = graph.dot(lab)
    web = [p for p in state.pods if p.owner == "Deployment/web"]
    assert len(web) == 4
    for svc in ("default/web:http", "default/sticky", "default/web-nodeport:udp"):
        port = "8081" if svc.endswith(":udp") else "8080"
        for pod in web:
            assert f'"svc:{svc}" -> "{pod.netns}" [label="{port}", color=darkgreen];' in source
    client = state.pod("default", "client")
    assert f'"svc:default/client:http" -> "{client.netns}"' in source
    assert '"svc:default/nobody' not in source                          # no endpoints, no chains
    graph.render(lab, tmp_path / "lab.svg")
    assert b"<svg" in (tmp_path / "lab.svg").read_bytes()[:400]
