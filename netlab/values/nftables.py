"""nftables tables as values: what kube-proxy's nftables mode writes, in the words it writes
them (knftables' `nft -f` input), and what `nft list table` prints back.

A Table holds chains (base chains with their hook), sets and maps, and their elements. It
renders as kube-proxy's full-sync transaction (`script`), as knftables' dump (`dump`: one
`add` line per object, what kube-proxy's tests compare), and, normalized the way nft prints
rules back (`listed`), it compares with a node's table read back by `parse_listing`.
Nothing here talks to the kernel.
"""

import re
from dataclasses import dataclass, field

# nft's names for the standard priorities (family ip), as `nft list` prints a base chain's.
PRIORITY_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
# Which names nft prints for which hook (the rest stay numbers).
_PRINTED_NAMES = {"prerouting": ("raw", "mangle", "dstnat", "filter", "security"),
                  "postrouting": ("raw", "mangle", "filter", "security", "srcnat"),
                  "input": ("raw", "mangle", "filter", "security"),
                  "forward": ("raw", "mangle", "filter", "security"),
                  "output": ("raw", "mangle", "filter", "security")}


@dataclass(frozen=True)
class Hook:
    """A base chain's `type T hook H priority P`."""
    type: str
    hook: str
    priority: int

    def __str__(self):
        return f"type {self.type} hook {self.hook} priority {self.priority} ;"


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple = ()              # rule text as kube-proxy writes it
    hook: Hook | None = None
    comment: str | None = None


@dataclass(frozen=True)
class Set:
    """A set, or a map when `type` has a ` : ` (a verdict map: `... : verdict`)."""
    name: str
    type: str
    comment: str | None = None
    flags: tuple = ()              # ("dynamic", "timeout")
    timeout: int | None = None     # seconds

    @property
    def kind(self):
        return "map" if " : " in self.type else "set"


@dataclass(frozen=True)
class Element:
    set: str
    key: str                       # "172.30.0.41 . tcp . 80"
    value: str | None = None       # a map's: "goto service-…"
    comment: str | None = None


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    comment: str | None = None
    chains: dict = field(default_factory=dict)     # name -> Chain, in creation order
    sets: dict = field(default_factory=dict)       # name -> Set
    elements: tuple = ()                           # Element, in the order written

    @property
    def ref(self):
        return f"{self.family} {self.name}"

    def members(self, set_name):
        return [e for e in self.elements if e.set == set_name]


def _quote(text):
    return '"' + text.replace('"', '\\"') + '"'


def _set_spec(s):
    parts = [f"type {s.type} ;"]
    if s.flags:
        parts.append(f"flags {','.join(s.flags)} ;")
    if s.timeout is not None:
        parts.append(f"timeout {s.timeout}s ;")
    if s.comment:
        parts.append(f"comment {_quote(s.comment)} ;")
    return "{ " + " ".join(parts) + " }"


def _chain_spec(c):
    parts = ([str(c.hook)] if c.hook else []) + ([f"comment {_quote(c.comment)} ;"] if c.comment else [])
    return (" { " + " ".join(parts) + " }") if parts else ""


def element_text(e):
    """An element as `add element` takes it: `{ KEY [comment "C"] [: VALUE] }`."""
    return ("{ " + e.key + (f" comment {_quote(e.comment)}" if e.comment else "")
            + (f" : {e.value}" if e.value else "") + " }")


# --- what kube-proxy writes ------------------------------------------------------------------

def add_table(t):
    return f"add table {t.ref}" + (f" {{ comment {_quote(t.comment)} ; }}" if t.comment else "")


def add_chain(t, c):
    return f"add chain {t.ref} {c.name}{_chain_spec(c)}"


def add_set(t, s):
    return f"add {s.kind} {t.ref} {s.name} {_set_spec(s)}"


def add_rule(t, chain, rule):
    return f"add rule {t.ref} {chain} {rule}"


def add_element(t, e):
    return f"add element {t.ref} {e.set} {element_text(e)}"


def delete_element(t, e):
    """knftables deletes by key alone."""
    return f"delete element {t.ref} {e.set} {{ {e.key} }}"


def dump(t):
    """knftables' Fake.Dump of the table: every object as one `add` line (kube-proxy's tests
    compare these, ignoring the order of lines but not of a chain's rules)."""
    lines = [add_table(t)]
    lines += [add_chain(t, c) for c in t.chains.values()]
    lines += [add_rule(t, c.name, r) for c in t.chains.values() for r in c.rules]
    lines += [add_set(t, s) for s in t.sets.values()]
    lines += [add_element(t, e) for e in t.elements]
    return lines


def script(t):
    """kube-proxy's full sync: the table, every chain added and flushed, every set and map
    added and flushed, then every rule and element: one transaction that rebuilds it."""
    lines = [add_table(t)]
    for c in t.chains.values():
        lines += [add_chain(t, c), f"flush chain {t.ref} {c.name}"]
    for s in t.sets.values():
        lines += [add_set(t, s), f"flush {s.kind} {t.ref} {s.name}"]
    lines += [add_rule(t, c.name, r) for c in t.chains.values() for r in c.rules]
    lines += [add_element(t, e) for e in t.elements]
    return lines


