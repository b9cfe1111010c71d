"""The EndpointSlice controller (kube-controller-manager's pkg/controller/endpointslice, whose
reconciler is k8s.io/endpointslice), and the slice the API server writes for default/kubernetes
(pkg/controlplane/reconcilers, EndpointsAdapter).

Pure: the slices after one sync are a function of the Services, the pods, the nodes, the slices
before it and a random source (the API server's generateName). As the real reconciler does, a
sync keeps every slice it can: an endpoint that is still wanted stays in its slice (updated in
place when its conditions change), endpoints that go leave their slice, new endpoints fill the
slices that change anyway, then the unchanged slice they fit best, and only then new slices; a
slice left empty is given to a new one rather than deleted and created again. So slice names are
stable across scales and readiness changes.

Where the real controller iterates Go maps (an arbitrary order), netlab takes endpoints by
address and slices by name, so the same state gives the same slices.
"""

import dataclasses
import ipaddress
import random
import secrets
from collections import defaultdict

from netlab.api import objects
from netlab.api.objects import SERVICE_NAME_LABEL, EndpointSlice, Port, SliceEndpoint
from netlab.controllers import deployment
from netlab.controllers.endpoints import find_port, selects

CONTROLLER_NAME = "endpointslice-controller.k8s.io"      # endpointslice.ControllerName
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
HEADLESS_LABEL = "service.kubernetes.io/headless"
RESERVED_LABELS = (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100      # kube-controller-manager --max-endpoints-per-slice
ADDRESS_TYPE = "IPv4"              # an IPv4 or dual-stack cluster's primary family


def service_uid(service):
    """The Service's metadata.uid, which its slices' ownerReferences carry. netlab keeps no uid
    for a Service: it is derived from the Service's namespace and name."""
    return objects.service_uid(service.namespace, service.name)


def generate_name(service):
    """getEndpointSlicePrefix: "<service>-" (a Service's name is a DNS label, so the dashed
    prefix is always a valid one)."""
    return f"{service.name}-"


def new_name(prefix, rng):
    """The API server's names.SimpleNameGenerator: the prefix cut to 58 characters, then 5
    random characters of utilrand's alphabet, so a name is at most 63."""
    return prefix[:58] + "".join(rng.choice(deployment.SAFE_ALPHABET) for _ in range(5))


def slice_labels(service, current=None):
    """setEndpointSliceLabels: the Service's labels (but the reserved ones), the headless label
    when the Service has no cluster IP, the service name and the managing controller. The
    second value says whether the slice's own non-reserved labels differ from the Service's."""
    own = {k: v for k, v in (current or {}).items() if k not in RESERVED_LABELS}
    labels = {k: v for k, v in service.labels.items() if k not in RESERVED_LABELS}
    changed = own != labels
    if service.cluster_ip in (None, "", "None"):          # !isServiceIPSet
        labels[HEADLESS_LABEL] = ""
    labels[SERVICE_NAME_LABEL] = service.name
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    return labels, changed


def endpoint_ports(service, pod):
    """getEndpointPorts: each service port the pod offers, in the Service's order, its
    targetPort resolved against the pod's containers (FindPort); a port the pod lacks is left
    out, so a pod may offer none. A headless Service may have no ports at all."""
    out = []
    for sp in service.ports:
        number = find_port(pod, sp)
        if number is not None:
            out.append(Port(sp.name, number, sp.protocol))
    return tuple(out)


def address_types(service):
    """getAddressTypesForService: one address type per family of the Service's ipFamilies, in
    their order (netlab's order for the set Go iterates)."""
    return tuple(service.families)


def pod_address(pod, address_type):
    """getEndpointAddresses: the pod's IP of the slice's family (status.podIPs), or None."""
    return pod.ip6 if address_type == "IPv6" else pod.ip


def pod_endpoint(pod, node, service, address_type=ADDRESS_TYPE):
    """podToEndpoint: serving is the pod's readiness, terminating whether it is being deleted
    (netlab deletes a pod at once: never), ready = serving and not terminating."""
    serving, terminating = bool(pod.ready), False
    hostname = pod.template.hostname if pod.template.hostname and pod.template.subdomain == service.name else None
    return SliceEndpoint(addresses=(pod_address(pod, address_type),), ready=serving and not terminating, serving=serving,
                         terminating=terminating, node=pod.node or None, pod=pod.name, uid=pod.uid,
                         hostname=hostname, zone=(node.labels.get(ZONE_LABEL) if node is not None else None) or None)


def _identity(e):
    """endpointset's hashEndpoint: addresses, hostname and the target's name. What else an
    endpoint carries (node, zone, conditions, uid) is updated in place."""
    return (tuple(sorted(e.addresses)), e.hostname or "", e.pod or "")


def _ports_key(ports):
    """NewPortMapKey: the same ports in any order are one group."""
    return tuple(sorted((p.name, p.port, p.protocol) for p in ports))


def _by_address(pod, address_type=ADDRESS_TYPE):
    """Pods in address order (the order netlab takes for Go's map iteration)."""
    return (int(ipaddress.ip_address(pod_address(pod, address_type) or pod.pod_ip)), pod.name)


@dataclasses.dataclass
class _Draft:
    """A slice being built or changed in one sync (name None until the API server names it)."""
    name: str | None
    labels: dict
    ports: tuple
    endpoints: list
    created: str
    owner_uid: str
    address_type: str = ADDRESS_TYPE

    @classmethod
    def of(cls, s):
        return cls(s.name, dict(s.labels), s.ports, list(s.endpoints), s.created, s.owner_uid, s.address_type)


def _new_draft(service, ports, now, address_type=ADDRESS_TYPE):
    """newEndpointSlice: generateName <service>-, owned by the Service, its labels."""
    labels, _ = slice_labels(service)
    return _Draft(None, labels, tuple(ports), [], now or service.created, service_uid(service), address_type)


def _pop(desired):
    """EndpointSet.PopAny, in address order."""
    key = next(iter(desired))
    return desired.pop(key)


def _by_port_mapping(service, existing, desired, ports, now, max_per_slice, address_type=ADDRESS_TYPE):
    """reconcileByPortMapping for one set of ports: (to create, to update, to delete)."""
    by_name = {s.name: _Draft.of(s) for s in existing}
    unchanged, to_update, to_delete = [], [], []
    # 1. Drop the endpoints no longer wanted, update those that changed, follow the Service's labels.
    for s in existing:
        kept, updated = [], False
        for e in s.endpoints:
            got = desired.pop(_identity(e), None)
            if got is not None:
                kept.append(got)
                updated |= got != e
        labels, labels_changed = slice_labels(service, s.labels)
        if updated or len(kept) != len(s.endpoints):
            if not kept:
                to_delete.append(s.name)
            else:
                by_name[s.name].endpoints, by_name[s.name].labels = kept, labels
                to_update.append(s.name)
        elif labels_changed:
            by_name[s.name].labels = labels
            to_update.append(s.name)
        else:
            unchanged.append(s.name)
    # 2. Fill the slices being updated anyway, the fullest first.
    if desired and to_update:
        for name in sorted(to_update, key=lambda n: -len(by_name[n].endpoints)):
            draft = by_name[name]
            while desired and len(draft.endpoints) < max_per_slice:
                draft.endpoints.append(_pop(desired))
    # 3. What is left goes to the unchanged slice it fills best, or to new slices.
    to_create = []
    while desired:
        draft = None
        if len(desired) < max_per_slice and unchanged:
            draft = _slice_to_fill([by_name[n] for n in unchanged], len(desired), max_per_slice)
        if draft is None:
            draft = _new_draft(service, ports, now, address_type)
        while desired and len(draft.endpoints) < max_per_slice:
            draft.endpoints.append(_pop(desired))
        if draft.name is not None:
            to_update.append(draft.name)
            unchanged.remove(draft.name)
        else:
            to_create.append(draft)
    return to_create, [by_name[n] for n in to_update], [by_name[n] for n in to_delete]


def _slice_to_fill(drafts, count, max_per_slice):
    """getSliceToFill: the slice closest to full once `count` endpoints are added."""
    closest, best = max_per_slice, None
    for d in drafts:
        diff = max_per_slice - (count + len(d.endpoints))
        if 0 <= diff < closest:
            closest, best = diff, d
            if diff == 0:
                break
    return best


def _is_placeholder_of(draft, placeholder):
    """placeholderSliceCompare: namespace, labels, owner, address type, ports and endpoints."""
    return (draft.labels == placeholder.labels and draft.owner_uid == placeholder.owner_uid
            and draft.address_type == placeholder.address_type and not draft.ports and not draft.endpoints)


def reconcile(service, pods, nodes, existing, taken, rng, now="", max_per_slice=MAX_ENDPOINTS_PER_SLICE):
    """Reconciler.Reconcile for one Service with a selector: its slices after the sync, one set
    per address type of the Service (a slice of a family the Service no longer has is deleted).
    `existing`: the slices labelled with its name and managed by this controller; `taken`: the
    names in the namespace (a generated name never repeats one, as the API server refuses a
    name that exists); `nodes`: {name: Node}."""
    types = address_types(service)
    existing = sorted(existing, key=lambda s: s.name)
    gone = [s for s in existing if s.address_type not in types]
    out = []
    for address_type in types:
        out += _reconcile_by_address_type(service, pods, nodes, [s for s in existing if s.address_type == address_type],
                                          taken, rng, now, max_per_slice, address_type)
    return sorted((s for s in out if s not in gone), key=lambda s: s.name)


def _reconcile_by_address_type(service, pods, nodes, existing, taken, rng, now, max_per_slice, address_type):
    """reconcileByAddressType: the slices of one family after the sync."""
    uid = service_uid(service)
    owned = [s for s in existing if s.owner_uid == uid]
    to_delete = [_Draft.of(s) for s in existing if s not in owned]         # another Service's
    existing_by_ports = defaultdict(list)
    for s in owned:
        existing_by_ports[_ports_key(s.ports)].append(s)

    desired, ports_of = {}, {}
    wanted = sorted((p for p in pods if selects(service, p) and p.ips), key=lambda p: _by_address(p, address_type))
    for pod in wanted:                                  # ShouldPodBeInEndpoints: has an IP, not terminal
        ports = endpoint_ports(service, pod)
        key = _ports_key(ports)
        desired.setdefault(key, {})
        ports_of.setdefault(key, ports)
        if pod.node not in nodes:                        # the node is gone: skipped, as when not found
            continue
        if not pod_address(pod, address_type):           # no IP of this family: no endpoint in its slices
            continue
        e = pod_endpoint(pod, nodes[pod.node], service, address_type)
        desired[key][_identity(e)] = e

    to_create, to_update = [], []
    for key in sorted(desired):
        create, update, delete = _by_port_mapping(service, existing_by_ports.get(key, []), desired[key],
                                                  ports_of[key], now, max_per_slice, address_type)
        to_create += create
        to_update += update
        to_delete += delete
    for key, slices in sorted(existing_by_ports.items()):
        if key not in desired:
            to_delete += [_Draft.of(s) for s in slices]

    # No slice would be left: a placeholder with no ports and no endpoints (kept if it is one).
    if len(existing) == len(to_delete) and not to_create:
        placeholder = _new_draft(service, (), now, address_type)
        if len(to_delete) == 1 and _is_placeholder_of(to_delete[0], placeholder):
            to_delete = []
        else:
            to_create.append(placeholder)

    # finalize: a slice to create takes the name of one to delete (an update instead of both).
    i = 0
    while i < len(to_delete) and to_create:
        gone = to_delete[i]
        if gone.address_type == to_create[-1].address_type and gone.owner_uid == uid:
            draft = to_create.pop()
            draft.name, draft.created = gone.name, gone.created       # an update keeps the creationTimestamp
            to_update.append(draft)
            del to_delete[i]
        else:
            i += 1

    changed = {d.name for d in to_update} | {d.name for d in to_delete}
    out = [s for s in existing if s.name not in changed]
    out += [_record(service, d) for d in to_update]
    for draft in to_create:
        name = new_name(generate_name(service), rng)
        while name in taken:
            name = new_name(generate_name(service), rng)
        taken.add(name)
        draft.name = name
        out.append(_record(service, draft))
    return out


def _record(service, d):
    return EndpointSlice(service.namespace, d.name, d.labels, d.address_type, tuple(d.endpoints), tuple(d.ports),
                         generate_name(service), d.owner_uid, d.created)


def kubernetes(control_plane_ip):
    """default/kubernetes's slice, as the API server's endpoint reconciler writes it
    (EndpointsAdapter): named "kubernetes", labelled only with the service name (no
    managed-by, no owner), one endpoint per API server with only its ready condition."""
    address_type = "IPv6" if ":" in control_plane_ip else "IPv4"
    return EndpointSlice("default", "kubernetes", {SERVICE_NAME_LABEL: "kubernetes"}, address_type,
                         (SliceEndpoint((control_plane_ip,), ready=True),), (Port("https", 6443, "TCP"),))


def sync(state, rng=None, now=""):
    """The controller's pass over every Service, and the API server's default/kubernetes slice:
    the cluster's slices after it, sorted by namespace and name.

    As the real controllers do: a Service without a selector, or of type ExternalName, gets no
    slices from the controller (and keeps those it had: Kubernetes leaves them, issue 118376);
    slices whose Service is gone go with it (the garbage collector follows their owner); slices
    no controller manages are left alone. `now` stamps the slices created (empty: the Service's
    creation time)."""
    rng = rng or random.Random(secrets.randbits(64))
    control_plane = next(n for n in state.nodes if n.role == "control-plane")
    nodes = {n.name: n for n in state.nodes}
    services = {(s.namespace, s.name): s for s in state.services}
    uids = {service_uid(s) for s in state.services}
    taken = defaultdict(set)
    for s in state.endpoint_slices:
        taken[s.namespace].add(s.name)
    out = [kubernetes(control_plane.internal_ip)]
    managed = defaultdict(list)
    for s in state.endpoint_slices:
        if (s.namespace, s.name) == ("default", "kubernetes"):
            continue                                   # the API server writes it again
        if s.owner_uid and s.owner_uid not in uids:
            continue                                   # its Service is gone: garbage collected
        if s.labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME:
            managed[(s.namespace, s.service)].append(s)
        else:
            out.append(s)
    for key, svc in services.items():
        if svc.selector is None or svc.type == "ExternalName":
            out += managed.pop(key, [])
            continue
        out += reconcile(svc, state.pods, nodes, managed.pop(key, []), taken[svc.namespace], rng, now)
    for slices in managed.values():                   # labelled with a Service that is not there
        out += slices
    return sorted(out, key=lambda s: (s.namespace, s.name))
