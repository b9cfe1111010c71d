"""kube-apiserver's write path: a request's object, through admission and validation, into the
lab's controllers.

A Write is run by Lab.change (under the lab's lock, on the state as stored): it works out the
object the request wants (the body, or the stored object patched), checks the preconditions
(the namespace exists, the name is free, the resourceVersion is current, server-side apply's
field owners), validates it as the lab file is validated (netlab.api.spec, the same
messages), and hands it to the same controller functions `netlab apply`, `scale` and
`delete` use. A refused request raises before anything is stored.
"""

import copy
import dataclasses
import datetime
import json
import re
from pathlib import Path

from netlab import names
from netlab.api import netconf, spec
from netlab.controllers import cluster
from netlab.control_plane import patch as patches
from netlab.control_plane.status import ApiError, not_found
from netlab.control_plane.watch_cache import storage_key
from netlab.errors import NetlabError
from netlab.lab import SYSTEM_NAMESPACES, namespaces_of, remove_node

# What a request may write, and what netlab's controllers do not take from requests (why).
WRITABLE = {"pods", "deployments", "services", "ingresses", "networkpolicies", "namespaces", "nodes"}
READ_ONLY = {
    "endpoints": "the endpoints controller writes them from the Services' selectors",
    "endpointslices": "the EndpointSlice controller writes them from the Services' selectors",
    "replicasets": "the Deployment controller owns them: change the Deployment",
    "daemonsets": "kube-proxy, kube-flannel-ds and kube-router are the lab's own agents",
    "events": "the lab's components record them",
    "configmaps": "they hold the configuration the lab was built with (change the lab file; kube-flannel/"
                  "kube-flannel-cfg takes an update: flanneld's net-conf.json)",
    "ingressclasses": "the ingress-nginx add-on's class is the lab's",
}
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
# The system namespaces, and the ingress add-on's: the lab's own components live there.
UNDELETABLE_NAMESPACES = (*SYSTEM_NAMESPACES, "ingress-nginx")
SERVER_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink",
                   "deletionTimestamp", "deletionGracePeriodSeconds")
CONTENT_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                 "application/strategic-merge-patch+json", "application/apply-patch+yaml")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# field.ErrorType's text -> the StatusCause reason it is reported under (metav1.CauseType).
FIELD_ERRORS = {"Invalid value": "FieldValueInvalid", "Unsupported value": "FieldValueNotSupported",
                "Required value": "FieldValueRequired", "Forbidden": "FieldValueForbidden",
                "Duplicate value": "FieldValueDuplicate", "Too long": "FieldValueTooLong"}


def invalid(target, kind, name, error):
    """A SpecError as the API's 422: `Kind.group "name" is invalid: field: message`. A message
    that is already a field error of the API's (NetworkPolicy's validation writes them so)
    keeps its type; any other is an Invalid value."""
    r = target.resource
    kind_name = f"{kind}.{r.group}" if r.group else kind
    field = error.field or "metadata"
    kind_of = next((t for t in FIELD_ERRORS if error.message == t or error.message.startswith(t + ": ")), None)
    message = error.message if kind_of else f"Invalid value: {error.message}"
    return ApiError(422, f'{kind_name} "{name}" is invalid: {field}: {message}',
                    details={"name": name, **({"group": r.group} if r.group else {}), "kind": kind,
                             "causes": [{"reason": FIELD_ERRORS[kind_of or "Invalid value"], "message": message,
                                         "field": field}]})


# The fields of every type a request may hold, from the Kubernetes OpenAPI (scripts/api_schema.py).
SCHEMA = json.loads((Path(__file__).parent / "schema.json").read_text())["types"]
ROOTS = {"Pod": "V1Pod", "Deployment": "V1Deployment", "Service": "V1Service", "Ingress": "V1Ingress",
         "NetworkPolicy": "V1NetworkPolicy", "Namespace": "V1Namespace", "Node": "V1Node", "Scale": "V1Scale"}


def unknown_fields(value, type_name, path="", prune=False):
    """The paths of the fields `value` holds that its type does not declare; with `prune`, they
    are dropped from it too, as the API server's decoder drops them (they are never stored)."""
    if type_name.startswith("List[") and isinstance(value, list):
        return [f for i, x in enumerate(value) for f in unknown_fields(x, type_name[5:-1], f"{path}[{i}]", prune)]
    if type_name.startswith("Dict[") and isinstance(value, dict):
        inner = type_name[5:-1].split(", ", 1)[1]
        return [f for k, x in value.items() for f in unknown_fields(x, inner, f"{path}[{k}]", prune)]
    fields = SCHEMA.get(type_name)
    if fields is None or not isinstance(value, dict):
        return []
    out = []
    for k, x in list(value.items()):
        where = f"{path}.{k}" if path else k
        if k in fields:
            out += unknown_fields(x, fields[k], where, prune)
        else:
            out.append(where)
            if prune:
                del value[k]
    return out


