"""The lab file: kind's Cluster document, netlab's Lab document, Kubernetes manifests.

Parsing is pure and total: it returns a LabSpec or raises one SpecError naming the file,
the object and the field. Nothing is created until the whole input is valid. Fields that do
not matter to networking are accepted and ignored, as a pasted manifest carries many.
"""

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from netlab import names
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
IGNORED_KINDS = {"ConfigMap", "Secret", "ServiceAccount", "Namespace", "Role", "RoleBinding",
                 "ClusterRole", "ClusterRoleBinding", "PersistentVolumeClaim",
                 "HorizontalPodAutoscaler", "PodDisruptionBudget"}
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
MAX_LAB_NAME = 32


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

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"

    @property
    def headless(self):
        return self.cluster_ip == "None"


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
    ingress: str = ""              # "", "NodePort" or "LoadBalancer": how ingress-nginx is exposed

    @property
    def node_names(self):
        return names.node_names(self.name, self.roles)


@dataclass(frozen=True)
class LabSpec:
    cluster: ClusterConfig
    pods: tuple = ()
    deployments: tuple = ()
    services: tuple = ()
    ingresses: tuple = ()
    sources: tuple = ()


def load(labfile=None, manifest_paths=(), cluster=None, nodes=None):
    """Read a lab file (None: kind's defaults) and extra manifest files or folders. With
    `cluster` (a running lab's), the files are manifests to apply to it: no Cluster or Lab."""
    docs = []
    if labfile is not None:
        docs += _read_documents(Path(labfile))
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
    if cluster is None:
        cluster = _cluster(cluster_docs[0] if cluster_docs else None, lab_docs[0] if lab_docs else None)
    pods, deployments, services, ingresses, seen = [], [], [], [], {}
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
        else:
            raise SpecError(f, f"document {i + 1}", "kind",
                            f"kind {kind!r} is not supported (supported: Cluster, Lab, Pod, Deployment, Service, Ingress)")
        key = (kind, obj.namespace, obj.name)
        if key in seen:
            raise SpecError(f, f"{kind} {obj.namespace}/{obj.name}", "metadata.name",
                            f"duplicate name: already defined in {seen[key]}")
        seen[key] = f
    _check_service_addresses(services)
    return LabSpec(cluster, tuple(pods), tuple(deployments), tuple(s for _, s in services), tuple(ingresses),
                   tuple(sorted({str(d[0]) for d in docs})))


# --- reading -----------------------------------------------------------------------------

def _manifest_files(path):
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    if not path.exists():
        raise SpecError(path, None, None, "no such file or directory")
    return [path]


