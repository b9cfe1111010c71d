"""Cluster DNS in a dual-stack lab, asked with the real `dig` from a pod: AAAA records of a
PreferDualStack Service and of a headless one's pods, `dig -x` of an IPv6 ClusterIP (dig makes
the ip6.arpa name), NODATA for the family a single-stack Service lacks, IPv6 pod names. Pods
reach CoreDNS at 10.96.0.10 over IPv4: kube-dns stays single-stack in kind's dual clusters."""

import ipaddress
import textwrap

import pytest

from .conftest import lab_for_module

LAB = textwrap.dedent("""\
    kind: Cluster
    apiVersion: kind.x-k8s.io/v1alpha4
    name: dnsd
    nodes:
      - role: control-plane
      - role: worker
    networking:
      ipFamily: dual
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
          containers:
            - name: netexec
              image: registry.k8s.io/e2e-test-images/agnhost:2.53
              args: ["netexec", "--http-port=8080"]
              ports: [{name: http, containerPort: 8080}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client}
    spec:
      containers:
        - {name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      ipFamilyPolicy: PreferDualStack
      selector: {app: web}
      ports: [{name: http, port: 80, targetPort: http}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web-headless}
    spec:
      clusterIP: None
      ipFamilyPolicy: PreferDualStack
      selector: {app: web}
      ports: [{name: http, port: 80, targetPort: http}]
    """)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    path = tmp_path_factory.mktemp("dualdns") / "dual-dns.yaml"
    path.write_text(LAB)
    with lab_for_module(path, tmp_path_factory) as lab:
        yield lab


def dig(lab, *args):
    return lab.exec("client", ["dig", "+time=2", "+tries=1", *args], capture_output=True, text=True).stdout


def section(out, name):
    """The records of one section of dig's answer, each split into its fields."""
    lines = out.split(f";; {name} SECTION:\n", 1)[1].split("\n\n", 1)[0] if f";; {name} SECTION:" in out else ""
    return [line.split() for line in lines.splitlines()]


def short(lab, *args):
    return sorted(dig(lab, "+short", *args).split())


def web(lab):
    return lab.state().service("default", "web")


def test_the_pod_asks_kube_dns_over_ipv4(lab):
    out = dig(lab, "AAAA", "web.default.svc.cluster.local")
    assert ";; SERVER: 10.96.0.10#53(10.96.0.10)" in out.replace(" (UDP)", "")


def test_aaaa_of_a_dual_stack_service_is_its_ipv6_cluster_ip(lab):
    v4, v6 = web(lab).cluster_ip_of("IPv4"), web(lab).cluster_ip_of("IPv6")
    assert v6 is not None and ipaddress.ip_address(v6) in ipaddress.ip_network("fd00:10:96::/112")
    assert short(lab, "AAAA", "web.default.svc.cluster.local") == [v6]
    assert short(lab, "A", "web.default.svc.cluster.local") == [v4]
    assert short(lab, "+search", "AAAA", "web") == [v6]


def test_dig_x_of_the_ipv6_cluster_ip(lab):
    v6 = web(lab).cluster_ip_of("IPv6")
    out = dig(lab, "-x", v6)
    nibbles = ".".join(reversed(ipaddress.ip_address(v6).exploded.replace(":", ""))) + ".ip6.arpa."
    assert section(out, "ANSWER") == [[nibbles, "30", "IN", "PTR", "web.default.svc.cluster.local."]]
    assert short(lab, "-x", v6) == ["web.default.svc.cluster.local."]


def test_aaaa_of_a_single_stack_ipv4_service_is_nodata_with_the_soa(lab):
    out = dig(lab, "AAAA", "kubernetes.default.svc.cluster.local")
    assert "status: NOERROR" in out and "ANSWER: 0," in out and section(out, "ANSWER") == []
    ((*owner, serial, refresh, retry, expire, minimum),) = section(out, "AUTHORITY")
    assert owner == ["cluster.local.", "30", "IN", "SOA", "ns.dns.cluster.local.", "hostmaster.cluster.local."]
    assert (refresh, retry, expire, minimum) == ("7200", "1800", "86400", "30")


def test_headless_aaaa_and_the_pods_dashed_names(lab):
    pods = sorted((p for p in lab.state().pods if p.owner == "Deployment/web"), key=lambda p: p.ip6)
    assert all(p.ip6 for p in pods)
    assert short(lab, "AAAA", "web-headless.default.svc.cluster.local") == sorted(p.ip6 for p in pods)
    pod = pods[0]
    dashed = pod.ip6.replace(":", "-")
    assert short(lab, "AAAA", f"{dashed}.web-headless.default.svc.cluster.local") == [pod.ip6]
    # one PTR per Service the pod is an endpoint of (CoreDNS's reverse.go): web and web-headless
    assert sorted(short(lab, "-x", pod.ip6)) == [f"{dashed}.web-headless.default.svc.cluster.local.",
                                                 f"{dashed}.web.default.svc.cluster.local."]
    assert short(lab, "AAAA", f"{dashed}.default.pod.cluster.local") == [pod.ip6]
