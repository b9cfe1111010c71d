"""Apply NetnsPlans through netlink (pyroute2): read what a namespace has, change the difference.

Level-triggered like the real agents: running it twice writes nothing the second time
(`writes` counts every netlink change, so callers and tests can see that). Kernel facts:
- a veth is created whole, its far end placed directly in the other netns (IFLA_NET_NS_FD),
  so no link ever appears in the root namespace;
- setting a bridge's MAC to its own value marks it user-assigned (addr_assign_type 3), so it
  stops following its ports' MACs: the bridge plugin's "pin";
- hairpin is the bridge port flag IFLA_BRPORT_MODE.
"""

import errno
import os
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import states as nud_states

from netlab.errors import NetlabError
from netlab.kernel import netns as ns
from netlab.kernel import tc, wireguard
from netlab.values.desired import DEVICE_OWNERS, key

NUD_PERMANENT = nud_states["permanent"]
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
RTPROT_KERNEL, RTPROT_BOOT = 2, 3
MAIN_TABLE = 254
IFA_F_NODAD = 0x02
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
MANAGED_KINDS = ("bridge", "veth", "vxlan", "wireguard")


class NetlinkApplier:
    """Converges namespaces one at a time, each through a netlink socket opened inside it and
    closed once its plan is applied: a lab of any size holds one socket (4 fds) at a time.
    (A socket is opened by entering the namespace, not by pyroute2's netns=, which forks.)"""

    def __init__(self):
        self.writes = 0
        self.log = []       # (netns, what changed) — the agents' event trail

    def _write(self, plan, owner, what, fn, *args, **kwargs):
        """One netlink change, logged as (netns, what, owner): `owner` is the agent the plan
        names for the item (netlab.values.desired.key), or the item's key to look it up."""
        netns = plan.netns
        owner = plan.owner_of(owner) if isinstance(owner, tuple) else owner
        try:
            fn(*args, **kwargs)
        except NetlinkError as e:
            # Deleting what is already gone is success: a veth whose pod namespace was just
            # removed disappears on its own, a moment later, while we look at it.
            if what.startswith("del") and e.code in (errno.ENODEV, errno.ENOENT, errno.ESRCH):
                return
            raise NetlabError(f"{netns}: {what}: {os.strerror(e.code)}") from None
        self.writes += 1
        self.log.append((netns, what, owner))

    def apply(self, plan, fresh=False):
        """Converge one namespace. `fresh`: the namespace was just created and holds nothing
        but lo (and veth ends its pairs made), so there is nothing to read back and diff."""
        with ns.entered(plan.netns):
            ipr = IPRoute()
        with ipr:
            links = self._links(plan, ipr, fresh)
            index = _Index({name: l["index"] for name, l in links.items()})
            self._wireguard(plan)
            if plan.qdiscs is not None:
                self._qdiscs(plan, ipr, index)
            self._sysctls(plan, fresh)
            self._addrs(plan, ipr, index, fresh)
            self._neighs(plan, ipr, index, fresh)
            self._fdb(plan, ipr, index, fresh)
            self._routes(plan, ipr, index, fresh)

    # --- links -------------------------------------------------------------------------

    def _links(self, plan, ipr, fresh):
        """Create what is missing, recreate what is wrong, then configure from one dump."""
        # wireguard-go made its device in the fresh namespace before the plan came
        have = {} if fresh and not any(l.kind == "wireguard" for l in plan.links) else _dump_links(ipr)
        wanted = {l.ifname for l in plan.links}
        for name, l in list(have.items()):
            if name not in wanted and _kind(l) in MANAGED_KINDS:
                self._write(plan, plan.owner_of(("link", name), DEVICE_OWNERS[_kind(l)]), f"delete link {name}",
                            ipr.link, "del", index=l["index"])
                del have[name]
        masters = {name: l["index"] for name, l in have.items()}
        for link in plan.links:
            current = have.get(link.ifname)
            if current is not None and not _same_device(current, link, have):
                self._write(plan, key(link), f"delete link {link.ifname} (changed)", ipr.link, "del",
                            index=current["index"])
                current = None
            if current is None and link.kind != "peer":
                self._create(plan, ipr, link, masters)
        have = _dump_links(ipr)
        for link in [l for l in plan.links if l.ifname not in have]:
            raise NetlabError(f"{plan.netns}: {link.ifname} is missing (its veth pair is gone)")
        lo = have.get("lo")
        if lo is not None and not lo["flags"] & 1:
            self._write(plan, ("link", "lo"), "lo up", ipr.link, "set", index=lo["index"], state="up")
        for link in plan.links:
            self._configure(plan, ipr, link, have[link.ifname], have)
        return have

    def _create(self, plan, ipr, link, masters):
        """One RTM_NEWLINK carrying MTU, MAC, master and the up flag, as `ip link add` can."""
        netns, owner = plan.netns, key(link)
        kwargs = dict(ifname=link.ifname, kind=link.kind, state="up" if link.up else "down")
        if link.mtu:
            kwargs["mtu"] = link.mtu
        if link.address:
            kwargs["address"] = link.address
        if link.master:
            if link.master not in masters:
                raise NetlabError(f"{netns}: {link.ifname}: bridge {link.master} is missing")
            kwargs["master"] = masters[link.master]
        if link.kind == "veth":
            fd = ns.fd(link.peer.netns)
            try:
                kwargs["peer"] = {"ifname": link.peer.ifname, "net_ns_fd": fd}
                if link.mtu:
                    kwargs["peer"]["mtu"] = link.mtu
                self._write(plan, owner, f"add veth {link.ifname} peer {link.peer.ifname} in {link.peer.netns}",
                            ipr.link, "add", **kwargs)
            finally:
                os.close(fd)
            return
        if link.kind == "vxlan":
            v = link.vxlan
            dev = masters.get(v.dev) or (ipr.link_lookup(ifname=v.dev) or [None])[0]
            if dev is None:
                raise NetlabError(f"{netns}: {link.ifname}: underlay device {v.dev} is missing")
            # An IPv6 source is IFLA_VXLAN_LOCAL6, and makes the kernel encapsulate in IPv6.
            kwargs.update({"vxlan_id": v.vni, "vxlan_port": v.port, ("vxlan_local6" if ":" in v.local else "vxlan_local"): v.local,
                           "vxlan_link": dev, "vxlan_learning": int(v.learning)})
        if link.kind == "wireguard":
            try:
                ipr.link("add", **kwargs)
            except NetlinkError as e:
                if e.code not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise NetlabError(f"{netns}: add wireguard {link.ifname}: {os.strerror(e.code)}") from None
                raise NetlabError(f"{netns}: {link.ifname}: this kernel makes no wireguard devices and no wireguard-go "
                                  f"serves it (`netlab reconcile` starts it again)") from None
            self.writes += 1
            self.log.append((netns, f"add wireguard {link.ifname}", plan.owner_of(owner)))
        else:
            self._write(plan, owner, f"add {link.kind} {link.ifname}", ipr.link, "add", **kwargs)
        created = ipr.link("get", ifname=link.ifname)[0]
        masters[link.ifname] = created["index"]
        if link.pin_mac:
            mac = created.get("address")
            self._write(plan, owner, f"pin {link.ifname} MAC {mac}", ipr.link, "set", index=created["index"],
                        address=mac)

    def _configure(self, plan, ipr, link, current, have):
        netns, owner, idx = plan.netns, key(link), current["index"]
        if link.mtu and current.get("IFLA_MTU") != link.mtu:
            self._write(plan, owner, f"{link.ifname} mtu {link.mtu}", ipr.link, "set", index=idx, mtu=link.mtu)
        if link.address and current.get("address") != link.address:
            self._write(plan, owner, f"{link.ifname} address {link.address}", ipr.link, "set", index=idx, address=link.address)
        if link.master:
            master = have.get(link.master)
            if master is None:
                raise NetlabError(f"{netns}: {link.ifname}: bridge {link.master} is missing")
            if current.get("IFLA_MASTER") != master["index"]:
                self._write(plan, owner, f"{link.ifname} master {link.master}", ipr.link, "set", index=idx,
                            master=master["index"])
            if _hairpin(current) != link.hairpin:
                self._write(plan, owner, f"{link.ifname} hairpin {'on' if link.hairpin else 'off'}",
                            ipr.brport, "set", index=idx, mode=int(link.hairpin))
        if link.up and not current["flags"] & 1:
            self._write(plan, owner, f"{link.ifname} up", ipr.link, "set", index=idx, state="up")
        elif not link.up and current["flags"] & 1:
            self._write(plan, owner, f"{link.ifname} down", ipr.link, "set", index=idx, state="down")

    def _wireguard(self, plan):
        """WireGuard devices' keys, port and peers, through `wg` (kernel or wireguard-go alike)."""
        for link in plan.links:
            if link.wireguard is not None:
                for what in wireguard.sync(plan.netns, link.ifname, link.wireguard):
                    self.writes += 1
                    self.log.append((plan.netns, f"wg set {link.ifname} {what}", plan.owner_of(key(link))))

    def _qdiscs(self, plan, ipr, index):
        """The faults' root qdiscs: set where planned, removed where no plan has one any more."""
        have = tc.root_kinds(ipr, index.names)
        want = {q.dev: q for q in plan.qdiscs}
        for dev, kind in sorted((d, k) for d, k in have.items() if d):
            if kind in tc.FAULT_KINDS and dev not in want:
                tc.delete(plan.netns, dev)
                self.writes += 1
                self.log.append((plan.netns, f"del qdisc {kind} dev {dev}", "faults"))
        for dev, q in want.items():
            _need(plan.netns, index, dev)
            if have.get(dev) == q.kind and tc.matches(plan.netns, q):
                continue
            tc.replace(plan.netns, q)
            self.writes += 1
            self.log.append((plan.netns, f"qdisc {q}", "faults"))

    # --- addresses, neighbours, FDB, routes ---------------------------------------------

    def _addrs(self, plan, ipr, index, fresh):
        devs = {a.dev for a in plan.addrs}
        have = set() if fresh else {(_name_of(index, a["index"]), f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}")
                for family in _families(plan) for a in ipr.addr("dump", family=family)
                if family == socket.AF_INET or a["scope"] == RT_SCOPE_UNIVERSE}   # not fe80::, not ::1
        want = {(a.dev, a.cidr) for a in plan.addrs}
        for dev, cidr in sorted(have - want):
            if dev in devs:
                ip, plen = cidr.split("/")
                self._write(plan, ("link", dev), f"del addr {cidr} dev {dev}", ipr.addr, "del",
                            index=index[dev], address=ip, prefixlen=int(plen))
        for a in plan.addrs:
            if (a.dev, a.cidr) not in have:
                ip, plen = a.cidr.split("/")
                kwargs = dict(index=_need(plan.netns, index, a.dev), address=ip, prefixlen=int(plen))
                if ":" in ip:
                    # `ip addr add ... nodad`: usable at once, never "tentative". DAD would also
                    # fail on a pod's eth0: its hairpin port echoes the probe back.
                    kwargs["flags"] = IFA_F_NODAD
                self._write(plan, key(a), f"add addr {a}", ipr.addr, "add", **kwargs)

    def _neighs(self, plan, ipr, index, fresh):
        devs = {n.dev for n in plan.neighs} | _vxlan_devs(plan)
        # Both families: flannel-v6.1's entries are IPv6 neighbours (the kernel's own
        # multicast entries are NUD_NOARP, not permanent, so they are never taken for ours).
        have = set() if fresh else {(n.get("NDA_DST"), n.get("NDA_LLADDR"), _name_of(index, n["ifindex"]))
                for family in _neigh_families(plan)
                for n in ipr.neigh("dump", family=family) if n["state"] & NUD_PERMANENT}
        want = {(n.dst, n.lladdr, n.dev) for n in plan.neighs}
        for dst, mac, dev in sorted(have - want):
            if dev in devs:
                self._write(plan, ("link", dev), f"del neigh {dst} dev {dev}", ipr.neigh, "del",
                            dst=dst, lladdr=mac, ifindex=index[dev])
        for n in plan.neighs:
            if (n.dst, n.lladdr, n.dev) not in have:
                self._write(plan, key(n), f"neigh {n}", ipr.neigh,
                            "replace", dst=n.dst, lladdr=n.lladdr, ifindex=_need(plan.netns, index, n.dev),
                            state=NUD_PERMANENT)

    def _fdb(self, plan, ipr, index, fresh):
        devs = {f.dev for f in plan.fdb} | _vxlan_devs(plan)
        have = set()
        for dev in () if fresh else devs:
            if dev not in index:
                continue
            for e in ipr.fdb("dump", ifindex=index[dev]):
                if e["ifindex"] == index[dev] and e.get("NDA_DST") and e["state"] & NUD_PERMANENT:
                    have.add((e.get("NDA_LLADDR"), dev, e.get("NDA_DST")))
        want = {(f.lladdr, f.dev, f.dst) for f in plan.fdb}
        for mac, dev, dst in sorted(have - want):
            self._write(plan, ("link", dev), f"del fdb {mac} dev {dev} dst {dst}", ipr.fdb, "del",
                        ifindex=index[dev], lladdr=mac, dst=dst)
        for f in plan.fdb:
            if (f.lladdr, f.dev, f.dst) not in have:
                self._write(plan, key(f), f"fdb {f}", ipr.fdb,
                            "append", ifindex=_need(plan.netns, index, f.dev), lladdr=f.lladdr, dst=f.dst,
                            flags=NTF_SELF, state=NUD_PERMANENT)

    def _routes(self, plan, ipr, index, fresh):
        have = {}
        for family in () if fresh else _families(plan):
            for r in ipr.route("dump", family=family, table=MAIN_TABLE):
                if r["proto"] == RTPROT_KERNEL or r.get("RTA_TABLE", MAIN_TABLE) != MAIN_TABLE:
                    continue
                dst = f"{r.get('RTA_DST')}/{r['dst_len']}" if r["dst_len"] else "default"
                have[(dst, r.get("RTA_GATEWAY"), _name_of(index, r.get("RTA_OIF")),
                      bool(r["flags"] & RTNH_F_ONLINK))] = r
        want = {(r.dst, r.via, r.dev, r.onlink): r for r in plan.routes}
        for stale in sorted(set(have) - set(want), key=str):
            dst, family = stale[0], _route_family(stale[0], stale[1])
            self._write(plan, ("link", stale[2]),
                        f"del route {dst}", ipr.route, "del",
                        dst=_route_dst(dst, family), table=MAIN_TABLE, family=family)
        for wanted, r in want.items():
            if wanted in have:
                continue
            family = _route_family(r.dst, r.via)
            kwargs = dict(dst=_route_dst(r.dst, family), oif=_need(plan.netns, index, r.dev),
                          proto=RTPROT_BOOT, table=MAIN_TABLE, family=family)
            if r.via:
                kwargs["gateway"] = r.via
            if r.onlink:
                kwargs["flags"] = RTNH_F_ONLINK
            if r.link_scope:
                kwargs["scope"] = RT_SCOPE_LINK
            self._write(plan, key(r), f"route {r}", ipr.route, "replace", **kwargs)

    def _sysctls(self, plan, fresh):
        for path, value in plan.sysctls:
            if fresh or ns.read_sysctl(plan.netns, path) != value:
                ns.write_sysctl(plan.netns, path, value)
                self.writes += 1
                self.log.append((plan.netns, f"sysctl {path}={value}", plan.owner_of(("sysctl", path))))


