"""flanneld with the kube subnet manager: its backend's layout (vxlan here, host-gw in
hostgw.py, wireguard in wireguard.py; which one, and its options, from net-conf.json's Backend), subnet.env, the Node
annotations, and the masquerade and forward chains every backend shares.

flannel.<VNI> on every node; for each other node a permanent neighbour, an FDB entry and an
onlink route — in that order, because the route is only useful once the kernel can resolve
its gateway without ARP (flannel.1 has learning off and answers no ARP). Plus the
FLANNEL-POSTRTG masquerade and FLANNEL-FWD accept rules flanneld keeps in iptables.

With `EnableIPv6` (a dual-stack lab) flanneld makes a second device, flannel-v6.<VNI>, with
its own VTEP MAC over the node's IPv6 LAN address, the same per-node entries for the IPv6
subnets, and the same two chains in ip6tables for the IPv6 network. An IPv6 lab's flanneld
runs with EnableIPv4 false: flannel-v6.1 and the ip6tables chains alone.
"""

import hashlib
import ipaddress
import json
from dataclasses import replace

from netlab import names
from netlab.api import spec
from netlab.node.flannel import hostgw, wireguard
from netlab.values.desired import Addr, Fdb, Link, Neigh, NetnsPlan, Route, Vxlan
from netlab.values.iptables import Table

VNI = 1
PORT = 8472            # the Linux kernel's default VXLAN port, not IANA's 4789
OVERHEAD = 50          # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
OVERHEAD6 = 70         # the same over IPv6: its header is 40 bytes, not 20
MCAST, MCAST6 = "224.0.0.0/4", "ff00::/8"
MASQ = '-m comment --comment "flanneld masq"'
FWD = '-m comment --comment "flanneld forward"'


def vni(cluster):
    return getattr(cluster, "vxlan_vni", VNI)


def port(cluster):
    """flannel.<VNI>'s UDP port: the Backend's Port, or the kernel's default (0 asks for it)."""
    return getattr(cluster, "vxlan_port", 0) or PORT


def backend_of(cluster):
    return getattr(cluster, "flannel_backend", "vxlan")


def outer_mtu(cluster):
    """The MTU of the packets a backend sends: its MTU option, or the uplink's."""
    return getattr(cluster, "backend_mtu", 0) or cluster.underlay_mtu


def mtu(cluster):
    """FLANNEL_MTU, the network's (the CNI gives it to cni0 and the pods): the uplink's for
    host-gw, less WireGuard's 80 bytes, or flannel.<VNI>'s; an IPv6 lab's vxlan network has no
    flannel.1 and takes the MTU the kernel gave flannel-v6.<VNI>, which flanneld reads back."""
    kind = backend_of(cluster)
    if kind == "host-gw":
        return cluster.underlay_mtu
    if kind == "wireguard":
        return wireguard.mtu(cluster)
    return outer_mtu(cluster) - OVERHEAD if cluster.ipv4 else mtu6(cluster)


def mtu6(cluster):
    """The IPv6 overlay's MTU. vxlan: what the kernel holds on flannel-v6.1. flanneld asks for
    MTU - 50 on both devices, but the kernel clamps a vxlan device over an IPv6 underlay to
    its lower device's MTU - 70 (VXLAN6_HEADROOM; 1430 on 1500) and refuses anything above
    that later (EINVAL), so the plan holds the clamped value and a read-back of the device
    never tries to change it. Pods and cni0 stay at FLANNEL_MTU (1450): IPv6 packets between
    1431 and 1450 bytes get a Packet Too Big from the node. host-gw and wireguard: as IPv4."""
    if backend_of(cluster) != "vxlan":
        return mtu(cluster)
    return min(outer_mtu(cluster) - OVERHEAD, cluster.underlay_mtu - OVERHEAD6)


def device(cluster):
    """flannel's IPv4 device: the VXLAN one, fmt.Sprintf("flannel.%v", VNI), or flannel-wg."""
    if backend_of(cluster) == "wireguard":
        return wireguard.device_of(cluster, "IPv4")
    return names.flannel_device(vni(cluster))


def device6(cluster=None):
    """flannel's IPv6 device: fmt.Sprintf("flannel-v6.%d", VNI), or flannel-wg-v6 (flannel-wg
    when one WireGuard tunnel carries both families)."""
    if cluster is not None and backend_of(cluster) == "wireguard":
        return wireguard.device_of(cluster, "IPv6")
    return f"flannel-v6.{vni(cluster) if cluster is not None else VNI}"


