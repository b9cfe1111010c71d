"""kube-apiserver regressions on a live lab (topologies/default.yaml): defects a review found, each
checked against what the real API server does. Requests are made with Python's ssl and
http.client and the real kubectl; results are read back from the API, the lab's record and
kubectl's output.

Each test removes what it made, through netlab's own commands where the API might refuse.
"""

import http.client
import json
import queue
import socket
import ssl
import subprocess
import threading
import time
from urllib.parse import urlencode

import pytest

from netlab.api import pki

from .conftest import TOPOLOGIES, lab_for_module, unique_name

KUBECTL = "/usr/bin/kubectl"
TIMEOUT = 30                      # seconds for one request
JSON = {"Content-Type": "application/json"}
PAUSE = "registry.k8s.io/pause:3.10"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_for_module(TOPOLOGIES / "default.yaml", tmp_path_factory) as lab:
        yield lab


@pytest.fixture(scope="module")
def admin(lab):
    """A TLS context with the admin's client certificate (system:masters), trusting the lab's CA."""
    p = pki.paths(lab.store.dir)
    ctx = ssl.create_default_context(cafile=str(p.ca_crt))
    ctx.load_cert_chain(p.admin_crt, p.admin_key)
    return ctx


@pytest.fixture
def api(lab, admin):
    """api(method, path, body=None, headers=None) -> (status, headers, parsed JSON or raw bytes)."""
    def call(method, path, body=None, headers=None, timeout=TIMEOUT):
        conn = http.client.HTTPSConnection("127.0.0.1", lab.state().api_port, context=admin, timeout=timeout)
        try:
            data = body if body is None or isinstance(body, (bytes, str)) else json.dumps(body)
            conn.request(method, path, body=data, headers={**(JSON if data is not None else {}), **(headers or {})})
            r = conn.getresponse()
            raw = r.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw
            return r.status, dict(r.getheaders()), parsed
        finally:
            conn.close()
    return call


@pytest.fixture
def kc(lab, tmp_path):
    """The real kubectl with the lab's kubeconfig and a discovery cache of its own."""
    config = tmp_path / "kubeconfig"
    config.write_text(lab.kubeconfig())
    config.chmod(0o600)

    def run(*args, check=True):
        out = subprocess.run([KUBECTL, "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache"), *args],
                             capture_output=True, text=True, timeout=60)
        if check:
            assert out.returncode == 0, f"kubectl {' '.join(args)}: exit {out.returncode}: {out.stderr}"
        return out
    return run


def is_status(body, code, reason=None):
    """A Status object with the code (and reason), as every API error is."""
    return isinstance(body, dict) and body.get("kind") == "Status" and body.get("code") == code and \
        (reason is None or body.get("reason") == reason)


