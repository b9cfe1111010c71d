"""`netlab probe` checks what the lab has, says what it could not check and why, and never
passes on nothing: every shipped topology, a lab of one one-port Deployment (then scaled to
nothing), a partition run twice, and a headless Service too big for one UDP answer."""

import json
import subprocess
import sys

import pytest
import yaml

from netlab.addons import agnhost
from netlab.controllers import kubeadm

from .conftest import TOPOLOGIES, lab_for_module


def netlab(*argv):
    return subprocess.run([sys.executable, "-m", "netlab.cli", *argv], capture_output=True, text=True, timeout=600)


def probe_json(lab, *areas):
    r = netlab("--lab", lab.name, "probe", "-o", "json", *[a for area in areas for a in ("--area", area)])
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout), r.stderr


def ran(checks, area=None, family=None, primary="IPv4"):
    """The checks that ran (of an area, of a family: a single-stack lab's carry none, its
    `primary` family's)."""
    return [c for c in checks if not c.get("skipped") and (area is None or c["area"] == area)
            and (family is None or c.get("family", primary) == family)]


def failed(checks):
    return [f"{c['name']}: expected {c['expected']}, saw {c['observed']}" for c in ran(checks) if not c["ok"]]


def areas_the_lab_has(state, family="IPv4"):
    """The probe's areas, from the lab's objects alone: what Kubernetes promises of them, in
    one IP family. In IPv6 (a dual-stack lab): the pods' and nodes' IPv6 addresses, the
    Services with an IPv6 ClusterIP, kube-dns asked for AAAA records at its one (IPv4)
    address, the load balancers of Services with an IPv6 load-balancer address."""
    six = family == "IPv6"
    pods = [p for p in state.pods if p.node and (p.ip6 if six else p.ip)]
    per_node = {}
    for p in pods:
        per_node[p.node] = per_node.get(p.node, 0) + 1
    dns = next(s for s in state.services if s.cluster_ip == kubeadm.dns_ip(state.cluster))
    dns_ep = state.endpoints_of(dns)
    has = set()
    if any(n >= 2 for n in per_node.values()):
        has.add("pods-same-node")
    if len(per_node) >= 2:
        has |= {"pods-across-nodes", "overlay"}
    # The matrix asks agnhost netexec's /hostname over TCP; serve-hostname's pods (the netpol
    # e2e model's) answer in the policy area's matrix instead.
    if len({p.node for p in pods if any(pr == "TCP" for _, pr in agnhost.served_ports(p))}) >= 2:
        has.add("pod-matrix")
    if pods:
        has |= {"node-to-pod", "pod-to-node", "egress"}
    if any(s.selector and s.cluster_ip_of(family) for s in state.services):
        has.add("services")
    if dns_ep and any(s.addresses for s in dns_ep.subsets):
        has.add("dns")
    if any(s.type == "LoadBalancer" and s.load_balancer_ip_of(family) for s in state.services):
        has.add("load-balancers")
    if state.ingresses and any(s.namespace == kubeadm.INGRESS_NAMESPACE and s.cluster_ip_of(family)
                               for s in state.services):
        has.add("ingress")
    return has


# The IPv4 topologies whose objects go beyond the default lab's, built again as their dual-stack
# twins: every IPv4 check they pass single-stack must pass beside the IPv6 ones.
TWINS = ("ingress.yaml", "loadbalancer.yaml", "netpol-e2e.yaml", "services.yaml")


def dual_twin(topology, directory):
    """The topology with `networking.ipFamily: dual` in its Cluster document (a file of its own)."""
    docs = list(yaml.safe_load_all((TOPOLOGIES / topology).read_text()))
    cluster = next(d for d in docs if d and d.get("kind") == "Cluster")
    assert cluster.get("networking", {}).get("ipFamily", "ipv4") == "ipv4", topology
    cluster.setdefault("networking", {})["ipFamily"] = "dual"
    path = directory / f"dual-{topology}"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


@pytest.fixture(scope="module", params=sorted(p.name for p in TOPOLOGIES.glob("*.yaml")) + [f"dual twin of {t}"
                                                                                            for t in TWINS])
def probed(request, tmp_path_factory):
    """Each shipped topology (and the dual-stack twins), up once, probed once: (state, exit
    code, checks, stderr)."""
    path = TOPOLOGIES / request.param
    if request.param.startswith("dual twin of "):
        path = dual_twin(request.param.removeprefix("dual twin of "), tmp_path_factory.mktemp("twin"))
    with lab_for_module(path, tmp_path_factory) as lab:
        code, checks, err = probe_json(lab)
        PROBED[request.param] = checks
        yield lab.state(), code, checks, err


