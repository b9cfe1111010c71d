"""etcd: the lab's cluster state (netlab.api.objects), persisted per lab and locked per command.

The state is the single source of truth every agent converges to. It is written before the
kernel is touched (intent first), so a command killed half-way leaves a record that the next
command converges and that `netlab down` removes.

The record carries a schema version (`"version"`, STATE_VERSION), as etcd's objects carry
their apiVersion: a record of an older netlab is migrated when it is read, fields this netlab
does not know are ignored and fields it lacks take their defaults, so one odd record never
stops another lab's command. A record from a newer netlab, or one that is not a state at all,
is StateUnreadable, naming the file: never a TypeError or a JSONDecodeError.

State directories are root's alone (0700, files 0600): they name every pod, address and
process, and container processes run as another user on the same filesystem.
"""

import fcntl
import functools
import hashlib
import json
import os
import stat
from contextlib import contextmanager
from dataclasses import MISSING, asdict, fields

from netlab import names
from netlab.api.objects import (Address, ClusterState, Deployment, Endpoints, EndpointSlice, HostLocal, Node, Pod, Port,
                                SliceEndpoint, Subset)
from netlab.api.spec import (ClusterConfig, Container, ContainerPort, IngressManifest, IngressPath, IngressRule,
                             IPBlock, LabelSelector, NetworkPolicyManifest, PodTemplate, PolicyPeer, PolicyPort,
                             PolicyRule, ServiceManifest, ServicePort, Toleration)
from netlab.errors import LabNotFound, StateUnreadable

STATE_FILE = "state.json"
STATE_VERSION = 1       # version 0: a record without the key, as netlab wrote them before they had one


def to_json(state):
    return {"version": STATE_VERSION, **asdict(state)}


# --- reading a record, of this version or an older one -----------------------------------

class _Bad(Exception):
    """What is wrong inside a record; from_json names the file."""


def _migrate_0(d):
    """Version 0 (no "version" key) is version 1's shape: nothing to change."""
    return d


MIGRATIONS = {0: _migrate_0}     # version N's record -> version N+1's


def _kind(x):
    """A value's JSON type, for messages."""
    kinds = ((bool, "a boolean"), (dict, "an object"), ((list, tuple), "an array"), (str, "a string"),
             ((int, float), "a number"))
    return "null" if x is None else next((name for t, name in kinds if isinstance(x, t)), type(x).__name__)


def _mapping(d, where):
    if not isinstance(d, dict):
        raise _Bad(f"{where} is {_kind(d)}, not an object")
    return d


def _items(d, key, where):
    """The list under `key` (absent: empty), with each item's place for messages."""
    value = d.get(key, [])
    if not isinstance(value, (list, tuple)):
        raise _Bad(f"{where}.{key} is {_kind(value)}, not an array")
    return [(x, f"{where}.{key}[{i}]") for i, x in enumerate(value)]


def _make(cls, d, where, **built):
    """A dataclass from a record's mapping: fields it does not know are ignored (a newer
    netlab's, or one since dropped), fields it lacks take their defaults, and `built` holds
    the nested values made from the record's (used where the record has the field)."""
    _mapping(d, where)
    known, required = _fields(cls)
    values = {k: v for k, v in d.items() if k in known}
    values.update((k, v) for k, v in built.items() if k in d)
    for name in required:
        if name not in values:
            raise _Bad(f"{where} has no {name!r}")
    return cls(**values)


@functools.cache
def _fields(cls):
    """(every field's name, the names of those without a default) of a dataclass."""
    fs = fields(cls)
    return ({f.name for f in fs},
            tuple(f.name for f in fs if f.default is MISSING and f.default_factory is MISSING))


def _tuple(d, key, where, make=None):
    return tuple(make(x, at) if make else x for x, at in _items(d, key, where))


def _container(d, where):
    _mapping(d, where)
    port = lambda p, at: _make(ContainerPort, p, at)  # noqa: E731
    return _make(Container, d, where, command=_tuple(d, "command", where), args=_tuple(d, "args", where),
                 ports=_tuple(d, "ports", where, port))


def _template(d, where):
    _mapping(d, where)
    toleration = lambda t, at: _make(Toleration, t, at)  # noqa: E731
    return _make(PodTemplate, d, where, containers=_tuple(d, "containers", where, _container),
                 tolerations=_tuple(d, "tolerations", where, toleration))


def _templated(cls):
    def make(d, where):
        _mapping(d, where)
        built = {"template": _template(d["template"], f"{where}.template")} if "template" in d else {}
        return _make(cls, d, where, **built)
    return make


def _service(d, where):
    _mapping(d, where)
    port = lambda p, at: _make(ServicePort, p, at)  # noqa: E731
    return _make(ServiceManifest, d, where, ports=_tuple(d, "ports", where, port),
                 external_ips=_tuple(d, "external_ips", where),
                 load_balancer_source_ranges=_tuple(d, "load_balancer_source_ranges", where),
                 ip_families=_tuple(d, "ip_families", where), cluster_ips=_tuple(d, "cluster_ips", where),
                 load_balancer_ips=_tuple(d, "load_balancer_ips", where))


