"""Probes: real packets from inside the lab's namespaces, and the checks built on them.

A Prober keeps one worker process per namespace it probes from (see probe_worker). Targets
are what `netlab exec` takes: a node, a pod (NAME or NAMESPACE/NAME), `external`, `lan`.
"""

import json
import subprocess
import sys
import threading
from dataclasses import dataclass

from netlab import names
from netlab.addons import agnhost
from netlab.controllers import ipam
from netlab.errors import NetlabError
from netlab.node.flannel import flanneld as flannel


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
            self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
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
        """One DNS query made with dnslib: the rcode and the answers' data."""
        return self._worker(src).call("dns", server=server, name=name, qtype=qtype, tcp=tcp, **kw)

    def ping(self, src, dst, size=84, df=False, **kw):
        return self._worker(src).call("ping", dst=dst, size=size, df=df, **kw)

    def mtu(self, src, dst, size):
        return self._worker(src).call("mtu", dst=dst, size=size)

    def capture(self, target, iface=None, bpf=None):
        return _Capture(self._worker(target), iface, bpf)


class _Capture:
    """with prober.capture("lan", "br0", "udp port 8472") as cap: ...; cap.packets"""

    def __init__(self, worker, iface, bpf):
        self.worker, self.iface, self.bpf, self.packets = worker, iface, bpf, []

    def __enter__(self):
        self.id = self.worker.call("capture_start", iface=self.iface, bpf=self.bpf)["id"]
        return self

    def __exit__(self, *exc):
        self.packets = self.worker.call("capture_stop", id=self.id)["packets"]


# --- the checks ------------------------------------------------------------------------

@dataclass
class Check:
    area: str
    name: str
    expected: str
    observed: str
    ok: bool
    hint: str = ""


def _ports(pod, proto):
    return [p for p, pr in agnhost.served_ports(pod) if pr == proto]


def _probe_pods(state):
    """One agnhost pod per node (the first), plus a second on the same node where there is one."""
    by_node = {}
    for p in state.pods:
        if _ports(p, "TCP") and _ports(p, "UDP"):
            by_node.setdefault(p.node, []).append(p)
    return by_node


def pod_to_pod(prober, state, a, b, area):
    out = []
    target = f"{b.namespace}/{b.name}"
    src = f"{a.namespace}/{a.name}"
    r = prober.ping(src, b.ip)
    out.append(Check(area, f"icmp {src} -> {target}", f"echo reply from {b.ip}",
                     r.get("src") or r.get("error") or "no reply", r["ok"] and r.get("src") == b.ip,
                     f"routes in {a.netns} and on {a.node}"))
    r = prober.http(src, b.ip, _ports(b, "TCP")[0], "/clientip")
    seen = r.get("body", r.get("error", "")).rsplit(":", 1)[0]
    out.append(Check(area, f"tcp {src} -> {target}", f"served, client seen as {a.ip} (no NAT)",
                     f"client seen as {seen}" if r["ok"] else r.get("error", f"HTTP {r.get('status')}"),
                     r["ok"] and seen == a.ip, "FLANNEL-POSTRTG must RETURN pod-to-pod traffic"))
    r = prober.udp(src, b.ip, _ports(b, "UDP")[0], "hostname")
    out.append(Check(area, f"udp {src} -> {target}", f"answer {b.name}", r.get("body") or r.get("error", ""),
                     r["ok"] and r.get("body") == b.name, f"agnhost log under {names.state_dir(state.lab)}/logs"))
    return out


AREAS = ("pods, same node", "pods, across nodes", "pod matrix", "node to pod", "pod to node", "overlay",
         "egress", "services", "dns", "load balancers", "ingress")


