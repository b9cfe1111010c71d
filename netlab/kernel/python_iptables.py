"""The second iptables applier: libiptc through python-iptables, on the legacy tables.

Fed by the same plan as the restore applier. It reads a table back with iptables-legacy-save
(the form the plan is written in), rewrites only the user chains that differ, makes the
same edits of built-in chains as the restore applier (our rules inserted or deleted by
number, every other rule left where it is), and commits each table once: libiptc replaces a
whole table in one call, so a change is atomic here too.
`ip netns exec NODE iptables-legacy-save` shows the result.
"""

import shutil

from netlab.errors import EnvironmentProblem, NetlabError
from netlab.kernel import netns as ns
from netlab.kernel.iptables_restore import current, split
from netlab.values.iptables import BUILTIN, changes

SAVE = "iptables-legacy-save"
_ADDRESS_FLAGS = {"-s": "src", "-d": "dst", "-p": "protocol", "-i": "in_interface", "-o": "out_interface"}


def _iptc():
    try:
        import iptc
    except Exception as e:   # the wrapper loads libxtables and libiptc when imported
        raise EnvironmentProblem(f"python-iptables cannot load libiptc/libxtables ({e}); "
                                 "run `make setup` or choose iptables.applier: iptables-restore") from None
    return iptc


def _rule_class(iptc):
    class Rule(iptc.Rule):
        # python-iptables looks a jump's chain up in every table it has cached, handles
        # opened in other namespaces included; iptables resolves it in the rule's own table.
        tables = property(lambda self: [self.chain.table])
    return Rule


def words(spec):
    """A rule's words as iptables-restore splits them (xtables' add_param_to_argv): at spaces
    outside double quotes; inside them a backslash takes the next character as it is, so
    iptables-save's `"the pod\\'s node"` is the comment "the pod's node" (shlex would keep the
    backslash)."""
    out, word, quoted, escaped, started = [], [], False, False, False
    for ch in spec:
        if quoted and escaped:
            word.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted, started = not quoted, True
        elif ch in " \t" and not quoted:
            if word or started:
                out.append("".join(word))
            word, started = [], False
        else:
            word.append(ch)
    if word or started:
        out.append("".join(word))
    return out


def build_rule(iptc, spec, chain):
    """An iptc.Rule from a rule spec as iptables-save prints it."""
    rule = _rule_class(iptc)(chain=chain)
    tokens = words(spec)
    module, invert, i = None, False, 0
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            invert = True
        elif token in _ADDRESS_FLAGS:
            i += 1
            setattr(rule, _ADDRESS_FLAGS[token], ("!" if invert else "") + tokens[i])
            invert = False
        elif token == "-m":
            i += 1
            module = rule.create_match(tokens[i])
        elif token == "-j":
            i += 1
            module = rule.create_target(tokens[i])
        elif token.startswith("--") and module is not None:
            # An option's words run to the next option: `--match-set NAME src` takes two.
            values = []
            while i + 1 < len(tokens) and not tokens[i + 1].startswith("-") and tokens[i + 1] != "!":
                values.append(tokens[i + 1])
                i += 1
            if len(values) > 1:
                module.parse(token[2:], (["!"] if invert else []) + values)
            else:
                module.parse(token[2:], ("!" if invert else "") + "".join(values))
            if any("'" in v for v in values):
                # python-iptables' final_check reads the module's options back through shlex,
                # which keeps the backslash iptables prints before an apostrophe ("pod\'s"):
                # for such a module only the extension's own check runs.
                module.final_check = module._final_check
            invert = False
        else:
            raise NetlabError(f"python-iptables applier: cannot read {token!r} in rule {spec!r}")
        i += 1
    return rule


class PythonIptablesApplier:
    def __init__(self):
        self.iptc = _iptc()
        if shutil.which(SAVE) is None:
            raise EnvironmentProblem(f"{SAVE} is not installed (run `make setup`)")
        self.writes = 0
        self.log = []

    def apply(self, netns, tables, fresh=False):
        """Read each table back and write what differs (a full resync)."""
        work = {}
        for table in tables.values():
            rewrite, edits, stale = changes(table, {} if fresh else current(netns, table.name, SAVE))
            if rewrite or edits or stale:
                # Every user chain must exist before a rule jumps to it: declare them all.
                declared = table.user_chains()
                work[table.name] = ({c: table.chains[c] for c in rewrite}, edits, stale, declared)
        self._commit(netns, work)

    def apply_changes(self, netns, work):
        """Write chains and remove stale ones without reading the user chains back (a partial sync)."""
        out = {}
        for name, (write, stale) in work.items():
            user, edits = split(netns, name, write, SAVE)
            if user or edits or stale:
                out[name] = (user, edits, stale, list(user))
        self._commit(netns, out)

    def _commit(self, netns, work):
        if not work:
            return
        with ns.entered(netns):
            for name, (write, edits, stale, declared) in work.items():
                try:
                    self._write(name, write, edits, stale, declared)
                except (self.iptc.IPTCError, self.iptc.XTablesError, ValueError) as e:
                    raise NetlabError(f"{netns}: python-iptables could not write table {name}: {e}") from None
        self.writes += 1
        self.log.append((netns, ([c for w, e, _, _ in work.values() for c in [*w, *e]],
                                 [c for _, _, s, _ in work.values() for c in s])))

    def _write(self, name, write, edits, stale, declared):
        iptc = self.iptc
        handle = iptc.Table(name, autocommit=False)
        handle.refresh()             # a fresh libiptc handle, opened in this namespace
        try:
            for chain in declared:
                if chain not in BUILTIN[name] and not handle.is_chain(chain):
                    handle.create_chain(chain)
            for chain in list(write) + list(stale):
                handle.flush_entries(chain)
            for chain, rules in write.items():
                target = iptc.Chain(handle, chain)
                for spec in rules:
                    target.append_rule(build_rule(iptc, spec, target))
            for chain, chain_edits in edits.items():
                target = iptc.Chain(handle, chain)
                for edit in chain_edits:
                    _edit(iptc, handle, target, edit)
            for chain in stale:
                handle.delete_chain(chain)
            handle.commit()
        finally:
            handle.close()


def _edit(iptc, handle, chain, edit):
    """One Edit on a built-in chain; libiptc numbers rules from 0, iptables from 1."""
    if edit.op == "-D":
        # python-iptables deletes a rule only by its match (the first equal one); `iptables
        # -D CHAIN NUM` is libiptc's delete_num_entry, so the rule is never parsed back.
        if handle._iptc.iptc_delete_num_entry(chain.name.encode(), edit.num - 1, handle._handle) != 1:
            raise iptc.IPTCError(f"can't delete rule {edit.num} from chain {chain.name}: {handle.strerror()}")
    elif edit.op == "-I":
        chain.insert_rule(build_rule(iptc, edit.rule, chain), edit.num - 1)
    else:
        chain.append_rule(build_rule(iptc, edit.rule, chain))


def usable():
    """Raise EnvironmentProblem unless libiptc can open the legacy nat table here."""
    iptc = _iptc()
    try:
        iptc.Table("nat", autocommit=False).refresh()
    except Exception as e:
        raise EnvironmentProblem(f"python-iptables cannot open the legacy nat table ({e}); "
                                 "the kernel may lack ip_tables: choose iptables.applier: iptables-restore") from None
