"""kube-scheduler, reduced to what decides placement in a lab.

Filters as the default plugins do (NodeName, NodeAffinity via nodeSelector, TaintToleration);
scores as the default spread does: fewest pods of the same owner first, then fewest pods,
then node order.
"""

from netlab.errors import NetlabError

CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def node_labels(name, role):
    labels = {"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if role == "control-plane":
        labels["node-role.kubernetes.io/control-plane"] = ""
    return labels


def node_taints(role, has_workers):
    """kubeadm taints the control plane; kind removes the taint when there are no workers."""
    return [dict(CONTROL_PLANE_TAINT)] if role == "control-plane" and has_workers else []


def feasible(template, node):
    if template.node_name is not None:
        return template.node_name == node.name
    if any(node.labels.get(k) != v for k, v in template.node_selector.items()):
        return False
    return all(any(t.tolerates(taint) for t in template.tolerations)
               for taint in node.taints if taint["effect"] in ("NoSchedule", "NoExecute"))


def place(template, nodes, pods, owner=None):
    """The node a new pod goes to, given the pods already placed."""
    candidates = [n for n in nodes if feasible(template, n)]
    if not candidates:
        raise NetlabError(_unschedulable(template, nodes))
    order = {n.name: i for i, n in enumerate(nodes)}
    total, same_owner = dict.fromkeys(order, 0), dict.fromkeys(order, 0)
    for p in pods:
        total[p.node] += 1
        if owner is not None and p.owner == owner:
            same_owner[p.node] += 1
    return min(candidates, key=lambda n: (same_owner[n.name], total[n.name], order[n.name])).name


def _unschedulable(template, nodes):
    if template.node_name is not None:
        return f"0/{len(nodes)} nodes are available: nodeName {template.node_name!r} is not a node"
    if template.node_selector:
        return f"0/{len(nodes)} nodes are available: none matches nodeSelector {template.node_selector}"
    return f"0/{len(nodes)} nodes are available: every node has a taint the pod doesn't tolerate"
