"""Controllers that turn a LabSpec into cluster state: node registration (kind + the node
IPAM controller), the Deployment controller, the scheduler, and host-local allocations.

Pure: the same spec and random source give the same state. Nothing here touches the kernel.
"""

import dataclasses
import ipaddress
import json
import random
import re
import secrets

from netlab import names
from netlab.api import spec
from netlab.api.objects import ClusterState, Deployment, HostLocal, Node, Pod
from netlab.api.spec import NODE_PORT_RANGE, ServiceManifest, ServicePort
from netlab.controllers import deployment, endpoints, endpointslice, ipam, kubeadm, scheduler
from netlab.errors import NetlabError, SpecError


def balancers(state):
    """The Services that get a cloud load balancer of their own (the cloud controller
    manager's service controller asks the cloud for one): LoadBalancers of ipMode Proxy."""
    return [s for s in state.services if s.type == "LoadBalancer" and s.load_balancer_ip_mode == "Proxy"]


def random_mac(rng):
    """A random unicast, locally administered MAC, as the kernel gives a new vxlan device."""
    b = [rng.randrange(256) for _ in range(6)]
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def new_state(spec, rng=None, log=None):
    """The lab's first state. `log` gets the scheduler's FailedScheduling events of pods no
    node can take (they stay Pending)."""
    rng = rng or random.Random(secrets.randbits(64))
    c = spec.cluster
    state = ClusterState(lab=c.name, cluster=c)
    node_names = c.node_names
    cidrs = ipam.node_pod_cidrs(c.pod_subnet, set(), len(node_names)) if c.ipv4 else [""] * len(node_names)
    cidrs6 = ipam.node_pod_cidrs6(c.pod_subnet6, set(), len(node_names)) if c.ipv6 else [""] * len(node_names)
    ips = ipam.node_ips(c, ipam.lan_holders(c), node_names)
    has_workers = "worker" in c.roles
    for name, role, cidr, cidr6, ip in zip(node_names, c.roles, cidrs, cidrs6, ips):
        state.nodes.append(Node(name, role, ip, cidr, random_mac(rng),
                                scheduler.node_labels(name, role), scheduler.node_taints(role, has_workers),
                                ip6=ipam.lan_ip6(c, ip) if c.ipv6 else "", pod_cidr6=cidr6))
        state.ipam[name] = HostLocal()
    dns_deployment, dns_service = kubeadm.coredns_addon(c)    # kubeadm's addon, before any workload
    add_deployment(state, dns_deployment, rng, log)
    if c.ingress:
        ingress_deployment, ingress_service = kubeadm.ingress_addon(c)
        add_deployment(state, ingress_deployment, rng, log)
    for p in spec.pods:
        add_pod(state, p.namespace, p.name, p.template, rng=rng, log=log)
    for d in spec.deployments:
        add_deployment(state, d, rng, log)
    add_service(state, kubernetes_service(c), rng)
    add_service(state, dns_service, rng)
    if c.ingress:
        add_service(state, ingress_service, rng)
    state.ingresses = [dataclasses.replace(i, created=state.created) for i in spec.ingresses]
    state.network_policies = [dataclasses.replace(p, created=state.created) for p in spec.network_policies]
    for n in spec.namespaces:
        state.namespaces[n.name] = {"labels": dict(n.labels), "created": state.created}
    # Addresses asked for are taken before any is handed out, so a random pick never
    # steals one a later manifest names.
    reserved = asked_ports(spec.services)
    for s in sorted(spec.services, key=lambda s: s.cluster_ip in (None, "None")):
        add_service(state, s, rng, reserved)
    sync_endpoints(state, rng)
    if log is not None:                  # the ReplicaSets' and the scheduler's events of the first pods
        for d in state.deployments:
            _log_pods(log, d, replicas_of(state, d), [])
        log += [("Scheduled", f"pod/{p.name}", p.namespace, f"Successfully assigned {p.key} to {p.node}")
                for p in state.scheduled_pods()]
    state.netns = [state.lan_netns(), state.external_netns()] + [names.lb_netns(c.name, s.key) for s in balancers(state)]
    state.netns += [n.netns for n in state.nodes] + [p.netns for p in state.scheduled_pods()]
    return state


def add_deployment(state, manifest, rng, log=None):
    h = deployment.template_hash(manifest.template)
    state.deployments.append(Deployment(manifest.namespace, manifest.name, manifest.replicas,
                                        manifest.match_labels, manifest.template, h))
    _add_replicas(state, state.deployments[-1], manifest.replicas, rng, log)


def _add_replicas(state, d, count, rng, log=None):
    """The ReplicaSet controller creating `count` pods from the Deployment's template; the
    scheduler places each (one cache for them all)."""
    labels = {**d.template.labels, "pod-template-hash": d.template_hash}
    template = type(d.template)(**{**d.template.__dict__, "labels": labels})
    taken = {p.name for p in state.pods if p.namespace == d.namespace}
    cache = scheduler.Cache(state.nodes, state.pods)
    added = []
    for _ in range(count):
        name = deployment.pod_name(d.name, d.template_hash, rng)
        while name in taken:
            name = deployment.pod_name(d.name, d.template_hash, rng)
        taken.add(name)
        added.append(add_pod(state, d.namespace, name, template, owner=f"Deployment/{d.name}", rng=rng, log=log,
                             cache=cache))
    return added