_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _qualified_name(key):
    """Why a label or annotation key is not a qualified name ([prefix/]name), or None."""
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not _NAME_PART.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation "
                "is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    if prefix and (len(prefix) > 253 or not names.DNS1123_SUBDOMAIN.match(prefix)):
        return "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
    return None


def check_metadata(resource, meta):
    """The API server's validation of labels and annotations: maps of strings, keys qualified
    names, label values 63 characters of the label alphabet."""
    name = meta.get("name") or ""
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ApiError(400, f'{resource.kind} in version "{resource.version}" cannot be handled as a '
                                f'{resource.kind}: json: cannot unmarshal metadata.{field} into Go struct field '
                                f'ObjectMeta.metadata.{field} of type map[string]string')
        for k, v in value.items():
            why = _qualified_name(k)
            if why is None and field == "labels" and (len(v) > 63 or not _LABEL_VALUE.match(v)):
                why = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"
                k = v
            if why:
                raise ApiError(422, f'{resource.kind} "{name}" is invalid: metadata.{field}: Invalid value: '
                                    f'{json.dumps(k)}: {why}',
                               details={"name": name, "kind": resource.kind,
                                        "causes": [{"reason": "FieldValueInvalid", "field": f"metadata.{field}",
                                                    "message": f"Invalid value: {json.dumps(k)}: {why}"}]})


def _manager_named(owner, resource):
    """How a conflict names a manager: an Update's with the version it wrote (structured-merge-diff)."""
    manager, _, operation = owner.partition("|")
    return f'"{manager}"' if operation == "Apply" else f'"{manager}" using {resource.group_version}'


