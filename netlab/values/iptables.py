"""iptables rule sets as values, written the way `iptables-save` prints them.

A Table holds, per chain, the rules a component wants. Built-in chains (PREROUTING,
FORWARD, ...) receive hooks from several components, in the order real nodes show them.
The user chains netlab's components own are written whole; the built-in chains are shared
with whoever else uses the node, so only our own rules in them are ensured or removed, the
way kube-proxy and flanneld ensure their jumps and leave every other rule alone.
"""

import re
from dataclasses import dataclass, field, replace

# Chains of the components netlab plays; a chain with one of these prefixes that no plan
# wants any more is stale and removed, as kube-proxy removes its own.
OWNED_PREFIXES = ("KUBE-", "FLANNEL-", "LB-")
# Comments our components put on their rules in built-in chains: kube-proxy's all start
# "kubernetes " ("kubernetes service portals", ...), flanneld's "flanneld " ("flanneld masq"),
# k3s's kube-router's ACCEPT "KUBE-ROUTER ".
OWNED_COMMENTS = ("kubernetes ", "flanneld ", "netlab ", "KUBE-ROUTER ")
# kube-router's jumps from INPUT, FORWARD and OUTPUT to its KUBE-ROUTER- chains carry this.
KUBE_ROUTER_COMMENT = "kube-router netpol"
# The faults' partition in the LAN namespace: a DROP between two bridge ports (observe/faults).

BUILTIN = {
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}


@dataclass(frozen=True)
class Table:
    name: str
    chains: dict = field(default_factory=dict)   # chain -> tuple of rule specs (without "-A CHAIN")

    def merged(self, other):
        chains = dict(self.chains)
        for chain, rules in other.chains.items():
            chains[chain] = chains.get(chain, ()) + tuple(rules)
        return Table(self.name, chains)

    def user_chains(self):
        return [c for c in self.chains if c not in BUILTIN[self.name]]

    def lines(self):
        """The rules as `iptables -t TABLE -S` prints them."""
        out = [f"-N {c}" for c in self.user_chains()]
        for chain, rules in self.chains.items():
            out += [f"-A {chain} {r}" for r in rules]
        return out


def restore_text(tables):
    """The whole plan as iptables-restore input (for --dry-run and full writes)."""
    out = []
    for t in tables.values():
        out.append(f"*{t.name}")
        out += [f":{c} - [0:0]" for c in t.user_chains()]
        for chain, rules in t.chains.items():
            out += [f"-A {chain} {r}" for r in rules]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def changes(table, have):
    """What turns `have` (chain -> rule specs, as read back) into the plan: the user chains
    whose rules differ, in the plan's order (written whole); the edits of each built-in chain
    whose rules of ours are not the plan's ({chain: [Edit]}); the stale owned chains to delete."""
    rewrite = [c for c in table.user_chains() if list(table.chains[c]) != have.get(c)]
    edits = builtin_changes(table.name, {c: table.chains.get(c, ()) for c in BUILTIN[table.name]}, have)
    stale = [c for c in have if c.startswith(OWNED_PREFIXES) and c not in table.chains]
    return rewrite, edits, stale


def builtin_changes(table_name, planned, have):
    """{chain: [Edit]} for the built-in chains of `planned` (chain -> our rules) that need any."""
    out = {c: builtin_edits(rules, have.get(c, [])) for c, rules in planned.items() if c in BUILTIN[table_name]}
    return {c: e for c, e in out.items() if e}


@dataclass(frozen=True)
class Edit:
    """One command on a built-in chain: `-D CHAIN NUM`, `-I CHAIN NUM RULE` or `-A CHAIN RULE`.
    Rule numbers count from 1, as iptables counts them, in the chain as it is when the edit
    runs (edits run in their order)."""
    op: str
    num: int = 0
    rule: str = ""

    def line(self, chain):
        """The edit as iptables(-restore) takes it."""
        return " ".join(str(w) for w in (self.op, chain, self.num or "", self.rule) if w != "")


