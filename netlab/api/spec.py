"""The lab file: kind's Cluster document, netlab's Lab document, Kubernetes manifests.

Parsing is pure and total: it returns a LabSpec or raises one SpecError naming the file,
the object and the field. Nothing is created until the whole input is valid. Fields that do
not matter to networking are accepted and ignored, as a pasted manifest carries many; the
Cluster and Lab documents are read strictly, as kind reads its file (a field they do not
have is a typo to hear of), and no mapping of any document may hold a key twice.
"""

import difflib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from netlab import names
from netlab.api import netconf
from netlab.errors import SpecError

KIND_API = "kind.x-k8s.io/v1alpha4"
NETLAB_API = "netlab.io/v1alpha1"
ROLES = ("control-plane", "worker")
PROTOCOLS = ("TCP", "UDP")
# How rules reach the kernel: kube-proxy's own way (iptables-restore, the system's iptables,
# nft or legacy), or libiptc through python-iptables (legacy tables only).
APPLIERS = ("iptables-restore", "python-iptables")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
LB_MODES = ("cloud", "metallb")
NODE_PORT_RANGE = (30000, 32767)
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Kinds that carry nothing netlab models; accepted so real manifests paste cleanly.
IGNORED_KINDS = {"ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding",
                 "ClusterRole", "ClusterRoleBinding", "PersistentVolumeClaim",
                 "HorizontalPodAutoscaler", "PodDisruptionBudget"}
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
MAX_LAB_NAME = 32
MAX_REPLICAS = 10000
# IPv4 space no pod, Service or node may be numbered from (RFC 6890's table): the kernel
# treats each specially, so a lab built on one looks up and fails in confusing ways.
SPECIAL_RANGES = tuple((ipaddress.ip_network(n), what) for n, what in (
    ("0.0.0.0/8", 'IPv4\'s "this network" range, which no host may hold'),
    ("127.0.0.0/8", "IPv4's loopback range (a packet to it never leaves the sender)"),
    ("169.254.0.0/16", "IPv4's link-local range (routers never forward it)"),
    ("224.0.0.0/4", "IPv4's multicast range (it names groups, not hosts)"),
    ("240.0.0.0/4", "IPv4's reserved range (and the broadcast address)"),
))
SPECIAL_RANGES6 = tuple((ipaddress.ip_network(n), what) for n, what in (
    ("::/8", "IPv6's reserved range (the unspecified and loopback addresses, IPv4-mapped ones)"),
    ("fe80::/10", "IPv6's link-local range (routers never forward it)"),
    ("ff00::/8", "IPv6's multicast range (it names groups, not hosts)"),
))
IPV4_ONLY = "netlab is IPv4 only for now"
IP_FAMILIES = ("ipv4", "ipv6", "dual")        # kind's networking.ipFamily
# kind's defaults for the IPv6 family (the IPv4 service subnet stays kubeadm's 10.96.0.0/12 here,
# where kind gives 10.96.0.0/16), and the ULA /64 Docker gives kind's network "kind".
POD_SUBNET6, SERVICE_SUBNET6, LAN_CIDR6 = "fd00:10:244::/56", "fd00:10:96::/112", "fc00:f853:ccd:e793::/64"
NODE_MASK6 = 64                                # kube-controller-manager's --node-cidr-mask-size-ipv6
DUAL_MIN_MTU = 1350                            # flannel-v6.1's MTU (70 less) must hold IPv6's minimum 1280
# The kernel's file-name limit (NAME_MAX): a netns is a file under /run/netns (iproute2 refuses
# longer names), and a pod's resolver files are a folder under /etc/netns of the same name.
NAME_MAX = 255


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class Container:
    name: str
    image: str = ""
    command: tuple = ()
    args: tuple = ()
    ports: tuple = ()


@dataclass(frozen=True)
class Toleration:
    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None

    def tolerates(self, taint):
        """Kubernetes' rule: an empty key with Exists tolerates everything."""
        if self.effect and self.effect != taint["effect"]:
            return False
        if self.key is None:
            return self.operator == "Exists"
        if self.key != taint["key"]:
            return False
        return self.operator == "Exists" or (self.value or "") == taint.get("value", "")


@dataclass(frozen=True)
class PodTemplate:
    labels: dict
    containers: tuple
    node_name: str | None = None
    node_selector: dict = field(default_factory=dict)
    tolerations: tuple = ()
    hostname: str | None = None
    subdomain: str | None = None


@dataclass(frozen=True)
class PodManifest:
    namespace: str
    name: str
    template: PodTemplate


@dataclass(frozen=True)
class DeploymentManifest:
    namespace: str
    name: str
    replicas: int
    match_labels: dict
    template: PodTemplate