PROBED = {}          # topology (or "dual twin of" it) -> its checks, as the module's labs are probed


def _tally(checks, family):
    """How many checks of each area ran and were skipped in a family (pod names are random:
    the checks of two labs of one topology compare by count)."""
    out = {}
    for c in checks:
        if c.get("family", "IPv4") == family:
            key = (c["area"], "skipped" if c.get("skipped") else c["result"])
            out[key] = out.get(key, 0) + 1
    return out


def test_a_dual_twin_checks_in_ipv4_what_its_topology_checks(probed, request):
    """The dual-stack twin of an IPv4 topology: its IPv4 checks are the IPv4 lab's, as many
    in each area and as many passed (the IPv6 family adds its own beside them)."""
    name = request.node.callspec.params["probed"]
    if not name.startswith("dual twin of "):
        assert not probed[0].cluster.dual or name == "dual-stack.yaml"
        return
    original = PROBED.get(name.removeprefix("dual twin of "))
    assert original is not None, "the IPv4 topology is probed first (the params' order)"
    assert _tally(probed[2], "IPv4") == _tally(original, "IPv4")


def test_every_topology_is_checked_in_every_area_it_has(probed):
    state, code, checks, err = probed
    assert not failed(checks), failed(checks)
    assert code == 0 and ran(checks), err
    dual = state.cluster.dual
    # A dual-stack lab's checks each say their family, in the name's tag and in "family".
    assert all(("family" in c) == dual for c in checks)
    if dual:
        assert all(c["family"] in ("IPv4", "IPv6") and c["name"].endswith(f" [{c['family']}]") for c in checks)
    primary = state.cluster.primary
    for family in state.cluster.families:
        missing = {a for a in areas_the_lab_has(state, family) if not ran(checks, a, family, primary)}
        assert missing == set(), f"no {family} check ran in {missing}"
        mine = [c for c in checks if c.get("family", primary) == family]
        with_pods = {p.node for p in state.pods if p.node and (p.ip6 if family == "IPv6" else p.ip)}
        # One pod per node to every other, both ways; every node's kube-proxy from a pod.
        assert len([c for c in mine if c["area"] == "pod-matrix"]) == len(with_pods) * (len(with_pods) - 1)
        assert len(ran(mine, "pod-to-node")) == len(state.nodes)
        if len(with_pods) >= 2:
            assert [c["name"].split()[0] for c in ran(mine, "overlay")] == ["vxlan", "mtu", "mtu"]
    if state.cluster.ipv6:
        # flannel-v6.1's MTU is the underlay's - 70 (the kernel's VXLAN6_HEADROOM): 1430 on 1500.
        mtu6 = state.cluster.underlay_mtu - 70
        overlay6 = ran(checks, "overlay", "IPv6", primary)
        assert [c["name"].split(" DF ")[0] for c in overlay6][1:] == [f"mtu {mtu6}", f"mtu {mtu6 + 1}"]
        pod6 = {p.ip6 for p in state.pods if p.ip6}
        vxlan = next(c for c in overlay6 if c["name"].startswith("vxlan"))
        outer, inner = vxlan["observed"].split(" [")
        assert set(outer.split()[0:3:2]) <= {n.ip6 for n in state.nodes} and set(inner[:-1].split(" -> ")) <= pod6


def test_every_topology_says_why_it_skipped_what_it_skipped(probed):
    state, code, checks, err = probed
    for c in checks:
        assert c["result"] in ("pass", "skipped")
        if c["result"] == "skipped":
            assert c["skipped"] and c["observed"] == "" and c["ok"], c
    # A ClusterIP Service of agnhost pods is asked for real, never skipped, unless kube-proxy
    # is told to leave it to another proxy (KEP-2447's service-proxy-name label).
    for svc in state.services:
        backends = [p for p in state.pods if p.namespace == svc.namespace and p.node and svc.selector
                    and all(p.labels.get(k) == v for k, v in svc.selector.items())]
        if "service.kubernetes.io/service-proxy-name" in svc.labels:
            assert all(c["skipped"] for c in checks if c["name"].startswith(f"{svc.key}:")), svc.key
        elif svc.cluster_ip not in (None, "None") and backends and all(agnhost.served_ports(p) for p in backends):
            name = f"{svc.key}:{svc.ports[0].name or svc.ports[0].port}/{svc.ports[0].protocol} cluster IP from"
            assert any(c["name"].startswith(name) for c in ran(checks, "services")), name


ONE_PORT = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: one
nodes: [{role: control-plane}, {role: worker}, {role: worker}]
---
apiVersion: netlab.io/v1alpha1
kind: Lab
dns: {replicas: 0}              # nothing but the Deployment: no CoreDNS pods either
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53,
                    ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""

