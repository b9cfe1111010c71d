"""Apply iptables Tables the way kube-proxy does: one `iptables-restore --noflush` per node.

The system's own iptables (nft or legacy, whichever `iptables` is) is used, so
`ip netns exec NODE iptables -S` shows the rules with no warning. Only chains whose rules
differ from the plan are written; stale chains of the components we own are flushed and
deleted; a node whose rules already match gets no write at all. Built-in chains are shared
with the person using the node: only our rules in them are inserted or deleted, by number
(values.iptables.builtin_edits decides which), and every other rule stays where it is.
"""

import shutil

from netlab.errors import EnvironmentProblem, NetlabError
from netlab.kernel import netns as ns
from netlab.values.iptables import BUILTIN, builtin_changes, changes


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
    rewrite, edits, stale = changes(table, have)
    if not rewrite and not edits and not stale:
        return None
    return render(table.name, {c: table.chains[c] for c in rewrite}, stale, edits)


def render(table, write, stale, edits=None):
    """Restore input writing whole user chains, editing built-in ones and removing stale
    chains. Chain lines come first (they declare a user chain or flush one that exists), so
    a jump never names a chain declared further down; a stale chain is deleted last, once
    the edits have removed the jumps to it."""
    lines = [f":{c} - [0:0]" for c in write]
    lines += [f":{c} - [0:0]" for c in stale]
    for chain, rules in write.items():
        lines += [f"-A {chain} {r}" for r in rules]
    for chain, chain_edits in (edits or {}).items():
        lines += [e.line(chain) for e in chain_edits]
    lines += [f"-X {c}" for c in stale]
    return f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n"


def split(netns, name, write, save):
    """A partial sync's chains to write as (user chains, edits of built-in ones): a built-in
    chain is shared, so it is read back and only our rules in it are changed."""
    builtin = {c: r for c, r in write.items() if c in BUILTIN[name]}
    user = {c: r for c, r in write.items() if c not in builtin}
    return user, builtin_changes(name, builtin, current(netns, name, save)) if builtin else {}


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
            rewrite, edits, stale = changes(table, {} if fresh else current(netns, table.name, self.save))
            if rewrite or edits or stale:
                work[table.name] = ({c: table.chains[c] for c in rewrite}, edits, stale)
        self._write(netns, work)

    def apply_changes(self, netns, work):
        """Write chains and remove stale ones without reading the user chains back (a partial
        sync): work is {table: ({chain: rules}, [stale chains])}."""
        out = {}
        for name, (write, stale) in work.items():
            user, edits = split(netns, name, write, self.save)
            if user or edits or stale:
                out[name] = (user, edits, stale)
        self._write(netns, out)

    def _write(self, netns, work):
        """work: {table: ({user chain: rules}, {built-in chain: [Edit]}, [stale chains])}."""
        text = "".join(render(t, write, stale, edits) for t, (write, edits, stale) in work.items())
        if not text:
            return
        out = ns.run(netns, [self.restore, "--noflush"], input=text, capture_output=True, text=True)
        if out.returncode != 0:
            raise NetlabError(f"{netns}: {self.restore} failed: {out.stderr.strip()}")
        self.writes += 1
        self.log.append((netns, _summary(work)))


def _summary(work):
    """Which chains a write touched, for the events: (written, deleted)."""
    written = [c for write, edits, _ in work.values() for c in [*write, *edits]]
    deleted = [c for _, _, stale in work.values() for c in stale]
    return written, deleted
