"""Dual-stack Services through the real kubectl (/usr/bin/kubectl) against a live dual-stack
lab's kube-apiserver, and a request an IPv4 lab refuses.

Expected values are the API server's: initIPFamilyFields' defaulting (PreferDualStack takes both
families in the cluster's order, ipFamilies [IPv6] alone takes the IPv6 range), each ClusterIP
from its family's service range (kind's fd00:10:96::/112 beside 10.96.0.0/12), the
EndpointSlice controller's one slice per address type holding the pods' addresses of that
family (status.podIPs), and the 422 Status of a field error, with its message and cause."""

import ipaddress
import json
import subprocess

import pytest

from .conftest import lab_for_module, wait_for

KUBECTL = "/usr/bin/kubectl"
TIMEOUT = 60
V4_NET, V6_NET = ipaddress.ip_network("10.96.0.0/12"), ipaddress.ip_network("fd00:10:96::/112")
POD6_NET = ipaddress.ip_network("fd00:10:244::/56")

DUAL_LAB = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: dsapi
networking: {ipFamily: dual}
nodes: [{role: control-plane}, {role: worker}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers: [{name: netexec, ports: [{containerPort: 8080}]}]
"""
IPV4_LAB = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: v4api
nodes: [{role: control-plane}]
"""
SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: both}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: six}
spec:
  ipFamilies: [IPv6]
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    f = tmp_path_factory.mktemp("dual") / "dual.yaml"
    f.write_text(DUAL_LAB)
    with lab_for_module(f, tmp_path_factory) as lab:
        yield lab


def kubectl_for(lab, tmp_path):
    """kubectl against this lab only: its own kubeconfig (a temp file) and discovery cache."""
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
def kc(lab, tmp_path):
    return kubectl_for(lab, tmp_path)


# An IPv4 lab first, while the module's dual lab is not up yet: one lab at a time.

def test_require_dual_stack_on_an_ipv4_lab_is_refused_with_422(make_lab, tmp_path):
    f = tmp_path / "v4.yaml"
    f.write_text(IPV4_LAB)
    lab = make_lab(f)
    try:
        kc = kubectl_for(lab, tmp_path)
        body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dual"},
                "spec": {"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}}
        out = kc("create", "-f", "-", stdin=json.dumps(body), check=False)
        assert out.returncode == 1
        assert out.stderr.strip() == ('The Service "dual" is invalid: spec.ipFamilyPolicy: Invalid value: '
                                      '"RequireDualStack": this cluster is not configured for dual-stack services')
        logged = kc("create", "-f", "-", "-v=6", stdin=json.dumps(body), check=False).stderr
        assert "422 Unprocessable Entity" in logged                    # the API server's status code
        # An IPv4 lab serves its Services as it always did.
        svc = json.loads(kc("get", "svc", "kubernetes", "-o", "json").stdout)["spec"]
        assert (svc["clusterIPs"], svc["ipFamilies"], svc["ipFamilyPolicy"]) == (["10.96.0.1"], ["IPv4"], "SingleStack")
    finally:
        lab.down()


def test_kubectl_apply_of_dual_stack_services(lab, kc):
    kc("apply", "-f", "-", stdin=SERVICES)
    try:
        items = {s["metadata"]["name"]: s["spec"] for s in json.loads(kc("get", "svc", "-o", "json").stdout)["items"]}
        both, six = items["both"], items["six"]
        assert (both["ipFamilyPolicy"], both["ipFamilies"]) == ("PreferDualStack", ["IPv4", "IPv6"])
        v4, v6 = both["clusterIPs"]
        assert both["clusterIP"] == v4 and ipaddress.ip_address(v4) in V4_NET and ipaddress.ip_address(v6) in V6_NET
        assert (six["ipFamilyPolicy"], six["ipFamilies"]) == ("SingleStack", ["IPv6"])
        assert len(six["clusterIPs"]) == 1 and six["clusterIP"] == six["clusterIPs"][0]
        assert ipaddress.ip_address(six["clusterIP"]) in V6_NET
        # kube-dns stays single-stack IPv4 at kubeadm's address, default/kubernetes single-stack IPv4.
        dns = json.loads(kc("get", "svc", "-n", "kube-system", "kube-dns", "-o", "json").stdout)["spec"]
        assert (dns["clusterIPs"], dns["ipFamilies"], dns["ipFamilyPolicy"]) == (["10.96.0.10"], ["IPv4"], "SingleStack")
        assert items["kubernetes"]["ipFamilies"] == ["IPv4"]

        # kubectl get svc: CLUSTER-IP is the primary (printService: clusterIPs[0]).
        rows = {line.split()[0]: line.split() for line in kc("get", "svc", "--no-headers").stdout.splitlines()}
        assert rows["both"][2] == v4 and rows["six"][2] == six["clusterIP"]

        pod = json.loads(kc("get", "pod", "web", "-o", "json").stdout)["status"]
        pod_v4, pod_v6 = (p["ip"] for p in pod["podIPs"])
        assert ipaddress.ip_address(pod_v6) in POD6_NET

        def slices():
            out = json.loads(kc("get", "endpointslices", "-o", "json").stdout)["items"]
            return {(s["metadata"]["labels"]["kubernetes.io/service-name"], s["addressType"]):
                    [a for e in s["endpoints"] or [] for a in e["addresses"]] for s in out}
        def synced():
            s = slices()
            return s if s.get(("six", "IPv6")) and s.get(("both", "IPv6")) else None
        got = wait_for(synced, what="the slices of both families")
        assert got[("both", "IPv4")] == [pod_v4] and got[("both", "IPv6")] == [pod_v6]
        assert got[("six", "IPv6")] == [pod_v6] and ("six", "IPv4") not in got
        table = kc("get", "endpointslices", "-l", "kubernetes.io/service-name=both").stdout
        types = sorted(line.split()[1] for line in table.splitlines()[1:])
        assert types == ["IPv4", "IPv6"]
    finally:
        kc("delete", "-f", "-", "--ignore-not-found", "--wait=false", stdin=SERVICES, check=False)


def test_a_single_stack_service_with_two_families_is_refused_with_422(lab, kc):
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
            "spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4", "IPv6"], "ports": [{"port": 80}]}}
    out = kc("create", "-f", "-", stdin=json.dumps(body), check=False)
    assert out.returncode == 1
    assert out.stderr.strip() == ('The Service "bad" is invalid: spec.ipFamilyPolicy: Invalid value: "SingleStack": '
                                  "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are "
                                  "specified")
    assert kc("get", "svc", "bad", check=False).returncode == 1          # nothing was stored
