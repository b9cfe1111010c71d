"""kube-apiserver's front door on a live lab (topologies/default.yaml): authentication as the real
server decides it, where it listens, bad input answered with a Status and nothing changed, a
hypothesis fuzz, and twenty clients writing at once.

Requests are made with Python's ssl and http.client, so every byte is the test's own. "Nothing
changed" is read from the lab's record (the store's revision: one more for every save that
changes a key, as etcd's) and from the kernel (every node's rules, the network namespaces).
"""

import base64
import datetime
import hashlib
import http.client
import json
import random
import re
import socket
import ssl
import string
import subprocess
import threading
import time
from contextlib import contextmanager
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlab.api import pki

from .conftest import TOPOLOGIES, lab_for_module, wait_for

TIMEOUT = 15                                   # seconds for one request
PUBLIC = ("/version", "/healthz", "/livez", "/readyz")
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_for_module(TOPOLOGIES / "default.yaml", tmp_path_factory) as lab:
        yield lab


@pytest.fixture(scope="module")
def tls(lab, tmp_path_factory):
    """Client TLS contexts that trust the lab's CA: anonymous, and with certificates of our making."""
    p = pki.paths(lab.store.dir)
    folder = tmp_path_factory.mktemp("certs")

    def context(pair=None, maximum=None):
        ctx = ssl.create_default_context(cafile=str(p.ca_crt))
        if maximum is not None:
            ctx.maximum_version = maximum
        if pair is not None:
            name = hashlib.sha256(pair[0]).hexdigest()[:12]
            (folder / f"{name}.crt").write_bytes(pair[0])
            (folder / f"{name}.key").write_bytes(pair[1])
            ctx.load_cert_chain(folder / f"{name}.crt", folder / f"{name}.key")
        return ctx
    context.pki = p
    context.admin = ssl.create_default_context(cafile=str(p.ca_crt))
    context.admin.load_cert_chain(p.admin_crt, p.admin_key)
    return context


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


def request(lab, ctx, method, path, body=None, headers=None, timeout=TIMEOUT, host="127.0.0.1", port=None):
    conn = http.client.HTTPSConnection(host, port or lab.state().api_port, context=ctx, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, dict(r.getheaders()), r.read())
    finally:
        conn.close()


def assert_status(response, code, reason=None):
    """A Status object, as every API error is: kind, apiVersion, status Failure, the code."""
    assert response.status == code, response
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    status = response.json()
    assert (status["kind"], status["apiVersion"], status["status"], status["code"]) == ("Status", "v1", "Failure", code)
    if reason is not None:
        assert status["reason"] == reason, status
    return status


def rules_of(lab, node):
    """The node's rules as iptables-save prints them, without its comments (they carry the time)."""
    return [line for line in lab.iptables(node).splitlines() if not line.startswith("#")]


def snapshot(lab):
    """What a refused request must leave as it was: the store's revision, every node's rules and
    the lab's network namespaces."""
    state = lab.state()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {"revision": state.revision,
            "rules": {n.name: rules_of(lab, n.name) for n in state.nodes},
            "netns": sorted(line.split()[0] for line in netns.splitlines() if line.startswith(lab.name + "-"))}


@contextmanager
def nothing_changes(lab):
    before = snapshot(lab)
    yield
    after = snapshot(lab)
    assert after["revision"] == before["revision"], "the lab's record changed"
    assert after["netns"] == before["netns"]
    for node, rules in before["rules"].items():
        assert after["rules"][node] == rules, f"{node}'s rules changed"


def still_serving(lab, tls):
    r = request(lab, tls.admin, "GET", "/api/v1/namespaces/default/pods")
    assert r.status == 200, r
    assert r.json()["kind"] == "PodList" and r.json()["items"]


def now():
    return datetime.datetime.now(datetime.timezone.utc)


# --- authentication ------------------------------------------------------------------------------------

