"""MetalLB in layer-2 mode: one node per LoadBalancer IP answers ARP (NDP for IPv6) for it.

The controller gives each LoadBalancer Service an address from the pool (cluster.add_service);
the speakers elect, per address, one node among those that may announce it (every node
for externalTrafficPolicy Cluster, only nodes with a ready local endpoint for Local),
ordering them by sha256("<node>#<ip>"). The elected node's speaker answers ARP requests for
the address with its eth0 MAC and sends a gratuitous ARP when it takes the address over.
The address is not configured on any interface: packets reach the node addressed to it,
and kube-proxy's "loadbalancer IP" rules DNAT them (ipMode VIP), keeping the client's address.
A dual-stack Service has an address of each family, announced by one node (MetalLB elects by
the Service's first address): its IPv6 one by answering neighbour solicitations with a
neighbour advertisement (solicited, no override) and, on takeover, an unsolicited one to
all-nodes (override), as MetalLB's NDP responder does.
One process per lab (`python -m netlab.addons.metallb LAB`) is every node's speaker.
"""

import asyncio
import hashlib
import ipaddress
import socket
import struct
import sys

from netlab.kernel import netns as ns
from netlab.node import runtime
from netlab.node.kubelet import PodServer, serve_pods

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ICMPV6 = 58
ND_SOLICIT, ND_ADVERT = 135, 136
ALL_NODES, ALL_NODES_MAC = "ff02::1", "33:33:00:00:00:01"


def eligible(state, svc):
    """The nodes that may announce a Service's address: none while it has no ready endpoint
    (MetalLB's ShouldAnnounce: no active endpoint, no owner), and under Local policy only
    those with one."""
    nodes = [n for n in state.nodes if "node.kubernetes.io/exclude-from-external-load-balancers" not in n.labels]
    ep = state.endpoints_of(svc)
    ready = {a.node for s in (ep.subsets if ep else ()) for a in s.addresses}
    if not ready:
        return []
    if svc.external_traffic_policy != "Local":
        return nodes
    return [n for n in nodes if n.name in ready]


def announcements(state):
    """address -> the node that answers ARP (or NDP) for it. A dual-stack Service's two
    addresses go to one node, elected by its first (MetalLB's ShouldAnnounce)."""
    out = {}
    for svc in state.services:
        ips = svc.load_balancer_ips or ((svc.load_balancer_ip,) if svc.load_balancer_ip else ())
        if svc.type != "LoadBalancer" or svc.load_balancer_ip_mode != "VIP" or not ips:
            continue
        nodes = eligible(state, svc)
        if nodes:
            first = ips[0]
            node = min(nodes, key=lambda n: hashlib.sha256(f"{n.name}#{first}".encode()).hexdigest()).name
            out.update((ip, node) for ip in ips)
    return out


def arp_reply(mac, ip, to_mac, to_ip):
    """An Ethernet frame with an ARP reply: `ip` is at `mac`."""
    m, t = bytes.fromhex(mac.replace(":", "")), bytes.fromhex(to_mac.replace(":", ""))
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, m, socket.inet_aton(ip), t, socket.inet_aton(to_ip))
    return t + m + struct.pack("!H", ETH_P_ARP) + arp


