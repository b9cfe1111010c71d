"""Faults a person asks for: a node cut off, a link down, two nodes partitioned, loss and
delay. They are part of the lab's state, so every convergence (reconcile included) keeps
them, and `netlab fault clear` is a change like any other that takes them away.

  node-down NODE         the node's port on the LAN switch goes down: the machine is gone
                         from the network (its own interfaces and routes stay as they are)
  link-down NODE|POD     a node: the same; a pod: its veth on the node goes down
  partition NODE NODE    the LAN switch drops what the two nodes send each other (VXLAN
                         included), with bridge netfilter in the LAN namespace
  loss|delay TARGET V    netem on the target's LAN port or veth (what is sent to it), where
                         the kernel has netem; without it a node's loss is an iptables
                         statistic rule on its LAN port (delay has no such stand-in)
  bandwidth TARGET RATE  tbf on the same device: what is sent to the target, at RATE (10mbit)

`--for SECONDS` makes a fault clear itself: it records when it ends, and the controller
manager (a lab process) clears it then, as a command would.

A node is named in full or without the lab's prefix, and recorded in full. The same fault
twice is refused (a partition is the same either way round; loss and delay are one setting
per target), and `fault clear KIND TARGET...` clears only the fault it names.
"""

import dataclasses
import functools
import re
import time

from netlab import names
from netlab.api import spec
from netlab.errors import EnvironmentProblem, NetlabError
from netlab.values.desired import Qdisc
from netlab.values.iptables import Table

PARTITION_COMMENT = "netlab partition"      # how the appliers know these rules are the lab's own
LOSS_COMMENT = "netlab loss"
KINDS = ("node-down", "link-down", "partition", "loss", "delay", "bandwidth")
SHAPED = ("loss", "delay", "bandwidth")                 # one value per target, set on one device
RATE = re.compile(r"^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit)$")


def check(state, kind, targets, seconds=None):
    """The fault as it will be recorded (nodes by their full name, pods as NAMESPACE/NAME, how a
    loss is made, when it ends), or a clear error: an unknown target, a partition of a node with
    itself, a fault that is already injected, one this kernel cannot make."""
    fault = _parse(state, kind, targets)
    same = next((f for f in state.faults if _identity(f) == _identity(fault)), None)
    if same is not None:
        raise NetlabError(f"fault {' '.join([same['kind'], *same['targets']])} is already injected "
                          f"(`netlab fault clear {' '.join([same['kind'], *same['targets']])}` removes it)")
    if kind in ("loss", "delay"):
        if qdisc_available("netem"):
            fault["by"] = "netem"
        elif kind == "loss" and state.find_node(fault["targets"][0]) is not None:
            fault["by"] = "statistic"       # iptables' statistic match on the node's LAN port
        else:
            raise EnvironmentProblem(f"this kernel has no netem (sch_netem): {kind} cannot be emulated on "
                                     f"{'a pod' if kind == 'loss' else 'anything'} here; a node's loss (an iptables "
                                     f"statistic rule), bandwidth, node-down, link-down and partition can")
    if kind == "bandwidth" and not qdisc_available("tbf"):
        raise EnvironmentProblem("this kernel has no tbf (sch_tbf): bandwidth cannot be limited here")
    device = _device(state, fault)
    for other in state.faults:
        if other["kind"] in SHAPED and _device(state, other) == device and \
                {_qdisc_kind(other), _qdisc_kind(fault)} == {"netem", "tbf"}:
            raise NetlabError(f"{fault['targets'][0]} has {other['kind']} already, and a device has one root qdisc: "
                              f"clear it first (`netlab fault clear {other['kind']} {' '.join(other['targets'])}`)")
    if seconds is not None:
        if seconds <= 0:
            raise NetlabError(f"--for {seconds:g}: a fault lasts a positive number of seconds")
        fault["until"] = round(time.time() + seconds, 3)
    return fault


