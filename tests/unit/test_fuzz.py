"""Thousands of generated lab files, valid and broken (hypothesis). The generator knows every
fault it puts in a file, in the order the API server checks them: a broken file is refused
with one sentence "FILE: OBJECT: FIELD: problem" naming the first of them, and `netlab up`
exits non-zero having created nothing; a file with no fault builds the whole cluster."""

import contextlib
import io
import ipaddress
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from netlab import cli, names, plan
from netlab.api import spec
from netlab.controllers import cluster
from netlab.errors import SpecError
from netlab.kernel import netns as ns

KIND_API = "kind.x-k8s.io/v1alpha4"
GOOD_NAME = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
# Each is wrong as a DNS-1123 name (or as any name: too long, not a string, missing); only a
# Cluster may leave its name out (kind's default, "kind").
BAD_NAMES = ["", "Bad_Name", "x" * 70, "x" * 254, "../etc", "a/b", "-a", "a.", 7, None, "UPPER"]
# Pods and Deployments are DNS-1123 subdomains (253 characters), the rest labels (63).
SUBDOMAIN_KINDS = ("Pod", "Deployment")
BAD_PORTS = [0, -1, 70000, "http", "x y", None]


def name_ok(v, kind=None):
    return v not in BAD_NAMES or (kind in SUBDOMAIN_KINDS and v == "x" * 70)


def port_ok(v):
    return v not in BAD_PORTS                        # every other drawn value is in 1-65535


def target_port_ok(v):
    return v is None or v == "http" or port_ok(v)    # None: the port itself; "http": a port name


def proto_ok(v):
    return v in ("TCP", "UDP")


class Faults(list):
    """(object, field) of each fault, in the order spec checks them."""

    def add(self, obj, field, wrong=True):
        if wrong:
            self.append((obj, field))


class Draws:
    """The generator's values. Only a part being broken (the Cluster in one file of four, an
    object in one of two) gets bad values, in one field of six, so that the fields checked
    first do not hide the faults of the later ones; a valid_only file breaks nothing."""

    def __init__(self, draw, valid_only):
        self.draw, self.valid_only, self.breaking = draw, valid_only, False

    def part(self, one_in):
        # Not 1: hypothesis draws the least integer far more often than the others.
        self.breaking = not self.valid_only and self.draw(st.integers(1, one_in)) == 2

    def __call__(self, good, bad):
        if self.breaking and self.draw(st.integers(1, 6)) == 3:
            return self.draw(st.sampled_from(bad))
        return self.draw(good)

    def name(self):
        return self(GOOD_NAME, BAD_NAMES)

    def port(self):
        return self(st.integers(1, 65535), BAD_PORTS)

    def proto(self):
        return self(st.sampled_from(["TCP", "UDP"]), ["SCTP", "tcp", 5])

    def containers(self):
        return [{"name": self.name(),
                 "ports": [{"containerPort": self.port(), "protocol": self.proto()}
                           for _ in range(self.draw(st.integers(0, 3)))]}
                for _ in range(self.draw(st.integers(0 if self.breaking else 1, 2)))]


def container_faults(faults, obj, at, containers):
    faults.add(obj, f"{at}.containers", not containers)
    seen, bound = set(), {}
    for k, c in enumerate(containers):
        field = f"{at}.containers[{k}]"
        faults.add(obj, f"{field}.name", not name_ok(c["name"]) or c["name"] in seen)
        seen.add(c["name"])
        for j, p in enumerate(c["ports"]):
            faults.add(obj, f"{field}.ports[{j}].containerPort", not port_ok(p["containerPort"]))
            faults.add(obj, f"{field}.ports[{j}].protocol", not proto_ok(p["protocol"]))
            if port_ok(p["containerPort"]) and proto_ok(p["protocol"]):   # one port, one protocol: one container
                owner = bound.setdefault((p["containerPort"], p["protocol"]), k)
                faults.add(obj, f"{field}.ports[{j}].containerPort", owner != k)


