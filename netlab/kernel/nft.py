"""Apply nftables tables the way kube-proxy's nftables mode does (through knftables): one
`nft -f -` transaction per node and sync, atomic, written with the system's own `nft`.

Three ways in: a fresh namespace gets kube-proxy's full-sync transaction (`full`); a full
resync reads the table back and writes only what differs (`resync`), so an unchanged table
gets no transaction at all; a partial sync writes what the planner says changed (`partial`),
without reading anything back. Chains no plan wants any more are flushed at once and
deleted by a later sync, a second or more after the flush, as kube-proxy does: an older
kernel may still hold a reference to a chain for a moment after the map element that
pointed at it is gone.
"""

import shutil
import time

from netlab.errors import EnvironmentProblem, NetlabError
from netlab.kernel import netns as ns
from netlab.values import nftables as nft

STALE_CHAIN_DELAY = 1.0            # seconds between flushing a stale chain and deleting it


def available():
    return shutil.which("nft") is not None


def list_table(netns, family, name):
    """`nft list table FAMILY NAME` in a namespace; None when there is no such table."""
    out = ns.run(netns, ["nft", "list", "table", family, name], capture_output=True, text=True)
    if out.returncode != 0:
        if "No such file or directory" in out.stderr:
            return None
        raise NetlabError(f"{netns}: nft list table {family} {name}: {out.stderr.strip()}")
    return out.stdout


def delete_table(netns, family, name):
    """Remove a table if it is there (kube-proxy's --cleanup of the other mode). True if it was."""
    if list_table(netns, family, name) is None:
        return False
    run(netns, [f"delete table {family} {name}"])
    return True