def _backend(d, where):
    return None if d is None else _make(IngressPath, d, where)


def _rule(d, where):
    _mapping(d, where)
    return _make(IngressRule, d, where, paths=_tuple(d, "paths", where, _backend))


def _ingress(d, where):
    _mapping(d, where)
    return _make(IngressManifest, d, where, rules=_tuple(d, "rules", where, _rule),
                 default_backend=_backend(d.get("default_backend"), f"{where}.default_backend"))


def _selector(d, where):
    """A LabelSelector (None stays None: a peer without that selector)."""
    if d is None:
        return None
    _mapping(d, where)
    expressions = tuple((key, op, tuple(values)) for (key, op, values), _ in _items(d, "match_expressions", where))
    labels = {"match_labels": dict(_mapping(d["match_labels"], f"{where}.match_labels"))} if "match_labels" in d else {}
    return _make(LabelSelector, d, where, **labels, match_expressions=expressions)


def _peer(d, where):
    _mapping(d, where)
    block = d.get("ip_block")
    built = {"pod_selector": _selector(d.get("pod_selector"), f"{where}.pod_selector"),
             "namespace_selector": _selector(d.get("namespace_selector"), f"{where}.namespace_selector"),
             "ip_block": None if block is None else _make(IPBlock, block, f"{where}.ip_block",
                                                          excepts=_tuple(block, "excepts", f"{where}.ip_block"))}
    return _make(PolicyPeer, d, where, **built)


def _policy_rule(d, where):
    _mapping(d, where)
    return _make(PolicyRule, d, where, peers=_tuple(d, "peers", where, _peer),
                 ports=_tuple(d, "ports", where, lambda p, at: _make(PolicyPort, p, at)))


def _network_policy(d, where):
    _mapping(d, where)
    built = {"pod_selector": _selector(d["pod_selector"], f"{where}.pod_selector")} if d.get("pod_selector") else {}
    return _make(NetworkPolicyManifest, d, where, **built, policy_types=_tuple(d, "policy_types", where),
                 ingress=_tuple(d, "ingress", where, _policy_rule), egress=_tuple(d, "egress", where, _policy_rule))


def _address(d, where):
    return _make(Address, d, where)


def _subset(d, where):
    _mapping(d, where)
    port = lambda p, at: _make(Port, p, at)  # noqa: E731
    return _make(Subset, d, where, addresses=_tuple(d, "addresses", where, _address),
                 not_ready=_tuple(d, "not_ready", where, _address), ports=_tuple(d, "ports", where, port))


def _endpoints(d, where):
    _mapping(d, where)
    return _make(Endpoints, d, where, subsets=_tuple(d, "subsets", where, _subset))


def _slice_endpoint(d, where):
    _mapping(d, where)
    return _make(SliceEndpoint, d, where, addresses=_tuple(d, "addresses", where))


def _endpoint_slice(d, where):
    _mapping(d, where)
    port = lambda p, at: _make(Port, p, at)  # noqa: E731
    labels = {"labels": dict(_mapping(d["labels"], f"{where}.labels"))} if "labels" in d else {}
    return _make(EndpointSlice, d, where, **labels, endpoints=_tuple(d, "endpoints", where, _slice_endpoint),
                 ports=_tuple(d, "ports", where, port))


def _cluster(d, where):
    _mapping(d, where)
    segments = tuple((cidr, cidr6, tuple(nodes)) for cidr, cidr6, nodes in d.get("lan_segments", ()))
    return _make(ClusterConfig, d, where, roles=_tuple(d, "roles", where), lan_segments=segments)


def _state(d):
    def each(key, make):
        return [make(x, at) for x, at in _items(d, key, "state")]
    ipam = _mapping(d.get("ipam", {}), "state.ipam")
    cluster = {"cluster": _cluster(d["cluster"], "state.cluster")} if "cluster" in d else {}
    return _make(ClusterState, d, "state", **cluster,
                 nodes=each("nodes", lambda n, at: _make(Node, n, at)),
                 pods=each("pods", _templated(Pod)), deployments=each("deployments", _templated(Deployment)),
                 services=each("services", _service), endpoints=each("endpoints", _endpoints),
                 endpoint_slices=each("endpoint_slices", _endpoint_slice),
                 ingresses=each("ingresses", _ingress), network_policies=each("network_policies", _network_policy),
                 ipam={k: _make(HostLocal, v, f"state.ipam[{k!r}]") for k, v in ipam.items()})