# --- what `nft list` prints back -------------------------------------------------------------

_SINGLE_SET = re.compile(r"(!= |daddr |saddr )\{ ([^{},]+) \}")
_MARK_TEST = re.compile(r"^mark and (0x[0-9a-f]+|\d+) == (0x[0-9a-f]+|\d+) ")
_MARK_SET = re.compile(r"^mark set mark (or|xor|and) (0x[0-9a-f]+|\d+)$")
_MARK_OPS = {"or": "|", "xor": "^", "and": "&"}


def _hex32(number):
    return f"0x{int(number, 0):08x}"


def listed(rule):
    """A rule as `nft list` prints it back: marks as `meta mark` with 32-bit hex, a one-item
    anonymous set as its item, ` , ` between a map's items as `, `."""
    m = _MARK_TEST.match(rule)
    if m:
        rule = f"meta mark & {_hex32(m[1])} == {_hex32(m[2])} " + rule[m.end():]
    m = _MARK_SET.match(rule)
    if m:
        rule = f"meta mark set meta mark {_MARK_OPS[m[1]]} {_hex32(m[2])}"
    rule = _SINGLE_SET.sub(r"\1\2", rule)
    return rule.replace(" , ", ", ")


def duration(seconds):
    """A timeout as nft prints it: 10800 -> 3h, 90 -> 1m30s."""
    out, left = "", seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if left >= size:
            out += f"{left // size}{unit}"
            left %= size
    return out + (f"{left}s" if left or not out else "")


@dataclass(frozen=True)
class Listed:
    """A table as read back: {chain: (hook text or None, comment, [rules])}, {set: (spec
    lines)}, {set: {(key, comment): value}}; every text exactly as `nft list` prints it."""
    chains: dict
    sets: dict
    elements: dict


def listed_table(t):
    """The plan as `nft list table` would print it, in Listed's shape."""
    chains = {c.name: (_listed_hook(c.hook), c.comment, [listed(r) for r in c.rules]) for c in t.chains.values()}
    sets = {s.name: _listed_set(s) for s in t.sets.values()}
    elements = {s: {} for s in t.sets}
    for e in t.elements:
        elements[e.set][(e.key, e.comment)] = e.value
    return Listed(chains, sets, elements)


def _listed_hook(hook):
    if hook is None:
        return None
    # nft names a priority within 10 of a standard one valid for the hook ("dstnat - 10").
    near = [n for n in _PRINTED_NAMES[hook.hook] if abs(PRIORITY_NAMES[n] - hook.priority) <= 10]
    prio = str(hook.priority)
    if near:
        offset = hook.priority - PRIORITY_NAMES[near[0]]
        prio = near[0] + (f" {'+' if offset > 0 else '-'} {abs(offset)}" if offset else "")
    return f"type {hook.type} hook {hook.hook} priority {prio}; policy accept;"


def _listed_set(s):
    lines = [f"type {s.type}"]
    if "dynamic" in s.flags:
        lines.append("size 65535")                  # the kernel's default size for a dynamic set
    if s.flags:
        lines.append(f"flags {','.join(s.flags)}")
    if s.timeout is not None:
        lines.append(f"timeout {duration(s.timeout)}")
    if s.comment:
        lines.append(f"comment {_quote(s.comment)}")
    return tuple(lines)


_ELEMENT = re.compile(r'^(?P<key>.+?)(?: comment "(?P<comment>(?:[^"\\]|\\.)*)")?(?: : (?P<value>.+))?$')


def parse_listing(text):
    """`nft list table F NAME` as a Listed."""
    chains, sets, elements = {}, {}, {}
    lines = iter(text.splitlines())
    for line in lines:
        word = line.strip().split(" ", 2)
        if len(word) >= 2 and word[0] == "chain":
            chains[word[1]] = _parse_chain(lines)
        elif len(word) >= 2 and word[0] in ("set", "map"):
            sets[word[1]], elements[word[1]] = _parse_set(lines)
    return Listed(chains, sets, elements)


def _parse_chain(lines):
    hook, comment, rules = None, None, []
    for line in lines:
        text = line.strip()
        if text == "}":
            break
        if text.startswith("type ") and " hook " in text:
            hook = text
        elif text.startswith('comment "') and not rules:
            comment = text[len('comment "'):-1].replace('\\"', '"')
        elif text:
            rules.append(text)
    return hook, comment, rules


def _parse_set(lines):
    spec, members, in_elements, buffer = [], {}, False, ""
    for line in lines:
        text = line.strip()
        if not in_elements and text == "}":
            break
        if text.startswith("elements = {"):
            in_elements, text = True, text[len("elements = {"):]
        if in_elements:
            buffer += " " + text
            if buffer.rstrip().endswith("}"):
                in_elements = False
                for item in _split_elements(buffer.rstrip()[:-1]):
                    m = _ELEMENT.match(item)
                    members[(m["key"], m["comment"].replace('\\"', '"') if m["comment"] else None)] = m["value"]
        elif text:
            spec.append(text)
    return tuple(spec), members


def _split_elements(text):
    """Split `a, b comment "x, y" : goto c, d` at the commas outside quotes."""
    items, current, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        items.append(current.strip())
    return items
