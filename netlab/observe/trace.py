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
"""

import re
from contextlib import ExitStack

from netlab import names
from netlab.errors import NetlabError
from netlab.kernel import iptables
from netlab.kernel import netns as ns


def counters(netns, backend):
    """{(table, chain, rule): packets} from `iptables-save -c`, read with the lab's backend."""
    out, table = {}, None
    text = iptables.save(netns, backend, "-c")
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        m = re.match(r"\[(\d+):\d+\] -A (\S+) (.*)$", line)
        if m:
            out[(table, m.group(2), m.group(3))] = int(m.group(1))
    return out


def resolve(state, dst):
    """DST as an address: an IP, a pod (NAME or NS/NAME), a node, or a Service (NAME or NS/NAME)."""
    host, _, port = dst.partition(":")
    namespace, _, name = host.rpartition("/")
    namespace = namespace or "default"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host):
        ip = host
    elif state.find_node(host) is not None:
        ip = state.find_node(host).ip
    elif any(s.namespace == namespace and s.name == name for s in state.services):
        ip = state.service(namespace, name).cluster_ip
    elif any(p.namespace == namespace and p.name == name for p in state.pods):
        ip = _pod_ip(state.pod(namespace, name))
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


def _source_ip(state, src):
    if src == "external":
        from netlab.controllers import ipam
        return ipam.lan_external_ip(state.cluster.lan_cidr)
    if state.find_node(src) is not None:
        return state.find_node(src).ip
    namespace, _, name = src.rpartition("/")
    return _pod_ip(state.pod(namespace or "default", name))


def _pod_ip(pod):
    if pod.node is None:
        raise NetlabError(f"trace: pod {pod.key} is Pending (no address): {pod.unschedulable}")
    return pod.ip


def trace(lab, src, dst, udp=False):
    state = lab.state()
    ip, port = resolve(state, dst)
    src_ip = _source_ip(state, src)
    before = {n.name: counters(n.netns, state.cluster.iptables_applier) for n in state.nodes}
    where = [("lan", names.LAN_BRIDGE)] + [(n.name, dev) for n in state.nodes
                                            for dev in (names.CNI_BRIDGE, names.flannel_device(1))]
    where.append((src, names.UPLINK))
    with lab.prober() as prober:
        prober.start(src, "lan", *[n.name for n in state.nodes])
        with ExitStack() as stack:
            caps = [(w, stack.enter_context(prober.capture(w[0], w[1], None))) for w in where]
            if port is None:
                answer = prober.ping(src, ip)
            elif udp:
                answer = prober.udp(src, ip, port, "hostname")
            else:
                answer = prober.http(src, ip, port, "/hostname")
    after = {n.name: counters(n.netns, state.cluster.iptables_applier) for n in state.nodes}
    local = answer.get("local", "")
    sport = int(local.rsplit(":", 1)[1]) if ":" in local else None
    rules = [{"node": node, "table": t, "chain": c, "rule": r, "packets": after[node][(t, c, r)] - before[node].get((t, c, r), 0)}
             for node in after for (t, c, r) in after[node]
             if after[node][(t, c, r)] > before[node].get((t, c, r), 0)]
    nat = _conntrack(state, src_ip, ip, port, sport, udp)
    flow = {src_ip, ip} | {e["to"].rsplit(":", 1)[0] for e in nat} | {e["reply_dst"] for e in nat}
    hops = []
    for (target, dev), cap in caps:
        for p in cap.packets:
            inner = p.get("inner")
            if (inner and {inner.get("src"), inner.get("dst")} & flow) or (not inner and {p.get("src"), p.get("dst")} & flow):
                hops.append({"where": f"{target}:{dev}", **p})
    hops.sort(key=lambda h: h.get("time", 0))
    return {"source": src, "src_ip": src_ip, "destination": dst, "dst_ip": ip, "port": port,
            "protocol": "icmp" if port is None else ("udp" if udp else "tcp"), "answer": answer,
            "rules": rules, "conntrack": nat, "hops": hops}


def _conntrack(state, src_ip, dst_ip, port, sport, udp):
    """The entries of the flow on every node: where it was DNATed and to what."""
    import socket

    from pyroute2 import Conntrack
    proto = socket.IPPROTO_ICMP if port is None else (socket.IPPROTO_UDP if udp else socket.IPPROTO_TCP)
    out = []
    for node in state.nodes:
        with ns.entered(node.netns), Conntrack() as ct:
            for e in ct.dump_entries():
                o, r = e.tuple_orig, e.tuple_reply
                if o.proto != proto or o.daddr != dst_ip or (sport and o.sport != sport):
                    continue
                if port is not None and o.dport != port:
                    continue
                out.append({"node": node.name, "from": f"{o.saddr}:{o.sport}", "to": f"{r.saddr}:{r.sport}",
                            "orig_dst": f"{o.daddr}:{o.dport}", "reply_dst": r.daddr,
                            "dnat": r.saddr != o.daddr, "snat": r.daddr != o.saddr})
    return out


def render(t):
    """The trace as a person reads it."""
    lines = [f"trace {t['source']} ({t['src_ip']}) -> {t['destination']} ({t['dst_ip']}"
             + (f":{t['port']}" if t["port"] else "") + f") {t['protocol']}",
             f"answer: {t['answer'].get('body') or t['answer'].get('error') or ('ok' if t['answer'].get('ok') else 'none')}", ""]
    lines.append("rules hit (packet counters before and after):")
    for r in t["rules"]:
        lines.append(f"  {r['node']:<24} {r['table']:<7} +{r['packets']:<3} -A {r['chain']} {r['rule']}")
    lines.append("")
    lines.append("connection tracking:")
    for c in t["conntrack"]:
        nat = ("DNAT " if c["dnat"] else "") + ("SNAT " if c["snat"] else "")
        lines.append(f"  {c['node']:<24} {c['from']} -> {c['orig_dst']}   reply from {c['to']} to {c['reply_dst']}   {nat}")
    lines.append("")
    lines.append("hops (captures, in time order):")
    for h in t["hops"]:
        text = f"{h.get('src')}:{h.get('sport', '')} -> {h.get('dst')}:{h.get('dport', '')}"
        if h.get("inner"):
            i = h["inner"]
            text = (f"VXLAN vni {h['vxlan']['vni']} {h.get('src')} -> {h.get('dst')} udp/{h.get('dport')}"
                    f"  [{i['src']}:{i.get('sport') or ''} -> {i['dst']}:{i.get('dport') or ''}]")
        lines.append(f"  {h['where']:<28} {text}  {h.get('flags', '')}")
    return "\n".join(lines)