# A jump's target and a comment, as iptables-save prints them: a comment is double-quoted,
# with \" and \\ escaped, when it holds anything but letters, digits, "_" and "-".
_TARGET = re.compile(r"(?:^| )-[jg] (\S+)")
_COMMENT = re.compile(r'(?:^| )--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))')


def _marks(rule):
    """The chains a rule jumps to and the comments it carries (a "-j" inside a comment is text)."""
    return _TARGET.findall(_COMMENT.sub(" ", rule)), [quoted or plain for quoted, plain in _COMMENT.findall(rule)]


def owned_rule(rule):
    """Whether a rule found in a built-in chain is one of netlab's components': it jumps to
    an owned chain, carries one of their comments, or is the faults' partition."""
    targets, comments = _marks(rule)
    return any(t.startswith(OWNED_PREFIXES) for t in targets) or any(c.startswith(OWNED_COMMENTS) for c in comments)


def _kube_proxy(rule):
    targets, comments = _marks(rule)
    return any(t.startswith("KUBE-") for t in targets) or any(c.startswith("kubernetes ") for c in comments)


def _kube_router(rule):
    return any(c.startswith(KUBE_ROUTER_COMMENT) for c in _marks(rule)[1])


def builtin_edits(planned, have):
    """The edits that put our rules `planned` into a built-in chain holding `have` (as read
    back), leaving every rule that is not ours where it is. Ours are the planned rules and
    any rule owned_rule() recognises; a stale one is deleted. Nothing is written while ours
    appear in the planned order, wherever the others' rules sit among them.

    kube-router's jump (its comment "kube-router netpol - <uuid>") is kept where kube-router
    keeps it, at position 1 exactly (ensureRuleAtPosition: inserted there when missing, moved
    there when anything else is first, the old copy deleted); the rest of the chain below it
    is kept as follows.

    kube-proxy's jumps (the planned rules' leading run that jumps to KUBE-) are kept the way
    kube-proxy keeps them: when one is missing or out of order, all of them are put back at
    the top, as `iptables -I` puts them. The rest (flanneld's, a balancer's, the faults') are
    kept the way flanneld keeps its own: when one is missing, all of them are appended again
    at the end, as `iptables -A` puts them. The others' rules keep their relative order."""
    first = next((r for r in planned if _kube_router(r)), None)
    if first is None:
        return _edits(list(planned), list(have))
    have = list(have)
    edits = [] if have[:1] == [first] else [Edit("-I", 1, first)]
    rest = _edits([r for r in planned if r != first], have if edits else have[1:])
    return edits + [replace(e, num=e.num + 1) if e.num else e for e in rest]


def _edits(planned, have):
    mine = set(planned)
    ours = [r for r in have if r in mine or owned_rule(r)]
    if ours == planned:
        return []
    k = next((i for i, r in enumerate(planned) if not _kube_proxy(r)), len(planned))
    head, tail = planned[:k], planned[k:]
    # (index in have, rule) for what stays; None for a rule written again.
    items = [(i, r) for i, r in enumerate(have) if r in mine or not owned_rule(r)]
    head_set, tail_set = set(head), set(tail)

    def group(rules):
        return [r for _, r in items if r in rules]

    def on_top():
        return [(None, r) for r in head] + [it for it in items if it[1] not in head_set]

    if group(head_set) != head:
        items = on_top()
    if group(tail_set) != tail:
        items = [it for it in items if it[1] not in tail_set] + [(None, r) for r in tail]
    if group(mine) != planned:               # each group in order, but a tail rule above a jump
        items = on_top()
    kept = {i for i, _ in items if i is not None}
    edits = [Edit("-D", i + 1) for i in reversed(range(len(have))) if i not in kept]
    length = len(kept)
    for pos, (i, rule) in enumerate(items, 1):
        if i is None:
            edits.append(Edit("-A", rule=rule) if pos > length else Edit("-I", pos, rule))
            length += 1
    return edits
