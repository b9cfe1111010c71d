"""Faults that shape traffic and faults that end by themselves, on a real lab: a node's loss
(netem where the kernel has it, else iptables' statistic match on its LAN port) drops about
that share of what is sent to it; bandwidth (tbf) holds a TCP stream to the node at its rate;
a fault injected `--for` a while is cleared by the controller manager when it ends, its
rules and qdiscs gone, and the controller manager with it."""

import json
import subprocess

import pytest

from netlab.kernel import processes
from netlab.observe import faults

from .conftest import TOPOLOGIES, lab_for_module, wait_for


@pytest.fixture(scope="module")
def duo(tmp_path_factory):
    with lab_for_module(TOPOLOGIES / "two-nodes.yaml", tmp_path_factory) as lab:
        yield lab


def _lost(lab, ip, count=200):
    """The share of `count` pings from the external client to `ip` that got no answer."""
    out = subprocess.run(["ip", "netns", "exec", lab.state().external_netns(), "ping", "-q", "-c", str(count),
                          "-i", "0.005", "-W", "1", ip], capture_output=True, text=True, timeout=60).stdout
    return 1 - int(out.split(" received")[0].rsplit(" ", 1)[1]) / count


def _mbits(lab, node):
    """One TCP stream's rate from the external client to the node, Mbit/s (iperf3)."""
    server = subprocess.Popen(["ip", "netns", "exec", node.netns, "iperf3", "-s", "-1", "-B", node.ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: subprocess.run(["ip", "netns", "exec", node.netns, "ss", "-Htln", "sport = :5201"],
                                        capture_output=True, text=True).stdout.strip(), what="iperf3 listening")
        out = subprocess.run(["ip", "netns", "exec", lab.state().external_netns(), "iperf3", "-c", node.ip, "-t", "2",
                              "-J"], capture_output=True, text=True, timeout=60, check=True)
    finally:
        server.wait(timeout=30)
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6


def test_a_nodes_loss_drops_about_that_share_of_what_is_sent_to_it(duo):
    node = duo.state().nodes[1]
    duo.fault("loss", [node.name, "50"])
    try:
        fault, = duo.state().faults
        assert fault["by"] == ("netem" if faults.netem_available() else "statistic")
        assert 0.3 < _lost(duo, node.ip) < 0.7
    finally:
        duo.clear_faults()
    assert _lost(duo, node.ip, 50) == 0
    lan = subprocess.run(["ip", "netns", "exec", duo.state().lan_netns(), "iptables-save", "-t", "filter"],
                         capture_output=True, text=True).stdout
    assert "statistic" not in lan


def test_bandwidth_holds_a_stream_to_the_node_at_its_rate(duo):
    node = duo.state().nodes[1]
    free = _mbits(duo, node)
    duo.fault("bandwidth", [node.name, "10mbit"])
    try:
        assert 5 < _mbits(duo, node) < 12
        shown = subprocess.run(["tc", "-n", duo.state().lan_netns(), "qdisc", "show", "dev", "worker"],
                               capture_output=True, text=True).stdout
        assert " tbf " in shown and "rate 10Mbit" in shown
        assert not duo.reconcile().any()             # a fault is state, its qdisc read back and kept
    finally:
        duo.clear_faults()
    assert "tbf" not in subprocess.run(["tc", "-n", duo.state().lan_netns(), "qdisc", "show", "dev", "worker"],
                                       capture_output=True, text=True).stdout
    assert free > 50


def test_a_fault_for_a_while_clears_itself_and_the_controller_manager_goes_with_it(duo):
    node = duo.state().nodes[1]
    duo.fault("bandwidth", [node.name, "1mbit"], seconds=1.5)
    duo.fault("node-down", [node.name], seconds=1)
    rec = duo.state().processes["kube_controller_manager"]
    assert processes.alive(rec)
    assert {f["kind"] for f in duo.state().faults} == {"bandwidth", "node-down"}
    wait_for(lambda: not duo.state().faults, timeout=20, what="both faults' end")
    wait_for(lambda: not processes.alive(rec), timeout=10, what="the controller manager's exit")
    assert "tbf" not in subprocess.run(["tc", "-n", duo.state().lan_netns(), "qdisc", "show", "dev", "worker"],
                                       capture_output=True, text=True).stdout
    assert _lost(duo, node.ip, 20) == 0                  # its port is up again
    duo.reconcile()
    assert "kube_controller_manager" not in duo.state().processes
