"""Thousands of generated lab files, valid and broken (hypothesis): every broken one gets one
clear error naming its file and field and a non-zero exit, before anything is created;
every valid one plans without error."""

import contextlib
import io
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlab import cli, plan
from netlab.api import spec
from netlab.controllers import cluster
from netlab.errors import NetlabError, SpecError
from netlab.kernel import netns as ns

GOOD_NAME = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
BAD_NAME = st.sampled_from(["", "Bad_Name", "x" * 70, "../etc", "a/b", "-a", "a.", 7, None, "UPPER"])
NAME = st.one_of(GOOD_NAME, GOOD_NAME, GOOD_NAME, BAD_NAME)
PORT = st.one_of(st.integers(1, 65535), st.integers(1, 65535), st.sampled_from([0, -1, 70000, "http", "x y", None]))
PROTO = st.sampled_from(["TCP", "TCP", "UDP", "SCTP", "tcp", 5])


@st.composite
def container(draw):
    ports = draw(st.lists(st.fixed_dictionaries({"containerPort": PORT, "protocol": PROTO}), max_size=3))
    return {"name": draw(NAME), "ports": ports}


@st.composite
def lab_file(draw):
    name = draw(NAME)
    roles = draw(st.lists(st.sampled_from(["control-plane", "worker", "worker", "master", 3]), min_size=1, max_size=4))
    docs = [{"kind": "Cluster", "apiVersion": draw(st.sampled_from(["kind.x-k8s.io/v1alpha4"] * 5 + ["v1"])),
             "name": name, "nodes": [{"role": r} for r in roles],
             "networking": {"podSubnet": draw(st.sampled_from(["10.244.0.0/16"] * 4 + ["10.244.0.0/30", "nope", "10.96.0.0/12"]))}}]
    for _ in range(draw(st.integers(0, 3))):
        labels = {"app": draw(GOOD_NAME)}
        kind = draw(st.sampled_from(["Deployment", "Service", "Pod", "Gadget"]))
        if kind == "Deployment":
            docs.append({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": draw(NAME)},
                         "spec": {"replicas": draw(st.one_of(st.integers(0, 4), st.sampled_from([-1, "two"]))),
                                  "selector": {"matchLabels": labels if draw(st.booleans()) else {"app": "other"}},
                                  "template": {"metadata": {"labels": labels},
                                               "spec": {"containers": draw(st.lists(container(), max_size=2))}}}})
        elif kind == "Service":
            docs.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": draw(NAME)},
                         "spec": {"type": draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer", "Weird"])),
                                  "selector": labels,
                                  "ports": [{"port": draw(PORT), "protocol": draw(PROTO), "targetPort": draw(PORT),
                                             **({"nodePort": draw(st.integers(29990, 32770))} if draw(st.booleans()) else {})}]}})
        else:
            docs.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": draw(NAME), "labels": labels},
                         "spec": {"containers": draw(st.lists(container(), max_size=2))}})
    return docs


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lab_file())
def test_every_lab_file_is_either_planned_or_refused_with_its_field(docs):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        try:
            lab_spec = spec.load(path)
        except SpecError as e:
            assert e.file == path and e.message and (e.obj or e.field), e
            return
        try:
            state = cluster.new_state(lab_spec)
            plan.lab_plans(state)
        except NetlabError as e:                   # e.g. a pod nothing can schedule
            assert str(e)


@settings(max_examples=300, deadline=None)
@given(lab_file())
def test_a_broken_file_exits_non_zero_and_creates_nothing(docs):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        try:
            spec.load(path)
            return                                  # valid: the integration tests bring such labs up
        except SpecError:
            pass
        before = ns.list_names()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(["up", str(path)])
        assert code == 1 and err.getvalue().startswith(f"netlab: {path}") and "Traceback" not in err.getvalue()
        assert ns.list_names() == before