def replicas_of(state, d):
    return [p for p in state.pods if p.namespace == d.namespace and p.owner == f"Deployment/{d.name}"]


def deployment_named(state, namespace, name):
    d = next((x for x in state.deployments if x.namespace == namespace and x.name == name), None)
    if d is None:
        raise NetlabError(f'deployments.apps "{name}" not found in namespace {namespace}')
    return d


def scale(state, namespace, name, replicas, rng=None, log=None):
    """`kubectl scale`: the ReplicaSet adds pods, or deletes the ones it ranks first — not
    ready before ready, then those sharing a node with more replicas, then the newest.
    Returns (added, removed) pods; endpoints follow. Events go to `log`."""
    rng = rng or random.Random(secrets.randbits(64))
    d = deployment_named(state, namespace, name)
    pods = replicas_of(state, d)
    if log is not None and replicas != len(pods):
        way = "up" if replicas > len(pods) else "down"
        log.append(("ScalingReplicaSet", f"deployment/{d.name}", d.namespace,
                    f"Scaled {way} replica set {d.name}-{d.template_hash} from {len(pods)} to {replicas}"))
    added, removed = [], []
    if replicas > len(pods):
        added = _add_replicas(state, d, replicas - len(pods), rng, log)
    elif replicas < len(pods):
        order = {p.key: i for i, p in enumerate(state.pods)}
        per_node = {}
        for p in pods:
            per_node[p.node] = per_node.get(p.node, 0) + 1
        # Unassigned (Pending) pods first, then not ready, then crowded nodes, then the newest.
        ranked = sorted(pods, key=lambda p: (p.node is not None, p.ready, -per_node[p.node], -order[p.key]))
        removed = ranked[:len(pods) - replicas]
        for p in removed:
            remove_pod(state, p)
    d.replicas = replicas
    _log_pods(log, d, added, removed)
    if removed:
        schedule_pending(state, rng, log)            # the slots they held
    sync_endpoints(state, rng)
    return added, removed


def _log_pods(log, d, added, removed):
    if log is None:
        return
    rs = f"replicaset/{d.name}-{d.template_hash}"
    log += [("SuccessfulCreate", rs, d.namespace, f"Created pod: {p.name}") for p in added]
    log += [("SuccessfulDelete", rs, d.namespace, f"Deleted pod: {p.name}") for p in removed]


def remove_pod(state, pod):
    """The pod is gone from the API; host-local releases its address (CNI DEL). A Pending pod
    had neither."""
    state.pods.remove(pod)
    if pod.netns in state.netns:
        state.netns.remove(pod.netns)
    if pod.node in state.ipam:
        for ip in pod.ips:
            state.ipam[pod.node].allocated.pop(ip, None)


def set_ready(state, namespace, name, ready, log=None):
    """A pod's readiness (what its readiness probe would decide); endpoints follow."""
    pod = state.pod(namespace, name)
    if pod.ready != ready:
        pod.ready = ready
        if log is not None:
            log.append(("Ready" if ready else "Unhealthy", f"pod/{name}", namespace,
                        "Readiness probe succeeded" if ready else "Readiness probe failed"))
    sync_endpoints(state)
    return pod


# --- apply and delete ----------------------------------------------------------------------

def apply(state, lab_spec, rng=None, log=None, now="", namespaces=()):
    """`kubectl apply`: create what is new, update what exists (as the API allows).
    `namespaces`: those the lab has now (a Namespace among them was there from the lab's start)."""
    rng = rng or random.Random(secrets.randbits(64))
    log = [] if log is None else log
    lab_spec = dataclasses.replace(lab_spec, services=tuple(dataclasses.replace(s, created=now)
                                                            for s in lab_spec.services))
    if lab_spec.flannel is not None:
        apply_flannel_backend(state, lab_spec.flannel, log)
    for n in lab_spec.namespaces:
        apply_namespace(state, n.name, n.labels, state.created if n.name in namespaces else now)
    for m in lab_spec.pods:
        existing = next((p for p in state.pods if p.namespace == m.namespace and p.name == m.name), None)
        if existing is None:
            pod = add_pod(state, m.namespace, m.name, m.template, rng=rng, log=log)
            if pod.node is not None:
                log.append(("Scheduled", f"pod/{m.name}", m.namespace, f"Successfully assigned {pod.key} to {pod.node}"))
        elif existing.template != m.template:
            if dataclasses.replace(existing.template, labels=m.template.labels) != m.template:
                raise NetlabError(f"Pod {existing.key}: updates may not change fields other than its labels "
                                  "(delete it and apply it again)")
            relabel_pod(state, existing, m.template.labels, rng, log)
    for m in lab_spec.deployments:
        existing = next((d for d in state.deployments if d.namespace == m.namespace and d.name == m.name), None)
        if existing is None:
            add_deployment(state, m, rng, log)
            d = state.deployments[-1]
            _log_pods(log, d, replicas_of(state, d), [])
        else:
            _update_deployment(state, existing, m, rng, log)
    for m in sorted(lab_spec.services, key=lambda s: s.cluster_ip in (None, "None")):
        _apply_service(state, m, rng, log, asked_ports(lab_spec.services))
    for m in lab_spec.ingresses:
        old = next((i for i in state.ingresses if i.key == m.key), None)
        if old is not None:
            state.ingresses.remove(old)
        state.ingresses.append(dataclasses.replace(m, created=old.created if old else now))
        log.append(("Sync" if old else "Created", f"ingress/{m.name}", m.namespace, "Scheduled for sync"))
    for m in lab_spec.network_policies:
        apply_network_policy(state, m, now)
    schedule_pending(state, rng, log)                # slots an update freed
    sync_endpoints(state, rng, now)


