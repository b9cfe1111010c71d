"""The "physical" LAN kind plugs its nodes into (Docker's bridge network), sealed in a netns.

The LAN namespace holds bridge br0 with the gateway address, one port per node and one for
the external client. It forwards nothing anywhere else: the lab never reaches the host.
"""

import ipaddress

from netlab import names
from netlab.controllers import ipam
from netlab.values.desired import Addr, Link, NetnsPlan, Peer, Route


def _prefix(cidr):
    return ipaddress.ip_network(cidr).prefixlen


def lan_plan(state, extra=()):
    """extra: (port name, netns) of more hosts on the LAN (the cloud's load balancers)."""
    c = state.cluster
    links = [Link(names.LAN_BRIDGE, "bridge", mtu=c.underlay_mtu)]
    for node in state.nodes:
        links.append(Link(names.lan_port(state.lab, node.name), "veth", mtu=c.underlay_mtu,
                          master=names.LAN_BRIDGE, peer=Peer(names.UPLINK, node.netns)))
    links.append(Link("external", "veth", mtu=c.underlay_mtu, master=names.LAN_BRIDGE,
                      peer=Peer(names.UPLINK, state.external_netns())))
    for port, netns in extra:
        links.append(Link(port, "veth", mtu=c.underlay_mtu, master=names.LAN_BRIDGE, peer=Peer(names.UPLINK, netns)))
    return NetnsPlan(
        state.lan_netns(),
        links=tuple(links),
        addrs=(Addr(names.LAN_BRIDGE, f"{ipam.lan_gateway(c.lan_cidr)}/{_prefix(c.lan_cidr)}"),),
        sysctls=(("net/ipv4/ip_forward", "0"),),
        owner="lab-network",
    )


def docker_mac(ip):
    """The MAC Docker's bridge driver gave a container's eth0 up to Engine 27 (libnetwork's
    netutils.GenerateMACFromIP): 02:42, locally administered, then the four bytes of its IPv4
    address. (Engine 28 picks a random one and sends unsolicited ARPs instead.) A node
    re-created with the same address has the same MAC, so the neighbour entries the other
    hosts keep for it stay right and it is reachable at once."""
    return "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


def uplink(state, netns, ip):
    """A host's eth0 on the LAN, with Docker's MAC and kind's default route through the LAN
    gateway."""
    c = state.cluster
    return NetnsPlan(
        netns,
        links=(Link(names.UPLINK, "peer", mtu=c.underlay_mtu, address=docker_mac(ip)),),
        addrs=(Addr(names.UPLINK, f"{ip}/{_prefix(c.lan_cidr)}"),),
        routes=(Route("default", via=ipam.lan_gateway(c.lan_cidr), dev=names.UPLINK),),
        owner="lab-network",
    )


def external_plan(state):
    return uplink(state, state.external_netns(), ipam.lan_external_ip(state.cluster.lan_cidr))
