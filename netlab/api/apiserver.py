"""The API server's view of the lab: objects in the Kubernetes API's own JSON shapes.

Each object carries the network namespace that holds it in the annotation netlab.io/netns.
What the node agents write on their objects (flanneld's Node annotations, kubelet's pod
status) is handed in by the caller, which knows the agents.
"""

import platform

NETNS_ANNOTATION = "netlab.io/netns"
VERSION = "v1.33.0-netlab"


def node_object(state, node, annotations=()):
    ready = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": dict(node.labels),
            "annotations": {**dict(annotations), NETNS_ANNOTATION: node.netns},
            "creationTimestamp": node.created or state.created,
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


def pod_object(state, pod, running=True):
    """`running`: kubelet's word that every container of the pod runs. A pod no node took is
    Pending with the scheduler's condition, and has no node, address or container status."""
    t = pod.template
    ready = running and pod.ready
    status = lambda ok: "True" if ok else "False"  # noqa: E731
    meta = {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid, "labels": dict(t.labels),
            "annotations": {NETNS_ANNOTATION: pod.netns}, "creationTimestamp": pod.created or state.created}
    if pod.owner:
        kind, name = pod.owner.split("/", 1)
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": True,
                                    "name": f"{name}-{t.labels.get('pod-template-hash', '')}"}]
    spec = {"containers": [_container(c) for c in t.containers]}
    if pod.node is not None:
        spec["nodeName"] = pod.node
    for key, value in (("hostname", t.hostname), ("subdomain", t.subdomain)):
        if value:
            spec[key] = value
    if t.node_selector:
        spec["nodeSelector"] = dict(t.node_selector)
    if t.tolerations:
        spec["tolerations"] = [{k: v for k, v in tol.__dict__.items() if v is not None} for tol in t.tolerations]
    if pod.node is None:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
                "status": {"phase": "Pending", "qosClass": "BestEffort",
                           "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                           "message": pod.unschedulable}]}}
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


def deployment_object(state, d, ready_pods=frozenset()):
    """A Deployment in apps/v1's shape; `ready_pods`: the keys of the pods kubelet reports
    ready. Every replica is of the current template (a rollout is reached at once), and
    none waits minReadySeconds, so available is ready. Zero counts are left out, as the API
    leaves them (omitempty)."""
    pods = [p for p in state.pods if p.namespace == d.namespace and p.owner == f"Deployment/{d.name}"]
    ready = sum(p.key in ready_pods for p in pods)
    rs = f"{d.name}-{d.template_hash}"
    minimum = d.replicas - d.replicas * 25 // 100          # maxUnavailable 25%, rounded down
    available = ready >= minimum
    complete = ready == len(pods) == d.replicas
    counts = {"replicas": len(pods), "updatedReplicas": len(pods), "readyReplicas": ready,
              "availableReplicas": ready, "unavailableReplicas": max(d.replicas - ready, 0)}
    status = {"observedGeneration": 1, **{k: v for k, v in counts.items() if v}, "conditions": [
        {"type": "Available", "status": "True" if available else "False",
         "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
         "message": f"Deployment {'has' if available else 'does not have'} minimum availability."},
        {"type": "Progressing", "status": "True",
         "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
         "message": f'ReplicaSet "{rs}" ' + ("has successfully progressed." if complete else "is progressing.")},
    ]}
    template_spec = {"containers": [_container(c) for c in d.template.containers]}
    if d.template.node_selector:
        template_spec["nodeSelector"] = dict(d.template.node_selector)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": d.name, "namespace": d.namespace, "generation": 1,
                     "annotations": {"deployment.kubernetes.io/revision": "1"},
                     "creationTimestamp": d.created or state.created},
        "spec": {"replicas": d.replicas, "selector": {"matchLabels": dict(d.match_labels)},
                 "template": {"metadata": {"labels": dict(d.template.labels)}, "spec": template_spec},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                 "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
        "status": status,
    }


def as_list(items):
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def service_object(state, svc):
    spec = {"type": svc.type}
    if svc.type == "ExternalName":
        spec["externalName"] = svc.external_name
    else:
        spec.update(clusterIP=svc.cluster_ip, clusterIPs=[svc.cluster_ip],
                    ipFamilies=["IPv4"], ipFamilyPolicy="SingleStack",
                    internalTrafficPolicy=svc.internal_traffic_policy)
    if svc.ports:
        spec["ports"] = [{**({"name": p.name} if p.name else {}), "protocol": p.protocol, "port": p.port,
                          "targetPort": p.target_port, **({"nodePort": p.node_port} if p.node_port else {})}
                         for p in svc.ports]
    if svc.selector is not None:
        spec["selector"] = dict(svc.selector)
    spec["sessionAffinity"] = svc.session_affinity
    if svc.session_affinity == "ClientIP":
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": svc.affinity_timeout}}
    if svc.external_traffic_policy:
        spec["externalTrafficPolicy"] = svc.external_traffic_policy
    if svc.external_ips:
        spec["externalIPs"] = list(svc.external_ips)
    status = {"loadBalancer": {}}
    if svc.type == "LoadBalancer":
        spec["allocateLoadBalancerNodePorts"] = True
        if svc.load_balancer_source_ranges:
            spec["loadBalancerSourceRanges"] = list(svc.load_balancer_source_ranges)
        if svc.health_check_node_port:
            spec["healthCheckNodePort"] = svc.health_check_node_port
        if svc.load_balancer_ip:
            status["loadBalancer"]["ingress"] = [{"ip": svc.load_balancer_ip, "ipMode": svc.load_balancer_ip_mode}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc.name, "namespace": svc.namespace, "labels": dict(svc.labels),
                     "creationTimestamp": svc.created or state.created},
        "spec": spec,
        "status": status,
    }