class _Index(dict):
    """ifname -> ifindex, and back."""

    def __init__(self, by_name):
        super().__init__(by_name)
        self.names = {i: n for n, i in by_name.items()}


def _kind(link):
    info = link.get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info else None


def _dump_links(ipr):
    return {l.get("ifname"): l for l in ipr.link("dump")}


def _same_device(current, link, have):
    """Whether an existing device can be kept (configured in place) or must be recreated."""
    kind = _kind(current)
    if link.kind == "peer":
        return True
    if link.kind == "wireguard" and kind == "tun":
        return True                 # the same device, served by wireguard-go
    if kind != link.kind:
        return False
    if link.kind == "vxlan":
        data = current.get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))
        v = link.vxlan
        dev = have.get(v.dev)
        return (data.get("IFLA_VXLAN_ID") == v.vni and data.get("IFLA_VXLAN_PORT") == v.port
                and data.get(_vxlan_local_attr(v.local)) == v.local
                and bool(data.get("IFLA_VXLAN_LEARNING")) == v.learning
                and dev is not None and data.get("IFLA_VXLAN_LINK") == dev["index"])
    return True


def _hairpin(link):
    data = link.get(("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA"))
    return bool(data and data.get("IFLA_BRPORT_MODE"))


def _vxlan_devs(plan):
    return {l.ifname for l in plan.links if l.kind == "vxlan"}