def apply_flannel_backend(state, fields, log):
    """kube-flannel-cfg changed: every node's flanneld restarts on the new net-conf.json (the
    DaemonSet rolled), and each node converges from the old backend's layout to the new
    one's (the lab's converge removes the devices and routes no plan has any more)."""
    old = state.cluster
    state.cluster = dataclasses.replace(old, **fields)
    if state.cluster != old:
        log.append(("BackendChanged", "configmap/kube-flannel-cfg", "kube-flannel",
                    f"flanneld runs the {state.cluster.flannel_backend} backend (was {old.flannel_backend})"))


def apply_namespace(state, name, labels, created=""):
    """A Namespace created or its labels replaced (what NetworkPolicies' namespaceSelectors
    read); `created`: when it came to be, if this makes it (a namespace keeps its own).
    kubernetes.io/metadata.name is the API server's, always the name: it is not stored, and
    a value given for it is dropped (SetDefaults_Namespace overwrites it)."""
    old = state.namespaces.get(name, {})
    labels = {k: v for k, v in labels.items() if k != "kubernetes.io/metadata.name"}
    state.namespaces[name] = {"labels": labels, "created": old.get("created") or created or state.created}


def apply_network_policy(state, m, now=""):
    """A NetworkPolicy created or replaced (its creation time kept): the policy agents
    converge from the state, so no controller acts on it here."""
    old = next((p for p in state.network_policies if p.key == m.key), None)
    if old is not None:
        state.network_policies.remove(old)
    state.network_policies.append(dataclasses.replace(m, created=old.created if old else (now or state.created)))


def _selects(d, labels):
    """The ReplicaSet's selector: the Deployment's matchLabels and its pod-template-hash."""
    wanted = {**d.match_labels, "pod-template-hash": d.template_hash}
    return all(labels.get(k) == v for k, v in wanted.items())


def relabel_pod(state, pod, labels, rng=None, log=None):
    """A pod's labels changed (`kubectl label pod`): Services' endpoints and NetworkPolicies
    follow them. A Deployment's pod whose labels leave its ReplicaSet's selector is released
    by it, as the ReplicaSet controller releases it (its ownerReference goes; the pod keeps
    running), and the ReplicaSet makes a replacement to keep its replicas. (A pod whose new
    labels come to match a ReplicaSet it is not owned by is not adopted.)"""
    pod.template = dataclasses.replace(pod.template, labels=dict(labels))
    d = next((x for x in state.deployments if x.namespace == pod.namespace and f"Deployment/{x.name}" == pod.owner),
             None)
    if d is not None and not _selects(d, pod.template.labels):
        pod.owner = None
        _log_pods(log, d, _add_replicas(state, d, 1, rng or random.Random(secrets.randbits(64)), log), [])


def _update_deployment(state, d, m, rng, log):
    if m.match_labels != d.match_labels:
        raise NetlabError(f"Deployment {d.namespace}/{d.name}: spec.selector is immutable")
    new_hash = deployment.template_hash(m.template)
    if new_hash != d.template_hash:
        # A new template: a new ReplicaSet takes over. The end state of a rollout — every
        # pod from the new template — reached at once rather than surge by surge.
        old = replicas_of(state, d)
        for p in old:
            remove_pod(state, p)
        d.template, d.template_hash = m.template, new_hash
        added = _add_replicas(state, d, m.replicas, rng, log)
        log.append(("ScalingReplicaSet", f"deployment/{d.name}", d.namespace,
                    f"Scaled up replica set {d.name}-{new_hash} to {m.replicas}"))
        _log_pods(log, d, added, old)
        d.replicas = m.replicas
    elif m.replicas != d.replicas:
        scale(state, d.namespace, d.name, m.replicas, rng, log)


