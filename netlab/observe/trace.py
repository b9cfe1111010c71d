"""`netlab trace SRC DST[:PORT]`: one real flow, and the path it took, from kernel evidence.

1. Every node's rule counters are read (`iptables-save -c`), and captures start on the LAN
   bridge, every node's cni0 and flannel.1, and the source's own interface.
2. One request goes out: an HTTP GET (or a UDP datagram with --udp, or an ICMP echo when no
   port is given), made by the probe worker inside the source.
3. The counters are read again: every rule whose packet count grew is a rule the flow hit,
   on that node, in that table and chain. The conntrack tables say which DNAT was chosen.
   The captures give the hops in time order, outer and inner headers for VXLAN.

Other traffic in the lab at that moment (a load balancer's health checks, say) can move a
counter too: the trace lists what moved, and the hops are filtered to the flow's addresses.

In kube-proxy's nftables mode the `ip kube-proxy` table keeps no counters, so the kernel is
asked instead (`nft monitor trace`): each node gets a table of the trace's own, whose base
chains, ahead of every other (priority -350), set `meta nftrace set 1` on packets to the
flow's destination; a `nft monitor trace` in each node prints every rule such a packet then
matches, in order: services -> the service-ips verdict map -> service-X -> numgen ->
endpoint-Y -> dnat. A marker datagram sent after the flow tells when a monitor has printed
everything before it. The tables and the monitors are removed whatever happens.

A flow to an IPv6 address (a dual-stack lab: a pod's, node's or Service's IPv6 address, given
as is, or NAME/6 for the object's IPv6 one) is traced the same way in kube-proxy's IPv6 rules:
ip6tables' counters (`ip6tables-save -c`), or in nftables mode the `ip6 kube-proxy` table
with a trace table of family ip6.
"""

import ctypes
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack, contextmanager

from netlab import names
from netlab.controllers.cluster import balancers
from netlab.errors import NetlabError
from netlab.kernel import iptables
from netlab.kernel import netns as ns
from netlab.kernel import nft


def counters(netns, backend, family="IPv4"):
    """{(table, chain, rule): packets} from `iptables-save -c` (ip6tables-save -c for IPv6),
    read with the lab's backend."""
    out, table = {}, None
    text = iptables.save(netns, backend, "-c") if family == "IPv4" else iptables.save(netns, backend, "-c",
                                                                                      family=family)
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        m = re.match(r"\[(\d+):\d+\] -A (\S+) (.*)$", line)
        if m:
            out[(table, m.group(2), m.group(3))] = int(m.group(1))
    return out


