"""A wrong lab file: one clear sentence naming file, object and field, exit 1, nothing created."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netlab import Lab, names
from netlab.api.etcd import all_labs
from netlab.kernel import netns as ns
from netlab.kernel.iptables_restore import RestoreApplier

from .conftest import leftovers, root_snapshot, unique_name

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hardening"))
from common import leftovers as everything_of  # noqa: E402  (netns, /etc/netns, state, lock, processes)


def nothing_of(name):
    """Nothing of the lab anywhere: the check the tests below end with."""
    return everything_of(name) + [str(p) for p in [names.STATE_ROOT / ".locks" / name] if p.exists()]

CLUSTER = """kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: {name}
nodes: [{{role: control-plane}}, {{role: worker}}]
"""
POD = """---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec: {{{spec}containers: [{{name: c, ports: [{{containerPort: {port}}}]}}]}}
"""

CASES = {
    "yaml syntax": ("nodes: [\n", "invalid YAML", "line"),
    "unknown node": (POD.format(pod="p", spec="nodeName: nowhere, ", port=80), "spec.nodeName", "Pod default/p"),
    "overlapping cidrs": ("networking: {podSubnet: 10.96.0.0/16}\n", "networking.serviceSubnet", "Cluster"),
    "duplicate names": (POD.format(pod="p", spec="", port=80) * 2, "metadata.name", "Pod default/p"),
    "invalid manifest field": (POD.format(pod="p", spec="", port="http"),
                               "spec.containers[0].ports[0].containerPort", "Pod default/p"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_lab_file(tmp_path, case):
    name = unique_name()
    extra, field, obj = CASES[case]
    f = tmp_path / "bad.yaml"
    f.write_text(CLUSTER.format(name=name) + extra)
    out = subprocess.run([sys.executable, "-m", "netlab.cli", "up", str(f)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    message = out.stderr.strip()
    assert message.count("\n") == 0, message
    assert str(f) in message and field in message and obj in message
    assert name not in all_labs() and nothing_of(name) == []


def test_a_failure_half_way_leaves_nothing(tmp_path, monkeypatch):
    """An error after namespaces and links exist: the lab is removed, the host unchanged."""
    name = unique_name()
    f = tmp_path / "lab.yaml"
    f.write_text(CLUSTER.format(name=name) + POD.format(pod="p", spec="", port=80))
    before = root_snapshot()

    def broken(self, netns, tables, fresh=False):
        raise RuntimeError("iptables went away")

    monkeypatch.setattr(RestoreApplier, "apply", broken)
    with pytest.raises(RuntimeError, match="iptables went away"):
        Lab.up(f)
    assert leftovers(name) == [] and name not in all_labs()
    assert nothing_of(name) == []
    assert root_snapshot() == before


def test_the_leftover_check_sees_what_a_lab_leaves():
    """nothing_of() must be able to fail: a lab directory and a resolver file are found."""
    name = unique_name()
    (names.state_dir(name)).mkdir(parents=True)
    (names.NETNS_ETC / f"{name}-default.p").mkdir(parents=True)
    try:
        found = nothing_of(name)
        assert any(x.startswith("state ") for x in found) and any(x.startswith("/etc/netns/") for x in found)
    finally:
        names.state_dir(name).rmdir()
        (names.NETNS_ETC / f"{name}-default.p").rmdir()
    assert nothing_of(name) == []


def test_pod_command_runs_inside_the_pod_and_ends_with_the_lab(make_lab, tmp_path):
    manifests = tmp_path / "m.yaml"
    manifests.write_text(textwrap.dedent("""
        apiVersion: v1
        kind: Pod
        metadata: {name: sleeper}
        spec: {containers: [{name: c, command: [sleep, "3600"]}]}
    """))
    from .conftest import TOPOLOGIES
    lab = make_lab(TOPOLOGIES / "two-nodes.yaml", [manifests])
    pod = lab.state().pod("default", "sleeper")
    pid = pod.pids[0]["pid"]
    assert pid in ns.pids_inside(pod.netns)
    lab.down()
    with pytest.raises(FileNotFoundError):
        open(f"/proc/{pid}/stat").read()


def test_cleanup_without_a_record_removes_namespaces_and_pod_processes(make_lab):
    """A crash can lose the record (or come before a pid is written): the prefix still finds it all."""
    from .conftest import TOPOLOGIES
    lab = make_lab(TOPOLOGIES / "two-nodes.yaml")
    pod = lab.state().pod("default", "a")
    stray = subprocess.Popen(["ip", "netns", "exec", pod.netns, "sleep", "3600"], start_new_session=True)
    lab.store.remove()                                   # the record is gone, as after a crash
    assert Lab.cleanup(lab.name) == [lab.name]
    assert leftovers(lab.name) == []
    stray.wait(timeout=10)             # sleep 3600 ended: killed with its pod (cleanup reaped its status)