def suite(lab, areas=None):
    """Kubernetes' network expectations, derived from the lab's objects and checked on the
    live lab, the independent groups in parallel. `areas`: a subset of AREAS."""
    from concurrent.futures import ThreadPoolExecutor
    state = lab.state()
    by_node = _probe_pods(state)
    first = {n: pods[0] for n, pods in by_node.items()}
    nodes = [n for n in state.nodes if n.name in first]
    src = first[nodes[0].name] if nodes else None
    wanted = set(areas or AREAS)
    groups = {
        "pods, same node": lambda p: [c for n in nodes if len(by_node[n.name]) > 1
                                      for c in pod_to_pod(p, state, by_node[n.name][0], by_node[n.name][1],
                                                          "pods, same node")],
        "pods, across nodes": lambda p: [c for a, b in zip(nodes, nodes[1:] + nodes[:1]) if a is not b
                                         for c in pod_to_pod(p, state, first[a.name], first[b.name],
                                                             "pods, across nodes")],
        "pod matrix": lambda p: matrix_checks(p, state, [pods[0] for pods in by_node.values()]),
        "node to pod": lambda p: node_to_pod(p, state, nodes, by_node),
        "pod to node": lambda p: pod_to_node(p, state, src) if src else [],
        "overlay": lambda p: overlay_checks(p, state, first[nodes[0].name], first[nodes[1].name]) if len(nodes) > 1 else [],
        "egress": lambda p: egress_check(p, state, src) if src else [],
        "services": lambda p: service_checks(p, state, src) if src else [],
        "dns": lambda p: dns_checks(p, state, src) if src else [],
        "load balancers": lambda p: lb_checks(p, state),
        "ingress": lambda p: ingress_checks(p, state),
    }
    pods = {f"{p.namespace}/{p.name}" for ps in by_node.values() for p in ps[:2]}
    sources = {"pods, same node": pods, "pods, across nodes": pods, "pod matrix": pods,
               "node to pod": {n.name for n in nodes}, "pod to node": pods, "overlay": pods | {"lan"},
               "egress": pods | {"external"}, "services": pods | {state.nodes[0].name}, "dns": pods,
               "load balancers": {"external"}, "ingress": {"external", state.nodes[0].name}}
    with lab.prober() as prober:
        # Workers import scapy (about a second each): start the ones needed at once.
        prober.start(*set().union(*(sources[a] for a in wanted)))
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = {area: pool.submit(fn, prober) for area, fn in groups.items() if area in wanted}
            return [c for area in AREAS if area in results for c in results[area].result()]


def node_to_pod(prober, state, nodes, by_node):
    out = []
    for node in nodes:
        for pod in by_node[node.name][:2]:
            r = prober.http(node.name, pod.ip, _ports(pod, "TCP")[0], "/hostname")
            out.append(Check("node to pod", f"tcp {node.name} -> {pod.namespace}/{pod.name}", f"answer {pod.name}",
                             r.get("body") or r.get("error", ""), r["ok"] and r.get("body") == pod.name,
                             f"cni0 in {node.name}"))
    return out


def pod_to_node(prober, state, pod):
    """A pod reaches every node: kube-proxy's :10256/healthz answers on each."""
    out = []
    for node in state.nodes:
        r = prober.http(f"{pod.namespace}/{pod.name}", node.ip, 10256, "/healthz")
        out.append(Check("pod to node", f"tcp {pod.namespace}/{pod.name} -> {node.name}:10256", "HTTP 200",
                         f"HTTP {r['status']}" if "status" in r else r.get("error", ""), r["ok"],
                         f"the pod's default route via cni0, and {node.name}'s eth0"))
    return out


def matrix_checks(prober, state, pods):
    """TCP from every probe pod to every other: the reachability matrix."""
    out = []
    for a in pods:
        for b in pods:
            if a is b:
                continue
            r = prober.http(f"{a.namespace}/{a.name}", b.ip, _ports(b, "TCP")[0], "/hostname", timeout=1.5)
            out.append(Check("pod matrix", f"{a.namespace}/{a.name} -> {b.namespace}/{b.name}", "reached",
                             "reached" if r.get("body") == b.name else r.get("error", "no answer"),
                             r.get("body") == b.name, f"routes and flannel.1 between {a.node} and {b.node}"))
    return out


def matrix(checks):
    """The pod matrix checks as rows of ✓ and ✗, for the CLI."""
    cells = {tuple(c.name.split(" -> ")): c.ok for c in checks if c.area == "pod matrix"}
    pods = sorted({a for a, _ in cells} | {b for _, b in cells})
    rows = [[a] + [("·" if a == b else ("✓" if cells.get((a, b)) else "✗")) for b in pods] for a in pods]
    return ["from \\ to"] + [p.split("/")[-1] for p in pods], rows