def split_destination(dst):
    """DST[:PORT] as (host, port text): an IPv6 address is written [ADDR]:PORT, or bare
    without a port (fd00:10:244:1::5), as curl and net.JoinHostPort write them."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(.*))?", dst)
    if m:
        return m[1], m[2] or ""
    if dst.count(":") > 1:
        return dst, ""
    host, _, port = dst.partition(":")
    return host, port


def resolve(state, dst):
    """DST as an address: an IP (IPv4, or IPv6 as ADDR or [ADDR]:PORT), a pod (NAME or
    NS/NAME), a node, or a Service (NAME or NS/NAME); in a dual-stack lab NAME/6 names the
    object's IPv6 address (a pod's, a node's, a Service's IPv6 ClusterIP); an IPv6 lab's
    objects have no other."""
    host, port = split_destination(dst)
    six = host.endswith("/6") and state.cluster.ipv6
    if six:
        host = host[:-2]
    six = six or not state.cluster.ipv4
    namespace, _, name = host.rpartition("/")
    namespace = namespace or "default"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host):
        ip = host
    elif ":" in host and re.fullmatch(r"[0-9A-Fa-f:.]+", host):
        ip = host
    elif state.find_node(host) is not None:
        ip = state.find_node(host).ip6 if six else state.find_node(host).ip
    elif any(s.namespace == namespace and s.name == name for s in state.services):
        svc = state.service(namespace, name)
        ip = svc.cluster_ip_of("IPv6") if six else svc.cluster_ip
        if ip is None and six:
            raise NetlabError(f"trace: Service {svc.key} has no IPv6 ClusterIP (ipFamilies "
                              f"{', '.join(svc.families)})")
    elif any(p.namespace == namespace and p.name == name for p in state.pods):
        ip = _pod_ip(state.pod(namespace, name))
        if six:
            ip = state.pod(namespace, name).ip6
    else:
        raise NetlabError(f"trace: {host!r} is not an address, node, pod or Service of lab {state.lab}")
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise NetlabError(f"trace: port {port!r} is not a port number (1-65535)")
    if not port and dst.endswith(":"):
        raise NetlabError(f"trace: {dst!r} names no port after the colon")
    return ip, int(port) if port else None


def answered(t):
    """Whether the traced flow got an answer: an echo reply, a UDP datagram back, a TCP
    connection that was accepted (whatever the server then said: a 404 is an answer)."""
    a = t["answer"]
    if t["protocol"] == "tcp":
        return "error" not in a
    return bool(a.get("ok"))


def family_of(ip):
    return "IPv6" if ":" in ip else "IPv4"


def _source_ip(state, src, family="IPv4"):
    """The source's address in the flow's family."""
    six = family == "IPv6"
    if src == "external":
        from netlab.controllers import ipam
        ip = ipam.lan_external_ip(state.cluster.lan_cidr)
        return ipam.lan_ip6(state.cluster, ip) if six else ip
    if state.find_node(src) is not None:
        return state.find_node(src).ip6 if six else state.find_node(src).ip
    namespace, _, name = src.rpartition("/")
    pod = state.pod(namespace or "default", name)
    ip = _pod_ip(pod)
    return pod.ip6 if six else ip


def _pod_ip(pod):
    if pod.node is None:
        raise NetlabError(f"trace: pod {pod.key} is Pending (no address): {pod.unschedulable}")
    return pod.pod_ip


def trace(lab, src, dst, udp=False):
    state = lab.state()
    ip, port = resolve(state, dst)
    family = family_of(ip)
    six = family == "IPv6"
    src_ip = _source_ip(state, src, family)
    if not src_ip:
        raise NetlabError(f"trace: {src} has no {family} address to send from (the lab is single-stack IPv4)")
    protocol = "icmp" if port is None else ("udp" if udp else "tcp")
    nftables = state.cluster.kube_proxy_mode == "nftables"
    applier = state.cluster.iptables_applier
    before = {n.name: counters(n.netns, applier, family) for n in state.nodes}
    overlay = _overlay_device(state.cluster, six)
    where = [("lan", names.LAN_BRIDGE)] + [(n.name, dev) for n in state.nodes
                                           for dev in (names.CNI_BRIDGE, overlay) if dev]
    where.append((src, names.UPLINK))
    with ExitStack() as tracing:
        traced = (tracing.enter_context(nft_tracing(state, flow_matches(state, ip, port, protocol), family=family))
                  if nftables else None)
        with lab.prober() as prober:
            prober.start(src, "lan", *[n.name for n in state.nodes])
            with ExitStack() as stack:
                # A bridge in promiscuous mode passes multicast up marked as seen only by the
                # capture, and this kernel's IPv6 then ignores a pod's neighbour solicitation for
                # its cni0 gateway (tcpdump -i cni0 does the same to a dual-stack node): an IPv6
                # trace captures cni0 as tcpdump -p does, which still sees the routed flow.
                caps = [(w, stack.enter_context(prober.capture(w[0], w[1], None,
                                                               promisc=not (six and w[1] == names.CNI_BRIDGE))))
                        for w in where]
                if port is None:
                    answer = prober.ping(src, ip)
                elif udp:
                    answer = prober.udp(src, ip, port, "hostname")
                else:
                    answer = prober.http(src, ip, port, "/hostname")
        reported = traced.reported() if nftables else {}
    after = {n.name: counters(n.netns, applier, family) for n in state.nodes}
    local = answer.get("local", "")
    sport = int(local.rsplit(":", 1)[1]) if ":" in local else None
    rules = [{"node": node, "table": t, "chain": c, "rule": r, "packets": after[node][(t, c, r)] - before[node].get((t, c, r), 0)}
             for node in after for (t, c, r) in after[node]
             if after[node][(t, c, r)] > before[node].get((t, c, r), 0)]
    table = IP6_KUBE_PROXY_TABLE if six else KUBE_PROXY_TABLE
    rules += [hop for node in state.nodes
              for hop in nft_hops(node.name, parse_monitor(reported.get(node.name, "")), sport, table)]
    nat = _conntrack(state, src_ip, ip, port, sport, udp)
    flow = {src_ip, ip} | {_host(e["to"]) for e in nat} | {e["reply_dst"] for e in nat}
    hops = []
    tunnel = _wireguard_tunnel(state)
    for (target, dev), cap in caps:
        for p in cap.packets:
            inner = p.get("inner")
            if (inner and {inner.get("src"), inner.get("dst")} & flow) or (not inner and {p.get("src"), p.get("dst")} & flow):
                hops.append({"where": f"{target}:{dev}", **p})
            elif tunnel(p):
                hops.append({"where": f"{target}:{dev}", **p, "wireguard": True})
    hops.sort(key=lambda h: h.get("time", 0))
    out = {"source": src, "src_ip": src_ip, "destination": dst, "dst_ip": ip, "port": port,
           "protocol": protocol, "kube_proxy_mode": state.cluster.kube_proxy_mode, "answer": answer,
           "rules": rules, "network_policies": len(state.network_policies), "policy": policy_path(rules),
           "conntrack": nat, "hops": hops}
    if six:                                  # an IPv4 trace's record is as it was
        out["family"] = family
    return out


def _hop_end(address, port):
    """One end of a captured packet: ADDR:PORT, [ADDR6]:PORT, or the address alone (no port)."""
    if port in (None, ""):
        return str(address)
    return f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"


def _overlay_device(cluster, six):
    """flannel's VXLAN device of the family, or None where the backend has none (host-gw);
    a plainly routed flow (DirectRouting within a segment) is seen on eth0 anyway."""
    from netlab.node.flannel import flanneld
    if flanneld.backend_of(cluster) == "host-gw":
        return None
    return flanneld.device6(cluster) if six else flanneld.device(cluster)


WIREGUARD_MESSAGES = {1: "handshake initiation", 2: "handshake response", 3: "cookie reply", 4: "transport data"}


def _wireguard_tunnel(state):
    """Whether a captured packet is flannel's WireGuard between two nodes (its contents
    unreadable, so it is told by its addresses and port): the flow's packets on the LAN."""
    c = state.cluster
    if c.flannel_backend != "wireguard":
        return lambda p: False
    nodes = {a for n in state.nodes for a in n.ips}
    ports = {c.wg_listen_port, c.wg_listen_port6}
    return lambda p: ({p.get("src"), p.get("dst")} <= nodes and (p.get("dport") in ports or p.get("sport") in ports)
                      and p.get("proto") == 17)