def _qdisc_kind(fault):
    return "tbf" if fault["kind"] == "bandwidth" else ("netem" if fault.get("by") == "netem" else None)


def named(state, words):
    """The recorded fault that `words` (KIND TARGET..., as `netlab fault list` prints it) names,
    as a list of one, for `fault clear KIND TARGET...`."""
    if words[0] not in KINDS:
        raise NetlabError(f"{words[0]!r} is not a fault: `fault clear` takes nothing (every fault goes) or one "
                          f"fault as `netlab fault list` prints it ({', '.join(KINDS)} and its targets)")
    wanted = _identity(_parse(state, words[0], words[1:]))
    found = [f for f in state.faults if _identity(f) == wanted]
    if not found:
        raise NetlabError(f"no fault {' '.join(words)} is injected (see `netlab fault list`)")
    return found


def _parse(state, kind, targets):
    if kind not in KINDS:
        raise NetlabError(f"unknown fault {kind!r} (known: {', '.join(KINDS)})")
    wanted = {"partition": 2, "loss": 2, "delay": 2, "bandwidth": 2}.get(kind, 1)
    if len(targets) != wanted:
        raise NetlabError(f"fault {kind} takes {wanted} argument{'s' * (wanted > 1)}")
    objects = targets[:1] if kind in SHAPED else targets
    recorded = [_target(state, kind, t) for t in objects]
    if kind == "partition" and recorded[0] == recorded[1]:
        raise NetlabError(f"fault partition takes two different nodes, not {recorded[0]} twice")
    if kind == "bandwidth":
        if not RATE.match(targets[1]):
            raise NetlabError(f"bandwidth takes a rate as tc writes it (10mbit, 500kbit, 1gbit), not {targets[1]!r}")
        recorded.append(targets[1])
    elif kind in ("loss", "delay"):
        try:
            value = float(targets[1])
        except ValueError:
            raise NetlabError(f"{kind} takes a number ({'percent' if kind == 'loss' else 'milliseconds'})") from None
        if value < 0 or (kind == "loss" and value > 100):
            raise NetlabError(f"{kind} {value} is out of range")
        recorded.append(targets[1])
    return {"kind": kind, "targets": recorded}


def _target(state, kind, target):
    """A target's recorded name: a node's full name (it may be given without the lab's
    prefix), or a pod's NAMESPACE/NAME."""
    node = state.find_node(target)
    if node is not None:
        return node.name
    nodes_only = kind in ("node-down", "partition")
    pod = None if nodes_only else _pod(state, target)
    if pod is None:
        raise NetlabError(f"lab {state.lab}: no {'node' if nodes_only else 'node or pod'} {target!r}")
    return pod.key


def _identity(fault):
    """What makes two faults the same: a partition is the same either way round; loss, delay and
    bandwidth are one setting per target, whatever the value (or how long it lasts)."""
    kind, targets = fault["kind"], fault["targets"]
    return kind, frozenset(targets) if kind == "partition" else targets[0]


def _pod(state, target):
    namespace, _, name = target.rpartition("/")
    return next((p for p in state.pods if p.name == name and p.namespace == (namespace or "default")), None)


def netem_available():
    return qdisc_available("netem")


@functools.lru_cache(maxsize=None)
def qdisc_available(kind):
    """Whether a root qdisc of `kind` (netem, tbf) can be attached here: tried on lo of a scratch namespace."""
    import os

    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    from netlab.kernel import netns as ns
    name = f"netlab.netem.{os.getpid()}"
    ns.create(name)
    try:
        with ns.entered(name):
            ipr = IPRoute()
        with ipr:
            try:
                options = dict(delay=1000) if kind == "netem" else dict(rate="1mbit", burst=32768, latency=50000)
                ipr.tc("add", kind, ipr.link_lookup(ifname="lo")[0], **options)
                return True
            except NetlinkError:
                return False
    finally:
        ns.delete(name)


