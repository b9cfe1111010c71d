"""kube-apiserver: the Kubernetes API of one lab, for kubectl, client libraries and pods.

A lab process (`python -m netlab.control_plane.kube_apiserver LAB`), started by `netlab up`
and by reconcile when it is not running. It listens where a kind cluster's API server can be
reached: on the control-plane node's address, port 6443, inside that node's namespace (so
pods reach it as kubernetes.default through kube-proxy's rules), and on 127.0.0.1:<port> in
the host's namespace, as kind publishes its API server for the host's kubectl. TLS from the
lab's CA; client certificates authenticate (the admin's is in the kubeconfig), anonymous
requests may read what system:public-info-viewer allows.

Reads are served from the watch cache; writes go through the lab's one mechanism
(Lab.change: the same controllers and convergence as every netlab command), so a
`kubectl scale` converges the kernel exactly as `netlab scale` does, before it is answered.
"""

import asyncio
import base64
import json
import os
import random
import secrets
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

import yaml
from aiohttp import web

from netlab import names
from netlab.api import pki, printers
from netlab.api.etcd import Store
from netlab.control_plane import patch as patches
from netlab.control_plane import registry, selectors
from netlab.control_plane.status import ApiError, not_found, status_body, status_response
from netlab.control_plane.watch_cache import WatchCache, storage_key
from netlab.errors import LabNotFound, NetlabError, SpecError
from netlab.kernel import netns as ns
from netlab.lab import Lab, objects as lab_objects
from netlab.node import kubelet

VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "60a317eadfcb839692a68eab88b2096f4d708f4f",
           "gitTreeState": "clean", "buildDate": "2025-04-23T13:07:52Z", "goVersion": "go1.24.2", "compiler": "gc",
           "platform": "linux/amd64"}
MAX_REQUEST_BYTES = 3 * 1024 * 1024        # the real server's limit on a request body
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")   # system:public-info-viewer
# Field selectors each resource takes besides metadata.name and metadata.namespace.
FIELDS = {"pods": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                   "status.phase", "status.podIP", "status.nominatedNodeName"),
          "events": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
                     "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
                     "reason", "reportingComponent", "source", "type"),
          "nodes": ("spec.unschedulable",), "namespaces": ("status.phase",)}
GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"    # the API server's name generator (utilrand)
WATCH_SECONDS = 1800                                  # --min-request-timeout
BOOKMARK_SECONDS = 10.0                               # how often a quiet watch that asked for them gets one


def _bool(query, name):
    return query.get(name, "").lower() in ("true", "1")


def with_managed_fields(resource, obj, managers):
    """metadata.managedFields from the fields each manager set (kept flattened by the write path)."""
    if not managers:
        return obj
    groups = {}
    for key in managers:
        try:
            path = tuple(json.loads(key))
        except ValueError:                           # a record of an older netlab: not shown
            continue
        for owner in patches.owners_of(managers, path):
            groups.setdefault(owner, []).append(path)
    obj["metadata"]["managedFields"] = [
        {"manager": owner.partition("|")[0], "operation": owner.partition("|")[2] or "Update",
         "apiVersion": resource.group_version, "time": obj["metadata"].get("creationTimestamp"),
         "fieldsType": "FieldsV1", "fieldsV1": patches.fields_v1(paths)} for owner, paths in sorted(groups.items())]
    return obj


# --- requests -------------------------------------------------------------------------------

class Target:
    """What a resource path names: /api/v1/namespaces/NS/pods/NAME/log and the like."""

    def __init__(self, resource, namespace=None, name=None, sub=None):
        self.resource, self.namespace, self.name, self.sub = resource, namespace, name, sub


def parse_path(path):
    """A Target, a discovery document's name ("api", ("group", g), ("version", g, v)), or None."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        if len(parts) == 1:
            return "api"
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"]:
        if len(parts) == 1:
            return "apis"
        if len(parts) == 2:
            return ("group", parts[1])
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return ("version", group, version)
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    resource = registry.find(group, version, rest[0])
    if resource is None or len(rest) > 3:
        raise ApiError(404, "the server could not find the requested resource")
    if namespace is not None and not resource.namespaced:
        raise ApiError(404, "the server could not find the requested resource")
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and resource.subresource(sub) is None:
        raise ApiError(404, "the server could not find the requested resource")
    return Target(resource, namespace, name, sub)


def as_table(request, resource, objects, resource_version):
    """The objects as the server's Table (the same printers as `netlab get`)."""
    try:
        return printers.table(resource.plural, objects, request.query.get("includeObject", "Metadata"),
                              resource_version=resource_version)
    except ValueError as e:
        raise ApiError(400, str(e)) from None