def _host(addrport):
    """The address of ip:port, [ip6]:port or ip6.port."""
    host = addrport.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


# --- NetworkPolicy: the chains of kube-router's agent the flow went through ---------------------

POLICY_CHAINS = ("KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-")
COMMON_CHAIN, DEFAULT_CHAIN = "KUBE-NWPLCY-COMMON", "KUBE-NWPLCY-DEFAULT"
_COMMENT = re.compile(r'--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))')
_POD = re.compile(r"POD name:(\S+) namespace: (\S+)")
_TARGET = re.compile(r"(?:^| )-j (\S+)")


def _comment(rule):
    """A rule's comment as iptables-save prints it, unquoted (KUBE-NWPLCY-COMMON's first two
    carry quotes of their own: kube-router passes them to iptables inside the argument)."""
    m = _COMMENT.search(rule)
    if not m:
        return ""
    return re.sub(r"\\(.)", r"\1", m[1] if m[1] is not None else m[2]).strip('"')


def _policy_step(hit):
    """One kube-router rule the flow hit, named: `what` it is and the text that says so
    (the reference's rule layout, shared/reference/networkpolicy.md)."""
    chain, rule = hit["chain"], hit["rule"]
    text, target = _comment(rule), (_TARGET.search(rule) or [None, ""])[1]
    step = {**hit, "what": "other", "text": text}
    pod = _POD.search(text)
    if text.startswith("KUBE-ROUTER ") and target == "ACCEPT":      # k3s's, in a built-in chain
        return {**step, "what": "accepted", "text": "ACCEPT: the flow complies with the policies (mark 0x20000)"}
    if chain.startswith("KUBE-ROUTER-"):
        if target.startswith("KUBE-POD-FW-") and pod:
            direction = "ingress" if "destined to" in text else "egress"
            return {**step, "what": "pod", "pod": f"{pod[2]}/{pod[1]}", "direction": direction, "target": target,
                    "text": f"{'to' if direction == 'ingress' else 'from'} pod {pod[2]}/{pod[1]}: its chain {target}"}
        if target == "ACCEPT":
            return {**step, "what": "accepted", "text": "ACCEPT: the flow complies with the policies (mark 0x20000)"}
        if target == "RETURN":
            return {**step, "what": "return", "text": f"RETURN: {text}"}
    elif chain.startswith("KUBE-POD-FW-"):
        if target == COMMON_CHAIN:
            return {**step, "what": "common", "text": f"{COMMON_CHAIN}: state and ICMP first"}
        if "--src-type LOCAL" in rule:
            return {**step, "what": "from-node", "text": "ACCEPT: from a local address of the pod's node"}
        m = re.match(r"run through default (ingress|egress) network policy chain", text)
        if m:
            return {**step, "what": "not-isolated", "direction": m[1],
                    "text": f"{m[1]}: no policy isolates the pod ({DEFAULT_CHAIN} marks the flow allowed)"}
        m = re.match(r"run through nw policy (\S+)", text)
        if m:
            direction = "ingress" if rule.startswith("-d ") else "egress" if rule.startswith("-s ") else "both"
            return {**step, "what": "policy", "policy": m[1], "direction": direction, "target": target,
                    "text": _through(direction, m[1], target)}
        if target == "NFLOG":
            return {**step, "what": "logged", "text": "NFLOG (group 100): no policy allowed it"}
        if target == "REJECT":
            if pod:
                step["pod"] = f"{pod[2]}/{pod[1]}"
            return {**step, "what": "rejected", "text": f"REJECT: {text} (no policy allowed it)"}
        if "0x20000/0x20000" in rule:
            return {**step, "what": "complies", "text": "MARK 0x20000: complies with the policies"}
        if "0x0/0x10000" in rule:
            return {**step, "what": "cleared", "text": "MARK 0x0/0x10000: the policy mark cleared"}
    elif chain == COMMON_CHAIN:
        if "RELATED,ESTABLISHED" in rule:
            return {**step, "what": "established", "text": "ACCEPT: RELATED,ESTABLISHED (the firewall is stateful)"}
        if "INVALID" in rule:
            return {**step, "what": "invalid", "text": "DROP: INVALID state"}
        return {**step, "what": "icmp", "text": f"ACCEPT: {text}"}
    elif chain == DEFAULT_CHAIN:
        return {**step, "what": "default", "text": "MARK 0x10000: allowed (no policy isolates it)"}
    elif target == "RETURN":
        return {**step, "what": "allowed", "text": f"allowed: {text}"}
    elif target == "MARK":
        return {**step, "what": "marked", "text": f"MARK 0x10000: {text}"}
    return step