def vtep_ip(node):
    """flannel.1's address: the .0 of the node's subnet, as a /32."""
    return str(ipaddress.ip_network(node.pod_cidr).network_address)


def vtep_ip6(node):
    """flannel-v6.1's address: the network address of the node's IPv6 subnet, as a /128."""
    return str(ipaddress.ip_network(node.pod_cidr6).network_address)


def vtep_mac6(node):
    """flannel-v6.1's MAC. flanneld draws one per device (mac.NewHardwareAddr: random, unicast,
    locally administered) and keeps it in backend-v6-data, so the two devices of a node differ;
    netlab derives it from the node's record instead of storing a second one, so that it
    stays the same on every converge and IPv4 labs' records do not change."""
    b = bytearray(hashlib.sha256(f"{node.name}/{node.vtep_mac}/{device6()}".encode()).digest()[:6])
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def node_plan(state, node):
    """flanneld's part of a node: its backend's devices, addresses, routes, neighbours and FDB
    entries, and its masquerade and forward chains in each family's tables (the same for
    every backend: flanneld's ip-masq, not the backend's)."""
    c = state.cluster
    others = [n for n in state.nodes if n.name != node.name]
    kind = backend_of(c)
    plan = {"host-gw": hostgw.node_plan, "wireguard": wireguard.node_plan}.get(kind, vxlan_plan)(state, node, others)
    return replace(plan, iptables=rules(c, node) if c.ipv4 else {}, ip6tables=rules6(c, node) if c.ipv6 else {})


def tunnelled(cluster, node=None, other=None):
    """Whether a pod's packet from `node` to `other`'s pods goes into flannel's device: never
    with host-gw, always with plain vxlan and wireguard, with DirectRouting only to a node of
    another segment (a pair not given: not)."""
    if backend_of(cluster) == "host-gw":
        return False
    if backend_of(cluster) == "wireguard":
        return True
    if not getattr(cluster, "direct_routing", False):
        return True
    return node is not None and other is not None and not direct(cluster, node, other)


def direct(cluster, node, other):
    """ip.DirectRouting: the remote node's public IP is on a subnet of the node's own uplink
    (one route to it, no gateway): a node of the same LAN segment (lan.segments)."""
    return spec.segment_of(cluster, node.name) == spec.segment_of(cluster, other.name)


def vxlan_plan(state, node, others):
    """The vxlan backend: flannel.<VNI> and, per remote node, a permanent neighbour, an FDB
    entry and an onlink route; with DirectRouting, a plain route via the node's IP instead
    for a node on the same subnet. IPv6 (EnableIPv6): flannel-v6.<VNI> alike."""
    c = state.cluster
    parts = []
    if c.ipv4:
        dev = device(c)
        tunnels = [n for n in others if tunnelled(c, node, n)]
        parts.append(NetnsPlan(
            node.netns,
            links=(Link(dev, "vxlan", mtu=outer_mtu(c) - OVERHEAD, address=node.vtep_mac,
                        vxlan=Vxlan(vni(c), port(c), node.ip, names.UPLINK, learning=False)),),
            addrs=(Addr(dev, f"{vtep_ip(node)}/32"),),
            neighs=tuple(Neigh(vtep_ip(n), n.vtep_mac, dev) for n in tunnels),
            fdb=tuple(Fdb(n.vtep_mac, dev, n.ip) for n in tunnels),
            routes=tuple(Route(n.pod_cidr, via=n.ip, dev=names.UPLINK) if n not in tunnels
                         else Route(n.pod_cidr, via=vtep_ip(n), dev=dev, onlink=True) for n in others),
            # newVXLANDevice turns accept_ra off on every device it makes (an IPv4 lab's node
            # has no IPv6 to speak of, so its plan leaves it).
            sysctls=((f"net/ipv6/conf/{dev}/accept_ra", "0"),) if c.ipv6 else (),
            owner="flannel"))
    if c.ipv6:
        parts.append(vxlan_plan6(state, node, others))
    return merge_parts(node.netns, parts)


