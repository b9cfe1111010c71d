"""NetworkPolicies and labelled Namespaces on a live two-node lab, through the real kubectl
(/usr/bin/kubectl), raw API requests and netlab's own CLI; read back from kubectl's output, the
API's answers and the lab's record.

Expected values are Kubernetes' own: kubectl's messages, the server's Table columns for
NetworkPolicies (printers.go: NAME, POD-SELECTOR, AGE), the API server's defaults (policyTypes,
a port's protocol) and field errors (networking/validation), SetDefaults_Namespace's
kubernetes.io/metadata.name, the ReplicaSet controller releasing a pod relabelled out of its
selector.
"""

import http.client
import json
import ssl
import subprocess
import sys
import textwrap

import pytest
import yaml

from netlab.api import pki

from .conftest import lab_for_module, wait_for

KUBECTL = "/usr/bin/kubectl"
TIMEOUT = 60

TOPOLOGY = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: npol
nodes: [{role: control-plane}, {role: worker}]
---
apiVersion: v1
kind: Namespace
metadata: {name: labelled, labels: {team: a}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: netexec, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: lone, namespace: solo, labels: {app: lone}}
spec:
  containers: [{name: netexec}]
"""

ALLOW_WEB = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-web}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from:
        - podSelector: {matchLabels: {app: client}}
        - namespaceSelector: {matchLabels: {team: a}}
      ports: [{port: 8080}]
  egress:
    - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.96.0.0/12]}}]
      ports: [{protocol: UDP, port: 53}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    topology = tmp_path_factory.mktemp("topology") / "npol.yaml"
    topology.write_text(TOPOLOGY)
    with lab_for_module(topology, tmp_path_factory) as lab:
        yield lab


@pytest.fixture
def kc(lab, tmp_path):
    """kubectl against this lab only: its own kubeconfig and discovery cache, in tmp_path."""
    config = tmp_path / "kubeconfig"
    config.write_text(lab.kubeconfig())
    config.chmod(0o600)

    def run(*args, check=True, stdin=None):
        out = subprocess.run([KUBECTL, "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache"), *args],
                             capture_output=True, text=True, timeout=TIMEOUT, input=stdin)
        if check:
            assert out.returncode == 0, f"kubectl {' '.join(args)}: exit {out.returncode}: {out.stderr}"
        return out
    return run


@pytest.fixture
def api(lab):
    """api(method, path, body, content_type) -> (status, parsed JSON), as the lab's admin."""
    p = pki.paths(lab.store.dir)
    ctx = ssl.create_default_context(cafile=str(p.ca_crt))
    ctx.load_cert_chain(p.admin_crt, p.admin_key)

    def call(method, path, body=None, content_type="application/json"):
        conn = http.client.HTTPSConnection("127.0.0.1", lab.state().api_port, context=ctx, timeout=TIMEOUT)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Content-Type": content_type} if body is not None else {})
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        finally:
            conn.close()
    return call


def netlab(lab, *args):
    return subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", lab.name, *args], capture_output=True,
                          text=True, timeout=TIMEOUT)


def table(text):
    """kubectl's columns (left-aligned, three spaces apart) -> (header, rows)."""
    lines = [line for line in text.splitlines() if line.strip()]
    starts = [i for i in range(len(lines[0])) if lines[0][i] != " " and (i == 0 or lines[0][i - 1] == " ")]
    cut = lambda line: [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]   # noqa: E731
    return cut(lines[0]), [cut(line) for line in lines[1:]]


def policies(lab):
    return {p.key: p for p in lab.state().network_policies}


# --- kubectl: apply, get, describe, delete ------------------------------------------------------------

