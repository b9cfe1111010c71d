"""The API server's view of the lab: objects in the Kubernetes API's own JSON shapes.

Each object carries the network namespace that holds it in the annotation netlab.io/netns.
What the node agents write on their objects (flanneld's Node annotations, kubelet's pod
status) is handed in by the caller, which knows the agents.
"""

import platform
import uuid

from netlab.api import netconf
from netlab.api.objects import service_uid

NETNS_ANNOTATION = "netlab.io/netns"
VERSION = "v1.33.0-netlab"


def object_uid(lab, plural, namespace, name, created):
    """metadata.uid of an object the state keeps no uid for: the same for the same object
    (its lab, resource, name and creation), so owner references and watches agree on it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"netlab:{lab}:{plural}:{namespace}/{name}:{created}"))


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
        # kube-controller-manager's podCIDRs and kubelet's --node-ip=<v4>,<v6>: one per family,
        # IPv4 first (podCIDR is the first), then the Hostname.
        "spec": {"podCIDR": node.pod_cidrs[0], "podCIDRs": list(node.pod_cidrs), "taints": list(node.taints)},
        "status": {
            "addresses": [*({"type": "InternalIP", "address": ip} for ip in node.ips),
                          {"type": "Hostname", "address": node.name}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady"}],
            "nodeInfo": {"machineID": _node_id(state, node, "machine"), "systemUUID": _node_id(state, node, "system"),
                         "bootID": _node_id(state, node, "boot"), "kernelVersion": platform.release(), "osImage": "netlab network namespace",
                         "containerRuntimeVersion": "netlab://0.1.0", "kubeletVersion": VERSION,
                         "kubeProxyVersion": VERSION, "architecture": "amd64", "operatingSystem": "linux"},
        },
    }


def _node_id(state, node, what):
    """The IDs kubelet reads from the node's machine (/etc/machine-id, DMI, the boot): stable per node."""
    return object_uid(state.lab, f"nodes/{what}", "", node.name, node.created or state.created)


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
        rs = f"{name}-{t.labels.get('pod-template-hash', '')}"
        d = next((x for x in state.deployments if x.namespace == pod.namespace and x.name == name), None)
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "controller": True,
                                    "blockOwnerDeletion": True,
                                    "uid": object_uid(state.lab, "replicasets", pod.namespace, rs,
                                                      (d.created if d else "") or state.created)}]
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
            "hostIP": node.internal_ip,
            "hostIPs": [{"ip": ip} for ip in node.ips],
            "podIP": pod.pod_ip,
            "podIPs": [{"ip": ip} for ip in pod.ips],
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": status(running)},
                {"type": "Ready", "status": status(ready)},
            ],
            "startTime": pod.created or state.created,
            "qosClass": "BestEffort",
            "containerStatuses": [_container_status(pod, c, ready, running, pod.created or state.created)
                                  for c in t.containers],
        },
    }


