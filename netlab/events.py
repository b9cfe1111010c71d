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
    from netlab.kubectl import age, render
    header = (["NAMESPACE"] if all_namespaces else []) + ["LAST SEEN", "TYPE", "REASON", "OBJECT", "SOURCE", "MESSAGE"]
    rows = [([e["namespace"] or "-"] if all_namespaces else []) +
            [age(e["time"]), e["type"], e["reason"], e["object"], e["source"], f"{e['message']} ({e['why']})"]
            for e in events]
    return render(header, rows)