def _apply_service(state, m, rng, log, reserved_ports=frozenset()):
    old = next((s for s in state.services if s.key == m.key), None)
    if old is None:
        add_service(state, m, rng, reserved_ports)
        log.append(("Created", f"service/{m.name}", m.namespace, f"ClusterIP {state.services[-1].cluster_ip}"))
        return
    kept = {(p.port, p.protocol): p.node_port for p in old.ports}
    ports = tuple(p if p.node_port or m.type != "NodePort" else dataclasses.replace(p, node_port=kept.get((p.port, p.protocol)))
                  for p in m.ports)
    kept_lb = {}
    if m.type == old.type == "LoadBalancer":
        kept_lb = {"load_balancer_ip": m.load_balancer_ip or old.load_balancer_ip,
                   "load_balancer_ips": old.load_balancer_ips,           # a dual-stack lab's IPv6 one kept too
                   "health_check_node_port": m.health_check_node_port or (
                       old.health_check_node_port if m.external_traffic_policy == "Local" else None)}
    _remove_service(state, old)
    try:
        add_service(state, dataclasses.replace(m, ports=ports, created=old.created, **kept_lb), rng, reserved_ports,
                    old=old)
    except NetlabError:
        state.services.append(old)
        if old in balancers(state) and names.lb_netns(state.lab, old.key) not in state.netns:
            state.netns.insert(2, names.lb_netns(state.lab, old.key))
        raise
    if state.services[-1] != old:
        log.append(("Updated", f"service/{m.name}", m.namespace, "spec changed"))


def _remove_service(state, svc):
    """The Service goes, and with it its cloud load balancer."""
    if svc in balancers(state) and names.lb_netns(state.lab, svc.key) in state.netns:
        state.netns.remove(names.lb_netns(state.lab, svc.key))
    state.services.remove(svc)


# Objects the cluster's own components made and depend on. On a real cluster deleting them is
# allowed, and then kubeadm does not bring the CoreDNS addon back: netlab refuses instead.
_DNS = ("kubeadm's CoreDNS addon", "breaks cluster DNS")
MANAGED = {
    ("service", "default", "kubernetes"): ("the API server", "cuts pods off the API until the API server recreates it"),
    ("service", "kube-system", "kube-dns"): _DNS,
    ("deployment", "kube-system", "coredns"): _DNS,
}


def check_deletable(kind, namespace, name):
    """Refuse deleting an object MANAGED names, in one sentence."""
    if (kind, namespace, name) in MANAGED:
        manager, consequence = MANAGED[(kind, namespace, name)]
        raise NetlabError(f"{kind.capitalize()} {namespace}/{name} is managed by {manager}: "
                          f"deleting it {consequence} (netlab keeps it)")


def delete(state, kind, namespace, name, rng=None, log=None):
    """`kubectl delete KIND/NAME`. A Deployment's pod is replaced by its ReplicaSet."""
    rng = rng or random.Random(secrets.randbits(64))
    log = [] if log is None else log
    check_deletable(kind, namespace, name)
    if kind == "pod":
        pod = state.pod(namespace, name)
        remove_pod(state, pod)
        log.append(("Killing", f"pod/{name}", namespace, "Stopping container"))
        schedule_pending(state, rng, log)            # older Pending pods first, as the queue orders them
        d = next((x for x in state.deployments if x.namespace == namespace and f"Deployment/{x.name}" == pod.owner), None)
        if d is not None:
            _log_pods(log, d, _add_replicas(state, d, 1, rng, log), [])
    elif kind == "deployment":
        d = deployment_named(state, namespace, name)
        pods = replicas_of(state, d)
        for p in pods:
            remove_pod(state, p)
        state.deployments.remove(d)
        _log_pods(log, d, [], pods)
        schedule_pending(state, rng, log)
    elif kind == "ingress":
        ing = next((i for i in state.ingresses if i.namespace == namespace and i.name == name), None)
        if ing is None:
            raise NetlabError(f'ingresses.networking.k8s.io "{name}" not found in namespace {namespace}')
        state.ingresses.remove(ing)
        log.append(("Deleted", f"ingress/{name}", namespace, "deleted"))
    elif kind == "service":
        _remove_service(state, state.service(namespace, name))
        log.append(("Deleted", f"service/{name}", namespace, "deleted"))
    elif kind == "networkpolicy":
        policy = next((p for p in state.network_policies if p.namespace == namespace and p.name == name), None)
        if policy is None:
            raise NetlabError(f'networkpolicies.networking.k8s.io "{name}" not found in namespace {namespace}')
        state.network_policies.remove(policy)
    else:
        raise NetlabError(f"cannot delete {kind!r} (pods, deployments, services, ingresses and networkpolicies "
                          f"can be deleted)")
    sync_endpoints(state, rng)


# --- nodes ---------------------------------------------------------------------------------

LB_PORT = re.compile(r"^lb[0-9a-f]{8}$")        # names.lb_lan_port's shape: a load balancer's LAN port