POD_AREAS = ("pods-same-node", "pods-across-nodes", "pod-matrix", "node-to-pod", "pod-to-node", "overlay", "egress",
             "dns")


def test_a_lab_of_one_port_pods_is_checked_and_nothing_is_not_passed(make_lab, tmp_path):
    f = tmp_path / "one.yaml"
    f.write_text(ONE_PORT)
    lab = make_lab(f)
    state = lab.state()
    workers = {p.node for p in state.pods}
    assert len(state.pods) == 3 and len(workers) == 2          # two workers, one of them with two pods
    code, checks, err = probe_json(lab)
    assert not failed(checks), failed(checks)
    assert code == 0, err
    for area in ("pods-same-node", "pods-across-nodes", "pod-matrix", "node-to-pod", "pod-to-node", "services"):
        assert ran(checks, area), f"nothing ran in {area}"
    names = [c["name"] for c in ran(checks, "services")]
    assert any(n.startswith("default/web:http/TCP cluster IP from default/web-") for n in names)
    assert len([n for n in names if n.startswith("default/web:http/TCP node port") and "from external" in n]) == 3
    # Only TCP is served: the UDP checks say so; no CoreDNS: the DNS checks say so.
    assert all("serves UDP" in c["skipped"] for c in checks if c["name"].startswith("udp "))
    assert {c["skipped"] for c in checks if c["area"] == "dns"} == {"kube-system/kube-dns has no ready endpoint"}

    # `netlab events -o json | head`: the reader gone, netlab stops as a Unix tool does (SIGPIPE).
    p = subprocess.Popen([sys.executable, "-m", "netlab.cli", "--lab", lab.name, "events", "-o", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    assert (p.stderr.read(), p.wait(timeout=60)) == (b"", 141)

    # One pod left: nothing crosses nodes, and the probe says so for each such check.
    assert netlab("--lab", lab.name, "scale", "deployment/web", "--replicas", "1").returncode == 0
    (last,) = lab.state().pods
    code, checks, err = probe_json(lab, "pods-across-nodes", "pod-matrix", "overlay")
    assert code == 1 and err.startswith("netlab: probe: nothing was checked"), err
    assert [(c["area"], c["skipped"]) for c in checks] == [
        (area, f"only {last.node} has pods: a path across nodes needs pods on two")
        for area in ("pods-across-nodes", "pod-matrix", "overlay", "overlay", "overlay")]

    assert netlab("--lab", lab.name, "scale", "deployment/web", "--replicas", "0").returncode == 0
    nothing = netlab("--lab", lab.name, "probe", *[a for area in POD_AREAS for a in ("--area", area)])
    assert nothing.returncode == 1, nothing.stdout
    assert nothing.stderr.startswith("netlab: probe: nothing was checked: every check was skipped")
    assert "0 passed, 0 failed" in nothing.stdout
    cp = state.nodes[0].name
    for line in (f"skipped: no pod runs on {cp}", "skipped: no pod is running",
                 "skipped: no pod is running to send from", "skipped: kube-system/kube-dns has no ready endpoint"):
        assert line in nothing.stdout, line

    code, checks, err = probe_json(lab)
    # What is left to check: kube-proxy's REJECT for the Services without endpoints, asked
    # from a node's own namespace (no pod is left to ask from) and from outside.
    assert code == 0 and not failed(checks), (err, failed(checks))
    assert {c["area"] for c in ran(checks)} == {"services"}
    observed = {c["name"]: c["observed"] for c in ran(checks)}
    node = state.nodes[0]
    web = state.service("default", "web")
    # From a node, REJECT in OUTPUT refuses the socket itself; from outside, ICMP port unreachable.
    assert observed[f"default/web:http/TCP without endpoints from {cp}"] == \
        "ConnectionRefusedError: [Errno 111] Connection refused"
    node_port = f"{node.ip}:{web.ports[0].node_port}"
    assert observed[f"default/web:http/TCP node port {node_port} without endpoints from external"] == "icmp 3/3"
    assert observed[f"kube-system/kube-dns:dns/UDP without endpoints from {cp}"] == \
        "PermissionError: [Errno 1] Operation not permitted"
    assert {c["area"] for c in checks if c.get("skipped")} == set(POD_AREAS)
    # The API server answers kubernetes.default from the node, through kube-proxy's DNAT.
    assert observed[f"default/kubernetes:https/TCP cluster IP from {cp}"].startswith("v1.")


PARTITION = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: part
nodes: [{role: control-plane}, {role: worker}, {role: worker}, {role: worker}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: part-worker
  containers: [{name: c, ports: [{containerPort: 8080}, {containerPort: 8081, protocol: UDP}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: far}
spec:
  replicas: 2
  selector: {matchLabels: {app: far}}
  template:
    metadata: {labels: {app: far}}
    spec:
      nodeName: part-worker2
      containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: far}
spec:
  selector: {app: far}
  ports: [{name: http, port: 80, targetPort: http}]
"""

SPREAD_POD = """
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: spread}}}}
spec:
  nodeName: part-{node}
  containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]
