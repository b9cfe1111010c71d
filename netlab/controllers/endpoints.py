"""The endpoints controller: for each Service with a selector, the ready and not-ready pods
it selects, with each service port's targetPort resolved against the pod's containers.

Pure: a function of the Service and the pods. As kube-controller-manager does, a pod whose
containers have no port of a named targetPort is left out of that port, addresses are
grouped into subsets by the ports they offer, and a pod without an IP is skipped.
"""

from netlab.api.objects import Address, Endpoints, Port, Subset


def selects(service, pod):
    return (service.selector is not None and pod.namespace == service.namespace
            and all(pod.labels.get(k) == v for k, v in service.selector.items()))


def find_port(pod, service_port):
    """podutil.FindPort: a number is used as is; a name is looked up among the containers'
    ports of the same protocol. None when the pod has no such port."""
    target = service_port.target_port
    if isinstance(target, int):
        return target
    for c in pod.template.containers:
        for p in c.ports:
            if p.name == target and p.protocol == service_port.protocol:
                return p.container_port
    return None


def for_service(service, pods):
    """The Endpoints object of a Service with a selector (None for a Service without one). It
    holds one family, the Service's primary (podToEndpointAddressForService: ipFamilies[0]);
    a pod without an IP of that family is left out."""
    if service.selector is None:
        return None
    v6 = service.families[0] == "IPv6"
    offers = {}        # (address, ready) -> set of Port
    for pod in pods:
        ip = pod.ip6 if v6 else pod.ip
        if not selects(service, pod) or not ip:
            continue
        hostname = pod.template.hostname if pod.template.subdomain == service.name else None
        address = Address(ip, pod.node, pod.name, pod.uid, hostname)
        ports = set()
        for sp in service.ports:
            number = find_port(pod, sp)
            if number is not None:
                ports.add(Port(sp.name, number, sp.protocol))
        if service.ports and not ports:
            continue
        offers[(address, pod.ready)] = frozenset(ports)
    return Endpoints(service.namespace, service.name, _repack(offers))


def _repack(offers):
    """endpoints.RepackSubsets: one subset per distinct set of ports."""
    groups = {}
    for (address, ready), ports in offers.items():
        ready_list, not_ready = groups.setdefault(ports, ([], []))
        (ready_list if ready else not_ready).append(address)
    subsets = [Subset(tuple(sorted(r, key=lambda a: (a.ip, a.uid))),
                      tuple(sorted(n, key=lambda a: (a.ip, a.uid))),
                      tuple(sorted(ports, key=lambda p: (p.name, p.port, p.protocol))))
               for ports, (r, n) in groups.items()]
    return tuple(sorted(subsets, key=lambda s: ([(p.name, p.port, p.protocol) for p in s.ports],
                                                (s.addresses + s.not_ready)[0].ip)))


def kubernetes(control_plane_ip):
    """default/kubernetes: the API server writes it itself, one address per API server."""
    return Endpoints("default", "kubernetes",
                     (Subset(addresses=(Address(control_plane_ip, "", "", ""),),
                             ports=(Port("https", 6443, "TCP"),)),))


def ready_endpoints(endpoints, service_port):
    """What kube-proxy takes from an Endpoints object for one service port: the ready
    "ip:port" endpoints with their node, sorted by their "ip:port" string as kube-proxy sorts them."""
    out = []
    for subset in endpoints.subsets if endpoints else ():
        for port in subset.ports:
            if port.name == service_port.name and port.protocol == service_port.protocol:
                out += [(f"{a.ip}:{port.port}", a.node) for a in subset.addresses]
    return sorted(set(out))
