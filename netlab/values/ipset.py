"""ipsets as values: what kube-router's network policy controller keeps in a node's kernel
(its KUBE-SRC-/KUBE-DST- sets), in the words `ipset save` prints them and `ipset restore` reads.

A set is a name, a type (hash:ip for pod addresses, hash:net for ipBlocks) and its entries as
kube-router adds them ("10.244.1.2 timeout 0", "10.0.0.0/8 timeout 0 nomatch" for an except).
`restore_text` is kube-router's BuildIPSetRestore: each set is filled in a TMP- set of its type
and swapped into place, so a set that iptables rules match on is never seen half-written.
`changes` compares the plan with a node's sets read back by `parse_save`. Nothing here talks to
the kernel.

IPv6 sets (a dual-stack node's, kube-router's IPv6 handler's) are named with an "inet6:" prefix
(utils.IPSetName) and created with `family inet6` after the timeout (RefreshSet); each family is
restored with a call of its own, as kube-router runs one ipset handler per family.
"""

import base64
import hashlib
import ipaddress
from dataclasses import dataclass

# The sets of the agent netlab plays; one with these prefixes that no plan wants is stale.
OWNED_PREFIXES = ("KUBE-SRC-", "KUBE-DST-", "inet6:KUBE-SRC-", "inet6:KUBE-DST-")
TMP_PREFIX = "TMP-"            # kube-router's tmpIPSetPrefix: only there during a restore
INET6_PREFIX = "inet6:"        # utils.IPv6SetPrefix + ":", ipset's way to tell IPv6 sets apart


@dataclass(frozen=True)
class IPSet:
    name: str
    type: str                  # hash:ip | hash:net
    entries: tuple = ()        # "ADDRESS timeout 0" [+ " nomatch"], as `ipset save` prints them
    family: str = "inet"       # inet | inet6 (the IPv6 handler's sets)

    @property
    def options(self):
        """The create options kube-router gives every set (RefreshSet): entries never expire;
        the IPv6 handler's also `family inet6`."""
        return f"{self.type} timeout 0" + (" family inet6" if self.family == "inet6" else "")

    def members(self):
        """The entries as the kernel stores them: a network by its address and prefix (a /32
        of a hash:net prints as the bare address), with its flags."""
        return frozenset(_member(e) for e in self.entries)


def _member(entry):
    address, *flags = entry.split()
    net = ipaddress.ip_network(address, strict=False)
    host = net.prefixlen == net.max_prefixlen
    return (str(net.network_address) if host else str(net), " ".join(flags))


def tmp_set(options):
    """The temporary set of one set type: "TMP-" + base32(sha1("tmp:" + options)[:10])."""
    return TMP_PREFIX + base64.b32encode(hashlib.sha1(f"tmp:{options}".encode()).digest()[:10]).decode()


def restore_text(sets):
    """`ipset restore -exist` input writing `sets` whole, as kube-router writes them: in name
    order, each filled in its type's TMP set, created if missing, swapped into place; the TMP
    sets flushed after each swap and destroyed at the end."""
    out, tmps = [], {}
    for s in sorted(sets, key=lambda s: s.name):
        tmp = tmps.get(s.options)
        if tmp is None:
            tmp = tmps[s.options] = tmp_set(s.options)
            out += [f"create {tmp} {s.options}", f"flush {tmp}"]     # a crashed restore's leftover is emptied
        out += [f"add {tmp} {e}" for e in s.entries]
        out += [f"create {s.name} {s.options}", f"swap {tmp} {s.name}", f"flush {tmp}"]
    out += [f"destroy {tmp}" for tmp in sorted(tmps.values())]
    return "\n".join(out) + "\n" if out else ""


def by_family(sets):
    """`sets` split per family, inet first: what each of kube-router's handlers restores in a
    call of its own (a family with no set is left out)."""
    out = {}
    for s in sets:
        out.setdefault(s.family, []).append(s)
    return [out[f] for f in ("inet", "inet6") if f in out]


def family_of(name):
    """The family of a set by its name (kube-router's sets: inet6 when "inet6:"-prefixed)."""
    return "inet6" if name.startswith(INET6_PREFIX) else "inet"


def destroy_text(names):
    """`ipset restore` input destroying sets (each must be referenced by no rule any more)."""
    return "".join(f"destroy {n}\n" for n in names)


def parse_save(text):
    """{name: IPSet} from `ipset save`: the type, the family and the entries; the header's
    sizes and initval are the kernel's own and not compared."""
    sets = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "create":
            family = words[words.index("family") + 1] if "family" in words[3:-1] else "inet"
            sets[words[1]] = IPSet(words[1], words[2], family=family)
        elif len(words) >= 3 and words[0] == "add" and words[1] in sets:
            s = sets[words[1]]
            sets[s.name] = IPSet(s.name, s.type, s.entries + (" ".join(words[2:]),), s.family)
    return sets


def changes(planned, have):
    """What turns the sets `have` (read back, or last written) into `planned`: the sets to write
    (missing, of another type, or whose members differ) and the stale sets of ours to destroy
    once no rule matches on them. Another program's sets are left alone."""
    wanted = {s.name: s for s in planned}
    # The entries compared as written first: normalizing each (ipaddress) is the cost of a sync.
    write = [s for s in planned if s.name not in have or have[s.name].type != s.type or have[s.name].family != s.family
             or (set(have[s.name].entries) != set(s.entries) and have[s.name].members() != s.members())]
    stale = sorted(n for n in have if n.startswith(OWNED_PREFIXES) and n not in wanted)
    return write, stale