def test_without_a_client_certificate_only_the_public_info_paths_answer(lab, tls):
    anonymous = tls()
    with nothing_changes(lab):
        status = assert_status(request(lab, anonymous, "GET", "/api/v1/pods"), 403, "Forbidden")
        assert status["message"] == ('pods is forbidden: User "system:anonymous" cannot list resource "pods" in API '
                                     'group "" at the cluster scope')
        status = assert_status(request(lab, anonymous, "GET", "/apis/apps/v1/namespaces/default/deployments/web"), 403)
        assert status["message"] == ('deployments.apps "web" is forbidden: User "system:anonymous" cannot get resource '
                                     '"deployments" in API group "apps" in the namespace "default"')
        body = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "anon"}})
        assert_status(request(lab, anonymous, "POST", "/api/v1/namespaces", body, {"Content-Type": "application/json"}),
                      403, "Forbidden")
        version = request(lab, anonymous, "GET", "/version")
        assert version.status == 200 and re.fullmatch(r"v1\.\d+\.\d+", version.json()["gitVersion"])
        for path in ("/healthz", "/livez", "/readyz"):
            r = request(lab, anonymous, "GET", path)
            assert (r.status, r.body) == (200, b"ok"), path


def test_a_certificate_of_the_labs_ca_outside_system_masters_is_authenticated_but_forbidden(lab, tls):
    eve = tls(pki.issue_client(tls.pki, "eve", ["developers"]))
    with nothing_changes(lab):
        status = assert_status(request(lab, eve, "GET", "/api/v1/namespaces/default/pods"), 403, "Forbidden")
        assert status["message"] == ('pods is forbidden: User "eve" cannot list resource "pods" in API group "" in '
                                     'the namespace "default"')
        assert request(lab, eve, "GET", "/version").status == 200


def test_a_certificate_from_another_ca_is_refused_in_the_tls_handshake(lab, tls):
    """kube-apiserver would answer 401 after the handshake; Python's ssl verifies the issuer in
    the handshake and offers no way around it (pki.server_context), so the connection fails
    instead: the documented limitation. Either way nothing is read and nothing changes."""
    forged = pki.issue_client(tls.pki, "kubernetes-admin", ["system:masters"], ca=pki.new_ca())
    body = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "forged"}})
    with nothing_changes(lab):
        ctx = tls(forged, maximum=ssl.TLSVersion.TLSv1_2)
        with socket.create_connection(("127.0.0.1", lab.state().api_port), timeout=TIMEOUT) as raw:
            with pytest.raises(ssl.SSLError):                                        # TLS 1.2: in the handshake
                ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        with pytest.raises(OSError):                      # TLS 1.3: the server's alert arrives on the first read
            request(lab, tls(forged), "POST", "/api/v1/namespaces", body, {"Content-Type": "application/json"})
        still_serving(lab, tls)
    assert "forged" not in [n["metadata"]["name"] for n in
                            request(lab, tls.admin, "GET", "/api/v1/namespaces").json()["items"]]


@pytest.mark.parametrize("window", ["expired", "not yet valid"])
def test_a_certificate_of_the_labs_ca_outside_its_validity_is_unauthorized(lab, tls, window):
    day = datetime.timedelta(days=1)
    start, end = (now() - 10 * day, now() - day) if window == "expired" else (now() + day, now() + 10 * day)
    ctx = tls(pki.issue_client(tls.pki, "kubernetes-admin", ["system:masters"], not_before=start, not_after=end))
    body = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "expired"}})
    with nothing_changes(lab):
        assert_status(request(lab, ctx, "GET", "/api/v1/pods"), 401, "Unauthorized")
        assert_status(request(lab, ctx, "POST", "/api/v1/namespaces", body, {"Content-Type": "application/json"}),
                      401, "Unauthorized")
        # authentication fails before authorization: not even the public paths
        assert_status(request(lab, ctx, "GET", "/version"), 401, "Unauthorized")


def forged_token():
    """A service-account token's shape (JWT), signed by nobody the lab knows."""
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()   # noqa: E731
    claims = {"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:kube-system:admin",
              "aud": ["https://kubernetes.default.svc.cluster.local"], "exp": int(time.time()) + 3600}
    return f"{enc({'alg': 'RS256', 'kid': 'forged'})}.{enc(claims)}.{base64.urlsafe_b64encode(b'x' * 256).decode()}"


def test_a_forged_bearer_token_is_unauthorized(lab, tls):
    anonymous = tls()
    auth = {"Authorization": f"Bearer {forged_token()}"}
    body = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "token"}})
    with nothing_changes(lab):
        assert_status(request(lab, anonymous, "GET", "/api/v1/pods", headers=auth), 401, "Unauthorized")
        assert_status(request(lab, anonymous, "POST", "/api/v1/namespaces", body,
                              {**auth, "Content-Type": "application/json"}), 401, "Unauthorized")
        assert_status(request(lab, anonymous, "GET", "/version", headers=auth), 401, "Unauthorized")


# --- where it listens ------------------------------------------------------------------------------------

