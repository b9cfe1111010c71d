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

IP_MTU_DISCOVER, IP_PMTUDISC_DONT, IP_PMTUDISC_DO, IP_MTU = 10, 0, 2, 14
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU = 23, 2, 24     # linux/in6.h


def family_of(address):
    """The socket family of an address literal: AF_INET6 for an IPv6 one (it has colons)."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def host_port(sockname):
    """A socket's address as net.JoinHostPort writes it: 10.244.1.5:80, [fd00:10:244:1::5]:80."""
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def op_http(dst, port, path="/hostname", timeout=2.0, host=None, ca=None, server_name=None):
    """One HTTP/1.1 GET; with `ca`, over TLS verified against that CA for `server_name`."""
    s = socket.create_connection((dst, port), timeout=timeout)
    if ca:
        import ssl
        s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname=server_name)
    try:
        local = host_port(s.getsockname())
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host or (f'[{dst}]' if ':' in dst else dst)}\r\nConnection: close\r\n\r\n".encode())
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
    s = socket.socket(family_of(dst), socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.connect((dst, port))
        local = host_port(s.getsockname())
        s.send(message.encode())
        return {"ok": True, "body": s.recv(65536).decode(errors="replace"), "local": local}
    finally:
        s.close()


def _source_for(dst):
    """The source address the kernel picks for dst. scapy reads the routes itself and gets
    flannel's `via 10.244.N.0 dev flannel.1 onlink` wrong (source 0.0.0.0: the kernel then
    fills in flannel.1's /32, and the answer to it matches nothing scapy sent); a connected
    UDP socket asks the kernel, sending nothing (for IPv6 too: the pod's address, not a
    link-local one)."""
    with socket.socket(family_of(dst), socket.SOCK_DGRAM) as s:
        s.connect((dst, 9))
        return s.getsockname()[0]


def _ip(dst, **fields):
    """scapy's IP or IPv6 header for dst, from the source the kernel would pick."""
    from scapy.all import IP, IPv6
    if family_of(dst) == socket.AF_INET6:
        return IPv6(src=_source_for(dst), dst=dst)
    return IP(src=_source_for(dst), dst=dst, **fields)


def _sr1(pkt, timeout):
    """scapy's sr1 on the raw socket of the packet's family: sr1 itself sends what it is given
    on conf.L3socket, an IPv4 one, whatever the packet."""
    from scapy.all import IPv6, conf, sr1
    if not isinstance(pkt, IPv6):
        return sr1(pkt, timeout=timeout, verbose=0)
    s = conf.L3socket6()
    try:
        return s.sr1(pkt, timeout=timeout, verbose=0)
    finally:
        s.close()


def _icmp6_error(reply):
    """An ICMPv6 error in a reply (destination unreachable, packet too big, time exceeded,
    parameter problem: types 1-4), or None."""
    from scapy.layers.inet6 import _ICMPv6Error
    layer = reply.payload
    return layer if isinstance(layer, _ICMPv6Error) else None


def op_knock(dst, port, proto="tcp", timeout=2.0):
    """One packet made by scapy (a TCP SYN, or a UDP datagram) and the first answer to it:
    a SYN-ACK, a RST, a UDP reply, an ICMP (or ICMPv6: "icmp6") error, or nothing."""
    from scapy.all import ICMP, TCP, UDP, RandShort
    l4 = TCP(sport=RandShort(), dport=port, flags="S") if proto == "tcp" else UDP(sport=RandShort(), dport=port) / b"hostname"
    start = time.monotonic()
    reply = _sr1(_ip(dst) / l4, timeout)
    out = {"elapsed": round(time.monotonic() - start, 3)}
    if reply is None:
        return {**out, "ok": False, "reply": "none"}
    out["from"] = reply.src
    error6 = _icmp6_error(reply) if family_of(dst) == socket.AF_INET6 else None
    if error6 is not None:
        return {**out, "ok": True, "reply": "icmp6", "type": error6.type, "code": error6.code}
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
        with socket.socket(family_of(server), socket.SOCK_DGRAM) as s:
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


PING_ID, PING_SEQ = 0x4E4C, 1


def op_ping(dst, size=84, df=False, timeout=2.0, pattern=""):
    """One ICMP echo of `size` bytes (the whole IP packet), optionally with DF set; to an
    IPv6 address an ICMPv6 echo (no router fragments IPv6: DF is how it always goes). It goes
    out of a raw ICMP socket of the kernel's and its answer is read from one, as ping does:
    the node's netfilter sees both, so an echo flanneld's rules masquerade (a node's to a pod
    behind host-gw: its id remapped by --random-fully) comes back as it was sent."""
    six = family_of(dst) == socket.AF_INET6
    s = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_RAW,
                      socket.IPPROTO_ICMPV6 if six else socket.IPPROTO_ICMP)
    try:
        if six:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        else:
            s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO if df else IP_PMTUDISC_DONT)
        length = max(0, size - (48 if six else 28))
        data = (pattern.encode() * length)[:length] if pattern else b"\x00" * length   # ping -p
        echo = _icmp(128 if six else 8, data, checksum=not six)      # the kernel sums ICMPv6
        try:
            s.sendto(echo, (dst, 0))
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                return {"ok": False, "refused": "EMSGSIZE", "mtu": _path_mtu(dst)}
            raise
        return _echo_answer(s, six, timeout)
    finally:
        s.close()


