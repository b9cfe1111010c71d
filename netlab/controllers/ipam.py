"""IPAM: the node podCIDR allocator, host-local pod IPs, and the LAN's addresses (nodes and
load balancers, from one view of who holds what).

Pure functions of the current allocations; the store records their results.
"""

import ipaddress

from netlab.api import spec
from netlab.errors import NetlabError


def node_pod_cidrs(pod_subnet, taken, count):
    """kube-controller-manager's range allocator: the lowest free /24s, in node order."""
    free = (str(n) for n in ipaddress.ip_network(pod_subnet).subnets(new_prefix=24) if str(n) not in taken)
    out = []
    for _ in range(count):
        try:
            out.append(next(free))
        except StopIteration:
            raise NetlabError(f"podSubnet {pod_subnet} has no free /24 left for a new node") from None
    return out


def node_pod_cidrs6(pod_subnet6, taken, count):
    """The range allocator's IPv6 CIDR set: the lowest free /64s, in node order."""
    net = ipaddress.ip_network(pod_subnet6)
    out, i = [], 0
    while len(out) < count:
        if i >= 2 ** (spec.NODE_MASK6 - net.prefixlen):
            raise NetlabError(f"podSubnet {pod_subnet6} has no free /{spec.NODE_MASK6} left for a new node")
        cidr = str(ipaddress.ip_network((int(net.network_address) + (i << (128 - spec.NODE_MASK6)), spec.NODE_MASK6)))
        if cidr not in taken:
            out.append(cidr)
        i += 1
    return out


def lan_ip6(cluster, ip):
    """A LAN host's IPv6 address: Docker numbers a network's IPv6 hosts as it numbers its IPv4
    ones (gateway ::1, the first container ::2), so the host part is the IPv4 address's."""
    net4, net6 = (ipaddress.ip_network(n) for n in spec.segment_cidrs_of(cluster, ip))
    return str(net6.network_address + (int(ipaddress.ip_address(ip)) - int(net4.network_address)))


lan_gateway = spec.lan_gateway            # the LAN's plan is the lab file's: one definition
lan_external_ip = spec.lan_external_ip


def lan_holders(cluster, nodes=(), services=()):
    """Who holds each LAN address: the gateway, the external client, every node and every
    load balancer. Nodes and load balancers are both allocated against this one view, so a
    pool address never equals a node's, and a new node skips the load balancers'."""
    held = {lan_gateway(cluster.lan_cidr): "the LAN gateway", lan_external_ip(cluster.lan_cidr): "the external client"}
    held.update((lan_gateway(cidr), f"segment {i + 1}'s router") for i, (cidr, _, _) in
                enumerate(getattr(cluster, "lan_segments", ())))
    held.update((n.ip, f"node {n.name}") for n in nodes)
    held.update((s.load_balancer_ip, f"Service {s.key}") for s in services
                if s.type == "LoadBalancer" and s.load_balancer_ip)
    return held


def node_ips(cluster, held, node_names):
    """Addresses for new nodes, from .2 upwards as Docker hands them to kind's node
    containers, skipping every address held (lan_holders). Addresses outside the
    load-balancer pool go first, as kind users keep MetalLB's pool out of the nodes' way;
    a pool address no balancer holds is taken only when the LAN has no other left."""
    net = ipaddress.ip_network(cluster.lan_cidr)
    first, last = (int(ipaddress.ip_address(x)) for x in spec.lb_pool_range(cluster))
    outside = (str(h) for h in net.hosts() if not first <= int(h) <= last)
    inside = (str(ipaddress.ip_address(n)) for n in range(first, last + 1))   # inside the LAN: spec checks it
    free = (ip for group in (outside, inside) for ip in group if ip not in held)
    out = []
    for name in node_names:
        segment = spec.segment_of(cluster, name)
        if segment:                     # a node of another segment: that network's next address
            cidr = spec.segment_cidrs(cluster, segment)[0]
            ip = next((str(h) for h in ipaddress.ip_network(cidr).hosts() if str(h) not in held and str(h) not in out),
                      None)
            if ip is None:
                raise NetlabError(f"node {name} gets no address: segment {cidr} is full")
            out.append(ip)
            continue
        ip = next(free, None)
        if ip is None:
            raise NetlabError(f"node {name} gets no address: every address of the LAN {net} is held by its gateway, "
                              f"external client, nodes and load balancers (give the Lab a larger lan.cidr)")
        out.append(ip)
    return out


def gateway(pod_cidr):
    """The bridge plugin's gateway: the subnet's first address, on cni0."""
    return str(ipaddress.ip_network(pod_cidr).network_address + 1)


def host_local_next(pod_cidr, last_reserved, allocated):
    """host-local's round-robin: the first free address after the last one reserved.

    The range is .2 to .254 (the gateway .1 and the broadcast excluded); the search starts
    after `last_reserved` and wraps, so a freed address is reused only after a full turn.
    """
    net = ipaddress.ip_network(pod_cidr)
    gw = net.network_address + 1
    candidates = [h for h in net.hosts() if h != gw]
    start = 0
    if last_reserved is not None:
        last = ipaddress.ip_address(last_reserved)
        if last in net:
            start = next((i + 1 for i, h in enumerate(candidates) if h == last), 0)
    n = len(candidates)
    for i in range(n):
        ip = str(candidates[(start + i) % n])
        if ip not in allocated:
            return ip
    raise NetlabError(f"host-local: range {pod_cidr} is full ({n} addresses allocated)")


