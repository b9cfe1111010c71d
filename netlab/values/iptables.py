"""iptables rule sets as values, written the way `iptables-save` prints them.

A Table holds, per chain, the rules a component wants. Built-in chains (PREROUTING,
FORWARD, ...) receive hooks from several components, in the order real nodes show them.
"""

from dataclasses import dataclass, field

# Chains of the components netlab plays; a chain with one of these prefixes that no plan
# wants any more is stale and removed, as kube-proxy removes its own.
OWNED_PREFIXES = ("KUBE-", "FLANNEL-", "LB-")

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
    """What turns `have` (chain -> rule specs, as read back) into the plan: the chains whose
    rules differ, in the plan's order, and the stale owned chains to delete."""
    rewrite = [c for c in table.user_chains() if list(table.chains[c]) != have.get(c)]
    rewrite += [c for c in BUILTIN[table.name] if list(table.chains.get(c, ())) != have.get(c, [])]
    stale = [c for c in have if c.startswith(OWNED_PREFIXES) and c not in table.chains]
    return rewrite, stale
