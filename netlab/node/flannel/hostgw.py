"""flannel's host-gw backend (pkg/backend/hostgw): no device and no encapsulation. Each node's
subnet is routed through that node's own address on the one L2 segment they share:
`<podCIDR> via <node IP> dev eth0` per remote node (and `<podCIDR6> via <node IPv6>` with
EnableIPv6), so a pod's packet crosses the LAN as it left the pod, at the uplink's MTU."""

from netlab import names
from netlab.values.desired import NetnsPlan, Route


def node_plan(state, node, others):
    c = state.cluster
    routes = []
    if c.ipv4:
        routes += [Route(n.pod_cidr, via=n.ip, dev=names.UPLINK) for n in others]
    if c.ipv6:
        routes += [Route(n.pod_cidr6, via=n.ip6, dev=names.UPLINK) for n in others]
    return NetnsPlan(node.netns, routes=tuple(routes), owner="flannel")
