"""A node's ipsets, written the way kube-router writes them: one `ipset restore -exist` per
node, each set filled in a TMP set and swapped into place (values.ipset.restore_text), and the
stale ones destroyed in a call of their own, after the iptables write that stops matching on
them (the kernel refuses to destroy a set a rule still references).

Only sets whose members differ from what the node has are written: a full sync reads the node's
sets back (`ipset save`), a partial one compares the last plan with this one and reads nothing.
An unchanged node gets no ipset call that writes.

A dual-stack node's IPv6 sets ("inet6:" names, `family inet6`) are restored in a call of their
own after the IPv4 ones, as kube-router's IPv6 ipset handler restores them.
"""

import shutil

from netlab.errors import EnvironmentProblem, NetlabError
from netlab.kernel import netns as ns
from netlab.values.ipset import by_family, changes, destroy_text, parse_save, restore_text


def current(netns):
    """{name: IPSet} of every set in the namespace, as `ipset save` prints them."""
    out = ns.run(netns, ["ipset", "save"], capture_output=True, text=True)
    if out.returncode != 0:
        raise NetlabError(f"{netns}: ipset save: {out.stderr.strip() or f'exit {out.returncode}'}")
    return parse_save(out.stdout)


class IpsetApplier:
    def __init__(self):
        if shutil.which("ipset") is None:
            raise EnvironmentProblem("ipset is not installed: kube-router's network policy agent needs it; "
                                     "run `make setup` (scripts/provision.sh)")
        self.writes = 0                # ipset restore calls (writes and destroys)
        self.reads = 0
        self.log = []                  # (netns, sets written, sets destroyed)

    def sync(self, netns, planned, fresh=False):
        """A full sync's first half: read the node's sets back (nothing, when the namespace was
        just made) and write those that differ. Returns the stale sets, for `destroy` once the
        iptables rules no longer match on them."""
        have = {} if fresh else self._read(netns)
        write, stale = changes(planned, have)
        self.write(netns, write)
        return stale

    def _read(self, netns):
        self.reads += 1
        return current(netns)

    def write(self, netns, sets):
        """Write sets whole (created when missing), each swapped in at once; one restore per family."""
        for family in by_family(sets):
            self._restore(netns, restore_text(family), "write")
            self.log.append((netns, [s.name for s in family], []))

    def destroy(self, netns, names):
        if names:
            self._restore(netns, destroy_text(names), "destroy")
            self.log.append((netns, [], list(names)))

    def _restore(self, netns, text, what):
        out = ns.run(netns, ["ipset", "restore", "-exist"], input=text, capture_output=True, text=True)
        if out.returncode != 0:
            raise NetlabError(f"{netns}: ipset restore could not {what} kube-router's sets: {out.stderr.strip()}")
        self.writes += 1