"""

SPREAD = "".join(SPREAD_POD.format(name=n, node=w) for n, w in (("s1", "worker"), ("s2", "worker3"),
                                                                  ("s3", "worker3"), ("s4", "worker2"))) + """
---
apiVersion: v1
kind: Service
metadata: {name: spread}
spec:
  selector: {app: spread}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_a_partition_changes_what_passes_not_what_is_checked(make_lab, tmp_path):
    f = tmp_path / "part.yaml"
    f.write_text(PARTITION + SPREAD)
    lab = make_lab(f)
    state = lab.state()
    worker, worker2 = state.nodes[1].name, state.nodes[2].name
    _, healthy, _ = probe_json(lab)
    assert not failed(healthy), failed(healthy)
    assert any(c["name"] == "default/far:http/TCP cluster IP from default/client" for c in ran(healthy))

    assert netlab("--lab", lab.name, "fault", "partition", worker, worker2).returncode == 0
    runs = [probe_json(lab) for _ in range(2)]
    assert [len(checks) for _, checks, _ in runs] == [len(healthy)] * 2
    for code, checks, _ in runs:
        assert code == 1
        # Both far pods are behind the partition: the Service fails from the client on
        # worker, and every check that builds on it is there, skipped for that reason.
        far = {c["name"]: c for c in checks if c["name"].startswith("default/far:http/TCP")}
        assert not far["default/far:http/TCP cluster IP from default/client"]["ok"]
        followups = {n: c["skipped"] for n, c in far.items() if c.get("skipped")}
        unreachable = "default/far:http/TCP unreachable from default/client"
        assert set(followups.values()) == {unreachable}
        assert {n.split("TCP ", 1)[1].split(" from")[0] for n in followups} >= {
            "source IP", "by name far.default.svc.cluster.local.", "load spread"}

    # Three of spread's four pods answer the client (s4 is behind the partition): the spread
    # check asks on past the timeouts and counts them. Its cluster IP check picks a backend
    # at random, so the spread runs when that pick answered.
    for _ in range(8):
        _, checks, _ = probe_json(lab, "services")
        spread = next(c for c in checks if c["name"] == "default/spread:80/TCP load spread")
        if not spread.get("skipped"):
            break
    else:
        pytest.fail("the spread Service's cluster IP never answered in 8 runs")
    assert spread["observed"].startswith("3 of 4 backends answered") and not spread["ok"], spread


HEADLESS = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: big
nodes: [{role: control-plane}, {role: worker}, {role: worker}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: many}
spec:
  replicas: 40
  selector: {matchLabels: {app: many}}
  template:
    metadata: {labels: {app: many}}
    spec:
      containers: [{name: c, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: c, ports: [{containerPort: 8080}, {containerPort: 8081, protocol: UDP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: many}
spec:
  clusterIP: None
  selector: {app: many}
  ports: [{port: 8080}]
"""


def test_a_headless_service_too_big_for_udp_is_asked_again_over_tcp(make_lab, tmp_path):
    f = tmp_path / "many.yaml"
    f.write_text(HEADLESS)
    lab = make_lab(f)
    state = lab.state()
    ips = sorted(p.ip for p in state.pods if p.owner == "Deployment/many")
    assert len(ips) == 40
    pod = next(p for p in state.pods if p.owner == "Deployment/many")
    fqdn = "many.default.svc.cluster.local"
    # 40 A records (16 bytes each, compressed) do not fit in the 512 bytes of a UDP answer
    # without EDNS0 (glibc's resolver asks that way): dig sees TC set.
    udp = lab.exec(pod.key, ["dig", "+notcp", "+noedns", "+ignore", f"@{kubeadm.dns_ip(state.cluster)}", fqdn],
                   capture_output=True, text=True)
    assert " tc" in udp.stdout.split("flags:", 1)[1].split(";", 1)[0], udp.stdout
    code, checks, err = probe_json(lab, "dns")
    headless = next(c for c in checks if c["name"] == f"headless {fqdn}.")
    assert headless["ok"] and code == 0, headless
    assert headless["observed"].startswith(f"40 addresses: {', '.join(ips[:4])}")
    assert headless["observed"].endswith("(over TCP: the UDP answer was truncated)")