def overlay_checks(prober, state, a, b):
    src = f"{a.namespace}/{a.name}"
    na, nb = state.node(a.node), state.node(b.node)
    checks = []
    with prober.capture("lan", names.LAN_BRIDGE, f"udp port {flannel.PORT}") as cap:
        prober.ping(src, b.ip)
    enc = [p for p in cap.packets if p.get("inner", {}).get("src") == a.ip and p["inner"]["dst"] == b.ip]
    seen = (f"{enc[0]['src']} -> {enc[0]['dst']} udp/{enc[0]['dport']} vni {enc[0]['vxlan']['vni']}"
            f" [{enc[0]['inner']['src']} -> {enc[0]['inner']['dst']}]" if enc else "no VXLAN packet on the LAN")
    expected = f"{na.ip} -> {nb.ip} udp/{flannel.PORT} vni {flannel.VNI} [{a.ip} -> {b.ip}]"
    checks.append(Check("overlay", f"vxlan encapsulation {a.node} -> {b.node}", expected, seen, seen == expected,
                        f"flannel.1 FDB in {a.node}: bridge fdb show dev flannel.1"))
    mtu = flannel.mtu(state.cluster)
    r = prober.ping(src, b.ip, size=mtu, df=True)
    checks.append(Check("overlay", f"mtu {mtu} DF {src} -> {b.ip}", "echo reply (fits the overlay)",
                        "echo reply" if r["ok"] else str(r), r["ok"], "underlay MTU must be flannel MTU + 50"))
    r = prober.mtu(src, b.ip, mtu + 1)
    observed = f"refused: fragmentation needed, mtu {r.get('mtu')}" if r.get("refused") else "sent (would be lost)"
    checks.append(Check("overlay", f"mtu {mtu + 1} DF {src} -> {b.ip}", f"refused: fragmentation needed, mtu {mtu}",
                        observed, r.get("refused") == "EMSGSIZE" and r.get("mtu") == mtu, "pod eth0 MTU"))
    return checks


def egress_check(prober, state, pod):
    src = f"{pod.namespace}/{pod.name}"
    node = state.node(pod.node)
    outside = ipam.lan_external_ip(state.cluster.lan_cidr)
    with prober.capture("external", names.UPLINK, "icmp") as cap:
        r = prober.ping(src, outside)
    sources = sorted({p["src"] for p in cap.packets if p.get("icmp_type") == 8})
    return [Check("egress", f"icmp {src} -> external {outside}", f"reply; seen outside as node {node.ip}",
                  f"{'reply' if r['ok'] else 'no reply'}; seen as {', '.join(sources) or 'nothing'}",
                  r["ok"] and sources == [node.ip], "FLANNEL-POSTRTG MASQUERADE in the node's nat table")]


def _backends(state, svc, port):
    """Names of the ready pods behind one service port, and whether agnhost answers there
    (the API server's own endpoint and CoreDNS's pods speak other protocols)."""
    ep = state.endpoints_of(svc)
    pods = {(a.pod, p.port) for s in (ep.subsets if ep else ()) for p in s.ports
            if p.name == port.name and p.protocol == port.protocol for a in s.addresses}
    agnhost_ = all(a and (n, port.protocol) in agnhost.served_ports(state.pod(svc.namespace, a)) for a, n in pods)
    return {a for a, _ in pods}, agnhost_


