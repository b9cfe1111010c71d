"""A probe worker: one process living in one network namespace, driven over stdin/stdout.

It enters its namespace before importing scapy, so scapy's per-process state (interfaces,
routes) is that namespace's and never leaks into another. Importing scapy costs about a
second, so the Prober keeps a worker alive per namespace for as long as it is used.
Requests and answers are JSON lines.
"""

import errno
import json
import socket
import sys
import time

from netlab.kernel import netns as ns

IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14


def op_http(dst, port, path="/hostname", timeout=2.0, host=None, ca=None, server_name=None):
    """One HTTP/1.1 GET; with `ca`, over TLS verified against that CA for `server_name`."""
    s = socket.create_connection((dst, port), timeout=timeout)
    if ca:
        import ssl
        s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname=server_name)
    try:
        local = "%s:%d" % s.getsockname()
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host or dst}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return {"ok": status_of(head) == 200, "status": status_of(head), "body": body.decode(errors="replace"),
            "local": local}


def status_of(head):
    """The status code of an HTTP response head; 0 for anything that is not one."""
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        return 0
    return int(parts[1])


def op_udp(dst, port, message="hostname", timeout=2.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.connect((dst, port))
        local = "%s:%d" % s.getsockname()
        s.send(message.encode())
        return {"ok": True, "body": s.recv(65536).decode(errors="replace"), "local": local}
    finally:
        s.close()


def _source_for(dst):
    """The source address the kernel picks for dst. scapy reads the routes itself and gets
    flannel's `via 10.244.N.0 dev flannel.1 onlink` wrong (source 0.0.0.0: the kernel then
    fills in flannel.1's /32, and the answer to it matches nothing scapy sent); a connected
    UDP socket asks the kernel, sending nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((dst, 9))
        return s.getsockname()[0]


def op_knock(dst, port, proto="tcp", timeout=2.0):
    """One packet made by scapy (a TCP SYN, or a UDP datagram) and the first answer to it:
    a SYN-ACK, a RST, a UDP reply, an ICMP error, or nothing."""
    from scapy.all import ICMP, IP, TCP, UDP, RandShort, sr1
    l4 = TCP(sport=RandShort(), dport=port, flags="S") if proto == "tcp" else UDP(sport=RandShort(), dport=port) / b"hostname"
    start = time.monotonic()
    reply = sr1(IP(src=_source_for(dst), dst=dst) / l4, timeout=timeout, verbose=0)
    out = {"elapsed": round(time.monotonic() - start, 3)}
    if reply is None:
        return {**out, "ok": False, "reply": "none"}
    out["from"] = reply[IP].src
    if reply.haslayer(ICMP):
        return {**out, "ok": True, "reply": "icmp", "type": reply[ICMP].type, "code": reply[ICMP].code}
    if reply.haslayer(TCP):
        return {**out, "ok": True, "reply": "tcp", "flags": str(reply[TCP].flags)}
    return {**out, "ok": True, "reply": "udp", "body": bytes(reply[UDP].payload).decode(errors="replace")}


def op_dns(server, name, qtype="A", tcp=False, timeout=2.0, retry_tcp=True):
    """One question, as a stub resolver asks it: over UDP, and again over TCP when the UDP
    answer comes back truncated (TC=1: it did not fit in 512 bytes; RFC 1035 4.2.1, RFC 7766
    section 5), unless retry_tcp is False. `tc` says the UDP answer was truncated,
    `transport` which one the answers came over."""
    from dnslib import QTYPE, RCODE, DNSRecord
    question = DNSRecord.question(name, qtype).pack()
    reply = DNSRecord.parse(_exchange(server, question, tcp, timeout))
    truncated = not tcp and bool(reply.header.tc)
    if truncated and retry_tcp:
        reply = DNSRecord.parse(_exchange(server, question, True, timeout))
        tcp = True
    return {"ok": True, "rcode": RCODE.get(reply.header.rcode), "tc": truncated, "transport": "tcp" if tcp else "udp",
            "answers": [str(r.rdata) for r in reply.rr if r.rtype == getattr(QTYPE, qtype)]}


def _exchange(server, message, tcp, timeout, port=53):
    """One DNS message and its answer: a datagram, or over TCP both with their two-byte
    length (RFC 1035 4.2.2). A peer that closes early is an error, not a wait."""
    if not tcp:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((server, port))
            s.send(message)
            return s.recv(65535)
    with socket.create_connection((server, port), timeout=timeout) as s:
        s.sendall(len(message).to_bytes(2, "big") + message)
        data = b""
        while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
            chunk = s.recv(65535)
            if not chunk:
                raise ConnectionError(f"{server} closed the connection after {len(data)} bytes")
            data += chunk
        return data[2:2 + int.from_bytes(data[:2], "big")]


def op_ping(dst, size=84, df=False, timeout=2.0):
    """One ICMP echo of `size` bytes (the whole IP packet), optionally with DF set."""
    from scapy.all import ICMP, IP, Raw, sr1
    pkt = IP(src=_source_for(dst), dst=dst, flags="DF" if df else 0) / ICMP(id=0x4E4C, seq=1)
    pkt = pkt / Raw(b"\x00" * max(0, size - 28))
    try:
        reply = sr1(pkt, timeout=timeout, verbose=0)
    except OSError as e:
        if e.errno == errno.EMSGSIZE:
            return {"ok": False, "refused": "EMSGSIZE", "mtu": _path_mtu(dst)}
        raise
    if reply is None:
        return {"ok": False, "timeout": True}
    icmp = reply.getlayer(ICMP)
    return {"ok": icmp is not None and icmp.type == 0, "src": reply.src,
            "type": icmp.type if icmp else None, "code": icmp.code if icmp else None,
            "mtu": icmp.nexthopmtu if icmp is not None and icmp.type == 3 and icmp.code == 4 else None}


def _path_mtu(dst):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((dst, 9))
        return s.getsockopt(socket.IPPROTO_IP, IP_MTU)
    finally:
        s.close()


def op_mtu(dst, size, port=9):
    """Send one UDP datagram making an IP packet of `size` bytes with DF, as a socket would."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        s.connect((dst, port))
        try:
            s.send(b"\x00" * (size - 28))
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                return {"ok": False, "refused": "EMSGSIZE", "mtu": s.getsockopt(socket.IPPROTO_IP, IP_MTU)}
            raise
        return {"ok": True, "mtu": s.getsockopt(socket.IPPROTO_IP, IP_MTU)}
    finally:
        s.close()


_captures = {}


_capture_ids = __import__("itertools").count(1)


def op_capture_start(iface=None, bpf=None):
    from scapy.all import AsyncSniffer
    sniffer = AsyncSniffer(iface=iface, filter=bpf, store=True)
    sniffer.start()
    # AsyncSniffer opens its socket in its thread; wait until it listens.
    deadline = time.monotonic() + 3
    while not getattr(sniffer, "running", False) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    key = str(next(_capture_ids))
    _captures[key] = sniffer
    return {"ok": True, "id": key}


def op_capture_stop(id):
    sniffer = _captures.pop(id)
    time.sleep(0.2)
    packets = sniffer.stop() or []
    return {"ok": True, "packets": [describe(p) for p in packets]}


def describe(pkt):
    """The fields a person reads off a capture: outer and, for VXLAN, inner headers."""
    from scapy.all import ICMP, IP, TCP, UDP, VXLAN
    out = {"summary": pkt.summary(), "length": len(pkt), "time": float(pkt.time)}
    ip = pkt.getlayer(IP)
    if ip is None:
        return out
    out.update(src=ip.src, dst=ip.dst, proto=ip.proto, ip_len=ip.len)
    if pkt.haslayer(UDP):
        out.update(sport=pkt[UDP].sport, dport=pkt[UDP].dport)
    elif pkt.haslayer(TCP):
        out.update(sport=pkt[TCP].sport, dport=pkt[TCP].dport, flags=str(pkt[TCP].flags))
    if pkt.haslayer(ICMP):
        out.update(icmp_type=pkt[ICMP].type)
    if pkt.haslayer(VXLAN):
        inner = pkt[VXLAN].getlayer(IP)
        out["vxlan"] = {"vni": pkt[VXLAN].vni}
        if inner is not None:
            l4 = inner[TCP] if inner.haslayer(TCP) else (inner[UDP] if inner.haslayer(UDP) else None)
            out["inner"] = {"src": inner.src, "dst": inner.dst, "proto": inner.proto,
                            "icmp_type": inner[ICMP].type if inner.haslayer(ICMP) else None,
                            "sport": l4.sport if l4 is not None else None,
                            "dport": l4.dport if l4 is not None else None}
    return out


OPS = {"http": op_http, "udp": op_udp, "knock": op_knock, "dns": op_dns, "ping": op_ping, "mtu": op_mtu,
       "capture_start": op_capture_start, "capture_stop": op_capture_stop}


def main():
    ns.enter_for_good(sys.argv[1])
    from scapy.all import UDP, VXLAN, bind_layers, conf
    from scapy.supersocket import L3RawSocket
    conf.L3socket = L3RawSocket              # the kernel routes, ARPs and enforces the MTU
    bind_layers(UDP, VXLAN, dport=8472)      # flannel uses the kernel's default port
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            req = json.loads(line)
            answer = OPS[req.pop("op")](**req)
        except (OSError, TimeoutError) as e:
            answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        except Exception as e:                  # whatever a peer sent back, the worker answers the next call
            answer = {"ok": False, "error": f"probe worker: {type(e).__name__}: {e}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
