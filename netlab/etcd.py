"""etcd / the API server: the lab's cluster state, persisted per lab and locked per command.

The state is the single source of truth every agent converges to. It is written before the
kernel is touched (intent first), so a command killed half-way leaves a record that the next
command converges and that `netlab down` removes.
"""

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from netlab import names
from netlab.endpoints import Address, Endpoints, Port, Subset
from netlab.errors import LabNotFound, NetlabError
from netlab.spec import (ClusterConfig, Container, ContainerPort, IngressManifest, IngressPath, IngressRule,
                         PodTemplate, ServiceManifest, ServicePort, Toleration)

STATE_FILE = "state.json"


@dataclass
class Node:
    name: str
    role: str
    ip: str
    pod_cidr: str
    vtep_mac: str
    labels: dict
    taints: list

    @property
    def netns(self):
        return self.name


@dataclass
class Pod:
    namespace: str
    name: str
    uid: str
    node: str
    template: PodTemplate
    container_id: str
    host_veth: str
    netns: str
    ip: str | None = None
    owner: str | None = None      # "Deployment/<name>" for pods a Deployment made
    ready: bool = True
    pids: list = field(default_factory=list)   # processes of containers with a command
    created: str = ""

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"

    @property
    def labels(self):
        return self.template.labels


@dataclass
class Deployment:
    namespace: str
    name: str
    replicas: int
    match_labels: dict
    template: PodTemplate
    template_hash: str


@dataclass
class HostLocal:
    """host-local IPAM's records for one node's range (/var/lib/cni/networks/cbr0)."""
    last_reserved: str | None = None
    allocated: dict = field(default_factory=dict)   # ip -> containerID


@dataclass
class ClusterState:
    lab: str
    cluster: ClusterConfig
    nodes: list = field(default_factory=list)
    pods: list = field(default_factory=list)
    deployments: list = field(default_factory=list)
    services: list = field(default_factory=list)     # ServiceManifest, addresses allocated
    endpoints: list = field(default_factory=list)    # Endpoints, written by the endpoints controller
    ingresses: list = field(default_factory=list)    # IngressManifest
    ipam: dict = field(default_factory=dict)         # node -> HostLocal
    processes: dict = field(default_factory=dict)    # name -> pid, processes the lab started
    netns: list = field(default_factory=list)        # every netns the lab may have created
    phase: str = "Pending"                           # Pending while being built, then Running
    created: str = ""
    synced: bool = True                              # False from a change's save until it converged
    faults: list = field(default_factory=list)       # faults asked for: {"kind", "targets"}

    def node(self, name):
        for n in self.nodes:
            if n.name == name:
                return n
        raise NetlabError(f"lab {self.lab}: no node named {name!r}")

    def pod(self, namespace, name):
        for p in self.pods:
            if p.namespace == namespace and p.name == name:
                return p
        raise NetlabError(f"lab {self.lab}: no pod {namespace}/{name}")

    def service(self, namespace, name):
        for s in self.services:
            if s.namespace == namespace and s.name == name:
                return s
        raise NetlabError(f"lab {self.lab}: no service {namespace}/{name}")

    def endpoints_of(self, service):
        return next((e for e in self.endpoints if e.key == service.key), None)

    def pods_on(self, node):
        return [p for p in self.pods if p.node == node]

    def lan_netns(self):
        return names.lan_netns(self.lab)

    def external_netns(self):
        return names.external_netns(self.lab)


# --- JSON --------------------------------------------------------------------------------

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
        """Atomic replace, then the per-node files that mirror a real node's disk."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(to_json(state), indent=1, sort_keys=True))
        os.replace(tmp, self.path)
        for node in state.nodes:
            self._write_node_files(state, node)

    def _write_node_files(self, state, node):
        from netlab import flannel  # the file's content is flannel's; the store only writes it
        root = names.node_dir(self.lab, node.name)
        env = root / "run" / "flannel" / "subnet.env"
        env.parent.mkdir(parents=True, exist_ok=True)
        env.write_text(flannel.subnet_env(state.cluster, node))
        records = root / "var" / "lib" / "cni" / "networks" / "cbr0"
        records.mkdir(parents=True, exist_ok=True)
        ipam = state.ipam.get(node.name, HostLocal())
        wanted = {ip: f"{cid}\r\n{names.POD_IFNAME}" for ip, cid in ipam.allocated.items()}
        if ipam.last_reserved:
            wanted["last_reserved_ip.0"] = ipam.last_reserved
        for f in records.iterdir():
            if f.name not in wanted and f.name != "lock":
                f.unlink()
        for fname, content in wanted.items():
            (records / fname).write_text(content)

    def remove(self):
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


def all_labs():
    """Names of labs with a state directory on this machine."""
    if not names.STATE_ROOT.is_dir():
        return []
    return sorted(p.name for p in names.STATE_ROOT.iterdir()
                  if names.DNS1123_LABEL.match(p.name) and (p / STATE_FILE).exists())
