"""The cloud provider's load balancers, as cloud-provider-kind provides them to kind.

For each LoadBalancer Service, one load balancer outside the nodes: its own namespace on the
LAN, holding the Service's external IP, forwarding each service port to the NodePort of
every healthy node (DNAT spread evenly, then masquerade: the status says ipMode Proxy, so
kube-proxy leaves the IP alone). Its health checks are the real ones: kube-proxy's
`:10256/healthz` for externalTrafficPolicy Cluster, the Service's healthCheckNodePort for
Local (200 only where the Service has a local endpoint). One process per lab
(`python -m netlab.addons.cloud LAB`) checks every node from inside each load balancer and
writes its rules when the healthy set changes: it is the only writer of a balancer's tables,
through the lab's own iptables backend. When asked to resync (`request_resync`, which
`reconcile` does) it reads every balancer's tables back on its next pass and repairs what
differs. That is why a LoadBalancer costs what
it costs: one more machine per Service.
"""

import json
import os
import socket
import sys
import time

from netlab import names
from netlab.api import events
from netlab.api.etcd import Store
from netlab.controllers.cluster import balancers
from netlab.kernel import iptables
from netlab.kernel import netns as ns
from netlab.node import runtime, underlay
from netlab.node.kubelet import announce, poll
from netlab.node.proxy.healthcheck import HEALTHZ_PORT
from netlab.node.proxy.iptables import probability
from netlab.values.desired import NetnsPlan
from netlab.values.iptables import Table

HEALTH_FILE = "lb-health.json"
RESYNC_FILE = "cloud.resync"
CHECK_SECONDS = 0.5
CHECK_TIMEOUT = 0.4
FAILURES_TO_DOWN = 2          # consecutive failed checks before a node stops getting traffic


def lb_plan(state, svc, healthy):
    """The load balancer's namespace: its address on the LAN and its NAT rules towards the
    NodePorts of the healthy nodes (all ready nodes until the first check). A dual-stack
    Service's balancer answers on its IPv6 address too (the container's second address on
    Docker's network) and proxies to the nodes' IPv6 addresses, with the same chains in
    ip6tables' nat table. An IPv6 lab's balancer keeps its container's IPv4 address, but the
    nodes have no IPv4 NodePorts to proxy to: its rules are IPv6's alone."""
    netns = names.lb_netns(state.lab, svc.key)
    targets = [n for n in state.nodes if n.name in healthy]
    nat = {"nat": _nat(svc, svc.load_balancer_ip, "/32", [n.ip for n in targets])} if state.cluster.ipv4 else {}
    link = underlay.uplink(state, netns, svc.load_balancer_ip)
    ip6 = svc.load_balancer_ip_of("IPv6")
    if ip6 is None:
        return NetnsPlan(netns, links=link.links, addrs=link.addrs, routes=link.routes,
                         sysctls=(("net/ipv4/ip_forward", "1"),), iptables=nat, owner="cloud")
    nat6 = _nat(svc, ip6, "/128", [f"[{n.ip6}]" for n in targets])
    return NetnsPlan(netns, links=link.links, addrs=link.addrs, routes=link.routes,
                     sysctls=(("net/ipv4/ip_forward", "1"), ("net/ipv6/conf/all/disable_ipv6", "0"),
                              ("net/ipv6/conf/all/forwarding", "1"), (f"net/ipv6/conf/{names.UPLINK}/accept_ra", "0")),
                     iptables=nat, ip6tables={"nat": nat6}, owner="cloud")


def _nat(svc, address, host_mask, node_addresses):
    """One family's nat table: each service port of `address` spread over the nodes'
    NodePorts (DNAT to `node_addresses`, IPv6 ones in brackets), then masqueraded."""
    prerouting, chains = [], {}
    for p in svc.ports:
        proto, chain = p.protocol.lower(), f"LB-{p.protocol}-{p.port}"
        prerouting.append(f"-d {address}{host_mask} -p {proto} -m {proto} --dport {p.port} -j {chain}")
        rules = []
        for i, node in enumerate(node_addresses):
            chance = f"-m statistic --mode random --probability {probability(len(node_addresses) - i)} " \
                if i < len(node_addresses) - 1 else ""
            rules.append(f"-p {proto} {chance}-j DNAT --to-destination {node}:{p.node_port}")
        chains[chain] = tuple(rules)
    return Table("nat", {"PREROUTING": tuple(prerouting), **chains,
                         "POSTROUTING": ("-m conntrack --ctstate DNAT -j MASQUERADE",)})


