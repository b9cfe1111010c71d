"""Root qdiscs, as a fault sets them: netem (loss, delay) and tbf (a rate). Read through netlink
(the kinds of every device's root qdisc, one dump), their options through `tc -j` only where one
of ours is or should be, written with `tc qdisc replace` and `tc qdisc del`."""

import json
import subprocess

from netlab.errors import NetlabError

TC_H_ROOT = 0xFFFFFFFF
FAULT_KINDS = ("netem", "tbf")          # in a lab's namespace, a root qdisc of these kinds is a fault's
UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}


def root_kinds(ipr, names_by_index):
    """{device: the kind of its root qdisc}."""
    return {names_by_index.get(q["index"]): q.get_attr("TCA_KIND") for q in ipr.get_qdiscs()
            if q["parent"] == TC_H_ROOT}


def rate_bytes(rate):
    """tc's rate ("10mbit") in bytes per second, as `tc -j` reports it."""
    unit = next(u for u in sorted(UNITS, key=len, reverse=True) if rate.endswith(u))
    return round(float(rate[:-len(unit)]) * UNITS[unit] / 8)


def _tc(netns, args):
    out = subprocess.run(["tc", "-n", netns, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise NetlabError(f"{netns}: tc {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def matches(netns, qdisc):
    """Whether the device's root qdisc is `qdisc` (kind and settings)."""
    shown = json.loads(_tc(netns, ["-j", "qdisc", "show", "dev", qdisc.dev]) or "[]")
    root = next((q for q in shown if q.get("root")), {})
    options = root.get("options", {})
    if root.get("kind") != qdisc.kind:
        return False
    if qdisc.kind == "tbf":
        return abs(options.get("rate", 0) - rate_bytes(qdisc.rate)) <= 1
    loss = options.get("loss-random", {}).get("loss", 0) * 100
    delay = options.get("delay", {}).get("delay", 0) * 1000
    return abs(loss - qdisc.loss) < 0.01 and abs(delay - qdisc.delay) < 0.01


def replace(netns, qdisc):
    _tc(netns, ["qdisc", "replace", *str(qdisc).split()])


def delete(netns, dev):
    _tc(netns, ["qdisc", "del", "dev", dev, "root"])
