"""etcd: the lab's cluster state (netlab.api.objects), persisted per lab and locked per command.

The state is the single source of truth every agent converges to. It is written before the
kernel is touched (intent first), so a command killed half-way leaves a record that the next
command converges and that `netlab down` removes.
"""

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import asdict

from netlab import names
from netlab.api.objects import Address, ClusterState, Deployment, Endpoints, HostLocal, Node, Pod, Port, Subset
from netlab.api.spec import (ClusterConfig, Container, ContainerPort, IngressManifest, IngressPath, IngressRule,
                             PodTemplate, ServiceManifest, ServicePort, Toleration)
from netlab.errors import LabNotFound

STATE_FILE = "state.json"


def to_json(state):
    return asdict(state)


def _template(d):
    containers = tuple(
        Container(c["name"], c["image"], tuple(c["command"]), tuple(c["args"]),
                  tuple(ContainerPort(**p) for p in c["ports"]))
        for c in d["containers"])
    return PodTemplate(
        labels=d["labels"], containers=containers, node_name=d["node_name"],
        node_selector=d["node_selector"],
        tolerations=tuple(Toleration(**t) for t in d["tolerations"]),
        hostname=d["hostname"], subdomain=d["subdomain"])


def _service(d):
    return ServiceManifest(**{**d, "ports": tuple(ServicePort(**p) for p in d["ports"]),
                              "external_ips": tuple(d["external_ips"]),
                              "load_balancer_source_ranges": tuple(d.get("load_balancer_source_ranges", ()))})


def _ingress(d):
    backend = lambda b: IngressPath(**b) if b else None  # noqa: E731
    return IngressManifest(d["namespace"], d["name"],
                           tuple(IngressRule(r["host"], tuple(backend(p) for p in r["paths"])) for r in d["rules"]),
                           backend(d["default_backend"]), d["ingress_class"], d["created"])


def _endpoints(d):
    subsets = tuple(Subset(tuple(Address(**a) for a in s["addresses"]),
                           tuple(Address(**a) for a in s["not_ready"]),
                           tuple(Port(**p) for p in s["ports"])) for s in d["subsets"])
    return Endpoints(d["namespace"], d["name"], subsets)


def from_json(d):
    state = ClusterState(lab=d["lab"], cluster=ClusterConfig(**{
        **d["cluster"], "roles": tuple(d["cluster"]["roles"])}))
    state.nodes = [Node(**n) for n in d["nodes"]]
    state.pods = [Pod(**{**p, "template": _template(p["template"])}) for p in d["pods"]]
    state.deployments = [Deployment(**{**x, "template": _template(x["template"])}) for x in d["deployments"]]
    state.services = [_service(s) for s in d.get("services", [])]
    state.endpoints = [_endpoints(e) for e in d.get("endpoints", [])]
    state.ingresses = [_ingress(i) for i in d.get("ingresses", [])]
    state.ipam = {k: HostLocal(**v) for k, v in d["ipam"].items()}
    state.processes = d["processes"]
    state.netns = d["netns"]
    state.phase = d["phase"]
    state.created = d["created"]
    state.synced = d.get("synced", True)
    state.faults = d.get("faults", [])
    return state


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

    @contextmanager
    def locked(self):
        """Serialize commands on this lab: kube-apiserver's optimistic concurrency, simplified."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self):
        try:
            return from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            raise LabNotFound(f"no lab named {self.lab!r} (see `netlab status`)") from None

    def save(self, state):
        """Atomic replace: a reader sees the old state or the new one, never half of one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(to_json(state), indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def remove(self):
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


def all_labs():
    """Names of labs with a state directory on this machine."""
    if not names.STATE_ROOT.is_dir():
        return []
    return sorted(p.name for p in names.STATE_ROOT.iterdir()
                  if names.DNS1123_LABEL.match(p.name) and (p / STATE_FILE).exists())
