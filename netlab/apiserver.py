"""The API server's view of the lab: objects in the Kubernetes API's own JSON shapes.

Each object carries the network namespace that holds it in the annotation netlab.io/netns.
"""

import platform

from netlab import flannel
from netlab.kubelet import alive

NETNS_ANNOTATION = "netlab.io/netns"
VERSION = "v1.33.0-netlab"


def node_object(state, node):
    ready = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": dict(node.labels),
            "annotations": {**flannel.annotations(node), NETNS_ANNOTATION: node.netns},
            "creationTimestamp": state.created,
        },
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr], "taints": list(node.taints)},
        "status": {
            "addresses": [{"type": "InternalIP", "address": node.ip}, {"type": "Hostname", "address": node.name}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady"}],
            "nodeInfo": {"kernelVersion": platform.release(), "osImage": "netlab network namespace",
                         "containerRuntimeVersion": "netlab://0.1.0", "kubeletVersion": VERSION,
                         "kubeProxyVersion": VERSION, "architecture": "amd64", "operatingSystem": "linux"},
        },
    }


def _container(c):
    out = {"name": c.name, "image": c.image or "registry.k8s.io/e2e-test-images/agnhost:2.53"}
    if c.command:
        out["command"] = list(c.command)
    else:
        out["args"] = ["netexec"]
    if c.args:
        out["args"] = list(c.args)
    if c.ports:
        out["ports"] = [{**({"name": p.name} if p.name else {}), "containerPort": p.container_port,
                         "protocol": p.protocol} for p in c.ports]
    return out


def pod_running(pod):
    """A pod runs when every container with a command still runs (agnhost ones run with the lab)."""
    return all(alive(r) for r in pod.pids)


def pod_object(state, pod):
    t = pod.template
    running = pod_running(pod)
    ready = running and pod.ready
    status = lambda ok: "True" if ok else "False"  # noqa: E731
    meta = {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid, "labels": dict(t.labels),
            "annotations": {NETNS_ANNOTATION: pod.netns}, "creationTimestamp": pod.created or state.created}
    if pod.owner:
        kind, name = pod.owner.split("/", 1)
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": True,
                                    "name": f"{name}-{t.labels.get('pod-template-hash', '')}"}]
    spec = {"nodeName": pod.node, "containers": [_container(c) for c in t.containers]}
    for key, value in (("hostname", t.hostname), ("subdomain", t.subdomain)):
        if value:
            spec[key] = value
    if t.node_selector:
        spec["nodeSelector"] = dict(t.node_selector)
    if t.tolerations:
        spec["tolerations"] = [{k: v for k, v in tol.__dict__.items() if v is not None} for tol in t.tolerations]
    node = state.node(pod.node)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {
            "phase": "Running" if running else "Failed",
            "hostIP": node.ip,
            "hostIPs": [{"ip": node.ip}],
            "podIP": pod.ip,
            "podIPs": [{"ip": pod.ip}],
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": status(running)},
                {"type": "Ready", "status": status(ready)},
            ],
            "containerStatuses": [{"name": c.name, "ready": ready, "restartCount": 0,
                                   "started": running} for c in t.containers],
        },
    }


def as_list(items):
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}