def _container_status(pod, c, ready, running, started):
    """kubelet's status of one container, as the CRI reports it (containerd's IDs)."""
    image = _container(c)["image"]
    state = ({"running": {"startedAt": started}} if running else
             {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": started, "finishedAt": started}})
    return {"name": c.name, "ready": ready, "restartCount": 0, "started": running, "image": image,
            "imageID": f"{image.split(':')[0]}@sha256:{pod.container_id}",
            "containerID": f"containerd://{pod.container_id}", "state": state, "lastState": {}}


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
        # An IPv4 cluster's records leave the defaults out: [clusterIP], IPv4, SingleStack.
        spec.update(clusterIP=svc.cluster_ip, clusterIPs=list(svc.cluster_ips) or [svc.cluster_ip],
                    ipFamilies=list(svc.ip_families) or ["IPv4"], ipFamilyPolicy=svc.ip_family_policy or "SingleStack",
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
        if svc.load_balancer_ips or svc.load_balancer_ip:      # a dual-stack lab's: one per family
            status["loadBalancer"]["ingress"] = [{"ip": ip, "ipMode": svc.load_balancer_ip_mode}
                                                 for ip in svc.load_balancer_ips or (svc.load_balancer_ip,)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc.name, "namespace": svc.namespace, "labels": dict(svc.labels),
                     "uid": service_uid(svc.namespace, svc.name),
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
    if svc.key == "default/kubernetes":          # the API server writes its slice itself: no mirroring
        labels["endpointslice.kubernetes.io/skip-mirror"] = "true"
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
    # The network policy agent, as kube-router's firewall-only DaemonSet runs it (--run-firewall):
    # k3s builds the same controller into its agent; netlab shows it as the DaemonSet it is elsewhere.
    {"namespace": "kube-system", "name": "kube-router", "labels": {"k8s-app": "kube-router"},
     "selector": {"k8s-app": "kube-router"}, "node_selector": {}, "container": "kube-router",
     "image": "docker.io/cloudnativelabs/kube-router:v2.6.3",
     "tolerations": [{"effect": "NoSchedule", "operator": "Exists"}, {"key": "CriticalAddonsOnly", "operator": "Exists"},
                     {"effect": "NoExecute", "operator": "Exists"}]},
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
            next((n.internal_ip for n in state.nodes for p in state.pods if p.namespace == "ingress-nginx" and p.node == n.name), None)
        if controller.type == "LoadBalancer" and controller.load_balancer_ips:   # the controller's, each family
            status["loadBalancer"]["ingress"] = [{"ip": ip} for ip in controller.load_balancer_ips]
        elif address:
            status["loadBalancer"]["ingress"] = [{"ip": address}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": ing.name, "namespace": ing.namespace, "creationTimestamp": ing.created or state.created},
            "spec": spec, "status": status}


def endpointslice_object(state, slice):
    """discovery.k8s.io/v1 EndpointSlice, fields in the order and form the API serializes them:
    `endpoints` and `ports` are null when empty (neither is omitempty, and etcd's protobuf
    keeps no empty list), a port's name is always there ("" for an unnamed port), an unset
    condition is left out. The controller's slices are owned by their Service (NewControllerRef)."""
    service = slice.labels.get("kubernetes.io/service-name")
    svc = next((s for s in state.services if s.namespace == slice.namespace and s.name == service), None)
    meta = {"name": slice.name}
    if slice.generate_name:
        meta["generateName"] = slice.generate_name
    meta.update(namespace=slice.namespace, labels=dict(slice.labels),
                creationTimestamp=slice.created or (svc.created if svc else "") or state.created)
    if slice.owner_uid:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": slice.owner_uid,
                                    "controller": True, "blockOwnerDeletion": True}]
    endpoints = []
    for e in slice.endpoints:
        out = {"addresses": list(e.addresses),
               "conditions": {k: v for k, v in (("ready", e.ready), ("serving", e.serving),
                                                ("terminating", e.terminating)) if v is not None}}
        if e.hostname:
            out["hostname"] = e.hostname
        if e.pod:
            out["targetRef"] = {"kind": "Pod", "namespace": slice.namespace, "name": e.pod, "uid": e.uid}
        if e.node:
            out["nodeName"] = e.node
        if e.zone:
            out["zone"] = e.zone
        endpoints.append(out)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
            "addressType": slice.address_type, "endpoints": endpoints or None,
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in slice.ports] or None}


# --- what a kind cluster has beside the workloads ------------------------------------------
# ReplicaSets, Namespaces, ConfigMaps and an IngressClass in their API shapes; the settings
# they carry (kubeadm's, the agents') are handed in by the caller, which knows them.

