"""flannel's backends in the kernel, each laid out as flanneld lays it out: host-gw (no device,
`<podCIDR> via <node IP> dev eth0`, MTU 1500, backend-data null), vxlan with DirectRouting on
the lab's one segment (flannel.<VNI> kept, plain routes, no FDB entry), and vxlan on its own
VNI and port from kube-flannel-cfg pasted as kube-flannel.yml ships it. In each: the probe
suite (pod matrix, services, DNS, the overlay's own packet and MTU) passes."""

import json
import re
import subprocess

import pytest

from netlab import names
from netlab import lab as lab_module
from netlab.observe import probes

from .conftest import lab_for_module
from .test_observe import vxlan_capture

CLUSTER = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: {name}
nodes: [{{role: control-plane}}, {{role: worker}}, {{role: worker}}]
networking: {{ipFamily: {family}}}
"""
WORKLOAD = """---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: netexec
          image: registry.k8s.io/e2e-test-images/agnhost:2.53
          args: ["netexec", "--http-port=8080", "--udp-port=8081"]
          ports: [{name: http, containerPort: 8080}, {name: udp, containerPort: 8081, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}, {name: udp, port: 8081, protocol: UDP, targetPort: udp}]
"""
HOST_GW = CLUSTER.format(name="hgw", family="dual") + """---
apiVersion: netlab.io/v1alpha1
kind: Lab
flannel: {backend: {Type: host-gw}}
""" + WORKLOAD
DIRECT = CLUSTER.format(name="drt", family="ipv4") + """---
apiVersion: netlab.io/v1alpha1
kind: Lab
flannel: {backend: {Type: vxlan, DirectRouting: true}}
""" + WORKLOAD.replace("  ipFamilyPolicy: PreferDualStack\n", "")
# kube-flannel.yml's ConfigMap, pasted as is but for its Backend
VNI_PORT = CLUSTER.format(name="vni", family="ipv4") + """---
kind: ConfigMap
apiVersion: v1
metadata:
  name: kube-flannel-cfg
  namespace: kube-flannel
  labels: {tier: node, k8s-app: flannel, app: flannel}
data:
  cni-conf.json: |
    {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [{"type": "flannel", "delegate": {"hairpinMode": true,
     "isDefaultGateway": true}}, {"type": "portmap", "capabilities": {"portMappings": true}}]}
  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "EnableNFTables": false,
      "Backend": {
        "Type": "vxlan",
        "VNI": 4096,
        "Port": 4789
      }
    }
""" + WORKLOAD.replace("  ipFamilyPolicy: PreferDualStack\n", "")


# A routed LAN: worker2 on a second Docker network, behind the LAN namespace's router.
SEGMENTS = CLUSTER.format(name="seg", family="dual") + """---
apiVersion: netlab.io/v1alpha1
kind: Lab
lan:
  segments:
    - {cidr: 172.19.0.0/16, ipv6Cidr: "fc00:f853:ccd:e794::/64", nodes: [worker2]}