def test_kubectl_applies_gets_describes_and_deletes_a_policy(lab, kc, tmp_path):
    manifest = tmp_path / "allow-web.yaml"
    manifest.write_text(ALLOW_WEB)
    try:
        assert kc("apply", "-f", str(manifest)).stdout.strip() == "networkpolicy.networking.k8s.io/allow-web created"
        stored = policies(lab)["default/allow-web"]
        assert stored.policy_types == ("Ingress", "Egress")
        # Applied again as written (every port's protocol given: the rule lists are atomic, so a
        # default the server filled in would make kubectl's three-way patch replace them).
        manifest.write_text(ALLOW_WEB.replace("{port: 8080}", "{port: 8080, protocol: TCP}"))
        kc("apply", "-f", str(manifest))
        assert kc("apply", "-f", str(manifest)).stdout.strip() == "networkpolicy.networking.k8s.io/allow-web unchanged"

        header, rows = table(kc("get", "netpol", "-A").stdout)
        assert header == ["NAMESPACE", "NAME", "POD-SELECTOR", "AGE"]
        assert [r[:3] for r in rows] == [["default", "allow-web", "app=web"]]

        obj = yaml.safe_load(kc("get", "netpol", "allow-web", "-o", "yaml").stdout)
        assert obj["spec"]["policyTypes"] == ["Ingress", "Egress"]          # the API server's defaulting
        assert obj["spec"]["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
        assert obj["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}}]

        described = kc("describe", "netpol", "allow-web")
        assert described.stderr == ""
        lines = [line.strip() for line in described.stdout.splitlines()]
        assert "Name:         allow-web" in lines and "Namespace:    default" in lines
        assert "PodSelector:     app=web" in lines
        assert "Policy Types: Ingress, Egress" in lines

        assert kc("delete", "netpol", "allow-web").stdout.strip() == \
            'networkpolicy.networking.k8s.io "allow-web" deleted'
        assert "default/allow-web" not in policies(lab)
        gone = kc("get", "netpol", "allow-web", check=False)
        assert gone.returncode == 1
        assert gone.stderr.strip() == \
            'Error from server (NotFound): networkpolicies.networking.k8s.io "allow-web" not found'
    finally:
        kc("delete", "-f", str(manifest), "--ignore-not-found", check=False)


def test_netlab_get_netpol_prints_the_table_kubectl_prints(lab, kc, tmp_path):
    manifest = tmp_path / "deny.yaml"
    manifest.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, "
                        "namespace: solo}\nspec: {podSelector: {}}\n")
    try:
        kc("apply", "-f", str(manifest))
        for args in (["netpol", "-A"], ["networkpolicies", "-n", "solo"]):
            ours, theirs = netlab(lab, "get", *args), kc("get", *args)
            assert ours.returncode == 0, ours.stderr
            (h1, r1), (h2, r2) = table(ours.stdout), table(theirs.stdout)
            assert h1 == h2
            assert [r[:-1] for r in r1] == [r[:-1] for r in r2]        # AGE aside
        assert table(kc("get", "netpol", "-n", "solo").stdout)[1][0][:2] == ["deny-all", "<none>"]
    finally:
        kc("delete", "-f", str(manifest), "--ignore-not-found", check=False)


# --- invalid policies: 422, nothing stored ----------------------------------------------------------

def test_kubectl_apply_of_an_invalid_policy_is_refused_with_the_field_and_nothing_is_stored(lab, kc, tmp_path):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(ALLOW_WEB.replace("allow-web", "bad").replace("[{port: 8080}]",
                                                                      "[{port: 8080, endPort: 8000}]"))
    revision = lab.state().revision
    out = kc("apply", "-f", str(manifest), check=False)
    assert out.returncode == 1
    assert out.stderr.strip() == ('The NetworkPolicy "bad" is invalid: spec.ingress[0].ports[0].endPort: '
                                  'Invalid value: 8000: must be greater than or equal to `port`')
    assert "default/bad" not in policies(lab) and lab.state().revision == revision
    assert kc("get", "netpol", "bad", check=False).returncode == 1


@pytest.mark.parametrize("ports, peers, field, reason, message", [
    ([{"protocol": "ICMP"}], None, "spec.ingress[0].ports[0].protocol", "FieldValueNotSupported",
     'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'),
    ([{"endPort": 90}], None, "spec.ingress[0].ports[0].endPort", "FieldValueInvalid",
     "Invalid value: 90: may not be specified when `port` is not specified"),
    ([{"port": "http", "endPort": 90}], None, "spec.ingress[0].ports[0].endPort", "FieldValueInvalid",
     "Invalid value: 90: may not be specified when `port` is non-numeric"),
    (None, [{"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}], "spec.ingress[0].from[0]",
     "FieldValueForbidden", "Forbidden: may not specify both ipBlock and another peer"),
    (None, [{"ipBlock": {"cidr": "10.0.0.300/8"}}], "spec.ingress[0].from[0].ipBlock.cidr", "FieldValueInvalid",
     'Invalid value: "10.0.0.300/8": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)'),
], ids=["unknown protocol", "endPort without port", "named port with endPort", "ipBlock with a selector",
        "bad CIDR"])
def test_a_posted_invalid_policy_is_422_invalid_with_a_cause_naming_the_field(lab, api, ports, peers, field, reason,
                                                                               message):
    rule = {**({"ports": ports} if ports else {}), **({"from": peers} if peers else {})}
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "bad"},
            "spec": {"podSelector": {}, "ingress": [rule]}}
    code, status = api("POST", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies", body)
    assert code == 422
    assert status == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": f'NetworkPolicy.networking.k8s.io "bad" is invalid: {field}: {message}',
                      "reason": "Invalid",
                      "details": {"name": "bad", "group": "networking.k8s.io", "kind": "NetworkPolicy",
                                  "causes": [{"reason": reason, "message": message, "field": field}]},
                      "code": 422}
    assert "default/bad" not in policies(lab)


# --- netlab apply -f and delete -----------------------------------------------------------------------

def test_netlab_applies_and_deletes_a_policy_and_refuses_a_file_with_an_invalid_one_whole(lab, kc, tmp_path):
    good = tmp_path / "policy.yaml"
    good.write_text(ALLOW_WEB)
    bad = tmp_path / "mixed.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: never}\nspec: {containers: [{name: c}]}\n---\n"
                   + ALLOW_WEB.replace("allow-web", "never").replace("{ipBlock: {cidr: 10.0.0.0/8, except: "
                                                                     "[10.96.0.0/12]}}", "{ipBlock: {cidr: 10.0.0.0/8},"
                                                                     " podSelector: {}}"))
    try:
        out = netlab(lab, "apply", "-f", str(good))
        assert out.returncode == 0, out.stderr
        assert policies(lab)["default/allow-web"].ingress[0].ports[0].port == 8080
        assert table(kc("get", "netpol").stdout)[1][0][:2] == ["allow-web", "app=web"]

        revision = lab.state().revision
        refused = netlab(lab, "apply", "-f", str(bad))
        assert refused.returncode != 0
        assert refused.stderr.strip() == (f"netlab: {bad}: NetworkPolicy default/never: spec.egress[0].to[0]: "
                                          "Forbidden: may not specify both ipBlock and another peer")
        state = lab.state()
        assert state.revision == revision and "default/never" not in policies(lab)
        assert not [p for p in state.pods if p.name == "never"]        # nothing of the file was applied

        out = netlab(lab, "delete", "netpol/allow-web")
        assert out.returncode == 0, out.stderr
        assert "default/allow-web" not in policies(lab)
        assert netlab(lab, "apply", "-f", str(good)).returncode == 0
        out = netlab(lab, "delete", "-f", str(good))
        assert out.returncode == 0, out.stderr
        assert "default/allow-web" not in policies(lab)
    finally:
        kc("delete", "-f", str(good), "-f", str(bad), "--ignore-not-found", check=False)