def replicaset_object(state, d, ready_pods=frozenset()):
    """The ReplicaSet a Deployment runs its pods from, `<deployment>-<pod-template-hash>`, in
    apps/v1's shape, owned by the Deployment; `ready_pods` as deployment_object takes them.
    The annotations are the deployment controller's (desired, and desired plus maxSurge 25%
    rounded up); zero counts are left out (omitempty), `replicas` never is. netlab keeps only
    the current template's ReplicaSet: a rollout's old ones are not kept at 0 replicas."""
    name = f"{d.name}-{d.template_hash}"
    created = d.created or state.created
    pods = [p for p in state.pods if p.namespace == d.namespace and p.owner == f"Deployment/{d.name}"]
    ready = sum(p.key in ready_pods for p in pods)
    labels = {**d.template.labels, "pod-template-hash": d.template_hash}
    surge = -(-d.replicas * 25 // 100)
    template_spec = {"containers": [_container(c) for c in d.template.containers]}
    if d.template.node_selector:
        template_spec["nodeSelector"] = dict(d.template.node_selector)
    counts = {"fullyLabeledReplicas": len(pods), "readyReplicas": ready, "availableReplicas": ready,
              "observedGeneration": 1}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": d.namespace,
                     "uid": object_uid(state.lab, "replicasets", d.namespace, name, created), "generation": 1,
                     "labels": labels,
                     "annotations": {"deployment.kubernetes.io/desired-replicas": str(d.replicas),
                                     "deployment.kubernetes.io/max-replicas": str(d.replicas + surge),
                                     "deployment.kubernetes.io/revision": "1"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": d.name,
                                          "uid": object_uid(state.lab, "deployments", d.namespace, d.name, created),
                                          "controller": True, "blockOwnerDeletion": True}],
                     "creationTimestamp": created},
        "spec": {"replicas": d.replicas,
                 "selector": {"matchLabels": {**d.match_labels, "pod-template-hash": d.template_hash}},
                 "template": {"metadata": {"labels": dict(labels)}, "spec": template_spec}},
        "status": {"replicas": len(pods), **{k: v for k, v in counts.items() if v}},
    }


def replicaset_objects(state, ready_pods=frozenset()):
    """Every Deployment's ReplicaSet, in the API's order (namespace, then name)."""
    found = [replicaset_object(state, d, ready_pods) for d in state.deployments]
    return sorted(found, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))


# The labels the manifests that create the system namespaces give them (kube-flannel.yml,
# ingress-nginx's deploy.yaml); every namespace also has the API server's immutable
# kubernetes.io/metadata.name.
NAMESPACE_LABELS = {
    "kube-flannel": {"k8s-app": "flannel", "pod-security.kubernetes.io/enforce": "privileged"},
    "ingress-nginx": {"app.kubernetes.io/instance": "ingress-nginx", "app.kubernetes.io/name": "ingress-nginx"},
}


def namespace_labels(name, labels=None):
    """A namespace's labels: its manifest's, a request's (state.namespaces[name]["labels"]),
    and the immutable kubernetes.io/metadata.name (what NetworkPolicies select it by)."""
    return {**NAMESPACE_LABELS.get(name, {}), **dict(labels or {}), "kubernetes.io/metadata.name": name}


