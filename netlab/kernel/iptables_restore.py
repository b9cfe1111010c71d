"""Apply iptables Tables the way kube-proxy does: one `iptables-restore --noflush` per node.

The system's own iptables (nft or legacy, whichever `iptables` is) is used, so
`ip netns exec NODE iptables -S` shows the rules with no warning. Only chains whose rules
differ from the plan are written; stale chains of the components we own are flushed and
deleted; a node whose rules already match gets no write at all.
"""

import shutil

from netlab.errors import EnvironmentProblem, NetlabError
from netlab.kernel import netns as ns
from netlab.values.iptables import BUILTIN, changes


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
    return render(table.name, {c: table.chains.get(c, ()) for c in rewrite}, stale)


def render(table, write, stale):
    """Restore input writing whole chains and removing stale ones. Chain lines come first
    (they declare a user chain or flush one that exists; built-in chains are flushed with
    -F), so a jump never names a chain declared further down."""
    builtin = BUILTIN[table]
    lines = [f"-F {c}" if c in builtin else f":{c} - [0:0]" for c in write]
    lines += [f":{c} - [0:0]" for c in stale]
    for chain, rules in write.items():
        lines += [f"-A {chain} {r}" for r in rules]
    lines += [f"-X {c}" for c in stale]
    return f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n"


class RestoreApplier:
    def __init__(self, restore="iptables-restore", save="iptables-save"):
        for tool in (restore, save):
            if shutil.which(tool) is None:
                raise EnvironmentProblem(f"{tool} is not installed (run `make setup`)")
        self.restore, self.save = restore, save
        self.writes = 0
        self.log = []

    def apply(self, netns, tables, fresh=False):
        """Read each table back and write what differs from the plan (a full resync).
        `fresh`: the namespace was just created, its tables are empty: nothing to read."""
        work = {}
        for table in tables.values():
            rewrite, stale = changes(table, {} if fresh else current(netns, table.name, self.save))
            if rewrite or stale:
                work[table.name] = ({c: table.chains.get(c, ()) for c in rewrite}, stale)
        self.apply_changes(netns, work)

    def apply_changes(self, netns, work):
        """Write chains and remove stale ones without reading anything back (a partial sync):
        work is {table: ({chain: rules}, [stale chains])}."""
        text = "".join(render(t, write, stale) for t, (write, stale) in work.items() if write or stale)
        if not text:
            return
        out = ns.run(netns, [self.restore, "--noflush"], input=text, capture_output=True, text=True)
        if out.returncode != 0:
            raise NetlabError(f"{netns}: iptables-restore failed: {out.stderr.strip()}")
        self.writes += 1
        self.log.append((netns, _summary(work)))


def _summary(work):
    """Which chains a write touched, for the events: (written, deleted)."""
    written = [c for write, _ in work.values() for c in write]
    deleted = [c for _, stale in work.values() for c in stale]
    return written, deleted