def _through(direction, policy, chain):
    """A policy's jump in a pod chain: -d (it selects the pod for ingress), -s (egress), or
    neither (both)."""
    return f"{'ingress and egress' if direction == 'both' else direction}: through policy {policy} ({chain})"


def policy_path(rules):
    """kube-router's rules among a trace's hits (the filter table's KUBE-ROUTER-*, KUBE-POD-FW-*
    and KUBE-NWPLCY-* chains), in the order a packet meets them on each node: a top-level jump,
    then its pod's chain (KUBE-NWPLCY-COMMON's hits after its jump, each policy chain's after
    the jump that names it, KUBE-NWPLCY-DEFAULT's after the first jump to it), each chain once
    (COMMON and DEFAULT are shared by a node's pods: their counts are all pods'), and last the
    explicit ACCEPT k3s's kube-router keeps in the built-in chain. Every step
    carries its node, chain, rule and packets, `what` it is (pod, policy, not-isolated,
    allowed, rejected, established, ...), `text`, `depth` (0 top level, 1 a pod's chain, 2
    COMMON, DEFAULT and the policies' chains), and, where the rules say it, `pod` and `policy`
    (NAMESPACE/NAME: a policy is of its pod's namespace) and `direction`."""
    steps = [_policy_step(r) for r in rules
             if r.get("table") == "filter" and "verdict" not in r
             and (r["chain"].startswith(POLICY_CHAINS) or _comment(r["rule"]).startswith("KUBE-ROUTER "))]
    chains = {}
    for s in steps:
        chains.setdefault((s["node"], s["chain"]), []).append(s)
    pods = {(s["node"], s["target"]): s["pod"] for s in steps if s["what"] == "pod"}
    for s in steps:
        pod = pods.get((s["node"], s["chain"]))
        if pod is not None:
            s.setdefault("pod", pod)
            if s["what"] == "policy":
                s["policy"] = f"{pod.split('/')[0]}/{s['policy']}"
                s["text"] = _through(s["direction"], s["policy"], s["target"])
    named = {(s["node"], s["target"]): s for s in steps if s["what"] == "policy"}
    for s in steps:
        jump = named.get((s["node"], s["chain"]))
        if jump is not None and "policy" in jump:
            s["policy"] = jump["policy"]
    out, done = [], set()

    def emit(node, chain, depth):
        if (node, chain) in done:
            return
        done.add((node, chain))
        for s in chains.get((node, chain), ()):
            out.append({**s, "depth": depth})
            inner = {"pod": s.get("target"), "policy": s.get("target"), "common": COMMON_CHAIN,
                     "not-isolated": DEFAULT_CHAIN}.get(s["what"])
            if inner:
                emit(node, inner, depth + 1)

    for node, chain in list(chains):
        if chain.startswith("KUBE-ROUTER-"):
            emit(node, chain, 0)
    for node, chain in list(chains):             # what no jump of the flow led to
        emit(node, chain, 0)
    return out


