"""The lab's iptables backend, chosen in the Lab document: which applier writes the rules and
which tool reads them back. Every writer and every reader of a lab goes through here, so a
python-iptables lab (the legacy tables, through libiptc) never grows a second rule set in
the nf_tables ones, and trace, graph and `netlab iptables` see what its agents wrote.
"""

from netlab.errors import NetlabError
from netlab.kernel import netns as ns

SAVE_TOOL = {"iptables-restore": "iptables-save", "python-iptables": "iptables-legacy-save"}
SAVE_TOOL6 = {"iptables-restore": "ip6tables-save"}     # a dual-stack lab's IPv6 rules (spec refuses python-iptables)


def applier(backend, family="IPv4"):
    """A fresh applier for the backend ("iptables-restore" or "python-iptables") and family:
    IPv6's rules go through ip6tables-restore, as each family's proxier writes its own."""
    if family == "IPv6":
        from netlab.kernel.iptables_restore import RestoreApplier
        return RestoreApplier("ip6tables-restore", "ip6tables-save")
    if backend == "python-iptables":
        from netlab.kernel.python_iptables import PythonIptablesApplier
        return PythonIptablesApplier()
    from netlab.kernel.iptables_restore import RestoreApplier
    return RestoreApplier()


def save(netns, backend, *args, family="IPv4"):
    """`iptables-save ARGS` (ip6tables-save for IPv6) in a namespace, with the backend's own
    tool; an error is a sentence."""
    argv = [(SAVE_TOOL6 if family == "IPv6" else SAVE_TOOL)[backend], *args]
    out = ns.run(netns, argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise NetlabError(f"{netns}: {' '.join(argv)}: {out.stderr.strip() or f'exit {out.returncode}'}")
    return out.stdout
