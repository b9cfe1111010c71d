"""Probes: real packets from inside the lab's namespaces, and the checks built on them.

A Prober keeps one worker process per namespace it probes from (see probe_worker). Targets
are what `netlab exec` takes: a node, a pod (NAME or NAMESPACE/NAME), `external`, `lan`.
The policy area's hundreds of connections need no worker: their sockets are opened in the
pods' namespaces from this process, and waited on together (connect_all).
"""

import dataclasses
import errno
import json
import resource
import secrets
import selectors
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from netlab import names
from netlab.addons import agnhost
from netlab.api import spec
from netlab.api.spec import ServiceManifest
from netlab.controllers import ipam
from netlab.errors import NetlabError
from netlab.kernel import netns as ns
from netlab.node import underlay
from netlab.node.flannel import flanneld as flannel
from netlab.node.flannel import wireguard as flannel_wg


class _Worker:
    def __init__(self, netns):
        self.netns = netns
        self.proc = subprocess.Popen([sys.executable, "-m", "netlab.observe.probe_worker", netns],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lock = threading.Lock()
        self._ready = False

    def ready(self):
        if not self._ready:
            line = self.proc.stdout.readline()
            if not line:
                raise NetlabError(f"probe worker in {self.netns} failed to start")
            self._ready = True

    def call(self, op, **kwargs):
        with self.lock:
            self.ready()
            try:
                self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
            except BrokenPipeError:          # the worker is gone: say so (the CLI's own stdout is another pipe)
                line = ""
            else:
                line = self.proc.stdout.readline()
        if not line:
            raise NetlabError(f"probe worker in {self.netns} died")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Prober:
    def __init__(self, lab):
        self.lab = lab
        self.workers = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for w in self.workers.values():
            w.close()
        self.workers.clear()

    def start(self, *targets):
        """Start workers for these targets at once, so their scapy imports overlap."""
        for t in targets:
            self._worker(t)

    def _worker(self, target):
        netns = self.lab.netns_of(target)
        if netns not in self.workers:
            self.workers[netns] = _Worker(netns)
        return self.workers[netns]

    def http(self, src, dst, port, path="/hostname", **kw):
        return self._worker(src).call("http", dst=dst, port=port, path=path, **kw)

    def udp(self, src, dst, port, message="hostname", **kw):
        return self._worker(src).call("udp", dst=dst, port=port, message=message, **kw)

    def knock(self, src, dst, port, proto="tcp", **kw):
        """A scapy-made SYN or datagram and the first answer: see probe_worker.op_knock."""
        return self._worker(src).call("knock", dst=dst, port=port, proto=proto, **kw)

    def dns(self, src, server, name, qtype="A", tcp=False, **kw):
        """One DNS query made with dnslib: the rcode and the answers' data. A truncated UDP
        answer is asked again over TCP, as a resolver does (retry_tcp=False: not)."""
        return self._worker(src).call("dns", server=server, name=name, qtype=qtype, tcp=tcp, **kw)

    def ping(self, src, dst, size=84, df=False, **kw):
        return self._worker(src).call("ping", dst=dst, size=size, df=df, **kw)

    def mtu(self, src, dst, size):
        return self._worker(src).call("mtu", dst=dst, size=size)

    def connect(self, connections, timeout=None):
        """Real connections, all at once, each from the namespace it names (connect_all): no
        worker process is needed, a socket keeps the namespace it was opened in."""
        return connect_all(connections, POLICY_TIMEOUT if timeout is None else timeout)

    def capture(self, target, iface=None, bpf=None, promisc=True, vxlan_port=None, needle=None):
        """`needle`: each packet says whether its bytes hold that text anywhere (has_needle)."""
        return _Capture(self._worker(target), iface, bpf, promisc, vxlan_port, needle)


class _Capture:
    """with prober.capture("lan", "br0", "udp port 8472") as cap: ...; cap.packets"""

    def __init__(self, worker, iface, bpf, promisc=True, vxlan_port=None, needle=None):
        self.worker, self.iface, self.bpf, self.promisc, self.packets = worker, iface, bpf, promisc, []
        self.vxlan_port, self.needle = vxlan_port, needle

    def __enter__(self):
        extra = {"vxlan_port": self.vxlan_port} if self.vxlan_port else {}
        extra.update({"needle": self.needle} if self.needle else {})
        self.id = self.worker.call("capture_start", iface=self.iface, bpf=self.bpf, promisc=self.promisc,
                                   **extra)["id"]
        return self

    def __exit__(self, *exc):
        self.packets = self.worker.call("capture_stop", id=self.id)["packets"]


# --- the checks ------------------------------------------------------------------------

@dataclass
class Check:
    """One expectation checked on the live lab. A check that could not run (no pod to send
    from, nothing there that answers) is kept, with `skipped` saying why: `ok` tells that
    nothing failed, `result` tells pass, fail and skipped apart."""
    area: str
    name: str
    expected: str
    observed: str
    ok: bool
    hint: str = ""
    skipped: str = ""
    # A dual-stack lab's check is of a family, "IPv4" or "IPv6" (its name ends with the tag),
    # set on the instance; a single-stack lab's has none, so its record (and JSON) is as it was.
    family = ""

    @property
    def result(self):
        return "skipped" if self.skipped else ("pass" if self.ok else "fail")

    def as_json(self):
        """The check as `probe -o json` prints it (with "family" in a dual-stack lab)."""
        return {**self.__dict__, "result": self.result}


def skip(area, name, expected, why):
    return Check(area, name, expected, "", True, "", why)


# --- IP families ----------------------------------------------------------------------
#
# A dual-stack lab is checked once per family, by the same checks: as kube-proxy runs one
# proxier per family over the same code, the IPv6 checks get a view of the state in which
# every object shows its IPv6 side where the checks read the IPv4 one (a pod's and a node's
# ip, a node's podCIDR, a Service's ClusterIP, its endpoints' addresses). What differs by
# family beyond the addresses (ICMPv6, AAAA, flannel-v6.1 and its MTU, ip6tables) asks
# family(state). An IPv4 lab, and a dual lab's IPv4 checks, see the state itself.

def family(state):
    """The family a state (or a family's view of it) is checked in."""
    return getattr(state, "family", "IPv4")


def base(state):
    """The lab's own state behind a family's view (what does not change with the family: the
    kube-dns Service at its one, IPv4, address)."""
    return getattr(state, "base", state)


def tag(name):
    """The mark a dual-stack lab's check names end with: " [IPv4]", " [IPv6]"."""
    return f" [{name}]"


def family_view(state, name):
    """The state as the checks of family `name` read it: the state itself for IPv4 (the
    primary family: every IPv4 field is what it is in a single-stack lab), for IPv6 a copy
    whose pods' and nodes' ip are their ip6 (None, "": the object has none), nodes' pod_cidr
    their pod_cidr6, Services' cluster_ip their IPv6 ClusterIP (None for a single-stack IPv4
    Service; headless stays "None") and load_balancer_ip its load balancer's IPv6 address
    (None where it has none), endpoints' addresses their pods' IPv6 addresses."""
    if name == "IPv4":
        return state
    pods = [dataclasses.replace(p, ip=p.ip6 or None) for p in state.pods]
    by_key = {(p.namespace, p.name): p for p in state.pods}
    nodes = [dataclasses.replace(n, ip=n.ip6, pod_cidr=n.pod_cidr6) for n in state.nodes]
    services = [dataclasses.replace(s, cluster_ip=s.cluster_ip if s.headless or s.cluster_ip is None
                                    else s.cluster_ip_of("IPv6"), load_balancer_ip=s.load_balancer_ip_of("IPv6"))
                for s in state.services]

    families = {s.key: s.families for s in state.services}

    def six(e, addresses):
        if "IPv6" not in families.get(f"{e.namespace}/{e.name}", ("IPv6",)):
            return ()                       # a single-stack IPv4 Service has IPv4 EndpointSlices alone
        pods_of = [(a, by_key.get((e.namespace, a.pod))) for a in addresses]
        return tuple(dataclasses.replace(a, ip=p.ip6) for a, p in pods_of if p is not None and p.ip6)
    endpoints = [dataclasses.replace(e, subsets=tuple(dataclasses.replace(sub, addresses=six(e, sub.addresses),
                                                                          not_ready=six(e, sub.not_ready))
                                                      for sub in e.subsets)) for e in state.endpoints]
    view = dataclasses.replace(state, pods=pods, nodes=nodes, services=services, endpoints=endpoints)
    view.family, view.base = name, state
    return view


def _single_stack(state, svc):
    """Why a Service is not checked in the view's family ("" where it is): single-stack in
    the other one."""
    if family(state) == "IPv4" or svc.cluster_ip is not None or svc.type == "ExternalName":
        return ""
    return (f"it is single-stack {', '.join(svc.families)} (ipFamilyPolicy {svc.ip_family_policy or 'SingleStack'}):"
            f" it has no IPv6 ClusterIP")


def _outside(state):
    """The external client's address on the LAN, in the view's family."""
    ip = ipam.lan_external_ip(state.cluster.lan_cidr)
    return ipam.lan_ip6(state.cluster, ip) if family(state) == "IPv6" else ip


def _host(addrport):
    """The address of an ip:port as agnhost's /clientip writes it (Go's RemoteAddr brackets an
    IPv6 one: [fd00:10:244:1::5]:80)."""
    host = addrport.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _overlay_device(state, a=None, b=None):
    """The device a packet from node `a` to node `b`'s pods leaves by: flannel's VXLAN device
    of the family, or eth0 where the backend routes it plainly (host-gw; DirectRouting between
    two nodes of one segment)."""
    c = state.cluster
    if not flannel.tunnelled(c, a, b):
        return names.UPLINK
    return flannel.device6(c) if family(state) == "IPv6" else flannel.device(c)


def _lan_bridge(state, node):
    """The LAN namespace's bridge the node is plugged into (its segment's)."""
    return underlay.segment_bridge(spec.segment_of(state.cluster, node.name))


# The areas, as --area takes them, and their titles as the table prints them.
TITLES = {"pods-same-node": "pods, same node", "pods-across-nodes": "pods, across nodes",
          "pod-matrix": "pod matrix", "node-to-pod": "node to pod", "pod-to-node": "pod to node",
          "overlay": "overlay", "egress": "egress", "services": "services", "dns": "dns",
          "load-balancers": "load balancers", "ingress": "ingress", "policy": "network policy"}
AREAS = tuple(TITLES)


def default_areas(state):
    """The areas `netlab probe` runs when none is named: all of them, but the policy matrix only
    where the lab has a NetworkPolicy (without one it is every pod pair on every port again, the
    pod matrix's question asked hundreds of times)."""
    return tuple(a for a in AREAS if a != "policy" or state.network_policies)


def _ports(pod, proto):
    return [p for p, pr in agnhost.served_ports(pod) if pr == proto]


@dataclass(frozen=True)
class Client:
    """Where a check's packets start: a pod, or, where the lab has no pod, a node's own
    namespace. A node's namespace is what a hostNetwork client pod on that node would use:
    it reaches ClusterIPs (kube-proxy's OUTPUT hook) and pods (cni0, flannel.1) as a pod
    does, so pod-to-Service checks need no scratch pod, which would take an address from
    the node's range and a veth on its cni0. What only a pod source shows (no NAT between
    pods, the source IP a backend sees, masquerade to the outside) is skipped instead."""
    target: str          # what the Prober takes: NAMESPACE/NAME or a node
    ip: str
    node: str
    pod: object = None   # the Pod; None for a node


def _as_client(pod):
    return Client(pod.key, pod.ip, pod.node, pod)


def _running(state):
    """Every pod that can send: it has an address on a node and its containers run. Per
    node, the pods agnhost serves first (the lab's own workloads), then the others."""
    from netlab.node.kubelet import pod_running
    by_node = {}
    for p in state.pods:
        if p.ip and p.node and pod_running(p):
            by_node.setdefault(p.node, []).append(p)
    return {n: sorted(ps, key=lambda p: not agnhost.served_ports(p)) for n, ps in by_node.items()}


def _client(state, by_node):
    """One client for the checks that need one: the first running pod, else the first node."""
    pods = [p for n in state.nodes for p in by_node.get(n.name, ())]
    pods.sort(key=lambda p: not agnhost.served_ports(p))
    if pods:
        return _as_client(pods[0])
    node = state.nodes[0]
    return Client(node.name, node.ip, node.name)


def _destination(pods, proto=None):
    """The pod among `pods` that answers `proto` (agnhost's TCP or UDP port); for ICMP, any
    pod answers (the kernel does), one that serves both preferred."""
    if proto:
        return next((p for p in pods if _ports(p, proto)), None)
    return (next((p for p in pods if _ports(p, "TCP") and _ports(p, "UDP")), None)
            or next((p for p in pods if agnhost.served_ports(p)), None) or (pods[0] if pods else None))


def _denied(state, src, dst, port, protocol):
    """Why a NetworkPolicy denies src -> dst:port/protocol ("" when none does, or the lab has
    none): the other areas skip what a policy denies, and `--area policy` checks it."""
    if not state.network_policies:
        return ""
    from netlab.controllers import networkpolicy
    if not hasattr(state, "_policy_index"):
        state._policy_index = networkpolicy.PolicyIndex(state)
    verdict = networkpolicy.evaluate(state._policy_index, src, dst, port, protocol)
    if verdict.allowed:
        return ""
    return (f"a NetworkPolicy denies {getattr(src, 'key', src)} -> {getattr(dst, 'key', dst)}:{port}/{protocol} "
            f"(netlab policy explain says why; netlab probe --area policy checks it)")


def pod_to_pod(prober, state, a, others, area):
    """ICMP, TCP and UDP from pod `a` to pods of one node (`others`): each protocol to a pod
    that answers it, or skipped where none does."""
    src = a.key
    where = others[0].node
    out = []
    b = _destination(others)
    r = prober.ping(src, b.ip)
    out.append(Check(area, f"icmp {src} -> {b.key}", f"echo reply from {b.ip}",
                     r.get("src") or r.get("error") or "no reply", r["ok"] and r.get("src") == b.ip,
                     f"routes in {a.netns} and on {a.node}"))
    expected = f"served, client seen as {a.ip} (no NAT)"
    b = _destination(others, "TCP")
    if b is None:
        out.append(skip(area, f"tcp {src} -> a pod on {where}", expected,
                        f"no {'other ' if where == a.node else ''}pod on {where} serves TCP (agnhost)"))
    elif _denied(state, a, b, _ports(b, "TCP")[0], "TCP"):
        out.append(skip(area, f"tcp {src} -> {b.key}", expected, _denied(state, a, b, _ports(b, "TCP")[0], "TCP")))
    else:
        r = prober.http(src, b.ip, _ports(b, "TCP")[0], "/clientip")
        seen = _host(r.get("body", r.get("error", "")))
        out.append(Check(area, f"tcp {src} -> {b.key}", expected,
                         f"client seen as {seen}" if r["ok"] else r.get("error", f"HTTP {r.get('status')}"),
                         r["ok"] and seen == a.ip, "FLANNEL-POSTRTG must RETURN pod-to-pod traffic"))
    b = _destination(others, "UDP")
    if b is None:
        out.append(skip(area, f"udp {src} -> a pod on {where}", "the pod's name as the answer",
                        f"no {'other ' if where == a.node else ''}pod on {where} serves UDP (agnhost)"))
    elif _denied(state, a, b, _ports(b, "UDP")[0], "UDP"):
        out.append(skip(area, f"udp {src} -> {b.key}", f"answer {b.name}",
                        _denied(state, a, b, _ports(b, "UDP")[0], "UDP")))
    else:
        r = prober.udp(src, b.ip, _ports(b, "UDP")[0], "hostname")
        out.append(Check(area, f"udp {src} -> {b.key}", f"answer {b.name}", r.get("body") or r.get("error", ""),
                         r["ok"] and r.get("body") == b.name, f"agnhost log under {names.state_dir(state.lab)}/logs"))
    return out


def same_node_checks(prober, state, by_node):
    area, out = "pods-same-node", []
    for node in state.nodes:
        pods = by_node.get(node.name, [])
        if len(pods) < 2:
            out.append(skip(area, f"pods on {node.name}", "pod to pod within the node",
                            f"{pods[0].key} is the only pod on {node.name}" if pods else f"no pod runs on {node.name}"))
            continue
        b = _destination(pods)
        a = next(p for p in pods if p is not b)
        out += pod_to_pod(prober, state, a, [b] + [p for p in pods if p is not a and p is not b], area)
    return out


def _with_pods(state, by_node):
    return [n for n in state.nodes if by_node.get(n.name)]


def _cross_node_reason(state, by_node):
    """Why no path between pods of two nodes can be checked, or None when one can."""
    nodes = _with_pods(state, by_node)
    if not nodes:
        return "no pod is running"
    if len(nodes) == 1:
        return f"only {nodes[0].name} has pods: a path across nodes needs pods on two"
    return None


def across_nodes_checks(prober, state, by_node):
    area = "pods-across-nodes"
    why = _cross_node_reason(state, by_node)
    if why:
        return [skip(area, "pods across nodes", "pod to pod between nodes", why)]
    nodes = _with_pods(state, by_node)
    out = []
    for a, b in zip(nodes, nodes[1:] + nodes[:1]):
        out += pod_to_pod(prober, state, by_node[a.name][0], by_node[b.name], area)
    out += [skip(area, f"pods on {n.name}", "pod to pod between nodes", f"no pod runs on {n.name}")
            for n in state.nodes if n not in nodes]
    return out


def node_to_pod(prober, state, by_node):
    """Each node to its own pods (through cni0) and to a pod of another node (through
    flannel.1): TCP where the pod serves it, ICMP otherwise."""
    area, out = "node-to-pod", []
    nodes = _with_pods(state, by_node)
    for i, node in enumerate(state.nodes):
        local = by_node.get(node.name, [])
        targets = [p for p in local if _ports(p, "TCP")][:2] or local[:1]
        if not targets:
            out.append(skip(area, f"{node.name} -> a pod on {node.name}", "an answer", f"no pod runs on {node.name}"))
        out += [_node_pod(prober, state, node, pod, f"cni0 in {node.name}") for pod in targets]
        others = [n for n in state.nodes[i + 1:] + state.nodes[:i] if n in nodes]
        if not others:
            out.append(skip(area, f"{node.name} -> a pod on another node", "an answer", "no pod runs on another node"))
            continue
        pods = by_node[others[0].name]
        pod = _destination(pods, "TCP") or _destination(pods)
        out.append(_node_pod(prober, state, node, pod,
                             f"the route to {pod.node}'s podCIDR via {_overlay_device(state)} in {node.name}"))
    return out


def _node_pod(prober, state, node, pod, hint):
    # The node's packets leave by cni0 to its own pods, by flannel.1 (the subnet's .0) to others
    # (flannel-v6.1, the IPv6 subnet's network address, in the IPv6 view).
    source = ipam.gateway(node.pod_cidr) if pod.node == node.name else node.pod_cidr.split("/")[0]
    why = _ports(pod, "TCP") and _denied(state, source, pod, _ports(pod, "TCP")[0], "TCP")
    if why:
        return skip("node-to-pod", f"tcp {node.name} -> {pod.key}", f"answer {pod.name}", why)
    if _ports(pod, "TCP"):
        r = prober.http(node.name, pod.ip, _ports(pod, "TCP")[0], "/hostname")
        return Check("node-to-pod", f"tcp {node.name} -> {pod.key}", f"answer {pod.name}",
                     r.get("body") or r.get("error", ""), r["ok"] and r.get("body") == pod.name, hint)
    r = prober.ping(node.name, pod.ip)
    return Check("node-to-pod", f"icmp {node.name} -> {pod.key}", f"echo reply from {pod.ip}",
                 r.get("src") or r.get("error") or "no reply", r["ok"] and r.get("src") == pod.ip, hint)


def pod_to_node(prober, state, client):
    """A pod reaches every node: kube-proxy's :10256/healthz answers on each."""
    out = []
    for node in state.nodes:
        name = f"tcp {client.target if client.pod else 'a pod'} -> {node.name}:10256"
        if client.pod is None:
            out.append(skip("pod-to-node", name, "HTTP 200", "no pod is running to send from"))
            continue
        r = prober.http(client.target, node.ip, 10256, "/healthz")
        out.append(Check("pod-to-node", name, "HTTP 200",
                         f"HTTP {r['status']}" if "status" in r else r.get("error", ""), r["ok"],
                         f"the pod's default route via cni0, and {node.name}'s eth0"))
    return out


def matrix_checks(prober, state, by_node):
    """TCP from one pod per node to every other: the reachability matrix."""
    why = _cross_node_reason(state, by_node)
    if why:
        return [skip("pod-matrix", "pod matrix", "TCP between pods of every two nodes", why)]
    pods = [_destination(by_node[n.name], "TCP") or by_node[n.name][0] for n in _with_pods(state, by_node)]
    out = []
    for a in pods:
        for b in pods:
            if a is b:
                continue
            name = f"{a.key} -> {b.key}"
            if not _ports(b, "TCP"):
                out.append(skip("pod-matrix", name, "reached", f"no pod on {b.node} serves TCP (agnhost)"))
                continue
            why = _denied(state, a, b, _ports(b, "TCP")[0], "TCP")
            if why:
                out.append(skip("pod-matrix", name, "reached", why))
                continue
            r = prober.http(a.key, b.ip, _ports(b, "TCP")[0], "/hostname", timeout=1.5)
            out.append(Check("pod-matrix", name, "reached",
                             "reached" if r.get("body") == b.name else r.get("error", "no answer"),
                             r.get("body") == b.name, f"routes and flannel.1 between {a.node} and {b.node}"))
    return out


def matrix(checks, family=""):
    """The pod matrix checks as rows of ✓, ✗ and - (skipped), for the CLI; in a dual-stack
    lab those of one `family`."""
    end = tag(family) if family else ""
    cells = {tuple(c.name.removesuffix(end).split(" -> ")): ("-" if c.skipped else "✓" if c.ok else "✗")
             for c in checks if c.area == "pod-matrix" and " -> " in c.name and c.family == family}
    pods = sorted({a for a, _ in cells} | {b for _, b in cells})
    rows = [[a] + [("·" if a == b else cells.get((a, b), "✗")) for b in pods] for a in pods]
    return ["from \\ to"] + [p.split("/")[-1] for p in pods], rows


def overlay_checks(prober, state, by_node):
    """flannel's backend between two nodes' pods: what the LAN carries (VXLAN, or with host-gw
    and DirectRouting the pod's own packet), and the MTU with DF set. IPv4: the network's MTU
    (FLANNEL_MTU), a bigger packet refused in the pod (its eth0 has that MTU). IPv6 over
    vxlan: flannel-v6.1's, which the kernel clamps to the underlay's MTU - 70 (a dual lab's
    pods stay at the IPv4 overlay's, 1450): a bigger packet leaves the pod, and its node
    answers Packet Too Big with flannel-v6.1's MTU."""
    six = family(state) == "IPv6"
    c = state.cluster
    why = _cross_node_reason(state, by_node)
    na, nb = _with_pods(state, by_node)[:2] if not why else (None, None)
    device = _overlay_device(state, na, nb)
    plain = device == names.UPLINK
    wg = flannel.backend_of(c) == "wireguard"
    # a plainly routed packet meets no flannel-v6.1: the pod's own MTU (FLANNEL_MTU) is the limit
    mtu = flannel.mtu6(c) if six and not plain else flannel.mtu(c)
    too_big = f"refused: packet too big, mtu {mtu}" if six else f"refused: fragmentation needed, mtu {mtu}"
    what = "plain routing" if plain else ("wireguard encryption" if wg else "vxlan encapsulation")
    if why:
        expected = "the pod's packet on the LAN, not encapsulated" if plain else \
            (f"udp/{flannel_wg.port_of(c, family(state))} between nodes, nothing of the pod's packet readable" if wg else
             f"udp/{flannel.port(c)} vni {flannel.vni(c)} between nodes")
        return [skip("overlay", what, expected, why),
                skip("overlay", f"mtu {mtu} DF", "echo reply (fits the overlay)", why),
                skip("overlay", f"mtu {mtu + 1} DF", too_big, why)]
    a, b = by_node[na.name][0], _destination(by_node[nb.name])
    src = a.key
    check = _plain_check if plain else (_wireguard_check if wg else _vxlan_check)
    checks = [check(prober, state, a, b) if plain else check(prober, state, na, nb, a, b, device)]
    r = prober.ping(src, b.ip, size=mtu, df=True)
    overhead = 0 if plain else (80 if wg else flannel.OVERHEAD6 if six else flannel.OVERHEAD)
    checks.append(Check("overlay", f"mtu {mtu} DF {src} -> {b.ip}", "echo reply (fits the overlay)",
                        "echo reply" if r["ok"] else str(r), r["ok"],
                        f"underlay MTU must be {device}'s MTU + {overhead}"))
    r = prober.mtu(src, b.ip, mtu + 1)
    refused = too_big.rsplit(" ", 1)[0]
    observed = f"{refused} {r.get('mtu')}" if r.get("refused") else "sent (would be lost)"
    checks.append(Check("overlay", f"mtu {mtu + 1} DF {src} -> {b.ip}", too_big,
                        observed, r.get("refused") == "EMSGSIZE" and r.get("mtu") == mtu,
                        f"{device}'s MTU in {a.node} and its Packet Too Big" if six and not plain
                        else "pod eth0 MTU"))
    return checks


def _vxlan_check(prober, state, na, nb, a, b, device):
    c = state.cluster
    port, vni = flannel.port(c), flannel.vni(c)
    with prober.capture("lan", _lan_bridge(state, na), f"udp port {port}", vxlan_port=port) as cap:
        prober.ping(a.key, b.ip)
    enc = [p for p in cap.packets if p.get("inner", {}).get("src") == a.ip and p["inner"]["dst"] == b.ip]
    seen = (f"{enc[0]['src']} -> {enc[0]['dst']} udp/{enc[0]['dport']} vni {enc[0]['vxlan']['vni']}"
            f" [{enc[0]['inner']['src']} -> {enc[0]['inner']['dst']}]" if enc else "no VXLAN packet on the LAN")
    expected = f"{na.ip} -> {nb.ip} udp/{port} vni {vni} [{a.ip} -> {b.ip}]"
    return Check("overlay", f"vxlan encapsulation {a.node} -> {b.node}", expected, seen, seen == expected,
                 f"{device} FDB in {a.node}: bridge fdb show dev {device}")


WIREGUARD_MESSAGES = (1, 2, 3, 4)      # handshake initiation, response, cookie reply, transport data


def _wireguard_check(prober, state, na, nb, a, b, device):
    """flannel-wg's packets on the LAN: UDP between the nodes' addresses on the WireGuard port,
    transport data (message type 4), and nowhere in any of them the text of the pod's echo."""
    c, fam = state.cluster, family(state)
    port = flannel_wg.port_of(c, fam)
    token = f"netlab-{secrets.token_hex(6)}"
    # a tunnel of its own for IPv6 (Mode separate) goes between the nodes' IPv6 addresses, one
    # tunnel for both between their IPv4 ones (the IPv6 view's nodes have their IPv6 as ip)
    ends = [base(state).node(n.name) for n in (na, nb)]
    src_ip, dst_ip = (e.ip6 if fam == "IPv6" and flannel_wg.separate(c) else e.ip for e in ends)
    with prober.capture("lan", _lan_bridge(state, na), f"udp port {port}", needle=token) as cap:
        r = prober.ping(a.key, b.ip, size=200, pattern=token)
    sent = [p for p in cap.packets if p.get("src") == src_ip and p.get("dst") == dst_ip and p.get("dport") == port]
    readable = [p for p in cap.packets if p.get("has_needle")]
    expected = f"{src_ip} -> {dst_ip} udp/{port} transport data, the echo's text ({token}) nowhere"
    if not r["ok"]:
        seen = f"the echo got no answer: {r.get('error') or r}"
    elif not sent:
        seen = "no WireGuard packet on the LAN"
    else:
        # the first packets to a peer may be its handshake (types 1 and 2) before the data (4)
        kinds = {p.get("udp_type") for p in sent}
        data = 4 in kinds and kinds <= set(WIREGUARD_MESSAGES)
        seen = (f"{src_ip} -> {dst_ip} udp/{port} " + ("transport data" if data else f"message types {sorted(kinds)}")
                + (f", the echo's text in {len(readable)} packets" if readable else
                   f", the echo's text ({token}) nowhere"))
    return Check("overlay", f"wireguard encryption {a.node} -> {b.node}", expected, seen,
                 seen == expected and not readable, f"the peers of {device} in {a.node}: netlab exec {a.node} -- wg show")


def _plain_check(prober, state, a, b):
    """host-gw, and vxlan's DirectRouting on one segment: the pods' own packet crosses the LAN
    (its addresses are the pods', no UDP around it), routed via the remote node's address."""
    six = family(state) == "IPv6"
    bpf = f"{'icmp6' if six else 'icmp'} and host {b.ip}"
    with prober.capture("lan", _lan_bridge(state, state.node(a.node)), bpf) as cap:
        prober.ping(a.key, b.ip)
    echo = 128 if six else 8
    seen_echo = [p for p in cap.packets if p.get("src") == a.ip and p.get("dst") == b.ip
                 and p.get("icmp_type") == echo]
    seen = f"{a.ip} -> {b.ip} echo request, not encapsulated" if seen_echo else "no such packet on the LAN"
    node = state.node(b.node)
    return Check("overlay", f"plain routing {a.node} -> {b.node}", f"{a.ip} -> {b.ip} echo request, not encapsulated",
                 seen, bool(seen_echo), f"the route to {node.pod_cidr} via {node.ip} in {a.node}: ip route")


def egress_check(prober, state, client):
    outside = _outside(state)
    if client.pod is None:
        return [skip("egress", f"icmp a pod -> external {outside}", "reply; seen outside as the node",
                     "no pod is running to send from")]
    node = state.node(client.node)
    six = family(state) == "IPv6"
    with prober.capture("external", names.UPLINK, "icmp6" if six else "icmp") as cap:
        r = prober.ping(client.target, outside)
    echo = 128 if six else 8                         # ICMPv6's echo request, ICMP's
    sources = sorted({p["src"] for p in cap.packets if p.get("icmp_type") == echo})
    return [Check("egress", f"icmp {client.target} -> external {outside}", f"reply; seen outside as node {node.ip}",
                  f"{'reply' if r['ok'] else 'no reply'}; seen as {', '.join(sources) or 'nothing'}",
                  r["ok"] and sources == [node.ip],
                  f"FLANNEL-POSTRTG MASQUERADE in the node's nat table{' (ip6tables -t nat)' if six else ''}")]


def _backends(state, svc, port):
    """The ready pods behind one service port (their names), and what serves them: "agnhost"
    when agnhost answers there, else the image of the first that it does not serve."""
    ep = state.endpoints_of(svc)
    pods = {(a.pod, p.port) for s in (ep.subsets if ep else ()) for p in s.ports
            if p.name == port.name and p.protocol == port.protocol for a in s.addresses}
    for name, number in sorted(pods, key=lambda x: (x[0] or "", x[1])):
        pod = next((p for p in state.pods if p.namespace == svc.namespace and p.name == name), None)
        if pod is None or (number, port.protocol) not in agnhost.served_ports(pod):
            return {a for a, _ in pods}, (pod.template.containers[0].image if pod else "no pod")
    return {a for a, _ in pods}, "agnhost"


def _backend_pods(state, svc, port):
    """(pod, target port) of every ready backend of one service port."""
    ep = state.endpoints_of(svc)
    found = [(a.pod, p.port) for s in (ep.subsets if ep else ()) for p in s.ports
             if p.name == port.name and p.protocol == port.protocol for a in s.addresses]
    pods = {p.name: p for p in state.pods if p.namespace == svc.namespace}
    return [(pods[name], number) for name, number in found if name in pods]


def _kube_dns(state):
    """The kube-dns Service, by its one address (IPv4 in a dual-stack lab too, as kubeadm's)."""
    from netlab.addons import coredns
    state = base(state)
    return next((s for s in state.services if s.cluster_ip == coredns.dns_ip(state.cluster)), None)


@dataclass
class _Followup:
    """A check that builds on a path checked before it: run when that path answered,
    skipped (with the reason) when it did not."""
    name: str
    expected: str
    hint: str
    run: object = None       # () -> (observed, ok)
    skip: str = ""


def _settle(area, followups, unreachable=""):
    out = []
    for f in followups:
        why = f.skip or unreachable
        if why:
            out.append(skip(area, f.name, f.expected, why))
        else:
            observed, ok = f.run()
            out.append(Check(area, f.name, f.expected, observed, ok, f.hint))
    return out


def service_checks(prober, state, client):
    """kube-proxy's paths: each Service port from a client by its ClusterIP, then what builds
    on it; each NodePort from the external client through every node; a Service without
    endpoints refuses."""
    from netlab.node.proxy import iptables as kube_proxy
    dns = _kube_dns(state)
    checks = []
    for svc in state.services:
        if _single_stack(state, svc) and not any(k in svc.labels for k in kube_proxy.NO_PROXY_LABELS):
            checks += [skip("services", f"{svc.key}:{port.name or port.port}/{port.protocol} cluster IP from "
                            f"{client.target}", "a backend answers", _single_stack(state, svc)) for port in svc.ports]
            continue
        if svc.type == "ExternalName" or svc.cluster_ip in (None, "None"):
            continue                                # no cluster IP: the dns area asks for its records
        if not kube_proxy.proxied(svc, family(state)):
            label = next(k for k in kube_proxy.NO_PROXY_LABELS if k in svc.labels)
            why = f"its {label} label leaves it to another proxy than kube-proxy"
            checks += [skip("services", f"{svc.key}:{port.name or port.port}/{port.protocol} cluster IP from "
                            f"{client.target}", "a backend answers", why) for port in svc.ports]
            continue
        for port in svc.ports:
            checks += _service_port_checks(prober, state, client, svc, port, dns is not None and svc.key == dns.key)
    return checks


# Where each check's hint points, in the words of the mode kube-proxy runs in.
HINTS = {
    "iptables": {
        "services": "KUBE-SERVICES and KUBE-SVC chains: netlab iptables {node} -t nat",
        "reject": "the REJECT rule in the filter table's KUBE-SERVICES",
        "nodeport-reject": "the REJECT rule in KUBE-EXTERNAL-SERVICES on {node}",
        "nodeports": "KUBE-NODEPORTS and KUBE-EXT chains: netlab iptables {node} -t nat",
        "local-drop": "the DROP rule in KUBE-EXTERNAL-SERVICES on {node}",
        "kubernetes": "the default/kubernetes KUBE-SVC chain",
        "masquerade": "KUBE-SVC's masquerade rule must spare pod sources",
        "affinity": "the recent-match rules of the KUBE-SVC chain",
        "spread": "the probabilities in the KUBE-SVC chain",
        "nodeport": "KUBE-NODEPORTS on {node}",
        "hairpin": "hairpin mode on its veth and KUBE-SEP's masquerade for its own address",
    },
    "nftables": {
        "services": "the service-ips map and the service- chains: netlab nft {node}",
        "reject": "the no-endpoint-services map's goto reject-chain: netlab nft {node}",
        "nodeport-reject": "the no-endpoint-nodeports map on {node}: netlab nft {node}",
        "nodeports": "the service-nodeports map and the external- chains: netlab nft {node}",
        "local-drop": "the no-endpoint-nodeports map's drop on {node}: netlab nft {node}",
        "kubernetes": "the default/kubernetes service- chain",
        "masquerade": "the service- chain's masquerade rule must spare pod sources",
        "affinity": "the affinity- sets and the service- chain's `ip saddr @affinity-` rules",
        "spread": "the numgen random vmap of the service- chain",
        "nodeport": "the service-nodeports map on {node}",
        "hairpin": "hairpin mode on its veth and the endpoint- chain's masquerade for its own address",
    },
}


# In the IPv6 view, the same rules are kube-proxy's IPv6 proxier's: ip6tables, or the ip6 table.
COMMANDS6 = {"iptables": ("netlab iptables {node} -t nat", "netlab exec {node} -- ip6tables-save -t nat",
                          "ip6tables: netlab exec {node} -- ip6tables-save"),
             "nftables": ("netlab nft {node}", "netlab exec {node} -- nft list table ip6 kube-proxy",
                          "the ip6 kube-proxy table: netlab exec {node} -- nft list table ip6 kube-proxy")}


def _hint(state, what, node=""):
    mode = state.cluster.kube_proxy_mode
    text = HINTS[mode][what]
    if family(state) == "IPv6":
        four, six, where = COMMANDS6[mode]
        text = text.replace(four, six) if four in text else f"{text} ({where})"
        node = node or state.nodes[0].name
    return text.format(node=node)


def _service_port_checks(prober, state, client, svc, port, is_dns):
    area = "services"
    src = client.target
    name = f"{svc.key}:{port.name or port.port}/{port.protocol}"
    hint = _hint(state, "services", client.node)
    if svc.key == "default/kubernetes":
        return [_api_server_check(prober, state, src, svc, port, name)]
    if svc.selector is None:
        why = "it has no selector: its endpoints are not the endpoints controller's"
        return [skip(area, f"{name} cluster IP from {src}", "a backend answers", why)]
    backends, server = _backends(state, svc, port)
    if not backends:
        return _without_endpoints(prober, state, client, svc, port, name)
    if client.pod is not None and state.network_policies:
        why = next(filter(None, (_denied(state, client.pod, b, number, port.protocol)
                                 for b, number in _backend_pods(state, svc, port))), "")
        if why:           # a Service is judged on its backends: one denied, and the answers are not all there
            return [skip(area, f"{name} cluster IP from {src}", "a backend answers", why)]
    if server != "agnhost":
        if is_dns and port.port == 53:
            return []                           # the dns area asks kube-dns itself, over UDP and TCP
        if is_dns and port.protocol == "TCP":   # CoreDNS's Prometheus metrics
            r = prober.http(src, svc.cluster_ip, port.port, "/metrics")
            return [Check(area, f"{name} cluster IP from {src}", "HTTP 200 with coredns_dns_requests_total",
                          f"HTTP {r['status']}" if "status" in r else r.get("error", ""),
                          r["ok"] and "coredns_dns_requests_total" in r.get("body", ""), hint)]
        from netlab.controllers import kubeadm
        why = ("the ingress area checks the controller, through its node port"
               if svc.namespace == kubeadm.INGRESS_NAMESPACE
               else f"its endpoints run {server}, which answers none of the probe's requests")
        return [skip(area, f"{name} cluster IP from {src}", "a backend answers", why)]
    if port.protocol == "TCP":
        r = prober.http(src, svc.cluster_ip, port.port)
    else:
        r = prober.udp(src, svc.cluster_ip, port.port, "hostname")
    reached = r["ok"] and r.get("body") in backends
    checks = [Check(area, f"{name} cluster IP from {src}", "a backend answers", r.get("body") or r.get("error", ""),
                    reached, hint)]
    if port.protocol == "TCP":
        checks += _settle(area, _service_tcp_followups(prober, state, client, svc, port, name, backends, hint),
                          "" if reached else f"{name} unreachable from {src}")
    if port.node_port:
        checks += _node_port_checks(prober, state, svc, port, name, backends)
    return checks


def _without_endpoints(prober, state, client, svc, port, name):
    """No ready endpoint: kube-proxy's REJECT answers at once, from inside (the cluster IP)
    and from outside (a node port), with ICMP port unreachable. From a node's own namespace
    the REJECT is in OUTPUT, and the kernel tells the socket itself: a TCP connect is refused
    (the ICMP error comes back to it), a UDP send fails with EPERM (the datagram is dropped
    on its way out)."""
    proto = port.protocol.lower()
    out = []
    hint = _hint(state, "reject", client.node)
    check_name = f"{name} without endpoints from {client.target}"
    targets = []
    if client.pod is None:
        if port.protocol == "TCP":
            r = prober.http(client.target, svc.cluster_ip, port.port)
            expected, refused = "connection refused at once", "ConnectionRefusedError"
        else:
            r = prober.udp(client.target, svc.cluster_ip, port.port)
            expected, refused = "send refused (EPERM) at once", "PermissionError"
        seen = r.get("error") or f"answered: {r.get('body') or r.get('status')}"
        out.append(Check("services", check_name, expected, seen, seen.startswith(refused + ":"), hint))
    else:
        targets.append((check_name, client.target, svc.cluster_ip, port.port, hint))
    if port.node_port:
        node = state.nodes[0]
        targets.append((f"{name} node port {node.ip}:{port.node_port} without endpoints from external", "external",
                        node.ip, port.node_port, _hint(state, "nodeport-reject", node.name)))
    # kube-proxy's REJECT: icmp-port-unreachable (3/3); in ip6tables icmp6-port-unreachable (1/4).
    unreachable = "icmp6 1/4" if family(state) == "IPv6" else "icmp 3/3"
    for check_name, who, ip, number, hint in targets:
        r = prober.knock(who, ip, number, proto)
        seen = (f"{r['reply']} {r.get('type')}/{r.get('code')}" if r.get("reply") in ("icmp", "icmp6")
                else r.get("reply", r.get("error", "")))
        out.append(Check("services", check_name, f"{unreachable} (port unreachable) at once", seen,
                         seen == unreachable, hint))
    return out


def _node_port_checks(prober, state, svc, port, name, backends):
    """A node port from the external client through every node: SNATed by the node
    (policy Cluster); for policy Local, the client's address kept where a backend runs and
    the packet dropped where none does."""
    outside = _outside(state)
    local = svc.external_traffic_policy == "Local"
    out = []
    for node in state.nodes:
        check_name = f"{name} node port {node.ip}:{port.node_port} from external"
        chains = _hint(state, "nodeports", node.name)
        has_local = any(p.node == node.name and p.name in backends and p.namespace == svc.namespace for p in state.pods)
        if local and not has_local:
            r = prober.knock("external", node.ip, port.node_port, port.protocol.lower(), timeout=1.0)
            seen = "no answer" if r.get("reply") == "none" else (r.get("reply") or r.get("error", ""))
            out.append(Check("services", check_name, f"no answer: no local endpoint on {node.name}", seen,
                             r.get("reply") == "none", _hint(state, "local-drop", node.name)))
            continue
        if port.protocol == "UDP":
            r = prober.udp("external", node.ip, port.node_port, "clientip")
        else:
            r = prober.http("external", node.ip, port.node_port, "/clientip")
        seen = _host(r.get("body", r.get("error", "")))
        expected = f"client seen as {outside}" if local else f"client not seen as {outside} (SNAT by the node)"
        ok = r["ok"] and bool(r.get("body")) and ((seen == outside) if local else (seen != outside))
        out.append(Check("services", check_name, expected, f"client seen as {seen}" if r["ok"] else seen, ok, chains))
    return out


def _api_server_check(prober, state, src, svc, port, name):
    """kubernetes.default as an in-cluster client meets it: TLS to the cluster IP, the
    certificate verified against the lab's CA for kubernetes.default.svc, and /version
    (which anonymous clients may read) answered by the API server behind kube-proxy's DNAT."""
    from netlab.api import pki
    ca = str(pki.paths(prober.lab.store.dir).ca_crt)
    r = prober.http(src, svc.cluster_ip, port.port, "/version", ca=ca, server_name="kubernetes.default.svc")
    try:
        seen = json.loads(r.get("body", ""))["gitVersion"]
    except (ValueError, KeyError, TypeError):
        seen = r.get("error") or f"HTTP {r.get('status')}"
    return Check("services", f"{name} cluster IP from {src}", "the API server's /version over verified TLS",
                 seen, r["ok"] and seen.startswith("v"),
                 "the kube_apiserver process (netlab status) and " + _hint(state, "kubernetes"))


def _service_tcp_followups(prober, state, client, svc, port, name, backends, hint):
    """What Kubernetes' e2e tests ask of a TCP service port beyond one answer, in the order
    they run; each names what it expects even when it cannot run."""
    from netlab.addons import coredns
    src, pod = client.target, client.pod
    out = []
    # Asked many times: a backend answers in milliseconds, one cut off (a partition) never
    # does, so each try waits briefly; a slow answer is one of many tries, not the verdict.
    timeout = 0.5
    sticky = svc.session_affinity == "ClientIP"

    expected = f"the backend sees {client.ip}"
    if pod is None:
        out.append(_Followup(f"{name} source IP from {src}", expected, "", skip=(
            f"the client is node {src} (no pod is running): kube-proxy masquerades what is not from a pod")))
    elif backends == {pod.name} or (sticky and pod.name in backends):
        out.append(_Followup(f"{name} source IP from {src}", expected, "", skip=(
            f"{src} can only reach itself through the Service, and that hairpin traffic is masqueraded")))
    else:
        node = next((n for n in state.nodes if n.name == pod.node), None)
        own_gateway = ipam.gateway(node.pod_cidr) if node else None

        def source_ip():
            # The source may be a backend too: its answer to itself comes back masqueraded
            # to its node's cni0 address (hairpin), so that answer (or none) is asked again
            # until another backend answers; any other address is the verdict.
            for _ in range(30 if pod.name in backends else 1):
                r = prober.http(src, svc.cluster_ip, port.port, "/clientip", timeout=timeout)
                seen = _host(r.get("body", r.get("error", "")))
                if r["ok"] and seen != own_gateway:
                    break
            return seen, r["ok"] and seen == pod.ip
        out.append(_Followup(f"{name} source IP from {src}", expected,
                             _hint(state, "masquerade"), source_ip))

    fqdn = f"{svc.name}.{svc.namespace}.svc.{coredns.DOMAIN}"
    no_dns = _no_dns(state)

    def by_name():
        d = prober.dns(src, coredns.dns_ip(state.cluster), fqdn, "AAAA" if family(state) == "IPv6" else "A")
        ip = (d.get("answers") or [None])[0]
        r = prober.http(src, ip, port.port) if ip else {"ok": False, "error": f"{fqdn} did not resolve"}
        return r.get("body") or r.get("error", ""), ip == svc.cluster_ip and r["ok"] and r.get("body") in backends
    out.append(_Followup(f"{name} by name {fqdn}", "resolves to the cluster IP and a backend answers",
                         "the coredns pods, then the cluster IP's chains", by_name, skip=no_dns))

    if sticky:
        def affinity():
            seen = {prober.http(src, svc.cluster_ip, port.port, timeout=timeout).get("body") for _ in range(10)}
            return ", ".join(sorted(map(str, seen))), len(seen) == 1 and seen <= backends
        out.append(_Followup(f"{name} ClientIP affinity", "one backend for 10 requests",
                             _hint(state, "affinity"), affinity))
    elif len(backends) > 1:
        tries = 10 * len(backends)

        def spread():
            # Every try counted, a timeout too: asking stops when every backend has answered,
            # after `tries`, or after twice as many unanswered tries as there are backends
            # (enough to have seen each backend that does answer).
            seen, answered, asked = set(), 0, 0
            while asked < tries and not backends <= seen and asked - answered < 2 * len(backends):
                r = prober.http(src, svc.cluster_ip, port.port, timeout=timeout)
                asked += 1
                if r["ok"] and r.get("body") in backends:
                    answered += 1
                    seen.add(r["body"])
            return (f"{len(seen)} of {len(backends)} backends answered ({answered} of {asked} requests)",
                    backends <= seen)
        out.append(_Followup(f"{name} load spread", f"all {len(backends)} backends within {tries} requests",
                             _hint(state, "spread"), spread))

    if port.node_port and svc.external_traffic_policy != "Local":
        node = state.nodes[0]
        for who in dict.fromkeys((src, node.name)):
            def node_port(who=who):
                r = prober.http(who, node.ip, port.node_port)
                return r.get("body") or r.get("error", ""), r["ok"] and r.get("body") in backends
            out.append(_Followup(f"{name} node port {node.ip}:{port.node_port} from {who}", "a backend answers",
                                 _hint(state, "nodeport", node.name), node_port))

    member = next((p for p in state.pods if p.namespace == svc.namespace and p.name in backends and _ports(p, "TCP")),
                  None)
    if member is not None:
        who = member.key
        check_name, expected = f"{name} hairpin from {who}", "the pod reaches itself through the Service"
        if sticky:
            out.append(_Followup(check_name, expected, "", skip="ClientIP affinity pins the pod to one backend"))
        else:
            def hairpin():
                hit = any(prober.http(who, svc.cluster_ip, port.port, timeout=timeout).get("body") == member.name
                          for _ in range(10 * len(backends)))
                return "reached itself" if hit else "never answered by itself", hit
            out.append(_Followup(check_name, expected,
                                 _hint(state, "hairpin"), hairpin))
    return out


def _no_dns(state):
    """Why the cluster has no DNS to ask, or "" when kube-dns has a ready endpoint."""
    dns = _kube_dns(state)
    ep = base(state).endpoints_of(dns) if dns else None
    if dns is None:
        return "there is no kube-dns Service"
    if not any(s.addresses for s in (ep.subsets if ep else ())):
        return f"{dns.key} has no ready endpoint"
    return ""


def dns_checks(prober, state, client):
    """The cluster's DNS from the client, through the kube-dns ClusterIP: kubernetes.default
    over UDP and TCP, every headless Service's ready addresses, every ExternalName's CNAME.
    Without a kube-dns endpoint each is skipped. In the IPv6 view the same names are asked
    for AAAA records, of the same server (kube-dns keeps its one IPv4 address in a dual-stack
    cluster): a name of a Service without IPv6 addresses has none (NOERROR, no answer: NODATA)."""
    from netlab.addons import coredns
    src = client.target
    server = coredns.dns_ip(state.cluster)
    why = _no_dns(state)
    six = family(state) == "IPv6"
    qtype = "AAAA" if six else "A"
    nodata = "NOERROR, no answer (NODATA)"
    checks = []
    name = f"kubernetes.default.svc.{coredns.DOMAIN}"
    expected = state.service("default", "kubernetes").cluster_ip
    for tcp in (False, True):
        check_name = f"{name} {qtype} over {'tcp' if tcp else 'udp'} from {src}"
        if why:
            checks.append(skip("dns", check_name, expected or nodata, why))
            continue
        r = prober.dns(src, server, name, qtype, tcp=tcp, retry_tcp=False)
        if expected is None:
            seen = ", ".join(r.get("answers", [])) or (nodata if r.get("rcode") == "NOERROR" else "") \
                or r.get("rcode") or r.get("error", "")
            checks.append(Check("dns", check_name, nodata, seen, r["ok"] and seen == nodata,
                                "CoreDNS's kubernetes plugin: a single-stack IPv4 Service has no AAAA record"))
            continue
        seen = ", ".join(r.get("answers", [])) or r.get("rcode") or r.get("error", "")
        checks.append(Check("dns", check_name, expected, seen, r["ok"] and r.get("answers") == [expected],
                            "the coredns pods (netlab get pods -n kube-system) and the kube-dns chains"))
    for svc in state.services:
        fqdn = f"{svc.name}.{svc.namespace}.svc.{coredns.DOMAIN}"
        if svc.headless:
            ep = state.endpoints_of(svc)
            ready = sorted({a.ip for s in (ep.subsets if ep else ()) for a in s.addresses})
            # The name exists while any family has a ready address: where this one has none, NODATA.
            other = base(state).endpoints_of(svc) if six else None
            none = (nodata if any(s.addresses for s in (other.subsets if other else ())) else "NXDOMAIN")
            label = f"headless {fqdn}" + (" AAAA" if six else "")
            if why:
                checks.append(skip("dns", label, _listed(ready) or none, why))
                continue
            r = prober.dns(src, server, fqdn, qtype)          # a truncated UDP answer is asked again over TCP
            seen = sorted(r.get("answers", [])) if r.get("rcode") == "NOERROR" else r.get("rcode") or r.get("error")
            observed = _listed(seen) if isinstance(seen, list) else str(seen)
            if seen == [] and none == nodata:
                observed = nodata
            if r.get("tc"):
                observed += " (over TCP: the UDP answer was truncated)"
            checks.append(Check("dns", label, _listed(ready) or none, observed,
                                seen == ready if ready else (seen == [] if none == nodata else seen == "NXDOMAIN"),
                                "the endpoints' readiness, then CoreDNS"))
        elif svc.type == "ExternalName":
            expected = svc.external_name.rstrip(".") + "."
            if why:
                checks.append(skip("dns", f"ExternalName {fqdn}", f"CNAME {expected}", why))
                continue
            r = prober.dns(src, server, fqdn, "CNAME")
            seen = ", ".join(r.get("answers", [])) or r.get("rcode") or r.get("error", "")
            checks.append(Check("dns", f"ExternalName {fqdn}", f"CNAME {expected}", seen,
                                seen.lower() == expected.lower(), "CoreDNS's ExternalName records"))
    return checks


def _listed(addresses, most=4):
    """Addresses as a person reads them: all of a few, the count and the first of many."""
    if len(addresses) <= most:
        return ", ".join(addresses)
    return f"{len(addresses)} addresses: {', '.join(addresses[:most])}, ..."


def lb_checks(prober, state):
    """Every LoadBalancer Service's address from outside the cluster, in the view's family:
    in the IPv6 view a dual-stack Service's IPv6 load-balancer address (the cloud's balancer
    answers on it, MetalLB's speaker answers NDP for it); a single-stack IPv4 one is skipped."""
    area, out = "load-balancers", []
    six = family(state) == "IPv6"
    for svc in state.services:
        if svc.type != "LoadBalancer":
            continue
        for port in svc.ports:
            name = f"{svc.key}:{port.port} at {svc.load_balancer_ip or '<pending>'} from external"
            backends, server = _backends(state, svc, port)
            if six and (_single_stack(state, svc) or not svc.load_balancer_ip):
                out.append(skip(area, name, "a backend answers", _single_stack(state, svc) or (
                    "its load balancer has no IPv6 address (status.loadBalancer.ingress holds none)")))
                continue
            why = ("it has no external IP yet (EXTERNAL-IP <pending>)" if not svc.load_balancer_ip
                   else f"{port.protocol}: the probe asks load balancers over TCP only" if port.protocol != "TCP"
                   else "it has no ready endpoint" if not backends
                   else f"its endpoints run {server}, which answers none of the probe's requests"
                   if server != "agnhost" else "")
            if why:
                out.append(skip(area, name, "a backend answers", why))
                continue
            r = prober.http("external", svc.load_balancer_ip, port.port)
            out.append(Check(area, name, "a backend answers", r.get("body") or r.get("error", ""),
                             r["ok"] and r.get("body") in backends,
                             "the load balancer's namespace (cloud) or the ARP announcer (MetalLB)"))
    return out


def ingress_checks(prober, state):
    """Every Ingress rule's path through the controller's NodePort, from outside: the answer
    must be the one a pod of the backend Service gives for the same request, asked directly
    from a node (a route to the wrong Service, or to none, answers otherwise)."""
    controller = next((s for s in state.services if s.namespace == "ingress-nginx"
                       and s.name == "ingress-nginx-controller"), None)
    if controller is None:
        return [skip("ingress", f"{rule.host or '*'}{p.path} ({p.path_type}) -> {p.service}", "routed",
                     "no ingress controller runs (the Lab document's ingress.enabled is false)")
                for ing in state.ingresses for rule in ing.rules for p in rule.paths]
    if _single_stack(state, controller):
        return [skip("ingress", f"{rule.host or '*'}{p.path} ({p.path_type}) -> {p.service}", "routed",
                     f"the controller's Service {controller.key}: {_single_stack(state, controller)}")
                for ing in state.ingresses for rule in ing.rules for p in rule.paths]
    port = next(p.node_port for p in controller.ports if p.name == "http")
    node = state.nodes[0]
    out = []
    for ing in state.ingresses:
        for rule in ing.rules:
            for p in rule.paths:
                name = f"{rule.host or '*'}{p.path} ({p.path_type}) -> {p.service}"
                hint = "the controller pod's /etc/nginx/nginx.conf (/etc/netns/<pod netns>/nginx/ on the host)"
                direct = _backend_answers(prober, state, ing.namespace, p, node)
                r = prober.http("external", node.ip, port, p.path, host=rule.host or "any.example")
                got = f"HTTP {r.get('status')} {_first_line(r.get('body', r.get('error', '')))}".strip()
                if isinstance(direct, str):                    # no Service or no ready pod behind it
                    out.append(Check("ingress", name, direct, got, False, hint))
                    continue
                same = any(r.get("status") == d.get("status") and (
                    _first_line(r.get("body", "")) == _first_line(d.get("body", ""))
                    or d.get("body", "").startswith("NOW: ")) for d in direct)   # agnhost's root: the time
                out.append(Check("ingress", name, f"HTTP {direct[0].get('status')} as {p.service}'s pods answer",
                                 got, same, hint))
    return out


def _first_line(text):
    return text.strip().splitlines()[0][:60] if text.strip() else ""


def _backend_answers(prober, state, namespace, backend, node, most=8):
    """What the ready pods of the backend Service answer for the path, asked from a node; or
    a sentence saying why there is no such pod. nginx proxies to the backend's Endpoints (its
    primary family) whatever the family the Ingress was asked over: the lab's own state's."""
    state = base(state)
    svc = next((s for s in state.services if (s.namespace, s.name) == (namespace, backend.service)), None)
    if svc is None:
        return f"Service {namespace}/{backend.service} does not exist"
    port = next((sp for sp in svc.ports if backend.port in (sp.port, sp.name)), None)
    ep = state.endpoints_of(svc)
    targets = [(a.ip, ep_port.port) for s in (ep.subsets if ep and port else ()) for ep_port in s.ports
               if ep_port.name == port.name for a in s.addresses]
    if not targets:
        return f"Service {namespace}/{backend.service} has no ready endpoint for port {backend.port}"
    return [prober.http(node.name, ip, target_port, backend.path) for ip, target_port in targets[:most]]


# --- NetworkPolicy: the evaluator's matrix against real connections ---------------------------

POLICY_MOST_PODS = 16          # a bigger lab is sampled: 16 x 16 cells per port and protocol
POLICY_TIMEOUT = 1.0           # the e2e suite's probe: agnhost connect --timeout=1s
POLICY_PARALLEL = 512          # sockets open at once (at most half the soft RLIMIT_NOFILE)
POLICY_EXPLAINED = 8           # differing cells explained in the text report, per matrix


@dataclass
class MatrixCheck(Check):
    """A check over a reachability matrix (the policy area): its tables go with it, into the
    JSON output too (`matrix`: see _policy_check)."""
    matrix: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Connection:
    """One connection to make: from network namespace `netns` to ip:port over TCP or UDP."""
    netns: str
    ip: str
    port: int
    protocol: str


def connect_all(connections, timeout=POLICY_TIMEOUT, most=POLICY_PARALLEL):
    """Make all `connections` at once and say how each went, in their order: (connected, how).

    TCP: a non-blocking connect, connected once the handshake completes; else "refused" (a RST,
    or the ICMP port unreachable that kube-router's REJECT sends: the kernel fails the connect at
    once), "timeout", or the error's name. UDP: the datagram "hostname" on a connected socket,
    connected ("answered") when an answer comes back (agnhost's netexec and serve-hostname both
    answer it); "refused" when an ICMP port unreachable does (the connected socket gets
    ECONNREFUSED), else "timeout". Only what gets no answer waits, and all of it waits together:
    a matrix costs about one timeout however many cells it has. The kernel rate-limits the ICMP
    errors a REJECT sends per destination host (net.ipv4.icmp_ratelimit: a burst of 6, then one a
    second), so a pod refused many times at once sees the later refusals as timeouts: either is
    blocked."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY:
        most = max(1, min(most, soft // 2))
    out = [None] * len(connections)
    order = sorted(range(len(connections)), key=lambda i: connections[i].netns)   # one setns per namespace
    for start in range(0, len(order), most):
        _connect_batch(connections, order[start:start + most], out, timeout)
    return out


def _how(err):
    return "refused" if err == errno.ECONNREFUSED else errno.errorcode.get(err, str(err))


def _connect_batch(connections, indexes, out, timeout):
    selector, sockets = selectors.DefaultSelector(), {}

    def finish(i, connected, how):
        out[i] = (connected, how)
        s = sockets.pop(i)
        if s.fileno() in selector.get_map():
            selector.unregister(s)
        s.close()

    try:
        by_netns = {}
        for i in indexes:
            by_netns.setdefault(connections[i].netns, []).append(i)
        for netns, group in by_netns.items():
            with ns.entered(netns):                  # a socket keeps the namespace it was made in
                for i in group:
                    kind = socket.SOCK_STREAM if connections[i].protocol == "TCP" else socket.SOCK_DGRAM
                    family = socket.AF_INET6 if ":" in connections[i].ip else socket.AF_INET
                    sockets[i] = socket.socket(family, kind)
            for i in group:
                c, s = connections[i], sockets[i]
                s.setblocking(False)
                if c.protocol == "TCP":
                    err = s.connect_ex((c.ip, c.port))
                    if err == errno.EINPROGRESS:
                        selector.register(s, selectors.EVENT_WRITE, i)
                    else:
                        finish(i, err == 0, "connected" if err == 0 else _how(err))
                    continue
                try:
                    s.connect((c.ip, c.port))
                    s.send(b"hostname")
                except OSError as e:
                    finish(i, False, _how(e.errno))
                else:
                    selector.register(s, selectors.EVENT_READ, i)
        deadline = time.monotonic() + timeout
        while selector.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                i, s = key.data, key.fileobj
                if connections[i].protocol == "TCP":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    finish(i, err == 0, "connected" if err == 0 else _how(err))
                    continue
                try:
                    s.recv(65536)
                except BlockingIOError:              # woken for nothing: wait on
                    continue
                except OSError as e:
                    finish(i, False, _how(e.errno))
                else:
                    finish(i, True, "answered")
        for i in list(sockets):
            finish(i, False, "timeout")
    finally:
        for s in sockets.values():
            s.close()
        selector.close()


def _policy_ports(pod):
    """The (port, protocol) pairs where agnhost answers for `pod` over TCP or UDP: what the
    e2e model's containers serve (serve-hostname), or netexec's ports."""
    return [k for k in agnhost.sockets(pod) if k[1] in ("TCP", "UDP")]


def _policy_pods(by_node, most=POLICY_MOST_PODS):
    """The pods of the policy matrix, sorted by namespace/name as the e2e suite's tables are,
    and how many there were to choose from: every running pod agnhost answers for on a TCP or
    UDP port (another program would answer no probe), or, past `most`, a sample taken in turn
    from each namespace."""
    pods = sorted((p for ps in by_node.values() for p in ps if _policy_ports(p)), key=lambda p: p.key)
    if len(pods) <= most:
        return pods, len(pods)
    queues = {}
    for p in pods:
        queues.setdefault(p.namespace, []).append(p)
    chosen, i = [], 0
    while len(chosen) < most:
        chosen += [q[i] for q in queues.values() if i < len(q)][:most - len(chosen)]
        i += 1
    return sorted(chosen, key=lambda p: p.key), len(pods)


def policy_checks(prober, state, by_node):
    """NetworkPolicy as Kubernetes' e2e suite checks it (test/e2e/network/netpol): for each port
    and protocol the matrix's pods serve, the reachability matrix the evaluator expects from the
    lab's policies against the one real connections show, a connection from each pod's
    namespace to each pod's IP serving that port. Loopback is left out of the verdict as
    upstream leaves it (ignoreLoopback) and expected connected (AllowLoopback: a pod's traffic
    to itself never leaves its namespace, no policy sees it). A cell that differs is tried once
    more, as the suite tries again before it fails. One check per port and protocol."""
    from netlab.controllers import networkpolicy as np
    area = "policy"
    pods, total = _policy_pods(by_node)
    if len(pods) < 2:
        why = (f"{pods[0].key} is the only running pod that answers on a port (agnhost)" if pods
               else "no running pod answers on a TCP or UDP port (agnhost)")
        return [skip(area, "policy matrix", "the policies' reachability matrix, cell by cell", why)]
    index = np.PolicyIndex(state)
    served = {p.key: set(_policy_ports(p)) for p in pods}
    tables = []
    for port, protocol in sorted({k for ports in served.values() for k in ports}):
        tos = [p for p in pods if (port, protocol) in served[p.key]]
        cells = [(s, d) for s in pods for d in tos]
        expected = {(s.key, d.key): s is d or np.evaluate(index, s, d, port, protocol, family=family(state)).allowed
                    for s, d in cells}
        tables.append((port, protocol, tos, cells, expected))
    wanted = [(Connection(s.netns, d.ip, port, protocol), expected[(s.key, d.key)], s is d)
              for port, protocol, _, cells, expected in tables for s, d in cells]
    results = prober.connect([c for c, _, _ in wanted])
    again = [i for i, (_, expect, loop) in enumerate(wanted) if not loop and results[i][0] != expect]
    if again:
        for i, r in zip(again, prober.connect([wanted[i][0] for i in again])):
            results[i] = r
    checks, at = [], 0
    for port, protocol, tos, cells, expected in tables:
        seen = results[at:at + len(cells)]
        at += len(cells)
        observed = {(s.key, d.key): r[0] for (s, d), r in zip(cells, seen)}
        how = {(s.key, d.key): r[1] for (s, d), r in zip(cells, seen)}
        checks.append(_policy_check(state, index, pods, tos, total, port, protocol, expected, observed, how))
    return checks


def _nested(cells):
    out = {}
    for (src, dst), value in cells.items():
        out.setdefault(src, {})[dst] = value
    return out


def _flat(nested):
    return {(src, dst): value for src, row in nested.items() for dst, value in row.items()}


def _policy_check(state, index, pods, tos, total, port, protocol, expected, observed, how):
    """The check of one port/protocol's matrix. `matrix` holds, for the JSON output: port,
    protocol, sources and destinations (pod keys, in the tables' order), sample ("" when every
    pod is in the matrix), expected, observed and how ({source: {destination: ...}}: true when
    connected; how it went), ignored (the loopback cells) and differences (each with the
    evaluator's explanation)."""
    from netlab.controllers import networkpolicy as np
    where = f"{port}/{protocol}"
    by_key = {p.key: p for p in pods}
    judged = [c for c in expected if c[0] != c[1]]
    differ = np.differences(expected, observed)
    kube_router = np.PolicyIndex(state, kube_router=True) if differ else None
    differences = []
    for src, dst in differ:
        text = np.explain(index, by_key[src], by_key[dst], port, protocol)
        theirs = np.evaluate(kube_router, by_key[src], by_key[dst], port, protocol)
        if theirs.allowed != expected[(src, dst)]:
            text += (f"\n  kube-router's rules read these policies otherwise: to them this is "
                     f"{'allowed' if theirs.allowed else 'denied'}")
            text += "".join(f"\n    {line}" for line in theirs.reasons())
        text += f"\nobserved: {'connected' if observed[(src, dst)] else 'blocked'} ({how[(src, dst)]})"
        differences.append({"from": src, "to": dst, "expected": expected[(src, dst)], "observed": observed[(src, dst)],
                            "how": how[(src, dst)], "explanation": text})
    sample = f"a sample of {len(pods)} of {total} pods" if total > len(pods) else ""
    mark = lambda v: "." if v else "X"  # noqa: E731
    listed = ", ".join(f"{d['from']} -> {d['to']} ({mark(d['expected'])} expected, {d['how']})"
                       for d in differences[:3])
    more = f", and {len(differences) - 3} more" if len(differences) > 3 else ""
    connected = sum(observed[c] for c in judged)
    seen = f"{connected} of {len(judged)} connected" + (f"; {len(differ)} differ: {listed}{more}" if differ else "")
    hint = ""
    if differ:
        src, dst = differ[0]
        hint = (f"netlab policy explain {src} {dst}:{where} (the reasons), netlab trace {src} {dst}:{port}"
                f"{' --udp' if protocol == 'UDP' else ''} (the chains it went through)")
    matrix = {"port": port, "protocol": protocol, "sources": [p.key for p in pods],
              "destinations": [p.key for p in tos],
              "sample": sample, "expected": _nested(expected), "observed": _nested(observed), "how": _nested(how),
              "ignored": len(expected) - len(judged), "differences": differences}
    return MatrixCheck("policy", f"{where} matrix" + (f" ({sample})" if sample else ""),
                       f"{sum(expected[c] for c in judged)} of {len(judged)} connected, as the policies say",
                       seen, not differ, hint, matrix=matrix)


def truth_table(values, froms, tos):
    """A table as the e2e suite's TruthTable.PrettyPrint prints it: a header "-" then the
    destinations, one row per source, tab-separated; `.` true, `X` false, `?` no value."""
    lines = ["\t".join(["-", *tos])]
    for src in froms:
        marks = ["?" if (src, dst) not in values else "." if values[(src, dst)] else "X" for dst in tos]
        lines.append("\t".join([src, *marks]))
    return "\n".join(lines)


def policy_report(check):
    """A policy check's tables as Reachability.PrintSummary prints them: the counts (loopback
    ignored), expected, observed, and the comparison (`.` the cell agrees, `X` it differs);
    then the first differing cells with the evaluator's reasons. Where every cell agrees, one
    table."""
    m = check.matrix
    if not m:
        return ""
    expected, observed = _flat(m["expected"]), _flat(m["observed"])
    comparison = {c: observed.get(c) == v for c, v in expected.items()}
    wrong = len(m["differences"])
    right = len(expected) - m["ignored"] - wrong
    froms, tos = m["sources"], m["destinations"]
    lines = [f"network policy {m['port']}/{m['protocol']}" + (f" ({m['sample']})" if m["sample"] else "") + ":"]
    if m["ignored"]:
        lines.append(f"warning: the results of {m['ignored']} pod->pod cases have been ignored")
    lines += [f"reachability: correct:{right}, incorrect:{wrong}, result={'false' if wrong else 'true'}", ""]
    if all(comparison.values()):                 # one table says it all
        return "\n".join(lines + ["expected = observed:", "", truth_table(observed, froms, tos)])
    lines += ["expected:", "", truth_table(expected, froms, tos), "",
              "observed:", "", truth_table(observed, froms, tos), "",
              "comparison:", "", truth_table(comparison, froms, tos)]
    for d in m["differences"][:POLICY_EXPLAINED]:
        lines += ["", d["explanation"]]
    if wrong > POLICY_EXPLAINED:
        lines += ["", f"... and {wrong - POLICY_EXPLAINED} more differing cells (-o json explains every one)"]
    return "\n".join(lines)


def policy_explain(state, src, dst):
    """`netlab policy explain SRC DST[:PORT][/PROTO]`: (text, allowed). SRC is NAMESPACE/POD,
    POD (namespace default), a node, `external` or an IP; DST the same or a Service (NAMESPACE/
    NAME, a pod of that name first, or its ClusterIP), with a port (a number, or a name: a
    container port's of the pod, a port's of the Service) and a protocol (TCP by default; ICMP
    takes no port). Without a port, every port the destination declares is judged. A Service is
    judged on its ready backends, each on the port kube-proxy sends it to (the targetPort its
    endpoints resolved), as Kubernetes judges a connection to a Service. `allowed`: every
    connection judged is allowed (a Service without a ready backend is refused by kube-proxy
    before any policy: not allowed)."""
    from netlab.controllers import networkpolicy as np
    index = np.PolicyIndex(state)
    name, port, protocol = np.parse_target(src)
    if port is not None or name != src:
        raise NetlabError(f"policy explain: SRC {src!r} is a pod, a node, external or an address, with no port "
                          "or protocol")
    source = _policy_endpoint(state, name)
    name, port, protocol = np.parse_target(dst)
    explicit = name + ("" if port is None else f":{port}") != dst        # a /PROTO was given
    if isinstance(port, str) and "/" in port:
        raise NetlabError(f"policy explain: {dst!r}: protocol {port.rpartition('/')[2]!r} is not TCP, UDP, SCTP "
                          "or ICMP")
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise NetlabError(f"policy explain: {dst!r}: port {port} is not a port number (1-65535)")
    if protocol == "ICMP" and port is not None:
        raise NetlabError(f"policy explain: {dst!r}: ICMP has no ports")
    target = _policy_destination(state, name)
    if isinstance(target, ServiceManifest):
        return _explain_service(state, index, source, target, port, protocol, explicit, dst)
    if protocol == "ICMP" or isinstance(port, int):
        verdicts = [np.evaluate(index, source, target, port, protocol, every=True)]
    else:
        verdicts = [np.evaluate(index, source, target, number, proto, every=True)
                    for number, proto in _declared(target, port, protocol if explicit else None, dst)]
    blocks = [v.explain() for v in verdicts]
    if len(verdicts) > 1:
        blocks.append(f"allowed on {sum(v.allowed for v in verdicts)} of {len(verdicts)} ports")
    return "\n\n".join(blocks), all(v.allowed for v in verdicts)


def _policy_endpoint(state, name):
    from netlab.controllers import networkpolicy as np
    if name == "external":
        return ipam.lan_external_ip(state.cluster.lan_cidr)
    try:
        return np.endpoint(state, name)
    except NetlabError as e:
        raise NetlabError(f"policy explain: {e}") from None


def _policy_destination(state, name):
    """A pod, an address, or a Service (by NAMESPACE/NAME when no pod has that name, or by its
    ClusterIP)."""
    namespace, _, short = name.rpartition("/")
    namespace = namespace or "default"
    if not any(p.namespace == namespace and p.name == short for p in state.pods):
        svc = next((s for s in state.services if (s.namespace, s.name) == (namespace, short)
                    or (s.cluster_ip not in (None, "None") and s.cluster_ip == name)), None)
        if svc is not None:
            return svc
        if "/" in name and state.find_node(name) is None:
            known = ", ".join([p.key for p in state.pods] + [s.key for s in state.services]) or "none"
            raise NetlabError(f"policy explain: lab {state.lab} has no pod or Service {namespace}/{short} "
                              f"(pods and Services: {known})")
    return _policy_endpoint(state, name)


def _declared(pod, port, protocol, dst):
    """The (port, protocol) pairs a destination declares that DST names: the container ports
    called `port` (a name), or all of them (None); of `protocol` when one was given."""
    from netlab.api.objects import Pod
    if not isinstance(pod, Pod):
        raise NetlabError(f"policy explain: {dst!r}: {pod} is no pod, so it declares no port: name one "
                          f"({pod}:PORT[/PROTO])")
    ports = [(cp.container_port, cp.protocol or "TCP", cp.name) for c in pod.template.containers for cp in c.ports]
    found = [(n, proto) for n, proto, cp_name in ports
             if (port is None or cp_name == port) and (protocol is None or proto == protocol)]
    if not found:
        listed = ", ".join(f"{n}/{proto}" + (f" {cp_name}" if cp_name else "") for n, proto, cp_name in ports)
        what = f"no container port named {port!r}" if port is not None else "no container port"
        raise NetlabError(f"policy explain: pod {pod.key} declares {what}{f' of {protocol}' if protocol else ''}"
                          f" ({f'its ports: {listed}' if listed else 'it declares none'}): name one as "
                          f"{pod.key}:PORT[/PROTO]")
    return list(dict.fromkeys(found))


def _explain_service(state, index, source, svc, port, protocol, explicit, dst):
    from netlab.controllers import networkpolicy as np
    if svc.type == "ExternalName" or not svc.selector:
        why = "an ExternalName Service" if svc.type == "ExternalName" else "a Service without a selector"
        raise NetlabError(f"policy explain: {svc.key} is {why}: it has no backend pods to judge")
    if protocol == "ICMP":
        raise NetlabError(f"policy explain: {dst!r}: a Service is reached on its ports, and ICMP has none")
    by_protocol = explicit or isinstance(port, int)      # a number is TCP unless told; a name has its own
    ports = [sp for sp in svc.ports if (port is None or port in (sp.port, sp.name))
             and (not by_protocol or sp.protocol == protocol)]
    if not ports:
        listed = ", ".join(f"{sp.port}/{sp.protocol}" + (f" {sp.name}" if sp.name else "") for sp in svc.ports)
        wanted = ("" if port is None else f"{port}") + (f"/{protocol}" if by_protocol else "")
        raise NetlabError(f"policy explain: Service {svc.key} has no port {wanted} (its ports: {listed or 'none'})")
    endpoints = state.endpoints_of(svc)
    blocks, verdicts, refused = [], [], 0
    for sp in ports:
        backends = [(a, p.port) for s in (endpoints.subsets if endpoints else ()) for p in s.ports
                    if p.name == sp.name and p.protocol == sp.protocol for a in s.addresses]
        address = svc.cluster_ip if svc.cluster_ip not in (None, "None") else "headless"
        if not backends:
            refused += 1
            blocks.append(f"{source if isinstance(source, str) else source.key} -> Service {svc.key} ({address}) "
                          f"{sp.port}/{sp.protocol}: refused\n  no ready backend: kube-proxy rejects the "
                          "connection before any policy sees it")
            continue
        for a, target_port in sorted(backends, key=lambda b: (b[0].pod or "", b[0].ip)):
            backend = index.by_ip.get(a.ip) or a.ip
            v = np.evaluate(index, source, backend, target_port, sp.protocol, every=True)
            verdicts.append(v)
            blocks.append(f"Service {svc.key} ({address}) {sp.port}/{sp.protocol} is judged on its backend "
                          f"{v.dst}, port {target_port}/{sp.protocol} (after kube-proxy's DNAT):\n{v.explain()}")
    if len(verdicts) + refused > 1:
        blocks.append(f"allowed to {sum(v.allowed for v in verdicts)} of {len(verdicts)} backend connections"
                      + (f"; {refused} Service {'port has' if refused == 1 else 'ports have'} no ready backend"
                         if refused else ""))
    return "\n\n".join(blocks), not refused and all(v.allowed for v in verdicts)


def suite(lab, areas=None):
    """Kubernetes' network expectations, derived from the lab's objects and checked on the
    live lab, the independent groups in parallel. `areas`: a subset of AREAS (default:
    default_areas). Every check
    that could not run is in the list, skipped with the reason; the number of checks
    depends on the lab's objects only, not on what answered."""
    from concurrent.futures import ThreadPoolExecutor
    unknown = [a for a in areas or () if a not in TITLES]
    if unknown:
        raise NetlabError(f"no probe area {unknown[0]!r} (areas: {', '.join(AREAS)})")
    state = lab.state()
    wanted = set(areas or default_areas(state))
    plans = {name: plan(family_view(state, name)) for name in state.cluster.families}
    dual = len(plans) > 1
    with lab.prober() as prober:
        # Workers import scapy (about a second each): start the ones needed at once.
        prober.start(*sorted(set().union(*(sources[a] for _, sources in plans.values() for a in wanted))))
        with ThreadPoolExecutor(max_workers=len(wanted) * len(plans)) as pool:   # they wait on workers, not the CPU
            results = {(area, name): pool.submit(fn, prober) for name, (groups, _) in plans.items()
                       for area, fn in groups.items() if area in wanted}
            out = []
            for area in AREAS:
                for name in plans:
                    for c in results[(area, name)].result() if (area, name) in results else ():
                        if dual:                    # every check of a dual-stack lab says its family
                            c.name, c.family = c.name + tag(name), name
                        out.append(c)
            return out


def plan(state):
    """The checks of each area on a state (or a family's view of it), as functions of the
    Prober, and the namespaces each area sends from: ({area: fn}, {area: {target}})."""
    by_node = _running(state)
    client = _client(state, by_node)
    groups = {
        "pods-same-node": lambda p: same_node_checks(p, state, by_node),
        "pods-across-nodes": lambda p: across_nodes_checks(p, state, by_node),
        "pod-matrix": lambda p: matrix_checks(p, state, by_node),
        "node-to-pod": lambda p: node_to_pod(p, state, by_node),
        "pod-to-node": lambda p: pod_to_node(p, state, client),
        "overlay": lambda p: overlay_checks(p, state, by_node),
        "egress": lambda p: egress_check(p, state, client),
        "services": lambda p: service_checks(p, state, client),
        "dns": lambda p: dns_checks(p, state, client),
        "load-balancers": lambda p: lb_checks(p, state),
        "ingress": lambda p: ingress_checks(p, state),
        "policy": lambda p: policy_checks(p, state, by_node),
    }
    pods = {p.key for ps in by_node.values() for p in ps[:2]}
    nodes = {n.name for n in state.nodes}
    sources = {"pods-same-node": pods, "pods-across-nodes": pods, "pod-matrix": pods, "node-to-pod": nodes,
               "pod-to-node": {client.target}, "overlay": pods | {"lan"}, "egress": {client.target, "external"},
               "services": {client.target, "external", state.nodes[0].name}, "dns": {client.target},
               "load-balancers": {"external"}, "ingress": {"external", state.nodes[0].name},
               "policy": set()}                 # its sockets are opened in the pods' namespaces: no worker
    return groups, sources
