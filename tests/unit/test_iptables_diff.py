"""The apply logic's decisions, against tables read back as iptables-save prints them:
what is rewritten, what is left alone, what stale chain is removed, and how the built-in
chains a node shares with a person get our rules and keep theirs."""

from netlab.kernel.iptables_restore import diff, parse_save
from netlab.values.iptables import Edit, Table, builtin_edits, changes

PORTALS = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'

PLAN = Table("nat", {
    "PREROUTING": (PORTALS,),
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

# A node's filter FORWARD as kube-proxy (iptables mode) and flanneld leave it: kube-proxy's
# four jumps inserted at the top, flanneld's appended after them.
FORWARD = (
    '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" '
    '-j KUBE-EXTERNAL-SERVICES',
    '-m comment --comment "flanneld forward" -j FLANNEL-FWD',
)
FIREWALL, KFORWARD, SERVICES, EXTERNAL, FLANNEL = FORWARD
INSERTED = "-s 192.0.2.7/32 -j ACCEPT"              # a person's `iptables -I FORWARD ...`
APPENDED = "-d 198.51.100.0/24 -p tcp -m tcp --dport 22 -j DROP"   # and `iptables -A FORWARD ...`


def run(have, edits):
    """The chain after the edits, as iptables numbers rules (from 1, at the time of each)."""
    chain = list(have)
    for e in edits:
        if e.op == "-D":
            del chain[e.num - 1]
        elif e.op == "-I":
            chain.insert(e.num - 1, e.rule)
        else:
            chain.append(e.rule)
    return chain


def test_a_matching_table_needs_no_write():
    assert changes(PLAN, parse_save(SAVED)) == ([], {}, [])
    assert diff(PLAN, parse_save(SAVED)) is None


def test_only_the_changed_chain_is_rewritten():
    have = parse_save(SAVED.replace("10.244.1.2:80", "10.244.1.3:80"))
    assert diff(PLAN, have) == ("*nat\n:KUBE-SEP-A - [0:0]\n"
                                "-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80\nCOMMIT\n")


def test_stale_owned_chains_are_flushed_and_deleted_and_others_left_alone():
    have = parse_save(SAVED.replace(":KUBE-SEP-A - [0:0]\n", ":KUBE-SEP-A - [0:0]\n:KUBE-SEP-OLD - [0:0]\n:MINE - [0:0]\n"))
    assert changes(PLAN, have) == ([], {}, ["KUBE-SEP-OLD"])
    assert diff(PLAN, have) == "*nat\n:KUBE-SEP-OLD - [0:0]\n-X KUBE-SEP-OLD\nCOMMIT\n"


def test_a_fresh_namespace_gets_every_chain_declared_before_any_jump():
    text = diff(PLAN, {})
    lines = text.splitlines()
    first_rule = next(i for i, l in enumerate(lines) if l.startswith("-A"))
    assert all(not l.startswith(":") for l in lines[first_rule:])
    assert lines[1:first_rule] == [":KUBE-SERVICES - [0:0]", ":KUBE-SVC-A - [0:0]", ":KUBE-SEP-A - [0:0]"]
    assert lines[-2:] == [f"-A PREROUTING {PORTALS}", "COMMIT"]        # appended, nothing flushed


# --- built-in chains are shared ---------------------------------------------------------

def test_a_persons_rules_in_built_in_chains_need_no_write():
    saved = SAVED.replace(f"-A PREROUTING {PORTALS}\n",
                          f"-A PREROUTING -s 192.0.2.7/32 -j RETURN\n-A PREROUTING {PORTALS}\n"
                          "-A PREROUTING -p udp -m udp --dport 53 -j DNAT --to-destination 192.0.2.53:53\n"
                          "-A OUTPUT -d 203.0.113.9/32 -j RETURN\n"
                          "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n")
    assert changes(PLAN, parse_save(saved)) == ([], {}, [])
    assert diff(PLAN, parse_save(saved)) is None
    assert builtin_edits(FORWARD, [INSERTED, *FORWARD, APPENDED]) == []


def test_a_missing_kube_jump_is_restored_at_the_top_and_the_others_keep_their_places():
    have = [INSERTED, FIREWALL, SERVICES, EXTERNAL, FLANNEL, APPENDED]       # KUBE-FORWARD deleted by hand
    edits = builtin_edits(FORWARD, have)
    assert edits == [Edit("-D", 4), Edit("-D", 3), Edit("-D", 2),
                     Edit("-I", 1, FIREWALL), Edit("-I", 2, KFORWARD), Edit("-I", 3, SERVICES), Edit("-I", 4, EXTERNAL)]
    assert run(have, edits) == [FIREWALL, KFORWARD, SERVICES, EXTERNAL, INSERTED, FLANNEL, APPENDED]
    assert builtin_edits(FORWARD, run(have, edits)) == []
    table = Table("filter", {"FORWARD": FORWARD})
    assert diff(table, {"FORWARD": have}) == (
        "*filter\n-D FORWARD 4\n-D FORWARD 3\n-D FORWARD 2\n"
        f"-I FORWARD 1 {FIREWALL}\n-I FORWARD 2 {KFORWARD}\n-I FORWARD 3 {SERVICES}\n-I FORWARD 4 {EXTERNAL}\n"
        "COMMIT\n")


def test_flannels_missing_jump_is_appended_after_the_persons_rules():
    have = [*FORWARD[:4], APPENDED]
    assert builtin_edits(FORWARD, have) == [Edit("-A", rule=FLANNEL)]
    assert run(have, builtin_edits(FORWARD, have)) == [*FORWARD[:4], APPENDED, FLANNEL]


def test_jumps_out_of_order_are_put_back_in_order():
    have = [FLANNEL, APPENDED, *FORWARD[:4]]
    assert run(have, builtin_edits(FORWARD, have)) == [*FORWARD[:4], FLANNEL, APPENDED]
    have = [KFORWARD, FIREWALL, SERVICES, EXTERNAL, APPENDED, FLANNEL]
    assert run(have, builtin_edits(FORWARD, have)) == [*FORWARD[:4], APPENDED, FLANNEL]


def test_a_duplicate_of_our_rule_is_removed():
    have = [*FORWARD, FLANNEL, APPENDED]
    assert builtin_edits(FORWARD, have) == [Edit("-D", 6), Edit("-D", 5), Edit("-A", rule=FLANNEL)]
    assert run(have, builtin_edits(FORWARD, have)) == [*FORWARD[:4], APPENDED, FLANNEL]


def test_stale_rules_of_ours_are_removed_and_only_them():
    # flannel before v0.20 wrote its masquerade rules straight into POSTROUTING; a jump to a
    # KUBE- chain no plan has is kube-proxy's; a person's MASQUERADE is not ours.
    old_flannel = '-s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN'
    mine = "-s 172.16.0.0/12 -o eth0 -j MASQUERADE"
    postrouting = ('-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
                   '-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG')
    have = [postrouting[0], old_flannel, mine, "-j KUBE-OLD-POSTROUTING", postrouting[1]]
    assert builtin_edits(postrouting, have) == [Edit("-D", 4), Edit("-D", 2)]
    assert run(have, builtin_edits(postrouting, have)) == [postrouting[0], mine, postrouting[1]]


def test_the_jump_to_a_stale_chain_goes_before_the_chain():
    have = parse_save(SAVED.replace(":KUBE-SEP-A - [0:0]\n", ":KUBE-SEP-A - [0:0]\n:KUBE-OLD - [0:0]\n")
                      .replace(f"-A PREROUTING {PORTALS}\n", f"-A PREROUTING {PORTALS}\n-A PREROUTING -j KUBE-OLD\n"
                               "-A PREROUTING -j ACCEPT\n"))
    assert changes(PLAN, have) == ([], {"PREROUTING": [Edit("-D", 2)]}, ["KUBE-OLD"])
    assert diff(PLAN, have) == "*nat\n:KUBE-OLD - [0:0]\n-D PREROUTING 2\n-X KUBE-OLD\nCOMMIT\n"


def test_a_cleared_partition_leaves_the_lan_and_a_persons_rule_stays():
    drops = ('-m physdev --physdev-in worker --physdev-out worker2 -m comment --comment "netlab partition" -j DROP',
             '-m physdev --physdev-in worker2 --physdev-out worker -m comment --comment "netlab partition" -j DROP')
    mine = "-m physdev --physdev-in worker -p udp -m udp --dport 8472 -j LOG"
    assert builtin_edits((), [*drops, mine]) == [Edit("-D", 2), Edit("-D", 1)]
    assert builtin_edits(drops, [mine]) == [Edit("-A", rule=drops[0]), Edit("-A", rule=drops[1])]


def test_edits_read_as_iptables_commands():
    assert [e.line("INPUT") for e in (Edit("-D", 3), Edit("-I", 1, "-j KUBE-FIREWALL"), Edit("-A", rule="-j ACCEPT"))] \
        == ["-D INPUT 3", "-I INPUT 1 -j KUBE-FIREWALL", "-A INPUT -j ACCEPT"]
