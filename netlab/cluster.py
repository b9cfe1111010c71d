"""Controllers that turn a LabSpec into cluster state: node registration (kind + the node
IPAM controller), the Deployment controller, the scheduler, and host-local allocations.

Pure: the same spec and random source give the same state. Nothing here touches the kernel.
"""

import dataclasses
import ipaddress
import random
import secrets

from netlab import coredns, deployment, endpoints, ipam, names, scheduler
from netlab.errors import NetlabError
from netlab.etcd import ClusterState, Deployment, HostLocal, Node, Pod
from netlab.spec import NODE_PORT_RANGE, ServiceManifest, ServicePort


def random_mac(rng):
    """A random unicast, locally administered MAC, as the kernel gives a new vxlan device."""
    b = [rng.randrange(256) for _ in range(6)]
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def new_state(spec, rng=None):
    rng = rng or random.Random(secrets.randbits(64))
    c = spec.cluster
    state = ClusterState(lab=c.name, cluster=c)
    node_names = c.node_names
    cidrs = ipam.node_pod_cidrs(c.pod_subnet, set(), len(node_names))
    ips = ipam.node_ips(c.lan_cidr, set(), len(node_names))
    has_workers = "worker" in c.roles
    for name, role, cidr, ip in zip(node_names, c.roles, cidrs, ips):
        state.nodes.append(Node(name, role, ip, cidr, random_mac(rng),
                                scheduler.node_labels(name, role), scheduler.node_taints(role, has_workers)))
        state.ipam[name] = HostLocal()
    dns_deployment, dns_service = coredns.addon(c)    # kubeadm's addon, before any workload
    add_deployment(state, dns_deployment, rng)
    for p in spec.pods:
        add_pod(state, p.namespace, p.name, p.template, rng=rng)
    for d in spec.deployments:
        add_deployment(state, d, rng)
    add_service(state, kubernetes_service(c), rng)
    add_service(state, dns_service, rng)
    # Addresses asked for are taken before any is handed out, so a random pick never
    # steals one a later manifest names.
    for s in sorted(spec.services, key=lambda s: s.cluster_ip in (None, "None")):
        add_service(state, s, rng)
    sync_endpoints(state)
    state.netns = [state.lan_netns(), state.external_netns()] + [n.netns for n in state.nodes]
    state.netns += [p.netns for p in state.pods]
    return state


def add_deployment(state, manifest, rng):
    h = deployment.template_hash(manifest.template)
    state.deployments.append(Deployment(manifest.namespace, manifest.name, manifest.replicas,
                                        manifest.match_labels, manifest.template, h))
    _add_replicas(state, state.deployments[-1], manifest.replicas, rng)


def _add_replicas(state, d, count, rng):
    """The ReplicaSet controller creating `count` pods from the Deployment's template."""
    labels = {**d.template.labels, "pod-template-hash": d.template_hash}
    template = type(d.template)(**{**d.template.__dict__, "labels": labels})
    taken = {p.name for p in state.pods if p.namespace == d.namespace}
    added = []
    for _ in range(count):
        name = deployment.pod_name(d.name, d.template_hash, rng)
        while name in taken:
            name = deployment.pod_name(d.name, d.template_hash, rng)
        taken.add(name)
        added.append(add_pod(state, d.namespace, name, template, owner=f"Deployment/{d.name}", rng=rng))
    return added


def replicas_of(state, d):
    return [p for p in state.pods if p.namespace == d.namespace and p.owner == f"Deployment/{d.name}"]


def scale(state, namespace, name, replicas, rng=None):
    """`kubectl scale`: the ReplicaSet adds pods, or deletes the ones it ranks first — not
    ready before ready, then those sharing a node with more replicas, then the newest.
    Returns (added, removed) pods; endpoints follow."""
    rng = rng or random.Random(secrets.randbits(64))
    d = next((x for x in state.deployments if x.namespace == namespace and x.name == name), None)
    if d is None:
        raise NetlabError(f"lab {state.lab}: no deployment {namespace}/{name}")
    pods = replicas_of(state, d)
    added, removed = [], []
    if replicas > len(pods):
        added = _add_replicas(state, d, replicas - len(pods), rng)
    elif replicas < len(pods):
        order = {p.key: i for i, p in enumerate(state.pods)}
        per_node = {}
        for p in pods:
            per_node[p.node] = per_node.get(p.node, 0) + 1
        ranked = sorted(pods, key=lambda p: (p.ready, -per_node[p.node], -order[p.key]))
        removed = ranked[:len(pods) - replicas]
        for p in removed:
            remove_pod(state, p)
    d.replicas = replicas
    state.netns = [n for n in state.netns if n not in {p.netns for p in removed}]
    state.netns += [p.netns for p in added]
    sync_endpoints(state)
    return added, removed


