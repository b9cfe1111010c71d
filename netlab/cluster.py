"""Controllers that turn a LabSpec into cluster state: node registration (kind + the node
IPAM controller), the Deployment controller, the scheduler, and host-local allocations.

Pure: the same spec and random source give the same state. Nothing here touches the kernel.
"""

import random
import secrets

from netlab import deployment, ipam, names, scheduler
from netlab.etcd import ClusterState, Deployment, HostLocal, Node, Pod


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
    for p in spec.pods:
        add_pod(state, p.namespace, p.name, p.template, rng=rng)
    for d in spec.deployments:
        add_deployment(state, d, rng)
    state.netns = [state.lan_netns(), state.external_netns()] + [n.netns for n in state.nodes]
    state.netns += [p.netns for p in state.pods]
    return state


def add_deployment(state, manifest, rng):
    h = deployment.template_hash(manifest.template)
    state.deployments.append(Deployment(manifest.namespace, manifest.name, manifest.replicas,
                                        manifest.match_labels, manifest.template, h))
    owner = f"Deployment/{manifest.name}"
    labels = {**manifest.template.labels, "pod-template-hash": h}
    template = type(manifest.template)(**{**manifest.template.__dict__, "labels": labels})
    taken = {p.name for p in state.pods if p.namespace == manifest.namespace}
    for _ in range(manifest.replicas):
        name = deployment.pod_name(manifest.name, h, rng)
        while name in taken:
            name = deployment.pod_name(manifest.name, h, rng)
        taken.add(name)
        add_pod(state, manifest.namespace, name, template, owner=owner, rng=rng)


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