def wants_table(accept):
    return "as=Table" in accept and "g=meta.k8s.io" in accept


def discovery_version(accept):
    """The aggregated discovery version the client asks for first, or None (legacy JSON)."""
    for part in accept.split(","):
        params = dict(p.strip().partition("=")[::2] for p in part.split(";")[1:])
        if params.get("as") == "APIGroupDiscoveryList" and params.get("g") == "apidiscovery.k8s.io" and \
                params.get("v") in ("v2", "v2beta1"):
            return params["v"]
    return None


async def read_body(request):
    """The request's object, from JSON or YAML. 400 for what is neither, 413 over 3 MiB."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"Request entity too large: limit is {MAX_REQUEST_BYTES}") from None
    if len(raw) > MAX_REQUEST_BYTES:
        raise ApiError(413, f"Request entity too large: limit is {MAX_REQUEST_BYTES}")
    ctype = request.content_type
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text") from None
    try:
        if "yaml" in ctype:
            for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
                if node is not None and excessive_aliasing(node):
                    raise ApiError(400, "yaml: document contains excessive aliasing")
            docs = list(yaml.safe_load_all(text))
            if len(docs) != 1:
                raise ApiError(400, f"the request body holds {len(docs)} YAML documents; it takes one object")
            body = docs[0]
        else:
            body = json.loads(text)
    except (ValueError, yaml.YAMLError, RecursionError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ApiError(400, f"the body of the request was in an unknown format - accepted media types include: "
                            f"application/json, application/yaml ({detail})") from None
    if _depth(body) > MAX_DEPTH:
        raise ApiError(400, f"the request body is nested deeper than {MAX_DEPTH} levels")
    return body


def excessive_aliasing(root):
    """go-yaml's guard against alias bombs (CVE-2019-11253), which kube-apiserver's decoder
    has: more than 100 alias expansions among more than 1,000 decoded nodes, making up over
    99 % of them (down to 10 % at 4 million nodes). Counted on the composed graph, where an
    alias is a second reference to a node; a recursive alias is refused outright."""
    aliases = set()                           # (id(parent), index) of the references that are aliases
    seen, todo = set(), [root]
    while todo:
        node = todo.pop()
        children = _children(node)
        for i, child in enumerate(children):
            if id(child) in seen:
                aliases.add((id(node), i))
            else:
                seen.add(id(child))
                todo.append(child)
    decoded, expanded, on_path = {}, {}, set()

    def count(node):                          # (nodes decoded, aliases decoded) expanding every alias
        if id(node) in decoded:
            return decoded[id(node)], expanded[id(node)]
        if id(node) in on_path:
            raise ApiError(400, "yaml: document contains a recursive alias")
        on_path.add(id(node))
        d, a = 1, 0
        for i, child in enumerate(_children(node)):
            cd, ca = count(child)
            d, a = d + cd, a + ca + ((id(node), i) in aliases)
        on_path.discard(id(node))
        decoded[id(node)], expanded[id(node)] = d, a
        return d, a
    d, a = count(root)
    ratio = 0.99 if d <= 400_000 else 0.10 if d >= 4_000_000 else 0.99 - 0.89 * (d - 400_000) / 3_600_000
    return a > 100 and d > 1000 and a / d > ratio


def _children(node):
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


MAX_DEPTH = 100         # Kubernetes' objects nest a few levels deep; the write path recurses on them


def _depth(value):
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        deepest = max(deepest, d)
        if d <= MAX_DEPTH and isinstance(v, (dict, list)):
            todo += [(x, d + 1) for x in (v.values() if isinstance(v, dict) else v)]
    return deepest


# --- the server -------------------------------------------------------------------------------

class ApiServer:
    def __init__(self, lab_name):
        self.lab = Lab(lab_name)
        self.name = lab_name
        self.store = Store(lab_name)
        self.pki = pki.paths(self.store.dir)
        self.ca_pem = self.pki.ca_crt.read_bytes()
        self.cache = WatchCache(lab_name, registry.RESOURCES, self.render)
        self.rng = random.Random(secrets.randbits(64))
        # Writes wait on the lab's lock and converge; the cache must keep following the state
        # meanwhile (a write's own convergence waits for it): each has its own threads.
        self.writers = ThreadPoolExecutor(4, thread_name_prefix="write")
        self.reader = ThreadPoolExecutor(1, thread_name_prefix="cache")

    def served(self, state, resource):
        """One resource's objects of `state` as the API serves them (without resourceVersions)."""
        objs = lab_objects(state, resource.plural)
        if not state.bodies:
            return objs
        return [with_managed_fields(resource, patches.overlay(state.bodies.get(storage_key(resource, o)), o),
                                    state.bodies.get(f"managers:{storage_key(resource, o)}")) for o in objs]

    def render(self, state):
        """Every object of the state; a stored object shows the fields its request wrote that
        netlab does not model (annotations, env, resources...), under the ones it computes."""
        return {r.plural: self.served(state, r) for r in registry.RESOURCES}

    # --- the application ---

    def app(self):
        app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[self.middleware])
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    @web.middleware
    async def middleware(self, request, handler):
        try:
            request["user"] = self.authenticate(request)
            self.authorize(request)
            return await handler(request)
        except ApiError as e:
            return status_response(e.code, e.message, e.reason, e.details)
        except web.HTTPException as e:
            if e.status == 413:
                return status_response(413, f"Request entity too large: limit is {MAX_REQUEST_BYTES}")
            return status_response(e.status, e.reason)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:                      # a bug: the client gets a Status, the log the rest
            import traceback
            traceback.print_exc()
            return status_response(500, f"Internal error occurred: {type(e).__name__}: {e}")

    def authenticate(self, request):
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        user = pki.authenticate(der, request.headers.get("Authorization"), self.ca_pem)
        if user is None:
            raise ApiError(401, "Unauthorized")
        return user

    def authorize(self, request):
        """RBAC as a new cluster has it: system:masters may do everything; anonymous may read
        the public info paths; nobody else may do anything (no RBAC objects exist)."""
        user, path = request["user"], request.path.rstrip("/") or "/"
        if "system:masters" in user.groups:
            return
        if request.method == "GET" and (path in PUBLIC_PATHS or path.startswith(("/livez/", "/readyz/", "/healthz/"))):
            return
        verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            request.method, request.method.lower())
        try:
            target = parse_path(path)
        except ApiError:
            target = None
        if isinstance(target, Target):
            r = target.resource
            if verb == "get" and target.name is None:
                verb = "watch" if _bool(request.query, "watch") else "list"
            scope = f'in the namespace "{target.namespace}"' if target.namespace else "at the cluster scope"
            named = f' "{target.name}"' if target.name else ""
            raise ApiError(403, f'{r.qualified}{named} is forbidden: User "{user.name}" cannot {verb} resource '
                                f'"{r.plural}" in API group "{r.group}" {scope}',
                           details={"name": target.name or "", **({"group": r.group} if r.group else {}),
                                    "kind": r.plural})
        raise ApiError(403, f'forbidden: User "{user.name}" cannot {verb} path "{path}"')

    async def dispatch(self, request):
        path = request.path
        if request.method != "GET" and not path.startswith(("/api/", "/apis/")):
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            return web.Response(text="ok", content_type="text/plain")
        if path.rstrip("/") == "/version":
            return web.json_response(VERSION)
        if path.rstrip("/") == "/openapi/v3":
            return web.json_response(registry.openapi_root())
        if path.startswith("/openapi/v3/"):
            parts = path[len("/openapi/v3/"):].strip("/").split("/")
            if parts[:1] == ["api"] and len(parts) == 2 and parts[1] in registry.versions(""):
                return web.json_response(registry.openapi_document("", parts[1]))
            if parts[:1] == ["apis"] and len(parts) == 3 and parts[2] in registry.versions(parts[1]) and parts[1]:
                return web.json_response(registry.openapi_document(parts[1], parts[2]))
        if path.startswith("/openapi/"):
            raise ApiError(404, "the server could not find the requested resource")
        target = parse_path(path)
        if target is None:
            raise ApiError(404, "the server could not find the requested resource")
        if not isinstance(target, Target):
            if request.method != "GET":
                raise ApiError(405, "the server does not allow this method on the requested resource")
            return self.discovery(request, target)
        await self.fresh()
        method = request.method
        if target.sub == "exec":
            return await self.exec(request, target)
        if target.sub == "log":
            return await self.logs(request, target)
        if target.sub == "portforward":
            return await self.port_forward(request, target)
        if method == "GET" and target.name is None:
            if _bool(request.query, "watch"):
                return await self.watch(request, target)
            return self.list(request, target)
        if method == "GET":
            return self.respond(request, target.resource, self.read(target))
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            return await self.write(request, target)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    async def fresh(self):
        """Reads see every write that was answered before them: the cache follows the file."""
        await asyncio.get_running_loop().run_in_executor(self.reader, self.cache.refresh)

    # --- discovery ---

    def discovery(self, request, which):
        accept = request.headers.get("Accept", "")
        if which in ("api", "apis"):
            v = discovery_version(accept)
            if v:
                body = registry.aggregated(which == "api", f"apidiscovery.k8s.io/{v}")
                return web.Response(body=json.dumps(body).encode(),
                                    headers={"Content-Type": f"application/json;g=apidiscovery.k8s.io;v={v};"
                                                             f"as=APIGroupDiscoveryList"})
            if which == "api":
                return web.json_response(registry.api_versions(f"{request.host}"))
            return web.json_response(registry.api_group_list())
        if which[0] == "group":
            if which[1] not in registry.GROUPS:
                raise ApiError(404, "the server could not find the requested resource")
            return web.json_response(registry.api_group(which[1]))
        _, group, version = which
        if (group and group not in registry.GROUPS) or version not in registry.versions(group):
            raise ApiError(404, "the server could not find the requested resource")
        return web.json_response(registry.api_resource_list(group, version))

    # --- reads ---

    def read(self, target):
        r = target.resource
        if target.sub == "scale":
            return self.scale_object(target)
        obj = self.cache.snapshot.get(r.plural, target.namespace if r.namespaced else "", target.name)
        if obj is None:
            raise not_found(r, target.name)
        return obj

    def scale_object(self, target):
        obj = self.cache.snapshot.get(target.resource.plural, target.namespace, target.name)
        if obj is None:
            raise not_found(target.resource, target.name)
        meta = obj["metadata"]
        selector = ",".join(f"{k}={v}" for k, v in sorted(obj["spec"]["selector"]["matchLabels"].items()))
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                             if k in meta},
                "spec": {"replicas": obj["spec"]["replicas"]},
                "status": {"replicas": obj.get("status", {}).get("replicas", 0), "selector": selector}}

    def selector(self, request, target):
        """The predicate of a request's namespace, labelSelector and fieldSelector (400 if malformed)."""
        query = request.query
        try:
            labels = selectors.parse_labels(query.get("labelSelector", ""))
            fields = selectors.parse_fields(query.get("fieldSelector", ""),
                                            ("metadata.name", "metadata.namespace") + FIELDS.get(target.resource.plural, ()))
        except selectors.SelectorError as e:
            raise ApiError(400, str(e)) from None
        return lambda obj: ((target.namespace is None or obj["metadata"].get("namespace") == target.namespace)
                            and labels(obj["metadata"].get("labels") or {}) and selectors.fields_match(obj, fields))

    def list(self, request, target):
        r = target.resource
        wanted = self.selector(request, target)
        snap = self.cache.snapshot
        items = sorted((o for o in snap.list(r.plural) if wanted(o)),
                       key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        meta = {"resourceVersion": str(snap.revision)}
        start = 0
        if request.query.get("continue"):
            token = self.continue_token(request.query["continue"])
            changed = snap.since(r.plural, token["rv"])
            if changed is None or changed:             # the list's pages would not be one snapshot
                raise ApiError(410, "The provided continue parameter is too old to display a consistent list "
                                    "result. You can start a new list without the continue parameter.",
                               reason="Expired")
            meta["resourceVersion"] = str(token["rv"])
            start = next((i for i, o in enumerate(items)
                          if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > tuple(token["start"])),
                         len(items))
        limit = request.query.get("limit")
        if limit is not None and not limit.isdigit():
            raise ApiError(400, f"limit: invalid value {limit!r}: must be a non-negative integer")
        page = items[start:]
        if limit and int(limit) > 0 and len(page) > int(limit):
            page = page[:int(limit)]
            last = page[-1]["metadata"]
            meta["continue"] = base64.b64encode(json.dumps(
                {"rv": int(meta["resourceVersion"]), "start": [last.get("namespace", ""), last["name"]]}).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - len(page)
        if wants_table(request.headers.get("Accept", "")):
            table = as_table(request, r, page, meta["resourceVersion"])
            table["metadata"] = {**table.get("metadata", {}), **meta}
            return web.json_response(table)
        return web.json_response({"kind": f"{r.kind}List", "apiVersion": r.group_version, "metadata": meta,
                                  "items": [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                                            for o in page]})

    @staticmethod
    def continue_token(text):
        try:
            token = json.loads(base64.b64decode(text, validate=True))
            if not isinstance(token["rv"], int) or not (isinstance(token["start"], list) and len(token["start"]) == 2):
                raise ValueError
            return token
        except (ValueError, KeyError, TypeError):
            raise ApiError(400, "continue key is not valid: incorrect encoded start resourceVersion "
                                "(version meta.k8s.io/v1)") from None

    def respond(self, request, resource, obj, code=200):
        if wants_table(request.headers.get("Accept", "")) and obj.get("kind") == resource.kind:
            return web.json_response(as_table(request, resource, [obj], obj["metadata"].get("resourceVersion")),
                                     status=code)
        return web.json_response(obj, status=code)

    async def watch(self, request, target):
        r = target.resource
        wanted = self.selector(request, target)
        rv = request.query.get("resourceVersion", "")
        table = wants_table(request.headers.get("Accept", ""))
        try:
            timeout = min(int(request.query.get("timeoutSeconds") or WATCH_SECONDS), WATCH_SECONDS)
        except ValueError:
            raise ApiError(400, "timeoutSeconds: must be an integer") from None
        bookmarks = _bool(request.query, "allowWatchBookmarks")
        snap = self.cache.snapshot
        if rv not in ("", "0"):
            if not rv.isdigit():
                raise ApiError(400, f'resourceVersion: Invalid value: "{rv}": must be an integer')
            since = int(rv)
            if snap.since(r.plural, since) is None:
                return await self.expired_watch(request, since, snap.oldest)
            initial = []
        else:
            since = snap.revision                       # the current state, as synthetic ADDED events
            initial = sorted((o for o in snap.list(r.plural) if wanted(o)),
                             key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        await response.prepare(request)
        first = True

        async def send(kind, obj):
            nonlocal first
            if table and kind not in ("BOOKMARK", "ERROR"):
                obj = as_table(request, r, [obj], obj["metadata"].get("resourceVersion"))
                if not first:
                    obj["columnDefinitions"] = []      # kubectl prints the header of the first one
                first = False
            await response.write((json.dumps({"type": kind, "object": obj}) + "\n").encode())

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            for obj in initial:
                await send("ADDED", obj)
            while loop.time() < deadline:
                await self.fresh()
                snap = self.cache.snapshot
                changes = snap.since(r.plural, since)
                if changes is None:                     # fell out of the history while we wrote
                    await send("ERROR", status_body(410, f"too old resource version: {since} ({snap.oldest})",
                                                    reason="Expired"))
                    break
                for change in changes:
                    await self.send_change(send, change, wanted)
                since = max(since, snap.revision)
                if bookmarks:
                    await send("BOOKMARK", {"kind": r.kind, "apiVersion": r.group_version,
                                            "metadata": {"resourceVersion": str(since)}})
                await self.cache.wait(since, min(BOOKMARK_SECONDS, max(0.0, deadline - loop.time())))
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        await response.write_eof()
        return response

    @staticmethod
    async def send_change(send, change, wanted):
        """One change as a watcher of a selection sees it (the cacher's convertToWatchEvent): an
        object that leaves the selection is DELETED, with its previous content at the event's
        revision; one that enters it is ADDED."""
        old_in = change.old is not None and wanted(change.old)
        new_in = change.type != "DELETED" and wanted(change.new)
        if change.type == "DELETED":
            if old_in:
                await send("DELETED", change.new)
        elif new_in and not old_in:
            await send("ADDED", change.new)
        elif new_in:
            await send("MODIFIED", change.new)
        elif old_in:
            previous = change.old
            await send("DELETED", {**previous, "metadata": {**previous["metadata"],
                                                            "resourceVersion": str(change.revision)}})

    async def expired_watch(self, request, since, oldest):
        """A watch from a revision the cache no longer holds: 200, then one ERROR event carrying
        410 Expired, as the cacher's error watcher answers (clients list again)."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        status = status_body(410, f"too old resource version: {since} ({oldest})", reason="Expired")
        await response.write((json.dumps({"type": "ERROR", "object": status}) + "\n").encode())
        await response.write_eof()
        return response

    # --- writes ---

    async def write(self, request, target):
        r = target.resource
        query = request.query
        user = request["user"]
        method = request.method
        if target.sub not in (None, "scale", "status"):
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if method == "DELETE":                      # DeleteOptions, when the client sends them
            body = await read_body(request) if request.can_read_body else None
        else:
            body = await read_body(request)
        if method == "POST" and target.name is not None:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if method != "POST" and target.name is None:
            if method == "DELETE":
                raise ApiError(405, f"netlab does not delete whole collections: delete {r.plural} by name")
            raise ApiError(405, "the server does not allow this method on the requested resource")
        agent = request.headers.get("User-Agent", "").split(" ")[0] or "a client"
        why = f"{method} {request.path} by {user.name} ({agent})"
        manager = query.get("fieldManager") or agent.split("/")[0] or "unknown"
        asked_dry = query.getall("dryRun", []) + (body.get("dryRun") or [] if isinstance(body, dict) and method ==
                                                    "DELETE" and isinstance(body.get("dryRun"), list) else [])
        if any(v != "All" for v in asked_dry):
            raise ApiError(400, f'dryRun: Unsupported value: "{next(v for v in asked_dry if v != "All")}": supported '
                                f'values: "All"')
        dry_run = bool(asked_dry)
        ctype = request.content_type
        code, obj, warnings = await asyncio.get_running_loop().run_in_executor(
            self.writers, self.write_sync, target, method, body, ctype, why, manager, _bool(query, "force"), dry_run,
            query.get("fieldValidation", "Warn"), "fieldManager" in query)
        response = self.respond(request, r, obj, code)
        for warning in warnings:                     # as kube-apiserver's warning headers (RFC 7234's 299)
            response.headers.add("Warning", f'299 - {json.dumps(warning)}')
        return response

    def write_sync(self, target, method, body, ctype, why, manager, force, dry_run, validation, manager_given):
        from netlab.control_plane import writes
        w = writes.Write(self, target, method, body, ctype, manager, force, dry_run, validation)
        w.manager_given = manager_given or ctype != "application/apply-patch+yaml"
        try:
            if dry_run:
                return (*w.dry_run(), w.warnings)
            written = []
            self.lab.change(why, w.mutate, lambda: written.append(self.as_written(w, method)))
            return (w.code, written[0], w.warnings)
        except ApiError:
            raise
        except SpecError as e:
            raise writes.invalid(target, w.kind_name(), w.object_name(), e) from None
        except LabNotFound as e:
            raise ApiError(503, str(e), reason="ServiceUnavailable") from None
        except NetlabError as e:
            if w.stored:                          # stored; its convergence failed: the next change retries it
                print(f"kube-apiserver: {why}: stored, but the agents did not converge: {e}", file=sys.stderr,
                      flush=True)
                return (*w.response(), w.warnings + [f"the lab's agents did not converge yet: {e}"])
            raise ApiError(422, str(e)) from None

    def as_written(self, w, method):
        """The object as this write left it, with its resourceVersion: the cache's snapshot when
        the write's convergence ended, under the lab's lock (the convergence waited for the
        cache to serve its last save; no other command saves before the lock is let go)."""
        target, r = w.target, w.resource
        if target.sub == "scale":
            return self.scale_object(target)
        if method == "DELETE" or w.result is None:
            return w.result
        meta = w.result["metadata"]
        return self.cache.snapshot.get(r.plural, meta.get("namespace", "") if r.namespaced else "", meta["name"]) \
            or w.result

    # --- streams ---

    def pod_of(self, target):
        if target.resource.plural != "pods" or target.name is None:
            raise ApiError(404, "the server could not find the requested resource")
        state = self.cache.snapshot.state
        pod = next((p for p in state.pods if p.namespace == target.namespace and p.name == target.name), None)
        if pod is None:
            raise not_found(target.resource, target.name)
        return pod

    def container_of(self, pod, request):
        names_ = [c.name for c in pod.template.containers]
        wanted = request.query.get("container")
        if not wanted:
            if len(names_) > 1:
                raise ApiError(400, f"a container name must be specified for pod {pod.name}, choose one of: "
                                    f"[{' '.join(names_)}]")
            return names_[0]
        if wanted not in names_:
            raise ApiError(400, f"container {wanted} is not valid for pod {pod.name}")
        return wanted

    async def exec(self, request, target):
        pod = self.pod_of(target)
        self.container_of(pod, request)
        if pod.node is None:
            raise ApiError(400, f"pod {pod.name} does not have a host assigned")
        command = parse_qs(request.query_string).get("command", [])
        if not command:
            raise ApiError(400, "you must specify at least 1 command")
        q = request.query
        from netlab.control_plane import streams
        return await streams.exec_pod(request, kubelet.exec_argv(pod, command), stdin=_bool(q, "stdin"),
                                      stdout=_bool(q, "stdout"), stderr=_bool(q, "stderr"), tty=_bool(q, "tty"),
                                      command=command)

    async def port_forward(self, request, target):
        pod = self.pod_of(target)
        if pod.node is None:
            raise ApiError(400, f"pod {pod.name} does not have a host assigned")
        ports = []
        for value in parse_qs(request.query_string).get("ports", []):
            for p in value.split(","):
                if not p.strip().isdigit() or not 0 < int(p) < 65536:
                    raise ApiError(400, f'invalid port "{p}"')
                ports.append(int(p))
        from netlab.control_plane import streams
        return await streams.port_forward(request, pod.netns, ports)

    async def logs(self, request, target):
        pod = self.pod_of(target)
        container = self.container_of(pod, request)
        q = request.query
        path = self.store.dir / "logs" / f"{pod.namespace}_{pod.name}_{container}.log"
        rec = next((r for r in pod.pids if r["container"] == container), None)

        def running():
            from netlab.kernel.processes import alive
            return rec is not None and alive(rec)

        def number(name):
            v = q.get(name)
            if v is None:
                return None
            if not v.lstrip("-").isdigit():
                raise ApiError(400, f"{name}: must be an integer")
            return int(v)
        from netlab.control_plane import streams
        return await streams.pod_logs(request, path, follow=_bool(q, "follow"), tail_lines=number("tailLines"),
                                      limit_bytes=number("limitBytes"), timestamps=_bool(q, "timestamps"),
                                      previous=_bool(q, "previous"), running=running)

    def generate_name(self, prefix):
        return prefix[:58] + "".join(self.rng.choice(GENERATE_ALPHABET) for _ in range(5))


# --- the process ------------------------------------------------------------------------------

def _listen(address, port, netns=None):
    def make():
        s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(512)
        s.setblocking(False)
        return s
    if netns is None:
        return make()
    with ns.entered(netns):
        return make()


async def serve(lab):
    server = ApiServer(lab)
    state = server.store.load()
    server.cache.attach(asyncio.get_running_loop())
    await server.fresh()
    control_plane = next(n for n in state.nodes if n.role == "control-plane")
    tls = pki.server_context(server.pki)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    sockets = [_listen("127.0.0.1", state.api_port), _listen(control_plane.internal_ip, 6443, control_plane.netns)]
    for s in sockets:
        await web.SockSite(runner, s, ssl_context=tls, shutdown_timeout=1.0).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    marker = server.store.dir / "kube_apiserver.served"
    served = None
    while not stop.is_set():
        try:
            os.stat(server.store.path)
        except FileNotFoundError:
            break                                  # the lab is gone: so are we
        try:
            await server.fresh()
            if server.cache.mtime != served:      # the state a waiting command saved is served
                marker.write_text(str(server.cache.mtime))
                served = server.cache.mtime
        except Exception as e:                     # a state being replaced: the next pass
            print(f"kube-apiserver: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass
    await runner.cleanup()


def main():
    lab = sys.argv[1] if len(sys.argv) > 1 else ""
    if not names.DNS1123_LABEL.match(lab):
        sys.exit(f"kube-apiserver: bad lab name {lab!r}")
    kubelet.announce(lab, "kube_apiserver")
    asyncio.run(serve(lab))


if __name__ == "__main__":
    # Run the module's own copy, not __main__'s: one copy of every class, whoever imports it.
    from netlab.control_plane import kube_apiserver
    kube_apiserver.main()