def _icmp(kind, data, checksum=True):
    header = bytes([kind, 0, 0, 0]) + PING_ID.to_bytes(2, "big") + PING_SEQ.to_bytes(2, "big")
    if not checksum:
        return header + data
    total = sum(int.from_bytes((header + data + b"\x00")[i:i + 2], "big") for i in range(0, len(header + data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return header[:2] + (~total & 0xFFFF).to_bytes(2, "big") + header[4:] + data


def _echo_answer(s, six, timeout):
    """The reply to our echo, or the ICMP error about it (frag needed / packet too big with
    the MTU, unreachable, time exceeded): what a raw socket reads until `timeout`. An IPv4
    raw socket's reads start at the IP header, an IPv6 one's at the ICMPv6 header."""
    reply_type, mine = (129, _ours6) if six else (0, _ours4)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            packet, (src, *_) = s.recvfrom(65535)
        except TimeoutError:
            break
        icmp = packet if six else packet[(packet[0] & 0x0F) * 4:]
        kind, code = icmp[0], icmp[1]
        if kind == reply_type and icmp[4:8] == PING_ID.to_bytes(2, "big") + PING_SEQ.to_bytes(2, "big"):
            return {"ok": True, "src": src, "type": kind, "code": code, "mtu": None}
        if kind != reply_type and mine(icmp):
            too_big = (kind, code) == (2, 0) if six else (kind, code) == (3, 4)
            mtu = int.from_bytes(icmp[4:8] if six else icmp[6:8], "big") if too_big else None
            return {"ok": False, "src": src, "type": kind, "code": code, "mtu": mtu}
    return {"ok": False, "timeout": True}


def _ours4(icmp):
    """An ICMP error quoting our echo: the quoted IP header, then our echo's id and sequence."""
    quoted = icmp[8:]
    if len(quoted) < 28 or quoted[9] != socket.IPPROTO_ICMP:
        return False
    inner = quoted[(quoted[0] & 0x0F) * 4:]
    return inner[:1] == b"\x08" and inner[4:8] == PING_ID.to_bytes(2, "big") + PING_SEQ.to_bytes(2, "big")


def _ours6(icmp):
    """An ICMPv6 error (types 1-4) quoting our echo request: the 40-byte IPv6 header, then it."""
    inner = icmp[8 + 40:]
    return icmp[0] < 128 and inner[:1] == b"\x80" and inner[4:8] == PING_ID.to_bytes(2, "big") + \
        PING_SEQ.to_bytes(2, "big")


def _path_mtu(dst):
    six = family_of(dst) == socket.AF_INET6
    s = socket.socket(family_of(dst), socket.SOCK_DGRAM)
    try:
        s.connect((dst, 9))
        return s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU) if six else s.getsockopt(socket.IPPROTO_IP, IP_MTU)
    finally:
        s.close()


def op_mtu(dst, size, port=9, timeout=1.0):
    """Send one UDP datagram making an IP packet of `size` bytes with DF, as a socket would.
    IPv4: the kernel refuses it at once where the route's MTU is smaller (EMSGSIZE). IPv6: a
    router on the way that cannot forward it answers Packet Too Big; the kernel lowers the
    path MTU and fails the connected socket with EMSGSIZE, so the worker waits for that."""
    if family_of(dst) == socket.AF_INET6:
        return _mtu6(dst, size, port, timeout)
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


def _mtu6(dst, size, port, timeout):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    mtu = lambda: s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)  # noqa: E731
    try:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        s.connect((dst, port))
        payload = b"\x00" * (size - 48)            # IPv6 header 40 + UDP 8
        deadline = time.monotonic() + timeout
        while True:
            try:
                s.send(payload)
                s.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
                s.recv(65536)
            except OSError as e:
                if e.errno == errno.EMSGSIZE:
                    return {"ok": False, "refused": "EMSGSIZE", "mtu": mtu()}
                if e.errno == errno.ECONNREFUSED:        # it arrived: nothing listens there
                    return {"ok": True, "mtu": mtu()}
                if not isinstance(e, TimeoutError):
                    raise
            if time.monotonic() >= deadline:
                return {"ok": True, "mtu": mtu()}
    finally:
        s.close()


_captures = {}


_capture_ids = __import__("itertools").count(1)


def op_capture_start(iface=None, bpf=None, promisc=True, vxlan_port=None, needle=None):
    """`vxlan_port`: decode UDP to that port as VXLAN too (a Backend's own Port). `needle`:
    tell of each packet whether that text is anywhere in its bytes."""
    from scapy.all import UDP, VXLAN, AsyncSniffer, bind_layers
    if vxlan_port:
        bind_layers(UDP, VXLAN, dport=vxlan_port)
    sniffer = AsyncSniffer(iface=iface, filter=bpf, store=True, promisc=promisc)
    sniffer.start()
    # AsyncSniffer opens its socket in its thread; wait until it listens.
    deadline = time.monotonic() + 3
    while not getattr(sniffer, "running", False) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    key = str(next(_capture_ids))
    _captures[key] = sniffer, needle.encode() if needle else None
    return {"ok": True, "id": key}


def op_capture_stop(id):
    sniffer, needle = _captures.pop(id)
    time.sleep(0.2)
    packets = sniffer.stop() or []
    return {"ok": True, "packets": [describe(p, needle) for p in packets]}


def _network_layer(pkt):
    """The first IP or IPv6 header of pkt, or None."""
    from scapy.all import IP, IPv6
    return next((layer for layer in pkt.iterpayloads() if isinstance(layer, (IP, IPv6))), None)


def _icmp_type(ip):
    """The ICMP type (ICMPv6's for an IPv6 packet: 128 echo request, 129 reply) or None."""
    from scapy.all import ICMP, IP
    if isinstance(ip, IP):
        return ip[ICMP].type if ip.haslayer(ICMP) else None
    if ip.nh == 58 and hasattr(ip.payload, "type"):
        return ip.payload.type
    return None


def describe(pkt, needle=None):
    """The fields a person reads off a capture: outer and, for VXLAN, inner headers (IPv4
    or IPv6, either of them: flannel-v6.1's packets are IPv6 in IPv6). An IPv6 header's
    `proto` is its next header, `ip_len` the whole packet's length (payload + 40). A UDP
    packet's first payload byte (`udp_type`: WireGuard's message type, 1-4); with `needle`,
    whether its bytes hold it."""
    from scapy.all import IP, TCP, UDP, VXLAN
    out = {"summary": pkt.summary(), "length": len(pkt), "time": float(pkt.time)}
    if needle:
        out["has_needle"] = needle in bytes(pkt)
    ip = _network_layer(pkt)
    if ip is None:
        return out
    v4 = isinstance(ip, IP)
    out.update(src=ip.src, dst=ip.dst, proto=ip.proto if v4 else ip.nh, ip_len=ip.len if v4 else ip.plen + 40)
    if not v4:
        out["family"] = "IPv6"
    if pkt.haslayer(UDP):
        out.update(sport=pkt[UDP].sport, dport=pkt[UDP].dport)
        payload = bytes(pkt[UDP].payload)
        if payload:
            out["udp_type"] = payload[0]
    elif pkt.haslayer(TCP):
        out.update(sport=pkt[TCP].sport, dport=pkt[TCP].dport, flags=str(pkt[TCP].flags))
    if _icmp_type(ip) is not None:
        out.update(icmp_type=_icmp_type(ip))
    if pkt.haslayer(VXLAN):
        inner = _network_layer(pkt[VXLAN].payload)
        out["vxlan"] = {"vni": pkt[VXLAN].vni}
        if inner is not None:
            l4 = inner[TCP] if inner.haslayer(TCP) else (inner[UDP] if inner.haslayer(UDP) else None)
            out["inner"] = {"src": inner.src, "dst": inner.dst, "proto": inner.proto if isinstance(inner, IP) else inner.nh,
                            "icmp_type": _icmp_type(inner),
                            "sport": l4.sport if l4 is not None else None,
                            "dport": l4.dport if l4 is not None else None}
    return out


OPS = {"http": op_http, "udp": op_udp, "knock": op_knock, "dns": op_dns, "ping": op_ping, "mtu": op_mtu,
       "capture_start": op_capture_start, "capture_stop": op_capture_stop}


def main():
    ns.enter_for_good(sys.argv[1])
    from scapy.all import UDP, VXLAN, bind_layers, conf
    from scapy.supersocket import L3RawSocket, L3RawSocket6
    conf.L3socket = L3RawSocket              # the kernel routes, ARPs and enforces the MTU
    conf.L3socket6 = L3RawSocket6            # and for IPv6: routes, neighbour discovery, the MTU
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
