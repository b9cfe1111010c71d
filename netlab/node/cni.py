"""The CNI chain flannel installs: the bridge plugin with host-local IPAM (network cbr0).

Per node: bridge cni0 with the gateway <podCIDR .1>/24, MTU = flannel's, its MAC pinned.
Per pod: a veth pair, eth0 in the pod and veth<8 hex> on cni0 with hairpin on; inside the
pod, arp_notify, the address from host-local and the routes the plugin writes.
"""

import ipaddress

from netlab import names
from netlab.controllers import ipam
from netlab.node.flannel import flanneld as flannel
from netlab.values.desired import Addr, Link, NetnsPlan, Peer, Route

NETWORK_NAME = "cbr0"


def node_plan(state, node):
    mtu = flannel.mtu(state.cluster)
    gw = ipam.gateway(node.pod_cidr)
    return NetnsPlan(
        node.netns,
        links=(Link(names.CNI_BRIDGE, "bridge", mtu=mtu, pin_mac=True),),
        addrs=(Addr(names.CNI_BRIDGE, f"{gw}/24"),),
        owner="cni",
    )


def host_veth(state, pod):
    """The node's end of a pod's veth pair; it is created with the pod's eth0 as its peer."""
    return Link(pod.host_veth, "veth", mtu=flannel.mtu(state.cluster), master=names.CNI_BRIDGE,
                hairpin=True, peer=Peer(names.POD_IFNAME, pod.netns))


def pod_plan(state, pod):
    node = state.node(pod.node)
    gw = ipam.gateway(node.pod_cidr)
    prefix = ipaddress.ip_network(node.pod_cidr).prefixlen
    return NetnsPlan(
        pod.netns,
        links=(Link(names.POD_IFNAME, "peer", mtu=flannel.mtu(state.cluster)),),
        addrs=(Addr(names.POD_IFNAME, f"{pod.ip}/{prefix}"),),
        # isDefaultGateway gives the default route; host-local's routes give the cluster /16.
        routes=(Route("default", via=gw, dev=names.POD_IFNAME),
                Route(state.cluster.pod_subnet, via=gw, dev=names.POD_IFNAME)),
        sysctls=((f"net/ipv4/conf/{names.POD_IFNAME}/arp_notify", "1"),),
        owner="cni",
    )