@dataclass(frozen=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    name: str = ""                 # "" when the Service has a single unnamed port
    target_port: int | str = 0     # a number, or the name of a containerPort
    node_port: int | None = None   # None: allocated for NodePort Services


@dataclass(frozen=True)
class ServiceManifest:
    namespace: str
    name: str
    labels: dict = field(default_factory=dict)
    type: str = "ClusterIP"
    cluster_ip: str | None = None  # None: allocated; "None": headless
    ports: tuple = ()
    selector: dict | None = None   # None: no selector, endpoints are not managed
    session_affinity: str = "None"
    affinity_timeout: int = 10800
    external_traffic_policy: str | None = None     # set (Cluster by default) when externally reachable
    internal_traffic_policy: str = "Cluster"
    external_ips: tuple = ()
    external_name: str | None = None
    load_balancer_source_ranges: tuple = ()
    load_balancer_ip: str | None = None          # asked for (spec.loadBalancerIP), then status.loadBalancer
    health_check_node_port: int | None = None
    load_balancer_ip_mode: str | None = None     # status: VIP (kube-proxy captures the IP) or Proxy
    created: str = ""
    ip_family_policy: str | None = None          # SingleStack, PreferDualStack, RequireDualStack (None: defaulted)
    ip_families: tuple = ()                      # ("IPv4",), ("IPv6",), both in either order; (): defaulted
    cluster_ips: tuple = ()                      # spec.clusterIPs: one per family of ip_families, [0] == cluster_ip
    load_balancer_ips: tuple = ()                # dual-stack lab: status.loadBalancer.ingress, one per family

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"

    @property
    def headless(self):
        return self.cluster_ip == "None"

    def cluster_ip_of(self, family):
        """The Service's ClusterIP of `family` ("IPv4" or "IPv6"), or None when it has none
        (single-stack of the other family, headless, ExternalName). Before the dual-stack fields
        are allocated, cluster_ip alone stands for IPv4."""
        if self.headless or self.cluster_ip is None:
            return None
        ips = self.cluster_ips or (self.cluster_ip,)
        return next((ip for ip in ips if (":" in ip) == (family == "IPv6")), None)

    @property
    def families(self):
        """The Service's IP families, primary first ("IPv4" when nothing says otherwise)."""
        return self.ip_families or ("IPv4",)

    def load_balancer_ip_of(self, family):
        """The Service's load-balancer address of `family`, or None. In an IPv4 lab (and before
        a dual-stack one allocates) load_balancer_ip alone stands for IPv4; a dual-stack lab's
        load_balancer_ips hold one address per family of the Service."""
        ips = self.load_balancer_ips or ((self.load_balancer_ip,) if self.load_balancer_ip else ())
        return next((ip for ip in ips if (":" in ip) == (family == "IPv6")), None)


@dataclass(frozen=True)
class IngressPath:
    path: str
    path_type: str                 # Exact | Prefix (ImplementationSpecific is read as Prefix)
    service: str
    port: int | str                # the backend Service's port number or name


@dataclass(frozen=True)
class IngressRule:
    host: str | None
    paths: tuple = ()


@dataclass(frozen=True)
class IngressManifest:
    namespace: str
    name: str
    rules: tuple = ()
    default_backend: IngressPath | None = None
    ingress_class: str | None = None
    created: str = ""

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class LabelSelector:
    """metav1.LabelSelector: matchLabels and matchExpressions, ANDed; an empty one matches
    everything."""
    match_labels: dict = field(default_factory=dict)
    match_expressions: tuple = ()      # (key, operator In|NotIn|Exists|DoesNotExist, (values...))

    def matches(self, labels):
        for k, v in self.match_labels.items():
            if labels.get(k) != v:
                return False
        for key, op, values in self.match_expressions:
            if op == "In" and labels.get(key) not in values:
                return False
            if op == "NotIn" and key in labels and labels[key] in values:
                return False
            if op == "Exists" and key not in labels:
                return False
            if op == "DoesNotExist" and key in labels:
                return False
        return True


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    excepts: tuple = ()                # the CIDRs of `except`


@dataclass(frozen=True)
class PolicyPeer:
    """One entry of `from` / `to`: a podSelector, a namespaceSelector, both (ANDed), or an
    ipBlock. A podSelector alone means the policy's namespace."""
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    protocol: str = "TCP"
    port: int | str | None = None      # None: every port; a str: a named container port
    end_port: int | None = None


@dataclass(frozen=True)
class PolicyRule:
    """One ingress or egress rule: traffic from/to any of `peers` (() = everyone) on any of
    `ports` (() = every port)."""
    peers: tuple = ()
    ports: tuple = ()


@dataclass(frozen=True)
class NetworkPolicyManifest:
    """networking.k8s.io/v1 NetworkPolicy. `policy_types` is as the API server defaults it:
    Ingress, plus Egress when egress rules are given."""
    namespace: str
    name: str
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    policy_types: tuple = ("Ingress",)
    ingress: tuple = ()                # PolicyRule
    egress: tuple = ()                 # PolicyRule
    created: str = ""

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class NamespaceManifest:
    """A v1 Namespace of the lab file: its labels (what NetworkPolicies' namespaceSelectors
    select); the API server's kubernetes.io/metadata.name is added where it is read."""
    name: str
    labels: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterConfig:
    name: str = "kind"
    roles: tuple = ("control-plane",)
    pod_subnet: str = "10.244.0.0/16"
    service_subnet: str = "10.96.0.0/12"
    kube_proxy_mode: str = "iptables"
    lan_cidr: str = "172.18.0.0/16"
    underlay_mtu: int = 1500
    iptables_applier: str = "iptables-restore"
    dns_replicas: int = 2          # kubeadm's CoreDNS Deployment runs two
    dns_ttl: int = 30              # kubeadm's Corefile: `ttl 30`
    lb_mode: str = "cloud"         # a cloud load balancer per Service, or MetalLB's layer 2 mode
    lb_pool: str = ""              # "first-last"; "" is default_lb_pool(): kind users' .255.200-.255.250
    lb_pool6: str = ""             # dual, MetalLB: the pool's IPv6 "first-last"; "": the IPv4 pool's twins
    ingress: str = ""              # "", "NodePort" or "LoadBalancer": how ingress-nginx is exposed
    ingress_ip_family_policy: str = ""   # its Service's ipFamilyPolicy; "": deploy.yaml's SingleStack (IPv4)
    ip_family: str = "ipv4"        # kind's networking.ipFamily: ipv4, ipv6, or dual (IPv4 first)
    pod_subnet6: str = ""          # dual, ipv6: the IPv6 pod subnet (kind's fd00:10:244::/56)
    service_subnet6: str = ""      # dual, ipv6: the IPv6 service subnet (kind's fd00:10:96::/112)
    lan_cidr6: str = ""            # dual, ipv6: the LAN's IPv6 range (Docker's ULA /64 for kind)
    # More L2 segments beside the LAN's own, routed to it by the LAN's namespace: ((IPv4 CIDR,
    # IPv6 CIDR or "", (node names, without the lab's prefix)), ...)
    lan_segments: tuple = ()
    # flanneld's backend (net-conf.json's Backend): vxlan, host-gw or wireguard, and its options
    flannel_backend: str = "vxlan"
    vxlan_vni: int = 1
    vxlan_port: int = 0            # 0: the kernel's default port, 8472
    direct_routing: bool = False   # vxlan: plain routes to nodes on the node's own subnet
    backend_mtu: int = 0           # vxlan, wireguard: the packets' MTU (0: the uplink's)
    wg_listen_port: int = 51820
    wg_listen_port6: int = 51821
    wg_psk: str = ""
    wg_keepalive: int = 0          # PersistentKeepaliveInterval, seconds (0: off)
    wg_mode: str = "separate"      # one tunnel per family, or one for both (auto, ipv4, ipv6)

    @property
    def node_names(self):
        return names.node_names(self.name, self.roles)

    @property
    def ipv4(self):
        """The cluster has IPv4 (kind's ipv4 and dual): pods, Services and nodes' InternalIPs."""
        return bool(self.pod_subnet)

    @property
    def ipv6(self):
        """The cluster has IPv6 (kind's ipv6 and dual)."""
        return bool(self.pod_subnet6)

    @property
    def dual(self):
        """A dual-stack cluster: IPv4 the primary family, IPv6 the secondary."""
        return self.ipv4 and self.ipv6

    @property
    def families(self):
        """The cluster's IP families, primary first, as Services' ipFamilies name them."""
        return tuple(f for f, on in (("IPv4", self.ipv4), ("IPv6", self.ipv6)) if on)

    @property
    def primary(self):
        """The primary family: the first of the service subnets (IPv6 in kind's ipv6 labs)."""
        return self.families[0]

    @property
    def pod_subnets(self):
        return tuple(s for s in (self.pod_subnet, self.pod_subnet6) if s)

    @property
    def service_subnets(self):
        return tuple(s for s in (self.service_subnet, self.service_subnet6) if s)


@dataclass(frozen=True)
class LabSpec:
    cluster: ClusterConfig
    pods: tuple = ()
    deployments: tuple = ()
    services: tuple = ()
    ingresses: tuple = ()
    sources: tuple = ()
    network_policies: tuple = ()
    namespaces: tuple = ()             # NamespaceManifest
    flannel: dict | None = None        # applied to a running lab: kube-flannel-cfg's backend (ClusterConfig fields)


def load(labfile=None, manifest_paths=(), cluster=None, nodes=None):
    """Read a lab file (None: kind's defaults) and extra manifest files or folders. With
    `cluster` (a running lab's), the files are manifests to apply to it: no Cluster or Lab."""
    docs = []
    if labfile is not None:
        docs += _read_documents(Path(labfile))
        if cluster is None:
            _check_lab_file(Path(labfile), docs)
    for path in manifest_paths:
        for f in _manifest_files(Path(path)):
            docs += _read_documents(f)
    return build(docs, cluster, nodes)


def build(docs, cluster=None, nodes=None):
    """docs: [(file, index, mapping)] → LabSpec, or SpecError at the first wrong field."""
    cluster_docs = [d for d in docs if d[2].get("kind") == "Cluster"]
    lab_docs = [d for d in docs if d[2].get("kind") == "Lab"]
    if cluster is not None and (cluster_docs or lab_docs):
        f, i, doc = (cluster_docs + lab_docs)[0]
        raise SpecError(f, f"document {i + 1}", "kind",
                        f"a {doc['kind']} document: a running lab's cluster is fixed (apply Pods, Deployments, Services)")
    for kind, found in (("Cluster", cluster_docs), ("Lab", lab_docs)):
        if len(found) > 1:
            f, i, _ = found[1]
            raise SpecError(f, f"document {i + 1}", "kind", f"a second {kind} document; a lab has one")
    flannel_docs = [d for d in docs if netconf.is_configmap(d[2])]
    if len(flannel_docs) > 1:
        f, i, _ = flannel_docs[1]
        raise SpecError(f, f"document {i + 1}", "metadata.name", "a second kube-flannel-cfg; flannel reads one")
    flannel = None
    if cluster is None:
        cluster = _cluster(cluster_docs[0] if cluster_docs else None, lab_docs[0] if lab_docs else None,
                           flannel_docs[0] if flannel_docs else None)
    elif flannel_docs:                 # a running lab's flanneld reads its new net-conf.json
        f, _, doc = flannel_docs[0]
        flannel = netconf.from_configmap(_At(f, f"ConfigMap {netconf.CONFIGMAP[0]}/{netconf.CONFIGMAP[1]}", doc),
                                         cluster, _refuse_unknown)
    pods, deployments, services, ingresses, policies, namespaces, seen = [], [], [], [], [], [], {}
    for f, i, doc in docs:
        kind = doc.get("kind")
        if kind in ("Cluster", "Lab") or kind in IGNORED_KINDS:
            continue
        if kind == "Pod":
            obj = _pod(f, doc, cluster, nodes)
            pods.append(obj)
        elif kind == "Deployment":
            obj = _deployment(f, doc, cluster, nodes)
            deployments.append(obj)
        elif kind == "Service":
            obj = _service(f, doc, cluster)
            services.append((f, obj))
        elif kind == "Ingress":
            obj = _ingress(f, doc)
            ingresses.append(obj)
        elif kind == "NetworkPolicy":
            obj = _network_policy(f, doc)
            policies.append(obj)
        elif kind == "Namespace":
            obj = _namespace(f, doc)
            namespaces.append(obj)
        else:
            raise SpecError(f, f"document {i + 1}", "kind",
                            f"kind {kind!r} is not supported (supported: Cluster, Lab, Pod, Deployment, Service, "
                            f"Ingress, NetworkPolicy, Namespace)")
        key = (kind, getattr(obj, "namespace", ""), obj.name)
        if key in seen:
            raise SpecError(f, f"{kind} {obj.namespace}/{obj.name}" if key[1] else f"{kind} {obj.name}",
                            "metadata.name", f"duplicate name: already defined in {seen[key]}")
        seen[key] = f
    _check_service_addresses(services)
    return LabSpec(cluster, tuple(pods), tuple(deployments), tuple(s for _, s in services), tuple(ingresses),
                   tuple(sorted({str(d[0]) for d in docs})), network_policies=tuple(policies),
                   namespaces=tuple(namespaces), flannel=flannel)


def _check_lab_file(path, docs):
    """A lab file names its cluster: kind's Cluster document. Without one, kind would make its
    one-node cluster `kind`, which is rarely what an empty file or a file of manifests meant."""
    if any(doc.get("kind") == "Cluster" for _, _, doc in docs):
        return
    if not docs:
        raise SpecError(path, None, None, f"the lab file is empty: it needs a kind Cluster document "
                        f"(kind: Cluster, apiVersion: {KIND_API})")
    manifests = sorted({doc["kind"] for _, _, doc in docs if doc.get("kind") != "Lab"}, key=str)
    if manifests:
        raise SpecError(path, None, None, f"holds manifests ({', '.join(map(str, manifests))}) but no kind Cluster "
                        f"document: to add them to the default lab run `netlab up -f {path}`, or put a kind "
                        f"Cluster document (kind: Cluster, apiVersion: {KIND_API}) first")
    raise SpecError(path, None, None, f"has a Lab document but no kind Cluster document "
                    f"(kind: Cluster, apiVersion: {KIND_API}) naming the cluster and its nodes")


# --- reading -----------------------------------------------------------------------------

def _manifest_files(path):
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    if not path.exists():
        raise SpecError(path, None, None, "no such file or directory")
    return [path]


def _read_documents(path):
    """[(file, index, mapping)] of a YAML or JSON file, read as kind and the API server read
    theirs: UTF-8 text, and each mapping holding a key once (their strict decoders refuse a
    duplicate; PyYAML would keep the last silently)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(path, None, None, e.strerror or str(e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(path, None, None, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}): "
                        f"lab files and manifests are YAML or JSON in UTF-8") from None
    docs = []
    for i, duplicate, doc in _parse(path, text):
        if duplicate:
            field_path, label, line, first = duplicate
            raise SpecError(path, _document_name(i, doc), field_path,
                            f"duplicate key {label!r} at line {line} (first at line {first}): a mapping holds a "
                            f"key once, as kind's and the API server's strict decoding require")
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise SpecError(path, f"document {i + 1}", None, "a document must be a mapping")
        if "kind" not in doc:
            raise SpecError(path, f"document {i + 1}", "kind", "missing")
        docs.append((path, i, doc))
    return docs


def _parse(path, text):
    """(index, first duplicate key or None, document) for each YAML document: composed first,
    so that the duplicate check sees every key with its line (constructing flattens merge
    keys into the node), then constructed as yaml.safe_load_all would."""
    out, loader = [], None
    try:
        loader = yaml.SafeLoader(text)
        while loader.check_node():
            node = loader.get_node()
            duplicate = _first_duplicate_key(node, "", set())
            out.append((len(out), duplicate, loader.construct_document(node)))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        if isinstance(e, yaml.reader.ReaderError):          # a character YAML does not allow (NUL, ...)
            where, problem = f"offset {e.position}", f"character #x{e.character:04x} is not allowed in YAML"
        else:
            problem = getattr(e, "problem", None) or " ".join(str(e).split())
        raise SpecError(path, where, None, f"invalid YAML: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return out


def _document_name(i, doc):
    """How errors name a document before it is validated: its kind and name, as far as they go."""
    kind, meta = doc.get("kind"), doc.get("metadata")
    if kind in ("Cluster", "Lab"):
        return kind
    name = meta.get("name") if isinstance(meta, dict) else None
    if isinstance(kind, str) and isinstance(name, str):
        namespace = meta.get("namespace")
        return f"{kind} {namespace if isinstance(namespace, str) else 'default'}/{name}"
    return f"document {i + 1}"


YAML_MERGE = "tag:yaml.org,2002:merge"


def _first_duplicate_key(node, where, seen_nodes):
    """(field path, key, line, first line) of the first key a mapping holds twice, or None.
    (A `<<` merge key may repeat what it merges: that is YAML's rule, not a duplicate.)
    Anchored nodes are walked once."""
    if id(node) in seen_nodes:
        return None
    seen_nodes.add(id(node))
    found = None
    if isinstance(node, yaml.MappingNode):
        first = {}
        for key, value in node.value:
            if key.tag == YAML_MERGE:
                found = _first_duplicate_key(value, where, seen_nodes)
            else:
                label = key.value if isinstance(key, yaml.ScalarNode) else "?"
                field_path = f"{where}.{label}" if where else label
                if isinstance(key, yaml.ScalarNode):
                    ident = (key.tag, key.value)
                    if ident in first:
                        return field_path, label, key.start_mark.line + 1, first[ident]
                    first[ident] = key.start_mark.line + 1
                found = _first_duplicate_key(value, field_path, seen_nodes)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for j, item in enumerate(node.value):
            found = _first_duplicate_key(item, f"{where}[{j}]", seen_nodes)
            if found:
                return found
    return None


# --- a small walker that knows where it is, so every error names its field --------------

class _At:
    def __init__(self, file, obj, value, path=""):
        self.file, self.obj, self.value, self.path = file, obj, value, path

    def error(self, message):
        return SpecError(self.file, self.obj, self.path or None, message)

    def child(self, key):
        if not isinstance(self.value, dict):
            return _At(self.file, self.obj, None, self._join(key))
        return _At(self.file, self.obj, self.value.get(key), self._join(key))

    def _join(self, key):
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def items(self):
        """List elements, or the empty list; anything else is an error."""
        if self.value is None:
            return []
        if not isinstance(self.value, list):
            raise self.error("must be a list")
        return [_At(self.file, self.obj, v, self._join(i)) for i, v in enumerate(self.value)]

    def mapping(self, required=False):
        if self.value is None:
            if required:
                raise self.error("required")
            return {}
        if not isinstance(self.value, dict):
            raise self.error("must be a mapping")
        return self.value

    def string_map(self):
        m = self.mapping()
        for k, v in m.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise self.error(f"{k!r}: keys and values must be strings")
        return dict(m)

    def string(self, default=None, required=False, pattern=None, what=None, max_len=None):
        v = self.value
        if v is None:
            if required:
                raise self.error("required")
            return default
        if not isinstance(v, str):
            raise self.error(f"must be a string, not {v!r}")
        if pattern is not None and not pattern.match(v):
            raise self.error(f"{v!r} is not a valid {what}")
        if max_len is not None and len(v) > max_len:
            shown = repr(v) if len(v) <= 40 else f"{v[:32]!r}... ({len(v)} characters)"
            raise self.error(f"{shown} is longer than {max_len} characters")
        return v

    def integer(self, default=None, required=False, lo=None, hi=None):
        v = self.value
        if v is None:
            if required:
                raise self.error("required")
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(f"must be an integer, not {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):     # apimachinery's validation messages
            if lo is not None and hi is not None:
                raise self.error(f"{v}: must be between {lo} and {hi}, inclusive")
            raise self.error(f"{v}: must be greater than or equal to {lo}" if lo is not None and v < lo
                             else f"{v}: must be less than or equal to {hi}")
        return v

    def network6(self, default):
        """An IPv6 CIDR a range of the lab's addresses comes from: ordinary unicast space."""
        v = self.string(default)
        try:
            net = ipaddress.ip_network(v, strict=True)
        except ValueError as e:
            raise self.error(f"{v!r} is not a valid CIDR ({e})") from None
        if net.version != 6:
            raise self.error(f"{v!r}: expected IPv6 CIDR for IPv6 family")
        for special, what in SPECIAL_RANGES6:
            if net.overlaps(special):
                raise self.error(f"{net} {'lies in' if net.subnet_of(special) else 'overlaps'} {special}, {what}: "
                                 f"the lab's addresses must be ordinary unicast ones")
        return str(net)

    def choice(self, options, default):
        v = self.string(default)
        if v not in options:
            raise self.error(f"{v!r} must be one of {', '.join(options)}")
        return v

    def network(self, default, assigned=False):
        """An IPv4 CIDR. `assigned`: a range the lab gives addresses from (pods, Services, the
        LAN), so it must be ordinary unicast space (a source range may be anything, 0.0.0.0/0)."""
        v = self.string(default)
        if "," in v:
            raise self.error(f"{v!r}: {SINGLE} (a dual-stack pair needs ipFamily: dual)")
        try:
            net = ipaddress.ip_network(v, strict=True)
        except ValueError as e:
            raise self.error(f"{v!r} is not a valid CIDR ({e})") from None
        if net.version != 4:
            raise self.error(f"{v!r}: expected IPv4 CIDR for IPv4 family")
        if assigned:
            for special, what in SPECIAL_RANGES:
                if net.overlaps(special):
                    where = (f"is {what}" if net == special else
                             f"{'lies in' if net.subnet_of(special) else 'overlaps'} {special}, {what}")
                    raise self.error(f"{net} {where}: the lab's addresses must be ordinary unicast ones")
        return str(net)


KUBE_PROXY_MODES = ("iptables", "nftables")


def _kube_proxy_mode(at, default):
    """kind's kubeProxyMode: iptables (its default) or nftables; kind's other two are refused,
    each with its reason."""
    mode = at.string(default)
    if mode == "ipvs":
        why = ("this kernel has no IPVS (/proc/net/ip_vs is missing)" if not os.path.exists("/proc/net/ip_vs")
               else "netlab models kube-proxy's iptables and nftables modes; IPVS mode is out of its scope")
        raise at.error(f"'ipvs': {why}; use iptables or nftables")
    if mode == "none":
        raise at.error("'none': netlab runs kube-proxy on every node; use iptables or nftables")
    if mode not in KUBE_PROXY_MODES:
        raise at.error(f"invalid kubeProxyMode: {mode!r} (kind takes iptables, nftables, ipvs or none)")
    return mode


def _expect_api(at, expected):
    api = at.child("apiVersion").string(required=True)
    if api != expected:
        raise at.child("apiVersion").error(f"{api!r} must be {expected}")


# --- Cluster and Lab ---------------------------------------------------------------------

# kind's v1alpha4 Cluster, field by field (sigs.k8s.io/kind/pkg/apis/config/v1alpha4/types.go).
# kind decodes the file strictly (yaml.v3 KnownFields): a field it does not know is an error,
# so a typo (`podSubnt`) is heard of rather than leaving the default in place. Fields netlab
# has no use for (image, extraMounts, featureGates ...) are taken and ignored, their shape
# checked as kind checks it. A dict is an object; ("list", X) and ("map", X) hold X's.
_STR, _INT, _BOOL = "string", "integer", "boolean"
_KIND_PATCH_JSON6902 = {"group": _STR, "version": _STR, "kind": _STR, "patch": _STR}
KIND_NODE = {
    "role": _STR, "image": _STR, "labels": ("map", _STR),
    "extraMounts": ("list", {"containerPath": _STR, "hostPath": _STR, "readOnly": _BOOL,
                             "selinuxRelabel": _BOOL, "propagation": _STR}),
    "extraPortMappings": ("list", {"containerPort": _INT, "hostPort": _INT, "listenAddress": _STR,
                                   "protocol": _STR}),
    "kubeadmConfigPatches": ("list", _STR),
    "kubeadmConfigPatchesJSON6902": ("list", _KIND_PATCH_JSON6902),
}
KIND_NETWORKING = {
    "ipFamily": _STR, "apiServerPort": _INT, "apiServerAddress": _STR, "podSubnet": _STR,
    "serviceSubnet": _STR, "disableDefaultCNI": _BOOL, "kubeProxyMode": _STR, "dnsSearch": ("list", _STR),
}
KIND_CLUSTER = {
    "kind": _STR, "apiVersion": _STR, "name": _STR,
    "nodes": ("list", KIND_NODE),
    "networking": KIND_NETWORKING,
    "featureGates": ("map", _BOOL),
    "runtimeConfig": ("map", _STR),
    "kubeadmConfigPatches": ("list", _STR),
    "kubeadmConfigPatchesJSON6902": ("list", _KIND_PATCH_JSON6902),
    "containerdConfigPatches": ("list", _STR),
    "containerdConfigPatchesJSON6902": ("list", _STR),
}


def _check_shape(at, schema, document):
    """Every field known to `schema`, every value of the type it declares; null is unset."""
    v = at.value
    if v is None:
        return
    if isinstance(schema, dict):
        _refuse_unknown(at, at.mapping(), schema, document)
        for key, inner in schema.items():
            _check_shape(at.child(key), inner, document)
    elif schema[0] == "list":
        for item in at.items():
            _check_shape(item, schema[1], document)
    elif schema[0] == "map":
        for key, value in at.mapping().items():
            _check_shape(_At(at.file, at.obj, value, at._join(str(key))), schema[1], document)
    elif schema == _BOOL and not isinstance(v, bool):
        raise at.error(f"must be true or false, not {v!r}")
    elif schema == _INT and (isinstance(v, bool) or not isinstance(v, int)):
        raise at.error(f"must be an integer, not {v!r}")
    elif schema == _STR and isinstance(v, (dict, list)):
        raise at.error(f"must be a string, not a {'mapping' if isinstance(v, dict) else 'list'}")


def _cluster(cluster_doc, lab_doc, flannel_doc=None):
    c = ClusterConfig()
    values, pool_at, pool6_at = {}, None, None
    if cluster_doc:
        f, _, doc = cluster_doc
        at = _At(f, "Cluster", doc)
        _expect_api(at, KIND_API)
        _check_shape(at, KIND_CLUSTER, "kind's v1alpha4 Cluster")
        values["name"] = at.child("name").string(
            c.name, pattern=names.DNS1123_LABEL, what="cluster name (DNS-1123 label)",
            max_len=MAX_LAB_NAME)
        nodes = at.child("nodes").items()
        if nodes:
            values["roles"] = tuple(n.child("role").choice(ROLES, "control-plane") for n in nodes)
            if "control-plane" not in values["roles"]:
                raise at.child("nodes").error("a cluster needs a control-plane node")
        net = at.child("networking")
        net.mapping()
        family = net.child("ipFamily").string("ipv4")
        if family not in IP_FAMILIES:
            raise net.child("ipFamily").error(f"invalid ipFamily: {family} (kind takes {', '.join(IP_FAMILIES)})")
        values["ip_family"] = family
        for key, field_, default, default6 in (("podSubnet", "pod_subnet", c.pod_subnet, POD_SUBNET6),
                                               ("serviceSubnet", "service_subnet", c.service_subnet, SERVICE_SUBNET6)):
            values[field_], values[field_ + "6"] = _subnets(net.child(key), family, default, default6)
        values["kube_proxy_mode"] = _kube_proxy_mode(net.child("kubeProxyMode"), c.kube_proxy_mode)
    if lab_doc:
        f, _, doc = lab_doc
        at = _At(f, "Lab", doc)
        _expect_api(at, NETLAB_API)
        _refuse_unknown(at, doc, {"apiVersion", "kind", "metadata", "lan", "iptables", "dns", "loadBalancer",
                                  "ingress", "flannel"})
        lan = at.child("lan")
        _refuse_unknown(lan, lan.mapping(), {"cidr", "ipv6Cidr", "mtu", "segments"})
        values["lan_cidr"] = lan.child("cidr").network(c.lan_cidr, assigned=True)
        if lan.child("ipv6Cidr").value is not None:
            if values.get("ip_family", "ipv4") == "ipv4":
                raise lan.child("ipv6Cidr").error("the LAN's IPv6 range is for a dual-stack or IPv6 lab (the "
                                                  "Cluster's networking.ipFamily: dual or ipv6)")
            values["lan_cidr6"] = lan.child("ipv6Cidr").network6(LAN_CIDR6)
        values["underlay_mtu"] = lan.child("mtu").integer(c.underlay_mtu, lo=1280, hi=9000)
        segments_at = lan.child("segments")
        values["lan_segments"] = _segments(segments_at, values)
        ipt = at.child("iptables")
        _refuse_unknown(ipt, ipt.mapping(), {"applier"})
        values["iptables_applier"] = ipt.child("applier").choice(APPLIERS, c.iptables_applier)
        dns = at.child("dns")
        _refuse_unknown(dns, dns.mapping(), {"replicas", "ttl"})
        values["dns_replicas"] = dns.child("replicas").integer(c.dns_replicas, lo=0, hi=100)
        values["dns_ttl"] = dns.child("ttl").integer(c.dns_ttl, lo=0, hi=3600)
        lb = at.child("loadBalancer")
        _refuse_unknown(lb, lb.mapping(), {"mode", "pool"})
        values["lb_mode"] = lb.child("mode").choice(LB_MODES, c.lb_mode)
        values["lb_pool"], values["lb_pool6"], pool_at, pool6_at = _pool(lb.child("pool"))
        ing = at.child("ingress")
        _refuse_unknown(ing, ing.mapping(), {"enabled", "service", "ipFamilyPolicy"})
        if ing.child("enabled").value:
            values["ingress"] = ing.child("service").choice(("NodePort", "LoadBalancer"), "NodePort")
            values["ingress_ip_family_policy"] = _ingress_policy(ing.child("ipFamilyPolicy"), values)
    if values.get("ip_family", "ipv4") != "ipv4" and not values.get("lan_cidr6"):
        values["lan_cidr6"] = LAN_CIDR6
    c = ClusterConfig(**{**c.__dict__, **values})
    c = _flannel(c, lab_doc, flannel_doc)
    _check_address_plan(c, cluster_doc, lab_doc)
    if c.lan_segments:
        _check_segments(c, _At(lab_doc[0], "Lab", lab_doc[2]).child("lan").child("segments"))
    if c.ipv6:
        what = "a dual-stack" if c.dual else "an IPv6"
        _check_address_plan6(c, cluster_doc, lab_doc)
        if c.underlay_mtu < DUAL_MIN_MTU:
            raise SpecError(lab_doc[0] if lab_doc else None, "Lab", "lan.mtu",
                            f"{c.underlay_mtu} is too small for {what} lab: flannel-v6.1 takes 70 bytes of "
                            f"it (the kernel's IPv6 VXLAN overhead), and IPv6 needs 1280 (lan.mtu >= {DUAL_MIN_MTU})")
        if c.iptables_applier == "python-iptables":
            raise SpecError(lab_doc[0], "Lab", "iptables.applier", f"python-iptables writes IPv4's tables only; "
                            f"{what} lab's IPv6 rules go through ip6tables-restore (applier: iptables-restore)")
    if c.lb_pool:
        if not c.ipv4 and c.lb_mode == "metallb":
            raise pool_at.error(f"{c.lb_pool!r}: an IPv4 range is for an IPv4 or dual-stack lab; an IPv6 lab's "
                                f"Services are IPv6 alone, and MetalLB gives them addresses of its IPv6 range")
        _check_pool(pool_at, c)
    if c.lb_pool6:
        _check_pool6(pool6_at, c)
    return c


# --- the LAN's address plan ----------------------------------------------------------------
# Docker gives kind's network its first address as the gateway (172.18.0.1) and the node
# containers the next ones, from .2 up; the lab's external client takes the LAN's last host
# address; load balancers take theirs from a pool (MetalLB's IPAddressPool, or the range
# cloud-provider-kind's containers land in). IPAM allocates from this one plan, and the lab
# file is checked against it, so no two of them are ever given the same address.

def segment_of(cluster, node_name):
    """The index of a node's segment: 0 for the LAN's own, i + 1 for lan.segments[i]."""
    short = node_name.removeprefix(f"{cluster.name}-")
    return next((i + 1 for i, (_, _, nodes) in enumerate(getattr(cluster, "lan_segments", ())) if short in nodes), 0)


def segment_cidrs(cluster, index):
    """(IPv4 CIDR, IPv6 CIDR or "") of segment `index` (0: the LAN's own)."""
    if index == 0:
        return cluster.lan_cidr, cluster.lan_cidr6
    cidr, cidr6, _ = cluster.lan_segments[index - 1]
    return cidr, cidr6


def segment_cidrs_of(cluster, ip):
    """(IPv4 CIDR, IPv6 CIDR or "") of the segment an IPv4 LAN address lies in."""
    address = ipaddress.ip_address(ip)
    return next(((c4, c6) for c4, c6, _ in getattr(cluster, "lan_segments", ())
                 if address in ipaddress.ip_network(c4)), (cluster.lan_cidr, cluster.lan_cidr6))


def lan_gateway(lan_cidr):
    """The LAN's first address, as Docker gives kind's network its gateway (172.18.0.1)."""
    return str(ipaddress.ip_network(lan_cidr).network_address + 1)


def lan_external_ip(lan_cidr):
    """The client host on the LAN takes the LAN's last host address."""
    return str(ipaddress.ip_network(lan_cidr).broadcast_address - 1)


def first_node_ips(lan_cidr, count):
    """The addresses the lab file's nodes take: .2 upwards, after the gateway."""
    base = ipaddress.ip_network(lan_cidr).network_address
    return [str(base + 2 + i) for i in range(count)]


def default_lb_pool(lan_cidr, nodes):
    """(first, last) of the pool when the lab names none. kind users give MetalLB
    .255.200-.255.250 of Docker's 172.18.0.0/16: 51 addresses at the LAN's top, a few below
    the external client. A LAN too small to hold that range above its `nodes` nodes'
    addresses (smaller than a /26, or a /26 with more than 6 nodes) pools every address
    between the nodes' and the external client's; nodes added later share it, each skipping
    what the other holds. On a LAN with no such address the pool is empty (first > last)."""
    net = ipaddress.ip_network(lan_cidr)
    top, above_nodes = net.broadcast_address, net.network_address + 2 + nodes
    if top - 55 >= above_nodes:
        return str(top - 55), str(top - 5)
    return str(above_nodes), str(top - 2)


def lb_pool_range(cluster):
    """(first, last) of the cluster's load-balancer pool, as address strings."""
    if cluster.lb_pool:
        first, last = cluster.lb_pool.split("-")
        return first, last
    return default_lb_pool(cluster.lan_cidr, len(cluster.roles))


def _pool(at):
    """The Lab's loadBalancer.pool: one range "FIRST-LAST", or a list of ranges with at most
    one per family, as MetalLB's IPAddressPool lists its addresses (an IPv4 range, and in a
    dual-stack lab an IPv6 one). Each is first not above last; where they may lie is checked
    once the whole cluster is known (_check_pool, _check_pool6). (IPv4 range or "", IPv6
    range or "", the field of each)."""
    items = at.items() if isinstance(at.value, list) else [at] if at.value not in (None, "") else []
    ranges = {}
    for item in items:
        text = item.string("", required=True)
        try:
            first, last = (ipaddress.ip_address(x.strip()) for x in text.split("-"))
        except ValueError:
            raise item.error(f"{text!r} must be a range FIRST-LAST of IPv4 addresses, or in a dual-stack lab of "
                             f"IPv6 ones") from None
        if first.version != last.version:
            raise item.error(f"{text!r} mixes IPv4 and IPv6: a range's two ends are of one family")
        if last < first:
            raise item.error(f"{text!r} is reversed: the first address must not be above the last ({last}-{first})")
        family = f"IPv{first.version}"
        if family in ranges:
            raise item.error(f"{text!r} is a second {family} range (the first: {ranges[family][0]!r}): the pool "
                             f"takes one range per family")
        ranges[family] = (f"{first}-{last}", item)
    four, six = ranges.get("IPv4", ("", None)), ranges.get("IPv6", ("", None))
    return four[0], six[0], four[1], six[1]


def _check_pool(at, c):
    """The pool lies inside the LAN, clear of the gateway, the external client and the
    addresses the lab's nodes take. A pool over those is refused rather than silently
    shrunk: MetalLB hands out an IPAddressPool's addresses as its own and never checks who
    else answers for them, which is why kind users put it at the top of Docker's network,
    away from the nodes; a pool over the nodes is a mistake to hear about, not to work
    around (skipping would also move every Service's address off what the pool says)."""
    lan = ipaddress.ip_network(c.lan_cidr)
    first, last = (ipaddress.ip_address(x) for x in c.lb_pool.split("-"))
    if first not in lan or last not in lan:
        raise at.error(f"{c.lb_pool!r} must be a range inside the LAN {lan}")
    for ip, what in ((lan.network_address, "the LAN's network address"),
                     (lan.broadcast_address, "the LAN's broadcast address"),
                     (ipaddress.ip_address(lan_gateway(c.lan_cidr)), "the LAN gateway's address"),
                     (ipaddress.ip_address(lan_external_ip(c.lan_cidr)), "the external client's address")):
        if first <= ip <= last:
            raise at.error(f"{c.lb_pool!r} holds {ip}, {what}; load balancers need addresses of their own")
    nodes = [ipaddress.ip_address(ip) for ip in first_node_ips(c.lan_cidr, len(c.roles))]
    over = [ip for ip in nodes if first <= ip <= last]
    if over:
        span = lambda ips: f"{ips[0]}" if len(ips) == 1 else f"{ips[0]}-{ips[-1]}"  # noqa: E731
        raise at.error(f"{c.lb_pool!r} holds {span(over)}, {'an address' if len(over) == 1 else 'addresses'} "
                       f"the lab's nodes take ({span(nodes)}, from .2 up, as Docker gives kind's nodes theirs); "
                       f"{_pool_hint(c)}")


def _ingress_policy(at, values):
    """ingress-nginx's controller Service's ipFamilyPolicy: deploy.yaml (the Helm chart's
    controller.service values) makes it SingleStack IPv4; a dual-stack lab may ask
    PreferDualStack or RequireDualStack to reach Ingresses over IPv6 as well."""
    policy = at.choice(IP_FAMILY_POLICIES, "SingleStack")
    if policy != "SingleStack" and values.get("ip_family") != "dual":
        raise at.error(f"{policy} is for a dual-stack lab (the Cluster's networking.ipFamily: dual)")
    return "" if policy == "SingleStack" else policy


def _check_pool6(at, c):
    """A pool's IPv6 range: for a dual-stack lab in MetalLB's mode (cloud-provider-kind's
    containers hold the IPv6 address Docker numbers beside their IPv4 one, which is the IPv4
    address's twin), inside the LAN's IPv6 range and clear of its gateway, the external client
    and the nodes (their IPv6 twins), as the IPv4 range is of theirs."""
    if not c.ipv6:
        raise at.error(f"{c.lb_pool6!r}: an IPv6 range is for a dual-stack or IPv6 lab (the Cluster's "
                       f"networking.ipFamily: dual or ipv6)")
    if c.lb_mode != "metallb":
        raise at.error(f"{c.lb_pool6!r}: an IPv6 range is MetalLB's (loadBalancer.mode: metallb); the cloud's load "
                       f"balancers take the IPv6 twin of their IPv4 address, as Docker numbers both families alike")
    lan = ipaddress.ip_network(c.lan_cidr6)
    first, last = (ipaddress.ip_address(x) for x in c.lb_pool6.split("-"))
    if first not in lan or last not in lan:
        raise at.error(f"{c.lb_pool6!r} must be a range inside the LAN's IPv6 range {lan}")
    twin = lambda ip: ipaddress.ip_address(lan.network_address + (int(ipaddress.ip_address(ip))  # noqa: E731
                                                                  - int(ipaddress.ip_network(c.lan_cidr).network_address)))
    for ip, what in ((lan.network_address, "the LAN's Subnet-Router anycast address"),
                     (twin(lan_gateway(c.lan_cidr)), "the LAN gateway's IPv6 address"),
                     (twin(lan_external_ip(c.lan_cidr)), "the external client's IPv6 address")):
        if first <= ip <= last:
            raise at.error(f"{c.lb_pool6!r} holds {ip}, {what}; load balancers need addresses of their own")
    nodes = [twin(ip) for ip in first_node_ips(c.lan_cidr, len(c.roles))]
    over = [ip for ip in nodes if first <= ip <= last]
    if over:
        span = lambda ips: f"{ips[0]}" if len(ips) == 1 else f"{ips[0]}-{ips[-1]}"  # noqa: E731
        raise at.error(f"{c.lb_pool6!r} holds {span(over)}, {'an address' if len(over) == 1 else 'addresses'} "
                       f"the lab's nodes take ({span(nodes)}, the IPv6 twins of their IPv4 addresses); put the "
                       f"range above them")


def lb_pool6_range(cluster):
    """(first, last) of a dual-stack cluster's IPv6 load-balancer pool: the Lab's IPv6 range,
    else the IPv6 twins of the IPv4 pool's first and last addresses."""
    if cluster.lb_pool6:
        first, last = cluster.lb_pool6.split("-")
        return first, last
    lan4, lan6 = ipaddress.ip_network(cluster.lan_cidr), ipaddress.ip_network(cluster.lan_cidr6)
    return tuple(str(lan6.network_address + (int(ipaddress.ip_address(ip)) - int(lan4.network_address)))
                 for ip in lb_pool_range(cluster))


def _pool_hint(c):
    first, last = default_lb_pool(c.lan_cidr, len(c.roles))
    if ipaddress.ip_address(first) > ipaddress.ip_address(last):
        return f"the LAN {c.lan_cidr} has no address left for load balancers: give the Lab a larger lan.cidr"
    return f"put the pool above them (left out, it is {first}-{last})"


# kind's validateSubnets messages (pkg/internal/apis/config/validate.go)
DUAL_PAIR = "expected one (IPv4 or IPv6) CIDR or two CIDRs from each family for dual-stack networking"
SINGLE = "only one CIDR allowed for single-stack networking"


def _segments(at, values):
    """lan.segments: more L2 segments, each a Docker network of its own (an IPv4 CIDR, and in
    a dual-stack or IPv6 lab an IPv6 one) and the nodes plugged into it (names without the
    lab's prefix); the LAN's namespace routes between them, so nodes on two segments reach
    each other through a router, not on one L2."""
    out = []
    for item in at.items():
        _refuse_unknown(item, item.mapping(required=True), {"cidr", "ipv6Cidr", "nodes"})
        cidr = item.child("cidr").network(None, assigned=True) if item.child("cidr").value is not None else None
        if cidr is None:
            raise item.child("cidr").error("required: the segment's IPv4 range (a Docker network's subnet)")
        cidr6 = ""
        if values.get("ip_family", "ipv4") != "ipv4":
            cidr6 = item.child("ipv6Cidr").network6(None) if item.child("ipv6Cidr").value is not None else ""
            if not cidr6:
                raise item.child("ipv6Cidr").error("required in a dual-stack or IPv6 lab: the segment's IPv6 range")
        elif item.child("ipv6Cidr").value is not None:
            raise item.child("ipv6Cidr").error("a segment's IPv6 range is for a dual-stack or IPv6 lab")
        nodes = tuple(n.string(required=True) for n in item.child("nodes").items())
        if not nodes:
            raise item.child("nodes").error("required: the nodes plugged into this segment")
        out.append((cidr, cidr6, nodes))
    return tuple(out)


def _check_segments(c, at):
    """Each segment's range apart from every other range of the lab, its nodes the lab's (each
    on one segment, the control plane's among them or not), and a backend that works across a
    router: host-gw needs every node on one L2 segment; MetalLB's layer 2 mode answers ARP on
    the LAN's own segment alone."""
    names_ = {n.removeprefix(f"{c.name}-") for n in c.node_names}
    ranges = [("the LAN", c.lan_cidr), *(("podSubnet", s) for s in c.pod_subnets),
              *(("serviceSubnet", s) for s in c.service_subnets)] + ([("the LAN's IPv6 range", c.lan_cidr6)]
                                                                     if c.lan_cidr6 else [])
    seen = {}
    for i, (cidr, cidr6, nodes) in enumerate(c.lan_segments):
        item = at.child(i)
        for key, net in (("cidr", cidr), ("ipv6Cidr", cidr6)):
            if not net:
                continue
            for what, other in ranges:
                if ipaddress.ip_network(net).version == ipaddress.ip_network(other).version and \
                        ipaddress.ip_network(net).overlaps(ipaddress.ip_network(other)):
                    raise item.child(key).error(f"{net} overlaps {what} {other}")
            ranges.append((f"segment {i}", net))
        for j, n in enumerate(nodes):
            if n not in names_:
                raise item.child("nodes").child(j).error(f"{n!r} is not a node of the lab ({', '.join(sorted(names_))})")
            if n in seen:
                raise item.child("nodes").child(j).error(f"{n!r} is on segment {seen[n]} already")
            seen[n] = i
        if len(nodes) + 2 > ipaddress.ip_network(cidr).num_addresses - 2:
            raise item.child("cidr").error(f"{cidr} is too small for its router and {len(nodes)} nodes")
    if c.flannel_backend == "host-gw":
        raise at.error("flannel's host-gw backend needs every node on one L2 segment: its route <podCIDR> via "
                       "<node IP> dev eth0 to a node behind the router fails (network is unreachable); vxlan with "
                       "DirectRouting routes plainly inside a segment and tunnels across")
    if c.lb_mode == "metallb":
        raise at.error("MetalLB's layer 2 mode answers ARP for its addresses on one segment; a routed LAN's "
                       "load balancers are the cloud's (loadBalancer.mode: cloud)")


def _flannel(c, lab_doc, flannel_doc):
    """The backend flanneld runs: the Lab document's flannel.backend, or kube-flannel-cfg's
    net-conf.json (not both); vxlan when neither says."""
    at = _At(lab_doc[0], "Lab", lab_doc[2]).child("flannel") if lab_doc else None
    if at is not None and at.value is not None:
        _refuse_unknown(at, at.mapping(), {"backend"})
        if flannel_doc is not None:
            raise at.child("backend").error(f"the backend is given twice: here and in kube-flannel-cfg "
                                            f"({flannel_doc[0]}); keep one")
        return ClusterConfig(**{**c.__dict__, **netconf.backend(at.child("backend"), c,
                                                                 _refuse_unknown)})
    if flannel_doc is not None:
        f, _, doc = flannel_doc
        cm = _At(f, f"ConfigMap {netconf.CONFIGMAP[0]}/{netconf.CONFIGMAP[1]}", doc)
        return ClusterConfig(**{**c.__dict__, **netconf.from_configmap(cm, c, _refuse_unknown)})
    return c


def _subnets(at, family, default, default6):
    """kind's podSubnet or serviceSubnet for `family`: one CIDR of the family, or for dual a
    comma-separated pair, one of each family (kind's defaults when unset). netlab's dual-stack
    labs are IPv4-primary: the IPv4 CIDR comes first. (IPv4 CIDR or "", IPv6 CIDR or "")."""
    text = {"ipv4": default, "ipv6": default6}.get(family, f"{default},{default6}")
    text = at.string(text)
    parts = [p.strip() for p in text.split(",")]
    if family != "dual":
        if len(parts) > 1:
            raise at.error(f"{text!r}: {SINGLE} (ipFamily: {family}; ipFamily: dual takes a pair)")
        if family == "ipv6":
            return "", _At(at.file, at.obj, parts[0], at.path).network6(default6)
        return at.network(default, assigned=True), ""
    if len(parts) > 2:
        raise at.error(f"{text!r}: {DUAL_PAIR}")
    versions = [_version(at, p) for p in parts]
    if len(parts) == 2 and versions[0] == versions[1]:
        raise at.error(f"{text!r}: {DUAL_PAIR}")
    if len(parts) == 1:
        raise at.error(f"{text!r}: netlab's dual-stack lab takes a CIDR of each family, IPv4 first (kind accepts "
                       f"one, and its cluster then has that family alone: use ipFamily: ipv4 or ipv6 for that)")
    if versions[0] != 4:
        raise at.error(f"{text!r}: netlab's dual-stack labs are IPv4-primary: give the IPv4 CIDR first (an IPv6 "
                       f"primary: ipFamily: ipv6)")
    four = _At(at.file, at.obj, parts[0], at.path).network(default, assigned=True)
    six = _At(at.file, at.obj, parts[1], at.path).network6(default6)
    return four, six


def _version(at, text):
    try:
        return ipaddress.ip_network(text, strict=True).version
    except ValueError as e:
        raise at.error(f"{text!r} is not a valid CIDR ({e})") from None


def _check_address_plan6(c, cluster_doc, lab_doc):
    """The IPv6 family's ranges: apart from each other, the pod subnet with room for a /64 per
    node (and no more than 16 bits between its mask and a node's, kube-controller-manager's
    limit), the service subnet no larger than kube-apiserver allows an IPv6 one (/108)."""
    pod, svc, lan = (ipaddress.ip_network(n) for n in (c.pod_subnet6, c.service_subnet6, c.lan_cidr6))
    file_of = lambda d: d[0] if d else None  # noqa: E731
    at = _At(file_of(cluster_doc), "Cluster", None, "networking")
    if pod.overlaps(svc):
        raise at.child("serviceSubnet").error(f"{svc} overlaps podSubnet {pod}")
    for label, net in (("podSubnet", pod), ("serviceSubnet", svc)):
        if net.overlaps(lan):
            raise SpecError(file_of(lab_doc) or file_of(cluster_doc), "Lab", "lan.ipv6Cidr",
                            f"{lan} overlaps the cluster's {label} {net}")
    if pod.prefixlen > NODE_MASK6:
        raise at.child("podSubnet").error(f"{pod} is too small: each node takes a /{NODE_MASK6}")
    if NODE_MASK6 - pod.prefixlen > 16:
        raise at.child("podSubnet").error(f"{pod} is too large: kube-controller-manager allows at most 16 bits "
                                          f"between the cluster CIDR's mask and a node's /{NODE_MASK6}")
    if 2 ** (NODE_MASK6 - pod.prefixlen) < len(c.roles):
        raise at.child("podSubnet").error(f"{pod} has fewer /{NODE_MASK6}s than the {len(c.roles)} nodes")
    if svc.prefixlen < 108:
        raise at.child("serviceSubnet").error(f"{svc} is too large; for 128-bit addresses, the mask must be >= 108 "
                                              f"(kube-apiserver)")
    if svc.num_addresses < 16:
        raise at.child("serviceSubnet").error(f"{svc} is too small")
    if lan.prefixlen > 120:
        raise SpecError(file_of(lab_doc), "Lab", "lan.ipv6Cidr", f"{lan} is too small for the lab's hosts")


def _refuse_unknown(at, mapping, known, document="netlab's Lab"):
    """Typos in the Cluster and Lab documents matter (a misspelt field leaves a default in
    place): a field the document does not have is refused, with the nearest one it has."""
    for key in mapping:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}? " if near else ""
            raise at.child(key).error(
                f"unknown field, not in {document} ({hint}known here: {', '.join(sorted(known))})")


def _check_address_plan(c, cluster_doc, lab_doc):
    """The IPv4 family's ranges; an IPv6 lab has the LAN's alone (kind's node network keeps its
    IPv4 range beside the ULA one, though the cluster uses IPv6)."""
    file_of = lambda d: d[0] if d else None  # noqa: E731
    lan = ipaddress.ip_network(c.lan_cidr)
    hosts = max(lan.num_addresses - 2, 0)         # less the network and broadcast addresses
    if hosts < len(c.roles) + 2:
        raise SpecError(file_of(lab_doc), "Lab", "lan.cidr",
                        f"{lan} is too small for {len(c.roles)} nodes: it has {hosts} host addresses, and the "
                        f"gateway, the external client and each node take one")
    if not c.ipv4:
        return
    pod, svc = (ipaddress.ip_network(n) for n in (c.pod_subnet, c.service_subnet))
    cluster_at = _At(file_of(cluster_doc), "Cluster", None, "networking")
    if pod.overlaps(svc):
        raise SpecError(file_of(cluster_doc), "Cluster", "networking.serviceSubnet",
                        f"{svc} overlaps podSubnet {pod}")
    for label, net in (("podSubnet", pod), ("serviceSubnet", svc)):
        if net.overlaps(lan):
            raise SpecError(file_of(lab_doc) or file_of(cluster_doc), "Lab", "lan.cidr",
                            f"{lan} overlaps the cluster's {label} {net}")
    if pod.prefixlen > 23:
        raise cluster_at.child("podSubnet").error(f"{pod} is too small: each node takes a /24")
    if 2 ** (24 - pod.prefixlen) < len(c.roles):
        raise cluster_at.child("podSubnet").error(f"{pod} has fewer /24s than the {len(c.roles)} nodes")
    if svc.num_addresses < 16:
        raise cluster_at.child("serviceSubnet").error(f"{svc} is too small")


# --- Pod and Deployment ------------------------------------------------------------------

# Name rules as the API server's validation has them: Pods, Deployments and Ingresses are
# DNS-1123 subdomains (253 characters, dots allowed), a namespace is a DNS-1123 label (63), a
# Service a DNS-1035 label (63, checked in _service).
MAX_NAME = {"Pod": 253, "Deployment": 253, "Ingress": 253, "Service": 63, "NetworkPolicy": 253}


def _metadata(at, kind):
    meta = at.child("metadata")
    meta.mapping(required=True)
    name = meta.child("name").string(required=True, pattern=names.DNS1123_SUBDOMAIN,
                                     what="name (DNS-1123 subdomain)", max_len=MAX_NAME[kind])
    namespace = meta.child("namespace").string("default", pattern=names.DNS1123_LABEL,
                                               what="namespace (DNS-1123 label)", max_len=63)
    at.obj = f"{kind} {namespace}/{name}"
    return namespace, name, meta.child("labels").string_map()


def _check_netns_fits(at, lab, namespace, pod_name):
    """A pod's network namespace is named <lab>-<namespace>.<pod>, and a netns name is a file
    name: at most NAME_MAX bytes. A pod name the API allows (253) can pass that with a long
    lab and namespace name; say so here rather than fail half-way through `up`."""
    netns = names.pod_netns(lab, namespace, pod_name)
    if len(netns.encode()) > NAME_MAX:
        raise at.child("metadata").child("name").error(
            f"too long for this lab: the pod's network namespace, {lab}-{namespace}.<pod name>, would take {len(netns.encode())} "
            f"bytes, over the kernel's {NAME_MAX}-byte limit on a file name (/run/netns/<name>)")


def _pod(f, doc, cluster, nodes=None):
    at = _At(f, "Pod", doc)
    _expect_api(at, "v1")
    namespace, name, labels = _metadata(at, "Pod")
    _check_netns_fits(at, cluster.name, namespace, name)
    return PodManifest(namespace, name, _pod_template(at.child("spec"), labels, nodes or cluster.node_names))


def _deployment(f, doc, cluster, nodes=None):
    at = _At(f, "Deployment", doc)
    _expect_api(at, "apps/v1")
    namespace, name, _ = _metadata(at, "Deployment")
    # (a replica's name is cut to 63 characters, as the API server's name generator cuts it)
    spec = at.child("spec")
    spec.mapping(required=True)
    replicas = spec.child("replicas").integer(1, lo=0)
    if replicas > MAX_REPLICAS:
        raise spec.child("replicas").error(f"{replicas}: netlab runs at most {MAX_REPLICAS} replicas of a Deployment")
    selector = spec.child("selector")
    selector.mapping(required=True)
    match = selector.child("matchLabels").string_map()
    if not match:
        raise selector.child("matchLabels").error("required (netlab supports matchLabels selectors)")
    template = spec.child("template")
    template.mapping(required=True)
    tmeta = template.child("metadata")
    labels = tmeta.child("labels").string_map()
    if any(labels.get(k) != v for k, v in match.items()):
        raise tmeta.child("labels").error(
            f"selector {match} does not match template labels {labels}")
    return DeploymentManifest(namespace, name, replicas, match,
                              _pod_template(template.child("spec"), labels, nodes or cluster.node_names))


def _pod_template(spec, labels, node_names):
    spec.mapping(required=True)
    if spec.child("hostNetwork").value:
        raise spec.child("hostNetwork").error("hostNetwork pods are not modelled by netlab yet")
    containers = spec.child("containers").items()
    if not containers:
        raise spec.child("containers").error("required: at least one container")
    seen_names, seen_ports, bound, built = set(), {}, {}, []
    for c in containers:
        c.mapping(required=True)
        cname = c.child("name").string(required=True, pattern=names.DNS1123_LABEL,
                                       what="container name (DNS-1123 label)", max_len=63)
        if cname in seen_names:
            raise c.child("name").error(f"duplicate container name {cname!r}")
        seen_names.add(cname)
        ports = []
        for p in c.child("ports").items():
            port = _container_port(p, seen_ports)
            _refuse_shared_port(p, port, cname, bound)
            ports.append(port)
        ports = tuple(ports)
        built.append(Container(cname, c.child("image").string("") or "",
                               _argv(c.child("command")), _argv(c.child("args")), ports))
    node_name = spec.child("nodeName").string()
    if node_name is not None and node_name not in node_names:
        raise spec.child("nodeName").error(f"unknown node {node_name!r} (nodes: {', '.join(node_names)})")
    return PodTemplate(
        labels=labels,
        containers=tuple(built),
        node_name=node_name,
        node_selector=spec.child("nodeSelector").string_map(),
        tolerations=tuple(_toleration(t) for t in spec.child("tolerations").items()),
        hostname=spec.child("hostname").string(pattern=names.DNS1123_LABEL, what="hostname (DNS-1123 label)", max_len=63),
        subdomain=spec.child("subdomain").string(pattern=names.DNS1123_LABEL, what="subdomain (DNS-1123 label)", max_len=63),
    )


def _refuse_shared_port(p, port, container, bound):
    """The containers of a pod share its network namespace: two on one port and protocol
    would both bind it, and on a node the second fails (EADDRINUSE). The API server only
    warns of it; netlab serves a pod's ports once for the whole pod, so it refuses it."""
    key = (port.container_port, port.protocol)
    owner = bound.setdefault(key, container)
    if owner != container:
        shown = str(port.container_port) + ("" if port.protocol == "TCP" else f"/{port.protocol}")
        raise p.child("containerPort").error(f"{shown} is already the containerPort of container {owner} in this "
                                             f"pod (on a node the second would fail to bind)")


def _container_port(p, seen):
    p.mapping(required=True)
    number = p.child("containerPort").integer(required=True, lo=1, hi=65535)
    host_port = p.child("hostPort").integer(0, lo=0, hi=65535)
    if host_port:
        raise p.child("hostPort").error(
            f"{host_port}: netlab's CNI chain (bridge, host-local) has no portmap plugin, so nothing would "
            f"forward the node's port to the pod; reach it through a NodePort Service instead")
    protocol = p.child("protocol").string("TCP")
    if protocol not in PROTOCOLS:
        raise p.child("protocol").error(f"{protocol!r} must be TCP or UDP (netlab does not model SCTP)")
    name = p.child("name").string(pattern=IANA_SVC_NAME, what="port name (IANA service name)", max_len=15)
    if name is not None:
        if not re.search("[a-z]", name):
            raise p.child("name").error(f"{name!r} must contain at least one letter")
        if name in seen:
            raise p.child("name").error(f"duplicate port name {name!r}")
        seen[name] = number
    return ContainerPort(number, protocol, name)


def _argv(at):
    items = at.items()
    for item in items:
        if not isinstance(item.value, (str, int, float)):
            raise item.error("must be a string")
    return tuple(str(i.value) for i in items)


def _toleration(t):
    t.mapping(required=True)
    operator = t.child("operator").choice(("Equal", "Exists"), "Equal")
    effect = t.child("effect").string()
    if effect not in (None, "", "NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise t.child("effect").error(f"{effect!r} must be NoSchedule, PreferNoSchedule or NoExecute")
    return Toleration(t.child("key").string() or None, operator, t.child("value").string(), effect or None)


# --- Service -----------------------------------------------------------------------------

# Services every cluster has, made by the cluster itself (netlab's controllers make them).
CLUSTER_SERVICES = {"default/kubernetes": "the API server", "kube-system/kube-dns": "kubeadm's CoreDNS addon"}


def _service(f, doc, cluster):
    """A v1 Service, validated as the API server validates it (the parts networking uses)."""
    at = _At(f, "Service", doc)
    _expect_api(at, "v1")
    namespace, name, labels = _metadata(at, "Service")
    if f"{namespace}/{name}" in CLUSTER_SERVICES:
        raise at.child("metadata").child("name").error(
            f"the Service {namespace}/{name} is managed by {CLUSTER_SERVICES[f'{namespace}/{name}']}; "
            f"a lab file cannot define it (give yours another name)")
    at.child("metadata").child("name").string(
        pattern=DNS1035_LABEL, what="Service name (DNS-1035 label: a letter first, no dots)")
    spec = at.child("spec")
    spec.mapping(required=True)
    svc_type = spec.child("type").string("ClusterIP")
    if svc_type not in SERVICE_TYPES:
        raise spec.child("type").error(f"{svc_type!r} must be one of {', '.join(SERVICE_TYPES)}")
    if svc_type == "ExternalName":
        for f in ("clusterIPs", "ipFamilies", "ipFamilyPolicy"):     # ValidateService's ExternalName case
            if spec.child(f).value not in (None, []):
                raise spec.child(f).error("Forbidden: may not be set for ExternalName services")
        external_name = spec.child("externalName").string(
            required=True, pattern=names.DNS1123_SUBDOMAIN, what="externalName (DNS-1123 subdomain)", max_len=253)
        return ServiceManifest(namespace, name, labels, svc_type, external_name=external_name,
                               ports=_service_ports(spec, svc_type, headless=True))
    cluster_ip, cluster_ips = _cluster_ip(spec, cluster)
    policy, families = _ip_family_fields(spec, cluster_ips)
    headless = cluster_ip == "None"
    if headless and svc_type != "ClusterIP":
        raise spec.child("clusterIP").error(f"may not be None for type {svc_type}")
    ports = _service_ports(spec, svc_type, headless)
    external_ips = tuple(_ipv4(ip, "external IP") for ip in spec.child("externalIPs").items())
    affinity = spec.child("sessionAffinity").choice(("None", "ClientIP"), "None")
    timeout_at = spec.child("sessionAffinityConfig").child("clientIP").child("timeoutSeconds")
    timeout = timeout_at.integer(10800, lo=1, hi=86400)
    if affinity == "None" and timeout_at.value is not None:
        raise timeout_at.error("may only be set when sessionAffinity is ClientIP")
    reachable = svc_type in ("NodePort", "LoadBalancer") or bool(external_ips)
    etp_at = spec.child("externalTrafficPolicy")
    etp = etp_at.choice(("Cluster", "Local"), "Cluster")
    if etp_at.value is not None and not reachable:
        raise etp_at.error("may only be set for externally-accessible Services (NodePort, LoadBalancer, externalIPs)")
    selector = spec.child("selector").string_map() if spec.child("selector").value is not None else None
    _check_families_configured(spec, cluster, policy, families, cluster_ips, headless and not selector)
    lb = _load_balancer(spec, svc_type, etp)
    return ServiceManifest(
        namespace, name, labels, svc_type, cluster_ip, ports, selector or None, affinity, timeout,
        etp if reachable else None, spec.child("internalTrafficPolicy").choice(("Cluster", "Local"), "Cluster"),
        external_ips, **lb, ip_family_policy=policy, ip_families=families, cluster_ips=cluster_ips)


def _load_balancer(spec, svc_type, etp):
    fields = ("loadBalancerSourceRanges", "loadBalancerIP", "healthCheckNodePort")
    if svc_type != "LoadBalancer":
        for f in fields:
            if spec.child(f).value is not None:
                raise spec.child(f).error("may only be set when type is LoadBalancer")
        return {}
    allocate = spec.child("allocateLoadBalancerNodePorts")
    if allocate.value is False:
        raise allocate.error("netlab's load balancers forward to NodePorts: it must stay true")
    ranges = [r.network(r.string(required=True)) for r in spec.child("loadBalancerSourceRanges").items()]
    ip_at = spec.child("loadBalancerIP")
    hc_at = spec.child("healthCheckNodePort")
    hc = hc_at.integer(lo=NODE_PORT_RANGE[0], hi=NODE_PORT_RANGE[1])
    if hc is not None and etp != "Local":
        raise hc_at.error("may only be set when externalTrafficPolicy is Local")
    return {"load_balancer_source_ranges": tuple(ranges),
            "load_balancer_ip": _ipv4(ip_at, "load-balancer IP") if ip_at.value is not None else None,
            "health_check_node_port": hc}


IP_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")    # sorted, as NotSupported lists them
SERVICE_IP_FAMILIES = ("IPv4", "IPv6")
VALID_IP = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"      # apimachinery's IsValidIP


def go_list(values, type_name="string"):
    """How field.Error prints a list value (%#v): []string{"a", "b"}."""
    return f"[]{type_name}{{{', '.join(json.dumps(v) for v in values)}}}"


def family_of(ip):
    return "IPv6" if ":" in ip else "IPv4"


def cluster_ips_family_error(ips, families):
    """The part of ValidateServiceClusterIPsRelatedFields that matches clusterIPs to ipFamilies
    (run again on an update, whose clusterIPs may be the stored ones): (index, message) or None."""
    if ips[:1] == ("None",):
        return None
    for i, (ip, family) in enumerate(zip(ips, families)):
        if family_of(ip) != family:
            return i, f"Invalid value: {json.dumps(ip)}: expected an {family} value as indicated by `ipFamilies[{i}]`"
    return None


def _cluster_ip(spec, cluster):
    """spec.clusterIP and spec.clusterIPs as ValidateServiceClusterIPsRelatedFields checks them
    (normalizeClusterIPs: either field may name the primary), each address in its family's
    service subnet: (clusterIP, clusterIPs). Both None/() when the API server allocates."""
    ip_at, ips_at = spec.child("clusterIP"), spec.child("clusterIPs")
    ip = ip_at.string()
    ips = [i.string(required=True) for i in ips_at.items()]
    if ips and ip and ips[0] != ip:
        raise ips_at.error(f"Invalid value: {go_list(ips)}: first value must match `clusterIP`")
    ip = ip or (ips[0] if ips else None)
    if ip in (None, ""):
        return None, ()
    ips = ips or [ip]
    first_at = ip_at if ip_at.value else ips_at.child(0)
    for i, v in enumerate(ips):
        if i == 0 and v == "None":
            if len(ips) > 1:
                raise ips_at.error(f"Invalid value: {go_list(ips)}: 'None' must be the first and only value")
            continue
        try:
            ipaddress.ip_address(v)
        except ValueError:
            if i == 0:
                raise first_at.error(f"{v!r} is not a valid cluster IP") from None
            raise ips_at.child(i).error(f"Invalid value: {json.dumps(v)}: {VALID_IP}") from None
    if len(ips) > 2:
        raise ips_at.error(f"Invalid value: {go_list(ips)}: may only hold up to 2 values")
    if len(ips) == 2 and family_of(ips[0]) == family_of(ips[1]):
        raise ips_at.error(f"Invalid value: {go_list(ips)}: may specify no more than one IP for each IP family")
    ips = [str(ipaddress.ip_address(v)) if v != "None" else v for v in ips]
    return ips[0], tuple(ips)


def _ip_family_fields(spec, cluster_ips):
    """spec.ipFamilyPolicy and spec.ipFamilies as asked (None and () leave them to the API
    server's defaulting), with ValidateServiceClusterIPsRelatedFields' messages."""
    policy_at, families_at = spec.child("ipFamilyPolicy"), spec.child("ipFamilies")
    policy = policy_at.string()
    if policy is not None and policy not in IP_FAMILY_POLICIES:
        raise policy_at.error(f"Unsupported value: {json.dumps(policy)}: supported values: "
                              + ", ".join(json.dumps(p) for p in IP_FAMILY_POLICIES))
    families = []
    for f_at in families_at.items():
        family = f_at.string(required=True)
        if family not in SERVICE_IP_FAMILIES:
            raise f_at.error(f"Unsupported value: {json.dumps(family)}: supported values: "
                             + ", ".join(json.dumps(f) for f in SERVICE_IP_FAMILIES))
        if family in families:
            raise f_at.error(f"Duplicate value: {json.dumps(family)}")
        families.append(family)
    wrong = cluster_ips_family_error(cluster_ips, families)
    if wrong is not None:
        raise spec.child("clusterIPs").child(wrong[0]).error(wrong[1])
    return policy, tuple(families)


def _check_families_configured(spec, cluster, policy, families, cluster_ips, headless_selectorless):
    """initIPFamilyFields' checks of what the cluster is configured for (those an update's old
    object does not change): a clusterIP of a family the cluster lacks, RequireDualStack on a
    single-stack cluster, an ipFamily the cluster lacks (a headless Service without selector
    may name both families anywhere). Then every clusterIP must lie in its family's range."""
    ips_at = spec.child("clusterIPs")
    if (len(families) > 1 or len(cluster_ips) > 1) and policy not in ("PreferDualStack", "RequireDualStack"):
        return        # SingleStack on a create, or the stored policy on an update: the allocator decides
    for i, ip in enumerate(cluster_ips):
        if ip == "None":
            break
        if i >= len(families) and family_of(ip) not in cluster.families:
            raise ips_at.child(i).error(f"Invalid value: {go_list(cluster_ips)}: {family_of(ip)} is not configured on "
                                        f"this cluster")
    if not headless_selectorless:
        if policy == "RequireDualStack" and not cluster.dual:
            raise spec.child("ipFamilyPolicy").error(
                f"Invalid value: {json.dumps(policy)}: this cluster is not configured for dual-stack services")
        for i, family in enumerate(families):
            if family not in cluster.families:
                raise spec.child("ipFamilies").child(i).error(
                    f"Invalid value: {json.dumps(family)}: not configured on this cluster")
    for i, ip in enumerate(cluster_ips):
        if ip == "None":
            break
        at = spec.child("clusterIP") if i == 0 and spec.child("clusterIP").value else ips_at.child(i)
        _check_in_service_subnet(at, ip, cluster)


def _check_in_service_subnet(at, address, cluster):
    v6 = ":" in address
    svc_net = ipaddress.ip_network(cluster.service_subnet6 if v6 else cluster.service_subnet)
    if ipaddress.ip_address(address) not in svc_net:
        raise at.error(f"{address} is not in the cluster's {'IPv6 ' if v6 else ''}serviceSubnet {svc_net}")
    if address == str(svc_net.network_address) or (not v6 and address == str(svc_net.broadcast_address)):
        raise at.error(f"{address} is not a usable address of {svc_net}")
    for reserved, owner in ((1, "default/kubernetes"), (10, "kube-system/kube-dns")) if not v6 else ():
        if address == str(svc_net.network_address + reserved):
            raise at.error(f"{address} is kept for the Service {owner}")


def _ipv4(at, what):
    v = at.string(required=True)
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        raise at.error(f"{v!r} is not a valid {what}") from None
    if ip.version != 4:
        raise at.error(f"{v!r} is an IPv6 address: {IPV4_ONLY}")
    return str(ip)


def _service_ports(spec, svc_type, headless):
    items = spec.child("ports").items()
    if not items and not headless:
        raise spec.child("ports").error("required: at least one port")
    ports, names_seen, seen = [], set(), set()
    for p in items:
        p.mapping(required=True)
        name = p.child("name").string("", pattern=names.DNS1123_LABEL, what="port name (DNS-1123 label)", max_len=63)
        if len(items) > 1 and not name:
            raise p.child("name").error("required when a Service has more than one port")
        if name in names_seen:
            raise p.child("name").error(f"duplicate port name {name!r}")
        names_seen.add(name)
        number = p.child("port").integer(required=True, lo=1, hi=65535)
        protocol = p.child("protocol").string("TCP")
        if protocol not in PROTOCOLS:
            raise p.child("protocol").error(f"{protocol!r} must be TCP or UDP (netlab does not model SCTP)")
        if (number, protocol) in seen:
            raise p.child("port").error(f"duplicate port {number}/{protocol}")
        seen.add((number, protocol))
        target_at = p.child("targetPort")
        target = target_at.value if target_at.value is not None else number
        if isinstance(target, str):
            if target.isdigit():
                target = int(target)
            elif not IANA_SVC_NAME.match(target) or len(target) > 15 or not re.search("[a-z]", target):
                raise target_at.error(f"{target!r} is not a valid port number or name (IANA service name)")
        if isinstance(target, bool) or not isinstance(target, (int, str)):
            raise target_at.error(f"must be a port number or name, not {target!r}")
        if isinstance(target, int) and not 1 <= target <= 65535:
            raise target_at.error(f"{target}: must be between 1 and 65535, inclusive")
        np_at = p.child("nodePort")
        node_port = np_at.integer(lo=NODE_PORT_RANGE[0], hi=NODE_PORT_RANGE[1])
        if node_port is not None and svc_type not in ("NodePort", "LoadBalancer"):
            raise np_at.error(f"may not be used when type is {svc_type}")
        ports.append(ServicePort(number, protocol, name, target, node_port))
    return tuple(ports)


def _check_service_addresses(services):
    """services: [(file, ServiceManifest)]. A clusterIP or nodePort taken twice is refused,
    as the API server's allocators refuse it (one Service may use a nodePort for TCP and UDP)."""
    ips, node_ports = {}, {}
    for f, s in services:
        obj, key = f"Service {s.namespace}/{s.name}", f"{s.namespace}/{s.name}"
        if s.cluster_ip not in (None, "None"):
            for i, ip in enumerate(s.cluster_ips or (s.cluster_ip,)):
                if ip in ips:
                    raise SpecError(f, obj, "spec.clusterIP" if i == 0 else f"spec.clusterIPs[{i}]",
                                    f"{ip} is already allocated to Service {ips[ip]}")
                ips[ip] = key
        for i, p in enumerate(s.ports):
            if p.node_port is None:
                continue
            owner = node_ports.setdefault(p.node_port, key)
            if owner != key:
                raise SpecError(f, obj, f"spec.ports[{i}].nodePort", f"{p.node_port} is already allocated to Service {owner}")
            if any(q.node_port == p.node_port and q.protocol == p.protocol for q in s.ports[:i]):
                raise SpecError(f, obj, f"spec.ports[{i}].nodePort", f"duplicate nodePort {p.node_port}/{p.protocol}")


# --- Ingress -------------------------------------------------------------------------------

# What the API server's ParseIPSloppy reads as an IPv4 address (leading zeros allowed): an
# Ingress host may not be one. (An IPv6 address already fails WILDCARD_HOST: it has colons.)
_OCTET = r"0*(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_SLOPPY = re.compile(rf"^({_OCTET}\.){{3}}{_OCTET}$")
WILDCARD_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _ingress(f, doc):
    """A networking.k8s.io/v1 Ingress: host rules, paths (Exact, Prefix), backends."""
    at = _At(f, "Ingress", doc)
    _expect_api(at, "networking.k8s.io/v1")
    namespace, name, _ = _metadata(at, "Ingress")
    spec = at.child("spec")
    spec.mapping(required=True)
    rules = []
    for r in spec.child("rules").items():
        r.mapping(required=True)
        host = r.child("host").string(pattern=WILDCARD_HOST, what="host (a DNS name, * only as the first label)",
                                      max_len=253)
        if host is not None and IPV4_SLOPPY.match(host):
            raise r.child("host").error(f"{host!r} must be a DNS name, not an IP address")
        paths = tuple(_ingress_path(p) for p in r.child("http").child("paths").items())
        if not paths:
            raise r.child("http").child("paths").error("required: at least one path")
        rules.append(IngressRule(host, paths))
    default = spec.child("defaultBackend")
    backend = _ingress_backend(default, "/", "Prefix") if default.value is not None else None
    if not rules and backend is None:
        raise spec.error("an Ingress needs rules or a defaultBackend")
    return IngressManifest(namespace, name, tuple(rules), backend, spec.child("ingressClassName").string())


def _ingress_path(p):
    p.mapping(required=True)
    path_type = p.child("pathType").choice(("Exact", "Prefix", "ImplementationSpecific"), None)
    path = p.child("path").string("/")
    if not path.startswith("/"):
        raise p.child("path").error(f"{path!r} must be an absolute path")
    if any(c in path for c in " ;{}\"'\\$"):
        raise p.child("path").error(f"{path!r} has a character an nginx location cannot hold")
    return _ingress_backend(p.child("backend"), path, "Prefix" if path_type == "ImplementationSpecific" else path_type)


def _ingress_backend(at, path, path_type):
    svc = at.child("service")
    svc.mapping(required=True)
    name = svc.child("name").string(required=True, pattern=DNS1035_LABEL, what="Service name")
    port = svc.child("port")
    port.mapping(required=True)
    number, port_name = port.child("number").integer(lo=1, hi=65535), port.child("name").string()
    if (number is None) == (port_name is None):
        raise port.error("exactly one of number and name")
    return IngressPath(path, path_type, name, number if number is not None else port_name)


# --- NetworkPolicy -------------------------------------------------------------------------
# networking.k8s.io/v1, defaulted and validated as kube-apiserver does it (pkg/apis/networking:
# v1/defaults.go, validation/validation.go ValidateNetworkPolicySpec; the label selector's rules
# from apimachinery's meta/v1/validation). The messages are the API's field errors (field.Error's
# "<type>: <value>: <detail>"), so a lab file's error and the API's 422 read the same; where the
# API reports every error at once, netlab names the first, in the order the API checks them.

POLICY_TYPES = ("Ingress", "Egress")
POLICY_PROTOCOLS = ("TCP", "UDP", "SCTP")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_LABEL_KEY_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY_REGEX = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation "
                    "is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
_LABEL_VALUE_REGEX = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                      "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                      "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
_SUBDOMAIN_REGEX = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
CIDR_MESSAGE = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
_OMIT = object()
# A policy's spec is read strictly (kubectl apply's field validation is Strict): a field the v1
# types lack is a typo of one that matters (a misspelt podSelector selects every pod).
_POLICY_API = "networking.k8s.io/v1 NetworkPolicy"


def _strict(at, known):
    _refuse_unknown(at, at.mapping(), set(known), _POLICY_API)


def _go_value(value):
    """How field.Error prints a bad value: numbers and booleans as %v, strings quoted (%q)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def field_error(at, kind, value=_OMIT, detail=""):
    """The API's field error at `at`: kind is field.ErrorType's text ("Invalid value",
    "Unsupported value", "Required value", "Forbidden"); Required and Forbidden print no value."""
    text = kind if value is _OMIT or kind in ("Required value", "Forbidden") else f"{kind}: {_go_value(value)}"
    return at.error(f"{text}: {detail}" if detail else text)


def label_key_errors(key):
    """apimachinery's IsQualifiedName (a label key: [prefix/]name), its messages (v1.33's)."""
    parts = key.split("/")
    if len(parts) > 2:
        return ["a qualified name " + _LABEL_KEY_REGEX + " with an optional DNS subdomain prefix and '/' "
                "(e.g. 'example.com/MyName')"]
    errs = []
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                errs.append("prefix part must be no more than 253 characters")
            if not names.DNS1123_SUBDOMAIN.match(prefix):
                errs.append("prefix part " + _SUBDOMAIN_REGEX)
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _LABEL_KEY_NAME.match(name):
        errs.append("name part " + _LABEL_KEY_REGEX)
    return errs


def label_value_errors(value):
    """apimachinery's IsValidLabelValue, its messages."""
    errs = ["must be no more than 63 characters"] if len(value) > 63 else []
    if not _LABEL_VALUE.match(value):
        errs.append(_LABEL_VALUE_REGEX)
    return errs


def _labels(at):
    """A map of labels, validated as ValidateLabels does (a bad key or value names the map)."""
    labels = at.string_map()
    for k, v in labels.items():
        for msg in label_key_errors(k):
            raise field_error(at, "Invalid value", k, msg)
        for msg in label_value_errors(v):
            raise field_error(at, "Invalid value", v, msg)
    return labels


def _label_selector(at):
    """A metav1.LabelSelector (ValidateLabelSelector); None when the field is absent (nil)."""
    if at.value is None:
        return None
    _strict(at, ("matchLabels", "matchExpressions"))
    match_labels = _labels(at.child("matchLabels"))
    expressions = []
    for e in at.child("matchExpressions").items():
        e.mapping(required=True)
        _strict(e, ("key", "operator", "values"))
        operator = e.child("operator").string("")
        values_at = e.child("values")
        values = tuple(v.string(required=True) for v in values_at.items())
        if operator in ("In", "NotIn"):
            if not values:
                raise field_error(values_at, "Required value", detail="must be specified when `operator` is 'In' "
                                                                     "or 'NotIn'")
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                raise field_error(values_at, "Forbidden", detail="may not be specified when `operator` is 'Exists' "
                                                                "or 'DoesNotExist'")
        else:
            raise field_error(e.child("operator"), "Invalid value", operator, "not a valid selector operator")
        key = e.child("key").string("")
        for msg in label_key_errors(key):
            raise field_error(e.child("key"), "Invalid value", key, msg)
        for i, v in enumerate(values):
            for msg in label_value_errors(v):
                raise field_error(values_at.child(i), "Invalid value", v, msg)
        expressions.append((key, operator, values))
    return LabelSelector(match_labels, tuple(expressions))


def _sloppy_network(text):
    """netutils.ParseCIDRSloppy: an IPv4 or IPv6 CIDR, host bits allowed (an "interface
    address"), IPv4 octets and the prefix length with leading zeros (read as decimal, as Go's
    ParseCIDR once read them). The network, or None."""
    ip, slash, length = text.partition("/")
    if not slash or not length.isdigit() or not length.isascii():
        return None
    try:
        if ":" in ip:
            address = ipaddress.IPv6Address(ip)
        else:
            octets = ip.split(".")
            if len(octets) != 4 or not all(o.isdigit() and o.isascii() and len(o) <= 3 and int(o) <= 255
                                           for o in octets):
                return None
            address = ipaddress.IPv4Address(".".join(str(int(o)) for o in octets))
        if int(length) > address.max_prefixlen:
            return None
        return ipaddress.ip_network(f"{address}/{int(length)}", strict=False)
    except ValueError:
        return None


def _ip_block(at):
    """ValidateIPBlock (the API server's legacy, non-strict CIDR parsing). The CIDRs are kept as
    the networks they name (10.0.0.1/24 is 10.0.0.0/24, as ipset and the kernel read it)."""
    _strict(at, ("cidr", "except"))
    cidr_at = at.child("cidr")
    text = cidr_at.string("")
    if not text:
        raise field_error(cidr_at, "Required value")
    net = _sloppy_network(text)
    if net is None:
        raise field_error(cidr_at, "Invalid value", text, CIDR_MESSAGE)
    excepts = []
    for e in at.child("except").items():
        value = e.string(required=True)
        inner = _sloppy_network(value)
        if inner is None:
            raise field_error(e, "Invalid value", value, CIDR_MESSAGE)
        if inner.version != net.version or not inner.subnet_of(net) or inner.prefixlen <= net.prefixlen:
            raise field_error(e, "Invalid value", value, "must be a strict subset of `cidr`")
        excepts.append(str(inner))
    return IPBlock(str(net), tuple(excepts))


def _policy_peer(at):
    """ValidateNetworkPolicyPeer: a podSelector, a namespaceSelector, both, or an ipBlock alone
    (a null item is the empty peer, as Go decodes it)."""
    _strict(at, ("podSelector", "namespaceSelector", "ipBlock"))
    pods = _label_selector(at.child("podSelector"))
    namespaces = _label_selector(at.child("namespaceSelector"))
    block = _ip_block(at.child("ipBlock")) if at.child("ipBlock").value is not None else None
    given = sum(x is not None for x in (pods, namespaces, block))
    if given == 0:
        raise field_error(at, "Required value", detail="must specify a peer")
    if given > 1 and block is not None:
        raise field_error(at, "Forbidden", detail="may not specify both ipBlock and another peer")
    return PolicyPeer(pods, namespaces, block)


def _port_name_errors(name):
    """apimachinery's IsValidPortName (an IANA_SVC_NAME), its messages."""
    errs = ["must be no more than 15 characters"] if len(name) > 15 else []
    if not re.match(r"^[-a-z0-9]+$", name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name and (name[0] == "-" or name[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _policy_port(at):
    """ValidateNetworkPolicyPort, after SetDefaults_NetworkPolicyPort (protocol TCP)."""
    _strict(at, ("protocol", "port", "endPort"))
    protocol_at = at.child("protocol")
    protocol = protocol_at.string("TCP")
    if protocol not in POLICY_PROTOCOLS:
        raise field_error(protocol_at, "Unsupported value", protocol,
                          "supported values: " + ", ".join(f'"{p}"' for p in POLICY_PROTOCOLS))
    port_at, end_at = at.child("port"), at.child("endPort")
    port, end = port_at.value, end_at.value
    for where, v in ((port_at, port), (end_at, end)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, str)) or
                              (where is end_at and not isinstance(v, int))):
            raise where.error(f"must be {'an integer' if where is end_at else 'a port number or name'}, not {v!r}")
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            raise field_error(port_at, "Invalid value", port, "must be between 1 and 65535, inclusive")
        if end is not None:
            if end < port:
                raise field_error(end_at, "Invalid value", end, "must be greater than or equal to `port`")
            if not 1 <= end <= 65535:
                raise field_error(end_at, "Invalid value", end, "must be between 1 and 65535, inclusive")
    elif isinstance(port, str):
        if end is not None:
            raise field_error(end_at, "Invalid value", end, "may not be specified when `port` is non-numeric")
        for msg in _port_name_errors(port):
            raise field_error(port_at, "Invalid value", port, msg)
    elif end is not None:
        raise field_error(end_at, "Invalid value", end, "may not be specified when `port` is not specified")
    return PolicyPort(protocol, port, end)


def _policy_rules(spec, direction, peers_key):
    rules = []
    for r in spec.child(direction).items():
        _strict(r, ("ports", peers_key))
        ports = tuple(_policy_port(p) for p in r.child("ports").items())
        peers = tuple(_policy_peer(p) for p in r.child(peers_key).items())
        rules.append(PolicyRule(peers, ports))
    return tuple(rules)


def _network_policy(f, doc):
    """A networking.k8s.io/v1 NetworkPolicy, validated as the API server validates it."""
    at = _At(f, "NetworkPolicy", doc)
    _expect_api(at, "networking.k8s.io/v1")
    namespace, name, _ = _metadata(at, "NetworkPolicy")
    spec = at.child("spec")
    _strict(spec, ("podSelector", "ingress", "egress", "policyTypes"))
    pod_selector = _label_selector(spec.child("podSelector")) or LabelSelector()
    ingress = _policy_rules(spec, "ingress", "from")
    egress = _policy_rules(spec, "egress", "to")
    types_at = spec.child("policyTypes")
    given = [t.string(required=True) for t in types_at.items()]
    if not given:                  # SetDefaults_NetworkPolicy: Ingress, and Egress when rules are given
        given = ["Ingress"] + (["Egress"] if egress else [])
    elif len(given) > len(POLICY_TYPES):
        shown = ", ".join(json.dumps(t) for t in given)
        raise types_at.error(f"Invalid value: []networking.PolicyType{{{shown}}}: may not specify more than two "
                             f"policyTypes")
    for i, t in enumerate(given):
        if t not in POLICY_TYPES:
            raise field_error(types_at.child(i), "Unsupported value", t,
                              "supported values: " + ", ".join(f'"{p}"' for p in POLICY_TYPES))
    return NetworkPolicyManifest(namespace, name, pod_selector, tuple(given), ingress, egress)


def _namespace(f, doc):
    """A v1 Namespace: its name (a DNS-1123 label) and labels (NetworkPolicies select by them).
    kubernetes.io/metadata.name is the API server's: always the name, whatever the file says."""
    at = _At(f, "Namespace", doc)
    _expect_api(at, "v1")
    meta = at.child("metadata")
    meta.mapping(required=True)
    name = meta.child("name").string(required=True, pattern=names.DNS1123_LABEL,
                                     what="namespace name (DNS-1123 label)", max_len=63)
    at.obj = f"Namespace {name}"
    labels = _labels(at.child("metadata").child("labels"))
    labels.pop("kubernetes.io/metadata.name", None)
    return NamespaceManifest(name, labels)
