"""Nodes joining, leaving and coming back, names the lab keeps for itself, Pending pods, node
names in full or short, faults, cleanup of nothing: on one real two-node lab shared by the
module (each test leaves it as it found it)."""

import datetime
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netlab import cli, names
from netlab.api import events
from netlab.kernel import netns as ns

from .conftest import TOPOLOGIES, lab_for_module, unique_name


@pytest.fixture(scope="module")
def duo(tmp_path_factory):
    with lab_for_module(TOPOLOGIES / "two-nodes.yaml", tmp_path_factory) as lab:
        yield lab


TREE = Path(cli.__file__).resolve().parents[1]          # the netlab under test


def netlab(*argv):
    """The CLI as a person runs it: (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "netlab.cli", *argv], capture_output=True, text=True, cwd=TREE)
    return proc.returncode, proc.stdout, proc.stderr


def run(lab, *argv):
    return netlab("--lab", lab.name, *argv)


def lab_netns(lab):
    return sorted(n for n in ns.list_names() if n.startswith(lab.name + "-"))


def ping(lab, target, ip):
    """One echo request, one second to answer: reachable at once, or not."""
    return lab.exec(target, ["ping", "-n", "-c", "1", "-W", "1", ip], capture_output=True, text=True).returncode == 0


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def nodes_seen(lab):
    return [(n["metadata"]["name"], n["status"]["addresses"][0]["address"]) for n in lab.get("nodes")]


def pod_ip(lab, name):
    return lab.state().pod("default", name).ip


@pytest.mark.parametrize("name", ["lan", "external", "lb-x"])
def test_a_node_named_as_the_labs_own_machines_is_refused_and_changes_nothing(duo, name):
    before = (lab_netns(duo), nodes_seen(duo), (names.state_dir(duo.name) / "state.json").read_text())
    code, out, err = run(duo, "node", "add", name)
    assert code == 1 and out == ""
    assert err.startswith(f"netlab: node name {name!r} is the lab's own: ") and err.count("\n") == 1
    assert (lab_netns(duo), nodes_seen(duo), (names.state_dir(duo.name) / "state.json").read_text()) == before
    assert not duo.reconcile().any()                                   # nothing to repair
    lan = ns.run(duo.state().lan_netns(), ["ip", "-br", "link"], capture_output=True, text=True).stdout
    flags = {line.split()[0].split("@")[0]: line.split()[-1].strip("<>").split(",") for line in lan.splitlines()}
    assert sorted(flags) == ["br0", "control-plane", "external", "lo", "worker"]
    assert all("UP" in f and "LOWER_UP" in f for f in flags.values())     # the switch and every port up
    assert ping(duo, "a", pod_ip(duo, "b")) and ping(duo, "external", duo.state().node("worker").ip)


def test_a_node_added_again_under_its_name_is_reachable_at_once(duo):
    worker = duo.state().node(f"{duo.name}-worker")
    node = duo.add_node("worker5")
    assert ping(duo, worker.name, node.ip)                     # the worker now holds a neighbour entry for it
    duo.remove_node(node.name)
    again = duo.add_node("worker5")
    try:
        assert again.ip == node.ip
        assert ping(duo, worker.name, again.ip)                # at once: no 20 s wait for that entry to go stale
        # Because it kept its MAC: Docker's, made from its address.
        mac = ns.run(again.netns, ["ip", "-br", "link", "show", "eth0"], capture_output=True, text=True).stdout.split()[2]
        assert mac == "02:42:" + ":".join(f"{int(b):02x}" for b in again.ip.split("."))
        neigh = ns.run(worker.netns, ["ip", "neigh", "show", again.ip], capture_output=True, text=True).stdout
        assert f"lladdr {mac} " in neigh
    finally:
        duo.remove_node(again.name)


def test_a_node_that_joins_later_shows_its_own_creation_time(duo):
    start = now()
    node = duo.add_node("worker7")
    try:
        seen = next(n for n in duo.get("nodes") if n["metadata"]["name"] == node.name)["metadata"]["creationTimestamp"]
        assert start <= seen <= now() and duo.state().created < start
    finally:
        duo.remove_node(node.name)


def test_a_pod_no_node_takes_waits_pending_and_runs_once_one_joins(duo, tmp_path):
    lab, wanted = duo.name, f"{duo.name}-worker6"
    manifest = tmp_path / "waiting.yaml"
    manifest.write_text(textwrap.dedent(f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: waiting, labels: {{app: waiting}}}}
        spec:
          nodeSelector: {{kubernetes.io/hostname: {wanted}}}
          containers: [{{name: netexec, ports: [{{containerPort: 8080}}]}}]
    """))
    start = now()
    code, _, err = run(duo, "apply", "-f", str(manifest))
    assert code == 0, err
    try:
        # The reasons as FitError sorts them: as strings, so "1 node(s) didn't" before "1 node(s) had".
        message = ("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
                   "1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. "
                   "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
        code, out, _ = run(duo, "get", "pods", "-o", "wide")
        row = next(line.split() for line in out.splitlines() if line.startswith("waiting "))
        assert row[1:4] == ["0/1", "Pending", "0"] and row[5:7] == ["<none>", "<none>"]
        failed = [e for e in events.read(lab) if e["reason"] == "FailedScheduling" and e["object"] == "pod/waiting"]
        assert [(e["type"], e["source"], e["message"]) for e in failed] == [("Warning", "default-scheduler", message)]
        pod = duo.state().pod("default", "waiting")
        assert not ns.exists(pod.netns) and start <= pod.created
        with pytest.raises(Exception, match="is Pending, with no network namespace yet"):
            duo.netns_of("waiting")
        assert not duo.reconcile().any()

        node = duo.add_node("worker6")
        pod = duo.state().pod("default", "waiting")
        assert pod.node == node.name and pod.ip.startswith(node.pod_cidr.rsplit(".", 1)[0] + ".")
        assert ns.exists(pod.netns) and ping(duo, "a", pod.ip)
        assert any(e["reason"] == "Scheduled" and e["object"] == "pod/waiting" and e["source"] == "default-scheduler"
                   for e in events.read(lab))
    finally:
        duo.delete("pod", "default", "waiting")
        if duo.state().find_node("worker6"):
            duo.remove_node("worker6")


def test_nodes_are_named_in_full_or_without_the_labs_prefix_everywhere(duo):
    full = f"{duo.name}-worker"
    assert duo.netns_of("worker") == duo.netns_of(full) == full
    assert ":KUBE-SERVICES - [0:0]" in duo.iptables("worker", "nat")
    code, out, _ = run(duo, "exec", "worker", "--", "cat", "/proc/sys/net/ipv4/ip_forward")
    assert (code, out) == (0, "1\n")
    duo.fault("node-down", ["worker"])
    try:
        assert duo.state().faults == [{"kind": "node-down", "targets": [full]}]
        port = ns.run(duo.state().lan_netns(), ["ip", "-br", "link", "show", "worker"], capture_output=True, text=True)
        assert " DOWN " in port.stdout
        code, _, err = run(duo, "fault", "node-down", full)                      # the same fault, by its full name
        assert code == 1 and err == (f"netlab: fault node-down {full} is already injected "
                                     f"(`netlab fault clear node-down {full}` removes it)\n")
        code, _, err = run(duo, "fault", "partition", "worker", full)
        assert code == 1 and err == f"netlab: fault partition takes two different nodes, not {full} twice\n"
        assert duo.state().faults == [{"kind": "node-down", "targets": [full]}]
        with pytest.raises(Exception, match="^'extra' is not a fault"):
            duo.clear_faults(["extra"])
        assert len(duo.state().faults) == 1
    finally:
        cleared = duo.clear_faults(["node-down", "worker"])
    assert cleared == [{"kind": "node-down", "targets": [full]}] and duo.state().faults == []
    assert ping(duo, "external", duo.state().node("worker").ip)


def test_the_dns_addons_objects_are_kept_alike(duo):
    for target in ("deployment/coredns", "service/kube-dns"):
        code, _, err = run(duo, "delete", target, "-n", "kube-system")
        kind = target.split("/")[0].capitalize()
        assert (code, err) == (1, f"netlab: {kind} kube-system/{target.split('/')[1]} is managed by kubeadm's CoreDNS "
                                  "addon: deleting it breaks cluster DNS (netlab keeps it)\n")
    (coredns,) = duo.get("deployments", "kube-system")
    assert coredns["metadata"]["name"] == "coredns" and coredns["status"]["readyReplicas"] == 2


def test_cleanup_of_a_lab_that_never_existed_says_so_and_leaves_nothing():
    name = unique_name("never")
    assert netlab("cleanup", name) == (0, f"nothing of lab {name} to clean up\n", "")
    assert not names.state_dir(name).exists() and not (names.STATE_ROOT / ".locks" / name).exists()



def test_the_cli_gets_deployments_and_clears_one_fault(duo):
    code, out, _ = run(duo, "get", "deployments", "-A")
    assert code == 0 and out.splitlines()[0].split() == ["NAMESPACE", "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert any(line.split()[:2] == ["kube-system", "coredns"] for line in out.splitlines())
    worker = next(n.name for n in duo.state().nodes if n.role == "worker")
    assert run(duo, "fault", "node-down", worker)[0] == 0
    code, _, err = run(duo, "fault", "clear", "extra")
    assert code == 1 and err.count("\n") == 1
    assert [f["kind"] for f in duo.state().faults] == ["node-down"]
    code, out, _ = run(duo, "fault", "clear", "node-down", worker)
    assert (code, out.strip()) == (0, f"cleared node-down {worker}")
    assert duo.state().faults == []
