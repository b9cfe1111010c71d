"""MetalLB in layer-2 mode: one node per LoadBalancer IP answers ARP for it.

The controller gives each LoadBalancer Service an address from the pool (cluster.add_service);
the speakers elect, per address, one node among those that may announce it (every node
for externalTrafficPolicy Cluster, only nodes with a ready local endpoint for Local),
ordering them by sha256("<node>#<ip>"). The elected node's speaker answers ARP requests for
the address with its eth0 MAC and sends a gratuitous ARP when it takes the address over.
The address is not configured on any interface: packets reach the node addressed to it,
and kube-proxy's "loadbalancer IP" rules DNAT them (ipMode VIP), keeping the client's address.
One process per lab (`python -m netlab.addons.metallb LAB`) is every node's speaker.
"""

import asyncio
import hashlib
import socket
import struct
import sys

from netlab.kernel import netns as ns
from netlab.node import runtime
from netlab.node.kubelet import PodServer, serve_pods

ETH_P_ARP = 0x0806


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
    """address -> the node that answers ARP for it."""
    out = {}
    for svc in state.services:
        if svc.type != "LoadBalancer" or svc.load_balancer_ip_mode != "VIP" or not svc.load_balancer_ip:
            continue
        nodes = eligible(state, svc)
        if nodes:
            ip = svc.load_balancer_ip
            out[ip] = min(nodes, key=lambda n: hashlib.sha256(f"{n.name}#{ip}".encode()).hexdigest()).name
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
        """Not listening sockets: a raw ARP socket on the node's eth0."""
        with ns.entered(netns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        sock.bind(("eth0", ETH_P_ARP))
        sock.setblocking(False)
        return [_Responder(sock, set(ports[0][1].split(",")))]


if __name__ == "__main__":
    serve_pods(Speaker, sys.argv[1])