def _check_node_name(state, full):
    """Refuse a node whose namespace or LAN port would be one the lab itself uses (its LAN,
    its external client, a load balancer, the switch's bridge), before anything is stored."""
    lab = state.lab
    short = full[len(lab) + 1:]
    own = {names.lan_netns(lab): "the lab's LAN namespace", names.external_netns(lab): "the external client's namespace"}
    if full in own:
        raise NetlabError(f"node name {short!r} is the lab's own: {full} is {own[full]} "
                          "(lan, external and lb-* name the lab's own machines)")
    if full.startswith(f"{lab}-lb-"):
        raise NetlabError(f"node name {short!r} is the lab's own: {lab}-lb-* name the load balancers' namespaces")
    if not names.DNS1123_LABEL.match(full) or len(full) > 63:
        raise NetlabError(f"{full!r} is not a valid node name (DNS-1123 label)")
    port = names.lan_port(lab, full)
    ports = {names.LAN_BRIDGE: "the LAN switch's bridge", "lo": "the LAN namespace's loopback",
             "external": "the external client's port"}
    ports.update((names.lan_port(lab, n.name), f"node {n.name}'s port") for n in state.nodes)
    if port in ports or LB_PORT.match(port):
        holder = ports.get(port, "the shape of a load balancer's port (lb + 8 hex digits)")
        raise NetlabError(f"node name {short!r} cannot be used: its port on the LAN switch would be {port!r}, "
                          f"which is {holder}")


def add_node(state, name, rng=None, log=None):
    """A node joins: the node IPAM controller gives it the lowest free /24, the LAN the next
    address, flanneld a VTEP MAC. Pods stay where they are, as on a real cluster; Pending
    pods are tried again, and may land on it."""
    rng = rng or random.Random(secrets.randbits(64))
    full = name if name.startswith(state.lab + "-") else f"{state.lab}-{name}"
    if any(n.name == full for n in state.nodes):
        raise NetlabError(f'node "{full}" already exists')
    _check_node_name(state, full)
    c = state.cluster
    cidr = ipam.node_pod_cidrs(c.pod_subnet, {n.pod_cidr for n in state.nodes}, 1)[0] if c.ipv4 else ""
    cidr6 = ipam.node_pod_cidrs6(c.pod_subnet6, {n.pod_cidr6 for n in state.nodes}, 1)[0] if c.ipv6 else ""
    ip, = ipam.node_ips(c, ipam.lan_holders(c, state.nodes, state.services), [full])   # skips the balancers'
    node = Node(full, "worker", ip, cidr, random_mac(rng), scheduler.node_labels(full, "worker"), [],
                ip6=ipam.lan_ip6(c, ip) if c.ipv6 else "", pod_cidr6=cidr6)
    state.nodes.append(node)
    state.ipam[full] = HostLocal()
    last_node = max(state.netns.index(n.netns) for n in state.nodes[:-1])
    state.netns.insert(last_node + 1, node.netns)
    if log is not None:
        log.append(("RegisteredNode", f"node/{full}", "", f"Node {full} event: Registered Node {full} in Controller"))
        log.append(("CIDRAssignmentSucceeded", f"node/{full}", "", f"Node {full} assigned podCIDR {node.pod_cidrs[0]}"))
    schedule_pending(state, rng, log)
    sync_endpoints(state, rng)
    return node


def remove_node(state, name, rng=None, log=None):
    """A node leaves: its pods go; each Deployment's ReplicaSet replaces its own elsewhere."""
    rng = rng or random.Random(secrets.randbits(64))
    node = state.node(name)
    if node.role == "control-plane":
        raise NetlabError(f"node {node.name} is the control plane; it cannot be removed")
    gone = state.pods_on(node.name)
    for p in gone:
        remove_pod(state, p)
    state.nodes.remove(node)
    del state.ipam[node.name]
    state.netns.remove(node.netns)
    if log is not None:
        log.append(("RemovingNode", f"node/{node.name}", "", f"Node {node.name} event: Removing Node {node.name} from Controller"))
    schedule_pending(state, rng, log)
    for d in state.deployments:
        missing = d.replicas - len(replicas_of(state, d))
        if missing > 0:
            _log_pods(log, d, _add_replicas(state, d, missing, rng, log), [p for p in gone if p.owner == f"Deployment/{d.name}"])
    sync_endpoints(state, rng)
    return node, gone


def add_pod(state, namespace, name, template, owner=None, rng=None, log=None, cache=None):
    """A pod is created and the scheduler places it; a pod no node can take stays Pending,
    with the scheduler's FailedScheduling event in `log`. `cache`: a scheduler.Cache of the
    state the caller keeps (placing many pods)."""
    rng = rng or random.Random(secrets.randbits(64))
    container_id = "%064x" % rng.getrandbits(256)
    pod = Pod(namespace=namespace, name=name, uid=deployment.uid(container_id), node=None, template=template,
              container_id=container_id, host_veth="", netns=names.pod_netns(state.lab, namespace, name), owner=owner)
    state.pods.append(pod)
    _schedule(state, pod, rng, log, cache or scheduler.Cache(state.nodes, state.pods))
    return pod


def _schedule(state, pod, rng, log, cache):
    """One scheduling attempt: bind the pod, or record why not (an event when that changed)."""
    node, why = scheduler.place(pod.template, state.nodes, state.pods, pod.owner, cache)
    if node is None:
        if log is not None and why != pod.unschedulable:
            log.append(("FailedScheduling", f"pod/{pod.name}", pod.namespace, why))
        pod.unschedulable = why
        return False
    _bind(state, pod, node, rng)
    cache.add(pod)
    return True