def read_health(lab):
    try:
        return json.loads((names.state_dir(lab) / HEALTH_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def healthy_nodes(state, svc, health):
    """The nodes a load balancer sends to: those its checks last found healthy."""
    if svc.key in health:
        return set(health[svc.key]) & {n.name for n in state.nodes}
    return {n.name for n in state.nodes}


def check(lb, svc, node):
    """One health check from inside the load balancer: HTTP 200 or not."""
    port = svc.health_check_node_port if svc.external_traffic_policy == "Local" else HEALTHZ_PORT
    path = "/" if svc.external_traffic_policy == "Local" else "/healthz"
    try:
        ip = node.internal_ip                        # cloud-provider-kind checks the node's InternalIP
        with ns.entered(lb):
            s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
        with s:
            s.settimeout(CHECK_TIMEOUT)
            s.connect((ip, port))
            host = f"[{ip}]" if ":" in ip else ip
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def request_resync(lab):
    """Ask the controller to read every balancer's tables back; returns the moment asked, for
    `kubelet.wait_served(lab, "cloud", rec, moment)`."""
    moment = time.time_ns()
    (names.state_dir(lab) / RESYNC_FILE).write_text(str(moment))
    return moment


def _resync_asked(lab):
    try:
        return (names.state_dir(lab) / RESYNC_FILE).read_text()
    except FileNotFoundError:
        return ""


# One lab process checks every balancer; a lab without one runs none.
runtime.register_process(runtime.LabProcess("cloud", __name__, wanted=lambda state: bool(balancers(state))))


class Controller:
    """The health checks of every load balancer of a lab, and their rules."""

    def __init__(self, lab):
        self.lab = lab
        self.store = Store(lab)
        self.failures = {}
        self.state, self.seen = None, None
        self.applied = {}                            # balancer netns -> the rules last written there
        self.resynced = _resync_asked(lab)

    def once(self):
        started = time.time_ns()                     # `served` says: a pass that began after this moment
        asked = _resync_asked(self.lab)
        if asked != self.resynced:                   # forget what was written: read every table back
            self.applied, self.resynced = {}, asked
        mtime = os.stat(self.store.path).st_mtime_ns
        if mtime != self.seen:                       # the state is read again only when it changed
            self.state, self.seen = self.store.load(), mtime
        state = self.state
        health = read_health(self.lab)
        new = {}
        applier = iptables.applier(state.cluster.iptables_applier)
        applier6 = iptables.applier(state.cluster.iptables_applier, "IPv6") if state.cluster.ipv6 else None
        for svc in balancers(state):
            lb = names.lb_netns(self.lab, svc.key)
            if not ns.exists(lb):
                continue
            up = set()
            for node in state.nodes:
                key = (svc.key, node.name)
                self.failures[key] = 0 if check(lb, svc, node) else self.failures.get(key, 0) + 1
                if self.failures[key] < FAILURES_TO_DOWN:
                    up.add(node.name)
            new[svc.key] = sorted(up)
            plan = lb_plan(state, svc, up)
            tables = (plan.iptables, plan.ip6tables)
            if self.applied.get(lb) != tables:       # read back only when its rules change, or on a resync
                applier.apply(lb, plan.iptables)
                if applier6 is not None:             # a dual-stack lab's balancers: IPv6's table too
                    applier6.apply(lb, plan.ip6tables)
                self.applied[lb] = tables
        for netns, (written, deleted) in applier.log + (applier6.log if applier6 is not None else []):
            svc = next(s for s in balancers(state) if names.lb_netns(self.lab, s.key) == netns)
            events.record(self.lab, [("EnsuredLoadBalancer", f"service/{svc.name}", svc.namespace,
                                      events.chains_message(written, deleted))], "cloud", "health checks")
        self.applied = {lb: t for lb, t in self.applied.items() if ns.exists(lb)}
        if new != health:
            path = names.state_dir(self.lab) / HEALTH_FILE
            path.with_suffix(".tmp").write_text(json.dumps(new, indent=1, sort_keys=True))
            os.replace(path.with_suffix(".tmp"), path)
        (self.store.dir / "cloud.served").write_text(str(started))

    def run(self):
        poll(self.store, self.once, "cloud", CHECK_SECONDS, every_pass=True)   # health checks never stop


if __name__ == "__main__":
    if not names.DNS1123_LABEL.match(sys.argv[1]):
        sys.exit(f"cloud: bad lab name {sys.argv[1]!r}")
    announce(sys.argv[1], "cloud")
    Controller(sys.argv[1]).run()
