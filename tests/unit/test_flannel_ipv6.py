"""flanneld with EnableIPv6 (a dual-stack lab): flannel-v6.1, its per-node entries, its ip6tables
chains, subnet.env and the Node annotations, against /work/shared/reference/dual-stack.md and
flannel's pkg/backend/vxlan, pkg/trafficmngr/iptables and pkg/subnet."""

import json
import re

from netlab import plan
from netlab.api import spec
from netlab.controllers import cluster
from netlab.kernel import netlink
from netlab.node.flannel import flanneld as flannel
from netlab.values.desired import Addr, Fdb, Link, Neigh, NetnsPlan, Route, Vxlan

MASQ = '-m comment --comment "flanneld masq"'
FWD = '-m comment --comment "flanneld forward"'


# kind's dual-stack defaults (the lab file's parser fills them in for `ipFamily: dual`).
DUAL = dict(ip_family="dual", pod_subnet6="fd00:10:244::/56", service_subnet6="fd00:10:96::/112",
            lan_cidr6="fc00:f853:ccd:e793::/64")


def lab(ip_family="dual", mtu=1500, roles=("control-plane", "worker", "worker"), name="t"):
    c = spec.ClusterConfig(name=name, roles=roles, dns_replicas=0, underlay_mtu=mtu,
                           **(DUAL if ip_family == "dual" else {}))
    return cluster.new_state(spec.LabSpec(c))


def test_flannel_v6_1_is_a_second_vxlan_device_over_the_nodes_ipv6_lan_address():
    s = lab()
    w1 = s.node("t-worker")
    p = flannel.node_plan(s, w1)
    # flannel.1 first, exactly as in an IPv4 lab; then createVXLANDevice's v6 device:
    # fmt.Sprintf("flannel-v6.%d", VNI), the same VNI and port, SrcAddr = the IPv6 address.
    assert [l.ifname for l in p.links] == ["flannel.1", "flannel-v6.1"]
    assert p.links[0] == Link("flannel.1", "vxlan", mtu=1450, address=w1.vtep_mac,
                              vxlan=Vxlan(vni=1, port=8472, local="172.18.0.3", dev="eth0", learning=False))
    v6 = p.links[1]
    assert (v6.kind, v6.vxlan) == ("vxlan", Vxlan(vni=1, port=8472, local="fc00:f853:ccd:e793::3", dev="eth0",
                                                    learning=False))
    # The address: the network address of the node's IPv6 subnet as a /128 (EnsureV6AddressOnLink).
    assert p.addrs == (Addr("flannel.1", "10.244.1.0/32"), Addr("flannel-v6.1", "fd00:10:244:1::/128"))


def test_the_v6_device_holds_the_mtu_the_kernel_clamps_an_ipv6_underlay_vxlan_to():
    # Asked for 1500 - 50 like flannel.1, held at 1500 - 70 (VXLAN6_HEADROOM): 1430.
    for mtu, want in ((1500, 1430), (9000, 8930)):
        s = lab(mtu=mtu)
        links = {l.ifname: l for l in flannel.node_plan(s, s.node("t-worker")).links}
        assert (links["flannel.1"].mtu, links["flannel-v6.1"].mtu) == (mtu - 50, want)
    # Pods and cni0 stay at the network's MTU, which subnet.env carries.
    assert "FLANNEL_MTU=1450\n" in flannel.subnet_env(lab().cluster, lab().node("t-worker"))


def test_the_v6_device_has_its_own_unicast_locally_administered_vtep_mac():
    s = lab()
    macs = [flannel.vtep_mac6(n) for n in s.nodes]
    for n, mac in zip(s.nodes, macs):
        assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac)
        first = int(mac[:2], 16)
        assert first & 0x01 == 0 and first & 0x02 == 0x02          # mac.NewHardwareAddr: unicast, local
        assert mac != n.vtep_mac                                    # one MAC per device, as flanneld draws them
        assert flannel.node_plan(s, n).links[1].address == mac
    assert len(set(macs)) == 3
    assert [flannel.vtep_mac6(n) for n in s.nodes] == macs                 # the same on every converge