# --- namespaces' labels -------------------------------------------------------------------------------

def ns_labels(kc, name):
    return json.loads(kc("get", "namespace", name, "-o", "jsonpath={.metadata.labels}").stdout)


def test_the_lab_files_namespace_has_its_labels_and_the_api_servers_name_label(lab, kc):
    assert ns_labels(kc, "labelled") == {"team": "a", "kubernetes.io/metadata.name": "labelled"}
    assert lab.state().namespaces["labelled"]["labels"] == {"team": "a"}


def test_kubectl_label_of_a_namespace_only_objects_name_changes_the_state(lab, kc):
    assert "solo" not in lab.state().namespaces                      # named by its pod alone
    try:
        assert kc("label", "namespace", "solo", "team=b").stdout.strip() == "namespace/solo labeled"
        assert lab.state().namespaces["solo"]["labels"] == {"team": "b"}
        assert ns_labels(kc, "solo") == {"team": "b", "kubernetes.io/metadata.name": "solo"}
    finally:
        kc("label", "namespace", "solo", "team-", check=False)
    assert lab.state().namespaces["solo"]["labels"] == {}


def test_the_namespace_name_label_stays_the_name_whatever_a_request_writes(lab, kc, api):
    # SetDefaults_Namespace sets kubernetes.io/metadata.name to the name on every write: another
    # value, or removing it, is overwritten (the request succeeds, as on a real cluster).
    out = kc("label", "namespace", "labelled", "kubernetes.io/metadata.name=other", "--overwrite")
    assert out.stdout.strip() == "namespace/labelled labeled"
    assert ns_labels(kc, "labelled")["kubernetes.io/metadata.name"] == "labelled"
    kc("label", "namespace", "labelled", "kubernetes.io/metadata.name-")
    assert ns_labels(kc, "labelled")["kubernetes.io/metadata.name"] == "labelled"
    code, body = api("PATCH", "/api/v1/namespaces/labelled",
                     {"metadata": {"labels": {"kubernetes.io/metadata.name": "x", "team": "c"}}},
                     "application/merge-patch+json")
    assert code == 200 and body["metadata"]["labels"] == {"team": "c", "kubernetes.io/metadata.name": "labelled"}
    assert lab.state().namespaces["labelled"]["labels"] == {"team": "c"}
    api("PATCH", "/api/v1/namespaces/labelled", {"metadata": {"labels": {"team": "a"}}}, "application/merge-patch+json")