def deployment(name, replicas, labels=None):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels or {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": PAUSE}]}}}}


def service(name, annotations=None):
    meta = {"name": name, **({"annotations": annotations} if annotations else {})}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def pods_of(lab, name, namespace="default"):
    return [p for p in lab.state().pods if p.namespace == namespace and p.owner == f"Deployment/{name}"]


def remove(lab, kind, name, namespace="default"):
    """Remove an object with netlab's own command (the API may be the thing that is broken)."""
    state = lab.state()
    where = {"deployment": state.deployments, "service": state.services, "pod": state.pods}[kind]
    if any(o.namespace == namespace and o.name == name for o in where):
        lab.delete(kind, namespace, name)


def record(lab):
    """The lab's record as a refused request must leave it: the store's revision and the file's size."""
    return lab.state().revision, lab.store.path.stat().st_size


# --- bodies that used to break the server ------------------------------------------------------------

def alias_bomb(levels=9, width=9):
    """A Pod whose YAML is ~1 KiB and expands to width**levels strings (the billion laughs of
    CVE-2019-11253).
    go-yaml, which the API server decodes YAML with, refuses it ("document contains excessive
    aliasing": past 4 million decoded nodes, more than 10 % of them come from aliases)."""
    rows = [f"    l0: &l0 [{', '.join(['lol'] * width)}]"]
    rows += [f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(["apiVersion: v1", "kind: Pod", "metadata:", "  name: bomb", "spec:",
                      "  containers: [{name: c, image: " + PAUSE + "}]", "  bomb:", *rows, ""])


def test_a_yaml_alias_bomb_is_400_and_nothing_is_stored(lab, api):
    before = record(lab)
    try:
        code, _, body = api("POST", "/api/v1/namespaces/default/pods", alias_bomb(),
                            {"Content-Type": "application/yaml"})
        assert code == 400 and is_status(body, 400, "BadRequest"), (code, body)
        assert record(lab) == before
        assert api("GET", "/api/v1/namespaces/default/pods/bomb")[0] == 404
    finally:
        remove(lab, "pod", "bomb")


def test_a_label_key_that_is_not_a_qualified_name_is_422_and_the_server_keeps_serving(lab, api):
    name = unique_name("lbl")
    try:
        code, _, body = api("POST", "/apis/apps/v1/namespaces/default/deployments",
                            deployment(name, 1, labels={"app": name, "a[b=c]": "x"}))
        assert code == 422 and is_status(body, 422, "Invalid"), (code, body)
        assert body["message"].startswith(f'Deployment "{name}" is invalid: metadata.labels: Invalid value: "a[b=c]"')
        assert not pods_of(lab, name)
        for path in ("/api/v1/namespaces/default/pods", "/apis/apps/v1/deployments", "/api/v1/nodes"):
            code, _, body = api("GET", path)
            assert code == 200 and body["items"], (path, code, body)
    finally:
        remove(lab, "deployment", name)


# --- writes against the object as it is ---------------------------------------------------------------

def test_a_label_patch_after_netlab_scale_keeps_the_scaled_replicas_and_pods(lab, api):
    """`netlab scale` changes a Deployment the API made; a merge patch of a label applies to the
    object as it now is (the server patches the stored object, never the body of an older request)."""
    name = unique_name("scl")
    path = f"/apis/apps/v1/namespaces/default/deployments/{name}"
    try:
        assert api("POST", "/apis/apps/v1/namespaces/default/deployments", deployment(name, 1))[0] == 201
        lab.scale("default", name, 3)
        assert len(pods_of(lab, name)) == 3
        code, _, body = api("PATCH", path, {"metadata": {"labels": {"tier": "front"}}},
                            {"Content-Type": "application/merge-patch+json"})
        assert code == 200, body
        assert body["metadata"]["labels"] == {"app": name, "tier": "front"}
        assert body["spec"]["replicas"] == 3
        assert api("GET", path)[2]["spec"]["replicas"] == 3
        assert len(pods_of(lab, name)) == 3
        listed = api("GET", f"/api/v1/namespaces/default/pods?labelSelector=app%3D{name}")[2]["items"]
        assert sorted(p["metadata"]["name"] for p in listed) == sorted(p.name for p in pods_of(lab, name))
    finally:
        remove(lab, "deployment", name)


def test_delete_options_dry_run_and_a_uid_precondition_are_honoured(lab, api):
    name = unique_name("del")
    path = f"/api/v1/namespaces/default/services/{name}"
    try:
        code, _, created = api("POST", "/api/v1/namespaces/default/services", service(name))
        assert code == 201, created
        before = record(lab)
        code, _, body = api("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]})
        assert code == 200, body
        assert api("GET", path)[0] == 200 and record(lab) == before
        code, _, body = api("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                             "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}})
        assert code == 409 and is_status(body, 409, "Conflict"), (code, body)
        assert api("GET", path)[0] == 200 and record(lab) == before
        uid = api("GET", path)[2]["metadata"]["uid"]
        code, _, body = api("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                             "preconditions": {"uid": uid}})
        assert code == 200, body
        assert api("GET", path)[0] == 404
    finally:
        remove(lab, "service", name)


def test_a_create_without_a_namespace_in_the_path_is_405_and_makes_no_namespace(lab, api):
    """/api/v1/pods is the all-namespaces collection: it lists and watches; a create goes to
    /api/v1/namespaces/NS/pods (405 MethodNotAllowed)."""
    namespace, name = unique_name("nons"), unique_name("p")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
           "spec": {"containers": [{"name": "c", "image": PAUSE}]}}
    before = record(lab)
    try:
        code, _, body = api("POST", "/api/v1/pods", pod)
        assert code == 405 and is_status(body, 405), (code, body)
        assert api("GET", f"/api/v1/namespaces/{namespace}")[0] == 404
        assert namespace not in [n["metadata"]["name"] for n in api("GET", "/api/v1/namespaces")[2]["items"]]
        assert not [p for p in lab.state().pods if p.namespace == namespace]
        assert record(lab) == before
    finally:
        remove(lab, "pod", name, namespace)


def test_an_apply_to_a_nodes_short_name_is_404_and_leaves_the_node_alone(lab, api):
    """A node is named `<lab>-worker`; `worker` is no node's name (netlab's commands accept the
    short name, the API does not)."""
    real = f"/api/v1/nodes/{lab.name}-worker"
    _, _, node = api("GET", real)
    labels, taints = node["metadata"]["labels"], node["spec"].get("taints", [])
    assert labels["kubernetes.io/hostname"] == f"{lab.name}-worker"
    applied = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker", "labels": {"stolen": "yes"}},
               "spec": {"taints": [{"key": "stolen", "effect": "NoSchedule"}]}}
    before = record(lab)
    code, _, body = api("PATCH", "/api/v1/nodes/worker?fieldManager=test&force=true", json.dumps(applied),
                        {"Content-Type": "application/apply-patch+yaml"})
    assert code == 404 and is_status(body, 404, "NotFound"), (code, body)
    _, _, after = api("GET", real)
    assert after["metadata"]["labels"] == labels and after["spec"].get("taints", []) == taints
    state_node = next(n for n in lab.state().nodes if n.name == f"{lab.name}-worker")
    assert "stolen" not in state_node.labels and not [t for t in state_node.taints if t["key"] == "stolen"]
    assert record(lab) == before