@st.composite
def lab_file(draw, valid_only=False):
    """(documents, Faults, what the file must build if it has none)."""
    d, faults = Draws(draw, valid_only), Faults()
    d.part(4)
    name = d.name()
    roles = [d(st.sampled_from(["control-plane", "worker", "worker"]), ["master", 3])
             for _ in range(draw(st.integers(1, 4)))]
    if not d.breaking and "control-plane" not in roles:
        roles[0] = "control-plane"
    api = d(st.just(KIND_API), ["v1"])
    pod_subnet = d(st.just("10.244.0.0/16"), ["10.244.0.0/30", "nope", "10.96.0.0/12"])
    docs = [{"kind": "Cluster", "apiVersion": api, "name": name, "nodes": [{"role": r} for r in roles],
             "networking": {"podSubnet": pod_subnet}}]
    faults.add("Cluster", "apiVersion", api != KIND_API)
    faults.add("Cluster", "name", name is not None and not name_ok(name))
    for i, r in enumerate(roles):
        faults.add("Cluster", f"nodes[{i}].role", r not in ("control-plane", "worker"))
    faults.add("Cluster", "nodes", set(roles) <= {"worker"})
    faults.add("Cluster", "networking.podSubnet", pod_subnet == "nope")
    faults.add("Cluster", "networking.serviceSubnet", pod_subnet == "10.96.0.0/12")   # overlaps 10.96.0.0/12
    faults.add("Cluster", "networking.podSubnet", pod_subnet == "10.244.0.0/30")      # smaller than a /24
    expect = {"lab": name or "kind", "roles": roles, "replicas": {}, "pods": set(), "services": {}}
    seen, node_ports = set(), []
    for i in range(1, draw(st.integers(0, 3)) + 1):
        labels = {"app": draw(GOOD_NAME)}
        d.part(2)
        kind = d(st.sampled_from(["Deployment", "Service", "Pod"]), ["Gadget"])
        obj_name = d.name()
        obj = f"{kind} default/{obj_name}" if name_ok(obj_name, kind) else kind
        if kind == "Gadget":
            docs.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": obj_name}})
            faults.add(f"document {i + 1}", "kind")
            continue
        faults.add(kind, "metadata.name", not name_ok(obj_name, kind))
        if kind == "Deployment":
            replicas = d(st.integers(0, 4), [-1, "two"])
            matches = d(st.just(True), [False])
            containers = d.containers()
            docs.append({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": obj_name},
                         "spec": {"replicas": replicas,
                                  "selector": {"matchLabels": labels if matches else {"app": "other"}},
                                  "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}}}})
            faults.add(obj, "spec.replicas", replicas in (-1, "two"))
            faults.add(obj, "spec.template.metadata.labels", not matches)
            container_faults(faults, obj, "spec.template.spec", containers)
            expect["replicas"][obj_name] = replicas
        elif kind == "Service":
            svc_type = d(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]), ["Weird"])
            port, proto, target = d.port(), d.proto(), d.port()
            node_port = None
            if svc_type != "ClusterIP" and draw(st.booleans()):
                node_port = d(st.integers(30000, 32767), [29999, 32768])
            elif d.breaking and draw(st.integers(0, 3)) == 0:
                node_port = draw(st.integers(30000, 32767))       # on a ClusterIP Service: refused
            docs.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": obj_name},
                         "spec": {"type": svc_type, "selector": labels,
                                  "ports": [{"port": port, "protocol": proto, "targetPort": target,
                                             **({"nodePort": node_port} if node_port is not None else {})}]}})
            faults.add(obj, "spec.type", svc_type == "Weird")
            faults.add(obj, "spec.ports[0].port", not port_ok(port))
            faults.add(obj, "spec.ports[0].protocol", not proto_ok(proto))
            faults.add(obj, "spec.ports[0].targetPort", not target_port_ok(target))
            if node_port is not None:
                faults.add(obj, "spec.ports[0].nodePort", not 30000 <= node_port <= 32767 or svc_type == "ClusterIP")
                node_ports.append((obj, obj_name, node_port))
            expect["services"][obj_name] = (svc_type, node_port)
        else:
            containers = d.containers()
            docs.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": obj_name, "labels": labels},
                         "spec": {"containers": containers}})
            container_faults(faults, obj, "spec", containers)
            expect["pods"].add(obj_name)
        faults.add(obj, "metadata.name", (kind, obj_name) in seen)        # a second object of that name
        seen.add((kind, obj_name))
    owners = {}                                  # checked after every object: a nodePort taken twice
    for obj, svc, port in node_ports:
        faults.add(obj, "spec.ports[0].nodePort", owners.setdefault(port, svc) != svc)
    return docs, faults, expect