def test_per_remote_node_a_permanent_neighbour_an_fdb_entry_and_an_onlink_route_as_flannel_1_has():
    s = lab()
    cp, w1, w2 = s.node("t-control-plane"), s.node("t-worker"), s.node("t-worker2")
    p = flannel.node_plan(s, w1)
    dev = "flannel-v6.1"
    # AddV6ARP(IP6: the lease's IPv6 subnet IP, MAC: the remote's backend-v6-data VtepMAC),
    # AddV6FDB(IP6: the remote's PublicIPv6), then the onlink route via the subnet IP.
    assert p.neighs == (Neigh("10.244.0.0", cp.vtep_mac, "flannel.1"), Neigh("10.244.2.0", w2.vtep_mac, "flannel.1"),
                        Neigh("fd00:10:244::", flannel.vtep_mac6(cp), dev),
                        Neigh("fd00:10:244:2::", flannel.vtep_mac6(w2), dev))
    assert p.fdb == (Fdb(cp.vtep_mac, "flannel.1", "172.18.0.2"), Fdb(w2.vtep_mac, "flannel.1", "172.18.0.4"),
                     Fdb(flannel.vtep_mac6(cp), dev, "fc00:f853:ccd:e793::2"),
                     Fdb(flannel.vtep_mac6(w2), dev, "fc00:f853:ccd:e793::4"))
    assert p.routes == (Route("10.244.0.0/24", via="10.244.0.0", dev="flannel.1", onlink=True),
                        Route("10.244.2.0/24", via="10.244.2.0", dev="flannel.1", onlink=True),
                        Route("fd00:10:244::/64", via="fd00:10:244::", dev=dev, onlink=True),
                        Route("fd00:10:244:2::/64", via="fd00:10:244:2::", dev=dev, onlink=True))
    assert [str(r) for r in p.routes[2:]] == ["fd00:10:244::/64 via fd00:10:244:: dev flannel-v6.1 onlink",
                                              "fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1 onlink"]
    # What one node plans for a peer is what that peer's own device holds.
    cp_plan = flannel.node_plan(s, cp)
    assert Neigh("fd00:10:244:1::", cp_plan.links[1].address, dev) not in cp_plan.neighs
    assert Neigh("fd00:10:244:1::", flannel.node_plan(s, w1).links[1].address, dev) in cp_plan.neighs


def test_accept_ra_is_off_on_the_devices_flanneld_makes():
    s = lab()
    assert flannel.node_plan(s, s.node("t-worker")).sysctls == (("net/ipv6/conf/flannel.1/accept_ra", "0"),
                                                                 ("net/ipv6/conf/flannel-v6.1/accept_ra", "0"))