def _vxlan_local_attr(local):
    """The attribute a vxlan device's source address is held in: IPv4's or IPv6's."""
    return "IFLA_VXLAN_LOCAL6" if ":" in local else "IFLA_VXLAN_LOCAL"


def _neigh_families(plan):
    """AF_INET, and AF_INET6 where the plan has an IPv6 neighbour or a vxlan device over IPv6
    (so that a remote node's stale IPv6 entry is found and removed)."""
    v6 = any(":" in n.dst for n in plan.neighs) or any(l.vxlan and ":" in l.vxlan.local for l in plan.links)
    return (socket.AF_INET, socket.AF_INET6) if v6 else (socket.AF_INET,)


def _name_of(index, idx):
    return index.names.get(idx)


def _families(plan):
    """The address families a plan's addresses and routes are in: IPv4, and IPv6 in a
    dual-stack namespace (an IPv4 lab's namespaces read back only what they always did)."""
    six = any(":" in a.cidr for a in plan.addrs) or any(":" in r.dst or ":" in (r.via or "") for r in plan.routes)
    return (socket.AF_INET, socket.AF_INET6) if six else (socket.AF_INET,)


def _route_family(dst, via):
    """A route's family: its destination's, or for `default` its gateway's (IPv4 without one)."""
    return socket.AF_INET6 if ":" in dst or ":" in (via or "") else socket.AF_INET


def _route_dst(dst, family):
    if dst != "default":
        return dst
    return "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"


def _need(netns, index, dev):
    if dev not in index:
        raise NetlabError(f"{netns}: device {dev} is missing")
    return index[dev]


def apply_all(plans, fresh=False):
    """Apply plans in order; returns the applier (writes, log)."""
    applier = NetlinkApplier()
    for plan in plans:
        applier.apply(plan, fresh)
    return applier
