"""Bring up real labs, probe every path, and check the kernel holds what the real agents write."""

import json
import subprocess
import sys

import pytest

from netlab import names, plan
from netlab.kernel import netns as ns
from netlab.kernel.iptables_restore import RestoreApplier
from netlab.kernel.netlink import apply_all
from netlab.observe import probes

from .conftest import TOPOLOGIES, lab_for_module, leftovers


def sh(lab, target, cmd):
    return lab.exec(target, ["sh", "-c", cmd], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def default_lab(tmp_path_factory):
    """The default lab, built once for the module; the root namespace is compared around it."""
    with lab_for_module(TOPOLOGIES / "default.yaml", tmp_path_factory) as lab:
        yield lab


def test_every_ground_floor_probe_passes(default_lab):
    checks = probes.suite(default_lab)
    failed = [c for c in checks if not c.ok]
    assert not failed, "\n".join(f"{c.name}: expected {c.expected}, saw {c.observed}" for c in failed)
    areas = {c.area for c in checks}
    assert areas == {"pods-same-node", "pods-across-nodes", "node-to-pod", "overlay", "egress", "services", "dns", "pod-matrix", "pod-to-node"}
    names_ = " ".join(c.name for c in checks)
    for kind in ("icmp", "tcp", "udp", "vxlan encapsulation", "mtu 1450", "mtu 1451"):
        assert kind in names_


def test_flannel_device_is_laid_out_as_flannel_does(default_lab):
    state = default_lab.state()
    worker = state.node(f"{state.lab}-worker")
    details = sh(default_lab, worker.name, "ip -d link show flannel.1")
    for fact in ("mtu 1450", "vxlan id 1", f"local {worker.ip}", "dev eth0", "dstport 8472", "nolearning",
                 f"link/ether {worker.vtep_mac}"):
        assert fact in details
    assert "inet 10.244.1.0/32" in sh(default_lab, worker.name, "ip -4 addr show flannel.1")
    fdb = sh(default_lab, worker.name, "bridge fdb show dev flannel.1")
    neigh = sh(default_lab, worker.name, "ip neigh show dev flannel.1")
    routes = sh(default_lab, worker.name, "ip route")
    for other in state.nodes:
        if other.name == worker.name:
            continue
        vtep = other.pod_cidr.replace(".0/24", ".0")
        assert f"{other.vtep_mac} dst {other.ip} self permanent" in fdb
        assert f"{vtep} lladdr {other.vtep_mac} PERMANENT" in neigh
        assert f"{other.pod_cidr} via {vtep} dev flannel.1 onlink" in routes
    assert len(fdb.strip().splitlines()) == len(state.nodes) - 1


def test_cni_bridge_and_pod_veths(default_lab):
    state = default_lab.state()
    node = state.node(f"{state.lab}-worker2")
    assert "inet 10.244.2.1/24" in sh(default_lab, node.name, "ip -4 addr show cni0")
    assert "mtu 1450" in sh(default_lab, node.name, "ip link show cni0")
    for pod in state.pods_on(node.name):
        port = sh(default_lab, node.name, f"ip -d link show {pod.host_veth}")
        assert "master cni0" in port and "hairpin on" in port and "mtu 1450" in port
        inside = sh(default_lab, f"{pod.namespace}/{pod.name}", "ip -4 addr show eth0; ip route")
        assert f"inet {pod.ip}/24" in inside
        assert "default via 10.244.2.1 dev eth0" in inside and "10.244.0.0/16 via 10.244.2.1 dev eth0" in inside
        assert ns.read_sysctl(pod.netns, "net/ipv4/conf/eth0/arp_notify") == "1"
    for key in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
        assert ns.read_sysctl(node.name, key) == "1"


def test_host_local_records_and_subnet_env(default_lab):
    state = default_lab.state()
    node = state.node(f"{state.lab}-worker")
    root = names.node_dir(state.lab, node.name)
    env = (root / "run/flannel/subnet.env").read_text()
    assert "FLANNEL_SUBNET=10.244.1.1/24" in env and "FLANNEL_MTU=1450" in env
    records = root / "var/lib/cni/networks/cbr0"
    for pod in state.pods_on(node.name):
        assert (records / pod.ip).read_bytes() == f"{pod.container_id}\r\neth0".encode()
    assert (records / "last_reserved_ip.0").read_text() == state.ipam[node.name].last_reserved


def test_iptables_shows_flannel_rules_without_warnings(default_lab):
    state = default_lab.state()
    node = state.nodes[0]
    out = default_lab.exec(node.name, ["iptables", "-t", "nat", "-S"], capture_output=True, text=True)
    assert out.stderr == ""
    assert '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG' in out.stdout


def test_a_second_apply_changes_nothing(default_lab):
    state = default_lab.state()
    plans = plan.lab_plans(state)
    applier = apply_all(plans)
    assert applier.writes == 0, applier.log
    iptables = RestoreApplier()
    for p in plans:
        if p.iptables:
            iptables.apply(p.netns, p.iptables)
    assert iptables.writes == 0, iptables.log


def test_cli_get_json_shapes(default_lab):
    run = lambda *a: subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", default_lab.name, *a],  # noqa: E731
                                    capture_output=True, text=True, check=True).stdout
    pods = json.loads(run("get", "pods", "-A", "-o", "json"))
    assert pods["kind"] == "List" and len(pods["items"]) == 5 + 2          # the workloads and kubeadm's coredns
    assert [p["metadata"]["namespace"] for p in pods["items"]].count("kube-system") == 2
    p = pods["items"][0]
    assert p["status"]["podIP"] and p["spec"]["nodeName"] and p["status"]["phase"] == "Running"
    assert {"type": "Ready", "status": "True"} in p["status"]["conditions"]
    assert p["metadata"]["annotations"]["netlab.io/netns"].startswith(default_lab.name + "-")
    nodes = json.loads(run("get", "nodes", "-o", "json"))["items"]
    assert [n["spec"]["podCIDR"] for n in nodes] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    assert nodes[1]["status"]["addresses"][0] == {"type": "InternalIP", "address": "172.18.0.3"}
    assert "flannel.alpha.coreos.com/backend-data" in nodes[1]["metadata"]["annotations"]
    table = run("get", "pods", "-o", "wide")
    assert table.splitlines()[0].split()[:6] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]


def test_two_node_lab(make_lab):
    lab = make_lab(TOPOLOGIES / "two-nodes.yaml")
    checks = probes.suite(lab)
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert any(c.area == "pods-across-nodes" for c in checks)
    lab.down()
    assert leftovers(lab.name) == []
    assert not names.state_dir(lab.name).exists()
