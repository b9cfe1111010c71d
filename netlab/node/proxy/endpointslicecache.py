"""What kube-proxy's proxiers share (pkg/proxy): which Services it proxies
(ServiceChangeTracker), the endpoints it takes from their EndpointSlices
(EndpointSliceCache), and the UDP flows it clears after a sync (conntrack cleanup).
Pure functions of the Services and slices, whatever the mode.

In a dual-stack cluster kube-proxy runs one proxier per IP family (the MetaProxier): each
sees a Service through its own family (ServiceChangeTracker's per-family view: that
family's ClusterIP, external IPs, load balancer IPs and source ranges) and only the
EndpointSlices of its address type. `family` ("IPv4", "IPv6") selects the proxier; IPv4
is the default and reads the Services as a single-stack IPv4 cluster always has.
"""

import dataclasses
import ipaddress
from collections import defaultdict
from dataclasses import dataclass

from netlab.api.objects import SERVICE_NAME_LABEL

NO_PROXY_LABELS = ("service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless")


def port_name(service, port):
    """ServicePortName's string: "<namespace>/<name>[:<port name>]"."""
    return f"{service.namespace}/{service.name}" + (f":{port.name}" if port.name else "")


def proxied(service, family="IPv4"):
    """Whether the `family` proxier writes rules for a Service at all (a Service without a
    ClusterIP of the family has none in that family)."""
    return (service.type != "ExternalName" and service.cluster_ip not in (None, "None")
            and service.cluster_ip_of(family) is not None
            and not any(label in service.labels for label in NO_PROXY_LABELS))


def _of_family(ip, family):
    return (ipaddress.ip_network(ip, strict=False).version == 6) == (family == "IPv6")


def family_view(service, family="IPv4"):
    """The Service as the `family` proxier sees it: its ClusterIP of that family, and only
    the external IPs, load balancer IP and source ranges of that family (kube-proxy's
    ServiceChangeTracker drops the others, logging them). An IPv4 view of a Service with
    IPv4 fields only is the Service itself."""
    cluster_ip = service.cluster_ip_of(family)
    external_ips = tuple(ip for ip in service.external_ips if _of_family(ip, family))
    lb_ip = service.load_balancer_ip_of(family)       # a dual-stack Service's load balancer has one per family
    ranges = tuple(c for c in service.load_balancer_source_ranges if _of_family(c, family))
    if (cluster_ip, external_ips, lb_ip, ranges) == (service.cluster_ip, service.external_ips,
                                                     service.load_balancer_ip, service.load_balancer_source_ranges):
        return service
    return dataclasses.replace(service, cluster_ip=cluster_ip, external_ips=external_ips, load_balancer_ip=lb_ip,
                               load_balancer_source_ranges=ranges)