def test_kubectl_apply_and_replace_of_a_namespace_with_labels(lab, kc, tmp_path):
    manifest = tmp_path / "ns.yaml"
    manifest.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: applied, labels: {team: d}}\n")
    try:
        assert kc("apply", "-f", str(manifest)).stdout.strip() == "namespace/applied created"
        assert lab.state().namespaces["applied"]["labels"] == {"team": "d"}
        current = yaml.safe_load(kc("get", "namespace", "applied", "-o", "yaml").stdout)
        current["metadata"]["labels"] = {"team": "e", "tier": "x"}
        kc("replace", "-f", "-", stdin=yaml.safe_dump(current))
        assert lab.state().namespaces["applied"]["labels"] == {"team": "e", "tier": "x"}
        kc("apply", "-n", "applied", "-f", "-", stdin=ALLOW_WEB)
        assert "applied/allow-web" in policies(lab)
    finally:
        kc("delete", "-f", str(manifest), "--ignore-not-found", check=False)
    assert "applied" not in lab.state().namespaces
    assert "applied/allow-web" not in policies(lab)                   # a namespace's objects go with it


def test_server_side_apply_creates_and_changes_a_policy(lab, kc, tmp_path):
    manifest = tmp_path / "ssa.yaml"
    manifest.write_text(ALLOW_WEB.replace("allow-web", "ssa"))
    try:
        assert kc("apply", "--server-side", "-f", str(manifest)).stdout.strip() == \
            "networkpolicy.networking.k8s.io/ssa serverside-applied"
        manifest.write_text(ALLOW_WEB.replace("allow-web", "ssa").replace("app: web", "app: api"))
        kc("apply", "--server-side", "-f", str(manifest))
        assert policies(lab)["default/ssa"].pod_selector.match_labels == {"app": "api"}
        managed = yaml.safe_load(kc("get", "netpol", "ssa", "-o", "yaml", "--show-managed-fields").stdout)
        assert {(m["manager"], m["operation"]) for m in managed["metadata"]["managedFields"]} == {("kubectl", "Apply")}
    finally:
        kc("delete", "-f", str(manifest), "--ignore-not-found", check=False)