def listening(netns=None):
    argv = ["ss", "-ltnH"] if netns is None else ["ip", "netns", "exec", netns, "ss", "-ltnH"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if line.strip()]


def test_the_loopback_listener_is_bound_to_127_0_0_1_only(lab, tls):
    port = lab.state().api_port
    mine = [a for a in listening() if a.rsplit(":", 1)[1] == str(port)]
    assert mine == [f"127.0.0.1:{port}"]
    assert not [a for a in listening() if a.endswith(":6443")]      # the host has no 6443 of the lab's


def test_inside_the_control_plane_it_listens_on_the_node_address_port_6443(lab, tls):
    control_plane = next(n for n in lab.state().nodes if n.role == "control-plane")
    address = subprocess.run(["ip", "-n", control_plane.netns, "-o", "-4", "addr", "show", "dev", "eth0"],
                             capture_output=True, text=True, check=True).stdout.split()[3].split("/")[0]
    assert f"{address}:6443" in listening(control_plane.netns)
    assert not [a for a in listening(control_plane.netns) if a in ("0.0.0.0:6443", "*:6443")]
    # and it is the API server there: from the node, with the lab's CA and the admin's certificate
    p = tls.pki
    out = lab.exec(control_plane.name, ["curl", "-s", "--cacert", str(p.ca_crt), "--cert", str(p.admin_crt),
                                        "--key", str(p.admin_key), "-m", "5", f"https://{address}:6443/api/v1/nodes"],
                   capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert [n["metadata"]["name"] for n in json.loads(out.stdout)["items"]] == [n.name for n in lab.state().nodes]


# --- bad input ----------------------------------------------------------------------------------------

def deployment(name, replicas):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}}


JSON = {"Content-Type": "application/json"}
BAD = {
    "malformed JSON": ("POST", "/api/v1/namespaces/default/services", b'{"apiVersion": "v1", "kind": ', JSON, 400),
    "malformed YAML": ("POST", "/api/v1/namespaces/default/services", b"kind: Service\nmetadata: {name: [bad\n",
                       {"Content-Type": "application/yaml"}, 400),
    "not an object": ("POST", "/api/v1/namespaces/default/services", b'["a", "list"]', JSON, 400),
    "unknown kind": ("POST", "/api/v1/namespaces/default/services",
                     json.dumps({"apiVersion": "v1", "kind": "Frobnicator", "metadata": {"name": "frob"}}).encode(),
                     JSON, 400),
    "unknown resource": ("GET", "/api/v1/frobnicators", None, {}, 404),
    "unknown group": ("POST", "/apis/example.com/v1/namespaces/default/widgets",
                      json.dumps({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}).encode(),
                      JSON, 404),
    "unknown version": ("GET", "/apis/apps/v9/namespaces/default/deployments", None, {}, 404),
    "unknown core version": ("GET", "/api/v2/pods", None, {}, 404),
    "unknown includeObject": ("GET", "/api/v1/namespaces/default/pods?includeObject=bogus", None,
                              {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}, 400),
    "bad label selector": ("GET", "/api/v1/pods?labelSelector=app%20in%20(web", None, {}, 400),
    "bad field selector": ("GET", "/api/v1/pods?fieldSelector=spec.frobnicated%3Dx", None, {}, 400),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_status_and_changes_nothing(lab, tls, case):
    method, path, body, headers, code = BAD[case]
    with nothing_changes(lab):
        status = assert_status(request(lab, tls.admin, method, path, body, headers), code)
        if case == "unknown kind":
            assert "Frobnicator" in status["message"]
        still_serving(lab, tls)


def test_a_watch_from_a_version_older_than_the_history_gets_one_error_event_410(lab, tls):
    """As the watch cache answers (cacher.go: "once we have ... successfully parsed a resource
    version, other errors must fail with a watch event of type ERROR"): 200, then one ERROR
    event carrying a 410 Expired Status, which is what makes a client re-list."""
    with nothing_changes(lab):
        r = request(lab, tls.admin, "GET", "/api/v1/namespaces/default/pods?watch=true&resourceVersion=1&"
                                           "timeoutSeconds=5")
        assert r.status == 200, r
        events = [json.loads(line) for line in r.body.splitlines() if line.strip()]
        assert [e["type"] for e in events] == ["ERROR"], events
        status = events[0]["object"]
        assert (status["kind"], status["status"], status["code"], status["reason"]) == ("Status", "Failure", 410,
                                                                                        "Expired")
        assert status["message"].startswith("too old resource version: 1 (")


def test_an_invalid_deployment_is_unprocessable_naming_the_field(lab, tls):
    with nothing_changes(lab):
        status = assert_status(request(lab, tls.admin, "POST", "/apis/apps/v1/namespaces/default/deployments",
                                       json.dumps(deployment("bad", -1)), JSON), 422, "Invalid")
        assert status["message"] == ('Deployment.apps "bad" is invalid: spec.replicas: Invalid value: -1: must be '
                                     'greater than or equal to 0')
        assert status["details"]["name"] == "bad" and status["details"]["kind"] == "Deployment"
        assert [c["field"] for c in status["details"]["causes"]] == ["spec.replicas"]
        assert request(lab, tls.admin, "GET", "/apis/apps/v1/namespaces/default/deployments/bad").status == 404
        still_serving(lab, tls)


def test_unknown_fields_are_refused_under_strict_validation_and_warned_of_by_default(lab, tls):
    """kube-apiserver's field validation: kubectl sends fieldValidation=Strict and a typo is a 400
    naming every unknown field; without the parameter the server's default is Warn: the object
    is created and a 299 Warning header names the field."""
    typo = deployment("typo", 1)
    typo["spec"]["replica"] = 2
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with nothing_changes(lab):
        status = assert_status(request(lab, tls.admin, "POST", "/apis/apps/v1/namespaces/default/deployments"
                                                               "?fieldValidation=Strict", json.dumps(typo), JSON),
                               400, "BadRequest")
        # in the order the decoder meets them in the body (replica was added last)
        assert status["message"] == ('Deployment in version "v1" cannot be handled as a Deployment: strict decoding '
                                     'error: unknown field "spec.template.spec.containers[0].imagePullPolicyy", '
                                     'unknown field "spec.replica"')
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "warned"},
           "spec": {"selector": {"app": "warned"}, "ports": [{"port": 80, "targetPortt": 8080}]}}
    created = request(lab, tls.admin, "POST", "/api/v1/namespaces/default/services", json.dumps(svc), JSON)
    try:
        assert created.status == 201, created
        assert created.headers.get("Warning") == '299 - "unknown field \\"spec.ports[0].targetPortt\\""'
    finally:
        assert request(lab, tls.admin, "DELETE", "/api/v1/namespaces/default/services/warned").status == 200