def _bind(state, pod, node, rng):
    """The pod is bound to `node`; then what the CNI ADD will do with it: its veth name and
    host-local's next IP in the node's range."""
    pool = state.ipam.setdefault(node, HostLocal())
    pod.node, pod.unschedulable = node, ""
    if state.node(node).pod_cidr:      # an IPv6 lab's nodes have the IPv6 range alone
        pod.ip = ipam.host_local_next(state.node(node).pod_cidr, pool.last_reserved, pool.allocated)
        pool.allocated[pod.ip] = pod.container_id
        pool.last_reserved = pod.ip
    cidr6 = state.node(node).pod_cidr6
    if cidr6:                          # the second range of host-local's ranges: [[v4], [v6]]
        pod.ip6 = ipam.host_local_next6(cidr6, pool.last_reserved6, pool.allocated)
        pool.allocated[pod.ip6] = pod.container_id
        pool.last_reserved6 = pod.ip6
    pod.host_veth = names.veth_name("%08x" % rng.getrandbits(32))
    if state.netns:                    # a running lab; new_state lists every namespace at the end
        state.netns.append(pod.netns)


def schedule_pending(state, rng=None, log=None):
    """The scheduler's retry of its unschedulable pods, oldest first, after the cluster
    changed (a node joined, pods went). Returns the pods it bound."""
    pending = [p for p in state.pods if p.node is None]
    if not pending:
        return []
    rng = rng or random.Random(secrets.randbits(64))
    cache = scheduler.Cache(state.nodes, state.pods)
    bound = [p for p in pending if _schedule(state, p, rng, log, cache)]
    if log is not None:
        log += [("Scheduled", f"pod/{p.name}", p.namespace, f"Successfully assigned {p.key} to {p.node}") for p in bound]
    return bound


def kubernetes_service(cluster):
    """default/kubernetes, which the API server creates at the first address of the primary
    family's range."""
    ip = str(ipaddress.ip_network(cluster.service_subnets[0]).network_address + 1)
    return ServiceManifest("default", "kubernetes", {"component": "apiserver", "provider": "kubernetes"},
                           cluster_ip=ip, ports=(ServicePort(443, "TCP", "https", 6443),))


def asked_ports(manifests):
    """The NodePorts (and health-check ports) manifests name: kept from random picks."""
    return frozenset({p.node_port for m in manifests for p in m.ports if p.node_port}
                     | {m.health_check_node_port for m in manifests if m.health_check_node_port})


def add_service(state, manifest, rng, reserved_ports=frozenset(), old=None):
    """The API server's part: allocate the ClusterIPs and NodePorts a Service asks for.
    `reserved_ports`: ports other manifests of the same request name, never picked at random.
    `old`: the stored Service an update replaces (already out of state.services)."""
    if any(s.key == manifest.key for s in state.services):
        raise NetlabError(f"Service {manifest.key} already exists")
    ips = {ip for s in state.services for ip in (s.cluster_ips or (s.cluster_ip,))}
    ports = {p.node_port for s in state.services for p in s.ports if p.node_port} | _health_ports(state)
    families = _cluster_ip_fields(state, manifest, old, ips, rng)
    ip = families["cluster_ips"][0] if families["cluster_ips"] else None
    selectorless_headless = families["cluster_ips"] == ("None",) and manifest.selector is None
    if not state.cluster.ipv6 and not selectorless_headless and (_asks_no_family(manifest) or (
            families["ip_family_policy"], families["ip_families"], families["cluster_ips"]) in (
            ("SingleStack", ("IPv4",), (ip,)), (None, (), ()))):
        # An IPv4 cluster's Services keep the record they always had (the API shows its
        # defaults); a headless Service without selector is RequireDualStack even there.
        families = {"ip_family_policy": None, "ip_families": (), "cluster_ips": ()}
    allocated, by_port = [], {}
    for p in manifest.ports:
        # Ports sharing a number (TCP and UDP) share a NodePort unless they name their own.
        requested = next((q.node_port for q in manifest.ports if q.port == p.port and q.node_port), None)
        node_port = p.node_port or by_port.get(p.port) or requested
        if node_port is None and manifest.type in ("NodePort", "LoadBalancer"):
            node_port = ipam.allocate_node_port(NODE_PORT_RANGE, ports | set(by_port.values()) | reserved_ports, rng)
        if node_port in ports:
            raise NetlabError(f"Service {manifest.key}: nodePort {node_port} is already allocated")
        by_port[p.port] = node_port
        allocated.append(dataclasses.replace(p, node_port=node_port))
    lb = {}
    if manifest.type == "LoadBalancer":
        taken_ports = ports | set(by_port.values())
        hc = manifest.health_check_node_port
        if manifest.external_traffic_policy == "Local" and hc is None:
            hc = ipam.allocate_node_port(NODE_PORT_RANGE, taken_ports | _health_ports(state) | reserved_ports, rng)
        elif hc is not None and hc in taken_ports | _health_ports(state):
            raise NetlabError(f"Service {manifest.key}: healthCheckNodePort {hc} is already allocated")
        held = ipam.lan_holders(state.cluster, state.nodes, state.services)     # never a node's address
        lb = {"health_check_node_port": hc,
              "load_balancer_ip": ipam.allocate_lb_ip(state.cluster, held, manifest.key, manifest.load_balancer_ip),
              # A cloud load balancer proxies to the NodePorts (kube-proxy leaves its IP
              # alone); MetalLB announces the IP and kube-proxy captures it.
              "load_balancer_ip_mode": "VIP" if state.cluster.lb_mode == "metallb" else "Proxy"}
        if state.cluster.ipv6:
            lb.update(_load_balancer_ips(state, manifest, families["ip_families"] or ("IPv4",), lb["load_balancer_ip"]))
    service = dataclasses.replace(manifest, cluster_ip=ip, ports=tuple(allocated),
                                  created=manifest.created or state.created, **lb, **families)
    state.services.append(service)
    if state.netns and service in balancers(state):       # a running lab gets a new machine
        state.netns.insert(2, names.lb_netns(state.lab, service.key))
    return service


