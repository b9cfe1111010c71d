"""CoreDNS with its kubernetes plugin, as kubeadm deploys it: the cluster's DNS.

Two parts (kubeadm's objects, the coredns Deployment and kube-system/kube-dns, are made in
netlab.controllers.kubeadm):
  zone(state, ...)      the records the Kubernetes DNS specification (1.1.0) asks for, as a
                        pure function of the cluster state; kubeadm's Corefile options apply
                        (`ttl 30`, `pods insecure`, reverse zones falling through to a
                        forwarder, which a sealed lab does not have: SERVFAIL); in a
                        dual-stack lab AAAA records and ip6.arpa PTRs beside them
  answer(zone, packet)  one DNS message in, one out, in wire format through dnslib
The server (`python -m netlab.addons.coredns LAB`) serves every coredns pod of a lab from sockets
opened inside the pods' namespaces, and rebuilds the zone whenever the lab's state changes.
"""

import asyncio
import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field

from netlab.controllers.kubeadm import COREDNS_IMAGE as IMAGE
from netlab.controllers.kubeadm import COREDNS_METRICS_PORT as METRICS_PORT
from netlab.controllers.kubeadm import DOMAIN, dns_ip
from netlab.node import runtime
from netlab.node.kubelet import PodServer, serve_pods

REVERSE = "in-addr.arpa."
REVERSE6 = "ip6.arpa."           # the Corefile's third zone: `kubernetes cluster.local in-addr.arpa ip6.arpa`
SPEC_VERSION = "1.1.0"
VERSION_TTL = 28800
UDP_LIMIT = 512                   # without EDNS0, a UDP answer must fit in 512 bytes
EDNS_LIMIT = 4096                 # the most this server sends over UDP, whatever a client offers


def runs_coredns(container):
    """The container runtime's choice: a container of CoreDNS's image runs netlab's server."""
    return not container.command and container.image.split(":")[0] == IMAGE.split(":")[0]


# CoreDNS's pods use the node's resolver (dnsPolicy Default), and one lab process serves them all.
runtime.register_image(runtime.Image("coredns", runs_coredns, server="coredns", dns_policy="Default"))
runtime.register_process(runtime.LabProcess("coredns", __name__))


# --- the zone ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    name: str            # lower case, fully qualified, with the trailing dot
    type: str            # A, AAAA, SRV, PTR, CNAME, TXT, NS, SOA
    ttl: int
    data: object         # an address or a name; SRV: (priority, weight, port, target); SOA: a tuple


@dataclass
class Zone:
    ttl: int
    records: dict = field(default_factory=dict)      # name -> [Record]
    soa: Record | None = None
    ipv6: bool = False        # a dual-stack or IPv6 lab's: AAAA records, and pod names of IPv6 addresses

    def add(self, name, rtype, data, ttl=None):
        self.records.setdefault(name, []).append(Record(name, rtype, self.ttl if ttl is None else ttl, data))

    def exists(self, name):
        """A name with records, or one above such a name (an empty non-terminal)."""
        return name in self.records or any(n.endswith("." + name) for n in self.records)


def _reverse(ip):
    return ".".join(reversed(ip.split("."))) + "." + REVERSE


def _reverse6(ip):
    """The PTR owner of an IPv6 address: its 32 nibbles, last first, under ip6.arpa."""
    return ipaddress.IPv6Address(ip).reverse_pointer + "."


def _dashed(ip):
    return ip.replace(".", "-")


def _dashed6(ip):
    """CoreDNS's endpointHostname for an IPv6 address without a hostname: ':' -> '-', and a
    '0' after a trailing '-' (fd00:10:244:1:: -> fd00-10-244-1--0), so the label ends in an
    alphanumeric as a DNS label must."""
    label = ip.replace(":", "-")
    return label + "0" if label.endswith("-") else label


def _address_type(ip):
    return "AAAA" if ":" in ip else "A"