def _partition(state, one, other):
    """The LAN's drops between two nodes: what one's port bridges to the other's, and across
    segments (the LAN's router forwards it, so no bridge port sends it out: physdev-out does not
    match) what one's port brings in for the other's address."""
    a, b = (names.lan_port(state.lab, t) for t in (one, other))
    comment = f'-m comment --comment "{PARTITION_COMMENT}" -j DROP'
    if spec.segment_of(state.cluster, one) == spec.segment_of(state.cluster, other):
        return [f"-m physdev --physdev-in {x} --physdev-out {y} {comment}" for x, y in ((a, b), (b, a))]
    ips = {n.name: n.ip for n in state.nodes}
    return [f"-d {ips[y]}/32 -m physdev --physdev-in {x} {comment}" for x, y in ((a, other), (b, one))]


def _device(state, fault):
    """(netns, device) a shaping fault sets its qdisc on: a node's port on the LAN, a pod's veth
    on its node; what is sent to the target goes through it."""
    node = state.find_node(fault["targets"][0])
    if node is not None:
        return state.lan_netns(), names.lan_port(state.lab, node.name)
    pod = _pod(state, fault["targets"][0])
    return (pod.node, pod.host_veth) if pod is not None and pod.node else (None, None)


def _probability(percent):
    """--probability as iptables-save prints it: libxt_statistic keeps lround(p * 2^31)."""
    return f"{round(float(percent) / 100 * 0x80000000) / 0x80000000:.11f}"


def qdiscs(state):
    """{netns: {device: Qdisc}} of the shaping faults: netem with the loss and delay of a
    target, tbf with its rate."""
    out = {}
    for f in state.faults:
        if f["kind"] not in SHAPED or _qdisc_kind(f) is None:
            continue
        netns, dev = _device(state, f)
        if netns is None:
            continue
        have = out.setdefault(netns, {}).get(dev) or Qdisc(dev, _qdisc_kind(f))
        value = f["targets"][1]
        have = dataclasses.replace(have, **{"loss": float(value)} if f["kind"] == "loss" else
                                   {"delay": float(value)} if f["kind"] == "delay" else {"rate": value})
        out[netns][dev] = have
    return out


def adjust(state, plans):
    """The plans with the recorded faults in them. The LAN's and every node's plan say which
    qdiscs they hold (none but the faults'), so a cleared fault's goes."""
    down = {}                                   # netns -> link names held down
    drops = []
    shaped = qdiscs(state)
    shaping = {state.lan_netns()} | {n.netns for n in state.nodes}
    for f in state.faults:
        kind, targets = f["kind"], f["targets"]
        if kind in ("node-down", "link-down") and targets[0] in {n.name for n in state.nodes}:
            down.setdefault(state.lan_netns(), set()).add(names.lan_port(state.lab, targets[0]))
        elif kind == "link-down":
            pod = _pod(state, targets[0])
            if pod is not None:
                down.setdefault(pod.node, set()).add(pod.host_veth)
        elif kind == "partition":
            drops += _partition(state, *targets)
        elif kind == "loss" and f.get("by") == "statistic":
            port = names.lan_port(state.lab, targets[0])
            drops.append(f"-m physdev --physdev-out {port} -m statistic --mode random --probability "
                         f"{_probability(targets[1])} -m comment --comment \"{LOSS_COMMENT}\" -j DROP")
    out = []
    for p in plans:
        if p.netns in down:
            p = dataclasses.replace(p, links=tuple(dataclasses.replace(l, up=False) if l.ifname in down[p.netns] else l
                                                   for l in p.links))
        if p.netns in shaping:
            p = dataclasses.replace(p, qdiscs=tuple(shaped.get(p.netns, {}).values()))
        if p.netns == state.lan_netns():
            # Always a filter table, so the partition's rules go when the fault does.
            p = dataclasses.replace(p, iptables={"filter": Table("filter", {"FORWARD": tuple(drops)})},
                                    sysctls=p.sysctls + ((("net/bridge/bridge-nf-call-iptables", "1"),) if drops else ()))
        out.append(p)
    return out