def namespace_object(state, name, labels=None, created=""):
    """A v1 Namespace, Active; `labels` and `created` are a request's (state.namespaces)."""
    created = created or state.created
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": object_uid(state.lab, "namespaces", "", name, created),
                         "labels": namespace_labels(name, labels),
                         "creationTimestamp": created},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def configmap_object(state, namespace, name, data, labels=None, created=""):
    created = created or state.created
    meta = {"name": name, "namespace": namespace, "uid": object_uid(state.lab, "configmaps", namespace, name, created),
            "creationTimestamp": created}
    if labels:
        meta["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}


def corefile(domain, ttl):
    """The Corefile `kubeadm init` writes (cmd/kubeadm/app/phases/addons/dns/manifests.go,
    CoreDNSConfigMap, rendered for the cluster's domain); netlab's CoreDNS serves the same
    kubernetes zone with the same ttl, and has no upstream to forward to (a sealed lab)."""
    return (".:53 {\n"
            "    errors\n"
            "    health {\n"
            "       lameduck 5s\n"
            "    }\n"
            "    ready\n"
            f"    kubernetes {domain} in-addr.arpa ip6.arpa {{\n"
            "       pods insecure\n"
            "       fallthrough in-addr.arpa ip6.arpa\n"
            f"       ttl {ttl}\n"
            "    }\n"
            "    prometheus :9153\n"
            "    forward . /etc/resolv.conf {\n"
            "       max_concurrent 1000\n"
            "    }\n"
            "    cache 30 {\n"
            f"       disable success {domain}\n"
            f"       disable denial {domain}\n"
            "    }\n"
            "    loop\n"
            "    reload\n"
            "    loadbalance\n"
            "}\n")


def kube_proxy_config(cluster):
    """config.conf of kube-system/kube-proxy: the KubeProxyConfiguration kubeadm marshals
    (kubeproxy.config.k8s.io/v1alpha1, every field, keys sorted, zero values as Go writes
    them) after its defaulting (bindAddress, clusterCIDR from the pod subnet, the kubeconfig)
    and kind's settings (the proxy mode, iptables.minSyncPeriod 1s, conntrack.maxPerCore 0:
    nf_conntrack_max is not a node's to set)."""
    return ("apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
            "bindAddress: 0.0.0.0\n"
            "bindAddressHardFail: false\n"
            "clientConnection:\n"
            "  acceptContentTypes: \"\"\n"
            "  burst: 0\n"
            "  contentType: \"\"\n"
            "  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\n"
            "  qps: 0\n"
            f"clusterCIDR: {','.join(cluster.pod_subnets)}\n"
            "configSyncPeriod: 0s\n"
            "conntrack:\n"
            "  maxPerCore: 0\n"
            "  min: null\n"
            "  tcpBeLiberal: false\n"
            "  tcpCloseWaitTimeout: null\n"
            "  tcpEstablishedTimeout: null\n"
            "  udpStreamTimeout: 0s\n"
            "  udpTimeout: 0s\n"
            "detectLocal:\n"
            "  bridgeInterface: \"\"\n"
            "  interfaceNamePrefix: \"\"\n"
            "detectLocalMode: \"\"\n"
            "enableProfiling: false\n"
            "healthzBindAddress: \"\"\n"
            "hostnameOverride: \"\"\n"
            "iptables:\n"
            "  localhostNodePorts: null\n"
            "  masqueradeAll: false\n"
            "  masqueradeBit: null\n"
            "  minSyncPeriod: 1s\n"
            "  syncPeriod: 0s\n"
            "ipvs:\n"
            "  excludeCIDRs: null\n"
            "  minSyncPeriod: 0s\n"
            "  scheduler: \"\"\n"
            "  strictARP: false\n"
            "  syncPeriod: 0s\n"
            "  tcpFinTimeout: 0s\n"
            "  tcpTimeout: 0s\n"
            "  udpTimeout: 0s\n"
            "kind: KubeProxyConfiguration\n"
            "logging:\n"
            "  flushFrequency: 0\n"
            "  options:\n"
            "    json:\n"
            "      infoBufferSize: \"0\"\n"
            "    text:\n"
            "      infoBufferSize: \"0\"\n"
            "  verbosity: 0\n"
            "metricsBindAddress: \"\"\n"
            f"mode: {cluster.kube_proxy_mode}\n"
            "nftables:\n"
            "  masqueradeAll: false\n"
            "  masqueradeBit: null\n"
            "  minSyncPeriod: 0s\n"
            "  syncPeriod: 0s\n"
            "nodePortAddresses: null\n"
            "oomScoreAdj: null\n"
            "portRange: \"\"\n"
            "showHiddenMetricsForVersion: \"\"\n"
            "winkernel:\n"
            "  enableDSR: false\n"
            "  forwardHealthCheckVip: false\n"
            "  networkName: \"\"\n"
            "  rootHnsEndpointName: \"\"\n"
            "  sourceVip: \"\"")


def kube_proxy_kubeconfig(server):
    """kubeconfig.conf of kube-system/kube-proxy (kubeadm's KubeProxyConfigMap19): the
    control-plane endpoint, with the pod's service-account credentials."""
    return ("apiVersion: v1\n"
            "kind: Config\n"
            "clusters:\n"
            "- cluster:\n"
            "    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n"
            f"    server: {server}\n"
            "  name: default\n"
            "contexts:\n"
            "- context:\n"
            "    cluster: default\n"
            "    namespace: default\n"
            "    user: default\n"
            "  name: default\n"
            "current-context: default\n"
            "users:\n"
            "- name: default\n"
            "  user:\n"
            "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token")


# cni-conf.json of kube-flannel-cfg: what flannel's install-cni container copies to
# /etc/cni/net.d/10-flannel.conflist (the bridge plugin, cbr0, hairpin mode, and portmap).
FLANNEL_CNI_CONF = ("{\n"
                    "  \"name\": \"cbr0\",\n"
                    "  \"cniVersion\": \"0.3.1\",\n"
                    "  \"plugins\": [\n"
                    "    {\n"
                    "      \"type\": \"flannel\",\n"
                    "      \"delegate\": {\n"
                    "        \"hairpinMode\": true,\n"
                    "        \"isDefaultGateway\": true\n"
                    "      }\n"
                    "    },\n"
                    "    {\n"
                    "      \"type\": \"portmap\",\n"
                    "      \"capabilities\": {\n"
                    "        \"portMappings\": true\n"
                    "      }\n"
                    "    }\n"
                    "  ]\n"
                    "}\n")


def configmap_objects(state, dns_domain):
    """The ConfigMaps of a kind cluster with flannel that describe what netlab runs:
    kube-system/kube-proxy, kube-system/coredns (the Corefile for `dns_domain`, without its
    trailing dot) and kube-flannel/kube-flannel-cfg, in the API's order."""
    control_plane = next((n.name for n in state.nodes if n.role == "control-plane"), f"{state.lab}-control-plane")
    return [
        configmap_object(state, "kube-flannel", "kube-flannel-cfg",
                         {"cni-conf.json": FLANNEL_CNI_CONF,
                          "net-conf.json": netconf.net_conf(state.cluster)},
                         {"app": "flannel", "k8s-app": "flannel", "tier": "node"}),
        configmap_object(state, "kube-system", "coredns", {"Corefile": corefile(dns_domain, state.cluster.dns_ttl)}),
        configmap_object(state, "kube-system", "kube-proxy",
                         {"config.conf": kube_proxy_config(state.cluster),
                          "kubeconfig.conf": kube_proxy_kubeconfig(f"https://{control_plane}:6443")},
                         {"app": "kube-proxy"}),
    ]


def ingressclass_objects(state, controller_version):
    """ingress-nginx's IngressClass `nginx` (deploy.yaml), when the lab runs the controller;
    the cluster's default class, so the controller also serves Ingresses naming none
    (NGINX_CLASSES)."""
    if not state.cluster.ingress:
        return []
    labels = {"app.kubernetes.io/component": "controller", "app.kubernetes.io/instance": "ingress-nginx",
              "app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/part-of": "ingress-nginx",
              "app.kubernetes.io/version": controller_version}
    return [{"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
             "metadata": {"name": "nginx", "uid": object_uid(state.lab, "ingressclasses", "", "nginx", state.created),
                          "labels": labels, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
                          "creationTimestamp": state.created},
             "spec": {"controller": "k8s.io/ingress-nginx"}}]


def _label_selector(selector):
    """A metav1.LabelSelector as the API serializes it: {} when empty (both fields omitempty)."""
    out = {}
    if selector.match_labels:
        out["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        out["matchExpressions"] = [{"key": key, "operator": op, **({"values": list(values)} if values else {})}
                                   for key, op, values in selector.match_expressions]
    return out


def _policy_peer(peer):
    out = {}
    if peer.pod_selector is not None:
        out["podSelector"] = _label_selector(peer.pod_selector)
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = _label_selector(peer.namespace_selector)
    if peer.ip_block is not None:
        out["ipBlock"] = {"cidr": peer.ip_block.cidr, **({"except": list(peer.ip_block.excepts)}
                                                        if peer.ip_block.excepts else {})}
    return out


def _policy_rule(rule, peers_key):
    """An ingress or egress rule; `ports` before the peers, as the v1 types declare them. An
    empty rule is {} (allow all), as both lists are omitempty."""
    out = {}
    if rule.ports:
        out["ports"] = [{"protocol": p.protocol, **({"port": p.port} if p.port is not None else {}),
                         **({"endPort": p.end_port} if p.end_port is not None else {})} for p in rule.ports]
    if rule.peers:
        out[peers_key] = [_policy_peer(p) for p in rule.peers]
    return out


def networkpolicy_object(state, policy):
    """A networking.k8s.io/v1 NetworkPolicy as the API serves it, defaults applied (every port's
    protocol, policyTypes); podSelector is always there ({} selects every pod of the namespace),
    empty rule lists are left out (omitempty: `ingress: []` and no ingress are the same)."""
    created = policy.created or state.created
    spec = {"podSelector": _label_selector(policy.pod_selector)}
    if policy.ingress:
        spec["ingress"] = [_policy_rule(r, "from") for r in policy.ingress]
    if policy.egress:
        spec["egress"] = [_policy_rule(r, "to") for r in policy.egress]
    spec["policyTypes"] = list(policy.policy_types)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": policy.name, "namespace": policy.namespace,
                         "uid": object_uid(state.lab, "networkpolicies", policy.namespace, policy.name, created),
                         "creationTimestamp": created},
            "spec": spec}
