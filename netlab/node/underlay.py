"""The "physical" LAN kind plugs its nodes into (Docker's bridge network), sealed in a netns.

The LAN namespace holds bridge br0 with the gateway address, one port per node and one for
the external client. It forwards nothing anywhere else: the lab never reaches the host.
Dual-stack: the LAN has kind's ULA /64 too (Docker's IPv6 network), gateway ::1 on br0, and
every host on it the IPv6 twin of its IPv4 address (the same host part), with a default route
via ::1. IPv6 settings are made per namespace, never on the host's. An IPv6 lab's LAN is the
same: Docker's network keeps its IPv4 range beside the ULA one, and the cluster uses IPv6.
"""

import ipaddress
from dataclasses import replace

from netlab import names
from netlab.api import spec
from netlab.controllers import ipam
from netlab.values.desired import Addr, Link, NetnsPlan, Peer, Route


def _prefix(cidr):
    return ipaddress.ip_network(cidr).prefixlen


def lan_plan(state, extra=()):
    """extra: (port name, netns) of more hosts on the LAN (the cloud's load balancers). A lab
    with lan.segments has a bridge per segment here (br1, br2, ...), each node's port on its
    own, and this namespace routes between them (forwarding on): the segments' router."""
    c = state.cluster
    segments = getattr(c, "lan_segments", ())
    links = [Link(names.LAN_BRIDGE, "bridge", mtu=c.underlay_mtu)]
    links += [Link(segment_bridge(i + 1), "bridge", mtu=c.underlay_mtu) for i in range(len(segments))]
    for node in state.nodes:
        links.append(Link(names.lan_port(state.lab, node.name), "veth", mtu=c.underlay_mtu,
                          master=segment_bridge(spec.segment_of(c, node.name)), peer=Peer(names.UPLINK, node.netns)))
    links.append(Link("external", "veth", mtu=c.underlay_mtu, master=names.LAN_BRIDGE,
                      peer=Peer(names.UPLINK, state.external_netns())))
    for port, netns in extra:
        links.append(Link(port, "veth", mtu=c.underlay_mtu, master=names.LAN_BRIDGE, peer=Peer(names.UPLINK, netns)))
    routed = "1" if segments else "0"
    addrs, sysctls = [], [("net/ipv4/ip_forward", routed)]
    for i in range(len(segments) + 1):
        cidr, cidr6 = spec.segment_cidrs(c, i)
        gateway = ipam.lan_gateway(cidr)
        addrs.append(Addr(segment_bridge(i), f"{gateway}/{_prefix(cidr)}"))
        if c.ipv6:
            addrs.append(Addr(segment_bridge(i), f"{ipam.lan_ip6(c, gateway)}/{_prefix(cidr6)}"))
    if c.ipv6:
        # Without forwarding the kernel would take router advertisements on br0.
        sysctls += [("net/ipv6/conf/all/disable_ipv6", "0"), ("net/ipv6/conf/all/forwarding", routed),
                    (f"net/ipv6/conf/{names.LAN_BRIDGE}/accept_ra", "0")]
    return NetnsPlan(
        state.lan_netns(),
        links=tuple(links),
        addrs=tuple(addrs),
        sysctls=tuple(sysctls),
        owner="lab-network",
    )


def segment_bridge(index):
    """The LAN namespace's bridge of segment `index`: br0 is the LAN's own."""
    return names.LAN_BRIDGE if index == 0 else f"br{index}"


def docker_mac(ip):
    """The MAC Docker's bridge driver gave a container's eth0 up to Engine 27 (libnetwork's
    netutils.GenerateMACFromIP): 02:42, locally administered, then the four bytes of its IPv4
    address. (Engine 28 picks a random one and sends unsolicited ARPs instead.) A node
    re-created with the same address has the same MAC, so the neighbour entries the other
    hosts keep for it stay right and it is reachable at once."""
    return "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


def uplink(state, netns, ip):
    """A host's eth0 on the LAN, with Docker's MAC and kind's default route through the LAN
    gateway; in a dual-stack lab its IPv6 twin and the IPv6 default route via ::1 too."""
    c = state.cluster
    cidr, cidr6 = spec.segment_cidrs_of(c, ip)
    gateway = ipam.lan_gateway(cidr)
    addrs = (Addr(names.UPLINK, f"{ip}/{_prefix(cidr)}"),)
    routes = (Route("default", via=gateway, dev=names.UPLINK),)
    if c.ipv6:
        addrs += (Addr(names.UPLINK, f"{ipam.lan_ip6(c, ip)}/{_prefix(cidr6)}"),)
        routes += (Route("default", via=ipam.lan_ip6(c, gateway), dev=names.UPLINK),)
    return NetnsPlan(
        netns,
        links=(Link(names.UPLINK, "peer", mtu=c.underlay_mtu, address=docker_mac(ip)),),
        addrs=addrs,
        routes=routes,
        owner="lab-network",
    )


def external_plan(state):
    plan = uplink(state, state.external_netns(), ipam.lan_external_ip(state.cluster.lan_cidr))
    if not state.cluster.ipv6:
        return plan
    # A laptop on the LAN: no forwarding, so the kernel would take router advertisements.
    return replace(plan, sysctls=(("net/ipv6/conf/all/disable_ipv6", "0"),
                                  (f"net/ipv6/conf/{names.UPLINK}/accept_ra", "0")))