def rejected(t):
    """The REJECT of kube-router's that stopped the flow, or None."""
    return next((s for s in t.get("policy", ()) if s["what"] == "rejected"), None)


# --- nftables mode: nft monitor trace ---------------------------------------------------------

TRACE_TABLE = "netlab-trace"           # + "-<pid>": two traces of one lab never share a table
TRACE_PRIORITY = -350                  # before raw (-300), conntrack (-200) and kube-proxy's first chain (-110)
KUBE_PROXY_TABLE = "ip kube-proxy"
IP6_KUBE_PROXY_TABLE = "ip6 kube-proxy"   # kube-proxy's IPv6 proxier's table
NETLINK_NETFILTER, NFNLGRP_NFTRACE = 12, 9   # the netlink family and group `nft monitor trace` listens on
MARKER_PORT = 9                        # the marker datagram goes to 127.0.0.1:9 (discard), from a port of ours
REPORT_TIMEOUT = 5.0
PR_SET_PDEATHSIG = 1


def flow_matches(state, ip, port, protocol):
    """The nft matches of the packets to trace: those to the flow's destination and port;
    for a cloud load balancer's IP (ipMode Proxy: it forwards to the NodePort of every node)
    also those to that NodePort on the nodes."""
    six = ":" in ip
    family, word = ("IPv6", "ip6") if six else ("IPv4", "ip")
    if protocol == "icmp":
        return [f"ip6 daddr {ip} meta l4proto ipv6-icmp" if six else f"ip daddr {ip} ip protocol icmp"]
    out = [f"{word} daddr {ip} {protocol} dport {port}"]
    for svc in balancers(state):
        for p in svc.ports:
            if svc.load_balancer_ip_of(family) == ip and p.port == port and p.protocol.lower() == protocol \
                    and p.node_port:
                nodes = ", ".join(n.ip6 if six else n.ip for n in state.nodes)
                out.append(f"{word} daddr {{ {nodes} }} {protocol} dport {p.node_port}")
    return out


