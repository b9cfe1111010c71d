"""kube-scheduler, reduced to what decides placement in a lab.

Filters as the default plugins do, in their order (NodeName, TaintToleration, NodeAffinity
via nodeSelector, NodeResourcesFit's pod count); scores as the default spread does: fewest
pods of the same owner first, then fewest pods, then node order. A pod no node passes stays
Pending with the scheduler's FailedScheduling message, and is tried again when the cluster
changes (a node joins, a pod goes), as the scheduler's unschedulable queue is.
"""

from netlab.api.apiserver import DAEMONSETS

CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}

# kubelet's default maxPods: every node's allocatable "pods". The DaemonSets' pods (kube-proxy's
# and flannel's, one each per node, which `netlab get daemonsets` lists) take their share.
MAX_PODS = 110
DAEMON_PODS = len(DAEMONSETS)

# The Filter plugins' reasons (pkg/scheduler/framework/plugins/*), and whether preemption
# could help: evicting lower-priority pods frees pod slots, never a label or a taint.
NODE_NAME = "node(s) didn't match the requested node name"
NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
TOO_MANY_PODS = "Too many pods"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"     # every pod has priority 0 here


def node_labels(name, role):
    labels = {"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if role == "control-plane":
        labels["node-role.kubernetes.io/control-plane"] = ""
    return labels


def node_taints(role, has_workers):
    """kubeadm taints the control plane; kind removes the taint when there are no workers."""
    return [dict(CONTROL_PLANE_TAINT)] if role == "control-plane" and has_workers else []


def rejection(template, node, pods_on_node):
    """Why the default Filter plugins, run in their order, reject `node` for the pod (the
    first plugin that does), or None when it fits."""
    if template.node_name is not None:            # bound by name: the scheduler's filters never see it
        return None if template.node_name == node.name else NODE_NAME
    for taint in node.taints:
        if taint["effect"] in ("NoSchedule", "NoExecute") and not any(t.tolerates(taint) for t in template.tolerations):
            return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
    if any(node.labels.get(k) != v for k, v in template.node_selector.items()):
        return NODE_AFFINITY
    if pods_on_node + DAEMON_PODS + 1 > MAX_PODS:
        return TOO_MANY_PODS
    return None


class Cache:
    """The scheduler's cache: pods per node and per owner per node, kept as pods bind, so
    that placing many pods in one change counts the cluster's pods once."""

    def __init__(self, nodes, pods):
        self.total = {n.name: 0 for n in nodes}
        self.by_owner = {}
        for p in pods:
            self.add(p)

    def add(self, pod):
        if pod.node in self.total:
            self.total[pod.node] += 1
            if pod.owner is not None:
                self.by_owner.setdefault(pod.owner, dict.fromkeys(self.total, 0))[pod.node] += 1

    def same_owner(self, owner):
        return self.by_owner.get(owner) or dict.fromkeys(self.total, 0)


def place(template, nodes, pods, owner=None, cache=None):
    """(the node a new pod goes to, None) given the pods already placed, or (None, the
    FailedScheduling message) when no node passes the filters. `cache`: a Cache of `nodes`
    and `pods` the caller keeps up to date."""
    cache = cache or Cache(nodes, pods)
    total, same_owner = cache.total, cache.same_owner(owner)
    reasons = {n.name: rejection(template, n, total[n.name]) for n in nodes}
    candidates = [n for n in nodes if reasons[n.name] is None]
    if not candidates:
        return None, unschedulable(list(reasons.values()))
    order = {n.name: i for i, n in enumerate(nodes)}
    return min(candidates, key=lambda n: (same_owner[n.name], total[n.name], order[n.name])).name, None


def _histogram(reasons):
    counts = {}
    for r in reasons:
        counts[r] = counts.get(r, 0) + 1
    return ", ".join(sorted(f"{n} {r}" for r, n in counts.items()))


def unschedulable(reasons):
    """FitError's message and DefaultPreemption's PostFilter message after it, as
    kube-scheduler v1.33 writes them: "0/N nodes are available: <reasons>. preemption: 0/N
    nodes are available: <why preemption cannot help>."."""
    n = len(reasons)
    preemption = [NO_VICTIMS if r == TOO_MANY_PODS else NOT_HELPFUL for r in reasons]
    if not n:
        return "no nodes available to schedule pods"
    return (f"0/{n} nodes are available: {_histogram(reasons)}. "
            f"preemption: 0/{n} nodes are available: {_histogram(preemption)}.")
