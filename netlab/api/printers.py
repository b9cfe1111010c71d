"""kube-apiserver's table printers and kubectl's human-readable printer: one code path for
`netlab get` and the API's `Accept: ...;as=Table;g=meta.k8s.io` answers.

    table(kind, objects)  -> a meta.k8s.io/v1 Table, as kube-apiserver returns it
                             (pkg/printers/internalversion/printers.go: each kind's column
                             definitions and print function; pkg/printers/tablegenerator.go;
                             the includeObject handling of apiserver/pkg/endpoints/handlers)
    render(table)         -> the text kubectl prints for that Table (k8s.io/cli-runtime
                             pkg/printers/tableprinter.go: decorateTable and printTable, then
                             github.com/liggitt/tabwriter with kubectl's settings)

The server always builds the wide cells (pkg/printers/storage: GenerateOptions{Wide: true}):
kubectl drops the priority-1 columns unless it was given -o wide. So a LoadBalancer's address
is never clipped to 16 characters in a Table, as it is in kubectl's own (old) printers.
"""

import datetime
import math

DOCS = {
    "ObjectMeta.name": (
        "Name must be unique within a namespace. Is required when creating resources, although some resources "
        "may allow a client to request the generation of an appropriate name automatically. Name is primarily "
        "intended for creation idempotence and configuration definition. Cannot be updated. More info: "
        "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"),
    "ObjectMeta.creationTimestamp": (
        "CreationTimestamp is a timestamp representing the server time when this object was created. It is not "
        "guaranteed to be set in happens-before order across separate operations. Clients may not set this "
        "value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null "
        "for lists. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"),
    "PodStatus.podIP": (
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    "PodSpec.nodeName": (
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for "
        "scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this "
        "node becomes responsible for the lifecycle of this pod. This field should not be used to express a "
        "desire for the pod to be scheduled on a specific node. "
        "https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename"),
    "PodStatus.nominatedNodeName": (
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be "
        "scheduled right away as preemption victims receive their graceful termination periods. This field "
        "does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod "
        "elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on "
        "this node to a higher priority pod that is created after preemption. As a result, this field may be "
        "different than PodSpec.nodeName when the pod is scheduled."),
    "PodSpec.readinessGates": (
        "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its "
        "containers are ready AND all conditions specified in the readiness gates have status equal to "
        "\"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates"),
    "PodSpec.nodeSelector": (
        "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match "
        "a node's labels for the pod to be scheduled on that node. More info: "
        "https://kubernetes.io/docs/concepts/configuration/assign-pod-node/"),
    "ServiceSpec.type": (
        "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, "
        "ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for "
        "load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by "
        "manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no "
        "virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual "
        "IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same "
        "endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer "
        "(if supported in the current cloud) which routes to the same endpoints as the clusterIP. "
        "\"ExternalName\" aliases this service to the specified externalName. Several other fields do not "
        "apply to ExternalName services. More info: "
        "https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types"),
    "ServiceSpec.clusterIP": (
        "clusterIP is the IP address of the service and is usually assigned randomly. If an address is "
        "specified manually, is in-range (as per system configuration), and is not in use, it will be "
        "allocated to the service; otherwise creation of the service will fail. This field may not be changed "
        "through updates unless the type field is also being changed to ExternalName (which requires this "
        "field to be blank) or the type field is being changed from ExternalName (in which case this field may "
        "optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a "
        "valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is "
        "useful when direct endpoint connections are preferred and proxying is not required.  Only applies to "
        "types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of "
        "type ExternalName, creation will fail. This field will be wiped when updating a Service to type "
        "ExternalName. More info: "
        "https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"),
    "ServiceSpec.externalIPs": (
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for "
        "this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that "
        "traffic arrives at a node with this IP.  A common example is external load-balancers that are not "
        "part of the Kubernetes system."),
    "ServiceSpec.ports": (
        "The list of ports that are exposed by this service. More info: "
        "https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"),
    "ServiceSpec.selector": (
        "Route service traffic to pods with label keys and values matching this selector. If empty or not "
        "present, the service is assumed to have an external process managing its endpoints, which Kubernetes "
        "will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is "
        "ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/"),
    "Endpoints.subsets": (
        "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to "
        "the IPs they share. A single address with multiple ports, some of which are ready and some of which "
        "are not (because they come from different containers) will result in the address being displayed in "
        "different subsets for the different ports. No address will appear in both Addresses and "
        "NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service."),
    "NodeStatus.addresses": (
        "List of addresses reachable to the node. Queried from cloud provider, if available. More info: "
        "https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as "
        "mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is "
        "merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an "
        "example. Consumers should assume that addresses can change during the lifetime of a Node. However, "
        "there are some exceptions where this may not be possible, such as Pods that inherit a Node's address "
        "in its own status or consumers of the downward API (status.hostIP)."),
    "NodeSystemInfo.kubeletVersion": (
        "Kubelet Version reported by the node."),
    "NodeSystemInfo.osImage": (
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    "NodeSystemInfo.kernelVersion": (
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    "NodeSystemInfo.containerRuntimeVersion": (
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
    "Event.lastTimestamp": (
        "The time at which the most recent occurrence of this event was recorded."),
    "Event.type": (
        "Type of this event (Normal, Warning), new types could be added in the future"),
    "Event.reason": (
        "This should be a short, machine understandable string that gives the reason for the transition into "
        "the object's current status."),
    "Event.involvedObject": (
        "The object that this event is about."),
    "ObjectReference.fieldPath": (
        "If referring to a piece of an object instead of an entire object, this string should contain a valid "
        "JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the "
        "object reference is to a container within a pod, this would take on a value like: "
        "\"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the "
        "event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this "
        "pod). This syntax is chosen only to have some well-defined way of referencing a part of an object."),
    "Event.source": (
        "The component reporting this event. Should be a short machine understandable string."),
    "Event.message": (
        "A human-readable description of the status of this operation."),
    "Event.firstTimestamp": (
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
    "Event.count": (
        "The number of times this event has occurred."),
    "ConfigMap.data": (
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or "
        "'.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must "
        "not overlap with the keys in the BinaryData field, this is enforced during validation process."),
    "ReplicaSetSpec.replicas": (
        "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and "
        "unspecified. Defaults to 1. More info: "
        "https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
    "ReplicaSetStatus.replicas": (
        "Replicas is the most recently observed number of non-terminating pods. More info: "
        "https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
    "ReplicaSetStatus.readyReplicas": (
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
    "ReplicaSetSpec.selector": (
        "Selector is a label query over pods that should match the replica count. If the selector is empty, it "
        "is defaulted to the labels present on the pod template. Label keys and values that must match in "
        "order to be controlled by this replica set. More info: "
        "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
    "DaemonSetStatus.desiredNumberScheduled": (
        "The total number of nodes that should be running the daemon pod (including nodes correctly running "
        "the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
    "DaemonSetStatus.currentNumberScheduled": (
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. "
        "More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
    "DaemonSetStatus.numberReady": (
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod "
        "running and ready."),
    "DaemonSetStatus.updatedNumberScheduled": (
        "The total number of nodes that are running updated daemon pod"),
    "DaemonSetStatus.numberAvailable": (
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod "
        "running and available (ready for at least spec.minReadySeconds)"),
    "DaemonSetSpec.selector": (
        "A label query over pods that are managed by the daemon set. Must match in order to be controlled. If "
        "empty, defaulted to labels on Pod template. More info: "
        "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
    "DeploymentStatus.updatedReplicas": (
        "Total number of non-terminating pods targeted by this deployment that have the desired template spec."),
    "DeploymentStatus.availableReplicas": (
        "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this "
        "deployment."),
    "DeploymentSpec.selector": (
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones "
        "affected by this deployment."),
    "EndpointSlice.addressType": (
        "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice "
        "must be the same type. This field is immutable after creation. The following address types are "
        "currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: "
        "Represents a Fully Qualified Domain Name."),
    "EndpointSlice.ports": (
        "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have "
        "a unique name. When ports is empty, it indicates that there are no defined ports. When a port is "
        "defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 "
        "ports."),
    "NetworkPolicySpec.podSelector": (
        "podSelector selects the pods to which this NetworkPolicy object applies. The array of rules is applied to "
        "any pods selected by this field. An empty selector matches all pods in the policy's namespace. Multiple "
        "network policies can select the same set of pods. In this case, the ingress rules for each are combined "
        "additively. This field is optional. If it is not specified, it defaults to an empty selector."),
    "EndpointSlice.endpoints": (
        "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 "
        "endpoints."),
}


TABLE_API_VERSION = "meta.k8s.io/v1"

# plural -> (kind, API group, namespaced): what -A, --show-kind's prefix and kubectl's
# "No resources found" message depend on.
RESOURCES = {
    "nodes": ("Node", "", False),
    "pods": ("Pod", "", True),
    "services": ("Service", "", True),
    "endpoints": ("Endpoints", "", True),
    "endpointslices": ("EndpointSlice", "discovery.k8s.io", True),
    "deployments": ("Deployment", "apps", True),
    "replicasets": ("ReplicaSet", "apps", True),
    "daemonsets": ("DaemonSet", "apps", True),
    "ingresses": ("Ingress", "networking.k8s.io", True),
    "ingressclasses": ("IngressClass", "networking.k8s.io", False),
    "networkpolicies": ("NetworkPolicy", "networking.k8s.io", True),
    "namespaces": ("Namespace", "", False),
    "configmaps": ("ConfigMap", "", True),
    "events": ("Event", "", True),
}


def namespaced(kind):
    return RESOURCES[kind][2]


def group_kind(kind):
    """schema.GroupKind.String() of a resource: "Pod", "Deployment.apps" (kubectl lowercases
    it for --show-kind's `deployment.apps/web`)."""
    name, group, _ = RESOURCES[kind]
    return f"{name}.{group}" if group else name


def qualified(kind):
    """The resource as the API's messages name it: `pods`, `deployments.apps`."""
    group = RESOURCES[kind][1]
    return f"{kind}.{group}" if group else kind


def no_resources(namespace=None):
    """What kubectl get says on stderr when it printed nothing: a namespace for a namespaced
    kind without -A, none for -A or a cluster-scoped kind."""
    return f"No resources found in {namespace} namespace." if namespace else "No resources found"


# --- column definitions: printers.go AddHandlers, descriptions from the types' SwaggerDoc() --

def _col(name, type_, description, priority=0, fmt=""):
    return {"name": name, "type": type_, "format": fmt, "description": description, "priority": priority}


_NAME = _col("Name", "string", DOCS["ObjectMeta.name"], fmt="name")
_AGE = _col("Age", "string", DOCS["ObjectMeta.creationTimestamp"])
_CONTAINERS = _col("Containers", "string", "Names of each container in the template.", 1)
_IMAGES = _col("Images", "string", "Images referenced by each container in the template.", 1)

COLUMNS = {
    "pods": (
        _NAME,
        _col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
        _col("Status", "string", "The aggregate status of the containers in this pod."),
        _col("Restarts", "string", "The number of times the containers in this pod have been restarted and when "
             "the last container in this pod has restarted."),
        _AGE,
        _col("IP", "string", DOCS["PodStatus.podIP"], 1),
        _col("Node", "string", DOCS["PodSpec.nodeName"], 1),
        _col("Nominated Node", "string", DOCS["PodStatus.nominatedNodeName"], 1),
        _col("Readiness Gates", "string", DOCS["PodSpec.readinessGates"], 1)),
    "replicasets": (
        _NAME,
        _col("Desired", "integer", DOCS["ReplicaSetSpec.replicas"]),
        _col("Current", "integer", DOCS["ReplicaSetStatus.replicas"]),
        _col("Ready", "integer", DOCS["ReplicaSetStatus.readyReplicas"]),
        _AGE, _CONTAINERS, _IMAGES,
        _col("Selector", "string", DOCS["ReplicaSetSpec.selector"], 1)),
    "daemonsets": (
        _NAME,
        _col("Desired", "integer", DOCS["DaemonSetStatus.desiredNumberScheduled"]),
        _col("Current", "integer", DOCS["DaemonSetStatus.currentNumberScheduled"]),
        _col("Ready", "integer", DOCS["DaemonSetStatus.numberReady"]),
        _col("Up-to-date", "integer", DOCS["DaemonSetStatus.updatedNumberScheduled"]),
        _col("Available", "integer", DOCS["DaemonSetStatus.numberAvailable"]),
        _col("Node Selector", "string", DOCS["PodSpec.nodeSelector"]),
        _AGE, _CONTAINERS, _IMAGES,
        _col("Selector", "string", DOCS["DaemonSetSpec.selector"], 1)),
    "services": (
        _NAME,
        _col("Type", "string", DOCS["ServiceSpec.type"]),
        _col("Cluster-IP", "string", DOCS["ServiceSpec.clusterIP"]),
        _col("External-IP", "string", DOCS["ServiceSpec.externalIPs"]),
        _col("Port(s)", "string", DOCS["ServiceSpec.ports"]),
        _AGE,
        _col("Selector", "string", DOCS["ServiceSpec.selector"], 1)),
    "ingresses": (
        _NAME,
        _col("Class", "string",
             "The name of the IngressClass resource that should be used for additional configuration"),
        _col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
        _col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
        _col("Ports", "string", "Ports of TLS configurations that open"),
        _AGE),
    "ingressclasses": (
        _NAME,
        _col("Controller", "string", "Controller that is responsible for handling this class"),
        _col("Parameters", "string", "A reference to a resource with additional parameters"),
        _AGE),
    "endpoints": (
        _NAME,
        _col("Endpoints", "string", DOCS["Endpoints.subsets"]),
        _AGE),
    "networkpolicies": (
        _NAME,
        _col("Pod-Selector", "string", DOCS["NetworkPolicySpec.podSelector"]),
        _AGE),
    "nodes": (
        _NAME,
        _col("Status", "string", "The status of the node"),
        _col("Roles", "string", "The roles of the node"),
        _AGE,
        _col("Version", "string", DOCS["NodeSystemInfo.kubeletVersion"]),
        _col("Internal-IP", "string", DOCS["NodeStatus.addresses"], 1),
        _col("External-IP", "string", DOCS["NodeStatus.addresses"], 1),
        _col("OS-Image", "string", DOCS["NodeSystemInfo.osImage"], 1),
        _col("Kernel-Version", "string", DOCS["NodeSystemInfo.kernelVersion"], 1),
        _col("Container-Runtime", "string", DOCS["NodeSystemInfo.containerRuntimeVersion"], 1)),
    "events": (
        _col("Last Seen", "string", DOCS["Event.lastTimestamp"]),
        _col("Type", "string", DOCS["Event.type"]),
        _col("Reason", "string", DOCS["Event.reason"]),
        _col("Object", "string", DOCS["Event.involvedObject"]),
        _col("Subobject", "string", DOCS["ObjectReference.fieldPath"], 1),
        _col("Source", "string", DOCS["Event.source"], 1),
        _col("Message", "string", DOCS["Event.message"]),
        _col("First Seen", "string", DOCS["Event.firstTimestamp"], 1),
        _col("Count", "string", DOCS["Event.count"], 1),
        _col("Name", "string", DOCS["ObjectMeta.name"], 1, fmt="name")),
    "namespaces": (
        _NAME,
        _col("Status", "string", "The status of the namespace"),
        _AGE),
    "deployments": (
        _NAME,
        _col("Ready", "string", "Number of the pod with ready state"),
        _col("Up-to-date", "string", DOCS["DeploymentStatus.updatedReplicas"]),
        _col("Available", "string", DOCS["DeploymentStatus.availableReplicas"]),
        _AGE, _CONTAINERS, _IMAGES,
        _col("Selector", "string", DOCS["DeploymentSpec.selector"], 1)),
    "configmaps": (
        _NAME,
        _col("Data", "string", DOCS["ConfigMap.data"]),
        _AGE),
    "endpointslices": (
        _NAME,
        _col("AddressType", "string", DOCS["EndpointSlice.addressType"]),
        _col("Ports", "string", DOCS["EndpointSlice.ports"]),
        _col("Endpoints", "string", DOCS["EndpointSlice.endpoints"]),
        _AGE),
}


# --- ages: translateTimestampSince and k8s.io/apimachinery/pkg/util/duration --------------

def parse_time(value):
    """An RFC 3339 timestamp (metav1.Time, or MicroTime's fractional seconds) as an aware datetime."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _now(now=None):
    return now or datetime.datetime.now(datetime.timezone.utc)


def human_duration(d):
    """duration.HumanDuration of a timedelta: ~2-3 significant figures (`90s`, `5m12s`,
    `3h4m`, `2d5h`, `1y20d`); within 2 seconds in the future is "0s"."""
    ns = d // datetime.timedelta(microseconds=1) * 1000
    seconds = math.trunc(ns / 10**9)                     # int(d.Seconds()): toward zero
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = ns // (60 * 10**9)
    if minutes < 10:
        s = ns // 10**9 % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = ns // (3600 * 10**9)
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = hours // 24 % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def age(timestamp, now=None):
    """translateTimestampSince: the age of an RFC 3339 timestamp; "<unknown>" for none."""
    if not timestamp:
        return "<unknown>"
    return human_duration(_now(now) - parse_time(timestamp))


# --- labels and selectors: k8s.io/apimachinery/pkg/labels and metav1's helpers --------------

def format_labels(labels):
    """labels.FormatLabels: `k=v` sorted by key, comma-joined; "<none>" for none."""
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "<none>"


def selector_string(selector):
    """metav1.LabelSelectorAsSelector(...).String(): requirements sorted by key; "" for an
    empty or absent selector (Everything and Nothing both print as "")."""
    if not selector:
        return ""
    reqs = [(k, f"{k}={v}") for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], sorted(e.get("values") or [])
        text = {"In": f"{key} in ({','.join(values)})", "NotIn": f"{key} notin ({','.join(values)})",
                "Exists": key, "DoesNotExist": f"!{key}"}.get(op, key)
        reqs.append((key, text))
    return ",".join(text for _, text in sorted(reqs, key=lambda r: r[0]))


def format_label_selector(selector):
    """metav1.FormatLabelSelector: the selector's string, "<none>" when empty."""
    return selector_string(selector) or "<none>"


def _containers(containers):
    """layoutContainerCells: names and images, comma-joined."""
    containers = containers or []
    return ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)


def _join_host_port(ip, port):
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"          # net.JoinHostPort


def _list_with_more(items, more, count, limit):
    """listWithMoreString."""
    text = ",".join(items)
    if more:
        return f"{text} + {count - limit} more..."
    return text or "<unset>"


def _meta(obj):
    return obj.get("metadata") or {}


def _created(obj, now):
    return age(_meta(obj).get("creationTimestamp"), now)


# --- the print functions: one row's cells (always the wide ones, as the server builds them) --

def _restartable(init_container):
    """podutil.IsRestartableInitContainer: a sidecar (an init container with restartPolicy Always)."""
    return bool(init_container) and init_container.get("restartPolicy") == "Always"


def _later(current, terminated):
    finished = (terminated or {}).get("finishedAt")
    if not finished:
        return current
    t = parse_time(finished)
    return t if current is None or current < t else current


def _running(status):
    """containerStatus.State.Running != nil. netlab's kubelet reports `started` and leaves the
    state out: a status with no state at all is read as running when it started (a real
    kubelet always writes a state, for which this is the printer's own test)."""
    if "state" in status:
        return bool((status.get("state") or {}).get("running") is not None)
    return bool(status.get("started"))


def _condition(conditions, type_):
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def print_pod(pod, now=None):
    """printPod: (cells, row conditions)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    total = len(spec.get("containers") or []) + sum(_restartable(c) for c in init_specs.values())
    restarts = sidecar_restarts = ready = 0
    last_restart = sidecar_last_restart = None
    phase = status.get("phase", "")
    reason = status.get("reason") or phase
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    row_conditions = {
        "Succeeded": [{"type": "Completed", "status": "True", "reason": "Succeeded",
                       "message": "The pod has completed successfully."}],
        "Failed": [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}],
    }.get(phase)

    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for i, c in enumerate(init_statuses):
        restarts += c.get("restartCount", 0)
        last = (c.get("lastState") or {}).get("terminated")
        last_restart = _later(last_restart, last)
        sidecar = _restartable(init_specs.get(c.get("name")))
        if sidecar:
            sidecar_restarts += c.get("restartCount", 0)
            sidecar_last_restart = _later(sidecar_last_restart, last)
        state = c.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and terminated.get("exitCode", 0) == 0:
            continue
        if sidecar and c.get("started"):
            ready += bool(c.get("ready"))
            continue
        if terminated is not None:
            if not terminated.get("reason"):
                reason = (f"Init:Signal:{terminated['signal']}" if terminated.get("signal")
                          else f"Init:ExitCode:{terminated.get('exitCode', 0)}")
            else:
                reason = "Init:" + terminated["reason"]
        elif waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break

    initialized = (_condition(status.get("conditions"), "Initialized") or {}).get("status") == "True"
    if not initializing or initialized:
        restarts, last_restart = sidecar_restarts, sidecar_last_restart
        has_running = False
        for c in reversed(status.get("containerStatuses") or []):
            restarts += c.get("restartCount", 0)
            last_restart = _later(last_restart, (c.get("lastState") or {}).get("terminated"))
            state = c.get("state") or {}
            terminated, waiting = state.get("terminated"), state.get("waiting")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated is not None:
                reason = (f"Signal:{terminated['signal']}" if terminated.get("signal")
                          else f"ExitCode:{terminated.get('exitCode', 0)}")
            elif c.get("ready") and _running(c):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            ready_condition = _condition(status.get("conditions"), "Ready")
            reason = "Running" if (ready_condition or {}).get("status") == "True" else "NotReady"

    deleting = _meta(pod).get("deletionTimestamp")
    if deleting and status.get("reason") == "NodeLost":                # node.NodeUnreachablePodReason
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(_now(now) - last_restart)} ago)"

    ips = status.get("podIPs") or []
    gates = spec.get("readinessGates") or []
    gates_text = "<none>"
    if gates:
        true = sum((_condition(status.get("conditions"), g.get("conditionType")) or {}).get("status") == "True"
                   for g in gates)
        gates_text = f"{true}/{len(gates)}"
    cells = [_meta(pod).get("name", ""), f"{ready}/{total}", reason, restarts_text, _created(pod, now),
             (ips[0].get("ip") if ips else "") or "<none>", spec.get("nodeName") or "<none>",
             status.get("nominatedNodeName") or "<none>", gates_text]
    return cells, row_conditions


def print_replicaset(rs, now=None):
    spec, status = rs.get("spec") or {}, rs.get("status") or {}
    names, images = _containers(((spec.get("template") or {}).get("spec") or {}).get("containers"))
    return [_meta(rs).get("name", ""), spec.get("replicas", 1), status.get("replicas", 0),
            status.get("readyReplicas", 0), _created(rs, now), names, images,
            format_label_selector(spec.get("selector"))], None


def print_daemonset(ds, now=None):
    spec, status = ds.get("spec") or {}, ds.get("status") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    names, images = _containers(pod_spec.get("containers"))
    return [_meta(ds).get("name", ""), status.get("desiredNumberScheduled", 0), status.get("currentNumberScheduled", 0),
            status.get("numberReady", 0), status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0),
            format_labels(pod_spec.get("nodeSelector")), _created(ds, now), names, images,
            format_label_selector(spec.get("selector"))], None


def _load_balancer_addresses(lb_status):
    """loadBalancerStatusStringer with wide (as the server calls it): the ingress points' IPs,
    or hostnames, as a sorted set."""
    found = {i.get("ip") or i.get("hostname") for i in (lb_status or {}).get("ingress") or []}
    return ",".join(sorted(a for a in found if a))


def service_external_ip(svc):
    """getServiceExternalIP."""
    spec = svc.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    external = spec.get("externalIPs") or []
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "LoadBalancer":
        addresses = _load_balancer_addresses((svc.get("status") or {}).get("loadBalancer"))
        if external:
            return ",".join((addresses.split(",") if addresses else []) + external)
        return addresses or "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName", "")
    return "<unknown>"


def service_ports(ports):
    """makePortString: `port/PROTO`, or `port:nodePort/PROTO` when it has a NodePort."""
    return ",".join(f"{p['port']}:{p['nodePort']}/{p.get('protocol', 'TCP')}" if p.get("nodePort")
                    else f"{p['port']}/{p.get('protocol', 'TCP')}" for p in ports or [])


def print_service(svc, now=None):
    spec = svc.get("spec") or {}
    cluster_ips = spec.get("clusterIPs") or []
    return [_meta(svc).get("name", ""), spec.get("type", "ClusterIP"), cluster_ips[0] if cluster_ips else "<none>",
            service_external_ip(svc), service_ports(spec.get("ports")) or "<none>", _created(svc, now),
            format_labels(spec.get("selector"))], None


def _ingress_hosts(rules):
    """formatHosts: three hosts, then how many more rules there are."""
    hosts, limit, more = [], 3, False
    for rule in rules or []:
        if len(hosts) == limit:
            more = True
        if not more and rule.get("host"):
            hosts.append(rule["host"])
    if not hosts:
        return "*"
    return ",".join(hosts) + (f" + {len(rules) - limit} more..." if more else "")


def print_ingress(ing, now=None):
    spec = ing.get("spec") or {}
    return [_meta(ing).get("name", ""), spec.get("ingressClassName") or "<none>", _ingress_hosts(spec.get("rules")),
            _load_balancer_addresses((ing.get("status") or {}).get("loadBalancer")),
            "80, 443" if spec.get("tls") else "80", _created(ing, now)], None


def print_networkpolicy(np, now=None):
    """printNetworkPolicy: the name, metav1.FormatLabelSelector of spec.podSelector ("<none>"
    for the empty one, which selects every pod of the namespace), the age."""
    return [_meta(np).get("name", ""), format_label_selector((np.get("spec") or {}).get("podSelector")),
            _created(np, now)], None


def print_ingressclass(ic, now=None):
    spec = ic.get("spec") or {}
    params = spec.get("parameters")
    parameters = "<none>"
    if params:
        parameters = params.get("kind", "") + (f".{params['apiGroup']}" if params.get("apiGroup") else "") \
            + "/" + params.get("name", "")
    return [_meta(ic).get("name", ""), spec.get("controller", ""), parameters, _created(ic, now)], None


def format_endpoints(endpoints):
    """formatEndpoints (ports=nil): ip:port per port and ready address, three shown, then
    "+ N more..."; "<none>" without subsets, "" when the subsets hold no ready address."""
    subsets = endpoints.get("subsets") or []
    if not subsets:
        return "<none>"
    shown, limit, more, count = [], 3, False, 0
    for ss in subsets:
        addresses = ss.get("addresses") or []
        ports = ss.get("ports") or []
        if not ports:                                  # a headless Service's, with no ports
            count += len(addresses)
            for a in addresses:
                if len(shown) == limit:
                    more = True
                    break
                shown.append(a["ip"])
            continue
        for port in ports:
            count += len(addresses)
            for a in addresses:
                if len(shown) == limit:
                    more = True
                    break
                shown.append(_join_host_port(a["ip"], port["port"]))
    text = ",".join(shown)
    return f"{text} + {count - limit} more..." if more else text


def print_endpoints(ep, now=None):
    return [_meta(ep).get("name", ""), format_endpoints(ep), _created(ep, now)], None


def _discovery_ports(ports):
    """formatDiscoveryPorts: the numbers (or names; "*" for all ports), three, then more."""
    shown, limit, more, count = [], 3, False, 0
    for p in ports or []:
        if len(shown) < limit:
            if p.get("port") is not None:
                shown.append(str(p["port"]))
            elif p.get("name") is not None:
                shown.append(p["name"])
            else:
                shown.append("*")
        elif len(shown) == limit:
            more = True
        count += 1
    return _list_with_more(shown, more, count, limit)


def _discovery_endpoints(endpoints):
    """formatDiscoveryEndpoints: every endpoint's addresses, whatever its conditions."""
    shown, limit, more, count = [], 3, False, 0
    for e in endpoints or []:
        for address in e.get("addresses") or []:
            if len(shown) < limit:
                shown.append(address)
            elif len(shown) == limit:
                more = True
            count += 1
    return _list_with_more(shown, more, count, limit)


def print_endpointslice(eps, now=None):
    return [_meta(eps).get("name", ""), eps.get("addressType", ""), _discovery_ports(eps.get("ports")),
            _discovery_endpoints(eps.get("endpoints")), _created(eps, now)], None


NODE_ROLE_PREFIX = "node-role.kubernetes.io/"
NODE_ROLE_LABEL = "kubernetes.io/role"


def node_roles(labels):
    """findNodeRoles: node-role.kubernetes.io/<role> keys and kubernetes.io/role values, sorted."""
    roles = set()
    for k, v in (labels or {}).items():
        if k.startswith(NODE_ROLE_PREFIX) and k[len(NODE_ROLE_PREFIX):]:
            roles.add(k[len(NODE_ROLE_PREFIX):])
        elif k == NODE_ROLE_LABEL and v:
            roles.add(v)
    return sorted(roles)


def _node_address(node, type_):
    return next((a["address"] for a in (node.get("status") or {}).get("addresses") or [] if a.get("type") == type_),
                "<none>")


def print_node(node, now=None):
    spec, status = node.get("spec") or {}, node.get("status") or {}
    ready = _condition(status.get("conditions"), "Ready")
    states = [] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    states = states or ["Unknown"]
    if spec.get("unschedulable"):
        states.append("SchedulingDisabled")
    info = status.get("nodeInfo") or {}
    return [_meta(node).get("name", ""), ",".join(states), ",".join(node_roles(_meta(node).get("labels"))) or "<none>",
            _created(node, now), info.get("kubeletVersion", ""), _node_address(node, "InternalIP"),
            _node_address(node, "ExternalIP"), info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"], None


def event_source(event):
    """formatEventSource: the component (or reportingComponent), then ", host" (or the
    reporting instance) when there is one."""
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    return f"{component}, {host}" if host else component


def print_event(event, now=None):
    first = age(event.get("firstTimestamp"), now) if event.get("firstTimestamp") else age(event.get("eventTime"), now)
    last = age(event.get("lastTimestamp"), now) if event.get("lastTimestamp") else first
    count = event.get("count") or 0
    series = event.get("series")
    if series:
        last = age(series.get("lastObservedTime"), now)
        count = series.get("count", 0)
    elif count == 0:
        count = 1                                      # singleton events of the new API have no count
    involved = event.get("involvedObject") or {}
    kind = (involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    return [last, event.get("type", ""), event.get("reason", ""), target, involved.get("fieldPath", ""),
            event_source(event), (event.get("message") or "").strip(), first, count,
            _meta(event).get("name", "")], None


def print_namespace(ns, now=None):
    return [_meta(ns).get("name", ""), (ns.get("status") or {}).get("phase", ""), _created(ns, now)], None


def print_deployment(d, now=None):
    spec, status = d.get("spec") or {}, d.get("status") or {}
    names, images = _containers(((spec.get("template") or {}).get("spec") or {}).get("containers"))
    return [_meta(d).get("name", ""), f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), _created(d, now), names, images,
            selector_string(spec.get("selector"))], None


def print_configmap(cm, now=None):
    return [_meta(cm).get("name", ""), len(cm.get("data") or {}) + len(cm.get("binaryData") or {}),
            _created(cm, now)], None


PRINTERS = {
    "pods": print_pod, "replicasets": print_replicaset, "daemonsets": print_daemonset, "services": print_service,
    "ingresses": print_ingress, "ingressclasses": print_ingressclass, "networkpolicies": print_networkpolicy,
    "endpoints": print_endpoints,
    "endpointslices": print_endpointslice, "nodes": print_node, "events": print_event,
    "namespaces": print_namespace, "deployments": print_deployment, "configmaps": print_configmap,
}
INCLUDE_OBJECT = ("Metadata", "Object", "None")


# --- the Table, as kube-apiserver answers a list or a get -----------------------------------

def _row_object(obj, include_object):
    """The row's object by the request's includeObject: PartialObjectMetadata (the default,
    meta.AsPartialObjectMetadata: the whole metadata), the object itself, or none (null)."""
    if include_object in ("Metadata", ""):
        return {"kind": "PartialObjectMetadata", "apiVersion": TABLE_API_VERSION, "metadata": dict(_meta(obj))}
    if include_object == "Object":
        return obj
    return None


def table(kind, objects, include_object="Metadata", resource_version=None, now=None):
    """The meta.k8s.io/v1 Table of `objects` (a resource's plural names the kind), as the API
    server returns it for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`; `now` is
    the server's clock for the AGE cells. ValueError for a kind without a printer or an
    includeObject the server refuses (a 400 there)."""
    if kind not in PRINTERS:
        raise ValueError(f"no table printer for {kind!r}")
    if include_object not in INCLUDE_OBJECT + ("",):
        raise ValueError(f'unrecognized includeObject value: "{include_object}"')
    now = _now(now)
    rows = []
    for obj in objects:
        cells, conditions = PRINTERS[kind](obj, now)
        row = {"cells": cells}
        if conditions:
            row["conditions"] = conditions
        row["object"] = _row_object(obj, include_object)
        rows.append(row)
    return {"kind": "Table", "apiVersion": TABLE_API_VERSION,
            "metadata": {"resourceVersion": str(resource_version)} if resource_version not in (None, "") else {},
            "columnDefinitions": [dict(c) for c in COLUMNS[kind]], "rows": rows}


# --- kubectl's human-readable printer ---------------------------------------------------------

def _sprint(value):
    """fmt.Sprint of a decoded JSON cell."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))          # apimachinery's JSON decoding makes whole numbers int64
    return str(value)


def _cell(value):
    """printTable's cell: nothing for null; a string cut at its first newline, carriage
    return or form feed (then "..."); terminal escapes made visible (WriteEscaped)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else _sprint(value)
    cut = min((i for i in (text.find(c) for c in "\f\n\r") if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    text = text.replace("\x1b", "^[").replace("\r", "\\r")
    return text + "..." if cut >= 0 else text


def render(table, wide=False, all_namespaces=False, with_kind=None):
    """What `kubectl get` prints for a Table (HumanReadablePrinter.PrintObj: decorateTable,
    printTable, then kubectl's tabwriter): headers upper-cased, priority columns only when
    wide, NAMESPACE first (from each row's object) with -A, `kind/` before the first name
    column with `with_kind` (a group kind, "Deployment.apps", as --show-kind or several
    kinds give). A table with no rows prints nothing; kubectl then says no_resources() on
    stderr. The text ends with a newline, as kubectl's does.

    Given (header, rows) instead of a Table: the plain layout of netlab's own tables."""
    if not isinstance(table, dict):
        return columns(table, wide)
    rows = table.get("rows") or []
    if not rows:
        return ""
    cols = list(table.get("columnDefinitions") or [])
    name_column = None
    if with_kind:
        name_column = next((i for i, c in enumerate(cols) if c.get("format") == "name" and c.get("type") == "string"),
                           None)
    if all_namespaces:
        cols.insert(0, {"name": "Namespace", "type": "string", "format": "", "priority": 0})
    shown = [wide or not c.get("priority") for c in cols]
    lines = ["\t".join(c["name"].upper() for c, show in zip(cols, shown) if show)]
    for row in rows:
        cells = list(row.get("cells") or [])
        if name_column is not None and name_column < len(cells):
            cells[name_column] = f"{with_kind.lower()}/{_sprint(cells[name_column])}"
        if all_namespaces:
            obj = row.get("object")
            cells.insert(0, (obj.get("metadata") or {}).get("namespace", "") if isinstance(obj, dict) else None)
        lines.append("\t".join(_cell(cell) for cell, show in zip(cells, shown) if show))
    return tabwriter("\n".join(lines) + "\n")


# k8s.io/cli-runtime/pkg/printers/tabwriter.go: GetNewTabWriter.
TABWRITER_MINWIDTH = 6
TABWRITER_PADDING = 3


def tabwriter(text, minwidth=TABWRITER_MINWIDTH, padding=TABWRITER_PADDING):
    """github.com/liggitt/tabwriter (text/tabwriter with RememberWidths) as kubectl sets it up:
    tab-terminated cells padded with spaces to their column's width (the widest cell of the
    column block, in runes, plus `padding`, at least `minwidth`); a line's last cell is not
    part of a column and is not padded. A line of one cell flushes, as the writer does; the
    widths it had are remembered for what follows."""
    out, maxwidths = [], []
    lines = [line.replace("\v", "\t").split("\t") for line in text.split("\n")]
    # text.split: the piece after the last newline is the writer's unfinished last line.

    def write_lines(segment, line0, line1, widths, last):
        for i in range(line0, line1):
            cells = segment[i]
            for j, c in enumerate(cells):
                out.append(c)
                if j < len(widths):
                    out.append(" " * (widths[j] - len(c)))
            if not (last and i + 1 == len(segment)):
                out.append("\n")

    def fmt(segment, line0, line1, widths, last):
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(segment[this]) - 1:
                this += 1
                continue
            write_lines(segment, line0, this, widths, last)
            line0 = this
            width = minwidth
            while this < line1 and column < len(segment[this]) - 1:
                width = max(width, len(segment[this][column]) + padding)
                this += 1
            if len(maxwidths) < len(widths):
                maxwidths.extend(widths[len(maxwidths):])
            if len(maxwidths) == len(widths):
                maxwidths.append(width)
            elif maxwidths[len(widths)] > width:
                width = maxwidths[len(widths)]
            elif maxwidths[len(widths)] < width:
                maxwidths[len(widths)] = width
            fmt(segment, line0, this, widths + [width], last)
            line0 = this
            this += 1
        write_lines(segment, line0, line1, widths, last)

    start = 0
    for i, cells in enumerate(lines[:-1]):
        if len(cells) == 1:                            # a line of one cell: the writer flushes
            fmt(lines[start:i + 1], 0, i + 1 - start, [], False)
            start = i + 1
    segment = lines[start:]
    fmt(segment, 0, len(segment), [], True)
    return "".join(out)


def columns(header, rows):
    """netlab's own tables (`netlab status`, `probe`, `events`): left-aligned columns three
    spaces apart, no trailing spaces."""
    rows = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