def test_a_body_over_3_mib_is_too_large(lab, tls):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "huge", "annotations": {"a": "x" * (3 * MiB)}},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    with nothing_changes(lab):
        assert_status(request(lab, tls.admin, "POST", "/api/v1/namespaces/default/services", json.dumps(svc), JSON),
                      413, "RequestEntityTooLarge")
        still_serving(lab, tls)


def test_a_slow_client_holding_connections_open_does_not_stop_others(lab, tls):
    port = lab.state().api_port
    slow = []
    with nothing_changes(lab):
        try:
            for partial in (b"GET /api/v1/pods HTTP/1.1\r\nHost: 127.0.0.1\r\n",            # headers never end
                            b"POST /api/v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                            b"\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\": "):               # a body never ends
                s = tls.admin.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT),
                                          server_hostname="127.0.0.1")
                s.sendall(partial)
                slow.append(s)
            for _ in range(3):
                started = time.monotonic()
                still_serving(lab, tls)
                assert time.monotonic() - started < 5
        finally:
            for s in slow:
                s.close()
        still_serving(lab, tls)


# --- the fuzz -----------------------------------------------------------------------------------------------

# Names of objects that exist: a write may never name one (the fuzz must change nothing; a
# write that names nothing that exists is refused whatever its body, except server-side apply).
EXISTING = {"web", "client", "kubernetes", "web-nodeport", "kube-dns", "coredns", "kube-proxy", "kube-flannel-ds",
            "kube-flannel-cfg", "default", "kube-system", "kube-public", "kube-node-lease", "kube-flannel", "nginx"}
RESOURCES = [("", "v1", "pods", True), ("", "v1", "services", True), ("", "v1", "endpoints", True),
             ("", "v1", "events", True), ("", "v1", "configmaps", True), ("", "v1", "nodes", False),
             ("", "v1", "namespaces", False), ("", "v1", "secrets", True), ("apps", "v1", "deployments", True),
             ("apps", "v1", "replicasets", True), ("apps", "v1", "daemonsets", True),
             ("discovery.k8s.io", "v1", "endpointslices", True), ("networking.k8s.io", "v1", "ingresses", True),
             ("networking.k8s.io", "v1", "ingressclasses", False), ("example.com", "v1", "widgets", True)]