def trace_table(name, matches, marker_port, family="ip"):
    """The `nft -f` lines of the trace's own table in a node: prerouting and output chains
    that come before every other and mark the flow's packets for tracing, and a `done`
    chain that marks the marker datagram (from 127.0.0.1:marker_port; ::1 in an ip6 table,
    which sees IPv6 only), sent when the flow is over: once a monitor has printed its trace,
    it has printed everything before it."""
    ref = f"{family} {name}"
    lines = [f"add table {ref}"]
    for chain, priority in (("prerouting", TRACE_PRIORITY), ("output", TRACE_PRIORITY), ("done", TRACE_PRIORITY - 1)):
        hook = "prerouting" if chain == "prerouting" else "output"
        lines.append(f"add chain {ref} {chain} {{ type filter hook {hook} priority {priority}; policy accept; }}")
    lines += [f"add rule {ref} {chain} {m} meta nftrace set 1" for chain in ("prerouting", "output") for m in matches]
    loopback = "ip6 saddr ::1 ip6 daddr ::1" if family == "ip6" else "ip saddr 127.0.0.1 ip daddr 127.0.0.1"
    lines.append(f"add rule {ref} done {loopback} udp sport {marker_port} "
                 f"udp dport {MARKER_PORT} meta nftrace set 1")
    return lines