def srv_weight(count):
    """CoreDNS spreads weight 100 over the records of one answer: floor(100 / n), at least 1."""
    return max(1, 100 // count)


def zone(state, ttl=30, serial=1):
    """Every record of the cluster domain and the reverse zones (in-addr.arpa; ip6.arpa in a
    dual-stack lab), from the cluster state."""
    z = Zone(ttl, ipv6=state.cluster.ipv6)
    z.soa = Record(DOMAIN, "SOA", ttl, (f"ns.dns.{DOMAIN}", f"hostmaster.{DOMAIN}", serial, 7200, 1800, 86400, ttl))
    z.records[DOMAIN] = [z.soa, Record(DOMAIN, "NS", ttl, f"ns.dns.{DOMAIN}")]
    z.add(f"ns.dns.{DOMAIN}", _address_type(dns_ip(state.cluster)), dns_ip(state.cluster))
    z.add(f"dns-version.{DOMAIN}", "TXT", SPEC_VERSION, ttl=VERSION_TTL)
    for svc in state.services:
        # IPv6 endpoints are only in the IPv6 EndpointSlices (a dual lab's v1 Endpoints hold
        # the primary family, IPv4); CoreDNS reads both families' slices.
        slices = state.slices_of(svc)
        slices6 = [s for s in slices if s.address_type == "IPv6"] if z.ipv6 and svc.headless else ()
        _service_records(z, svc, state.endpoints_of(svc), slices6, slices)
    return z


def _service_records(z, svc, endpoints, slices6=(), slices=()):
    fqdn = f"{svc.name}.{svc.namespace}.svc.{DOMAIN}"
    named = [p for p in svc.ports if p.name]
    if svc.type == "ExternalName":
        z.add(fqdn, "CNAME", svc.external_name.rstrip(".").lower() + ".")
        return
    if not svc.headless:
        ips = svc.cluster_ips or (svc.cluster_ip,)
        if len(ips) == 1 and ":" not in ips[0]:
            z.add(fqdn, "A", svc.cluster_ip)          # single-stack IPv4: every IPv4 lab's Services
            for p in named:
                z.add(f"_{p.name}._{p.protocol.lower()}.{fqdn}", "SRV", (0, srv_weight(1), p.port, fqdn))
            z.add(_reverse(svc.cluster_ip), "PTR", fqdn)
            _endpoint_ptrs(z, fqdn, slices)
            return
        # findServices makes one entry per port and ClusterIP, so a dual-stack Service's SRV
        # weighs 100/2 (its two entries share a target: one record); A/AAAA pick their family.
        for ip in ips:
            z.add(fqdn, _address_type(ip), ip)
        for p in named:
            z.add(f"_{p.name}._{p.protocol.lower()}.{fqdn}", "SRV", (0, srv_weight(len(ips)), p.port, fqdn))
        for ip in ips:
            z.add(_reverse6(ip) if ":" in ip else _reverse(ip), "PTR", fqdn)
        _endpoint_ptrs(z, fqdn, slices)
        return
    ready = {}                                # endpoint name -> ip, and its ports
    ports = {}
    for subset in endpoints.subsets if endpoints else ():
        for a in subset.addresses:
            if ":" in a.ip:
                continue                       # an IPv6-only Service's: its IPv6 slices give them
            host = f"{(a.hostname or _dashed(a.ip)).lower()}.{fqdn}"
            ready[host] = a.ip
            ports.setdefault(host, []).extend(subset.ports)
    for host, ip in sorted(ready.items(), key=lambda kv: ipaddress.ip_address(kv[1])):
        z.add(fqdn, "A", ip)
        z.add(host, "A", ip)
        z.add(_reverse(ip), "PTR", host)
    if slices6:
        _headless6(z, fqdn, named, ready, ports, slices6)
        return
    for p in named:
        targets = [h for h in ready if any(q.name == p.name and q.protocol == p.protocol for q in ports[h])]
        for host in sorted(targets):
            port = next(q.port for q in ports[host] if q.name == p.name and q.protocol == p.protocol)
            z.add(f"_{p.name}._{p.protocol.lower()}.{fqdn}", "SRV", (0, srv_weight(len(targets)), port, host))


def _endpoint_ptrs(z, fqdn, slices):
    """serviceRecordForIP's second half: an address no ClusterIP has is looked up in the
    endpoints, so a Service with a ClusterIP gives its ready endpoints a PTR record too,
    `<hostname or dashed address>.<service>.<namespace>.svc`, one per Service that has the
    address (CoreDNS's endpoints are its EndpointSlices, one subset each)."""
    for s in slices:
        for e in s.endpoints:
            if e.ready is False:
                continue
            for a in e.addresses:
                six = ":" in a
                host = f"{(e.hostname or (_dashed6(a) if six else _dashed(a))).lower()}.{fqdn}"
                z.add(_reverse6(a) if six else _reverse(a), "PTR", host)


def _headless6(z, fqdn, named, ready, ports, slices6):
    """A dual-stack headless Service's IPv6 records (its IPv4 ones, `ready`, are made), and
    the SRV records of both families. CoreDNS's EndpointSliceToEndpoints keeps endpoints
    whose ready condition is true or unset; its SRV makes one entry per address and matching
    port (weight floor(100 / entries)) and one record per target and port, so an endpoint
    named by its hostname in both families is one target with an A and an AAAA."""
    ready6 = []                                # (ip, endpoint name, ports)
    for s in slices6:
        for e in s.endpoints:
            if e.ready is False:
                continue
            for a in e.addresses:
                ready6.append((a, f"{(e.hostname or _dashed6(a)).lower()}.{fqdn}", s.ports))
    ready6.sort(key=lambda t: ipaddress.ip_address(t[0]))
    for ip, host, _ in ready6:
        z.add(fqdn, "AAAA", ip)
        z.add(host, "AAAA", ip)
        z.add(_reverse6(ip), "PTR", host)
    for p in named:
        entries = [(h, q.port) for h in ready for q in ports[h] if q.name == p.name and q.protocol == p.protocol]
        entries += [(h, q.port) for _, h, ps in ready6 for q in ps if q.name == p.name and q.protocol == p.protocol]
        for host, port in sorted(set(entries)):
            z.add(f"_{p.name}._{p.protocol.lower()}.{fqdn}", "SRV", (0, srv_weight(len(entries)), port, host))


POD_NAME = re.compile(r"^(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\.pod\." + re.escape(DOMAIN) + "$")
POD_LABEL = re.compile(r"^([^.]+)\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\.pod\." + re.escape(DOMAIN) + "$")


def _pod6(name, qtype, ttl):
    """findPods for a name POD_NAME does not take: a label with exactly three dashes and no
    '--' is an IPv4 address, any other is IPv6 with '-' for ':' (fd00-10-244-1--5 ->
    fd00:10:244:1::5). None: not a pod name; else (rcode, answers)."""
    m = POD_LABEL.match(name)
    if not m:
        return None
    label = m.group(1)
    if label.count("-") == 3 and "--" not in label:
        return "NXDOMAIN", []                  # an IPv4 spelling POD_NAME did not parse
    try:
        ip = ipaddress.IPv6Address(label.replace("-", ":"))
    except ValueError:
        return "NXDOMAIN", []
    return "NOERROR", [Record(name, "AAAA", ttl, str(ip))] if qtype in ("AAAA", "ANY") else []


def lookup(z, name, qtype):
    """(rcode, answers, additional) for a lower-case name; the authority section (the SOA)
    is added by the caller to every answer without records."""
    if name.endswith(REVERSE) or name == REVERSE:
        if name not in z.records:
            return "SERVFAIL", [], []         # kubeadm's Corefile falls through to `forward`
    elif not (name == DOMAIN or name.endswith("." + DOMAIN)):
        if not (name.endswith(REVERSE6) and name in z.records):
            return "SERVFAIL", [], []         # forward . /etc/resolv.conf: nothing beyond a sealed lab
    pod = POD_NAME.match(name)
    if pod:
        octets = [int(x) for x in pod.groups()[:4]]
        if max(octets) > 255:
            return "NXDOMAIN", [], []
        return "NOERROR", [Record(name, "A", z.ttl, ".".join(map(str, octets)))] if qtype in ("A", "ANY") else [], []
    records = z.records.get(name, [])
    if not records:
        pod6 = _pod6(name, qtype, z.ttl) if z.ipv6 else None
        if pod6 is not None:
            return pod6[0], pod6[1], []
        return ("NOERROR" if z.exists(name) else "NXDOMAIN"), [], []
    answers = [r for r in records if qtype in (r.type, "ANY")] or [r for r in records if r.type == "CNAME"]
    additional = [a for r in answers if r.type in ("SRV", "NS")
                  for a in z.records.get(r.data[3] if r.type == "SRV" else r.data, []) if a.type in ("A", "AAAA")]
    return "NOERROR", answers, additional


# --- the wire ----------------------------------------------------------------------------

def _rr(record, owner):
    from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RR, SOA, SRV, TXT, A
    d = record.data
    rdata = {"A": lambda: A(d), "AAAA": lambda: AAAA(d), "PTR": lambda: PTR(d), "CNAME": lambda: CNAME(d),
             "NS": lambda: NS(d), "TXT": lambda: TXT(d), "SRV": lambda: SRV(d[0], d[1], d[2], d[3]),
             "SOA": lambda: SOA(d[0], d[1], d[2:])}[record.type]()
    return RR(owner, getattr(QTYPE, record.type), ttl=record.ttl, rdata=rdata)


def answer(z, data, transport="udp"):
    """The reply to one DNS message (bytes), or None when nothing should be sent back."""
    from dnslib import EDNS0, QTYPE, RCODE, DNSHeader, DNSRecord
    try:
        request = DNSRecord.parse(data)
    except Exception:                          # dnslib raises assorted errors on garbage
        if len(data) < 12:
            return None
        header = DNSHeader.parse(_buffer(data[:12]))
        if header.qr:
            return None
        return bytes(DNSRecord(DNSHeader(id=header.id, qr=1, opcode=header.opcode, rcode=RCODE.FORMERR)).pack())
    if request.header.qr:
        return None                               # a response: never answer those
    reply = request.reply(ra=1, aa=1)
    reply.rr, reply.auth, reply.ar = [], [], []
    opt = next((r for r in request.ar if r.rtype == QTYPE.OPT), None)
    advertised = max(UDP_LIMIT, min(opt.rclass, EDNS_LIMIT)) if opt else UDP_LIMIT
    limit = 65535 if transport == "tcp" else advertised
    if request.header.opcode != 0:
        reply.header.rcode = RCODE.NOTIMP
    elif len(request.questions) != 1:
        reply.header.rcode = RCODE.FORMERR
    else:
        q = request.questions[0]
        asked = str(q.qname)
        name = asked.lower()
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        rcode, answers, additional = lookup(z, name, qtype)
        reply.header.rcode = getattr(RCODE, rcode)
        for r in answers:
            reply.add_answer(_rr(r, asked if r.name == name else r.name))
        for r in additional:
            reply.add_ar(_rr(r, r.name))
        if rcode in ("NOERROR", "NXDOMAIN") and not answers:
            reply.add_auth(_rr(z.soa, z.soa.name))
    if opt is not None:
        reply.add_ar(EDNS0(udp_len=advertised))
    return _fit(reply, limit)


def _buffer(data):
    from dnslib.buffer import Buffer
    return Buffer(data)


def _fit(reply, limit):
    """Drop records from the end until the message fits, setting TC when an answer went."""
    packed = bytes(reply.pack())
    if len(packed) <= limit:
        return packed
    reply.ar = [r for r in reply.ar if r.rtype == 41]      # keep only the OPT record
    while reply.rr and len(reply.pack()) > limit:
        reply.rr.pop()
        reply.header.tc = 1
    reply.header.tc = 1
    return bytes(reply.pack())


# --- the server --------------------------------------------------------------------------

TCP_IDLE_SECONDS = 10
MEMO_SIZE = 10000                 # replies kept; a flood of distinct questions only clears it
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")


def _qtype(data):
    """The question's type straight from the wire (for the metrics), or None."""
    from dnslib import QTYPE
    i = 12
    try:
        while data[i]:
            i += data[i] + 1
        return QTYPE.get(int.from_bytes(data[i + 1:i + 3], "big"), "other")
    except IndexError:
        return None


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server, key):
        self.server, self.key = server, key

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        out = self.server.handle(self.key, data, "udp")
        if out is not None:
            self.transport.sendto(out, addr)