SUBRESOURCES = ["status", "scale", "log", "exec", "attach", "portforward", "proxy", "eviction", "binding", "finalize"]
OTHER_PATHS = ["/", "/api", "/apis", "/api/v1", "/apis/apps", "/apis/apps/v1", "/apis/discovery.k8s.io/v1",
               "/apis/nope", "/apis/apps/v2", "/openapi/v2", "/openapi/v3", "/openapi/v3/api/v1",
               "/openapi/v3/apis/apps/v1", "/openapi/v3/apis/nope/v1", "/version", "/version/", "/healthz",
               "/healthz/etcd", "/livez/ping", "/readyz/x", "/metrics", "/logs", "/.well-known/openid-configuration"]
QUERY_KEYS = ["watch", "labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "timeoutSeconds",
              "includeObject", "dryRun", "fieldManager", "force", "fieldValidation", "pretty", "command", "container",
              "follow", "tailLines", "limitBytes", "allowWatchBookmarks", "propagationPolicy", "gracePeriodSeconds",
              "resourceVersionMatch", "sinceSeconds", "timestamps", "previous", "stdin", "stdout", "tty"]
QUERY_VALUES = ["true", "false", "1", "0", "-1", "", "All", "Strict", "Warn", "Object", "None", "Metadata", "app=web",
                "app in (web", "app notin (a,b),!x", "metadata.name=web", "spec.nodeName!=x", "status.phase=Running",
                "nope=1", "a,,b", "99999999999999999999", "=", "!", "NotOlderThan", "Exact", "Foreground", "main",
                "eyJydiI6IDEsICJzdGFydCI6IFsiIiwgIiJdfQ==", "not-base64!", "bogus"]
BODY_KEYS = ["apiVersion", "kind", "metadata", "spec", "status", "labels", "annotations", "replicas", "selector",
             "matchLabels", "ports", "port", "targetPort", "protocol", "template", "containers", "items", "op", "path",
             "value", "from", "$patch", "$setElementOrder/ports", "$retainKeys", "resourceVersion", "uid", "x"]
CONTENT_TYPES = ["application/json", "application/yaml", "application/merge-patch+json",
                 "application/strategic-merge-patch+json", "application/json-patch+json", "text/plain",
                 "application/vnd.kubernetes.protobuf", "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                 ""]
ACCEPTS = ["application/json", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
           "application/json;as=Table;v=v1beta1;g=meta.k8s.io", "*/*",
           "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
           "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList", "application/yaml",
           "application/vnd.kubernetes.protobuf", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
           "text/html", ""]
# Server-side apply (application/apply-patch+yaml) creates what it names when that does not
# exist (a namespace needs nothing else), so a fuzz that must change nothing leaves it to the
# tests of apply (test_api_kubectl.py); every other write needs an object that exists.

junk = st.text(string.ascii_letters + string.digits + "-._~:@!$&'()*+,;=% ", min_size=1, max_size=12)
free_name = (st.sampled_from(["fz", "x" * 300, "UPPER", "a..b", "-lead", ".", ".."]) | junk).filter(
    lambda s: s not in EXISTING)
json_value = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                          | st.text(max_size=20),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                              st.sampled_from(BODY_KEYS) | st.text(max_size=8), inner, max_size=4),
                          max_leaves=12)


KINDS = [("v1", "Pod"), ("v1", "Service"), ("v1", "Namespace"), ("v1", "Node"), ("v1", "ConfigMap"),
         ("v1", "Endpoints"), ("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"), ("apps/v1", "DaemonSet"),
         ("networking.k8s.io/v1", "Ingress"), ("discovery.k8s.io/v1", "EndpointSlice"), ("autoscaling/v1", "Scale"),
         ("v1", "Frobnicator"), ("apps/v9", "Deployment"), ("", "")]


KIND_OF = {"pods": ("v1", "Pod"), "services": ("v1", "Service"), "endpoints": ("v1", "Endpoints"),
           "events": ("v1", "Event"), "configmaps": ("v1", "ConfigMap"), "nodes": ("v1", "Node"),
           "namespaces": ("v1", "Namespace"), "secrets": ("v1", "Secret"), "deployments": ("apps/v1", "Deployment"),
           "replicasets": ("apps/v1", "ReplicaSet"), "daemonsets": ("apps/v1", "DaemonSet"),
           "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice"), "ingresses": ("networking.k8s.io/v1", "Ingress"),
           "ingressclasses": ("networking.k8s.io/v1", "IngressClass"), "widgets": ("example.com/v1", "Widget")}