def from_json(d, path=STATE_FILE, lab=None):
    """The ClusterState of a record (of this netlab's version or an older one). StateUnreadable,
    naming `path`, when it is from a newer netlab or is not a lab's state."""
    try:
        _mapping(d, "the record")
        version = d.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise _Bad(f"its version {version!r} is not a state version")
        if version > STATE_VERSION:
            raise StateUnreadable(path, f"it was written by a newer netlab (state version {version}; this netlab "
                                        f"reads versions up to {STATE_VERSION})", lab)
        while version < STATE_VERSION:
            d, version = MIGRATIONS[version](d), version + 1
        return _state(d)
    except _Bad as e:
        raise StateUnreadable(path, f"it is not a lab's state: {e}", lab) from None
    except (TypeError, ValueError, KeyError, AttributeError) as e:     # a field of the wrong type
        raise StateUnreadable(path, f"it is not a lab's state ({type(e).__name__}: {e})", lab) from None


# --- revisions ---------------------------------------------------------------------------

# Where the API server keeps each kind in etcd (its storage prefixes: a Node is a "minion").
REGISTRY = (
    ("nodes", lambda o: f"/registry/minions/{o.name}"),
    ("pods", lambda o: f"/registry/pods/{o.namespace}/{o.name}"),
    ("deployments", lambda o: f"/registry/deployments/{o.namespace}/{o.name}"),
    ("services", lambda o: f"/registry/services/specs/{o.namespace}/{o.name}"),
    ("endpoints", lambda o: f"/registry/services/endpoints/{o.namespace}/{o.name}"),
    ("endpoint_slices", lambda o: f"/registry/endpointslices/{o.namespace}/{o.name}"),
    ("ingresses", lambda o: f"/registry/ingress/{o.namespace}/{o.name}"),
    ("network_policies", lambda o: f"/registry/networkpolicies/{o.namespace}/{o.name}"),
)


def _records(state):
    for kind, key in REGISTRY:
        for obj in getattr(state, kind, ()):
            k = key(obj)                     # a request's fields netlab does not model, and their owners, count too
            yield k, [asdict(obj), state.bodies.get(k), state.bodies.get(f"managers:{k}")]
    for name, record in state.namespaces.items():
        k = f"/registry/namespaces/{name}"
        yield k, [record, state.bodies.get(k), state.bodies.get(f"managers:{k}")]


def bump_revisions(state):
    """etcd's MVCC, as far as the API needs it: a key whose record changed since the last save
    is written at the next revision; a key that went is deleted. One revision per save, as one
    etcd transaction."""
    current = {}
    for key, record in _records(state):
        current[key] = hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    # A request's body and field owners go with their object (`netlab delete` removes the object).
    state.bodies = {k: v for k, v in state.bodies.items() if k.removeprefix("managers:") in current}
    old = state.revisions
    changed = [k for k, d in current.items() if old.get(k, [0, None])[1] != d] or (old.keys() - current.keys())
    if not changed:
        return
    state.revision += 1
    state.revisions = {k: (old[k] if k in old and old[k][1] == d else [state.revision, d]) for k, d in current.items()}


# --- the store ---------------------------------------------------------------------------

class Store:
    """One lab's state directory: state.json, a lock, and the files a node keeps."""

    def __init__(self, lab):
        self.lab = lab
        self.dir = names.state_dir(lab)

    @property
    def path(self):
        return self.dir / STATE_FILE

    def exists(self):
        return self.path.exists()

    def _make_dir(self):
        """The state root and the lab's directory, root's alone (0700), closed again if an
        older netlab left them open. A shared directory (sticky, as /tmp) that NETLAB_STATE_DIR
        may name is not netlab's to close: the lab's own directory still is."""
        names.STATE_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        for d in (names.STATE_ROOT, self.dir):
            mode = d.stat().st_mode
            if mode & 0o077 and not (mode & stat.S_ISVTX and d != self.dir):
                os.chmod(d, 0o700)

    @contextmanager
    def locked(self):
        """Serialize commands on this lab: kube-apiserver's optimistic concurrency, simplified."""
        self._make_dir()
        with os.fdopen(os.open(self.dir / "lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self):
        """The lab's state; LabNotFound without a record, StateUnreadable when it cannot be read."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            raise LabNotFound(f"no lab named {self.lab!r} (see `netlab status`)") from None
        except OSError as e:
            raise StateUnreadable(self.path, e.strerror or str(e), self.lab) from None
        try:
            d = json.loads(text)
        except ValueError as e:               # JSONDecodeError, or bytes that are not UTF-8
            raise StateUnreadable(self.path, f"it is not JSON ({e})", self.lab) from None
        return from_json(d, self.path, self.lab)

    def save(self, state):
        """Atomic replace: a reader sees the old state or the new one, never half of one. The
        keys whose records changed get the next revision (etcd's mod_revision: the API
        server's resourceVersion)."""
        bump_revisions(state)
        self._make_dir()
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)                  # a .tmp left by an older netlab may be open to all
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(to_json(state), indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def remove(self):
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


def all_labs():
    """Names of labs with a state directory on this machine, readable or not (a lab whose
    record cannot be read is still a lab: `status` names it, `cleanup` removes it)."""
    if not names.STATE_ROOT.is_dir():
        return []
    return sorted(p.name for p in names.STATE_ROOT.iterdir()
                  if names.DNS1123_LABEL.match(p.name) and (p / STATE_FILE).exists())