def vxlan_plan6(state, node, others):
    """The EnableIPv6 half: flannel-v6.<VNI> over the node's IPv6 LAN address, and per remote
    node the neighbour, FDB entry and onlink route flannel.1 has for IPv4, in the same order
    (or with DirectRouting the direct route via its IPv6 address)."""
    c = state.cluster
    dev = device6(c)
    tunnels = [n for n in others if tunnelled(c, node, n)]
    return NetnsPlan(
        node.netns,
        links=(Link(dev, "vxlan", mtu=mtu6(c), address=vtep_mac6(node),
                    vxlan=Vxlan(vni(c), port(c), node.ip6, names.UPLINK, learning=False)),),
        addrs=(Addr(dev, f"{vtep_ip6(node)}/128"),),
        neighs=tuple(Neigh(vtep_ip6(n), vtep_mac6(n), dev) for n in tunnels),
        fdb=tuple(Fdb(vtep_mac6(n), dev, n.ip6) for n in tunnels),
        routes=tuple(Route(n.pod_cidr6, via=n.ip6, dev=names.UPLINK) if n not in tunnels
                     else Route(n.pod_cidr6, via=vtep_ip6(n), dev=dev, onlink=True) for n in others),
        # so no router advertisement ever gives the overlay device an address or a route
        sysctls=((f"net/ipv6/conf/{dev}/accept_ra", "0"),),
        owner="flannel",
    )


def merge_parts(netns, parts):
    """One NetnsPlan of a backend's families, in order (IPv4's items first)."""
    return NetnsPlan(netns, **{f: tuple(x for p in parts for x in getattr(p, f))
                               for f in ("links", "addrs", "routes", "neighs", "fdb", "sysctls")}, owner="flannel")


def rules(cluster, node):
    return _rules(cluster.pod_subnet, node.pod_cidr, MCAST)


def rules6(cluster, node):
    """masqIP6Rules and forwardRules for the IPv6 network: the IPv4 rules with IPv6 CIDRs and
    the multicast exclusion ff00::/8."""
    return _rules(cluster.pod_subnet6, node.pod_cidr6, MCAST6)


def _rules(net, mine, mcast):
    nat = Table("nat", {
        "POSTROUTING": (f"{MASQ} -j FLANNEL-POSTRTG",),
        "FLANNEL-POSTRTG": (
            f"-m mark --mark 0x4000/0x4000 {MASQ} -j RETURN",
            f"-s {mine} -d {net} {MASQ} -j RETURN",
            f"-s {net} -d {mine} {MASQ} -j RETURN",
            f"! -s {net} -d {mine} {MASQ} -j RETURN",
            f"-s {net} ! -d {mcast} {MASQ} -j MASQUERADE --random-fully",
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
    v4 = v6 = ""
    if cluster.ipv4:
        gw = ipaddress.ip_network(node.pod_cidr).network_address + 1
        v4 = f"FLANNEL_NETWORK={cluster.pod_subnet}\nFLANNEL_SUBNET={gw}/24\n"
    if cluster.ipv6:
        net6 = ipaddress.ip_network(node.pod_cidr6)
        v6 = (f"FLANNEL_IPV6_NETWORK={cluster.pod_subnet6}\n"
              f"FLANNEL_IPV6_SUBNET={net6.network_address + 1}/{net6.prefixlen}\n")
    # FLANNEL_MTU is the network's (flannel.1's in a dual-stack vxlan lab: the bridge and pods stay at 1450).
    return (v4 + v6 +
            f"FLANNEL_MTU={mtu(cluster)}\n"
            f"FLANNEL_IPMASQ=true\n")


def annotations(node, cluster=None):
    """What flanneld writes on its Node object for the other nodes to read: its backend, and
    per family it runs (the families of the node's podCIDRs) the backend's data and its
    address (host-gw has no data: json.RawMessage(nil) marshals to null)."""
    kind = backend_of(cluster) if cluster is not None else "vxlan"
    data = {"host-gw": lambda mac, port: "null",
            "wireguard": lambda mac, port: wireguard.backend_data(node, port)}.get(
        kind, lambda mac, port: _backend_data(mac, vni(cluster)))
    out = {"flannel.alpha.coreos.com/backend-type": kind}
    if node.pod_cidr:
        out["flannel.alpha.coreos.com/backend-data"] = data(node.vtep_mac, getattr(cluster, "wg_listen_port", 0))
    out["flannel.alpha.coreos.com/kube-subnet-manager"] = "true"
    if node.pod_cidr:
        out["flannel.alpha.coreos.com/public-ip"] = node.ip
    if node.pod_cidr6:
        out["flannel.alpha.coreos.com/backend-v6-data"] = data(vtep_mac6(node), getattr(cluster, "wg_listen_port6", 0))
        out["flannel.alpha.coreos.com/public-ipv6"] = node.ip6
    return out


def _backend_data(mac, vni_=VNI):
    """vxlanLeaseAttrs as json.Marshal writes it."""
    return json.dumps({"VNI": vni_, "VtepMAC": mac}, separators=(",", ":"))