@st.composite
def object_like(draw, plural=None):
    """A body shaped like an object (apiVersion, kind, metadata, spec), mostly of the kind the
    path names, with anything inside."""
    kinds = st.sampled_from(KINDS)
    if plural in KIND_OF:
        kinds = st.sampled_from([KIND_OF[plural]] * 6) | kinds
    api_version, kind = draw(kinds)
    obj = {"apiVersion": api_version, "kind": kind} if kind else {}
    meta = draw(st.fixed_dictionaries({}, optional={
        "name": free_name, "namespace": st.sampled_from(["default", "kube-system"]) | free_name,
        "labels": st.dictionaries(junk, junk | st.integers(), max_size=3), "resourceVersion": st.sampled_from(
            ["1", "0", "x", ""]), "annotations": st.dictionaries(junk, json_value, max_size=2)}))
    obj["metadata"] = meta if draw(st.integers(0, 5)) else draw(json_value)
    spec = st.fixed_dictionaries({}, optional={
        "replicas": st.integers(-3, 3) | json_value,
        "selector": st.fixed_dictionaries({"matchLabels": st.dictionaries(junk, junk, max_size=2)}) | json_value,
        "ports": st.lists(st.fixed_dictionaries({}, optional={"port": st.integers(-1, 70000) | json_value,
                                                             "targetPort": st.integers(0, 70000) | junk,
                                                             "protocol": st.sampled_from(["TCP", "UDP", "SCTP", "x"]),
                                                             "name": junk}), max_size=3),
        "type": st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName", "x"]),
        "template": json_value, "containers": json_value})
    obj["spec"] = draw(spec | json_value)
    return obj


@st.composite
def api_path(draw, write):
    """A resource path as kubectl builds them (and some that are not): a group and version, a
    namespace, a resource, a name, a subresource; or a discovery, OpenAPI or health path; or junk.
    -> (path, the resource's plural or None)."""
    shape = draw(st.sampled_from(["resource"] * 6 + ["other", "junk"]))
    if shape == "other":
        return draw(st.sampled_from(OTHER_PATHS)), None
    if shape == "junk":
        return "/" + "/".join(quote(p, safe="") for p in draw(st.lists(junk, max_size=6))), None
    group, version, plural, namespaced = draw(st.sampled_from(RESOURCES))
    version = draw(st.sampled_from([version] * 8 + ["v1beta1", "v2"]))
    parts = ["api", version] if not group else ["apis", group, version]
    if namespaced and draw(st.integers(0, 3)):
        parts += ["namespaces", draw(st.sampled_from(["default"] * 6 + ["kube-system"]) | free_name)]
    parts.append(plural)
    if draw(st.integers(0, 3)):
        names = free_name if write else (st.sampled_from(sorted(EXISTING)) | free_name)
        parts.append(draw(names))
        if draw(st.integers(0, 2)) == 0:
            parts.append(draw(st.sampled_from(SUBRESOURCES) | junk))
    return "/" + "/".join(quote(p, safe="") for p in parts), plural


@st.composite
def api_requests(draw):
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))
    path, plural = draw(api_path(method != "GET"))
    create = method == "POST" and draw(st.integers(0, 2)) == 0
    if create:                                     # kubectl create's request: a collection, a JSON object of its kind
        group, version, plural, namespaced = draw(st.sampled_from(RESOURCES))
        path = ("/api/v1" if not group else f"/apis/{group}/{version}") + \
            ("/namespaces/default" if namespaced else "") + f"/{plural}"
    query = draw(st.dictionaries(st.sampled_from(QUERY_KEYS) | st.text(string.ascii_letters, max_size=6),
                                 st.sampled_from(QUERY_VALUES) | st.text(max_size=10), max_size=4))
    if query.get("watch", "").lower() in ("true", "1") or query.get("follow", "").lower() in ("true", "1"):
        query["timeoutSeconds"] = "1"              # a watch the server would hold for 30 minutes ends now
    headers = {"Accept": draw(st.sampled_from(ACCEPTS))}
    body = None
    if method in ("POST", "PUT", "PATCH"):
        headers["Content-Type"] = "application/json" if create else draw(st.sampled_from(CONTENT_TYPES))
        shaped = create or draw(st.booleans())
        if shaped:
            obj = draw(object_like(plural))
            if method == "POST" and isinstance(obj.get("metadata"), dict) and "name" in obj["metadata"]:
                query["dryRun"] = "All"            # validated all the way, and stored nowhere
            body = json.dumps(obj).encode()
        else:
            body = draw(st.one_of(json_value.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64),
                                  st.text(max_size=64).map(str.encode)))
    return method, path + ("?" + urlencode(query) if query else ""), body, headers


