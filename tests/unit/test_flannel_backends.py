"""flannel's backends planned against flannel's own layout (pkg/backend/hostgw: a route per
remote subnet via the node's public IP on the uplink, backend-data null, the uplink's MTU;
pkg/backend/vxlan: flannel.<VNI> on the Backend's VNI and Port, DirectRouting's plain route
instead of neighbour + FDB + onlink route for a node on the same subnet; the MTU option as
the packets' MTU less the 50 bytes of VXLAN), and net-conf.json read and refused as the Lab
document's and kube-flannel-cfg's fields say."""

import json

import pytest

from netlab.api import netconf, spec
from netlab.api.spec import ClusterConfig, LabSpec
from netlab.controllers import cluster
from netlab.errors import SpecError
from netlab.node.flannel import flanneld
from netlab.values.desired import Route

DUAL = dict(ip_family="dual", pod_subnet6="fd00:10:244::/56", service_subnet6="fd00:10:96::/112",
            lan_cidr6="fc00:f853:ccd:e793::/64")


def lab(**fields):
    c = ClusterConfig(name="t", roles=("control-plane", "worker", "worker"), dns_replicas=0, **fields)
    return cluster.new_state(LabSpec(c))


def test_host_gw_routes_every_remote_subnet_via_its_node_and_has_no_device():
    state = lab(flannel_backend="host-gw", **DUAL)
    node, a, b = state.nodes[1], state.nodes[0], state.nodes[2]
    p = flanneld.node_plan(state, node)
    assert p.links == () and p.neighs == () and p.fdb == ()
    assert p.routes == (Route(a.pod_cidr, via=a.ip, dev="eth0"), Route(b.pod_cidr, via=b.ip, dev="eth0"),
                        Route(a.pod_cidr6, via=a.ip6, dev="eth0"), Route(b.pod_cidr6, via=b.ip6, dev="eth0"))
    assert set(p.iptables) == set(p.ip6tables) == {"nat", "filter"}         # flanneld's ip-masq, any backend
    assert flanneld.mtu(state.cluster) == flanneld.mtu6(state.cluster) == 1500
    assert "FLANNEL_MTU=1500\n" in flanneld.subnet_env(state.cluster, node)
    ann = flanneld.annotations(node, state.cluster)
    assert (ann["flannel.alpha.coreos.com/backend-type"], ann["flannel.alpha.coreos.com/backend-data"],
            ann["flannel.alpha.coreos.com/backend-v6-data"]) == ("host-gw", "null", "null")


def test_direct_routing_on_one_subnet_routes_plainly_and_keeps_the_device():
    state = lab(direct_routing=True)
    node, a, b = state.nodes[1], state.nodes[0], state.nodes[2]
    p = flanneld.node_plan(state, node)
    assert [link.ifname for link in p.links] == ["flannel.1"] and p.links[0].mtu == 1450
    assert p.neighs == () and p.fdb == ()
    assert p.routes == (Route(a.pod_cidr, via=a.ip, dev="eth0"), Route(b.pod_cidr, via=b.ip, dev="eth0"))
    assert flanneld.mtu(state.cluster) == 1450                              # the network is still VXLAN's


def test_the_backends_vni_port_and_mtu_shape_the_device():
    state = lab(vxlan_vni=4096, vxlan_port=4789, backend_mtu=1400)
    node, other = state.nodes[1], state.nodes[0]
    p = flanneld.node_plan(state, node)
    link, = p.links
    assert (link.ifname, link.mtu, link.vxlan.vni, link.vxlan.port) == ("flannel.4096", 1350, 4096, 4789)
    assert p.routes[0] == Route(other.pod_cidr, via=flanneld.vtep_ip(other), dev="flannel.4096", onlink=True)
    assert "FLANNEL_MTU=1350\n" in flanneld.subnet_env(state.cluster, node)
    assert json.loads(flanneld.annotations(node, state.cluster)["flannel.alpha.coreos.com/backend-data"]) == {
        "VNI": 4096, "VtepMAC": node.vtep_mac}
    assert flanneld.port(lab().cluster) == 8472                              # Port 0: the kernel's default