# --- cordon: the node's unschedulable taint --------------------------------------------------------------

def node_status(kc, node):
    rows = [line.split() for line in kc("get", "nodes", "--no-headers").stdout.splitlines()]
    return next(r[1] for r in rows if r[0] == node)


def test_a_cordoned_node_gets_no_new_pods_until_uncordoned(lab, api, kc):
    worker = f"{lab.name}-worker"
    name = unique_name("crd")
    try:
        assert api("POST", "/apis/apps/v1/namespaces/default/deployments", deployment(name, 1))[0] == 201
        assert kc("cordon", worker).stdout.strip() == f"node/{worker} cordoned"
        assert node_status(kc, worker) == "Ready,SchedulingDisabled"
        first = {p.name for p in pods_of(lab, name)}
        kc("scale", "deployment", name, "--replicas", "4")
        added = [p for p in pods_of(lab, name) if p.name not in first]
        assert len(added) == 3
        assert [p.node for p in added] == [f"{lab.name}-worker2"] * 3        # the control plane is tainted too
        # the node lifecycle controller's taint is what the scheduler filters on
        node = api("GET", f"/api/v1/nodes/{worker}")[2]
        assert node["spec"].get("unschedulable") is True
        assert {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"} in \
            [{k: t[k] for k in ("key", "effect")} for t in node["spec"]["taints"]]
        assert kc("uncordon", worker).stdout.strip() == f"node/{worker} uncordoned"
        assert node_status(kc, worker) == "Ready"
        seen = {p.name for p in pods_of(lab, name)}
        kc("scale", "deployment", name, "--replicas", "8")
        assert worker in [p.node for p in pods_of(lab, name) if p.name not in seen]
    finally:
        kc("uncordon", worker, check=False)
        remove(lab, "deployment", name)


# --- watches and lists ---------------------------------------------------------------------------------

class Watch:
    """A watch read line by line in a thread: the events, in the order they came."""

    def __init__(self, lab, ctx, path):
        self.conn = http.client.HTTPSConnection("127.0.0.1", lab.state().api_port, context=ctx, timeout=TIMEOUT)
        self.conn.request("GET", path)
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()
        self.lines = queue.Queue()
        self.events = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        try:
            for line in self.response:
                if line.strip():
                    self.lines.put(json.loads(line))
        except (OSError, ValueError, http.client.HTTPException):
            pass
        self.lines.put(None)

    def until(self, done, timeout):
        """Read events until done(events) or the stream ends; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.events):
            try:
                event = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the watch sent only {summary(self.events)}") from None
            if event is None:
                return self.events
            self.events.append(event)
        return self.events

    def close(self):
        """End the stream under the reader (it sees the end of the stream), then the connection."""
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.reader.join(timeout=10)
        self.conn.close()


def summary(events):
    """(type, name, resourceVersion) of each event; a bookmark has no name."""
    return [(e["type"], e["object"].get("metadata", {}).get("name"), e["object"].get("metadata", {}).get(
        "resourceVersion")) for e in events]


def test_a_watch_with_bookmarks_loses_no_event_and_resuming_from_a_bookmark_sees_the_rest(lab, admin, api):
    """A BOOKMARK says "you have every change up to this resourceVersion": each comes after the
    events it covers, and a watch started from it sends exactly the changes the first watch
    sent after it (client-go's reflector resumes from the last bookmark)."""
    name = unique_name("wch")
    selector = f"labelSelector=app%3D{name}"
    try:
        assert api("POST", "/apis/apps/v1/namespaces/default/deployments", deployment(name, 1))[0] == 201
        first = {p.name for p in pods_of(lab, name)}
        listed = api("GET", f"/api/v1/namespaces/default/pods?{selector}")[2]
        assert [p["metadata"]["name"] for p in listed["items"]] == sorted(first)
        since = listed["metadata"]["resourceVersion"]
        watch = Watch(lab, admin, f"/api/v1/namespaces/default/pods?watch=1&{selector}&allowWatchBookmarks=true"
                                  f"&resourceVersion={since}&timeoutSeconds=60")
        try:
            code, _, body = api("PATCH", f"/apis/apps/v1/namespaces/default/deployments/{name}/scale",
                                {"spec": {"replicas": 4}}, {"Content-Type": "application/merge-patch+json"})
            assert code == 200, body
            added = {p.name for p in pods_of(lab, name)} - first
            assert len(added) == 3

            def complete(events):            # the three ADDED, and a bookmark after the last of them
                names = [e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"]
                return set(names) >= added and events[-1]["type"] == "BOOKMARK"
            events = watch.until(complete, timeout=30)
        finally:
            watch.close()
        assert not [e for e in events if e["type"] == "ERROR"], summary(events)
        adds = [e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"]
        assert sorted(adds) == sorted(added), summary(events)                   # each once, none lost
        changes = [e for e in events if e["type"] != "BOOKMARK"]
        bookmarks = [i for i, e in enumerate(events) if e["type"] == "BOOKMARK"]
        assert bookmarks
        for i in bookmarks:
            mark = int(events[i]["object"]["metadata"]["resourceVersion"])
            assert all(int(e["object"]["metadata"]["resourceVersion"]) <= mark for e in events[:i]), summary(events)
        # a watch from each bookmark sends what the first one sent after it, in the same order
        for i in bookmarks:
            after = summary([e for e in events[i + 1:] if e["type"] != "BOOKMARK"])
            if not after:
                continue
            mark = events[i]["object"]["metadata"]["resourceVersion"]
            resumed = Watch(lab, admin, f"/api/v1/namespaces/default/pods?watch=1&{selector}&resourceVersion={mark}"
                                        f"&timeoutSeconds=1")
            try:
                again = summary([e for e in resumed.until(lambda _: False, timeout=15) if e["type"] != "BOOKMARK"])
            finally:
                resumed.close()
            assert again[:len(after)] == after, (mark, summary(events), again)
        assert len(changes) >= 3
    finally:
        remove(lab, "deployment", name)


def test_a_continue_token_serves_the_next_page_of_the_same_list_and_expires_when_the_list_changed(lab, api):
    """Pages of one list share its resourceVersion and follow each other in key order. The
    server cannot serve an older revision than its own (etcd would, until compaction), so a
    token from before a change to the resource is 410 Expired and the client lists again."""
    everything = api("GET", "/api/v1/services")[2]
    keys = [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in everything["items"]]
    assert len(keys) >= 3
    code, _, page1 = api("GET", "/api/v1/services?limit=1")
    assert code == 200 and len(page1["items"]) == 1
    token, version = page1["metadata"]["continue"], page1["metadata"]["resourceVersion"]
    assert page1["metadata"]["remainingItemCount"] == len(keys) - 1
    code, _, page2 = api("GET", "/api/v1/services?" + urlencode({"limit": 1, "continue": token}))
    assert code == 200, page2
    assert page2["metadata"]["resourceVersion"] == version
    assert [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in page1["items"] + page2["items"]] == keys[:2]
    name = unique_name("pg")
    try:
        assert api("POST", "/api/v1/namespaces/default/services", service(name))[0] == 201
        stale = page2["metadata"]["continue"]
        code, _, body = api("GET", "/api/v1/services?" + urlencode({"limit": 1, "continue": stale}))
        assert code == 410 and is_status(body, 410, "Expired"), (code, body)
    finally:
        remove(lab, "service", name)


# --- netlab's commands and the API's bodies ----------------------------------------------------------------

def test_a_service_recreated_by_netlab_apply_shows_nothing_of_the_deleted_ones_body(lab, api, tmp_path):
    name = unique_name("svc")
    path = f"/api/v1/namespaces/default/services/{name}"
    try:
        code, _, created = api("POST", "/api/v1/namespaces/default/services",
                               service(name, annotations={"example.com/owner": "old"}))
        assert code == 201 and created["metadata"]["annotations"] == {"example.com/owner": "old"}, created
        lab.delete("service", "default", name)
        assert api("GET", path)[0] == 404
        manifest = tmp_path / "svc.yaml"
        manifest.write_text(json.dumps(service(name)))
        lab.apply([manifest])
        code, _, again = api("GET", path)
        assert code == 200, again
        assert "example.com/owner" not in (again["metadata"].get("annotations") or {}), again["metadata"]
    finally:
        remove(lab, "service", name)