def host_local_next6(pod_cidr6, last_reserved, allocated):
    """host-local's round-robin over an IPv6 range: the first free address after the last one
    reserved, from ::2 (the gateway ::1 excluded) to the range's last address (an IPv6 range has
    no broadcast to leave out), wrapping."""
    net = ipaddress.ip_network(pod_cidr6)
    first, last = int(net.network_address) + 2, int(net.broadcast_address)
    start = first
    if last_reserved is not None and ipaddress.ip_address(last_reserved) in net:
        start = int(ipaddress.ip_address(last_reserved)) + 1
    count = last - first + 1
    for i in range(min(count, len(allocated) + 1)):
        ip = str(ipaddress.ip_address(first + (start - first + i) % count))
        if ip not in allocated:
            return ip
    raise NetlabError(f"host-local: range {pod_cidr6} is full")


def _static_band(size, divisor, cap):
    """The low band kept for addresses users ask for (KEP-3070 for ClusterIPs, KEP-3668 for
    NodePorts): dynamic allocation takes from above it first."""
    return min(max(16, size // divisor), cap)


def allocate_service_ip(service_subnet, taken, rng):
    """The API server's ClusterIP allocator: a random free address above the static band,
    then inside it when the upper part is full. The network address is never handed out, nor
    IPv4's broadcast address (an IPv6 range has none: its last address is a ClusterIP too)."""
    net = ipaddress.ip_network(service_subnet)
    first, size = int(net.network_address) + 1, net.num_addresses - (2 if net.version == 4 else 1)
    band = min(_static_band(size, 16, 256), size)          # a range of 16 or fewer is all one band
    for lo, hi in ((first + band, first + size - 1), (first, first + band - 1)):
        ip = _random_free(lo, hi, lambda n: str(type(net.network_address)(n)) in taken, rng)
        if ip is not None:
            return str(type(net.network_address)(ip))
    raise NetlabError(f"serviceSubnet {service_subnet} has no free ClusterIP left")


def allocate_node_port(port_range, taken, rng):
    lo, hi = port_range
    band = _static_band(hi - lo + 1, 32, 128)
    for a, b in ((lo + band, hi), (lo, lo + band - 1)):
        port = _random_free(a, b, lambda n: n in taken, rng)
        if port is not None:
            return port
    raise NetlabError(f"no free NodePort left in {lo}-{hi}")


def _random_free(lo, hi, is_taken, rng):
    """A random free value in [lo, hi]: a random start, then a linear scan, as the
    allocators' bitmaps do."""
    if hi < lo:
        return None
    count = hi - lo + 1
    start = rng.randrange(count)
    for i in range(count):
        value = lo + (start + i) % count
        if not is_taken(value):
            return value
    return None


def allocate_lb_ip(cluster, held, service, wanted=None):
    """The lowest pool address nobody holds (MetalLB's order), or the one asked for if it
    is in the pool and free. The pool is the lab's loadBalancer.pool or its default
    (spec.default_lb_pool). held: lan_holders() without this Service; service: its key."""
    first, last = spec.lb_pool_range(cluster)
    pool = f"{first}-{last}"
    lo, hi = int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))
    if wanted is not None:
        if not lo <= int(ipaddress.ip_address(wanted)) <= hi:
            raise NetlabError(f"Service {service}: loadBalancerIP {wanted} is not in the load-balancer pool {pool}")
        if wanted in held:
            raise NetlabError(f"Service {service}: loadBalancerIP {wanted} is already held by {held[wanted]}")
        return wanted
    for n in range(lo, hi + 1):
        ip = str(ipaddress.ip_address(n))
        if ip not in held:
            return ip
    if hi < lo:
        raise NetlabError(f"Service {service} gets no load-balancer address: the LAN {cluster.lan_cidr} has none "
                          f"left above its nodes (give the Lab a larger lan.cidr)")
    raise NetlabError(f"Service {service} gets no load-balancer address: every address of the pool {pool} is held "
                      f"(widen the Lab's loadBalancer.pool or lan.cidr)")


def lan_holders6(cluster, nodes=(), services=()):
    """Who holds each IPv6 address of a dual-stack LAN: the gateway's and the external
    client's twins, every node's ip6 and every load balancer's IPv6 address."""
    held = {lan_ip6(cluster, lan_gateway(cluster.lan_cidr)): "the LAN gateway",
            lan_ip6(cluster, lan_external_ip(cluster.lan_cidr)): "the external client"}
    held.update((n.ip6, f"node {n.name}") for n in nodes if n.ip6)
    held.update((s.load_balancer_ip_of("IPv6"), f"Service {s.key}") for s in services
                if s.type == "LoadBalancer" and s.load_balancer_ip_of("IPv6"))
    return held


def allocate_lb_ip6(cluster, held6, service, kept=None):
    """MetalLB's IPv6 address for a dual-stack (or IPv6) Service: the lowest address of the
    pool's IPv6 range nobody holds (its allocator walks each range of the Service's family
    from the first), or the one the Service already has. held6: lan_holders6() without this
    Service; service: its key."""
    first, last = spec.lb_pool6_range(cluster)
    lo, hi = int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))
    if kept is not None and lo <= int(ipaddress.ip_address(kept)) <= hi and kept not in held6:
        return kept
    for n in range(lo, hi + 1):
        ip = str(ipaddress.IPv6Address(n))
        if ip not in held6:
            return ip
    raise NetlabError(f"Service {service} gets no IPv6 load-balancer address: every address of the pool's IPv6 "
                      f"range {first}-{last} is held (widen the Lab's loadBalancer.pool)")