def test_net_conf_writes_the_backend_without_its_defaults():
    assert json.loads(netconf.net_conf(lab().cluster))["Backend"] == {"Type": "vxlan"}
    c = lab(vxlan_vni=7, direct_routing=True, **DUAL).cluster
    assert json.loads(netconf.net_conf(c)) == {"Network": "10.244.0.0/16", "EnableIPv6": True,
                                               "IPv6Network": "fd00:10:244::/56", "EnableNFTables": False,
                                               "Backend": {"Type": "vxlan", "VNI": 7, "DirectRouting": True}}


CLUSTER = "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: t\n"


def lab_doc(backend):
    return f"---\napiVersion: netlab.io/v1alpha1\nkind: Lab\nflannel: {{backend: {backend}}}\n"


def configmap(net_conf, namespace="kube-flannel"):
    indented = "".join(f"    {line}\n" for line in net_conf.splitlines())
    return (f"---\nkind: ConfigMap\napiVersion: v1\nmetadata: {{name: kube-flannel-cfg, namespace: {namespace}}}\n"
            f"data:\n  net-conf.json: |\n{indented}")


def refused(tmp_path, text):
    f = tmp_path / "lab.yaml"
    f.write_text(text)
    with pytest.raises(SpecError) as e:
        spec.load(f)
    return str(e.value).replace(f"{f}: ", "")


@pytest.mark.parametrize("backend, message", [
    ("{Type: vxlan, DirectRoute: true}", "Lab: flannel.backend.DirectRoute: unknown field, not in flannel's vxlan "
     "backend (did you mean DirectRouting? known here: DirectRouting, GBP, Learning, MTU, Port, Type, VNI)"),
    ("{Type: udp}", "Lab: flannel.backend.Type: 'udp': netlab builds flannel's vxlan, host-gw and wireguard backends"),
    ("{Type: geneve}", "Lab: flannel.backend.Type: 'geneve' is not a flannel backend (netlab builds vxlan, host-gw, "
     "wireguard)"),
    ("{Type: host-gw, MTU: 1400}", "Lab: flannel.backend.MTU: unknown field, not in flannel's host-gw backend "
     "(known here: Type)"),
    ("{Type: vxlan, VNI: 0}", "Lab: flannel.backend.VNI: 0: must be between 1 and 16777215, inclusive"),
    ("{Type: vxlan, Port: 70000}", "Lab: flannel.backend.Port: 70000: must be between 0 and 65535, inclusive"),
    ("{Type: vxlan, MTU: 1000}", "Lab: flannel.backend.MTU: 1000: the packets a backend sends need 1280 bytes at "
     "least (IPv6's minimum MTU; 0 takes the uplink's, 1500)"),
    ("{Type: vxlan, MTU: 9000}", "Lab: flannel.backend.MTU: 9000: must be between 0 and 1500, inclusive"),
    ("{Type: vxlan, GBP: true}", "Lab: flannel.backend.GBP: true: netlab's flannel.1 runs without GBP (flannel's "
     "default)"),
    ("{Type: vxlan, DirectRouting: 'yes'}", "Lab: flannel.backend.DirectRouting: must be true or false, not 'yes'"),
    ("{VNI: 1}", "Lab: flannel.backend.Type: required"),
])
def test_a_wrong_backend_in_the_lab_document_names_its_field(tmp_path, backend, message):
    assert refused(tmp_path, CLUSTER + lab_doc(backend)) == message


NET = '{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}'


@pytest.mark.parametrize("text, message", [
    ('{"Network": "10.245.0.0/16", "Backend": {"Type": "vxlan"}}', "net-conf.json.Network: 10.245.0.0/16: "
     "flannel's network is the cluster's podSubnet 10.244.0.0/16"),
    ('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": '
     '{"Type": "vxlan"}}', "net-conf.json.EnableIPv6: EnableIPv4 true, EnableIPv6 true: the cluster is IPv4 "
                           "(its networking.ipFamily)"),
    ('{"Network": "10.244.0.0/16", "SubnetLen": 25, "Backend": {"Type": "vxlan"}}',
     "net-conf.json.SubnetLen: must be 24: the kube subnet manager's leases are the nodes' podCIDRs"),
    ('{"Network": "10.244.0.0/16", "EnableNFTables": true, "Backend": {"Type": "vxlan"}}',
     "net-conf.json.EnableNFTables: true: netlab's flanneld writes its masquerade rules with iptables (flannel's "
     "default)"),
    ('{"Network": "10.244.0.0/16", "Backnd": {"Type": "vxlan"}}', "net-conf.json.Backnd: unknown field, not in "
     "flannel's net-conf.json (did you mean Backend? known here: Backend, EnableIPv4, EnableIPv6, EnableNFTables, "
     "IPv6Network, IPv6SubnetLen, IPv6SubnetMax, IPv6SubnetMin, Network, SubnetLen, SubnetMax, SubnetMin)"),
    ('{"Network": "10.244.0.0/16"}', "net-conf.json.Backend: required"),
])
def test_a_wrong_net_conf_names_its_key(tmp_path, text, message):
    got = refused(tmp_path, CLUSTER + configmap(text))
    assert got == f"ConfigMap kube-flannel/kube-flannel-cfg: data.{message}"