def join_host_port(ip, port):
    """Go's net.JoinHostPort: "ip:port", an IPv6 address in brackets ("[fd00::5]:80")."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def endpoint_ip(endpoint):
    """The address of an "ip:port" or "[ip6]:port" endpoint string."""
    return endpoint.rpartition(":")[0].strip("[]")


def slices_by_service(slices):
    """EndpointSliceCache's grouping: a Service's slices are those of its namespace labelled
    kubernetes.io/service-name=<its name>; a slice without the label is ignored."""
    out = defaultdict(list)
    for s in slices:
        name = s.labels.get(SERVICE_NAME_LABEL)
        if name:
            out[f"{s.namespace}/{name}"].append(s)
    return out


def ready_endpoints(slices, service_port, family="IPv4"):
    """What kube-proxy takes from a Service's slices for one service port: ("ip:port", node)
    of its ready endpoints, sorted by the "ip:port" string. The IPv6 proxier reads the
    slices of addressType IPv6 and writes its endpoints as "[ip]:port".

    EndpointSliceCache merges the slices' endpoints of the port (same name and protocol, a
    port number set), skipping endpoints without an address or of the other IP family, and
    keeps one endpoint per "ip:port" (the first seen: the controller never puts one address
    in two slices; kube-proxy would prefer a local duplicate). The proxier then routes to the
    ready ones: an unset ready condition counts as ready. (Serving-terminating endpoints, the
    fallback when none is ready, come with terminating pods.)"""
    merged, v6 = {}, family == "IPv6"
    for s in sorted(slices or (), key=lambda s: s.name):
        if v6 and s.address_type != "IPv6":
            continue                    # the MetaProxier hands each proxier its family's slices
        for port in s.ports:
            if port.name != service_port.name or port.protocol != service_port.protocol or not port.port:
                continue
            for e in s.endpoints:
                if not e.addresses or (":" in e.addresses[0]) != v6:
                    continue
                merged.setdefault(join_host_port(e.addresses[0], port.port), e)
    return sorted((ep, e.node or "") for ep, e in merged.items() if e.ready is not False)


def port_inputs(services, slices, family="IPv4"):
    """What each proxied service port's rules depend on, by ("<ns>/<name>[:<port>]", protocol):
    (the Service's `family` view, port, its ready endpoints). A sync plans again the ports
    whose inputs changed."""
    by_key = slices_by_service(slices)
    return {(port_name(s, p), p.protocol): (family_view(s, family), p,
                                            tuple(ready_endpoints(by_key.get(s.key), p, family)))
            for s in services if proxied(s, family) for p in s.ports}


def stale_udp_flows(old_services, old_slices, services, slices, family="IPv4"):
    """The conntrack entries kube-proxy deletes after a sync: UDP flows DNATed to an endpoint
    that is no longer ready for that service port (UDP has no connection to break, so a
    client would keep sending into the void). (destination IP or None, destination port,
    endpoint IP) triples: the cluster IP and port, each external IP, a load balancer's IP (a
    VIP the node answers, MetalLB's) and the NodePort."""
    old, new = port_inputs(old_services, old_slices, family), port_inputs(services, slices, family)
    flows = []
    for key, (svc, port, eps) in old.items():
        if port.protocol != "UDP":
            continue
        live = {e for e, _ in new[key][2]} if key in new else set()
        for endpoint in sorted({e for e, _ in eps} - live):
            ip = endpoint_ip(endpoint)
            flows.append((svc.cluster_ip_of(family), port.port, ip))
            flows += [(external, port.port, ip) for external in svc.external_ips]
            if svc.load_balancer_ip:
                flows.append((svc.load_balancer_ip, port.port, ip))
            if port.node_port:
                flows.append((None, port.node_port, ip))
    return flows


@dataclass(frozen=True)
class Categorized:
    """What both proxiers decide for one service port on one node before writing a rule
    (the proxiers' shared part of syncProxyRules, with CategorizeEndpoints)."""
    lb_vips: tuple                 # load balancer IPs kube-proxy captures (ipMode VIP)
    externally_accessible: bool    # a NodePort, an external IP or a captured LB IP
    external_local: bool           # externalTrafficPolicy Local applies
    internal_local: bool           # internalTrafficPolicy Local
    cluster_eps: list              # the endpoints of the cluster-wide chain
    local_eps: list                # this node's, for the Local chain
    has_endpoints: bool
    has_internal: bool             # internal traffic has somewhere to go
    has_external: bool             # external traffic has somewhere to go


def categorize(svc, port, eps, node_name):
    """`eps`: ("ip:port", node name) of the port's ready endpoints, sorted."""
    lb_vips = (svc.load_balancer_ip,) if svc.load_balancer_ip and svc.load_balancer_ip_mode == "VIP" else ()
    externally_accessible = bool(port.node_port or svc.external_ips or lb_vips)
    external_local = externally_accessible and svc.external_traffic_policy == "Local"
    internal_local = svc.internal_traffic_policy == "Local"
    uses_cluster = not internal_local or externally_accessible
    uses_local = internal_local or external_local
    local_eps = [e for e in eps if e[1] == node_name] if uses_local else []
    has_endpoints = bool(eps)
    return Categorized(lb_vips, externally_accessible, external_local, internal_local,
                       list(eps) if uses_cluster else [], local_eps, has_endpoints,
                       has_endpoints and (not internal_local or bool(local_eps)),
                       has_endpoints and (not external_local or bool(local_eps)))