flannel: {backend: {Type: vxlan, DirectRouting: true}}
""" + WORKLOAD


def _lab(text, tmp_path_factory, name):
    path = tmp_path_factory.mktemp(name) / f"{name}.yaml"
    path.write_text(text)
    return lab_for_module(path, tmp_path_factory)


@pytest.fixture(scope="module")
def host_gw(tmp_path_factory):
    with _lab(HOST_GW, tmp_path_factory, "hgw") as lab:
        yield lab


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    with _lab(DIRECT, tmp_path_factory, "drt") as lab:
        yield lab


@pytest.fixture(scope="module")
def segments(tmp_path_factory):
    with _lab(SEGMENTS, tmp_path_factory, "seg") as lab:
        yield lab


@pytest.fixture(scope="module")
def vni_port(tmp_path_factory):
    with _lab(VNI_PORT, tmp_path_factory, "vni") as lab:
        yield lab


def _in(netns, argv):
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=30)


def _routes(netns, six=False):
    """The node's routes to the pod network (flanneld's), as `ip route` prints their first words."""
    out = _in(netns, ["ip", *(["-6"] if six else []), "route", "show", "proto", "boot"]).stdout
    return sorted(" ".join(line.split()[:5]) for line in out.splitlines() if not line.startswith("default"))


def _node_annotations(lab, node):
    obj = next(o for o in lab_module.objects(lab.state(), "nodes") if o["metadata"]["name"] == node.name)
    return obj["metadata"]["annotations"]


def _probe_passes(lab):
    checks = probes.suite(lab)
    assert [(c.name, c.observed) for c in checks if c.ok is False] == []
    return [c for c in checks if c.ok and not c.skipped]


# --- host-gw ----------------------------------------------------------------------------------

def test_host_gw_routes_each_subnet_via_its_nodes_address(host_gw):
    state = host_gw.state()
    node = state.node(f"{state.lab}-worker")
    others = [n for n in state.nodes if n is not node]
    assert _routes(node.netns) == sorted(f"{n.pod_cidr} via {n.ip} dev eth0" for n in others)
    assert _routes(node.netns, six=True) == sorted(f"{n.pod_cidr6} via {n.ip6} dev eth0" for n in others)
    links = _in(node.netns, ["ip", "-o", "link"]).stdout
    assert "flannel" not in links and "vxlan" not in links
    assert re.search(r" cni0: .* mtu 1500 ", links)
    env = (names.node_dir(state.lab, node.name) / "run" / "flannel" / "subnet.env").read_text()
    assert "FLANNEL_MTU=1500\n" in env
    ann = _node_annotations(host_gw, node)
    assert (ann["flannel.alpha.coreos.com/backend-type"], ann["flannel.alpha.coreos.com/backend-data"],
            ann["flannel.alpha.coreos.com/backend-v6-data"]) == ("host-gw", "null", "null")
    cm = next(o for o in lab_module.objects(state, "configmaps") if o["metadata"]["name"] == "kube-flannel-cfg")
    assert json.loads(cm["data"]["net-conf.json"])["Backend"] == {"Type": "host-gw"}


def test_host_gw_passes_the_probe_with_plain_routing_at_1500(host_gw):
    ran = _probe_passes(host_gw)
    overlay = [c.name.split(" DF ")[0].split(" [")[0] for c in ran if c.area == "overlay"]
    assert overlay == ["plain routing " + overlay[0].split("plain routing ")[1], "mtu 1500", "mtu 1501"] * 2
    assert {c.area for c in ran} >= {"pod-matrix", "services", "dns", "overlay", "node-to-pod"}


# --- vxlan with DirectRouting on one segment ------------------------------------------------

def test_direct_routing_keeps_flannel_1_and_routes_every_node_plainly(direct):
    state = direct.state()
    node = state.node(f"{state.lab}-worker2")
    others = [n for n in state.nodes if n is not node]
    assert _routes(node.netns) == sorted(f"{n.pod_cidr} via {n.ip} dev eth0" for n in others)
    assert " mtu 1450 " in _in(node.netns, ["ip", "-o", "link", "show", "flannel.1"]).stdout
    assert _in(node.netns, ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout.strip() == ""
    assert "PERMANENT" not in _in(node.netns, ["ip", "neigh", "show", "dev", "flannel.1"]).stdout
    ran = _probe_passes(direct)
    assert [c.name.split()[0] for c in ran if c.area == "overlay"] == ["plain", "mtu", "mtu"]
    assert any(c.name.startswith("mtu 1450 DF") for c in ran)


# --- DirectRouting on a routed LAN: plain inside a segment, VXLAN across it --------------------

def test_direct_routing_tunnels_only_to_the_node_behind_the_router(segments):
    state = segments.state()
    cp, worker, worker2 = (state.node(f"{state.lab}-{n}") for n in ("control-plane", "worker", "worker2"))
    assert worker2.ip == "172.19.0.2" and worker2.ip6 == "fc00:f853:ccd:e794::2"
    assert _routes(cp.netns) == sorted([f"{worker.pod_cidr} via {worker.ip} dev eth0",
                                        f"{worker2.pod_cidr} via {worker2.pod_cidr.split('/')[0]} dev flannel.1"])
    assert _routes(worker2.netns) == sorted(f"{n.pod_cidr} via {n.pod_cidr.split('/')[0]} dev flannel.1"
                                            for n in (cp, worker))
    fdb = _in(cp.netns, ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout.split()
    assert fdb[:3] == [flanneld_mac(worker2), "dst", worker2.ip] and len(fdb) == 5     # the one tunnelled node
    lan = _in(state.lan_netns(), ["ip", "-br", "addr", "show", "br1"]).stdout.split()
    assert lan[2:4] == ["172.19.0.1/16", "fc00:f853:ccd:e794::1/64"]
    assert _in(state.lan_netns(), ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    assert _in(worker2.netns, ["ip", "route", "show", "default"]).stdout.startswith("default via 172.19.0.1 ")


def flanneld_mac(node):
    return node.vtep_mac


def test_across_the_router_the_pods_packet_is_in_vxlan_and_inside_a_segment_it_is_not(segments):
    state = segments.state()
    pods = {p.node: p for p in state.pods if p.namespace == "default"}
    worker, worker2 = (state.node(f"{state.lab}-{n}") for n in ("worker", "worker2"))
    a, b = pods[worker.name], pods[worker2.name]
    text = vxlan_capture(state.lan_netns(), "br1", f"udp dst port 8472 and dst host {worker2.ip}",
                         lambda: _in(a.netns, ["ping", "-c", "1", "-W", "5", b.ip]).check_returncode())
    assert re.search(rf"{re.escape(worker.ip)}\.\d+ > {re.escape(worker2.ip)}\.8472: .*VXLAN.*vni 1.*"
                     rf"{re.escape(a.ip)} > {re.escape(b.ip)}: ICMP echo request", text, re.S), text
    _probe_passes(segments)


def test_a_partition_across_the_router_cuts_the_two_nodes_and_no_other(segments):
    state = segments.state()
    pods = {p.node: p for p in state.pods if p.namespace == "default"}
    cp, worker, worker2 = (state.node(f"{state.lab}-{n}") for n in ("control-plane", "worker", "worker2"))

    def reaches(src, dst):
        """A pod of `src` (the control plane runs none: the node itself) pings `dst`'s pod."""
        netns = pods[src.name].netns if src.name in pods else src.netns
        return _in(netns, ["ping", "-c", "1", "-W", "1", pods[dst.name].ip]).returncode == 0
    assert reaches(worker, worker2)
    segments.fault("partition", ["worker", "worker2"])
    try:
        assert not reaches(worker, worker2) and not reaches(worker2, worker)
        assert reaches(cp, worker2) and reaches(cp, worker)
    finally:
        segments.clear_faults()
    assert reaches(worker, worker2)


