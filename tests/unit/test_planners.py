"""The CNI and flannel planners against the layouts in shared/REFERENCE.md."""

from netlab import plan
from netlab.api import spec
from netlab.controllers import cluster
from netlab.node import cni
from netlab.node.flannel import flanneld as flannel
from netlab.values.desired import Addr, Fdb, Link, Neigh, Peer, Route, Vxlan


def three_nodes(pods=()):
    c = spec.ClusterConfig(name="t", roles=("control-plane", "worker", "worker"), dns_replicas=0)
    return cluster.new_state(spec.LabSpec(c, tuple(pods)))


def test_flannel_device_neighbours_fdb_and_routes():
    s = three_nodes()
    w1 = s.node("t-worker")
    cp, w2 = s.node("t-control-plane"), s.node("t-worker2")
    p = flannel.node_plan(s, w1)
    assert p.links == (Link("flannel.1", "vxlan", mtu=1450, address=w1.vtep_mac,
                            vxlan=Vxlan(vni=1, port=8472, local="172.18.0.3", dev="eth0", learning=False)),)
    assert p.addrs == (Addr("flannel.1", "10.244.1.0/32"),)
    assert p.neighs == (Neigh("10.244.0.0", cp.vtep_mac, "flannel.1"), Neigh("10.244.2.0", w2.vtep_mac, "flannel.1"))
    assert p.fdb == (Fdb(cp.vtep_mac, "flannel.1", "172.18.0.2"), Fdb(w2.vtep_mac, "flannel.1", "172.18.0.4"))
    assert p.routes == (Route("10.244.0.0/24", via="10.244.0.0", dev="flannel.1", onlink=True),
                        Route("10.244.2.0/24", via="10.244.2.0", dev="flannel.1", onlink=True))


def test_flannel_iptables_as_iptables_save_prints_them():
    s = three_nodes()
    tables = flannel.rules(s.cluster, s.node("t-worker"))
    assert tables["nat"].lines() == [
        "-N FLANNEL-POSTRTG",
        '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
        '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
        '-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
        '-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
        '-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
        '-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
        '-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
    ]
    assert tables["filter"].lines() == [
        "-N FLANNEL-FWD",
        '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
        '-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
        '-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
    ]


def test_subnet_env_and_annotations():
    s = three_nodes()
    n = s.node("t-worker2")
    assert flannel.subnet_env(s.cluster, n) == (
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.2.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    a = flannel.annotations(n)
    assert a["flannel.alpha.coreos.com/backend-type"] == "vxlan"
    assert a["flannel.alpha.coreos.com/backend-data"] == '{"VNI":1,"VtepMAC":"%s"}' % n.vtep_mac
    assert a["flannel.alpha.coreos.com/public-ip"] == "172.18.0.4"
    assert a["flannel.alpha.coreos.com/kube-subnet-manager"] == "true"


def test_flannel_mtu_follows_the_underlay():
    assert flannel.mtu(spec.ClusterConfig(underlay_mtu=1500)) == 1450
    assert flannel.mtu(spec.ClusterConfig(underlay_mtu=9000)) == 8950


def test_cni_bridge_and_pod():
    t = spec.PodTemplate(labels={}, containers=(spec.Container("c"),), node_name="t-worker")
    s = three_nodes([spec.PodManifest("default", "p", t)])
    pod = s.pods[0]
    assert cni.node_plan(s, s.node("t-worker")).links == (Link("cni0", "bridge", mtu=1450, pin_mac=True),)
    assert cni.node_plan(s, s.node("t-worker")).addrs == (Addr("cni0", "10.244.1.1/24"),)
    assert cni.host_veth(s, pod) == Link(pod.host_veth, "veth", mtu=1450, master="cni0", hairpin=True,
                                         peer=Peer("eth0", "t-default.p"))
    assert pod.host_veth.startswith("veth") and len(pod.host_veth) == 12
    int(pod.host_veth[4:], 16)
    pp = cni.pod_plan(s, pod)
    assert pp.addrs == (Addr("eth0", "10.244.1.2/24"),)
    assert pp.routes == (Route("default", via="10.244.1.1", dev="eth0"),
                         Route("10.244.0.0/16", via="10.244.1.1", dev="eth0"))
    assert ("net/ipv4/conf/eth0/arp_notify", "1") in pp.sysctls


def test_node_plan_has_kubeadm_sysctls_and_an_uplink():
    s = three_nodes()
    p = plan.node_plan(s, s.node("t-control-plane"))
    assert ("net/ipv4/ip_forward", "1") in p.sysctls
    assert ("net/bridge/bridge-nf-call-iptables", "1") in p.sysctls
    assert Addr("eth0", "172.18.0.2/16") in p.addrs
    assert Route("default", via="172.18.0.1", dev="eth0") in p.routes


def test_nothing_of_a_lab_is_planned_in_the_root_namespace():
    s = three_nodes()
    for p in plan.lab_plans(s):
        assert p.netns.startswith("t-")
        for link in p.links:
            assert link.peer is None or link.peer.netns.startswith("t-")


def test_values_render_in_ip_syntax_as_reference_writes_them():
    assert str(Route("10.244.2.0/24", via="10.244.2.0", dev="flannel.1", onlink=True)) == \
        "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"
    assert str(Neigh("10.244.2.0", "aa:bb:cc:dd:ee:ff", "flannel.1")) == \
        "10.244.2.0 lladdr aa:bb:cc:dd:ee:ff dev flannel.1 nud permanent"
    assert str(Fdb("aa:bb:cc:dd:ee:ff", "flannel.1", "172.18.0.4")) == \
        "aa:bb:cc:dd:ee:ff dev flannel.1 dst 172.18.0.4 self permanent"
    assert str(Addr("cni0", "10.244.1.1/24")) == "10.244.1.1/24 dev cni0"


def test_a_merged_plan_keeps_each_parts_owner():
    from netlab.values.desired import Addr, Link, NetnsPlan, Route, key, merge
    from netlab.values.iptables import Table
    cni = NetnsPlan("n", links=(Link("cni0", "bridge"),), addrs=(Addr("cni0", "10.244.1.1/24"),), owner="cni")
    flannel = NetnsPlan("n", links=(Link("flannel.1", "vxlan"),), routes=(Route("10.244.2.0/24", via="10.244.2.0",
                        dev="flannel.1", onlink=True),), iptables={"nat": Table("nat", {"FLANNEL-POSTRTG": ()})},
                        owner="flannel")
    merged = merge("n", cni, flannel)
    assert merged.owner_of(("link", "cni0")) == "cni"
    assert merged.owner_of(key(Addr("cni0", "10.244.1.1/24"))) == "cni"
    assert merged.owner_of(("link", "flannel.1")) == "flannel"
    assert merged.owner_of(("route", "10.244.2.0/24")) == "flannel"
    assert merged.owners[("chain", "nat", "FLANNEL-POSTRTG")] == "flannel"
    assert merged.owner_of(("link", "eth0")) == "kubelet"          # nothing planned it: the node's own