def _address(namespace, a):
    out = {"ip": a.ip}
    if a.hostname:
        out["hostname"] = a.hostname
    if a.node:
        out["nodeName"] = a.node
    if a.pod:
        out["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": a.pod, "uid": a.uid}
    return out


def endpoints_object(state, ep):
    svc = state.service(ep.namespace, ep.name)
    labels = dict(svc.labels)
    if svc.headless:
        labels["service.kubernetes.io/headless"] = ""
    obj = {"apiVersion": "v1", "kind": "Endpoints",
           "metadata": {"name": ep.name, "namespace": ep.namespace, "labels": labels,
                        "creationTimestamp": svc.created or state.created}}
    subsets = []
    for s in ep.subsets:
        subset = {}
        if s.addresses:
            subset["addresses"] = [_address(ep.namespace, a) for a in s.addresses]
        if s.not_ready:
            subset["notReadyAddresses"] = [_address(ep.namespace, a) for a in s.not_ready]
        if s.ports:
            subset["ports"] = [{**({"name": p.name} if p.name else {}), "port": p.port, "protocol": p.protocol}
                               for p in s.ports]
        subsets.append(subset)
    if subsets:
        obj["subsets"] = subsets
    return obj


# The per-node agents netlab plays, as the DaemonSets a kubeadm cluster with flannel runs.
DAEMONSETS = (
    {"namespace": "kube-system", "name": "kube-proxy", "labels": {"k8s-app": "kube-proxy"},
     "selector": {"k8s-app": "kube-proxy"}, "node_selector": {"kubernetes.io/os": "linux"}, "container": "kube-proxy",
     "image": "registry.k8s.io/kube-proxy:v1.33.0",
     "tolerations": [{"operator": "Exists"}]},
    {"namespace": "kube-flannel", "name": "kube-flannel-ds", "labels": {"app": "flannel", "k8s-app": "flannel"},
     "selector": {"app": "flannel"}, "node_selector": {}, "container": "kube-flannel", "image": "ghcr.io/flannel-io/flannel:v0.26.7",
     "tolerations": [{"effect": "NoSchedule", "operator": "Exists"}]},
)


def daemonset_objects(state):
    """kube-proxy and flannel run on every node: one agent per node, ready once the lab runs."""
    nodes = len(state.nodes)
    ready = nodes if state.phase == "Running" else 0
    out = []
    for ds in DAEMONSETS:
        pod_spec = {"hostNetwork": True, "containers": [{"name": ds["container"], "image": ds["image"]}],
                    "tolerations": ds["tolerations"]}
        if ds["node_selector"]:
            pod_spec["nodeSelector"] = ds["node_selector"]
        out.append({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": ds["name"], "namespace": ds["namespace"], "labels": dict(ds["labels"]),
                         "creationTimestamp": state.created},
            "spec": {"selector": {"matchLabels": dict(ds["selector"])},
                     "template": {"metadata": {"labels": dict(ds["labels"])}, "spec": pod_spec},
                     "updateStrategy": {"type": "RollingUpdate"}},
            "status": {"desiredNumberScheduled": nodes, "currentNumberScheduled": nodes,
                       "numberReady": ready, "updatedNumberScheduled": nodes, "numberAvailable": ready,
                       "numberMisscheduled": 0},
        })
    return out


def _backend(b):
    port = {"number": b.port} if isinstance(b.port, int) else {"name": b.port}
    return {"service": {"name": b.service, "port": port}}


# The Ingresses the ingress-nginx controller serves, and so writes its address on: those of
# its class, and those of none (its IngressClass is the cluster's default).
NGINX_CLASSES = (None, "nginx")


def ingress_object(state, ing):
    spec = {}
    if ing.ingress_class:
        spec["ingressClassName"] = ing.ingress_class
    if ing.default_backend:
        spec["defaultBackend"] = _backend(ing.default_backend)
    if ing.rules:
        spec["rules"] = [{**({"host": r.host} if r.host else {}),
                          "http": {"paths": [{"path": p.path, "pathType": p.path_type, "backend": _backend(p)}
                                             for p in r.paths]}} for r in ing.rules]
    controller = next((s for s in state.services if s.namespace == "ingress-nginx"
                       and s.name == "ingress-nginx-controller"), None)
    status = {"loadBalancer": {}}
    if controller is not None and ing.ingress_class in NGINX_CLASSES:
        address = controller.load_balancer_ip if controller.type == "LoadBalancer" else \
            next((n.ip for n in state.nodes for p in state.pods if p.namespace == "ingress-nginx" and p.node == n.name), None)
        if address:
            status["loadBalancer"]["ingress"] = [{"ip": address}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": ing.name, "namespace": ing.namespace, "creationTimestamp": ing.created or state.created},
            "spec": spec, "status": status}
