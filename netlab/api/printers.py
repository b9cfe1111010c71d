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
        cs = p["status"].get("containerStatuses", [])       # none before the pod is bound
        row = ([p["metadata"]["namespace"]] if all_namespaces else []) + [
            p["metadata"]["name"], f"{sum(c['ready'] for c in cs)}/{len(p['spec']['containers'])}", p["status"]["phase"],
            sum(c["restartCount"] for c in cs), age(p["metadata"]["creationTimestamp"])]
        if wide:
            row += [p["status"].get("podIP") or "<none>", p["spec"].get("nodeName") or "<none>", "<none>", "<none>"]
        rows.append(row)
    return render(header, rows)


def deployments_table(objects, wide=False, all_namespaces=False):
    """kubectl's Deployment columns: READY is ready replicas of the desired ones."""
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    if wide:
        header += ["CONTAINERS", "IMAGES", "SELECTOR"]
    rows = []
    for d in objects:
        st, containers = d["status"], d["spec"]["template"]["spec"]["containers"]
        row = [d["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{d['spec']['replicas']}",
               st.get("updatedReplicas", 0), st.get("availableReplicas", 0), age(d["metadata"]["creationTimestamp"])]
        if wide:
            row += [",".join(c["name"] for c in containers), ",".join(c["image"] for c in containers),
                    _labels(d["spec"]["selector"]["matchLabels"])]
        rows.append(_namespaced(d, row, all_namespaces))
    return render(header, rows)


def _labels(selector):
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) if selector else "<none>"


def _namespaced(obj, row, all_namespaces):
    return ([obj["metadata"]["namespace"]] if all_namespaces else []) + row


def services_table(objects, wide=False, all_namespaces=False):
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    if wide:
        header.append("SELECTOR")
    rows = []
    for s in objects:
        spec = s["spec"]
        ports = ",".join(f"{p['port']}:{p['nodePort']}/{p['protocol']}" if p.get("nodePort")
                         else f"{p['port']}/{p['protocol']}" for p in spec.get("ports", [])) or "<none>"
        if spec["type"] == "ExternalName":
            external = spec["externalName"]
        elif spec["type"] == "LoadBalancer":
            ingress = [i["ip"] for i in s["status"]["loadBalancer"].get("ingress", [])]
            external = ",".join(ingress + spec.get("externalIPs", [])) or "<pending>"
        else:
            external = ",".join(spec.get("externalIPs", [])) or "<none>"
        row = [s["metadata"]["name"], spec["type"], spec.get("clusterIP") or "<none>", external, ports,
               age(s["metadata"]["creationTimestamp"])]
        if wide:
            row.append(_labels(spec.get("selector")))
        rows.append(_namespaced(s, row, all_namespaces))
    return render(header, rows)


def endpoints_list(obj, limit=3):
    """kubectl's ENDPOINTS column: ip:port per port and address, three shown, then "+ N more..."."""
    shown, count = [], 0
    for subset in obj.get("subsets", []):
        addresses = subset.get("addresses", [])
        for port in subset.get("ports") or [None]:
            count += len(addresses)
            for a in addresses:
                if len(shown) < limit:
                    shown.append(a["ip"] if port is None else f"{a['ip']}:{port['port']}")
    if not count:
        return "<none>"
    return ",".join(shown) + (f" + {count - limit} more..." if count > limit else "")


def endpoints_table(objects, wide=False, all_namespaces=False):
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "ENDPOINTS", "AGE"]
    rows = [_namespaced(e, [e["metadata"]["name"], endpoints_list(e), age(e["metadata"]["creationTimestamp"])],
                        all_namespaces) for e in objects]
    return render(header, rows)


def daemonsets_table(objects, wide=False, all_namespaces=False):
    header = (["NAMESPACE"] if all_namespaces else []) + [
        "NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"]
    if wide:
        header += ["CONTAINERS", "IMAGES", "SELECTOR"]
    rows = []
    for d in objects:
        st, pod_spec = d["status"], d["spec"]["template"]["spec"]
        row = [d["metadata"]["name"], st["desiredNumberScheduled"], st["currentNumberScheduled"], st["numberReady"],
               st["updatedNumberScheduled"], st["numberAvailable"], _labels(pod_spec.get("nodeSelector")),
               age(d["metadata"]["creationTimestamp"])]
        if wide:
            row += [",".join(c["name"] for c in pod_spec["containers"]),
                    ",".join(c["image"] for c in pod_spec["containers"]),
                    _labels(d["spec"]["selector"]["matchLabels"])]
        rows.append(_namespaced(d, row, all_namespaces))
    return render(header, rows)


def ingresses_table(objects, wide=False, all_namespaces=False):
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    rows = []
    for i in objects:
        hosts = ",".join(r.get("host", "*") for r in i["spec"].get("rules", [])) or "*"
        address = ",".join(x["ip"] for x in i["status"]["loadBalancer"].get("ingress", []))
        rows.append(_namespaced(i, [i["metadata"]["name"], i["spec"].get("ingressClassName", "<none>"), hosts,
                                    address, "80", age(i["metadata"]["creationTimestamp"])], all_namespaces))
    return render(header, rows)