def remove_pod(state, pod):
    """The pod is gone from the API; host-local releases its address (CNI DEL)."""
    state.pods.remove(pod)
    state.ipam[pod.node].allocated.pop(pod.ip, None)


def add_pod(state, namespace, name, template, owner=None, rng=None):
    """Schedule a pod, then do what the CNI ADD will do with it: pick its veth name and IP."""
    rng = rng or random.Random(secrets.randbits(64))
    node = scheduler.place(template, state.nodes, state.pods, owner=owner)
    container_id = "%064x" % rng.getrandbits(256)
    pool = state.ipam.setdefault(node, HostLocal())
    ip = ipam.host_local_next(state.node(node).pod_cidr, pool.last_reserved, pool.allocated)
    pool.allocated[ip] = container_id
    pool.last_reserved = ip
    pod = Pod(namespace=namespace, name=name, uid=deployment.uid(container_id), node=node, template=template,
              container_id=container_id, host_veth=names.veth_name("%08x" % rng.getrandbits(32)),
              netns=names.pod_netns(state.lab, namespace, name), ip=ip, owner=owner)
    state.pods.append(pod)
    return pod


def kubernetes_service(cluster):
    """default/kubernetes, which the API server creates at the first address of the range."""
    ip = str(ipaddress.ip_network(cluster.service_subnet).network_address + 1)
    return ServiceManifest("default", "kubernetes", {"component": "apiserver", "provider": "kubernetes"},
                           cluster_ip=ip, ports=(ServicePort(443, "TCP", "https", 6443),))


def add_service(state, manifest, rng):
    """The API server's part: allocate the ClusterIP and NodePorts a Service asks for."""
    if any(s.key == manifest.key for s in state.services):
        raise NetlabError(f"Service {manifest.key} already exists")
    ips = {s.cluster_ip for s in state.services}
    ports = {p.node_port for s in state.services for p in s.ports if p.node_port}
    ip = manifest.cluster_ip
    if manifest.type == "ExternalName":
        ip = None
    elif ip is None:
        ip = ipam.allocate_service_ip(state.cluster.service_subnet, ips | _reserved_ips(state.cluster), rng)
    elif ip != "None" and ip in ips:
        raise NetlabError(f"Service {manifest.key}: clusterIP {ip} is already allocated")
    allocated, by_port = [], {}
    for p in manifest.ports:
        # Ports sharing a number (TCP and UDP) share a NodePort unless they name their own.
        requested = next((q.node_port for q in manifest.ports if q.port == p.port and q.node_port), None)
        node_port = p.node_port or by_port.get(p.port) or requested
        if node_port is None and manifest.type == "NodePort":
            node_port = ipam.allocate_node_port(NODE_PORT_RANGE, ports | set(by_port.values()), rng)
        if node_port in ports:
            raise NetlabError(f"Service {manifest.key}: nodePort {node_port} is already allocated")
        by_port[p.port] = node_port
        allocated.append(dataclasses.replace(p, node_port=node_port))
    service = dataclasses.replace(manifest, cluster_ip=ip, ports=tuple(allocated),
                                  created=manifest.created or state.created)
    state.services.append(service)
    return service


def _reserved_ips(cluster):
    base = ipaddress.ip_network(cluster.service_subnet).network_address
    return {str(base + 1), str(base + 10)}


def sync_endpoints(state):
    """The endpoints controller's pass over every Service, and the API server's own
    default/kubernetes endpoints (the control plane's node IP, port 6443)."""
    control_plane = next(n for n in state.nodes if n.role == "control-plane")
    out = [endpoints.kubernetes(control_plane.ip)]
    for s in state.services:
        if s.selector is not None:
            out.append(endpoints.for_service(s, state.pods))
    state.endpoints = out