def kind_node_names(lab, roles):
    """kind's names: <lab>-control-plane, <lab>-control-plane2, <lab>-worker, <lab>-worker2 ..."""
    out, counts = [], {}
    for r in roles:
        counts[r] = counts.get(r, 0) + 1
        out.append(f"{lab}-{r}{counts[r] if counts[r] > 1 else ''}")
    return out


def assert_built(state, expect):
    assert [n.name for n in state.nodes] == kind_node_names(expect["lab"], expect["roles"])
    for n in state.nodes:
        assert ipaddress.ip_network(n.pod_cidr).prefixlen == 24
        assert ipaddress.ip_network(n.pod_cidr).subnet_of(ipaddress.ip_network("10.244.0.0/16"))
    for d, replicas in expect["replicas"].items():
        assert len([p for p in state.pods if p.owner == f"Deployment/{d}"]) == replicas
    assert {p.name for p in state.pods if p.namespace == "default" and p.owner is None} == set(expect["pods"])
    for p in state.pods:
        assert ipaddress.ip_address(p.ip) in ipaddress.ip_network(state.node(p.node).pod_cidr), p
    for name, (svc_type, node_port) in expect["services"].items():
        svc = state.service("default", name)
        assert svc.type == svc_type and ipaddress.ip_address(svc.cluster_ip) in ipaddress.ip_network("10.96.0.0/12")
        if svc_type == "ClusterIP":
            assert svc.ports[0].node_port is None
        else:
            assert 30000 <= svc.ports[0].node_port <= 32767
            assert node_port is None or svc.ports[0].node_port == node_port


def write(tmp, docs):
    path = Path(tmp) / "lab.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(lab_file(), lab_file(valid_only=True)))
def test_every_lab_file_is_either_built_or_refused_at_its_first_fault(generated):
    docs, faults, expect = generated
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, docs)
        if not faults:
            event("accepted")
            state = cluster.new_state(spec.load(path))
            assert_built(state, expect)
            assert plan.lab_plans(state)
            return
        event("refused")
        with pytest.raises(SpecError) as refused:
            spec.load(path)
        e, (obj, field) = refused.value, faults[0]
        assert str(e) == f"{path}: {obj}: {field}: {e.message}"
        assert e.message and "\n" not in str(e) and "Traceback" not in str(e)


@settings(max_examples=300, deadline=None)
@given(lab_file())
def test_a_broken_file_exits_non_zero_and_creates_nothing(generated):
    docs, faults, expect = generated
    if not faults:
        return                                      # valid: the integration tests bring such labs up
    lab = str(expect["lab"])
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, docs)
        before = {n for n in ns.list_names() if n.startswith(f"{lab}-")}   # other labs may come and go meanwhile
        had_state = (names.STATE_ROOT / lab).exists()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(["up", str(path)])
        obj, field = faults[0]
        assert code == 1
        assert err.getvalue().startswith(f"netlab: {path}: {obj}: {field}: ") and err.getvalue().count("\n") == 1
        assert {n for n in ns.list_names() if n.startswith(f"{lab}-")} == before
        assert (names.STATE_ROOT / lab).exists() == had_state
