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

from netlab import names
from netlab.api import spec
from netlab.controllers import cluster
from netlab.control_plane import patch as patches
from netlab.control_plane.status import ApiError, not_found
from netlab.control_plane.watch_cache import storage_key
from netlab.errors import NetlabError
from netlab.lab import SYSTEM_NAMESPACES, namespaces_of, objects as lab_objects, remove_node

# What a request may write, and what netlab's controllers do not take from requests (why).
WRITABLE = {"pods", "deployments", "services", "ingresses", "namespaces", "nodes"}
READ_ONLY = {
    "endpoints": "the endpoints controller writes them from the Services' selectors",
    "endpointslices": "the EndpointSlice controller writes them from the Services' selectors",
    "replicasets": "the Deployment controller owns them: change the Deployment",
    "daemonsets": "kube-proxy and kube-flannel-ds are the lab's own agents",
    "events": "the lab's components record them",
    "configmaps": "they hold the configuration the lab was built with (change the lab file)",
    "ingressclasses": "the ingress-nginx add-on's class is the lab's",
}
UNDELETABLE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "kube-flannel", "ingress-nginx")
SERVER_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink",
                   "deletionTimestamp", "deletionGracePeriodSeconds")
CONTENT_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                 "application/strategic-merge-patch+json", "application/apply-patch+yaml")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def invalid(target, kind, name, error):
    """A SpecError as the API's 422: `Kind.group "name" is invalid: field: message`."""
    r = target.resource
    kind_name = f"{kind}.{r.group}" if r.group else kind
    field = error.field or "metadata"
    return ApiError(422, f'{kind_name} "{name}" is invalid: {field}: Invalid value: {error.message}',
                    details={"name": name, **({"group": r.group} if r.group else {}), "kind": kind,
                             "causes": [{"reason": "FieldValueInvalid", "message": f"Invalid value: {error.message}",
                                         "field": field}]})


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
        self.ctype, self.manager, self.force, self.dry = ctype, manager, force, dry_run
        self.validation = validation
        self.resource = target.resource
        self.code, self.result = 200, None

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
        state = self.server.lab.state()
        self.mutate(state, [])
        return self.response()

    # --- the request's object ---

    def current(self, state):
        r = self.resource
        namespace = self.target.namespace if r.namespaced else ""
        return next((o for o in lab_objects(state, r.plural)
                     if o["metadata"].get("namespace", "") == (namespace or "") and o["metadata"]["name"] == self.target.name),
                    None)

    def mutate(self, state, log):
        r = self.resource
        if r.plural in READ_ONLY:
            raise ApiError(405, f"{r.qualified} cannot be written by a request in netlab: {READ_ONLY[r.plural]}",
                           reason="MethodNotAllowed")
        if self.target.namespace is not None and self.target.namespace not in namespaces_of(state):
            if not (r.plural == "namespaces"):
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

    def wanted(self, state, current):
        """The object the request asks for, checked against the stored one."""
        body, r = self.body, self.resource
        if self.method == "PATCH":
            if self.ctype not in CONTENT_TYPES:
                raise ApiError(415, f"the server does not support the media type {self.ctype!r} for a patch "
                                    f"(supported: {', '.join(CONTENT_TYPES)})")
            if current is None and self.ctype != "application/apply-patch+yaml":
                raise not_found(r, self.target.name)
            base = self.stored_body(state, current) if current is not None else None
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
        """The resourceVersion a request's precondition is checked against: the key's mod revision
        (the one the cache serves), or the cache's for an object the store does not keep."""
        key = storage_key(self.resource, current)
        if key in state.revisions:
            return str(state.revisions[key][0])
        meta = current["metadata"]
        cached = self.server.cache.get(self.resource.plural, meta.get("namespace", ""), meta["name"])
        return (cached or {}).get("metadata", {}).get("resourceVersion")

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
        if self.validation == "Strict":
            unknown = [k for k in body if k not in ("apiVersion", "kind", "metadata", "spec", "status", "data")]
            if unknown:
                raise ApiError(400, f'strict decoding error: unknown field "{unknown[0]}"')

    def _exists(self, state, meta):
        r = self.resource
        return any(o["metadata"]["name"] == meta["name"] and o["metadata"].get("namespace", "") == meta.get("namespace", "")
                   for o in lab_objects(state, r.plural))

    def stored_body(self, state, current):
        """What a patch applies to: the object as the last request wrote it (its fields netlab
        does not model included), with the server's fields of the live object."""
        key = storage_key(self.resource, current)
        body = state.bodies.get(key)
        live = copy.deepcopy(current)
        if body is None:
            return live
        return {**patches.merge_patch(live, {}), **copy.deepcopy(body),
                "metadata": {**live["metadata"], **copy.deepcopy(body.get("metadata", {}))},
                "status": live.get("status", {})}

    def server_side_apply(self, state, base, current, applied):
        managers = state.bodies.get(f"managers:{storage_key(self.resource, current)}", {}) if current else {}
        if current is not None and not self.force:
            if self.manager == "kubectl":      # kubectl's upgrade path: it takes over what client-side apply set
                managers = {p: [f"{self.manager}|Apply" if m == "kubectl-client-side-apply|Update" else m
                                for m in patches.owners_of(managers, p)] for p in managers}
            found = patches.conflicts(managers, f"{self.manager}|Apply", applied, current)
            if found:
                r = self.resource
                said = [(path, _manager_named(owner, r)) for path, owner in found]
                raise ApiError(409, f"Apply failed with {len(found)} conflict{'s' * (len(found) > 1)}: "
                                    + "; ".join(f'conflict with {who}: {path}' for path, who in said),
                               details={"name": self.target.name, **({"group": r.group} if r.group else {}),
                                        "kind": r.plural,
                                        "causes": [{"reason": "FieldManagerConflict", "message": f"conflict with {who}",
                                                    "field": path} for path, who in said]})
        self.applied_fields = patches.owned_fields(applied)
        return patches.merge_patch(base, applied) if base is not None else applied

    # --- into the controllers ---

    def store(self, state, log, body, current):
        r = self.resource
        meta = body["metadata"]
        key = storage_key(r, body)
        if r.plural == "namespaces":
            self.store_namespace(state, body, current)
        elif r.plural == "nodes":
            self.store_node(state, body)
        else:
            self.apply(state, log, body, current)
        state.bodies[key] = _clean(body)
        self.own_fields(state, key, body, current)
        self.code = 201 if current is None else 200
        self.result = next((o for o in lab_objects(state, r.plural) if o["metadata"]["name"] == meta["name"]
                            and o["metadata"].get("namespace", "") == meta.get("namespace", "")), body)

    def own_fields(self, state, key, body, current):
        """Who set which field (managedFields, flattened)."""
        managers_key = f"managers:{key}"
        managers = state.bodies.get(managers_key, {})
        apply = getattr(self, "applied_fields", None) is not None
        if apply:
            fields = self.applied_fields
        else:
            before = patches.owned_fields(current) if current else {}
            fields = {p: v for p, v in patches.owned_fields(body).items() if before.get(p) != v}
        owner = f"{self.manager}|{'Apply' if apply else 'Update'}"     # a manager and its operation
        state.bodies[managers_key] = patches.owned_after(managers, owner, fields, current, apply)

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
        labels = {**labels, "kubernetes.io/metadata.name": name}     # the API server sets it: immutable
        body["metadata"]["labels"] = labels
        old = state.namespaces.get(name, {})
        state.namespaces[name] = {"labels": labels, "created": old.get("created") or
                                  (current or {}).get("metadata", {}).get("creationTimestamp") or _now()}

    def store_node(self, state, body):
        if self.method == "POST":
            raise ApiError(405, "netlab's nodes join with `netlab node add NAME` (kind and kubeadm), not by a request")
        node = state.node(body["metadata"]["name"])
        labels = body["metadata"].get("labels") or {}
        if not isinstance(labels, dict):
            raise ApiError(422, f'Node "{node.name}" is invalid: metadata.labels: must be a map of strings')
        node.labels = dict(labels)
        taints = (body.get("spec") or {}).get("taints") or []
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
        live = self.parse(state, self.stored_body(state, current))
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

    def delete_namespace(self, state, log, name):
        if name in UNDELETABLE_NAMESPACES or name in SYSTEM_NAMESPACES:
            raise ApiError(403, f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                           details={"name": name, "kind": "namespaces"})
        for kind, items in (("ingress", state.ingresses), ("service", state.services),
                            ("deployment", state.deployments), ("pod", state.pods)):
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
        body = self._mapping(self.body)
        key = storage_key(r, {"metadata": {"name": d.name, "namespace": d.namespace}})
        asked = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body.get("metadata"), dict) else None
        self.check_version(asked, str(state.revisions.get(key, [0])[0]), d.name)
        if self.method == "PATCH":
            current = {"spec": {"replicas": d.replicas}}
            body = patches.merge_patch(current, body) if self.ctype != "application/json-patch+json" else \
                patches.json_patch(current, body)
        replicas = (body.get("spec") or {}).get("replicas")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, f'Scale.autoscaling "{d.name}" is invalid: spec.replicas: Invalid value: {replicas!r}: '
                                f'must be greater than or equal to 0')
        cluster.scale(state, d.namespace, d.name, replicas, log=log)
        if key in state.bodies:
            state.bodies[key].setdefault("spec", {})["replicas"] = replicas
        state.bodies[f"managers:{key}"] = patches.owned_after(state.bodies.get(f"managers:{key}", {}),
                                                              f"{self.manager}|Update", {".spec.replicas": replicas},
                                                              None, apply=False)