def service_checks(prober, state, pod):
    """kube-proxy's paths: each Service port from a pod by its ClusterIP, each TCP NodePort
    from the external client through every node; a Service without endpoints refuses."""
    from netlab.node.proxy import iptables as kube_proxy
    src = f"{pod.namespace}/{pod.name}"
    outside = ipam.lan_external_ip(state.cluster.lan_cidr)
    checks = []
    for svc in state.services:
        if not kube_proxy.proxied(svc) or svc.selector is None:
            continue
        for port in svc.ports:
            name = f"{svc.key}:{port.name or port.port}/{port.protocol}"
            backends, speaks_netexec = _backends(state, svc, port)
            if backends and not speaks_netexec:
                continue
            hint = f"KUBE-SERVICES and KUBE-SVC chains: netlab iptables {pod.node} -t nat"
            if not backends:
                if port.protocol == "TCP":
                    r = prober.knock(src, svc.cluster_ip, port.port)
                    seen = f"icmp {r.get('type')}/{r.get('code')}" if r.get("reply") == "icmp" else r.get("reply", "")
                    checks.append(Check("services", f"{name} without endpoints from {src}",
                                        "icmp 3/3 (port unreachable) at once", seen, seen == "icmp 3/3",
                                        "the REJECT rule in the filter table's KUBE-SERVICES"))
                continue
            r = (prober.http(src, svc.cluster_ip, port.port) if port.protocol == "TCP"
                 else prober.udp(src, svc.cluster_ip, port.port, "hostname"))
            reached = r["ok"] and r.get("body") in backends
            checks.append(Check("services", f"{name} cluster IP from {src}", "a backend answers",
                                r.get("body") or r.get("error", ""), reached, hint))
            if port.protocol == "TCP" and reached:          # the rest builds on this path
                checks += _service_tcp_checks(prober, state, pod, svc, port, name, backends, hint)
            if port.node_port and port.protocol == "TCP":
                local = svc.external_traffic_policy == "Local"
                for node in state.nodes:
                    has_local = any(p.node == node.name and p.name in backends for p in state.pods)
                    if local and not has_local:
                        continue
                    r = prober.http("external", node.ip, port.node_port, "/clientip")
                    seen = r.get("body", r.get("error", "")).rsplit(":", 1)[0]
                    expected = f"client seen as {outside}" if local else f"client not seen as {outside} (SNAT by the node)"
                    ok = r["ok"] and ((seen == outside) if local else (seen != outside))
                    checks.append(Check("services", f"{name} node port {node.ip}:{port.node_port} from external",
                                        expected, f"client seen as {seen}" if r["ok"] else seen, ok,
                                        f"KUBE-NODEPORTS and KUBE-EXT chains: netlab iptables {node.name} -t nat"))
    return checks


def dns_checks(prober, state, pod):
    return _dns_kubernetes(prober, state, pod) + _dns_service_checks(prober, state, f"{pod.namespace}/{pod.name}")


def _dns_kubernetes(prober, state, pod):
    """The cluster's DNS from a pod, over UDP and TCP, through the kube-dns ClusterIP."""
    from netlab.addons import coredns
    src = f"{pod.namespace}/{pod.name}"
    server = coredns.dns_ip(state.cluster)
    name = f"kubernetes.default.svc.{coredns.DOMAIN}"
    expected = state.service("default", "kubernetes").cluster_ip
    checks = []
    for tcp in (False, True):
        r = prober.dns(src, server, name, "A", tcp=tcp)
        seen = ", ".join(r.get("answers", [])) or r.get("rcode") or r.get("error", "")
        checks.append(Check("dns", f"{name} A over {'tcp' if tcp else 'udp'} from {src}", expected, seen,
                            r["ok"] and r.get("answers") == [expected],
                            "the coredns pods (netlab get pods -n kube-system) and the kube-dns chains"))
    return checks


def _service_tcp_checks(prober, state, pod, svc, port, name, backends, hint):
    """What Kubernetes' e2e tests ask of a TCP service port beyond one answer."""
    from netlab.addons import coredns
    src = f"{pod.namespace}/{pod.name}"
    out = []
    sticky_self = svc.session_affinity == "ClientIP" and pod.name in backends
    if backends != {pod.name} and not sticky_self:
        # The source may be a backend too: an answer from itself comes back masqueraded
        # (hairpin), so it asks until another backend answers (affinity would pin it).
        for _ in range(10 if pod.name in backends else 1):
            r = prober.http(src, svc.cluster_ip, port.port, "/clientip")
            seen = r.get("body", r.get("error", "")).rsplit(":", 1)[0]
            if seen == pod.ip:
                break
        out.append(Check("services", f"{name} source IP from {src}", f"the backend sees {pod.ip}", seen,
                         r["ok"] and seen == pod.ip, "KUBE-SVC's masquerade rule must spare pod sources"))
    fqdn = f"{svc.name}.{svc.namespace}.svc.{coredns.DOMAIN}"
    d = prober.dns(src, coredns.dns_ip(state.cluster), fqdn)
    ip = (d.get("answers") or [None])[0]
    r = prober.http(src, ip, port.port) if ip else {"ok": False, "error": f"{fqdn} did not resolve"}
    out.append(Check("services", f"{name} by name {fqdn}", "resolves to the cluster IP and a backend answers",
                     r.get("body") or r.get("error", ""), ip == svc.cluster_ip and r["ok"] and r.get("body") in backends,
                     "the coredns pods, then the cluster IP's chains"))
    if svc.session_affinity == "ClientIP":
        seen = {prober.http(src, svc.cluster_ip, port.port).get("body") for _ in range(10)}
        out.append(Check("services", f"{name} ClientIP affinity", "one backend for 10 requests", ", ".join(sorted(map(str, seen))),
                         len(seen) == 1 and seen <= backends, "the recent-match rules of the KUBE-SVC chain"))
    elif len(backends) > 1:
        tries, seen = 15 * len(backends), set()
        for _ in range(tries):
            answer = prober.http(src, svc.cluster_ip, port.port)
            if not answer["ok"] or backends <= seen:
                break
            seen.add(answer.get("body"))
        out.append(Check("services", f"{name} load spread", f"all {len(backends)} backends within {tries} requests",
                         f"{len(seen & backends)} answered", backends <= seen, "the probabilities in the KUBE-SVC chain"))
    if port.node_port and svc.external_traffic_policy != "Local":
        node = state.nodes[0]
        for who in (src, node.name):
            r = prober.http(who, node.ip, port.node_port)
            out.append(Check("services", f"{name} node port {node.ip}:{port.node_port} from {who}", "a backend answers",
                             r.get("body") or r.get("error", ""), r["ok"] and r.get("body") in backends,
                             f"KUBE-NODEPORTS on {node.name}"))
    member = next((p for p in state.pods if p.name in backends and _ports(p, "TCP")), None)
    if member is not None and svc.session_affinity != "ClientIP":
        who = f"{member.namespace}/{member.name}"
        hit = any(prober.http(who, svc.cluster_ip, port.port).get("body") == member.name for _ in range(10 * len(backends)))
        out.append(Check("services", f"{name} hairpin from {who}", "the pod reaches itself through the Service",
                         "reached itself" if hit else "never answered by itself", hit,
                         "hairpin mode on its veth and KUBE-SEP's masquerade for its own address"))
    return out


