"""The records the store persists: the API's objects as netlab keeps them (a Node, a Pod,
a Deployment, a Service's Endpoints, kubelet's host-local allocations) and the cluster state
that holds them all. Plain dataclasses: every layer above reads them; none of them acts."""

import hashlib
from dataclasses import dataclass, field

from netlab import names
from netlab.api.spec import ClusterConfig, PodTemplate
from netlab.errors import NetlabError


def service_uid(namespace, name):
    """A Service's metadata.uid, which its slices' ownerReferences carry: netlab keeps no uid for
    a Service, so it is derived from its namespace and name (UUID-shaped)."""
    h = hashlib.sha256(f"Service/{namespace}/{name}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


@dataclass(frozen=True)
class Address:
    ip: str
    node: str
    pod: str                   # the pod's name (targetRef), in the Service's namespace
    uid: str
    hostname: str | None = None


@dataclass(frozen=True)
class Port:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class Subset:
    addresses: tuple = ()
    not_ready: tuple = ()
    ports: tuple = ()


@dataclass(frozen=True)
class Endpoints:
    namespace: str
    name: str
    subsets: tuple = ()

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"


SERVICE_NAME_LABEL = "kubernetes.io/service-name"      # discovery.LabelServiceName: a slice's Service


@dataclass(frozen=True)
class SliceEndpoint:
    """One endpoint of an EndpointSlice (discovery.k8s.io/v1 Endpoint). A condition that is
    None is unset, as the API server's own slice leaves serving and terminating: readers take
    an unset ready or serving as true and an unset terminating as false."""
    addresses: tuple
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None
    node: str | None = None        # nodeName
    pod: str | None = None         # targetRef: a Pod in the slice's namespace
    uid: str = ""                  # the pod's uid (targetRef.uid)
    hostname: str | None = None
    zone: str | None = None


@dataclass(frozen=True)
class EndpointSlice:
    """discovery.k8s.io/v1 EndpointSlice: up to 100 endpoints of one Service sharing one set
    of ports (Port records; () for none)."""
    namespace: str
    name: str
    labels: dict                   # kubernetes.io/service-name names the Service
    address_type: str = "IPv4"
    endpoints: tuple = ()          # SliceEndpoint
    ports: tuple = ()              # Port
    generate_name: str = ""        # "<service>-" for the controller's; the API server names its own
    owner_uid: str = ""            # the owning Service's uid (ownerReferences); "" for none
    created: str = ""

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"

    @property
    def service(self):
        return self.labels.get(SERVICE_NAME_LABEL)


@dataclass
class Node:
    name: str
    role: str
    ip: str
    pod_cidr: str
    vtep_mac: str
    labels: dict
    taints: list
    created: str = ""             # when it joined; "" for the lab's own nodes (the lab's creation)
    ip6: str = ""                 # dual-stack and IPv6: its IPv6 address on the LAN
    pod_cidr6: str = ""           # dual-stack and IPv6: its IPv6 podCIDR (a /64); pod_cidr is "" in IPv6
    wg_public_key: str = ""       # wireguard backend: flanneld's public key (its private one: /run/flannel/wgkey)

    @property
    def ips(self):
        """status.addresses' InternalIPs (kubelet's node-ip): its LAN address of each family the
        cluster has, which are those it has a podCIDR of, the primary first. An IPv6 lab's
        nodes keep the IPv4 address Docker gives kind's containers, unused by Kubernetes."""
        return tuple(a for a, cidr in ((self.ip, self.pod_cidr), (self.ip6, self.pod_cidr6)) if a and cidr)

    @property
    def internal_ip(self):
        """status.addresses' first InternalIP: where the node's agents listen (6443, 10256)."""
        return self.ips[0]

    @property
    def pod_cidrs(self):
        """spec.podCIDRs: one per family, IPv4 first (spec.podCIDR is the first)."""
        return tuple(c for c in (self.pod_cidr, self.pod_cidr6) if c)

    @property
    def netns(self):
        return self.name


@dataclass
class Pod:
    namespace: str
    name: str
    uid: str
    node: str | None              # None: Pending, no node passes the scheduler's filters
    template: PodTemplate
    container_id: str
    host_veth: str                # "" until the pod is bound (the CNI names it then)
    netns: str                    # the name its sandbox gets; created only once bound
    ip: str | None = None
    owner: str | None = None      # "Deployment/<name>" for pods a Deployment made
    ready: bool = True
    pids: list = field(default_factory=list)   # processes of containers with a command
    created: str = ""
    unschedulable: str = ""       # the scheduler's FailedScheduling message while node is None
    ip6: str | None = None        # dual-stack: host-local's address from the node's IPv6 range

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"

    @property
    def ips(self):
        """status.podIPs: kubelet's order, the node's primary family (IPv4) first."""
        return tuple(a for a in (self.ip, self.ip6) if a)

    @property
    def pod_ip(self):
        """status.podIP: the first of podIPs (an IPv6 lab's pods have no IPv4 `ip`)."""
        return self.ip or self.ip6

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
    created: str = ""


@dataclass
class HostLocal:
    """host-local IPAM's records for one node (/var/lib/cni/networks/cbr0): one file per address
    held, of either range, and each range's last reserved address (last_reserved_ip.0, .1)."""
    last_reserved: str | None = None
    allocated: dict = field(default_factory=dict)   # ip -> containerID
    last_reserved6: str | None = None               # the IPv6 range's (last_reserved_ip.1)


@dataclass
class ClusterState:
    lab: str
    cluster: ClusterConfig
    nodes: list = field(default_factory=list)
    pods: list = field(default_factory=list)
    deployments: list = field(default_factory=list)
    services: list = field(default_factory=list)     # ServiceManifest, addresses allocated
    endpoints: list = field(default_factory=list)    # Endpoints, written by the endpoints controller
    endpoint_slices: list = field(default_factory=list)   # EndpointSlice, written by its controller and the API server
    ingresses: list = field(default_factory=list)    # IngressManifest
    network_policies: list = field(default_factory=list)   # NetworkPolicyManifest
    ipam: dict = field(default_factory=dict)         # node -> HostLocal
    processes: dict = field(default_factory=dict)    # name -> pid, processes the lab started
    netns: list = field(default_factory=list)        # every netns the lab may have created
    phase: str = "Pending"                           # Pending while being built, then Running
    created: str = ""
    synced: bool = True                              # False from a change's save until it converged
    faults: list = field(default_factory=list)       # faults asked for: {"kind", "targets"}
    api_port: int = 0                                # kube-apiserver's loopback port (kind publishes one)
    namespaces: dict = field(default_factory=dict)   # name -> {"labels", "created"}: those created by a request
    revision: int = 0                                # etcd's revision: one more for every save that changed a key
    revisions: dict = field(default_factory=dict)    # registry key -> [mod revision, digest of its record]
    bodies: dict = field(default_factory=dict)       # registry key -> the object as a request wrote it (no status)
    stale_chains: dict = field(default_factory=dict)  # netns -> {chain: when flushed}: kube-proxy's (nftables) to delete
    wireguard: str = ""                              # what serves flannel's WireGuard devices: kernel or wireguard-go

    def find_node(self, name):
        """The node called `name`, kind's full name (<lab>-worker) or without the lab's prefix
        (worker), as `netlab node add` takes it; None when there is none. A full name wins."""
        for wanted in (name, f"{self.lab}-{name}"):
            for n in self.nodes:
                if n.name == wanted:
                    return n
        return None

    def node(self, name):
        """find_node, or an error naming the lab's nodes."""
        node = self.find_node(name) if name else None
        if node is None:
            raise NetlabError(f"lab {self.lab}: no node named {name!r} (nodes: {', '.join(n.name for n in self.nodes)})")
        return node

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

    def slices_of(self, service):
        """A Service's EndpointSlices: those labelled with its name in its namespace."""
        return [s for s in self.endpoint_slices
                if s.namespace == service.namespace and s.service == service.name]

    def pods_on(self, node):
        return [p for p in self.pods if p.node == node]

    def scheduled_pods(self):
        """The pods bound to a node: the only ones with a sandbox, an address and processes."""
        return [p for p in self.pods if p.node is not None]

    def lan_netns(self):
        return names.lan_netns(self.lab)

    def external_netns(self):
        return names.external_netns(self.lab)


# --- JSON --------------------------------------------------------------------------------