def _read_documents(path):
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(path, None, None, e.strerror or str(e)) from None
    try:
        loaded = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError(path, where, None, f"invalid YAML: {problem}") from None
    docs = []
    for i, doc in enumerate(loaded):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise SpecError(path, f"document {i + 1}", None, "a document must be a mapping")
        if "kind" not in doc:
            raise SpecError(path, f"document {i + 1}", "kind", "missing")
        docs.append((path, i, doc))
    return docs


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
            raise self.error(f"{v!r} is longer than {max_len} characters")
        return v

    def integer(self, default=None, required=False, lo=None, hi=None):
        v = self.value
        if v is None:
            if required:
                raise self.error("required")
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(f"must be an integer, not {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.error(f"{v} is out of range {lo}-{hi}")
        return v

    def choice(self, options, default):
        v = self.string(default)
        if v not in options:
            raise self.error(f"{v!r} must be one of {', '.join(options)}")
        return v

    def network(self, default):
        v = self.string(default)
        try:
            net = ipaddress.ip_network(v, strict=True)
        except ValueError as e:
            raise self.error(f"{v!r} is not a valid CIDR ({e})") from None
        if net.version != 4:
            raise self.error(f"{v!r}: netlab models IPv4 clusters only")
        return str(net)


def _expect_api(at, expected):
    api = at.child("apiVersion").string(required=True)
    if api != expected:
        raise at.child("apiVersion").error(f"{api!r} must be {expected}")


# --- Cluster and Lab ---------------------------------------------------------------------

def _cluster(cluster_doc, lab_doc):
    c = ClusterConfig()
    values, pool_at = {}, None
    if cluster_doc:
        f, _, doc = cluster_doc
        at = _At(f, "Cluster", doc)
        _expect_api(at, KIND_API)
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
        values["pod_subnet"] = net.child("podSubnet").network(c.pod_subnet)
        values["service_subnet"] = net.child("serviceSubnet").network(c.service_subnet)
        mode = net.child("kubeProxyMode").string(c.kube_proxy_mode)
        if mode != "iptables":
            raise net.child("kubeProxyMode").error(f"{mode!r}: netlab models kube-proxy's iptables mode only")
        family = net.child("ipFamily").string("ipv4")
        if family != "ipv4":
            raise net.child("ipFamily").error(f"{family!r}: netlab models IPv4 clusters only")
    if lab_doc:
        f, _, doc = lab_doc
        at = _At(f, "Lab", doc)
        _expect_api(at, NETLAB_API)
        _refuse_unknown(at, doc, {"apiVersion", "kind", "metadata", "lan", "iptables", "dns", "loadBalancer",
                                  "ingress"})
        lan = at.child("lan")
        _refuse_unknown(lan, lan.mapping(), {"cidr", "mtu"})
        values["lan_cidr"] = lan.child("cidr").network(c.lan_cidr)
        values["underlay_mtu"] = lan.child("mtu").integer(c.underlay_mtu, lo=1280, hi=9000)
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
        pool_at = lb.child("pool")
        values["lb_pool"] = _pool(pool_at)
        ing = at.child("ingress")
        _refuse_unknown(ing, ing.mapping(), {"enabled", "service"})
        if ing.child("enabled").value:
            values["ingress"] = ing.child("service").choice(("NodePort", "LoadBalancer"), "NodePort")
    c = ClusterConfig(**{**c.__dict__, **values})
    _check_address_plan(c, cluster_doc, lab_doc)
    if c.lb_pool:
        _check_pool(pool_at, c)
    return c


# --- the LAN's address plan ----------------------------------------------------------------
# Docker gives kind's network its first address as the gateway (172.18.0.1) and the node
# containers the next ones, from .2 up; the lab's external client takes the LAN's last host
# address; load balancers take theirs from a pool (MetalLB's IPAddressPool, or the range
# cloud-provider-kind's containers land in). IPAM allocates from this one plan, and the lab
# file is checked against it, so no two of them are ever given the same address.

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
    """A load-balancer address range "FIRST-LAST", first not above last; where it may lie
    is checked against the LAN once the whole cluster is known (_check_pool)."""
    text = at.string("")
    if not text:
        return ""
    try:
        first, last = (ipaddress.ip_address(x.strip()) for x in text.split("-"))
    except ValueError:
        raise at.error(f"{text!r} must be a range FIRST-LAST of IPv4 addresses") from None
    if first.version != 4 or last.version != 4:
        raise at.error(f"{text!r}: netlab models IPv4 clusters only")
    if last < first:
        raise at.error(f"{text!r} is reversed: the first address must not be above the last ({last}-{first})")
    return f"{first}-{last}"


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


def _pool_hint(c):
    first, last = default_lb_pool(c.lan_cidr, len(c.roles))
    if ipaddress.ip_address(first) > ipaddress.ip_address(last):
        return f"the LAN {c.lan_cidr} has no address left for load balancers: give the Lab a larger lan.cidr"
    return f"put the pool above them (left out, it is {first}-{last})"


def _refuse_unknown(at, mapping, known):
    """netlab's own document is small and typos in it matter: unknown fields are refused."""
    for key in mapping:
        if key not in known:
            raise at.child(key).error(f"unknown field (known: {', '.join(sorted(known))})")


def _check_address_plan(c, cluster_doc, lab_doc):
    pod, svc, lan = (ipaddress.ip_network(n) for n in (c.pod_subnet, c.service_subnet, c.lan_cidr))
    file_of = lambda d: d[0] if d else None  # noqa: E731
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
    hosts = max(lan.num_addresses - 2, 0)         # less the network and broadcast addresses
    if hosts < len(c.roles) + 2:
        raise SpecError(file_of(lab_doc), "Lab", "lan.cidr",
                        f"{lan} is too small for {len(c.roles)} nodes: it has {hosts} host addresses, and the "
                        f"gateway, the external client and each node take one")
    if svc.num_addresses < 16:
        raise cluster_at.child("serviceSubnet").error(f"{svc} is too small")


# --- Pod and Deployment ------------------------------------------------------------------

def _metadata(at, kind):
    meta = at.child("metadata")
    meta.mapping(required=True)
    name = meta.child("name").string(required=True, pattern=names.DNS1123_SUBDOMAIN,
                                     what="name (DNS-1123 subdomain)", max_len=63)
    namespace = meta.child("namespace").string("default", pattern=names.DNS1123_LABEL,
                                               what="namespace (DNS-1123 label)", max_len=63)
    at.obj = f"{kind} {namespace}/{name}"
    return namespace, name, meta.child("labels").string_map()


def _pod(f, doc, cluster, nodes=None):
    at = _At(f, "Pod", doc)
    _expect_api(at, "v1")
    namespace, name, labels = _metadata(at, "Pod")
    return PodManifest(namespace, name, _pod_template(at.child("spec"), labels, nodes or cluster.node_names))


def _deployment(f, doc, cluster, nodes=None):
    at = _At(f, "Deployment", doc)
    _expect_api(at, "apps/v1")
    namespace, name, _ = _metadata(at, "Deployment")
    spec = at.child("spec")
    spec.mapping(required=True)
    replicas = spec.child("replicas").integer(1, lo=0, hi=10000)
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
    seen_names, seen_ports, built = set(), {}, []
    for c in containers:
        c.mapping(required=True)
        cname = c.child("name").string(required=True, pattern=names.DNS1123_LABEL,
                                       what="container name (DNS-1123 label)", max_len=63)
        if cname in seen_names:
            raise c.child("name").error(f"duplicate container name {cname!r}")
        seen_names.add(cname)
        ports = tuple(_container_port(p, seen_ports) for p in c.child("ports").items())
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


def _container_port(p, seen):
    p.mapping(required=True)
    number = p.child("containerPort").integer(required=True, lo=1, hi=65535)
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

def _service(f, doc, cluster):
    """A v1 Service, validated as the API server validates it (the parts networking uses)."""
    at = _At(f, "Service", doc)
    _expect_api(at, "v1")
    namespace, name, labels = _metadata(at, "Service")
    at.child("metadata").child("name").string(
        pattern=DNS1035_LABEL, what="Service name (DNS-1035 label: a letter first, no dots)")
    spec = at.child("spec")
    spec.mapping(required=True)
    svc_type = spec.child("type").string("ClusterIP")
    if svc_type not in SERVICE_TYPES:
        raise spec.child("type").error(f"{svc_type!r} must be one of {', '.join(SERVICE_TYPES)}")
    if svc_type == "ExternalName":
        external_name = spec.child("externalName").string(
            required=True, pattern=names.DNS1123_SUBDOMAIN, what="externalName (DNS-1123 subdomain)", max_len=253)
        return ServiceManifest(namespace, name, labels, svc_type, external_name=external_name,
                               ports=_service_ports(spec, svc_type, headless=True))
    cluster_ip = _cluster_ip(spec, cluster)
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
    lb = _load_balancer(spec, svc_type, etp)
    return ServiceManifest(
        namespace, name, labels, svc_type, cluster_ip, ports, selector or None, affinity, timeout,
        etp if reachable else None, spec.child("internalTrafficPolicy").choice(("Cluster", "Local"), "Cluster"),
        external_ips, **lb)


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


def _cluster_ip(spec, cluster):
    ip_at = spec.child("clusterIP")
    ip = ip_at.string()
    ips = [i.string() for i in spec.child("clusterIPs").items()]
    if ips and ip and ips[0] != ip:
        raise spec.child("clusterIPs").error(f"first element {ips[0]!r} must match clusterIP {ip!r}")
    ip = ip or (ips[0] if ips else None)
    if ip in (None, ""):
        return None
    if ip == "None":
        return "None"
    address = _ipv4(_At(ip_at.file, ip_at.obj, ip, ip_at.path), "cluster IP")
    svc_net = ipaddress.ip_network(cluster.service_subnet)
    if ipaddress.ip_address(address) not in svc_net:
        raise ip_at.error(f"{address} is not in the cluster's serviceSubnet {svc_net}")
    if address in (str(svc_net.network_address), str(svc_net.broadcast_address)):
        raise ip_at.error(f"{address} is not a usable address of {svc_net}")
    for reserved, owner in ((1, "default/kubernetes"), (10, "kube-system/kube-dns")):
        if address == str(svc_net.network_address + reserved):
            raise ip_at.error(f"{address} is kept for the Service {owner}")
    return address


def _ipv4(at, what):
    v = at.string(required=True)
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        raise at.error(f"{v!r} is not a valid {what}") from None
    if ip.version != 4:
        raise at.error(f"{v!r}: netlab models IPv4 clusters only")
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
            raise target_at.error(f"{target} is out of range 1-65535")
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
            if s.cluster_ip in ips:
                raise SpecError(f, obj, "spec.clusterIP", f"{s.cluster_ip} is already allocated to Service {ips[s.cluster_ip]}")
            ips[s.cluster_ip] = key
        for i, p in enumerate(s.ports):
            if p.node_port is None:
                continue
            owner = node_ports.setdefault(p.node_port, key)
            if owner != key:
                raise SpecError(f, obj, f"spec.ports[{i}].nodePort", f"{p.node_port} is already allocated to Service {owner}")
            if any(q.node_port == p.node_port and q.protocol == p.protocol for q in s.ports[:i]):
                raise SpecError(f, obj, f"spec.ports[{i}].nodePort", f"duplicate nodePort {p.node_port}/{p.protocol}")


# --- Ingress -------------------------------------------------------------------------------

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