def parse_request(frame):
    """(sender MAC, sender IP, target IP) of an ARP request, or None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op, sha, spa, _, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    if op != 1 or ptype != 0x0800:
        return None
    return sha.hex(":"), socket.inet_ntoa(spa), socket.inet_ntoa(tpa)


def _checksum(data):
    data += b"\x00" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def neighbour_advert(mac, src_ip, target, to_mac, to_ip, solicited=True):
    """An Ethernet frame with an ICMPv6 neighbour advertisement: `target` is at `mac` (the
    target link-layer address option), hop limit 255 as NDP requires. Solicited: S set, O
    clear; unsolicited (a takeover, to all-nodes): O set, as MetalLB sends them."""
    m, t = bytes.fromhex(mac.replace(":", "")), bytes.fromhex(to_mac.replace(":", ""))
    src, dst, tgt = (socket.inet_pton(socket.AF_INET6, a) for a in (src_ip, to_ip, target))
    flags = 0x40000000 if solicited else 0x20000000
    body = struct.pack("!BBHI16sBB6s", ND_ADVERT, 0, 0, flags, tgt, 2, 1, m)
    pseudo = src + dst + struct.pack("!I3xB", len(body), ICMPV6)
    body = body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(body), ICMPV6, 255, src, dst)
    return t + m + struct.pack("!H", ETH_P_IPV6) + ip6 + body


def parse_solicit(frame):
    """(sender MAC, sender IP, target IP) of a neighbour solicitation, or None (also for a
    duplicate address detection probe, from ::, which no one answers for an address in use
    by a speaker)."""
    if len(frame) < 14 + 40 + 24 or frame[12:14] != b"\x86\xdd" or frame[20] != ICMPV6 or frame[21] != 255:
        return None
    icmp = frame[54:]
    if icmp[0] != ND_SOLICIT or icmp[1] != 0:
        return None
    src = socket.inet_ntop(socket.AF_INET6, frame[22:38])
    if src == "::":
        return None
    return frame[6:12].hex(":"), src, socket.inet_ntop(socket.AF_INET6, icmp[8:24])


class _Responder:
    """A raw socket on a node's eth0 (opened inside its namespace) answering for its addresses."""

    def __init__(self, sock, addresses):
        self.sock, self.addresses = sock, addresses
        self.mac = ":".join(f"{b:02x}" for b in sock.getsockname()[4])
        asyncio.get_running_loop().add_reader(sock.fileno(), self.readable)
        for ip in addresses:                        # gratuitous ARP: "ip is now at this MAC"
            sock.send(arp_reply(self.mac, ip, "ff:ff:ff:ff:ff:ff", ip))

    def readable(self):
        try:
            frame = self.sock.recv(2048)
        except OSError:
            return
        request = parse_request(frame)
        if request and request[2] in self.addresses:
            sender_mac, sender_ip, target = request
            self.sock.send(arp_reply(self.mac, target, sender_mac, sender_ip))

    def close(self):
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


class _NdpResponder(_Responder):
    """A raw IPv6 socket on a node's eth0 answering neighbour solicitations for its IPv6
    addresses; its advertisements come from the node's own IPv6 address."""

    def __init__(self, sock, addresses, source):
        self.source = source
        self.sock, self.addresses = sock, addresses
        self.mac = ":".join(f"{b:02x}" for b in sock.getsockname()[4])
        asyncio.get_running_loop().add_reader(sock.fileno(), self.readable)
        for ip in addresses:                        # unsolicited: "ip is now at this MAC"
            sock.send(neighbour_advert(self.mac, source, ip, ALL_NODES_MAC, ALL_NODES, solicited=False))

    def readable(self):
        try:
            frame = self.sock.recv(2048)
        except OSError:
            return
        request = parse_solicit(frame)
        if request and request[2] in self.addresses:
            sender_mac, sender_ip, target = request
            self.sock.send(neighbour_advert(self.mac, self.source, target, sender_mac, sender_ip))


def _wanted(state):
    return any(s.type == "LoadBalancer" and s.load_balancer_ip_mode == "VIP" for s in state.services)


# The speaker runs only while some LoadBalancer's address is announced by a node.
runtime.register_process(runtime.LabProcess("metallb", __name__, wanted=_wanted))


class Speaker(PodServer):
    name = "metallb"

    def targets(self, state):
        """One responder per node that announces something, keyed by its addresses (so a
        change of addresses reopens it and sends the gratuitous ARPs)."""
        by_node = {}
        for ip, node in announcements(state).items():
            by_node.setdefault(node, []).append(ip)
        return {node: (state.node(node).netns, [(0, ",".join(sorted(ips)))], state.node(node))
                for node, ips in by_node.items() if ns.exists(state.node(node).netns)}

    async def start(self, netns, ports, node):
        """Not listening sockets: a raw ARP socket on the node's eth0, and for IPv6 addresses
        a raw IPv6 one (neighbour discovery)."""
        addresses = ports[0][1].split(",")
        four, six = {a for a in addresses if ":" not in a}, {ipaddress.ip_address(a).compressed
                                                              for a in addresses if ":" in a}
        out = []
        for ethertype, wanted in ((ETH_P_ARP, four), (ETH_P_IPV6, six)):
            if not wanted:
                continue
            with ns.entered(netns):
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
            sock.bind(("eth0", ethertype))
            sock.setblocking(False)
            out.append(_Responder(sock, wanted) if ethertype == ETH_P_ARP else _NdpResponder(sock, wanted, node.ip6))
        return out


if __name__ == "__main__":
    serve_pods(Speaker, sys.argv[1])
