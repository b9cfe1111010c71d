"""Tables laid out as `kubectl get` prints them."""

import datetime


def age(created):
    if not created:
        return "<unknown>"
    seconds = int((datetime.datetime.now(datetime.timezone.utc)
                   - datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600 * 3:
        return f"{seconds // 60}m"
    if seconds < 86400 * 2:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def render(header, rows):
    """kubectl's plain layout: columns left-aligned, separated by three spaces."""
    rows = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def nodes_table(objects, wide=False):
    header = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    if wide:
        header += ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    rows = []
    for n in objects:
        labels = n["metadata"]["labels"]
        roles = ",".join(sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")))
        ready = next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready")
        info = n["status"]["nodeInfo"]
        row = [n["metadata"]["name"], "Ready" if ready == "True" else "NotReady", roles or "<none>",
               age(n["metadata"]["creationTimestamp"]), info["kubeletVersion"]]
        if wide:
            ip = next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
            row += [ip, "<none>", info["osImage"], info["kernelVersion"], info["containerRuntimeVersion"]]
        rows.append(row)
    return render(header, rows)


def pods_table(objects, wide=False, all_namespaces=False):
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    if wide:
        header += ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    rows = []
    for p in objects:
        cs = p["status"]["containerStatuses"]
        row = ([p["metadata"]["namespace"]] if all_namespaces else []) + [
            p["metadata"]["name"], f"{sum(c['ready'] for c in cs)}/{len(cs)}", p["status"]["phase"],
            sum(c["restartCount"] for c in cs), age(p["metadata"]["creationTimestamp"])]
        if wide:
            row += [p["status"]["podIP"], p["spec"]["nodeName"], "<none>", "<none>"]
        rows.append(row)
    return render(header, rows)