# --- pods' labels -----------------------------------------------------------------------------------

def web_pods(lab):
    return sorted((p for p in lab.state().pods if p.owner == "Deployment/web"), key=lambda p: p.name)


def test_kubectl_label_pod_changes_its_labels_and_the_endpoints_follow(lab, kc):
    pod = web_pods(lab)[0]
    try:
        out = kc("label", "pod", pod.name, "tier=front")
        assert out.stdout.strip() == f"pod/{pod.name} labeled"
        after = lab.state().pod("default", pod.name)
        assert after.labels["tier"] == "front" and after.owner == "Deployment/web"   # still the ReplicaSet's
    finally:
        kc("label", "pod", pod.name, "tier-", check=False)
    assert "tier" not in lab.state().pod("default", pod.name).labels


def test_a_pod_relabelled_out_of_its_replicaset_keeps_running_and_is_replaced(lab, kc):
    pod = web_pods(lab)[0]
    try:
        kc("label", "pod", pod.name, "app=debug", "--overwrite")
        after = lab.state().pod("default", pod.name)
        assert after.labels["app"] == "debug" and after.owner is None
        refs = kc("get", "pod", pod.name, "-o", "jsonpath={.metadata.ownerReferences}").stdout
        assert refs == ""                                                  # released by the ReplicaSet
        assert kc("get", "pod", pod.name, "-o", "jsonpath={.status.phase}").stdout == "Running"
        wait_for(lambda: len(web_pods(lab)) == 2 and pod.name not in {p.name for p in web_pods(lab)},
                 what="a replacement web pod")
        endpoints = kc("get", "endpoints", "web", "-o", "jsonpath={.subsets[*].addresses[*].ip}").stdout.split()
        assert after.ip not in endpoints and sorted(endpoints) == sorted(p.ip for p in web_pods(lab))
    finally:
        kc("delete", "pod", pod.name, "--ignore-not-found", check=False)


def test_kubectl_label_of_a_lone_pod_changes_its_labels(lab, kc):
    out = kc("label", "pod", "lone", "-n", "solo", "role=db")
    assert out.stdout.strip() == "pod/lone labeled"
    assert lab.state().pod("solo", "lone").labels == {"app": "lone", "role": "db"}
    kc("label", "pod", "lone", "-n", "solo", "role-")
    assert lab.state().pod("solo", "lone").labels == {"app": "lone"}


def test_the_describer_reads_a_policy_with_every_peer_and_port_kind(lab, kc, tmp_path):
    manifest = tmp_path / "every.yaml"
    manifest.write_text(textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: every, namespace: labelled}
        spec:
          podSelector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}
          policyTypes: [Egress]
          egress:
            - to:
                - podSelector: {matchLabels: {app: db}}
                  namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}
                - ipBlock: {cidr: 192.168.0.0/16}
              ports: [{port: http}, {protocol: UDP, port: 5000, endPort: 5010}, {protocol: SCTP}]
        """))
    try:
        kc("apply", "-f", str(manifest))
        described = kc("describe", "netpol", "every", "-n", "labelled")
        assert described.stderr == ""
        lines = [line.strip() for line in described.stdout.splitlines()]
        assert "PodSelector:     app in (api,web)" in lines
        assert "Policy Types: Egress" in lines
        assert table(kc("get", "netpol", "-n", "labelled").stdout)[1][0][:2] == ["every", "app in (api,web)"]
    finally:
        kc("delete", "-f", str(manifest), "--ignore-not-found", check=False)
