"""Events, as the API server keeps them: who did what to which object, and why.

Controllers report what they decided (ScalingReplicaSet, SuccessfulCreate, RegisteredNode,
...); agents report what they changed on a node (kube-proxy's chains, flannel's routes, the
CNI's interfaces). `netlab events` lists them as `kubectl get events` does. They are kept
in the lab's state directory, one JSON object per line, newest last.
"""

import datetime
import json

from netlab import names

FILE = "events.jsonl"
KEEP = 1000                   # as the API server, keep only the recent ones


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(lab, entries, source, why, kind="Normal"):
    """entries: (reason, object, namespace, message) tuples from one source ("kube-proxy",
    "deployment-controller", ...); `why` names the command that caused them."""
    if not entries:
        return
    path = names.state_dir(lab) / FILE
    stamp = now()
    with open(path, "a") as f:
        for reason, obj, namespace, message in entries:
            f.write(json.dumps({"time": stamp, "type": kind, "reason": reason, "object": obj,
                                "namespace": namespace, "source": source, "message": message,
                                "why": why}) + "\n")
    lines = path.read_text().splitlines()
    if len(lines) > KEEP:
        path.write_text("\n".join(lines[-KEEP:]) + "\n")


def read(lab):
    path = names.state_dir(lab) / FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(events, all_namespaces=True):
    from netlab.api.printers import age, render
    header = (["NAMESPACE"] if all_namespaces else []) + ["LAST SEEN", "TYPE", "REASON", "OBJECT", "SOURCE", "MESSAGE"]
    rows = [([e["namespace"] or "-"] if all_namespaces else []) +
            [age(e["time"]), e["type"], e["reason"], e["object"], e["source"], f"{e['message']} ({e['why']})"]
            for e in events]
    return render(header, rows)


# --- what a convergence changed, as events ----------------------------------------------

class Changes:
    """What a convergence changed, by agent: (namespace, what) pairs and write counts."""

    def __init__(self):
        self.by_agent = {}
        self.chains = {}           # netns -> (chains written, chains deleted)
        self.netlink_writes = self.iptables_writes = 0

    def add(self, agent, items):
        if items:
            self.by_agent.setdefault(agent, []).extend(items)

    def any(self):
        return bool(self.by_agent)

    def count(self):
        return sum(len(v) for v in self.by_agent.values())


def chains_message(written, deleted):
    parts = []
    if written:
        parts.append(f"wrote {len(written)} chain{'s' * (len(written) != 1)} ({', '.join(written[:4])}"
                     + (", ..." if len(written) > 4 else "") + ")")
    if deleted:
        parts.append(f"deleted {len(deleted)} ({', '.join(deleted[:4])}" + (", ..." if len(deleted) > 4 else "") + ")")
    return "; ".join(parts)


def summarize(state, agent, items):
    """One event per agent and object: its first changes and how many there were."""
    by_object = {}
    for netns, what in items:
        by_object.setdefault(_object(state, netns), []).append(what)
    return [(_reason(agent), obj, "", "; ".join(whats[:3]) + (f" (+{len(whats) - 3} more)" if len(whats) > 3 else ""))
            for obj, whats in by_object.items()]


def _reason(agent):
    return {"kube-proxy": "SyncProxyRules", "flannel": "SubnetsUpdated", "cni": "NetworkConfigured",
            "kubelet": "Synced", "lab-network": "Wired", "cloud": "EnsuredLoadBalancer",
            "faults": "FaultApplied"}.get(agent, "Synced")


def _object(state, netns):
    if netns == state.lab:
        return "lab"
    for n in state.nodes:
        if n.netns == netns:
            return f"node/{n.name}"
    for p in state.pods:
        if p.netns == netns:
            return f"pod/{p.namespace}/{p.name}"
    return f"netns/{netns}"