class _Monitor:
    """`nft monitor trace` in one namespace, started and stopped by us. What it prints goes
    to an unnamed file (nft writes each event out as it comes), so no pipe can fill up."""

    def __init__(self, netns):
        self.netns = netns
        self.out = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(["nft", "monitor", "trace"], stdin=subprocess.DEVNULL, stdout=self.out,
                                         stderr=subprocess.STDOUT, preexec_fn=lambda: _monitor_child(netns))
        except BaseException:
            self.out.close()
            raise

    def text(self):
        fd = self.out.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def listening(self):
        """nft's netlink socket has joined the trace group: from now on, no traced packet
        goes unreported. /proc/PID/net/netlink lists the sockets of the process's namespace,
        with their first 32 groups as a bit mask."""
        if self.proc.poll() is not None:
            raise NetlabError(f"{self.netns}: nft monitor trace exited: {self.text().strip() or self.proc.returncode}")
        try:
            pid = self.proc.pid
            inodes = {m[1] for fd in os.listdir(f"/proc/{pid}/fd")
                      if (m := re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}")))}
            with open(f"/proc/{pid}/net/netlink") as f:
                rows = [line.split() for line in f.read().splitlines()[1:]]
        except OSError:                                  # it is still starting (or ending)
            return False
        return any(len(r) >= 10 and int(r[1]) == NETLINK_NETFILTER and r[9] in inodes
                   and int(r[3], 16) & (1 << (NFNLGRP_NFTRACE - 1)) for r in rows)

    def stop(self):
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            self.out.close()


def _monitor_child(netns):
    """In the monitor's child before it runs nft: into the node's namespace, and ask the
    kernel to end it should the trace itself be killed (no finally runs then)."""
    ns.enter_for_good(netns)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _sweep(netns, family="ip"):
    """Remove the tables of traces that were killed before they could (their pid is gone)."""
    out = ns.run(netns, ["nft", "list", "tables", family], capture_output=True, text=True)
    for m in re.finditer(rf"^table {family} ({TRACE_TABLE}-(\d+))$", out.stdout, re.M):
        if not os.path.exists(f"/proc/{m[2]}"):
            nft.delete_table(netns, family, m[1])


class _Tracing:
    def __init__(self, name, monitors, markers, family="ip"):
        self.name, self.monitors, self.markers, self.family = name, monitors, markers, family

    def reported(self, timeout=REPORT_TIMEOUT):
        """{node: what its monitor printed about the flow}: the marker goes out from every
        node, and each monitor's output is read up to the marker's first line."""
        loopback = "::1" if self.family == "ip6" else "127.0.0.1"
        for sock in self.markers.values():
            sock.sendto(b"netlab trace: done", (loopback, MARKER_PORT))
        marker = f" {self.family} {self.name} done "
        out, deadline = {}, time.monotonic() + timeout
        while len(out) < len(self.monitors):
            for node, monitor in self.monitors.items():
                text = monitor.text() if node not in out else ""
                if marker in text:
                    head = text[:text.index(marker)]
                    out[node] = head[:head.rfind("\n") + 1]
            if len(out) < len(self.monitors):
                if time.monotonic() > deadline:
                    missing = ", ".join(n for n in self.monitors if n not in out)
                    raise NetlabError(f"trace: nft monitor trace in {missing} did not report the trace's end "
                                      f"within {timeout:g} s")
                time.sleep(0.01)
        return out


@contextmanager
def nft_tracing(state, matches, timeout=REPORT_TIMEOUT, family="IPv4"):
    """The trace's table and a monitor in every node, for the body's flow; the tables, the
    monitors and the marker sockets are removed on the way out, whatever happens. For an
    IPv6 flow the table is of family ip6, beside kube-proxy's `ip6 kube-proxy`."""
    name = f"{TRACE_TABLE}-{os.getpid()}"
    nft_family, loopback = ("ip6", "::1") if family == "IPv6" else ("ip", "127.0.0.1")
    with ExitStack() as stack:
        markers, monitors = {}, {}
        for node in state.nodes:
            _sweep(node.netns, nft_family)
            with ns.entered(node.netns):                 # a socket stays in the namespace it was made in
                sock = socket.socket(socket.AF_INET6 if family == "IPv6" else socket.AF_INET, socket.SOCK_DGRAM)
            stack.callback(sock.close)
            sock.bind((loopback, 0))
            markers[node.name] = sock
            stack.callback(nft.delete_table, node.netns, nft_family, name)
            nft.run(node.netns, trace_table(name, matches, sock.getsockname()[1], nft_family))
        for node in state.nodes:
            monitors[node.name] = _Monitor(node.netns)
            stack.callback(monitors[node.name].stop)
        deadline = time.monotonic() + timeout
        while not all(m.listening() for m in monitors.values()):
            if time.monotonic() > deadline:
                raise NetlabError(f"trace: nft monitor trace did not start listening within {timeout:g} s")
            time.sleep(0.005)
        yield _Tracing(name, monitors, markers, nft_family)


_TRACE_LINE = re.compile(r"^trace id (?P<id>\S+) (?P<family>\S+) (?P<table>\S+) (?P<chain>\S+) "
                         r"(?P<what>packet:|rule|policy|verdict) ?(?P<text>.*)$")


def parse_monitor(text):
    """`nft monitor trace` output as the rules packets matched, in the order the kernel
    reported them: [{"table": "ip kube-proxy", "chain", "rule", "verdict", "packet"}], where
    packet holds the headers the kernel last reported for that trace id (it reports them
    as a packet enters each base chain, before its rules)."""
    events, packets = [], {}
    for line in text.splitlines():
        m = _TRACE_LINE.match(line.rstrip())
        if not m:
            continue
        if m["what"] == "packet:":
            packets[m["id"]] = headers(m["text"])
        elif m["what"] == "rule":
            rule, sep, verdict = m["text"].rpartition(" (verdict ")
            if sep and verdict.endswith(")"):
                events.append({"table": f"{m['family']} {m['table']}", "chain": m["chain"], "rule": rule,
                               "verdict": verdict[:-1], "packet": packets.get(m["id"], {})})
    return events


def headers(text):
    """The addresses and ports of a trace's `packet:` text."""
    out = {}
    for key, pattern in (("src", r"\bip6? saddr (\S+)"), ("dst", r"\bip6? daddr (\S+)"),
                         ("proto", r"\b(tcp|udp|icmp|icmpv6) (?:sport|type)\b"), ("sport", r"\b(?:tcp|udp) sport (\d+)"),
                         ("dport", r"\b(?:tcp|udp) dport (\d+)")):
        m = re.search(pattern, text)
        if m:
            out[key] = int(m[1]) if key.endswith("port") else m[1]
    return out


def nft_hops(node, events, sport, table=KUBE_PROXY_TABLE):
    """The rules of kube-proxy's table the flow's packets matched on a node, in the order
    first met, each once with its number of packets. With the flow's source port known,
    packets from other ports (someone else's connection to the same Service) are left out."""
    out = {}
    for e in events:
        if e["table"] != table or (sport is not None and e["packet"].get("sport") not in (None, sport)):
            continue
        key = (e["chain"], e["rule"], e["verdict"])
        out.setdefault(key, {"node": node, "table": table, "chain": e["chain"], "rule": e["rule"],
                             "verdict": e["verdict"], "packets": 0})["packets"] += 1
    return list(out.values())


def _conntrack(state, src_ip, dst_ip, port, sport, udp):
    """The entries of the flow on every node: where it was DNATed and to what."""
    from pyroute2 import Conntrack
    icmp = socket.IPPROTO_ICMPV6 if ":" in dst_ip else socket.IPPROTO_ICMP
    proto = icmp if port is None else (socket.IPPROTO_UDP if udp else socket.IPPROTO_TCP)
    out = []
    for node in state.nodes:
        with ns.entered(node.netns), Conntrack() as ct:
            for e in ct.dump_entries():
                o, r = e.tuple_orig, e.tuple_reply
                if o.proto != proto or o.daddr != dst_ip or (sport and o.sport != sport):
                    continue
                if port is not None and o.dport != port:
                    continue
                out.append({"node": node.name, "from": _join(o.saddr, o.sport), "to": _join(r.saddr, r.sport),
                            "orig_dst": _join(o.daddr, o.dport), "reply_dst": r.daddr,
                            "dnat": r.saddr != o.daddr, "snat": r.daddr != o.saddr})
    return out


def _join(host, port):
    """net.JoinHostPort: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _render_policy(t):
    steps = t.get("policy") or []
    if not steps:
        return []
    stop = rejected(t)
    if not t.get("network_policies") and stop is None:
        return [f"network policy: the lab has none; kube-router's chains let the flow through "
                f"({len(steps)} of their rules hit)", ""]
    lines = ["network policy (kube-router's chains in the filter table, as a packet meets them):"]
    for s in steps:
        if s["what"] not in ("marked", "cleared"):       # the MARK before a RETURN, and the mark's reset
            lines.append(f"  {s['node']:<24} +{s['packets']:<3} {'  ' * s['depth']}{s['chain']}: {s['text']}")
    if stop is not None:
        whose = f" ({stop['pod']})" if stop.get("pod") else ""
        lines.append(f"stopped by network policy: the REJECT in {stop['chain']}{whose} on {stop['node']}")
    return lines + [""]


def render(t):
    """The trace as a person reads it."""
    dst = _join(t["dst_ip"], t["port"]) if t["port"] else t["dst_ip"]
    lines = [f"trace {t['source']} ({t['src_ip']}) -> {t['destination']} ({dst}) {t['protocol']}",
             f"answer: {t['answer'].get('body') or t['answer'].get('error') or ('ok' if t['answer'].get('ok') else 'none')}", ""]
    lines.append("rules hit (packet counters before and after" + (", ip6tables-save -c" if t.get("family") == "IPv6"
                                                                   else "") + "):")
    for r in t["rules"]:
        if "verdict" not in r:
            lines.append(f"  {r['node']:<24} {r['table']:<7} +{r['packets']:<3} -A {r['chain']} {r['rule']}")
    lines.append("")
    if t.get("kube_proxy_mode") == "nftables":
        traced = [r for r in t["rules"] if "verdict" in r]
        table = IP6_KUBE_PROXY_TABLE if t.get("family") == "IPv6" else KUBE_PROXY_TABLE
        lines.append(f"{table} rules matched, in order (nft monitor trace):")
        for r in traced:
            lines.append(f"  {r['node']:<24} +{r['packets']:<3} {r['chain']}: {r['rule']}  (verdict {r['verdict']})")
        if not traced:
            lines.append("  none")
        lines.append("")
    lines += _render_policy(t)
    lines.append("connection tracking:")
    for c in t["conntrack"]:
        nat = ("DNAT " if c["dnat"] else "") + ("SNAT " if c["snat"] else "")
        lines.append(f"  {c['node']:<24} {c['from']} -> {c['orig_dst']}   reply from {c['to']} to {c['reply_dst']}   {nat}")
    lines.append("")
    lines.append("hops (captures, in time order):")
    for h in t["hops"]:
        text = f"{_hop_end(h.get('src'), h.get('sport'))} -> {_hop_end(h.get('dst'), h.get('dport'))}"
        if h.get("wireguard"):
            kind = WIREGUARD_MESSAGES.get(h.get("udp_type"), "message")
            text = f"WireGuard {h.get('src')} -> {h.get('dst')} udp/{h.get('dport')} {kind}  [encrypted]"
        if h.get("inner"):
            i = h["inner"]
            text = (f"VXLAN vni {h['vxlan']['vni']} {h.get('src')} -> {h.get('dst')} udp/{h.get('dport')}"
                    f"  [{_hop_end(i['src'], i.get('sport'))} -> {_hop_end(i['dst'], i.get('dport'))}]")
        lines.append(f"  {h['where']:<28} {text}  {h.get('flags', '')}")
    return "\n".join(lines)
