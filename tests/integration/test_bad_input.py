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


# Issue 23: what kind and the API server refuse, and what a lab cannot run, is refused by
# `netlab up` too: one sentence naming file, object and field, exit 1, nothing left behind.
# "alone": the file is the lab file without a Cluster; "-f": the extra bytes are a manifest
# given with -f next to a good lab file.
SVC = ("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: {ns}}}\n"
       "spec: {{ports: [{{port: 443}}]}}\n")
CONTAINERS = "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n{containers}"
LAB_DOC = "---\napiVersion: netlab.io/v1alpha1\nkind: Lab\nlan: {{cidr: {cidr}}}\n"
STRICT_CASES = {
    "misspelt networking field": ("networking: {podSubnt: 10.1.0.0/16}\n", None,
                                  "Cluster: networking.podSubnt: unknown field, not in kind's v1alpha4 Cluster"),
    "unknown node field": ("__NODES__", None, "Cluster: nodes[1].bogusField: unknown field"),
    "duplicate cluster name": ("name: __NAME__\n", None,
                               "Cluster: name: duplicate key 'name' at line 5 (first at line 3)"),
    "duplicate key in a pod": (POD.format(pod="p", spec="", port=80).replace("metadata: {name: p}",
                                                                          "metadata: {name: p, name: q}"),
                               None, "metadata.name: duplicate key 'name' at line"),
    "empty lab file": ("", "alone", "the lab file is empty"),
    "manifests as the lab file": (POD.format(pod="p", spec="", port=80), "alone",
                                  "holds manifests (Pod) but no kind Cluster document: to add them to the default lab "
                                  "run `netlab up -f "),
    "lab file not utf-8": (b"# caf\xe9\n", None, "not UTF-8 text (byte 0xe9"),
    "manifest not utf-8": (b"\xff\xfek\x00i\x00n\x00d\x00", "-f", "not UTF-8 text (byte 0xff at offset 0)"),
    "loopback lan": (LAB_DOC.format(cidr="127.0.0.0/8"), None, "Lab: lan.cidr: 127.0.0.0/8 is IPv4's loopback range"),
    "multicast lan": (LAB_DOC.format(cidr="224.0.0.0/24"), None, "Lab: lan.cidr: 224.0.0.0/24 lies in 224.0.0.0/4"),
    "loopback pods": ("networking: {podSubnet: 127.0.0.0/16}\n", None,
                      "Cluster: networking.podSubnet: 127.0.0.0/16 lies in 127.0.0.0/8"),
    "multicast services": ("networking: {serviceSubnet: 224.0.0.0/12}\n", None,
                           "Cluster: networking.serviceSubnet: 224.0.0.0/12 lies in 224.0.0.0/4"),
    # kind's validateSubnets: a pair needs ipFamily: dual, an IPv6 CIDR ipFamily: dual or ipv6
    "dual-stack pods": ("networking: {podSubnet: '10.244.0.0/16,fd00:10:244::/56'}\n", None,
                        "Cluster: networking.podSubnet: '10.244.0.0/16,fd00:10:244::/56': only one CIDR allowed "
                        "for single-stack networking"),
    "ipv6 pods": ("networking: {podSubnet: 'fd00:10:244::/56'}\n", None,
                  "Cluster: networking.podSubnet: 'fd00:10:244::/56': expected IPv4 CIDR for IPv4 family"),
    "service default/kubernetes": (SVC.format(svc="kubernetes", ns="default"), None,
                                   "Service default/kubernetes: metadata.name: the Service default/kubernetes is "
                                   "managed by the API server"),
    "service kube-system/kube-dns": (SVC.format(svc="kube-dns", ns="kube-system"), None,
                                     "Service kube-system/kube-dns: metadata.name: the Service kube-system/kube-dns is "
                                     "managed by kubeadm's CoreDNS addon"),
    "pod netns name too long": (POD.format(pod="a" * 250, spec="", port=80), None,
                                "metadata.name: too long for this lab: the pod's network namespace"),
    "two containers on one port": (
        CONTAINERS.format(containers="    - {name: a, ports: [{containerPort: 8080}]}\n"
                                     "    - {name: b, ports: [{containerPort: 8080}]}\n"), None,
        "Pod default/p: spec.containers[1].ports[0].containerPort: 8080 is already the containerPort of container a "
        "in this pod (on a node the second would fail to bind)"),
    "host port": (CONTAINERS.format(containers="    - {name: a, ports: [{containerPort: 8080, hostPort: 80}]}\n"),
                  None, "Pod default/p: spec.containers[0].ports[0].hostPort: 80: netlab's CNI chain (bridge, "
                  "host-local) has no portmap plugin"),
    "ingress ip host": ("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules:\n"
                        "    - host: 1.2.3.4\n      http: {paths: [{path: /, pathType: Prefix, backend: {service: "
                        "{name: s, port: {number: 80}}}}]}\n", None,
                        "Ingress default/i: spec.rules[0].host: '1.2.3.4' must be a DNS name, not an IP address"),
}


@pytest.mark.parametrize("case", STRICT_CASES)
def test_strict_lab_file_refusals(tmp_path, case):
    name = unique_name()
    extra, mode, expected = STRICT_CASES[case]
    cluster = CLUSTER.format(name=name)
    if extra == "__NODES__":
        extra, cluster = "", cluster.replace("{role: worker}", "{role: worker, bogusField: 1}")
    if isinstance(extra, str):
        extra = extra.replace("__NAME__", name).encode()
    labfile, args = tmp_path / "lab.yaml", []
    if mode == "alone":
        labfile.write_bytes(extra)
        bad = labfile
    elif mode == "-f":
        labfile.write_text(cluster)
        bad = tmp_path / "manifest.yaml"
        bad.write_bytes(extra)
        args = ["-f", str(bad)]
    else:
        labfile.write_bytes(cluster.encode() + extra)
        bad = labfile
    labs_before, kind_before = set(all_labs()), nothing_of("kind")
    out = subprocess.run([sys.executable, "-m", "netlab.cli", "up", str(labfile), *args],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    message = out.stderr.strip()
    assert message.count("\n") == 0, message
    assert message.startswith(f"netlab: {bad}: ") and expected in message, message
    assert name not in all_labs() and nothing_of(name) == []
    assert "kind" not in set(all_labs()) - labs_before and nothing_of("kind") == kind_before   # no default lab instead
