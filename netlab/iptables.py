"""iptables rule sets as values, written the way `iptables-save` prints them.

A Table holds, per chain, the rules a component wants. Built-in chains (PREROUTING,
FORWARD, ...) receive hooks from several components, in the order real nodes show them.
"""

from dataclasses import dataclass, field

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
