"""The lab's state file (netlab.api.etcd): a versioned record. A record an older netlab wrote
still loads, fields a newer one added are ignored, and a record that cannot be read (from a
newer netlab, not JSON, not a state) is one StateUnreadable naming the file, never a TypeError,
KeyError or JSONDecodeError: one odd lab must not stop every other lab's commands."""

import dataclasses
import json
import random
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlab import names
from netlab.api import etcd, spec
from netlab.api.etcd import Store
from netlab.controllers import cluster
from netlab.errors import LabNotFound, StateUnreadable

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def a_state():
    """A whole lab's state, from the real path `netlab up` takes: nodes, pods, Deployments,
    Services, endpoints, Ingresses, host-local records, and what kubelet records."""
    state = cluster.new_state(spec.load(TOPOLOGIES / "ingress.yaml"), random.Random(7))
    state.pods[0].pids = [{"pid": 4242, "start": 99, "container": "c"}]
    state.processes = {"agnhost": {"pid": 4343, "start": 100}}
    state.netns = [n.netns for n in state.nodes] + [p.netns for p in state.pods]
    state.faults = [{"kind": "drop", "targets": ["a"]}]
    state.phase, state.created = "Running", "2025-01-01T00:00:00Z"
    return state


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(names, "STATE_ROOT", tmp_path / "netlab")
    return Store("lab1")


def write(store, record):
    store.dir.mkdir(parents=True, exist_ok=True)
    if isinstance(record, bytes):
        store.path.write_bytes(record)
    else:
        store.path.write_text(record if isinstance(record, str) else json.dumps(record, indent=1, sort_keys=True))


def test_a_state_round_trips_with_its_version(store):
    state = a_state()
    assert state.ingresses and state.endpoints and state.deployments     # every kind of record is there
    store.save(state)
    assert json.loads(store.path.read_text())["version"] == 1
    assert store.load() == state


def test_a_record_without_a_version_loads(store):
    """What netlab wrote before records had a version: `asdict(state)`, saved as save() saved it."""
    state = a_state()
    old = json.loads(json.dumps(dataclasses.asdict(state)))
    assert "version" not in old
    write(store, old)
    assert store.load() == state


def test_fields_this_netlab_does_not_know_are_ignored(store):
    state = a_state()
    record = json.loads(json.dumps(etcd.to_json(state)))
    for node in record["nodes"]:
        node["lease"] = {"holderIdentity": node["name"], "renewTime": "2025-01-01T00:00:00Z"}
    record["pods"][0]["template"]["containers"][0]["securityContext"] = {"runAsUser": 1000}
    record["cluster"]["kube_proxy_mode_options"] = {}
    record["leases"] = []
    write(store, record)
    assert store.load() == state


def test_fields_a_record_lacks_take_their_defaults(store):
    record = json.loads(json.dumps(etcd.to_json(a_state())))
    for key in ("synced", "faults", "services", "endpoints", "ingresses"):
        del record[key]
    del record["pods"][0]["created"], record["pods"][0]["pids"]
    del record["deployments"][0]["template"]["tolerations"]
    write(store, record)
    state = store.load()
    assert (state.synced, state.faults, state.services, state.endpoints, state.ingresses) == (True, [], [], [], [])
    assert (state.pods[0].created, state.pods[0].pids, state.deployments[0].template.tolerations) == ("", [], ())


def test_a_record_from_a_newer_netlab_is_unreadable_and_names_the_file(store):
    write(store, {**etcd.to_json(a_state()), "version": 2})
    with pytest.raises(StateUnreadable) as e:
        store.load()
    assert str(store.path) in str(e.value) and "newer netlab" in str(e.value) and "version 2" in str(e.value)
    assert "netlab cleanup lab1" in str(e.value)


@pytest.mark.parametrize("text, problem", [
    ('{"lab": "lab1", "nodes": [', "not JSON"),             # a save cut short
    ("", "not JSON"),
    (b"\xff\xfe{}", "not JSON"),                              # not UTF-8
    ("[]", "the record is an array, not an object"),
    ('{"version": "one"}', "version 'one'"),
    ('{"version": 1, "cluster": {}}', "state has no 'lab'"),
])
def test_garbage_is_unreadable_and_names_the_file(store, text, problem):
    write(store, text)
    with pytest.raises(StateUnreadable) as e:
        store.load()
    assert str(e.value).startswith(f"{store.path} cannot be read: ") and problem in str(e.value)


def test_a_record_with_a_wrong_field_names_the_field(store):
    record = json.loads(json.dumps(etcd.to_json(a_state())))
    del record["nodes"][1]["ip"]
    write(store, record)
    with pytest.raises(StateUnreadable, match=r"state\.nodes\[1\] has no 'ip'"):
        store.load()


def test_no_record_is_lab_not_found(store):
    with pytest.raises(LabNotFound):
        store.load()


RECORD = json.loads(json.dumps(etcd.to_json(a_state())))
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)


def _paths(value, at=()):
    """Every place in a record: (keys and indexes leading to it)."""
    yield at
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield from _paths(v, at + (k,))


PLACES = [p for p in _paths(RECORD) if p]


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(place=st.sampled_from(PLACES), value=JSON, drop=st.booleans())
def test_whatever_a_record_holds_load_answers_a_state_or_state_unreadable(store, place, value, drop):
    """Any one field replaced by any JSON value, or removed: a state, or StateUnreadable."""
    record = json.loads(json.dumps(RECORD))
    parent = record
    for key in place[:-1]:
        parent = parent[key]
    if drop:
        del parent[place[-1]]
    else:
        parent[place[-1]] = value
    write(store, record)
    try:
        store.load()
    except StateUnreadable as e:
        assert str(store.path) in str(e)


def test_the_state_is_root_only(store):
    store.save(a_state())
    assert stat.S_IMODE(names.STATE_ROOT.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    with store.locked():
        assert stat.S_IMODE((store.dir / "lock").stat().st_mode) == 0o600


def test_directories_an_older_netlab_left_open_are_closed(store):
    store.dir.mkdir(parents=True)
    for d in (names.STATE_ROOT, store.dir):
        d.chmod(0o755)
    store.save(a_state())
    assert [stat.S_IMODE(d.stat().st_mode) for d in (names.STATE_ROOT, store.dir)] == [0o700, 0o700]


def test_a_shared_state_root_is_left_open(tmp_path, monkeypatch):
    """NETLAB_STATE_DIR=/tmp, say: a sticky directory is everyone's, not netlab's to close."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setattr(names, "STATE_ROOT", shared)
    store = Store("lab1")
    store.save(a_state())
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
