"""flanneld with the vxlan backend and the kube subnet manager.

flannel.<VNI> on every node; for each other node a permanent neighbour, an FDB entry and an
onlink route — in that order, because the route is only useful once the kernel can resolve
its gateway without ARP (flannel.1 has learning off and answers no ARP). Plus the
FLANNEL-POSTRTG masquerade and FLANNEL-FWD accept rules flanneld keeps in iptables.
"""

import ipaddress
import json

from netlab import names
from netlab.values.desired import Addr, Fdb, Link, Neigh, NetnsPlan, Route, Vxlan
from netlab.values.iptables import Table

VNI = 1
PORT = 8472            # the Linux kernel's default VXLAN port, not IANA's 4789
OVERHEAD = 50          # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
MASQ = '-m comment --comment "flanneld masq"'
FWD = '-m comment --comment "flanneld forward"'


def mtu(cluster):
    return cluster.underlay_mtu - OVERHEAD


def vtep_ip(node):
    """flannel.1's address: the .0 of the node's subnet, as a /32."""
    return str(ipaddress.ip_network(node.pod_cidr).network_address)


def node_plan(state, node):
    dev = names.flannel_device(VNI)
    others = [n for n in state.nodes if n.name != node.name]
    return NetnsPlan(
        node.netns,
        links=(Link(dev, "vxlan", mtu=mtu(state.cluster), address=node.vtep_mac,
                    vxlan=Vxlan(VNI, PORT, node.ip, names.UPLINK, learning=False)),),
        addrs=(Addr(dev, f"{vtep_ip(node)}/32"),),
        neighs=tuple(Neigh(vtep_ip(n), n.vtep_mac, dev) for n in others),
        fdb=tuple(Fdb(n.vtep_mac, dev, n.ip) for n in others),
        routes=tuple(Route(n.pod_cidr, via=vtep_ip(n), dev=dev, onlink=True) for n in others),
        iptables=rules(state.cluster, node),
        owner="flannel",
    )


def rules(cluster, node):
    net, mine = cluster.pod_subnet, node.pod_cidr
    nat = Table("nat", {
        "POSTROUTING": (f"{MASQ} -j FLANNEL-POSTRTG",),
        "FLANNEL-POSTRTG": (
            f"-m mark --mark 0x4000/0x4000 {MASQ} -j RETURN",
            f"-s {mine} -d {net} {MASQ} -j RETURN",
            f"-s {net} -d {mine} {MASQ} -j RETURN",
            f"! -s {net} -d {mine} {MASQ} -j RETURN",
            f"-s {net} ! -d 224.0.0.0/4 {MASQ} -j MASQUERADE --random-fully",
            f"! -s {net} -d {net} {MASQ} -j MASQUERADE --random-fully",
        ),
    })
    flt = Table("filter", {
        "FORWARD": (f"{FWD} -j FLANNEL-FWD",),
        "FLANNEL-FWD": (f"-s {net} {FWD} -j ACCEPT", f"-d {net} {FWD} -j ACCEPT"),
    })
    return {"nat": nat, "filter": flt}


def subnet_env(cluster, node):
    """/run/flannel/subnet.env, which flannel's CNI plugin reads to configure the bridge."""
    gw = ipaddress.ip_network(node.pod_cidr).network_address + 1
    return (f"FLANNEL_NETWORK={cluster.pod_subnet}\n"
            f"FLANNEL_SUBNET={gw}/24\n"
            f"FLANNEL_MTU={mtu(cluster)}\n"
            f"FLANNEL_IPMASQ=true\n")


def annotations(node):
    """What flanneld writes on its Node object for the other nodes to read."""
    return {
        "flannel.alpha.coreos.com/backend-type": "vxlan",
        "flannel.alpha.coreos.com/backend-data": json.dumps({"VNI": VNI, "VtepMAC": node.vtep_mac},
                                                            separators=(",", ":")),
        "flannel.alpha.coreos.com/kube-subnet-manager": "true",
        "flannel.alpha.coreos.com/public-ip": node.ip,
    }
