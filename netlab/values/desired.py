"""Desired kernel state: the plain values planners return and the kernel layer applies.

Nothing here talks to the kernel. A value can be printed (`--dry-run`), compared in a
test, diffed against what a namespace has, and applied.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Peer:
    """The far end of a veth pair, created in another namespace together with its near end."""
    ifname: str
    netns: str


@dataclass(frozen=True)
class Vxlan:
    vni: int
    port: int
    local: str
    dev: str
    learning: bool = False


@dataclass(frozen=True)
class WgPeer:
    """One [Peer] of a WireGuard device, as `wg showconf` prints it (the PSK's key itself, not a file)."""
    public_key: str
    endpoint: str                  # "172.18.0.3:51820", "[fc00:f853:ccd:e793::3]:51821"
    allowed_ips: tuple             # the CIDRs routed to it and accepted from it
    keepalive: int = 0             # PersistentKeepalive seconds; 0: off
    preshared_key: str = ""


@dataclass(frozen=True)
class WireGuard:
    """A WireGuard device's own configuration: its private key (the path of the file that
    holds it, which the plan never prints), its port and its peers; `socket_dir`: the node's
    /run/wireguard, where a userspace implementation's control socket for it lives."""
    private_key_file: str
    listen_port: int
    peers: tuple = ()              # WgPeer, in order
    socket_dir: str = ""


@dataclass(frozen=True)
class Link:
    ifname: str
    kind: str                      # bridge | veth | vxlan | wireguard | peer (the far end of a veth, made by its pair)
    mtu: int | None = None
    address: str | None = None     # a MAC to set; None leaves the kernel's
    master: str | None = None
    hairpin: bool = False
    pin_mac: bool = False          # the bridge plugin pins cni0's MAC to itself
    peer: Peer | None = None
    vxlan: Vxlan | None = None
    wireguard: WireGuard | None = None
    up: bool = True                # False: held down (a fault the lab was asked for)


@dataclass(frozen=True)
class Addr:
    dev: str
    cidr: str                      # "10.244.1.1/24"

    def __str__(self):
        """As the arguments of `ip addr add`."""
        return f"{self.cidr} dev {self.dev}"


@dataclass(frozen=True)
class Route:
    dst: str                       # "default" or a CIDR
    via: str | None = None
    dev: str | None = None
    onlink: bool = False

    def __str__(self):
        """As the arguments of `ip route add`, and as `ip route` prints it."""
        return (self.dst + (f" via {self.via}" if self.via else "") + f" dev {self.dev}"
                + (" onlink" if self.onlink else "") + (" scope link" if self.link_scope else ""))

    @property
    def link_scope(self):
        """An IPv4 route with no gateway reaches its destination on the link: `ip route add
        DST dev DEV` gives it scope link, as netlab does (IPv6 routes have no scope)."""
        return not self.via and self.dst != "default" and ":" not in self.dst


@dataclass(frozen=True)
class Neigh:
    dst: str
    lladdr: str
    dev: str                       # always permanent

    def __str__(self):
        return f"{self.dst} lladdr {self.lladdr} dev {self.dev} nud permanent"


@dataclass(frozen=True)
class Fdb:
    lladdr: str
    dev: str
    dst: str                       # "self permanent", as flannel writes them

    def __str__(self):
        return f"{self.lladdr} dev {self.dev} dst {self.dst} self permanent"


@dataclass(frozen=True)
class Qdisc:
    """A device's root queueing discipline, as a fault sets it: netem (`loss` percent, `delay`
    milliseconds) or tbf (`rate`, as tc writes it: "10mbit")."""
    dev: str
    kind: str                      # netem | tbf
    loss: float = 0.0
    delay: float = 0.0
    rate: str = ""

    def __str__(self):
        """As `tc qdisc replace dev DEV root ...` takes it."""
        if self.kind == "tbf":
            return f"dev {self.dev} root tbf rate {self.rate} burst {TBF_BURST} latency {TBF_LATENCY}"
        return (f"dev {self.dev} root netem" + (f" delay {self.delay:g}ms" if self.delay else "")
                + (f" loss {self.loss:g}%" if self.loss else ""))


TBF_BURST, TBF_LATENCY = "32kb", "50ms"    # a bucket of 32 KiB, and at most 50 ms queued


# Who makes a device that no plan names any more, and so who removes it: the CNI its veths
# and bridges, flanneld its vxlan and wireguard devices.
DEVICE_OWNERS = {"veth": "cni", "bridge": "cni", "vxlan": "flannel", "wireguard": "flannel"}


@dataclass(frozen=True)
class NetnsPlan:
    """Everything one namespace should hold. Order inside each tuple is the order of creation.

    `owner` names the agent that planned it (cni, flannel, kube-proxy, kubelet, lab-network,
    cloud); a merged plan keeps each part's owner per item in `owners` (see `key`), so the
    applier credits every write to its agent without guessing from names."""
    netns: str
    links: tuple = ()
    addrs: tuple = ()
    routes: tuple = ()
    neighs: tuple = ()
    fdb: tuple = ()
    sysctls: tuple = ()            # (slash path under /proc/sys, value)
    qdiscs: tuple | None = None    # the faults' root qdiscs (Qdisc); None: this namespace has none to look at
    iptables: dict = field(default_factory=dict, hash=False, compare=True)  # table -> Table
    ip6tables: dict = field(default_factory=dict, hash=False, compare=True)  # dual-stack: IPv6's, table -> Table
    nftables: dict = field(default_factory=dict, hash=False, compare=True)  # "ip kube-proxy" -> values.nftables.Table
    owner: str = ""
    owners: dict = field(default_factory=dict, hash=False, compare=False)    # key(item) -> owner

    def owner_of(self, item_key, default="kubelet"):
        return self.owners.get(item_key) or self.owner or default


def key(item):
    """What identifies a planned item for its owner: a device by name, the rest by what they are."""
    if isinstance(item, Link):
        return ("link", item.ifname)
    if isinstance(item, Addr):
        return ("addr", item.dev, item.cidr)
    if isinstance(item, Route):
        return ("route", item.dst)
    if isinstance(item, Neigh):
        return ("neigh", item.dst, item.dev)
    if isinstance(item, Fdb):
        return ("fdb", item.lladdr, item.dev)
    if isinstance(item, Qdisc):
        return ("qdisc", item.dev)
    return ("sysctl", item[0])


def merge(netns, *parts):
    """One namespace's plan from the parts several components contribute."""
    out = dict(links=(), addrs=(), routes=(), neighs=(), fdb=(), sysctls=())
    tables, tables6, nftables, owners = {}, {}, {}, {}
    for p in parts:
        nftables.update(p.nftables)
        for k in out:
            out[k] += getattr(p, k)
            for item in getattr(p, k):
                owners.setdefault(key(item), p.owners.get(key(item)) or p.owner)
        for kind, mine, theirs in (("chain", tables, p.iptables), ("chain6", tables6, p.ip6tables)):
            for name, table in theirs.items():
                mine[name] = mine[name].merged(table) if name in mine else table
                for chain in table.chains:
                    owners.setdefault((kind, name, chain), p.owners.get((kind, name, chain)) or p.owner)
    return NetnsPlan(netns, iptables=tables, ip6tables=tables6, nftables=nftables,
                     owners={k: v for k, v in owners.items() if v}, **out)
