"""The apply logic's decisions, against tables read back as iptables-save prints them:
what is rewritten, what is left alone, what stale chain is removed."""

from netlab.kernel.iptables_restore import diff, parse_save
from netlab.values.iptables import Table, changes

PLAN = Table("nat", {
    "PREROUTING": ('-m comment --comment "kubernetes service portals" -j KUBE-SERVICES',),
    "KUBE-SERVICES": ("-d 10.96.0.5/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A",),
    "KUBE-SVC-A": ("-j KUBE-SEP-A",),
    "KUBE-SEP-A": ("-p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80",),
})

SAVED = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-A - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.5/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
-A KUBE-SVC-A -j KUBE-SEP-A
-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80
COMMIT
"""


def test_a_matching_table_needs_no_write():
    assert changes(PLAN, parse_save(SAVED)) == ([], [])
    assert diff(PLAN, parse_save(SAVED)) is None


def test_only_the_changed_chain_is_rewritten():
    have = parse_save(SAVED.replace("10.244.1.2:80", "10.244.1.3:80"))
    assert diff(PLAN, have) == ("*nat\n:KUBE-SEP-A - [0:0]\n"
                                "-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80\nCOMMIT\n")


def test_stale_owned_chains_are_flushed_and_deleted_and_others_left_alone():
    have = parse_save(SAVED.replace(":KUBE-SEP-A - [0:0]\n", ":KUBE-SEP-A - [0:0]\n:KUBE-SEP-OLD - [0:0]\n:MINE - [0:0]\n"))
    assert changes(PLAN, have) == ([], ["KUBE-SEP-OLD"])
    assert diff(PLAN, have) == "*nat\n:KUBE-SEP-OLD - [0:0]\n-X KUBE-SEP-OLD\nCOMMIT\n"


def test_a_fresh_namespace_gets_every_chain_declared_before_any_jump():
    text = diff(PLAN, {})
    lines = text.splitlines()
    first_rule = next(i for i, l in enumerate(lines) if l.startswith("-A"))
    assert all(not l.startswith(":") for l in lines[first_rule:])
    assert lines[1:first_rule] == [":KUBE-SERVICES - [0:0]", ":KUBE-SVC-A - [0:0]", ":KUBE-SEP-A - [0:0]", "-F PREROUTING"]
