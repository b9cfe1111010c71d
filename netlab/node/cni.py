"""The CNI chain flannel installs: the bridge plugin with host-local IPAM (network cbr0).

Per node: bridge cni0 with the gateway <podCIDR .1>/24, MTU = flannel's, its MAC pinned.
Per pod: a veth pair, eth0 in the pod and veth<8 hex> on cni0 with hairpin on; inside the
pod, arp_notify, the address from host-local and the routes the plugin writes.
Dual-stack: host-local's second range gives each pod an IPv6 address too, the bridge the
gateway <podCIDR6>::1/64 beside the IPv4 one, and the plugin adds a default route per family
(isDefaultGateway) after the ipam routes (the cluster network of each family). An IPv6 lab's
ranges hold the IPv6 one alone: the IPv6 half of all this, and no IPv4 address in the pod.
"""

import ipaddress

from netlab import names
from netlab.controllers import ipam
from netlab.node.flannel import flanneld as flannel
from netlab.values.desired import Addr, Link, NetnsPlan, Peer, Route

NETWORK_NAME = "cbr0"


def node_plan(state, node):
    mtu = flannel.mtu(state.cluster)
    addrs = (Addr(names.CNI_BRIDGE, f"{ipam.gateway(node.pod_cidr)}/24"),) if node.pod_cidr else ()
    sysctls = ()
    if node.pod_cidr6:
        addrs += (Addr(names.CNI_BRIDGE, f"{gateway6(node.pod_cidr6)}/{_prefix(node.pod_cidr6)}"),)
        # ensureBridge: "we want to own the routes for this interface".
        sysctls = ((f"net/ipv6/conf/{names.CNI_BRIDGE}/accept_ra", "0"),)
    return NetnsPlan(
        node.netns,
        links=(Link(names.CNI_BRIDGE, "bridge", mtu=mtu, pin_mac=True),),
        addrs=addrs,
        sysctls=sysctls,
        owner="cni",
    )


def gateway6(pod_cidr6):
    """The bridge plugin's calcGatewayIP: the network address + 1 (fd00:10:244:1::1)."""
    return str(ipaddress.ip_network(pod_cidr6).network_address + 1)


def _prefix(cidr):
    return ipaddress.ip_network(cidr).prefixlen


def host_veth(state, pod):
    """The node's end of a pod's veth pair; it is created with the pod's eth0 as its peer."""
    return Link(pod.host_veth, "veth", mtu=flannel.mtu(state.cluster), master=names.CNI_BRIDGE,
                hairpin=True, peer=Peer(names.POD_IFNAME, pod.netns))


def pod_plan(state, pod):
    node = state.node(pod.node)
    addrs, routes, sysctls = (), (), ()
    if pod.ip and node.pod_cidr:
        gw = ipam.gateway(node.pod_cidr)
        addrs = (Addr(names.POD_IFNAME, f"{pod.ip}/{_prefix(node.pod_cidr)}"),)
        # isDefaultGateway gives the default route; host-local's routes give the cluster /16.
        routes = (Route("default", via=gw, dev=names.POD_IFNAME),
                  Route(state.cluster.pod_subnet, via=gw, dev=names.POD_IFNAME))
        sysctls = ((f"net/ipv4/conf/{names.POD_IFNAME}/arp_notify", "1"),)
    if pod.ip6 and node.pod_cidr6:
        gw6 = gateway6(node.pod_cidr6)
        addrs += (Addr(names.POD_IFNAME, f"{pod.ip6}/{_prefix(node.pod_cidr6)}"),)
        routes += (Route("default", via=gw6, dev=names.POD_IFNAME),
                   Route(state.cluster.pod_subnet6, via=gw6, dev=names.POD_IFNAME))
        # The plugin turns DAD off (enabledad false) before it adds the addresses; the pod
        # takes no router advertisements (nothing in the lab sends one, and forwarding is off).
        sysctls = ((f"net/ipv6/conf/{names.POD_IFNAME}/accept_dad", "0"), *sysctls,
                   (f"net/ipv6/conf/{names.POD_IFNAME}/accept_ra", "0"))
    return NetnsPlan(
        pod.netns,
        links=(Link(names.POD_IFNAME, "peer", mtu=flannel.mtu(state.cluster)),),
        addrs=addrs,
        routes=routes,
        sysctls=sysctls,
        owner="cni",
    )