def test_a_fuzz_of_paths_queries_and_bodies_gets_no_500_and_a_status_for_every_error(lab, tls):
    answers = []           # what was asked and answered; a write that got through must still change nothing

    @settings(max_examples=150, deadline=None, database=None)
    @given(api_requests())
    def one(req):
        method, path, body, headers = req
        # the follow of a log and a watch are given timeoutSeconds=1; a client's timeout is a hang
        r = request(lab, tls.admin, method, path, body, headers, timeout=TIMEOUT)
        answers.append((method, path, r.status))
        assert r.status < 500, (method, path, headers, body, r)
        if r.status >= 300:
            assert_status(r, r.status)

    with nothing_changes(lab):
        one()
        still_serving(lab, tls)
    assert {200, 400, 404} <= {status for _, _, status in answers}    # it reached past the first refusal


# --- concurrency ---------------------------------------------------------------------------------------------

BUSY_SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "busy"},
                "spec": {"selector": {"app": "busy"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def busy_deployment(replicas):
    d = deployment("busy", replicas)
    d["spec"]["template"]["spec"]["containers"] = [{"name": "netexec", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                                                    "args": ["netexec", "--http-port=8080"],
                                                    "ports": [{"containerPort": 8080}]}]
    return d


def svc_chain(service_port, protocol="tcp"):
    """kube-proxy's KUBE-SVC chain name: base32(sha256(namespace/name:port + protocol))[:16]."""
    return "KUBE-SVC-" + base64.b32encode(hashlib.sha256((service_port + protocol).encode()).digest()).decode()[:16]


def sep_jumps(lab, node, chain):
    return [line for line in lab.iptables(node, "nat").splitlines()
            if line.startswith(f"-A {chain} ") and re.search(r"-j KUBE-SEP-[A-Z2-7]{16}$", line)]


class Writers:
    """Twenty clients at one Deployment and its Service: each kind of write a real client makes,
    with what each successful one did, and every answer that was neither a success nor a 409."""

    DEPLOYMENT = "/apis/apps/v1/namespaces/default/deployments/busy"
    SERVICE = "/api/v1/namespaces/default/services/busy"
    TRIES = 40

    def __init__(self, lab, ctx):
        self.lab, self.ctx = lab, ctx
        self.lock = threading.Lock()
        self.labels = {"deployment": [], "service": []}   # (label) each successful update added
        self.applied = []                                  # labels each server-side apply set
        self.scales = []                                   # (resourceVersion, replicas) of each scale
        self.unexpected = []
        self.conflicts = 0
        self.gave_up = []

    def call(self, method, path, body=None, ctype="application/json"):
        r = request(self.lab, self.ctx, method, path, None if body is None else json.dumps(body),
                    {"Content-Type": ctype}, timeout=120)
        if r.status == 409:
            with self.lock:
                self.conflicts += 1
        elif r.status >= 300:
            with self.lock:
                self.unexpected.append((method, path, r))
        return r

    def update_label(self, what, label):
        """GET, add a label, PUT with the resourceVersion read; again on 409."""
        path = self.DEPLOYMENT if what == "deployment" else self.SERVICE
        for _ in range(self.TRIES):
            obj = self.call("GET", path).json()
            obj["metadata"].setdefault("labels", {})[label] = "1"
            r = self.call("PUT", path, obj)
            if r.status == 200:
                with self.lock:
                    self.labels[what].append(label)
                return
            if r.status != 409:
                return
        self.gave_up.append(("PUT", what, label))

    def scale(self, replicas, with_version):
        """The scale subresource: a merge patch (no precondition), or GET + PUT of the Scale with
        its resourceVersion (again on 409)."""
        path = self.DEPLOYMENT + "/scale"
        for _ in range(self.TRIES):
            if with_version:
                scale = self.call("GET", path).json()
                scale["spec"]["replicas"] = replicas
                r = self.call("PUT", path, scale)
            else:
                r = self.call("PATCH", path, {"spec": {"replicas": replicas}}, "application/merge-patch+json")
            if r.status == 200:
                with self.lock:
                    self.scales.append((int(r.json()["metadata"]["resourceVersion"]), replicas))
                return
            if r.status != 409:
                return
        self.gave_up.append(("scale", replicas))

    def apply(self, manager, labels):
        """Server-side apply of the labels this manager owns (all of them, each time: an apply
        config that leaves a field out gives it up)."""
        body = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "busy", "labels": {k: "1" for k in labels}}}
        r = self.call("PATCH", self.DEPLOYMENT + f"?fieldManager={manager}&force=true", body,
                      "application/apply-patch+yaml")
        if r.status == 200:
            with self.lock:
                self.applied.append(labels[-1])


