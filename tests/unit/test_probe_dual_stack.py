"""`netlab probe` in a dual-stack lab, without a lab: the checks each area plans in each family
(their names, families and the addresses they send to), on a state the spec and controllers
build from a dual-stack lab file, against a prober that records every call and answers as
the kernel would (an echo from the address pinged, agnhost's /hostname and /clientip). An
IPv4 lab's checks carry no family and no tag.

Expected addresses are written out from kind's and Kubernetes' numbering (podCIDRs
fd00:10:244:N::/64, the first pod ::2, the LAN's ULA /64 with the IPv4 host part), never
taken from netlab's output."""

import json
import random
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from netlab.api import spec
from netlab.controllers import cluster
from netlab.observe import probes

LAB = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: pd
nodes: [{role: control-plane}, {role: worker}, {role: worker}]
networking: {ipFamily: %s}
---
apiVersion: netlab.io/v1alpha1
kind: Lab
dns: {replicas: 0}
---
apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: web}}
spec:
  nodeName: pd-worker
  containers: [{name: c, ports: [{containerPort: 8080}, {containerPort: 8081, protocol: UDP}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: web}}
spec:
  nodeName: pd-worker2
  containers: [{name: c, ports: [{containerPort: 8080}, {containerPort: 8081, protocol: UDP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: both}
spec:
  ipFamilyPolicy: %s
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: four}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def lab_state(tmp_path, dual=True):
    f = tmp_path / "lab.yaml"
    f.write_text(LAB % (("dual", "PreferDualStack") if dual else ("ipv4", "SingleStack")))
    return cluster.new_state(spec.load(f), random.Random(1))


class Recorder:
    """A Prober that keeps every call and answers as the lab's kernel would, from the state:
    a ping is echoed by the address pinged, agnhost answers /hostname with the pod's name and
    /clientip with the client's address as Go writes it ([ip6]:port), a ClusterIP by its
    first backend. Anything else gets no answer."""

    def __init__(self, state):
        self.calls, self.lab = [], None
        self.pods = {ip: p for p in state.pods for ip in p.ips}
        self.services = {ip: s for s in state.services for ip in s.cluster_ips or (s.cluster_ip,)}
        self.state = state

    def start(self, *targets):
        pass

    def _source(self, src, dst):
        six = ":" in dst
        pod = next((p for p in self.state.pods if p.key == src), None)
        if pod is not None:
            return pod.ip6 if six else pod.ip
        node = self.state.find_node(src)
        return (node.ip6 if six else node.ip) if node else None

    def ping(self, src, dst, size=84, df=False, **kw):
        self.calls.append(("ping", src, dst, size))
        return {"ok": True, "src": dst}

    def http(self, src, dst, port, path="/hostname", **kw):
        self.calls.append(("http", src, dst, port, path))
        pod = self.pods.get(dst)
        svc = self.services.get(dst)
        if svc is not None and svc.selector:
            pod = next(p for p in self.state.pods if all(p.labels.get(k) == v for k, v in svc.selector.items()))
        if pod is None:
            return {"ok": False, "error": "TimeoutError: timed out"}
        me = self._source(src, dst)
        body = pod.name if path == "/hostname" else (f"[{me}]:40000" if ":" in me else f"{me}:40000")
        return {"ok": True, "status": 200, "body": body}

    def udp(self, src, dst, port, message="hostname", **kw):
        self.calls.append(("udp", src, dst, port))
        pod = self.pods.get(dst)
        return {"ok": True, "body": pod.name} if pod else {"ok": False, "error": "TimeoutError: timed out"}

    def knock(self, src, dst, port, proto="tcp", **kw):
        self.calls.append(("knock", src, dst, port))
        return {"ok": False, "reply": "none"}

    def dns(self, src, server, name, qtype="A", tcp=False, **kw):
        self.calls.append(("dns", src, server, name, qtype))
        return {"ok": True, "rcode": "NOERROR", "answers": []}

    def mtu(self, src, dst, size):
        self.calls.append(("mtu", src, dst, size))
        return {"ok": False, "refused": "EMSGSIZE", "mtu": size - 1}

    def connect(self, connections, timeout=None):
        return [(True, "connected") for _ in connections]

    @contextmanager
    def capture(self, target, iface=None, bpf=None, vxlan_port=None):
        self.calls.append(("capture", target, iface, bpf))
        yield type("Capture", (), {"packets": []})()


class FakeLab:
    def __init__(self, state, directory):
        self._state, self.store = state, SimpleNamespace(dir=directory)   # the API server's CA is under it
        self.recorder = Recorder(state)
        self.recorder.lab = self

    def state(self):
        return self._state

    @contextmanager
    def prober(self):
        yield self.recorder


AREAS = ("pods-across-nodes", "pod-matrix", "node-to-pod", "pod-to-node", "overlay", "egress", "services", "dns")


def test_the_ipv6_view_shows_every_objects_ipv6_side(tmp_path):
    state = lab_state(tmp_path)
    view = probes.family_view(state, "IPv6")
    assert probes.family_view(state, "IPv4") is state
    a = next(p for p in view.pods if p.name == "a")
    assert (a.ip, a.node) == ("fd00:10:244:1::2", "pd-worker")       # worker: the second /64, its first pod
    worker = view.node("pd-worker")
    assert (worker.ip, worker.pod_cidr) == ("fc00:f853:ccd:e793::3", "fd00:10:244:1::/64")
    both, four = view.service("default", "both"), view.service("default", "four")
    assert both.cluster_ip.startswith("fd00:10:96::") and four.cluster_ip is None
    assert sorted(a.ip for s in view.endpoints_of(both).subsets for a in s.addresses) == [
        "fd00:10:244:1::2", "fd00:10:244:2::2"]
    assert probes._outside(view) == "fc00:f853:ccd:e793::fffe"        # 172.18.255.254's twin
    # The lab's own state is left as it was.
    assert next(p for p in state.pods if p.name == "a").ip == "10.244.1.2"


def test_a_dual_stack_lab_runs_every_area_in_each_family(tmp_path):
    state = lab_state(tmp_path)
    lab = FakeLab(state, tmp_path)
    checks = probes.suite(lab, AREAS)
    assert {c.family for c in checks} == {"IPv4", "IPv6"}
    assert all(c.name.endswith(f" [{c.family}]") for c in checks)
    assert all(json.loads(json.dumps(c.as_json()))["family"] == c.family for c in checks)
    for area in AREAS:
        assert {c.family for c in checks if c.area == area} == {"IPv4", "IPv6"}, area
    # Each area's IPv4 checks come before its IPv6 ones.
    order = [(probes.AREAS.index(c.area), c.family) for c in checks]
    assert order == sorted(order)

    by_name = {c.name: c for c in checks}
    six = [c for c in checks if c.family == "IPv6"]
    assert by_name["icmp default/a -> default/b [IPv6]"].expected == "echo reply from fd00:10:244:2::2"
    assert by_name["tcp default/a -> default/b [IPv6]"].ok        # /clientip's [fd00:10:244:1::2]:port
    assert by_name["tcp default/a -> default/b [IPv4]"].expected == "served, client seen as 10.244.1.2 (no NAT)"
    assert by_name["tcp default/a -> default/b [IPv6]"].expected == \
        "served, client seen as fd00:10:244:1::2 (no NAT)"
    # flannel-v6.1: the underlay's MTU - 70; a bigger packet is refused with a Packet Too Big.
    overlay = [c for c in six if c.area == "overlay"]
    assert [c.name.split(" DF ")[0] for c in overlay[1:]] == ["mtu 1430", "mtu 1431"]
    assert overlay[2].expected == "refused: packet too big, mtu 1430"
    assert overlay[0].expected == ("fc00:f853:ccd:e793::3 -> fc00:f853:ccd:e793::4 udp/8472 vni 1 "
                                   "[fd00:10:244:1::2 -> fd00:10:244:2::2]")
    assert [c.name.split(" DF ")[0] for c in checks if c.area == "overlay" and c.family == "IPv4"][1:] == [
        "mtu 1450", "mtu 1451"]
    # Egress: ICMPv6 to the external client's IPv6 address, seen as the node's.
    egress = next(c for c in six if c.area == "egress")
    assert egress.name == "icmp default/a -> external fc00:f853:ccd:e793::fffe [IPv6]"
    assert egress.expected == "reply; seen outside as node fc00:f853:ccd:e793::3"
    assert ("capture", "external", "eth0", "icmp6") in lab.recorder.calls
    # kube-proxy's healthz on each node's IPv6 address.
    assert {c[2] for c in lab.recorder.calls if c[0] == "http" and c[3] == 10256} == {
        "172.18.0.2", "172.18.0.3", "172.18.0.4", "fc00:f853:ccd:e793::2", "fc00:f853:ccd:e793::3",
        "fc00:f853:ccd:e793::4"}


def test_services_are_checked_in_the_families_they_have(tmp_path):
    state = lab_state(tmp_path)
    lab = FakeLab(state, tmp_path)
    checks = probes.suite(lab, ["services"])
    both = state.service("default", "both")
    v6 = both.cluster_ip_of("IPv6")
    src = "default/a"
    by_name = {c.name: c for c in checks}
    cip = by_name[f"default/both:http/TCP cluster IP from {src} [IPv6]"]
    assert cip.ok and not cip.skipped
    assert "ip6tables-save -t nat" in cip.hint
    assert ("http", src, v6, 80, "/hostname") in lab.recorder.calls
    # A single-stack IPv4 Service is there in IPv6, skipped, saying why.
    four = by_name[f"default/four:http/TCP cluster IP from {src} [IPv6]"]
    assert four.skipped.startswith("it is single-stack IPv4")
    assert by_name[f"default/four:http/TCP cluster IP from {src} [IPv4]"].ok
    # By name: planned in both families (skipped here: no CoreDNS pod runs).
    for family in ("IPv4", "IPv6"):
        by = by_name[f"default/both:http/TCP by name both.default.svc.cluster.local. [{family}]"]
        assert by.skipped == "kube-system/kube-dns has no ready endpoint"


def test_nftables_hints_name_the_ip6_table(tmp_path):
    state = lab_state(tmp_path)
    state.cluster = spec.ClusterConfig(**{**state.cluster.__dict__, "kube_proxy_mode": "nftables"})
    view = probes.family_view(state, "IPv6")
    assert probes._hint(view, "services", "pd-worker") == (
        "the service-ips map and the service- chains: netlab exec pd-worker -- nft list table ip6 kube-proxy")
    assert probes._hint(state, "services", "pd-worker") == (
        "the service-ips map and the service- chains: netlab nft pd-worker")


def test_the_dns_area_asks_aaaa_in_ipv6(tmp_path):
    state = lab_state(tmp_path)
    view = probes.family_view(state, "IPv6")
    client = probes._client(view, probes._running(view))
    recorder = Recorder(state)
    checks = probes.dns_checks(recorder, view, client)
    # No CoreDNS pod (replicas 0): skipped, with the AAAA names and NODATA for kubernetes.default.
    assert [c.name for c in checks][:2] == ["kubernetes.default.svc.cluster.local. AAAA over udp from default/a",
                                            "kubernetes.default.svc.cluster.local. AAAA over tcp from default/a"]
    assert checks[0].expected == "NOERROR, no answer (NODATA)"


def test_an_ipv4_lab_checks_carry_no_family(tmp_path):
    state = lab_state(tmp_path, dual=False)
    lab = FakeLab(state, tmp_path)
    checks = probes.suite(lab, AREAS)
    assert checks and all(c.family == "" and "[IPv" not in c.name for c in checks)
    assert all("family" not in c.as_json() for c in checks)
    assert not any(":" in str(c[2]) for c in lab.recorder.calls if c[0] in ("ping", "http", "udp", "mtu"))
    names = [c.name for c in checks if c.area == "overlay"]
    assert names == ["vxlan encapsulation pd-worker -> pd-worker2", "mtu 1450 DF default/a -> 10.244.2.2",
                     "mtu 1451 DF default/a -> 10.244.2.2"]
    header, rows = probes.matrix(checks)
    assert header == ["from \\ to", "a", "b"]


@pytest.mark.parametrize("dst,expected", [("10.96.0.1:80", ("10.96.0.1", "80")),
                                          ("[fd00:10:96::1]:80", ("fd00:10:96::1", "80")),
                                          ("fd00:10:96::1", ("fd00:10:96::1", "")),
                                          ("web", ("web", "")), ("default/web/6:80", ("default/web/6", "80"))])
def test_trace_takes_ipv6_destinations_as_curl_writes_them(dst, expected):
    from netlab.observe import trace
    assert trace.split_destination(dst) == expected
