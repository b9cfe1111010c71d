"""kube-apiserver's registry: the resources it serves, as discovery lists them.

Every resource a kind cluster with flannel has and netlab models, with the names, short names,
verbs, categories and subresources the real API server gives it. kubectl learns short names
(`po`, `svc`, `deploy`) only from discovery, so this table is what makes them work.
"""

from dataclasses import dataclass

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

# Subresources: (name, kind, group/version of that kind, verbs).
_STATUS = ("status", None, None, ("get", "patch", "update"))
_SCALE = ("scale", "Scale", "autoscaling/v1", ("get", "patch", "update"))


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple = ()
    categories: tuple = ()
    subresources: tuple = ()
    verbs: tuple = VERBS
    stored: str | None = None         # the state's list that holds it (etcd.REGISTRY), when it is stored

    @property
    def group_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self):
        """The name the API's messages use: `pods`, `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def subresource(self, name):
        return next((s for s in self.subresources if s[0] == name), None)


RESOURCES = (
    Resource("", "v1", "namespaces", "namespace", "Namespace", False, ("ns",), subresources=(_STATUS,)),
    Resource("", "v1", "nodes", "node", "Node", False, ("no",), subresources=(_STATUS,), stored="nodes"),
    Resource("", "v1", "pods", "pod", "Pod", True, ("po",), ("all",), stored="pods", subresources=(
        _STATUS, ("log", "Pod", None, ("get",)), ("exec", "PodExecOptions", None, ("create", "get")),
        ("portforward", "PodPortForwardOptions", None, ("create", "get")))),
    Resource("", "v1", "services", "service", "Service", True, ("svc",), ("all",), (_STATUS,), stored="services"),
    Resource("", "v1", "endpoints", "endpoints", "Endpoints", True, ("ep",), stored="endpoints"),
    Resource("", "v1", "events", "event", "Event", True, ("ev",)),
    Resource("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",)),
    Resource("apps", "v1", "deployments", "deployment", "Deployment", True, ("deploy",), ("all",),
             (_SCALE, _STATUS), stored="deployments"),
    Resource("apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, ("rs",), ("all",), (_SCALE, _STATUS)),
    Resource("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, ("ds",), ("all",), (_STATUS,)),
    Resource("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", True,
             stored="endpoint_slices"),
    Resource("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", True, ("ing",), subresources=(_STATUS,),
             stored="ingresses"),
    Resource("networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", False),
    Resource("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", True, ("netpol",),
             stored="network_policies"),
)

BY_PLURAL = {(r.group, r.plural): r for r in RESOURCES}
GROUPS = tuple(dict.fromkeys(r.group for r in RESOURCES if r.group))   # discovery's order: as registered


def find(group, version, plural):
    r = BY_PLURAL.get((group, plural))
    return r if r is not None and r.version == version else None


def versions(group):
    return sorted({r.version for r in RESOURCES if r.group == group})


# --- legacy discovery (every kubectl since 1.20 reads it) --------------------------------------

def api_versions(server_address):
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _group(name):
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions(name)]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list():
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in GROUPS]}


def api_group(name):
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}


def api_resource_list(group, version):
    resources = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        entry = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                 "verbs": list(r.verbs)}
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        resources.append(entry)
        for name, kind, gv, verbs in r.subresources:
            sub = {"name": f"{r.plural}/{name}", "singularName": "", "namespaced": r.namespaced,
                   "kind": kind or r.kind, "verbs": list(verbs)}
            if gv:
                sub["group"], sub["version"] = gv.split("/")
            resources.append(sub)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


# --- aggregated discovery (apidiscovery.k8s.io/v2, kubectl 1.30+ asks for it first) -------------

def _discovery_resource(r):
    out = {"resource": r.plural, "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
           "scope": "Namespaced" if r.namespaced else "Cluster", "singularResource": r.singular,
           "verbs": list(r.verbs)}
    if r.short_names:
        out["shortNames"] = list(r.short_names)
    if r.categories:
        out["categories"] = list(r.categories)
    subs = []
    for name, kind, gv, verbs in r.subresources:
        group, version = gv.split("/") if gv else (r.group, r.version)
        subs.append({"subresource": name, "responseKind": {"group": group, "version": version, "kind": kind or r.kind},
                     "verbs": list(verbs)})
    if subs:
        out["subresources"] = subs
    return out


def aggregated(legacy, api_version):
    """The APIGroupDiscoveryList of /api (legacy=True: the core group) or /apis."""
    groups = [""] if legacy else list(GROUPS)
    items = []
    for g in groups:
        items.append({"metadata": {"name": g, "creationTimestamp": None}, "versions": [
            {"version": v, "resources": [_discovery_resource(r) for r in RESOURCES if r.group == g and r.version == v],
             "freshness": "Current"} for v in versions(g)]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}


# --- OpenAPI v3: what kubectl apply reads to learn that the server validates fields ---------------

def _gv_path(group, version):
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def openapi_root():
    """/openapi/v3: one document per group-version (the hash changes with the server's build)."""
    gvs = sorted({(r.group, r.version) for r in RESOURCES})
    return {"paths": {_gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash={VERSION_HASH}"}
                      for g, v in gvs}}


VERSION_HASH = "5E4F1A8C2B7D9E3F"
_FIELD_VALIDATION = {"name": "fieldValidation", "in": "query", "uniqueItems": True, "schema": {"type": "string"},
                     "description": "fieldValidation instructs the server on how to handle objects in the request "
                                    "containing unknown or duplicate fields: Ignore, Warn or Strict."}


def openapi_document(group, version):
    """A group-version's document: each resource's paths, with the operations it takes and their
    group-version-kind, as kube-apiserver publishes them (no schemas: netlab validates itself)."""
    paths = {}
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        base = f"/{_gv_path(group, version)}" + ("/namespaces/{namespace}" if r.namespaced else "")
        ops = lambda *verbs: {v: {"operationId": f"{v}{r.kind}", "x-kubernetes-group-version-kind": gvk,  # noqa: E731
                                  "parameters": [_FIELD_VALIDATION] if v in ("post", "put", "patch") else [],
                                  "responses": {"200": {"description": "OK"}}} for v in verbs}
        paths[f"{base}/{r.plural}"] = ops("get", "post")
        paths[f"{base}/{r.plural}/{{name}}"] = ops("get", "put", "patch", "delete")
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths,
            "components": {"schemas": {}}}
