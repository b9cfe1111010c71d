"""IPAM: the node podCIDR allocator, host-local pod IPs, and the LAN's node addresses.

Pure functions of the current allocations; the store records their results.
"""

import ipaddress

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


def lan_gateway(lan_cidr):
    """The LAN's first address, as Docker gives kind's network its gateway (172.18.0.1)."""
    return str(next(ipaddress.ip_network(lan_cidr).hosts()))


def lan_external_ip(lan_cidr):
    """The client host on the LAN takes the LAN's last host address."""
    net = ipaddress.ip_network(lan_cidr)
    return str(net.broadcast_address - 1)


def node_ips(lan_cidr, taken, count):
    """Node addresses from .2 upwards, as Docker hands them to kind's node containers."""
    net = ipaddress.ip_network(lan_cidr)
    reserved = {lan_gateway(lan_cidr), lan_external_ip(lan_cidr)} | set(taken)
    hosts = (str(h) for h in net.hosts() if str(h) not in reserved)
    return [next(hosts) for _ in range(count)]


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


def _static_band(size, divisor, cap):
    """The low band kept for addresses users ask for (KEP-3070 for ClusterIPs, KEP-3668 for
    NodePorts): dynamic allocation takes from above it first."""
    return min(max(16, size // divisor), cap)


def allocate_service_ip(service_subnet, taken, rng):
    """The API server's ClusterIP allocator: a random free address above the static band,
    then inside it when the upper part is full."""
    net = ipaddress.ip_network(service_subnet)
    first, size = int(net.network_address) + 1, net.num_addresses - 2
    band = _static_band(size, 16, 256)
    for lo, hi in ((first + band, first + size - 1), (first, first + band - 1)):
        ip = _random_free(lo, hi, lambda n: str(ipaddress.ip_address(n)) in taken, rng)
        if ip is not None:
            return str(ipaddress.ip_address(ip))
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


def lb_pool(cluster):
    """The load-balancer addresses, in allocation order: the lab's pool, or the LAN's
    .255.200-.255.250 (the range kind users give MetalLB), below the external client."""
    if cluster.lb_pool:
        first, last = (ipaddress.ip_address(x) for x in cluster.lb_pool.split("-"))
    else:
        top = ipaddress.ip_network(cluster.lan_cidr).broadcast_address
        first, last = top - 55, top - 5
    return [str(ipaddress.ip_address(i)) for i in range(int(first), int(last) + 1)]


def allocate_lb_ip(cluster, taken, wanted=None):
    """The lowest free pool address (MetalLB's order), or the one asked for if it is free."""
    pool = lb_pool(cluster)
    if wanted is not None:
        if wanted not in pool:
            raise NetlabError(f"loadBalancerIP {wanted} is not in the pool {pool[0]}-{pool[-1]}")
        if wanted in taken:
            raise NetlabError(f"loadBalancerIP {wanted} is already allocated")
        return wanted
    for ip in pool:
        if ip not in taken:
            return ip
    raise NetlabError(f"the load-balancer pool {pool[0]}-{pool[-1]} is exhausted")
