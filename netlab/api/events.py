"""Events, as the API server keeps them: who did what to which object, and why.

Controllers report what they decided (ScalingReplicaSet, SuccessfulCreate, RegisteredNode,
...); agents report what they changed on a node (kube-proxy's chains, flannel's routes, the
CNI's interfaces). `netlab events` lists them as `kubectl get events` does. They are kept
in the lab's state directory, one JSON object per line, newest last.
"""

import datetime
import hashlib
import json
import uuid

from netlab import names

FILE = "events.jsonl"
CAUSE_ANNOTATION = "netlab.io/cause"     # the command or API request an event came of
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
    from netlab.api.printers import age, columns
    header = (["NAMESPACE"] if all_namespaces else []) + ["LAST SEEN", "TYPE", "REASON", "OBJECT", "SOURCE", "MESSAGE"]
    rows = [([e["namespace"] or "-"] if all_namespaces else []) +
            [age(e["time"]), e["type"], e["reason"], e["object"], e["source"], f"{e['message']} ({e['why']})"]
            for e in events]
    return columns(header, rows)


# --- the records as core/v1 Events -------------------------------------------------------

# The objects records name ("pod/web-0"), as an ObjectReference names them; a record's
# object of another kind (netlab's own: "fault/loss", "netns/...", "lab") keeps its word as
# the kind, so kubectl shows it as the record does.
INVOLVED = {"pod": ("Pod", "v1"), "node": ("Node", "v1"), "service": ("Service", "v1"),
            "endpoints": ("Endpoints", "v1"), "namespace": ("Namespace", "v1"),
            "deployment": ("Deployment", "apps/v1"), "replicaset": ("ReplicaSet", "apps/v1"),
            "daemonset": ("DaemonSet", "apps/v1"), "ingress": ("Ingress", "networking.k8s.io/v1")}
CLUSTER_SCOPED = {"node", "namespace", "fault", "netns", "lab"}


def involved_object(record, lab=""):
    """(kind, apiVersion, namespace, name) of a record's object: "pod/NAME" with the record's
    namespace, "pod/NAMESPACE/NAME" (an agent's), "node/NAME", "fault/KIND", "lab" (`lab`)."""
    word, _, name = record["object"].partition("/")
    namespace = record.get("namespace") or ""
    if word == "pod" and "/" in name:
        namespace, _, name = name.partition("/")
    if word == "lab" and not name:
        name = lab
    kind, api_version = INVOLVED.get(word, (word[:1].upper() + word[1:], ""))
    return kind, api_version, "" if word in CLUSTER_SCOPED else namespace, name


def event_objects(records, state=None, lab=""):
    """The records (read()) as core/v1 Events, as client-go's recorder makes them (makeEvent):
    named `<object>.<UnixNano in hex>`, in the object's namespace ("default" for a
    cluster-scoped one), first and last seen at the record's time, count 1, source and
    reportingComponent the record's source. The records keep seconds: the nanoseconds come
    from a digest of the record, so a name stays the same when older records are dropped,
    and the same record twice in a second is one Event of count 2, as the recorder's
    aggregation makes it. The command or request that caused it is the annotation
    CAUSE_ANNOTATION (`netlab events` ends the message with it). With `state`, a pod's
    reference carries its uid. In the API's order: namespace, then name."""
    lab = lab or (state.lab if state is not None else "")
    uids = {(p.namespace, p.name): p.uid for p in state.pods} if state is not None else {}
    found = {}
    for r in records:
        kind, api_version, namespace, name = involved_object(r, lab)
        stamp = datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00"))
        digest = hashlib.sha256(json.dumps(r, sort_keys=True).encode()).digest()
        nanos = int(stamp.timestamp()) * 10**9 + int.from_bytes(digest[:8], "big") % 10**9
        event_name = f"{name or kind.lower()}.{nanos:x}"
        event_namespace = namespace or "default"
        if (event_namespace, event_name) in found:
            found[(event_namespace, event_name)]["count"] += 1
            continue
        ref = {"kind": kind, **({"namespace": namespace} if namespace else {}), "name": name}
        if api_version:
            ref["apiVersion"] = api_version
        if kind == "Pod" and (namespace, name) in uids:
            ref["uid"] = uids[(namespace, name)]
        uid = uuid.uuid5(uuid.NAMESPACE_URL, f"netlab:{lab}:events:{event_namespace}/{event_name}")
        meta = {"name": event_name, "namespace": event_namespace, "uid": str(uid), "creationTimestamp": r["time"]}
        if r.get("why"):
            meta["annotations"] = {CAUSE_ANNOTATION: r["why"]}
        found[(event_namespace, event_name)] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": meta,
            "involvedObject": ref,
            "reason": r["reason"],
            "message": r["message"],
            "source": {"component": r["source"]},
            "firstTimestamp": r["time"],
            "lastTimestamp": r["time"],
            "count": 1,
            "type": r["type"],
            "eventTime": None,
            "reportingComponent": r["source"],
            "reportingInstance": "",
        }
    return [found[k] for k in sorted(found)]


# --- what a convergence changed, as events ----------------------------------------------

class Changes:
    """What a convergence changed, by agent: (namespace, what) pairs and write counts."""

    def __init__(self):
        self.by_agent = {}
        self.chains = {}           # netns -> (chains written, chains deleted)
        self.netlink_writes = self.iptables_writes = 0
        self.nft_writes = self.nft_operations = 0          # nftables transactions, and the operations in them
        self.kube_proxy_mode = "iptables"
        self.ipset_writes = 0                              # kube-router's ipset restores

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