# --- vxlan on its own VNI and port, from the ConfigMap ------------------------------------------

def test_the_configmaps_vni_and_port_make_flannel_4096_on_udp_4789(vni_port):
    state = vni_port.state()
    node = state.node(f"{state.lab}-worker")
    detail = _in(node.netns, ["ip", "-d", "link", "show", "flannel.4096"]).stdout
    assert "vxlan id 4096 " in detail and "dstport 4789 " in detail
    ann = _node_annotations(vni_port, node)
    assert json.loads(ann["flannel.alpha.coreos.com/backend-data"]) == {
        "VNI": 4096, "VtepMAC": node.vtep_mac}
    ran = _probe_passes(vni_port)
    vxlan = next(c for c in ran if c.area == "overlay" and c.name.startswith("vxlan"))
    assert " udp/4789 vni 4096 " in vxlan.observed


def _configmap_of(lab_text, backend):
    """kube-flannel-cfg as VNI_PORT pastes it, with another Backend."""
    cm = lab_text[lab_text.index("kind: ConfigMap"):lab_text.index("---\napiVersion: apps/v1")]
    return cm.replace('"Type": "vxlan",\n        "VNI": 4096,\n        "Port": 4789', backend)


def test_applying_the_configmap_switches_a_running_lab_from_one_layout_to_the_other(vni_port, tmp_path):
    state = vni_port.state()
    node = state.node(f"{state.lab}-worker")
    for backend, device in (('"Type": "host-gw"', None), ('"Type": "vxlan"', "flannel.1")):
        f = tmp_path / "kube-flannel-cfg.yaml"
        f.write_text(_configmap_of(VNI_PORT, backend))
        vni_port.apply([f])
        links = _in(node.netns, ["ip", "-o", "link"]).stdout
        assert "flannel.4096" not in links                       # the old layout's device is gone
        others = [n for n in state.nodes if n.name != node.name]
        if device is None:
            assert "flannel" not in links and re.search(r" cni0: .* mtu 1500 ", links)
            assert _routes(node.netns) == sorted(f"{n.pod_cidr} via {n.ip} dev eth0" for n in others)
        else:
            assert re.search(r" flannel\.1: .* mtu 1450 ", links) and re.search(r" cni0: .* mtu 1450 ", links)
            assert _routes(node.netns) == sorted(f"{n.pod_cidr} via {n.pod_cidr.split('/')[0]} dev flannel.1"
                                                 for n in others)
            assert len(_in(node.netns, ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout.splitlines()) == 2
        _probe_passes(vni_port)