class DnsServer(PodServer):
    """Every coredns pod's :53 (UDP and TCP) and :9153 (Prometheus metrics)."""
    name = "coredns"

    def __init__(self, lab):
        super().__init__(lab)
        self.zone = None
        self.requests, self.responses = {}, {}     # (pod, proto, type) / (pod, rcode) -> count
        self.memo = {}                             # (transport, message minus its id) -> reply minus its id

    def ports(self, pod):
        if any(runs_coredns(c) for c in pod.template.containers):
            return [(53, "UDP"), (53, "TCP"), (METRICS_PORT, "TCP")]
        return []

    def updated(self, state):
        self.zone = zone(state, state.cluster.dns_ttl, int(os.stat(self.store.path).st_mtime))
        self.memo.clear()

    async def serve(self, pod, proto, port, sock):
        loop = asyncio.get_running_loop()
        if port == METRICS_PORT:
            return await asyncio.start_server(lambda r, w, k=pod.key: self._metrics(k, r, w), sock=sock)
        if proto == "UDP":
            transport, _ = await loop.create_datagram_endpoint(lambda k=pod.key: _Udp(self, k), sock=sock)
            return transport
        return await asyncio.start_server(lambda r, w, k=pod.key: self._tcp(k, r, w), sock=sock)

    def handle(self, key, data, transport):
        """Answer one message; whatever it holds, the server goes on."""
        qtype = _qtype(data)
        out = self._answer(data, transport)
        if qtype is not None:
            self.requests[(key, transport, qtype)] = self.requests.get((key, transport, qtype), 0) + 1
        if out is not None and len(out) >= 4:
            rcode = RCODES[out[3] & 0xF] if (out[3] & 0xF) < len(RCODES) else str(out[3] & 0xF)
            self.responses[(key, rcode)] = self.responses.get((key, rcode), 0) + 1
        return out

    def _answer(self, data, transport):
        """answer() is a pure function of the zone and the message: the same question (its
        bytes after the id) gets the same reply, so replies are kept until the zone changes."""
        data = bytes(data)
        memo_key = (transport, data[2:])
        if memo_key in self.memo:
            return data[:2] + self.memo[memo_key]
        try:
            out = answer(self.zone, data, transport)
        except Exception as e:                  # a bug must cost one answer, not the server
            print(f"coredns: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return None
        if out is not None and out[3] & 0xF in (0, 2, 3):          # NOERROR, SERVFAIL, NXDOMAIN
            if len(self.memo) >= MEMO_SIZE:
                self.memo.clear()
            self.memo[memo_key] = out[2:]
        return out

    async def _tcp(self, key, reader, writer):
        try:
            while True:
                size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS), "big")
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_SECONDS)
                out = self.handle(key, data, "tcp")
                if out is not None:
                    writer.write(len(out).to_bytes(2, "big") + out)
                    await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _metrics(self, key, reader, writer):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TCP_IDLE_SECONDS)
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            body = self.metrics(key) if path == b"/metrics" else "404 page not found\n"
            status = "200 OK" if path == b"/metrics" else "404 Not Found"
            data = body.encode()
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def metrics(self, key):
        """CoreDNS's two main counters, in Prometheus' text format, for one pod."""
        out = ["# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.",
               "# TYPE coredns_dns_requests_total counter"]
        out += [f'coredns_dns_requests_total{{family="1",proto="{proto}",server="dns://:53",type="{t}",zone="."}} {n}'
                for (k, proto, t), n in sorted(self.requests.items()) if k == key]
        out += ["# HELP coredns_dns_responses_total Counter of response status codes.",
                "# TYPE coredns_dns_responses_total counter"]
        out += [f'coredns_dns_responses_total{{plugin="kubernetes",rcode="{r}",server="dns://:53",zone="."}} {n}'
                for (k, r), n in sorted(self.responses.items()) if k == key]
        return "\n".join(out) + "\n"


if __name__ == "__main__":
    serve_pods(DnsServer, sys.argv[1])