def _load_balancer_ips(state, manifest, families, ip4):
    """A dual-stack lab's load-balancer addresses, one per family of the Service in its order
    (status.loadBalancer.ingress). MetalLB assigns one address of each family the Service has,
    from the pool's range of that family (an IPv6-only Service gets no IPv4 address).
    cloud-provider-kind's container has both addresses of its Docker network whatever the
    Service's families (its IPv4 one is the machine's), and the status lists the Service's."""
    c = state.cluster
    if c.lb_mode == "metallb":
        if "IPv4" not in families:
            if manifest.load_balancer_ip:
                raise NetlabError(f"Service {manifest.key}: loadBalancerIP {manifest.load_balancer_ip} is IPv4, and "
                                  f"the Service is single-stack IPv6")
            ip4 = None
        ip6 = ipam.allocate_lb_ip6(c, ipam.lan_holders6(c, state.nodes, state.services), manifest.key,
                                   manifest.load_balancer_ip_of("IPv6")) if "IPv6" in families else None
    else:
        ip6 = ipam.lan_ip6(c, ip4)
    ips = {"IPv4": ip4, "IPv6": ip6}
    return {"load_balancer_ip": ip4, "load_balancer_ips": tuple(ips[f] for f in families)}


def _asks_no_family(m):
    return m.ip_family_policy is None and not m.ip_families and len(m.cluster_ips) <= 1


def _stored_fields(svc):
    """A stored Service's ipFamilyPolicy, ipFamilies and clusterIPs as the API shows them (an
    IPv4 cluster's record leaves its defaults out)."""
    if svc is None or svc.type == "ExternalName":
        return None, (), ()
    ip = svc.cluster_ip
    return (svc.ip_family_policy or "SingleStack", svc.ip_families or ("IPv4",),
            svc.cluster_ips or ((ip,) if ip else ()))


def _invalid(m, field, shown, detail):
    return SpecError(None, f"Service {m.key}", field, f"Invalid value: {shown}: {detail}")


def init_ip_families(cluster, m, old=None):
    """initIPFamilyFields (pkg/registry/core/service/storage/alloc.go), with the update's
    patchAllocatedValues and ValidateServiceUpdate's upgrade/downgrade checks: the Service's
    (ipFamilyPolicy, ipFamilies, clusterIPs); clusterIPs holds the addresses asked for, in the
    families' order, "" where one is to be allocated (and ("None",) for a headless Service)."""
    if m.type == "ExternalName":
        return None, (), ()
    old_policy, old_families, old_ips = _stored_fields(old)
    policy, families = m.ip_family_policy, list(m.ip_families)
    ips = list(m.cluster_ips) or ([m.cluster_ip] if m.cluster_ip else [])      # normalizeClusterIPs
    if old is not None and old.type != "ExternalName" and not ips:
        ips = list(old_ips)                                 # patchAllocatedValues keeps the allocated IPs
    headless = ips[:1] == ["None"]
    if (old_policy == "PreferDualStack" and policy in (None, "PreferDualStack") and m.type == old.type
            and tuple(ips) == old_ips and tuple(families) in (old_families, ())):
        return old_policy, old_families, old_ips           # isMatchingPreferDualStackClusterIPFields
    if policy is None:
        if old_policy is not None:
            policy = old_policy
        elif headless and not m.selector:
            policy = "RequireDualStack"                     # headless and selectorless defaults to dual
        else:
            policy = "SingleStack"
    wrong = spec.cluster_ips_family_error(tuple(ips), families)
    if wrong is not None:
        raise SpecError(None, f"Service {m.key}", f"spec.clusterIPs[{wrong[0]}]", wrong[1])
    shown_policy = json.dumps(policy)
    if old_policy is not None:
        if policy == "SingleStack":                         # clear intent: the secondary is released
            if tuple(ips) == old_ips and len(ips) > 1:
                ips = ips[:1]
            if tuple(families) == old_families and len(families) > 1:
                families = families[:1]
        elif ips and len(ips) < len(old_ips):
            raise _invalid(m, "spec.ipFamilyPolicy", shown_policy, "must be 'SingleStack' to release the secondary "
                                                                   "cluster IP")
        elif families and len(families) < len(old_families):
            raise _invalid(m, "spec.ipFamilyPolicy", shown_policy, "must be 'SingleStack' to release the secondary IP "
                                                                   "family")
    if policy == "SingleStack":
        if len(ips) == 2:
            raise _invalid(m, "spec.ipFamilyPolicy", shown_policy, "must be 'RequireDualStack' or 'PreferDualStack' "
                                                                   "when multiple cluster IPs are specified")
        if len(families) == 2:
            raise _invalid(m, "spec.ipFamilyPolicy", shown_policy, "must be 'RequireDualStack' or 'PreferDualStack' "
                                                                   "when multiple IP families are specified")
    for i, ip in enumerate(ips):                            # infer ipFamilies from clusterIPs
        if ip == "None":
            break
        if i >= len(families):
            if spec.family_of(ip) not in cluster.families:
                raise _invalid(m, f"spec.clusterIPs[{i}]", spec.go_list(ips),
                               f"{spec.family_of(ip)} is not configured on this cluster")
            families.append(spec.family_of(ip))
    other = {"IPv4": "IPv6", "IPv6": "IPv4"}
    if headless and not m.selector:
        families = families or [cluster.families[0]]
        if len(families) < 2 and policy != "SingleStack":
            families.append(other[families[0]])
    else:
        if policy == "RequireDualStack" and not cluster.dual:
            raise _invalid(m, "spec.ipFamilyPolicy", shown_policy, "this cluster is not configured for dual-stack "
                                                                   "services")
        for i, family in enumerate(families):
            if family not in cluster.families:
                raise _invalid(m, f"spec.ipFamilies[{i}]", json.dumps(family), "not configured on this cluster")
        families = families or [cluster.families[0]]
        if policy != "SingleStack" and len(families) == 1 and cluster.dual:
            families.append(other[families[0]])
    if not headless:
        ips += [""] * (len(families) - len(ips))
    if old is not None:
        _check_update(m, old_families, old_ips, families, ips, headless)
    return policy, tuple(families), tuple(ips)