def run(netns, lines):
    """One `nft -f -` transaction."""
    out = ns.run(netns, ["nft", "-f", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if out.returncode != 0:
        raise NetlabError(f"{netns}: nft -f failed: {out.stderr.strip() or f'exit {out.returncode}'}")


class NftApplier:
    """Writes tables and counts what it wrote: `writes` transactions, `operations` lines in
    them; `log` holds (netns, (chains written, chains deleted, operations), table ref) for
    the events. A dual-stack node has two tables, `ip kube-proxy` and `ip6 kube-proxy`,
    each written in transactions of its own, as each family's proxier writes its own."""

    def __init__(self):
        if not available():
            raise EnvironmentProblem("nft is not installed (run `make setup`): kube-proxy's nftables mode needs it")
        self.writes = 0
        self.operations = 0
        self.log = []

    def full(self, netns, table):
        """kube-proxy's full sync: the whole table rebuilt in one transaction."""
        self._write(netns, table, nft.script(table), list(table.chains), [])

    def resync(self, netns, table, stale=None):
        """Read the table back and write what differs from the plan; rebuild it when its
        layout (a base chain's hook, a fixed set's type) is not the plan's. `stale`: {chain:
        when it was flushed}, updated in place. Returns the operations written."""
        stale = {} if stale is None else stale
        self._delete_stale(netns, table, stale, keep=table.chains)
        text = list_table(netns, table.family, table.name)
        if text is None:
            return self._write(netns, table, nft.script(table), list(table.chains), [])
        have, want = nft.parse_listing(text), nft.listed_table(table)
        if any(have.sets.get(s) not in (None, spec) for s, spec in want.sets.items() if not _dynamic(table, s)) or any(
                c in have.chains and have.chains[c][0] != want.chains[c][0] for c in want.chains):
            return self._write(netns, table, [f"delete table {table.ref}", *nft.script(table)], list(table.chains), [])
        written = [name for name in table.chains if have.chains.get(name, (0, 0, None))[2] != want.chains[name][2]]
        # Adding a set again sets its timeout: an affinity set whose timeout changed is re-added.
        lines = [nft.add_set(table, s) for name, s in table.sets.items() if have.sets.get(name) != want.sets[name]]
        lines += _chain_writes(table, {name: table.chains[name] for name in written}, have.chains)
        lines += _element_changes(table, _static(table, have.elements), want.elements)
        gone = [c for c in have.chains if c not in table.chains]
        lines += self._flush_stale(table, [c for c in gone if have.chains[c][2]], stale)
        for chain in gone:                       # empty already: deleted by a sync a second from now
            stale.setdefault(chain, time.time())
        lines += [f"delete set {table.ref} {s}" for s in have.sets if s not in table.sets]
        return self._write(netns, table, lines, written, [])

    def partial(self, netns, table, pairs, live_cluster_ips, stale=None):
        """kube-proxy's partial sync from the planner's (before, after) blocks of the ports
        that changed: every chain and affinity set of a changed port written again (add,
        flush, rules), map elements added, replaced or deleted by key, affinity sets of gone
        endpoints deleted at once, chains of gone ports flushed now and deleted later.
        `live_cluster_ips`: the ClusterIPs of every Service kube-proxy proxies. Returns the
        operations written."""
        stale = {} if stale is None else stale
        chains = {c.name: c for _, after in pairs for c in (after.chains.values() if after else ())}
        self._delete_stale(netns, table, stale, keep=chains)
        sets = {s.name: s for _, after in pairs for s in (after.sets.values() if after else ())}
        flush, gone_sets, want_elements, had_elements = [], [], {}, {}
        for before, after in pairs:
            flush += [c for c in (before.chains if before else {}) if c not in chains]
            gone_sets += [s for s in (before.sets if before else {}) if s not in sets]
            for block, into in ((before, had_elements), (after, want_elements)):
                for e in block.elements if block else ():
                    into.setdefault(e.set, {})[(e.key, e.comment)] = e.value
        # A ClusterIP is one element of cluster-ips for all of a Service's ports.
        cluster_ips = had_elements.get("cluster-ips", {})
        for key in [k for k in cluster_ips if k[0] in live_cluster_ips]:
            want_elements.setdefault("cluster-ips", {})[key] = cluster_ips[key]
        lines = [nft.add_set(table, s) for s in sets.values()] + _chain_writes(table, chains, {})
        lines += _element_changes(table, had_elements, want_elements)
        lines += self._flush_stale(table, flush, stale)
        lines += [f"delete set {table.ref} {s}" for s in gone_sets]
        return self._write(netns, table, lines, list(chains), [])

    def _flush_stale(self, table, chains, stale):
        """Flush chains no plan wants and remember when, for a later sync to delete them."""
        now = time.time()
        for chain in chains:
            stale[chain] = now
        return [f"flush chain {table.ref} {chain}" for chain in chains]

    def _delete_stale(self, netns, table, stale, keep):
        """kube-proxy's first step of a sync: the chains flushed more than a second ago and
        still unwanted are deleted, in a transaction of their own. If the kernel refuses (an
        older kernel may hold a chain for a moment after the last reference went), they stay
        remembered and the next sync tries again; the sync itself goes on."""
        now = time.time()
        for chain in [c for c in stale if c in keep]:
            del stale[chain]                     # wanted again: written by this sync
        due = [c for c, at in stale.items() if now - at > STALE_CHAIN_DELAY]
        if not due:
            return
        try:
            self._write(netns, table, [f"delete chain {table.ref} {c}" for c in due], [], due)
        except NetlabError:
            return
        for chain in due:
            del stale[chain]

    def _write(self, netns, table, lines, written, deleted):
        if not lines:
            return 0
        run(netns, lines)
        self.writes += 1
        self.operations += len(lines)
        self.log.append((netns, (written, deleted, len(lines)), table.ref))
        return len(lines)


def _chain_writes(table, chains, have):
    """Chains written whole, as knftables orders a transaction's objects: every chain added
    (and flushed, when it may hold rules) before any rule, so a rule may name any of them."""
    lines = [nft.add_chain(table, c) for name, c in chains.items() if name not in have or not have[name][2]]
    lines += [f"flush chain {table.ref} {name}" for name in chains if name not in have or have[name][2]]
    return lines + [nft.add_rule(table, name, r) for name, c in chains.items() for r in c.rules]


def _dynamic(table, set_name):
    return "dynamic" in getattr(table.sets.get(set_name), "flags", ())


def _static(table, elements):
    """The elements kube-proxy writes: a dynamic set's (affinity-) are the packets' own."""
    return {s: e for s, e in elements.items() if not _dynamic(table, s)}


def _element_changes(table, have, want):
    """Delete the elements whose key went or whose value changed; add the new and changed.
    have, want: {set: {(key, comment): value}}."""
    deletes, adds = [], []
    for set_name in dict.fromkeys([*have, *want]):
        old, new = have.get(set_name, {}), want.get(set_name, {})
        old_by_key = {k: (c, v) for (k, c), v in old.items()}
        new_by_key = {k: (c, v) for (k, c), v in new.items()}
        for key, was in old_by_key.items():
            if new_by_key.get(key) != was:
                deletes.append(nft.delete_element(table, nft.Element(set_name, key)))
        for key, (comment, value) in new_by_key.items():
            if old_by_key.get(key) != (comment, value):
                adds.append(nft.add_element(table, nft.Element(set_name, key, value, comment)))
    return deletes + adds
