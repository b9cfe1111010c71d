"""Apply iptables Tables the way kube-proxy does: one `iptables-restore --noflush` per node.

The system's own iptables (nft or legacy, whichever `iptables` is) is used, so
`ip netns exec NODE iptables -S` shows the rules with no warning. Only chains whose rules
differ from the plan are written; stale chains of the components we own are flushed and
deleted; a node whose rules already match gets no write at all.
"""

import shutil

from netlab.errors import EnvironmentProblem, NetlabError
from netlab.iptables import BUILTIN, changes
from netlab.kernel import netns as ns


def current(netns, table, binary="iptables-save"):
    """chain -> list of rule specs, as iptables-save prints them."""
    out = ns.run(netns, [binary, "-t", table], capture_output=True, text=True)
    if out.returncode != 0:
        raise NetlabError(f"{netns}: {binary} -t {table}: {out.stderr.strip()}")
    return parse_save(out.stdout)


def parse_save(text):
    chains = {}
    for line in text.splitlines():
        if line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            chain, _, rule = line[3:].partition(" ")
            chains.setdefault(chain, []).append(rule)
    return chains


def diff(table, have):
    """The restore input that turns `have` into the plan, or None when they already match."""
    rewrite, stale = changes(table, have)
    if not rewrite and not stale:
        return None
    # Chain lines first (they declare a user chain, or flush one that exists; built-in
    # chains are flushed with -F), so a jump never names a chain declared further down.
    builtin = BUILTIN[table.name]
    lines = [f"-F {c}" if c in builtin else f":{c} - [0:0]" for c in rewrite]
    lines += [f":{c} - [0:0]" for c in stale]
    for chain in rewrite:
        lines += [f"-A {chain} {r}" for r in table.chains.get(chain, ())]
    lines += [f"-X {c}" for c in stale]
    return f"*{table.name}\n" + "\n".join(lines) + "\nCOMMIT\n"


class RestoreApplier:
    def __init__(self, restore="iptables-restore", save="iptables-save"):
        for tool in (restore, save):
            if shutil.which(tool) is None:
                raise EnvironmentProblem(f"{tool} is not installed (run `make setup`)")
        self.restore, self.save = restore, save
        self.writes = 0
        self.log = []

    def apply(self, netns, tables, fresh=False):
        """`fresh`: the namespace was just created, its tables are empty: nothing to read."""
        text = ""
        for table in tables.values():
            change = diff(table, {} if fresh else current(netns, table.name, self.save))
            if change:
                text += change
        if not text:
            return
        out = ns.run(netns, [self.restore, "--noflush"], input=text, capture_output=True, text=True)
        if out.returncode != 0:
            raise NetlabError(f"{netns}: iptables-restore failed: {out.stderr.strip()}")
        self.writes += 1
        self.log.append((netns, f"iptables-restore ({text.count(chr(10))} lines)"))