def _check_update(m, old_families, old_ips, families, ips, headless):
    """validateUpgradeDowngradeClusterIPs and validateUpgradeDowngradeIPFamilies: the primary
    clusterIP and ipFamily never change, a secondary is added or released, not swapped."""
    if not old_ips:                                          # from ExternalName: anything goes
        return
    asked = [ip for ip in ips if ip]
    if not (headless and old_ips == ("None",)):
        if len(asked) == len(old_ips):
            changed = next((i for i, ip in enumerate(old_ips) if asked[i] != ip), None)
        else:
            changed = 0 if asked and asked[0] != old_ips[0] else None
        if changed is not None:
            raise _invalid(m, f"spec.clusterIPs[{changed}]", spec.go_list(asked), "may not change once set")
    if headless or old_ips == ("None",):                     # headless can change families
        return
    if families[0] != old_families[0] or (len(families) == len(old_families) and tuple(families) != old_families):
        shown = spec.go_list(families, "core.IPFamily") if len(families) == len(old_families) else spec.go_list(asked)
        raise _invalid(m, "spec.ipFamilies[0]", shown, "may not change once set")


def _cluster_ip_fields(state, m, old, taken, rng):
    """The ipFamilyPolicy, ipFamilies and clusterIPs of the Service, each ClusterIP from its
    family's service range (allocClusterIPs)."""
    policy, families, ips = init_ip_families(state.cluster, m, old)
    out = []
    for family, ip in zip(families, ips):
        if ip == "":
            subnet = state.cluster.service_subnet6 if family == "IPv6" else state.cluster.service_subnet
            ip = ipam.allocate_service_ip(subnet, taken | _reserved_ips(state.cluster), rng)
        elif ip != "None" and ip in taken:
            raise NetlabError(f"Service {m.key}: clusterIP {ip} is already allocated")
        out.append(ip)
    if ips == ("None",):
        out = ["None"]
    return {"ip_family_policy": policy, "ip_families": families, "cluster_ips": tuple(out)}


def _health_ports(state):
    return {s.health_check_node_port for s in state.services if s.health_check_node_port}


def _reserved_ips(cluster):
    """default/kubernetes' and kube-dns's addresses (.1 and .10) of the primary range."""
    base = ipaddress.ip_network(cluster.service_subnets[0]).network_address
    return {str(base + 1), str(base + 10)}


def sync_endpoints(state, rng=None, now=""):
    """The endpoints controller's pass over every Service, and the API server's own
    default/kubernetes endpoints (the control plane's node IP, port 6443); then the
    EndpointSlice controller's, which keeps the slices it can (and their names). `rng`
    names new slices; `now` stamps them."""
    control_plane = next(n for n in state.nodes if n.role == "control-plane")
    out = [endpoints.kubernetes(control_plane.internal_ip)]
    for s in state.services:
        if s.selector is not None:
            out.append(endpoints.for_service(s, state.pods))
    state.endpoints = out
    state.endpoint_slices = endpointslice.sync(state, rng, now)