def _clean(obj):
    """The part of an object a request writes: no status, none of the server's metadata."""
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = out.get("metadata") if isinstance(out.get("metadata"), dict) else {}
    out["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_METADATA}
    return out


class Write:
    def __init__(self, server, target, method, body, ctype, manager, force, dry_run, validation):
        self.server, self.target, self.method, self.body = server, target, method, body
        self.ctype, self.manager, self.force = ctype, manager, force
        self.validation = validation
        self.resource = target.resource
        self.code, self.result = 200, None
        self.warnings = []
        self.new_managers = None        # a server-side apply's field owners
        self.stored = False             # the controllers took the change (what follows is convergence)
        self.manager_given = True
        if validation not in ("Strict", "Warn", "Ignore"):
            raise ApiError(400, f'fieldValidation: Unsupported value: "{validation}": supported values: "Ignore", '
                                f'"Strict", "Warn"')

    def kind_name(self):
        return self.resource.kind

    def object_name(self):
        if self.target.name:
            return self.target.name
        meta = self.body.get("metadata") if isinstance(self.body, dict) else None
        return (meta or {}).get("name", "") if isinstance(meta, dict) else ""

    def response(self):
        return self.code, self.result

    def dry_run(self):
        """dryRun=All: admission and validation on a copy of the state; nothing is stored."""
        self.mutate(self.server.lab.state(), [])
        return self.response()

    # --- the request's object ---

    def current(self, state, name=None, namespace=None):
        """The object as the API serves it from `state` (what a patch applies to), or None."""
        r = self.resource
        name = name or self.target.name
        namespace = (namespace or self.target.namespace or "") if r.namespaced else ""
        return next((o for o in self.server.served(state, r)
                     if o["metadata"].get("namespace", "") == namespace and o["metadata"]["name"] == name), None)

    def mutate(self, state, log):
        r = self.resource
        if r.plural in READ_ONLY and not self.flannel_config():
            raise ApiError(405, f"{r.qualified} cannot be written by a request in netlab: {READ_ONLY[r.plural]}",
                           reason="MethodNotAllowed")
        if r.namespaced and self.target.namespace is None:
            raise ApiError(405, "the server does not allow this method on the requested resource (a namespaced "
                                "object is written under /namespaces/<namespace>/)")
        if self.target.namespace is not None and self.target.namespace not in namespaces_of(state):
            raise ApiError(404, f'namespaces "{self.target.namespace}" not found',
                           details={"name": self.target.namespace, "kind": "namespaces"})
        if self.target.sub == "scale":
            return self.scale(state, log)
        if self.target.sub == "status":
            raise ApiError(405, f"netlab's components write {r.plural}/status; a request may not")
        if self.method == "DELETE":
            return self.delete(state, log)
        current = self.current(state) if self.target.name else None
        wanted = self.wanted(state, current)
        self.store(state, log, wanted, current)

    def flannel_config(self):
        """An update of kube-flannel-cfg: flanneld's net-conf.json, which every node's flanneld
        restarts on (netlab apply -f of the ConfigMap does the same)."""
        return (self.resource.plural == "configmaps" and self.method in ("PUT", "PATCH")
                and (self.target.namespace, self.target.name) == netconf.CONFIGMAP)

    def wanted(self, state, current):
        """The object the request asks for, checked against the stored one."""
        body, r = self.body, self.resource
        if self.method == "PATCH":
            if self.ctype not in CONTENT_TYPES:
                raise ApiError(415, f"the server does not support the media type {self.ctype!r} for a patch "
                                    f"(supported: {', '.join(CONTENT_TYPES)})")
            if current is None and self.ctype != "application/apply-patch+yaml":
                raise not_found(r, self.target.name)
            base = copy.deepcopy(current)
            try:
                if self.ctype == "application/json-patch+json":
                    body = patches.json_patch(base, body)
                elif self.ctype == "application/merge-patch+json":
                    body = patches.merge_patch(base, self._mapping(body))
                elif self.ctype == "application/strategic-merge-patch+json":
                    body = patches.strategic_merge_patch(base, self._mapping(body))
                else:
                    body = self.server_side_apply(state, base, current, self._mapping(body))
            except patches.PatchError as e:
                raise ApiError(e.code, str(e)) from None
        body = self._mapping(body)
        self._check_type(body)
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata: must be an object")
        for field in ("name", "namespace", "generateName", "resourceVersion"):
            if meta.get(field) is not None and not isinstance(meta[field], str):
                raise ApiError(422, f'{r.kind} "" is invalid: metadata.{field}: Invalid value: {json.dumps(meta[field])}: '
                                    f'must be a string')
        check_metadata(r, meta)
        if self.method == "POST":
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self.server.generate_name(str(meta["generateName"]))
            if not meta.get("name"):
                raise ApiError(422, f'{r.kind} "" is invalid: metadata.name: Required value: name or generateName '
                                    f'is required')
        elif meta.get("name", self.target.name) != self.target.name:
            raise ApiError(400, f'the name of the object ({meta.get("name")}) does not match the name on the URL '
                                f'({self.target.name})')
        meta["name"] = meta.get("name") or self.target.name
        if r.namespaced:
            ns = meta.get("namespace") or self.target.namespace or "default"
            if self.target.namespace and ns != self.target.namespace:
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent on "
                                    "the request")
            meta["namespace"] = ns
        if self.method == "POST" and self._exists(state, meta):
            raise ApiError(409, f'{r.qualified} "{meta["name"]}" already exists', reason="AlreadyExists",
                           details={"name": meta["name"], **({"group": r.group} if r.group else {}), "kind": r.plural})
        if self.method in ("PUT", "PATCH") and current is not None:
            self.check_version(meta.get("resourceVersion"), self.version_of(state, current), meta["name"])
        if self.method == "PUT" and current is None:
            raise not_found(r, self.target.name)
        return body

    def version_of(self, state, current):
        """The resourceVersion a request's precondition is checked against: the one the cache
        serves, when the cache has this state; else (another command wrote since) the key's
        mod revision, which any version a client read before that write differs from."""
        snap = self.server.cache.snapshot
        meta = current["metadata"]
        cached = snap.get(self.resource.plural, meta.get("namespace", ""), meta["name"])
        if cached is not None and snap.state is not None and snap.state.revision == state.revision:
            return cached["metadata"]["resourceVersion"]
        key = storage_key(self.resource, current)
        return str(state.revisions.get(key, [state.revision])[0])

    def check_version(self, asked, current, name):
        """Optimistic concurrency: a request that names a resourceVersion must name the current one."""
        r = self.resource
        if asked and asked != current:
            raise ApiError(409, f'Operation cannot be fulfilled on {r.qualified} "{name}": the object has been '
                                f'modified; please apply your changes to the latest version and try again',
                           details={"name": name, **({"group": r.group} if r.group else {}), "kind": r.plural})

    def _mapping(self, body):
        if not isinstance(body, dict):
            raise ApiError(400, f"the request body must be a JSON object, not {type(body).__name__}")
        return body

    def _check_type(self, body):
        r = self.resource
        api, kind = body.get("apiVersion"), body.get("kind")
        if api or kind:               # a client's typed model may leave both out: the URL says them
            if api != r.group_version or kind != r.kind:
                raise ApiError(400, f"the API version in the data ({api}) does not match the expected API version "
                                    f"({r.group_version})" if api != r.group_version else
                               f"the kind in the data ({kind}) does not match the expected kind ({r.kind})")
        body["apiVersion"], body["kind"] = r.group_version, r.kind
        self.check_fields(body, ROOTS.get(r.kind))

    def check_fields(self, body, root):
        """fieldValidation: a field the API's schema does not have is refused (Strict), or dropped
        and said in a Warning header (Warn, the server's default), or dropped silently (Ignore)."""
        if root is None:
            return
        if self.validation != "Strict":
            unknown = unknown_fields(body, root, prune=True)
            if self.validation == "Warn":
                self.warnings += [f'unknown field "{f}"' for f in unknown]
            return
        unknown = unknown_fields(body, root)
        if unknown:
            r = self.resource
            raise ApiError(400, f'{r.kind} in version "{r.version}" cannot be handled as a {r.kind}: strict decoding '
                                f'error: ' + ", ".join(f'unknown field "{f}"' for f in unknown))

    def _exists(self, state, meta):
        return self.current(state, meta["name"], meta.get("namespace")) is not None

    def server_side_apply(self, state, base, current, applied):
        """Server-side apply: the applied intent merged into the served object by the schema's
        merge keys; a field another manager owns and the intent changes is a conflict (unless
        forced); a field only this manager owned that the intent no longer holds is removed."""
        if not self.manager_given:
            raise ApiError(400, "PATCH /apply requires a fieldManager: fieldManager: Required value: is required for "
                                "apply patch")
        me = f"{self.manager}|Apply"
        managers = state.bodies.get(f"managers:{storage_key(self.resource, current)}", {}) if current else {}
        if self.manager == "kubectl":          # kubectl's upgrade path: it takes over what client-side apply set
            managers = {k: [me if m == "kubectl-client-side-apply|Update" else m
                            for m in patches.owners_of(managers, json.loads(k))] for k in managers}
        if current is not None and not self.force:
            found = patches.conflicts(managers, me, applied, current)
            if found:
                r = self.resource
                said = [(patches.shown(path), _manager_named(owner, r)) for path, owner in found]
                raise ApiError(409, f"Apply failed with {len(found)} conflict{'s' * (len(found) > 1)}: "
                                    + "; ".join(f'conflict with {who}: {path}' for path, who in said),
                               details={"name": self.target.name, **({"group": r.group} if r.group else {}),
                                        "kind": r.plural,
                                        "causes": [{"reason": "FieldManagerConflict", "message": f"conflict with {who}",
                                                    "field": path} for path, who in said]})
        fields = patches.owned_fields(applied)
        self.new_managers, released = patches.owned_after(managers, me, fields, current, apply=True)
        merged = patches.strategic_merge_patch(base, applied) if base is not None else applied
        for path in released:
            patches.remove_path(merged, path)
        return merged

    # --- into the controllers ---

    def store(self, state, log, body, current):
        r = self.resource
        meta = body["metadata"]
        key = storage_key(r, body)
        if self.flannel_config():                   # served from the cluster's net-conf.json, no record of its own
            self.apply(state, log, body, current)
            self.code, self.result, self.stored = 200, self.current(state, meta["name"], meta["namespace"]), True
            return
        if r.plural == "namespaces":
            self.store_namespace(state, body, current)
        elif r.plural == "nodes":
            self.store_node(state, body)
        else:
            self.apply(state, log, body, current)
            if r.plural == "pods" and state.pod(meta["namespace"], meta["name"]).owner is None:
                meta.pop("ownerReferences", None)      # a pod its ReplicaSet released (relabelled away)
        state.bodies[key] = _clean(body)
        self.own_fields(state, key, body, current)
        self.code = 201 if current is None else 200
        self.result = self.current(state, meta["name"], meta.get("namespace")) or body
        self.stored = True

    def own_fields(self, state, key, body, current):
        """Who set which field (managedFields): an apply's owners were worked out with its merge;
        any other write owns the fields it changed."""
        if self.new_managers is not None:
            state.bodies[f"managers:{key}"] = self.new_managers
            return
        before = patches.owned_fields(current) if current else {}
        fields = {p: v for p, v in patches.owned_fields(body).items() if before.get(p) != v}
        state.bodies[f"managers:{key}"], _ = patches.owned_after(state.bodies.get(f"managers:{key}", {}),
                                                                 f"{self.manager}|Update", fields, current, apply=False)

    def store_namespace(self, state, body, current):
        name = body["metadata"]["name"]
        if not names.DNS1123_LABEL.match(name) or len(name) > 63:
            raise ApiError(422, f'Namespace "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase '
                                f'RFC 1123 label must consist of lower case alphanumeric characters or \'-\', and must '
                                f'start and end with an alphanumeric character')
        labels = body["metadata"].get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise ApiError(422, f'Namespace "{name}" is invalid: metadata.labels: Invalid value: must be a map of '
                                f'strings')
        # SetDefaults_Namespace: the API server sets kubernetes.io/metadata.name to the name on
        # every write; a request's other value for it is overwritten, not refused.
        body["metadata"]["labels"] = {**labels, "kubernetes.io/metadata.name": name}
        cluster.apply_namespace(state, name, labels,
                                (current or {}).get("metadata", {}).get("creationTimestamp") or _now())

    def store_node(self, state, body):
        if self.method == "POST":
            raise ApiError(405, "netlab's nodes join with `netlab node add NAME` (kind and kubeadm), not by a request")
        node = next((n for n in state.nodes if n.name == body["metadata"]["name"]), None)
        if node is None:
            raise not_found(self.resource, body["metadata"]["name"])
        labels = body["metadata"].get("labels") or {}
        if not isinstance(labels, dict):
            raise ApiError(422, f'Node "{node.name}" is invalid: metadata.labels: must be a map of strings')
        node.labels = dict(labels)
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise ApiError(400, 'Node in version "v1" cannot be handled as a Node: spec: must be an object')
        taints = [t for t in spec.get("taints") or [] if not (isinstance(t, dict) and t.get("key") == UNSCHEDULABLE)]
        if spec.get("unschedulable") is True:         # kubectl cordon: the node controller's taint follows
            taints.append({"key": UNSCHEDULABLE, "effect": "NoSchedule"})
        if not isinstance(taints, list) or not all(isinstance(t, dict) and t.get("key") and t.get("effect") in
                                                   ("NoSchedule", "PreferNoSchedule", "NoExecute") for t in taints):
            raise ApiError(422, f'Node "{node.name}" is invalid: spec.taints: each taint needs a key and an effect '
                                f'(NoSchedule, PreferNoSchedule, NoExecute)')
        node.taints = [{k: t[k] for k in ("key", "value", "effect") if k in t} for t in taints]
        cluster.schedule_pending(state)

    def parse(self, state, body):
        doc = _clean(body)
        return spec.build([("request", 0, doc)], cluster=state.cluster, nodes=[n.name for n in state.nodes])

    def apply(self, state, log, body, current):
        wanted = self.parse(state, body)
        if current is not None:
            wanted = self.keep_defaults(state, wanted, current)
        cluster.apply(state, wanted, log=log, now=_now())

    def keep_defaults(self, state, wanted, current):
        """The live object shows fields the stored record leaves to defaults (a container's
        image, agnhost's `netexec`, a pod's node): a template that reads the same as the live
        one's is kept as stored, so an update of replicas or labels rolls nothing out."""
        live = self.parse(state, current)
        same = lambda a, b: dataclasses.replace(a, labels={}) == dataclasses.replace(b, labels={})   # noqa: E731
        if wanted.deployments and live.deployments:
            d = next(x for x in state.deployments if (x.namespace, x.name) == (wanted.deployments[0].namespace,
                                                                              wanted.deployments[0].name))
            m = wanted.deployments[0]
            if m.template == live.deployments[0].template:
                m = dataclasses.replace(m, template=d.template)
            return dataclasses.replace(wanted, deployments=(m,))
        if wanted.pods and live.pods:
            pod = state.pod(wanted.pods[0].namespace, wanted.pods[0].name)
            m = wanted.pods[0]
            if same(m.template, live.pods[0].template):
                m = dataclasses.replace(m, template=dataclasses.replace(pod.template, labels=m.template.labels))
            return dataclasses.replace(wanted, pods=(m,))
        return wanted

    def delete(self, state, log):
        r = self.resource
        current = self.current(state)
        if current is None:
            raise not_found(r, self.target.name)
        options = self.body if isinstance(self.body, dict) else {}
        pre = options.get("preconditions") if isinstance(options.get("preconditions"), dict) else {}
        if pre.get("uid") and pre["uid"] != current["metadata"].get("uid"):
            raise ApiError(409, f'Operation cannot be fulfilled on {r.qualified} "{self.target.name}": Precondition '
                                f'failed: UID in precondition: {pre["uid"]}, UID in object meta: '
                                f'{current["metadata"].get("uid")}')
        self.check_version(pre.get("resourceVersion"), self.version_of(state, current), self.target.name)
        if options.get("propagationPolicy") == "Orphan" and r.plural == "deployments":
            raise ApiError(422, 'DeleteOptions: propagationPolicy: Unsupported value: "Orphan": netlab\'s '
                                'ReplicaSets are part of their Deployment; deleting it deletes its pods')
        self.result = current
        key = storage_key(r, current)
        if r.plural == "namespaces":
            self.delete_namespace(state, log, self.target.name)
        elif r.plural == "nodes":
            remove_node(state, self.target.name, log)
        else:
            try:
                cluster.delete(state, r.singular, self.target.namespace, self.target.name, log=log)
            except NetlabError as e:
                raise ApiError(403, str(e)) from None
        state.bodies.pop(key, None)
        state.bodies.pop(f"managers:{key}", None)
        self.stored = True

    def delete_namespace(self, state, log, name):
        if name in UNDELETABLE_NAMESPACES:
            raise ApiError(403, f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                           details={"name": name, "kind": "namespaces"})
        for kind, items in (("networkpolicy", state.network_policies), ("ingress", state.ingresses),
                            ("service", state.services), ("deployment", state.deployments), ("pod", state.pods)):
            for obj in [o for o in items if o.namespace == name]:
                if obj in items:
                    cluster.delete(state, kind, name, obj.name, log=log)
        state.namespaces.pop(name, None)

    def scale(self, state, log):
        r = self.resource
        if r.plural != "deployments":
            raise ApiError(405, f"netlab scales Deployments; {r.plural} follow their Deployment")
        d = next((x for x in state.deployments if x.namespace == self.target.namespace and x.name == self.target.name),
                 None)
        if d is None:
            raise not_found(r, self.target.name)
        key = storage_key(r, {"metadata": {"name": d.name, "namespace": d.namespace}})
        version = self.version_of(state, {"metadata": {"name": d.name, "namespace": d.namespace}})
        current = {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": d.replicas},
                   "metadata": {"name": d.name, "namespace": d.namespace, "resourceVersion": version}}
        try:
            if self.method == "PATCH" and self.ctype == "application/json-patch+json":
                body = patches.json_patch(current, self.body)
            elif self.method == "PATCH":
                body = patches.merge_patch(current, self._mapping(self.body))
            else:
                body = self._mapping(self.body)
                self.check_fields(body, ROOTS["Scale"])
        except patches.PatchError as e:
            raise ApiError(e.code, str(e)) from None
        body = self._mapping(body)
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        self.check_version(meta.get("resourceVersion"), version, d.name)
        replicas = (body.get("spec") or {}).get("replicas") if isinstance(body.get("spec"), dict) else None
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= spec.MAX_REPLICAS:
            bound = ("must be greater than or equal to 0" if not isinstance(replicas, int) or replicas < 0
                     else f"netlab runs at most {spec.MAX_REPLICAS} replicas of a Deployment")
            raise ApiError(422, f'Scale.autoscaling "{d.name}" is invalid: spec.replicas: Invalid value: '
                                f'{json.dumps(replicas)}: {bound}')
        cluster.scale(state, d.namespace, d.name, replicas, log=log)
        self.result = {**current, "spec": {"replicas": replicas}, "status": {"replicas": len(cluster.replicas_of(state, d))}}
        if key in state.bodies:
            state.bodies[key].setdefault("spec", {})["replicas"] = replicas
        state.bodies[f"managers:{key}"], _ = patches.owned_after(
            state.bodies.get(f"managers:{key}", {}), f"{self.manager}|Update", {("f:spec", "f:replicas"): replicas},
            None, apply=False)
        self.stored = True