def test_ip6tables_hold_masq_ip6_rules_and_forward_rules_for_the_ipv6_network():
    s = lab()
    p = flannel.node_plan(s, s.node("t-worker"))
    assert set(p.ip6tables) == {"nat", "filter"}
    net, mine = "fd00:10:244::/56", "fd00:10:244:1::/64"
    assert p.ip6tables["nat"].lines() == [
        "-N FLANNEL-POSTRTG",
        f"-A POSTROUTING {MASQ} -j FLANNEL-POSTRTG",
        f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {mine} -d {net} {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {net} -d {mine} {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s {net} -d {mine} {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {net} ! -d ff00::/8 {MASQ} -j MASQUERADE --random-fully",
        f"-A FLANNEL-POSTRTG ! -s {net} -d {net} {MASQ} -j MASQUERADE --random-fully",
    ]
    assert p.ip6tables["filter"].lines() == [
        "-N FLANNEL-FWD",
        f"-A FORWARD {FWD} -j FLANNEL-FWD",
        f"-A FLANNEL-FWD -s {net} {FWD} -j ACCEPT",
        f"-A FLANNEL-FWD -d {net} {FWD} -j ACCEPT",
    ]
    # IPv4's tables are the IPv4 lab's, untouched.
    assert p.iptables["nat"].lines() == flannel.rules(lab("ipv4").cluster, lab("ipv4").node("t-worker"))["nat"].lines()


def test_the_merged_node_plan_credits_the_ipv6_chains_and_entries_to_flannel():
    s = lab()
    p = plan.node_plan(s, s.node("t-worker"))
    assert "FLANNEL-POSTRTG" in p.ip6tables["nat"].chains and "FLANNEL-FWD" in p.ip6tables["filter"].chains
    assert p.owners[("chain6", "nat", "FLANNEL-POSTRTG")] == "flannel"
    assert p.owners[("chain6", "filter", "FLANNEL-FWD")] == "flannel"
    assert p.owners[("link", "flannel-v6.1")] == "flannel"
    assert p.owners[("route", "fd00:10:244:2::/64")] == "flannel"
    assert p.owners[("sysctl", "net/ipv6/conf/flannel-v6.1/accept_ra")] == "flannel"


def test_subnet_env_adds_the_ipv6_network_and_the_first_address_of_the_nodes_ipv6_subnet():
    s = lab()
    # WriteSubnetFile: IPv4's pair, then IPv6's (ipv6sn.IncrementIP()), then MTU and IPMASQ.
    assert flannel.subnet_env(s.cluster, s.node("t-worker2")) == (
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.2.1/24\n"
        "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:2::1/64\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    assert flannel.subnet_env(s.cluster, s.node("t-control-plane")).splitlines()[3] == \
        "FLANNEL_IPV6_SUBNET=fd00:10:244::1/64"


def test_annotations_add_backend_v6_data_and_public_ipv6():
    s = lab()
    n = s.node("t-worker2")
    a = flannel.annotations(n)
    assert a["flannel.alpha.coreos.com/backend-v6-data"] == '{"VNI":1,"VtepMAC":"%s"}' % flannel.vtep_mac6(n)
    assert json.loads(a["flannel.alpha.coreos.com/backend-v6-data"])["VtepMAC"] == \
        flannel.node_plan(s, n).links[1].address
    assert a["flannel.alpha.coreos.com/public-ipv6"] == "fc00:f853:ccd:e793::4"
    assert a["flannel.alpha.coreos.com/public-ip"] == "172.18.0.4"
    assert a["flannel.alpha.coreos.com/backend-data"] == '{"VNI":1,"VtepMAC":"%s"}' % n.vtep_mac


def test_an_ipv4_lab_plans_exactly_what_it_did():
    s = lab("ipv4")
    w1, cp, w2 = s.node("t-worker"), s.node("t-control-plane"), s.node("t-worker2")
    assert flannel.node_plan(s, w1) == NetnsPlan(
        w1.netns,
        links=(Link("flannel.1", "vxlan", mtu=1450, address=w1.vtep_mac,
                    vxlan=Vxlan(1, 8472, "172.18.0.3", "eth0", learning=False)),),
        addrs=(Addr("flannel.1", "10.244.1.0/32"),),
        neighs=(Neigh("10.244.0.0", cp.vtep_mac, "flannel.1"), Neigh("10.244.2.0", w2.vtep_mac, "flannel.1")),
        fdb=(Fdb(cp.vtep_mac, "flannel.1", "172.18.0.2"), Fdb(w2.vtep_mac, "flannel.1", "172.18.0.4")),
        routes=(Route("10.244.0.0/24", via="10.244.0.0", dev="flannel.1", onlink=True),
                Route("10.244.2.0/24", via="10.244.2.0", dev="flannel.1", onlink=True)),
        iptables=flannel.rules(s.cluster, w1), owner="flannel")
    assert flannel.node_plan(s, w1).ip6tables == {} and flannel.node_plan(s, w1).sysctls == ()
    assert flannel.subnet_env(s.cluster, w2) == (
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.2.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    assert sorted(flannel.annotations(w2)) == [
        "flannel.alpha.coreos.com/backend-data", "flannel.alpha.coreos.com/backend-type",
        "flannel.alpha.coreos.com/kube-subnet-manager", "flannel.alpha.coreos.com/public-ip"]


def test_the_applier_reads_an_ipv6_vxlan_source_and_ipv6_neighbours_where_a_plan_has_them():
    import socket
    assert netlink._vxlan_local_attr("fc00:f853:ccd:e793::3") == "IFLA_VXLAN_LOCAL6"
    assert netlink._vxlan_local_attr("172.18.0.3") == "IFLA_VXLAN_LOCAL"
    s4, s6 = lab("ipv4"), lab()
    assert netlink._neigh_families(flannel.node_plan(s4, s4.node("t-worker"))) == (socket.AF_INET,)
    assert netlink._neigh_families(flannel.node_plan(s6, s6.node("t-worker"))) == (socket.AF_INET, socket.AF_INET6)
    # A one-node dual lab has no neighbours yet, but its v6 device is enough to look for stale ones.
    one = lab(roles=("control-plane",), name="o")
    assert netlink._neigh_families(flannel.node_plan(one, one.nodes[0])) == (socket.AF_INET, socket.AF_INET6)