def test_twenty_clients_writing_at_once_lose_nothing_and_the_lab_converges(lab, tls):
    admin = tls.admin
    created = [request(lab, admin, "POST", "/apis/apps/v1/namespaces/default/deployments",
                       json.dumps(busy_deployment(2)), JSON),
               request(lab, admin, "POST", "/api/v1/namespaces/default/services", json.dumps(BUSY_SERVICE), JSON)]
    assert [r.status for r in created] == [201, 201], created
    w = Writers(lab, admin)
    rng = random.Random(13)
    jobs = []
    for i in range(6):
        jobs.append(lambda i=i: [w.update_label("deployment", f"d{i}-{k}") for k in range(2)])
        jobs.append(lambda i=i: [w.update_label("service", f"s{i}-{k}") for k in range(2)])
    for i in range(3):
        jobs.append(lambda r=[rng.randint(1, 5) for _ in range(2)]: [w.scale(n, with_version=False) for n in r])
        jobs.append(lambda r=[rng.randint(1, 5) for _ in range(2)]: [w.scale(n, with_version=True) for n in r])
    for i in range(2):
        jobs.append(lambda i=i: [w.apply(f"applier-{i}", [f"a{i}-{j}" for j in range(k + 1)]) for k in range(2)])
    assert len(jobs) == 20
    threads = [threading.Thread(target=job) for job in jobs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a client hung"
        assert w.unexpected == [], w.unexpected                  # 409 for a stale write; nothing else fails
        assert w.gave_up == [], f"{len(w.gave_up)} writes never got through ({w.conflicts} conflicts)"
        final = request(lab, admin, "GET", Writers.DEPLOYMENT).json()
        service = request(lab, admin, "GET", Writers.SERVICE).json()
        # An update that succeeded carried every earlier one (its resourceVersion was the latest),
        # so every label added is there; the last scale, by resourceVersion, is the replicas.
        assert set(w.labels["deployment"]) <= set(final["metadata"]["labels"]), final["metadata"]["labels"]
        assert len(w.labels["deployment"]) == 12 and len(w.labels["service"]) == 12
        assert set(w.labels["service"]) <= set(service["metadata"]["labels"]), service["metadata"]["labels"]
        assert {f"a{i}-{j}" for i in range(2) for j in range(2)} <= set(final["metadata"]["labels"])
        # a scale to the replicas the Deployment has changes nothing (no new resourceVersion);
        # one resourceVersion is one Deployment, so one replicas
        by_version = {}
        for version, n in w.scales:
            by_version.setdefault(version, set()).add(n)
        assert all(len(n) == 1 for n in by_version.values()), f"one resourceVersion, two replicas: {w.scales}"
        replicas = max(w.scales)[1]
        assert final["spec"]["replicas"] == replicas
        assert service["spec"]["clusterIP"] == created[1].json()["spec"]["clusterIP"]
        chain = svc_chain("default/busy:http")

        def converged():
            d = request(lab, admin, "GET", Writers.DEPLOYMENT).json()
            pods = request(lab, admin, "GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dbusy").json()
            running = [p for p in pods["items"] if p["status"].get("phase") == "Running"]
            return (d["status"].get("readyReplicas", 0) == replicas and len(running) == replicas
                    and all(len(sep_jumps(lab, n.name, chain)) == replicas for n in lab.state().nodes))
        wait_for(converged, timeout=60, every=0.2, what=f"{replicas} busy pods, in every node's {chain}")
    finally:
        for t in threads:
            t.join(timeout=300)
        request(lab, admin, "DELETE", Writers.DEPLOYMENT)
        request(lab, admin, "DELETE", Writers.SERVICE)