def test_a_configmap_that_is_no_json_or_lives_elsewhere_is_refused(tmp_path):
    assert refused(tmp_path, CLUSTER + configmap("{not json")).startswith(
        "ConfigMap kube-flannel/kube-flannel-cfg: data.net-conf.json: is not JSON: ")
    assert refused(tmp_path, CLUSTER + configmap(NET, namespace="kube-system")) == (
        "ConfigMap kube-flannel/kube-flannel-cfg: metadata.namespace: kube-flannel-cfg lives in namespace "
        "kube-flannel (kube-flannel.yml)")


def test_the_backend_is_taken_from_one_place_only(tmp_path):
    message = refused(tmp_path, CLUSTER + lab_doc("{Type: host-gw}") + configmap(NET))
    assert message.startswith("Lab: flannel.backend: the backend is given twice: here and in kube-flannel-cfg (")


def test_the_configmap_of_an_ipv6_lab_turns_ipv4_off(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text(CLUSTER + "networking: {ipFamily: ipv6}\n" + configmap(
        '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": '
        '{"Type": "host-gw"}}'))
    c = spec.load(f).cluster
    assert (c.flannel_backend, c.families) == ("host-gw", ("IPv6",))
    assert json.loads(netconf.net_conf(c)) == {"EnableIPv4": False, "EnableIPv6": True,
                                               "IPv6Network": "fd00:10:244::/56", "EnableNFTables": False,
                                               "Backend": {"Type": "host-gw"}}


def test_a_configmap_applied_to_a_running_lab_asks_its_new_backend(tmp_path):
    running = lab().cluster
    f = tmp_path / "cm.yaml"
    f.write_text(configmap('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}'))
    applied = spec.load(None, [f], cluster=running)
    assert applied.flannel["direct_routing"] is True and applied.flannel["flannel_backend"] == "vxlan"
    state = lab()
    log = []
    cluster.apply(state, applied, log=log)
    assert state.cluster.direct_routing and log[-1][:3] == ("BackendChanged", "configmap/kube-flannel-cfg",
                                                            "kube-flannel")
    assert spec.load(None, [f], cluster=state.cluster).flannel == applied.flannel


SEGMENTED = CLUSTER + "nodes: [{role: control-plane}, {role: worker}, {role: worker}]\n"


def segments_doc(segments, extra=""):
    return f"---\napiVersion: netlab.io/v1alpha1\nkind: Lab\nlan: {{segments: {segments}}}\n{extra}"


def test_a_node_of_a_second_segment_takes_its_networks_addresses_and_routes_through_its_router(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text(SEGMENTED + "networking: {ipFamily: dual}\n" + segments_doc(
        '[{cidr: 172.19.0.0/16, ipv6Cidr: "fc00:f853:ccd:e794::/64", nodes: [worker2]}]',
        "flannel: {backend: {Type: vxlan, DirectRouting: true}}\n"))
    state = cluster.new_state(spec.load(f))
    cp, worker, worker2 = state.nodes
    assert (cp.ip, worker.ip, worker2.ip, worker2.ip6) == ("172.18.0.2", "172.18.0.3", "172.19.0.2",
                                                           "fc00:f853:ccd:e794::2")
    p = flanneld.node_plan(state, cp)
    assert p.routes[:2] == (Route(worker.pod_cidr, via=worker.ip, dev="eth0"),
                            Route(worker2.pod_cidr, via=flanneld.vtep_ip(worker2), dev="flannel.1", onlink=True))
    assert [f.dst for f in p.fdb] == [worker2.ip, worker2.ip6]
    from netlab.node import underlay
    lan = underlay.lan_plan(state)
    assert [(l.ifname, l.master) for l in lan.links if l.ifname.endswith("worker2") or l.kind == "bridge"] == [
        ("br0", None), ("br1", None), ("worker2", "br1")]
    assert [a.cidr for a in lan.addrs if a.dev == "br1"] == ["172.19.0.1/16", "fc00:f853:ccd:e794::1/64"]
    assert ("net/ipv4/ip_forward", "1") in lan.sysctls and ("net/ipv6/conf/all/forwarding", "1") in lan.sysctls
    up = underlay.uplink(state, worker2.netns, worker2.ip)
    assert [str(r) for r in up.routes] == ["default via 172.19.0.1 dev eth0",
                                           "default via fc00:f853:ccd:e794::1 dev eth0"]


def test_a_partition_across_segments_drops_what_the_router_would_forward(tmp_path):
    from netlab.observe import faults
    f = tmp_path / "lab.yaml"
    f.write_text(SEGMENTED + segments_doc("[{cidr: 172.19.0.0/16, nodes: [worker2]}]", ""))
    state = cluster.new_state(spec.load(f))
    comment = '-m comment --comment "netlab partition" -j DROP'
    assert faults._partition(state, "t-worker", "t-worker2") == [
        f"-d 172.19.0.2/32 -m physdev --physdev-in worker {comment}",
        f"-d 172.18.0.3/32 -m physdev --physdev-in worker2 {comment}"]
    assert faults._partition(state, "t-control-plane", "t-worker") == [
        f"-m physdev --physdev-in control-plane --physdev-out worker {comment}",
        f"-m physdev --physdev-in worker --physdev-out control-plane {comment}"]


@pytest.mark.parametrize("segments, extra, message", [
    ("[{cidr: 172.19.0.0/16, nodes: [worker2]}]", "flannel: {backend: {Type: host-gw}}\n",
     "Lab: lan.segments: flannel's host-gw backend needs every node on one L2 segment: its route <podCIDR> via "
     "<node IP> dev eth0 to a node behind the router fails (network is unreachable); vxlan with DirectRouting "
     "routes plainly inside a segment and tunnels across"),
    ("[{cidr: 172.19.0.0/16, nodes: [worker2]}]", "loadBalancer: {mode: metallb}\n",
     "Lab: lan.segments: MetalLB's layer 2 mode answers ARP for its addresses on one segment; a routed LAN's load "
     "balancers are the cloud's (loadBalancer.mode: cloud)"),
    ("[{cidr: 172.18.128.0/17, nodes: [worker2]}]", "", "Lab: lan.segments[0].cidr: 172.18.128.0/17 overlaps "
     "the LAN 172.18.0.0/16"),
    ("[{cidr: 172.19.0.0/16, nodes: [worker3]}]", "", "Lab: lan.segments[0].nodes[0]: 'worker3' is not a node of "
     "the lab (control-plane, worker, worker2)"),
    ("[{cidr: 172.19.0.0/16, nodes: [worker2]}, {cidr: 172.20.0.0/16, nodes: [worker2]}]", "",
     "Lab: lan.segments[1].nodes[0]: 'worker2' is on segment 0 already"),
    ("[{cidr: 172.19.0.0/16}]", "", "Lab: lan.segments[0].nodes: required: the nodes plugged into this segment"),
    ("[{nodes: [worker2]}]", "", "Lab: lan.segments[0].cidr: required: the segment's IPv4 range (a Docker "
     "network's subnet)"),
])
def test_a_wrong_segment_names_its_field(tmp_path, segments, extra, message):
    assert refused(tmp_path, SEGMENTED + segments_doc(segments, extra)) == message


def test_a_dual_stack_segment_needs_its_ipv6_range(tmp_path):
    assert refused(tmp_path, SEGMENTED + "networking: {ipFamily: dual}\n" + segments_doc(
        "[{cidr: 172.19.0.0/16, nodes: [worker2]}]")) == (
        "Lab: lan.segments[0].ipv6Cidr: required in a dual-stack or IPv6 lab: the segment's IPv6 range")
