"""flannel's wireguard backend (pkg/backend/wireguard): an encrypted tunnel to every other node.

One device per family in Mode separate: flannel-wg (IPv4, ListenPort 51820) and, with
EnableIPv6, flannel-wg-v6 (ListenPortV6 51821); in Mode auto or ipv4 flannel-wg alone carries
both families. A device holds the node subnet's network address (/32, IPv6 /128), MTU = the
backend's MTU - 80, and one route for the whole cluster network (`dev flannel-wg scope link`),
not one per node: WireGuard itself picks the peer by the packet's destination, from each
peer's AllowedIPs, which are that node's podCIDRs. Every device of a node shares one private
key, /run/flannel/wgkey (0400); its public key and port are in the Node's backend-data.
"""

import ipaddress
import json

from netlab import names
from netlab.api import netconf
from netlab.values.desired import Addr, Link, NetnsPlan, Route, WgPeer, WireGuard

DEVICE, DEVICE6 = "flannel-wg", "flannel-wg-v6"
KEY_FILE = ("run", "flannel", "wgkey")        # under the node's directory: /run/flannel/wgkey on a node
SOCKET_DIR = ("run", "wireguard")             # the node's /run/wireguard (wireguard-go's control sockets)


def key_file(lab, node_name):
    return str(names.node_dir(lab, node_name).joinpath(*KEY_FILE))


def socket_dir(lab, node_name):
    return str(names.node_dir(lab, node_name).joinpath(*SOCKET_DIR))


def separate(cluster):
    return cluster.wg_mode == "separate"


def devices(cluster):
    """(device, family) of every tunnel the cluster's nodes hold, IPv4's first."""
    if not separate(cluster):
        return ((DEVICE, "both"),)
    return tuple(d for d in ((DEVICE, "IPv4") if cluster.ipv4 else None,
                             (DEVICE6, "IPv6") if cluster.ipv6 else None) if d)


def device_of(cluster, family):
    """The device a packet of `family` leaves by."""
    return DEVICE6 if family == "IPv6" and separate(cluster) else DEVICE


def port_of(cluster, family):
    return cluster.wg_listen_port6 if family == "IPv6" and separate(cluster) else cluster.wg_listen_port


def mtu(cluster):
    """The devices' MTU: the backend's MTU (the uplink's by default) less 80 bytes."""
    return (cluster.backend_mtu or cluster.underlay_mtu) - netconf.OVERHEAD["wireguard"]


def node_plan(state, node, others):
    c = state.cluster
    parts = [_device(state, node, others, dev, family) for dev, family in devices(c)]
    return NetnsPlan(node.netns, links=tuple(x for p in parts for x in p[0]), addrs=tuple(x for p in parts for x in p[1]),
                     routes=tuple(x for p in parts for x in p[2]), owner="flannel")


def _device(state, node, others, dev, family):
    """One tunnel's link, addresses and routes (the families it carries)."""
    c = state.cluster
    fams = ("IPv4", "IPv6") if family == "both" else (family,)
    fams = [f for f in fams if f in c.families]
    peers = tuple(_peer(c, n, fams, family) for n in others if n.wg_public_key)
    link = Link(dev, "wireguard", mtu=mtu(c),
                wireguard=WireGuard(key_file(state.lab, node.name), port_of(c, family), peers,
                                    socket_dir(state.lab, node.name)))
    addrs = tuple(Addr(dev, f"{_subnet(node, f).network_address}/{32 if f == 'IPv4' else 128}") for f in fams)
    routes = tuple(Route(c.pod_subnet if f == "IPv4" else c.pod_subnet6, dev=dev) for f in fams)
    return (link,), addrs, routes


def _subnet(node, family):
    return ipaddress.ip_network(node.pod_cidr if family == "IPv4" else node.pod_cidr6)


def _peer(cluster, other, fams, family):
    """The node `other` as a peer: its public key, its endpoint (the address and port it
    published; one tunnel for both families reaches IPv4 endpoints on a private LAN, as flannel's
    auto mode selects), and its subnets of the families this device carries."""
    if family == "IPv6":
        endpoint = f"[{other.ip6}]:{cluster.wg_listen_port6}"
    else:
        endpoint = f"{other.ip}:{cluster.wg_listen_port}"
    return WgPeer(other.wg_public_key, endpoint, tuple(str(_subnet(other, f)) for f in fams),
                  cluster.wg_keepalive, cluster.wg_psk)


def backend_data(node, port):
    """wireguardLeaseAttrs as json.Marshal writes it."""
    return json.dumps({"PublicKey": node.wg_public_key, "Port": port}, separators=(",", ":"))