def _dns_service_checks(prober, state, src):
    from netlab.addons import coredns
    out = []
    server = coredns.dns_ip(state.cluster)
    for svc in state.services:
        fqdn = f"{svc.name}.{svc.namespace}.svc.{coredns.DOMAIN}"
        if svc.headless:
            ep = state.endpoints_of(svc)
            ready = sorted({a.ip for s in (ep.subsets if ep else ()) for a in s.addresses})
            r = prober.dns(src, server, fqdn)
            seen = sorted(r.get("answers", [])) if r.get("rcode") == "NOERROR" else r.get("rcode") or r.get("error")
            out.append(Check("dns", f"headless {fqdn}", ", ".join(ready) or "NXDOMAIN",
                             ", ".join(seen) if isinstance(seen, list) else str(seen),
                             seen == ready if ready else seen == "NXDOMAIN", "the endpoints' readiness, then CoreDNS"))
        elif svc.type == "ExternalName":
            r = prober.dns(src, server, fqdn, "CNAME")
            expected = svc.external_name.rstrip(".") + "."
            seen = ", ".join(r.get("answers", [])) or r.get("rcode") or r.get("error", "")
            out.append(Check("dns", f"ExternalName {fqdn}", f"CNAME {expected}", seen, seen.lower() == expected.lower(),
                             "CoreDNS's ExternalName records"))
    return out


def lb_checks(prober, state):
    """Every LoadBalancer Service's address from outside the cluster."""
    out = []
    for svc in state.services:
        if svc.type != "LoadBalancer" or not svc.load_balancer_ip:
            continue
        for port in svc.ports:
            backends, speaks = _backends(state, svc, port)
            if port.protocol != "TCP" or not backends or not speaks:
                continue
            r = prober.http("external", svc.load_balancer_ip, port.port)
            out.append(Check("load balancers", f"{svc.key}:{port.port} at {svc.load_balancer_ip} from external",
                             "a backend answers", r.get("body") or r.get("error", ""), r["ok"] and r.get("body") in backends,
                             "the load balancer's namespace (cloud) or the ARP announcer (MetalLB)"))
    return out


def ingress_checks(prober, state):
    """Every Ingress rule's path through the controller's NodePort, from outside: the answer
    must be the one a pod of the backend Service gives for the same request, asked directly
    from a node (a route to the wrong Service, or to none, answers otherwise)."""
    controller = next((s for s in state.services if s.namespace == "ingress-nginx"
                       and s.name == "ingress-nginx-controller"), None)
    if controller is None:
        return []
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
    a sentence saying why there is no such pod."""
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
