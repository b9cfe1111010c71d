"""kube-router's network policy controller as netlab plans it, against kube-router v2.6.3's
layout (shared/reference/networkpolicy.md; pkg/controllers/netpol's policy.go, pod.go and
network_policy_controller.go): chain and set names hashed as kube-router hashes them, the rules
in the order it writes them and in the form iptables-save prints them, the ipsets and their
restore input, and the apply logic's decisions (kube-router's jump kept at position 1, a partial
sync writing only what changed)."""

import base64
import hashlib

from netlab.api.spec import (ClusterConfig, Container, ContainerPort, IPBlock, LabelSelector, LabSpec,
                             NetworkPolicyManifest, PodManifest, PodTemplate, PolicyPeer, PolicyPort, PolicyRule)
from netlab.controllers import cluster
from netlab import plan
from netlab.node.netpol import kube_router as kr
from netlab.values.ipset import IPSet, changes, parse_save, restore_text, tmp_set
from netlab.values.iptables import Edit, builtin_edits


def b32(text):
    """The reference's hash: base32(sha256(text)), its first 16 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


PORTS = (ContainerPort(80, "TCP", "serve-80-tcp"), ContainerPort(81, "UDP", "serve-81-udp"))


def pod(namespace, name, node, labels=None, ports=PORTS):
    return PodManifest(namespace, name, PodTemplate(labels or {"pod": name}, (Container("c", ports=ports),),
                                                    node_name=node))


def lab(*policies, namespaces=None):
    """Two nodes; x/a, x/b and y/b on the worker, y/a on the control plane (IPs in that order of binding)."""
    c = ClusterConfig(name="t", roles=("control-plane", "worker"), dns_replicas=0)
    state = cluster.new_state(LabSpec(c, (pod("x", "a", "t-worker"), pod("x", "b", "t-worker"),
                                          pod("y", "a", "t-control-plane"), pod("y", "b", "t-worker", ports=()))))
    state.network_policies = list(policies)
    for name, labels in (namespaces or {}).items():
        state.namespaces[name] = {"labels": labels, "created": ""}
    return state


def ip(state, key):
    return state.pod(*key.split("/")).ip


def table(state, node="t-worker"):
    return kr.node_table(kr.inputs(state), node).chains


def sets(state):
    return {s.name: s for s in kr.ipsets(kr.inputs(state))}


def policy(namespace, name, selector=None, types=("Ingress",), ingress=(), egress=()):
    return NetworkPolicyManifest(namespace, name, LabelSelector(selector or {}), types, ingress, egress)


def allow(comment, match, tail=""):
    """kube-router's two lines for one allow (appendRuleToPolicyChain), as iptables-save prints them."""
    head, _, rest = match.partition(" ||")
    words = f"{head} -m comment --comment \"{comment}\"{rest}{tail}".strip()
    return [f"{words} -j MARK --set-xmark 0x10000/0x10000", f"{words} -m mark --mark 0x10000/0x10000 -j RETURN"]


# --- names ---------------------------------------------------------------------------------------

def test_chain_and_set_names_hash_as_the_reference_says():
    assert kr.policy_chain("nsA", "simple-egress") == "KUBE-NWPLCY-C23KD7UE4TAT3Y5M"
    assert kr.target_set(kr.DST_PREFIX, "default", "allow-web") == "KUBE-DST-M6PZR535OW6JMOTI"
    assert kr.pod_chain("x", "a") == "KUBE-POD-FW-" + b32("xa1")
    assert kr.rule_set(kr.SRC_PREFIX, "x", "p", "ingress", 0, "pod") == "KUBE-SRC-" + b32("xpingressrule0IPv4pod")
    assert kr.rule_set(kr.DST_PREFIX, "x", "p", "egress", 2, "ipblock") == "KUBE-DST-" + b32("xpegressrule2IPv4ipblock")
    assert kr.rule_set(kr.DST_PREFIX, "x", "p", "ingress", 1, "namedport", 0) == \
        "KUBE-DST-" + b32("xpingressrule10IPv4namedport")


def test_the_top_level_jumps_and_the_input_head_carry_the_references_uuids():
    assert kr.hooks() == {
        "INPUT": ('-m comment --comment "kube-router netpol - 4IA2OSFRMVNDXBVV" -j KUBE-ROUTER-INPUT',),
        "FORWARD": ('-m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD',),
        "OUTPUT": ('-m comment --comment "kube-router netpol - VEAAIY32XVBHCSCY" -j KUBE-ROUTER-OUTPUT',),
    }
    tcp = b32("KUBE-ROUTER-INPUT-ptcp-mcomment--commentallow LOCAL TCP traffic to node ports-maddrtype--dst-typeLOCAL"
              "-mmultiport--dports30000:32767-jRETURN")
    udp = b32("KUBE-ROUTER-INPUT-pudp-mcomment--commentallow LOCAL UDP traffic to node ports-maddrtype--dst-typeLOCAL"
              "-mmultiport--dports30000:32767-jRETURN")
    assert kr.input_head("10.96.0.0/12", "30000:32767") == [
        '-d 10.96.0.0/12 -m comment --comment "allow traffic to primary/secondary cluster IP range - BVHX2PIHDXXEO43X"'
        " -j RETURN",
        f'-p tcp -m comment --comment "allow LOCAL TCP traffic to node ports - {tcp}" -m addrtype --dst-type LOCAL '
        "-m multiport --dports 30000:32767 -j RETURN",
        f'-p udp -m comment --comment "allow LOCAL UDP traffic to node ports - {udp}" -m addrtype --dst-type LOCAL '
        "-m multiport --dports 30000:32767 -j RETURN",
    ]


# --- the node's chains ---------------------------------------------------------------------------

def test_without_policies_every_local_pod_runs_through_the_default_chain_both_ways():
    s = lab()
    chains = table(s)
    xa, fw = ip(s, "x/a"), kr.pod_chain("x", "a")
    assert chains[fw] == (
        '-m comment --comment "common bi-directional traffic policy rules" -j KUBE-NWPLCY-COMMON',
        f"-d {xa}/32 -m comment --comment \"rule to permit the traffic traffic to pods when source is the pod\\'s local "
        'node" -m addrtype --src-type LOCAL -j ACCEPT',
        f'-s {xa}/32 -m comment --comment "run through default egress network policy chain" -j KUBE-NWPLCY-DEFAULT',
        f'-d {xa}/32 -m comment --comment "run through default ingress network policy chain" -j KUBE-NWPLCY-DEFAULT',
        '-m comment --comment "rule to log dropped traffic POD name:a namespace: x" -m mark ! --mark 0x10000/0x10000 '
        "-m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100",
        '-m comment --comment "rule to REJECT traffic destined for POD name:a namespace: x" '
        "-m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable",
        "-j MARK --set-xmark 0x0/0x10000",
        '-m comment --comment "set mark to ACCEPT traffic that comply to network policies" '
        "-j MARK --set-xmark 0x20000/0x20000",
    )
    assert chains["KUBE-NWPLCY-DEFAULT"] == (
        '-m comment --comment "rule to mark traffic matching a network policy" -j MARK --set-xmark 0x10000/0x10000',)
    assert chains["KUBE-NWPLCY-COMMON"] == (
        '-m comment --comment "\\"rule to drop invalid state for pod\\"" -m conntrack --ctstate INVALID -j DROP',
        '-m comment --comment "\\"rule for stateful firewall for pod\\"" -m conntrack --ctstate RELATED,ESTABLISHED '
        "-j ACCEPT",
        '-p icmp -m comment --comment "allow icmp echo requests" -m icmp --icmp-type 8 -j ACCEPT',
        '-p icmp -m comment --comment "allow icmp destination unreachable messages" -m icmp --icmp-type 3 -j ACCEPT',
        '-p icmp -m comment --comment "allow icmp time exceeded messages" -m icmp --icmp-type 11 -j ACCEPT',
    )
    # Only the node's own pods have a chain: y/a runs on the control plane.
    assert {c for c in chains if c.startswith("KUBE-POD-FW-")} == {kr.pod_chain(*k) for k in
                                                                   (("x", "a"), ("x", "b"), ("y", "b"))}
    assert {c for c in table(s, "t-control-plane") if c.startswith("KUBE-POD-FW-")} == {kr.pod_chain("y", "a")}


def test_the_top_level_chains_steer_each_local_pod_then_accept_what_complies():
    s = lab()
    chains = table(s, "t-control-plane")
    ya, fw = ip(s, "y/a"), kr.pod_chain("y", "a")
    to = f'-m comment --comment "rule to jump traffic destined to POD name:a namespace: y to chain {fw}" -j {fw}'
    frm = f'-m comment --comment "rule to jump traffic from POD name:a namespace: y to chain {fw}" -j {fw}'
    assert chains["KUBE-ROUTER-FORWARD"] == (f"-d {ya}/32 {to}", f"-d {ya}/32 -m physdev --physdev-is-bridged {to}",
                                             f"-s {ya}/32 {frm}", f"-s {ya}/32 -m physdev --physdev-is-bridged {frm}")
    assert chains["KUBE-ROUTER-OUTPUT"] == (f"-d {ya}/32 {to}", f"-s {ya}/32 {frm}")
    assert chains["KUBE-ROUTER-INPUT"][3:] == (f"-s {ya}/32 {frm}",)
    assert [c for c in chains if c in ("INPUT", "FORWARD", "OUTPUT")] == ["INPUT", "FORWARD", "OUTPUT"]


def test_k3s_accepts_what_complies_in_the_built_in_chains_after_the_last_kube_rule_before_flanneld():
    """As a k3s node's iptables-save shows it: FORWARD holds kube-router's jump, kube-proxy's
    jumps, the KUBE-ROUTER ACCEPT, then flanneld's FLANNEL-FWD."""
    s = lab()
    node = next(n for n in s.nodes if n.name == "t-worker")
    forward = plan.node_plan(s, node).iptables["filter"].chains["FORWARD"]
    accept = ('-m comment --comment "KUBE-ROUTER rule to explicitly ACCEPT traffic that comply to network policies" '
              "-m mark --mark 0x20000/0x20000 -j ACCEPT")
    targets = [r.rsplit("-j ", 1)[1] for r in forward]
    assert targets == ["KUBE-ROUTER-FORWARD", "KUBE-PROXY-FIREWALL", "KUBE-FORWARD", "KUBE-SERVICES",
                       "KUBE-EXTERNAL-SERVICES", "ACCEPT", "FLANNEL-FWD"]
    assert forward[5] == accept
    for builtin in ("INPUT", "OUTPUT"):
        assert accept in plan.node_plan(s, node).iptables["filter"].chains[builtin]


def test_default_deny_ingress_an_empty_chain_a_target_set_and_the_jump_instead_of_the_default():
    s = lab(policy("x", "deny"))                                     # podSelector {} and no rule
    chain = kr.policy_chain("x", "deny")
    dst = kr.target_set(kr.DST_PREFIX, "x", "deny")
    assert table(s)[chain] == ()
    assert sets(s) == {dst: IPSet(dst, "hash:ip", (f"{ip(s, 'x/a')} timeout 0", f"{ip(s, 'x/b')} timeout 0"))}
    xa = ip(s, "x/a")
    assert table(s)[kr.pod_chain("x", "a")][2:4] == (
        f'-s {xa}/32 -m comment --comment "run through default egress network policy chain" -j KUBE-NWPLCY-DEFAULT',
        f'-d {xa}/32 -m comment --comment "run through nw policy deny" -j {chain}')
    # Another namespace's pods are not selected, and every node has the policy's chain.
    assert "run through default ingress" in table(s)[kr.pod_chain("y", "b")][3]
    assert table(s, "t-control-plane")[chain] == ()


def test_allow_from_a_pod_selector():
    rule = PolicyRule(peers=(PolicyPeer(LabelSelector({"pod": "b"})),))
    s = lab(policy("x", "allow-b", {"pod": "a"}, ingress=(rule,)))
    dst = kr.target_set(kr.DST_PREFIX, "x", "allow-b")
    src = "KUBE-SRC-" + b32("xallow-bingressrule0IPv4pod")
    assert table(s)[kr.policy_chain("x", "allow-b")] == tuple(allow(
        "rule to ACCEPT traffic from source pods to dest pods selected by policy name allow-b namespace x",
        f" || -m set --match-set {src} src -m set --match-set {dst} dst"))
    assert sets(s) == {dst: IPSet(dst, "hash:ip", (f"{ip(s, 'x/a')} timeout 0",)),
                       src: IPSet(src, "hash:ip", (f"{ip(s, 'x/b')} timeout 0",))}     # y/b: another namespace


def test_a_namespace_selector_takes_the_labelled_namespaces_pods_and_with_a_pod_selector_both_must_match():
    either = PolicyPeer(namespace_selector=LabelSelector({"team": "blue"}))
    both = PolicyPeer(pod_selector=LabelSelector({"pod": "a"}), namespace_selector=LabelSelector({"team": "blue"}))
    by_name = PolicyPeer(namespace_selector=LabelSelector({"kubernetes.io/metadata.name": "x"}))
    s = lab(policy("x", "ns", ingress=(PolicyRule(peers=(either,)), PolicyRule(peers=(both,)),
                                       PolicyRule(peers=(by_name,)))), namespaces={"y": {"team": "blue"}})
    entries = {name: {e.split()[0] for e in st.entries} for name, st in sets(s).items()}
    assert entries["KUBE-SRC-" + b32("xnsingressrule0IPv4pod")] == {ip(s, "y/a"), ip(s, "y/b")}
    assert entries["KUBE-SRC-" + b32("xnsingressrule1IPv4pod")] == {ip(s, "y/a")}
    assert entries["KUBE-SRC-" + b32("xnsingressrule2IPv4pod")] == {ip(s, "x/a"), ip(s, "x/b")}
    # No namespace labelled: the rule's set would be empty, and kube-router makes neither set nor rule.
    s = lab(policy("x", "ns", ingress=(PolicyRule(peers=(either,)),)))
    assert table(s)[kr.policy_chain("x", "ns")] == ()
    assert "KUBE-SRC-" + b32("xnsingressrule0IPv4pod") not in sets(s)


def test_an_ipblock_with_except_is_a_hash_net_set_with_nomatch_entries():
    rule = PolicyRule(peers=(PolicyPeer(ip_block=IPBlock("10.244.0.0/16", ("10.244.1.0/24",))),
                             PolicyPeer(ip_block=IPBlock("0.0.0.0/0", ("192.168.0.0/16",)))),
                      ports=(PolicyPort("TCP", 80),))
    s = lab(policy("x", "blocks", ingress=(rule,)))
    src, dst = "KUBE-SRC-" + b32("xblocksingressrule0IPv4ipblock"), kr.target_set(kr.DST_PREFIX, "x", "blocks")
    assert sets(s)[src] == IPSet(src, "hash:net", (
        "10.244.0.0/16 timeout 0", "10.244.1.0/24 timeout 0 nomatch",
        "0.0.0.0/1 timeout 0", "128.0.0.0/1 timeout 0", "192.168.0.0/16 timeout 0 nomatch"))
    assert table(s)[kr.policy_chain("x", "blocks")] == tuple(allow(
        "rule to ACCEPT traffic from specified ipBlocks to dest pods selected by policy name: blocks namespace x",
        f"-p tcp || -m set --match-set {src} src -m set --match-set {dst} dst -m tcp --dport 80"))


def test_a_net_that_is_one_peers_cidr_and_anothers_except_is_held_once_as_the_last_entry_made_it():
    """`ipset restore -exist` replaces an entry of the same net, so the set holds the last one."""
    peers = (PolicyPeer(ip_block=IPBlock("10.244.1.0/24")),
             PolicyPeer(ip_block=IPBlock("10.244.0.0/16", ("10.244.1.0/24",))))
    s = lab(policy("x", "blocks", ingress=(PolicyRule(peers=peers),)))
    src = "KUBE-SRC-" + b32("xblocksingressrule0IPv4ipblock")
    assert sets(s)[src].entries == ("10.244.0.0/16 timeout 0", "10.244.1.0/24 timeout 0 nomatch")
    s = lab(policy("x", "blocks", ingress=(PolicyRule(peers=peers[::-1]),)))
    assert sets(s)[src].entries == ("10.244.0.0/16 timeout 0", "10.244.1.0/24 timeout 0")


def test_ports_numeric_ranges_and_protocol_only_from_all_sources():
    rule = PolicyRule(ports=(PolicyPort("TCP", 80, 90), PolicyPort("UDP"), PolicyPort("SCTP", 5000)))
    s = lab(policy("x", "ports", ingress=(rule,)))
    dst = kr.target_set(kr.DST_PREFIX, "x", "ports")
    text = "rule to ACCEPT traffic from all sources to dest pods selected by policy name: ports namespace x"
    assert table(s)[kr.policy_chain("x", "ports")] == tuple(
        allow(text, f"-p tcp || -m set --match-set {dst} dst -m tcp --dport 80:90")
        + allow(text, f"-p udp || -m set --match-set {dst} dst")
        + allow(text, f"-p sctp || -m set --match-set {dst} dst -m sctp --dport 5000"))


def test_a_named_port_resolves_on_the_selected_pods_with_its_protocol():
    rule = PolicyRule(peers=(PolicyPeer(LabelSelector()),), ports=(PolicyPort("TCP", "serve-80-tcp"),))
    s = lab(policy("x", "named", ingress=(rule,)))
    src = "KUBE-SRC-" + b32("xnamedingressrule0IPv4pod")
    named = "KUBE-DST-" + b32("xnamedingressrule00IPv4namedport")
    assert table(s)[kr.policy_chain("x", "named")] == tuple(allow(
        "rule to ACCEPT traffic from source pods to dest pods selected by policy name named namespace x",
        f"-p tcp || -m set --match-set {src} src -m set --match-set {named} dst -m tcp --dport 80"))
    assert sets(s)[named] == IPSet(named, "hash:ip", (f"{ip(s, 'x/a')} timeout 0", f"{ip(s, 'x/b')} timeout 0"))
    # The name with the other protocol resolves to nothing: no port allowed (kube-router would allow them all).
    wrong = PolicyRule(peers=(PolicyPeer(LabelSelector()),), ports=(PolicyPort("UDP", "serve-80-tcp"),))
    assert table(lab(policy("x", "named", ingress=(wrong,))))[kr.policy_chain("x", "named")] == ()


def test_egress_to_pods_to_all_destinations_and_to_ipblocks():
    rules = (PolicyRule(peers=(PolicyPeer(LabelSelector({"pod": "b"})),), ports=(PolicyPort("TCP", 80),)),
             PolicyRule(ports=(PolicyPort("UDP", 53),)),
             PolicyRule(peers=(PolicyPeer(ip_block=IPBlock("172.18.0.0/16")),)))
    s = lab(policy("x", "out", {"pod": "a"}, ("Egress",), egress=rules))
    src = kr.target_set(kr.SRC_PREFIX, "x", "out")
    dst, block = "KUBE-DST-" + b32("xoutegressrule0IPv4pod"), "KUBE-DST-" + b32("xoutegressrule2IPv4ipblock")
    assert table(s)[kr.policy_chain("x", "out")] == tuple(
        allow("rule to ACCEPT traffic from source pods to dest pods selected by policy name out namespace x",
              f"-p tcp || -m set --match-set {src} src -m set --match-set {dst} dst -m tcp --dport 80")
        + allow("rule to ACCEPT traffic from source pods to all destinations selected by policy name: out namespace x",
                f"-p udp || -m set --match-set {src} src -m udp --dport 53")
        + allow("rule to ACCEPT traffic from source pods to specified ipBlocks selected by policy name: out namespace x",
                f" || -m set --match-set {src} src -m set --match-set {block} dst"))
    assert set(sets(s)) == {src, dst, block}
    xa = ip(s, "x/a")
    assert table(s)[kr.pod_chain("x", "a")][2:4] == (
        f'-d {xa}/32 -m comment --comment "run through default ingress network policy chain" -j KUBE-NWPLCY-DEFAULT',
        f'-s {xa}/32 -m comment --comment "run through nw policy out" -j {kr.policy_chain("x", "out")}')


def test_a_policy_of_both_types_is_jumped_to_both_ways_and_policies_stack_in_reverse():
    s = lab(policy("x", "p1", types=("Ingress", "Egress")), policy("x", "p2"))
    xa = ip(s, "x/a")
    rules = table(s)[kr.pod_chain("x", "a")]
    assert rules[2:4] == (
        f'-d {xa}/32 -m comment --comment "run through nw policy p2" -j {kr.policy_chain("x", "p2")}',
        f'-m comment --comment "run through nw policy p1" -j {kr.policy_chain("x", "p1")}')
    assert not any("default" in r for r in rules)
    assert set(sets(s)) == {kr.target_set(kr.DST_PREFIX, "x", "p1"), kr.target_set(kr.SRC_PREFIX, "x", "p1"),
                            kr.target_set(kr.DST_PREFIX, "x", "p2")}


# --- a partial sync ------------------------------------------------------------------------------

def relabel(state, key, labels):
    p = state.pod(*key.split("/"))
    p.template = PodTemplate(labels, p.template.containers, node_name=p.template.node_name)


def test_an_unchanged_sync_writes_nothing_and_a_label_change_only_what_it_changes():
    rule = PolicyRule(peers=(PolicyPeer(LabelSelector({"role": "client"})),))
    s = lab(policy("x", "p", {"pod": "a"}, ingress=(rule,)))
    chain, src = kr.policy_chain("x", "p"), "KUBE-SRC-" + b32("xpingressrule0IPv4pod")
    none = kr.inputs(s)
    assert kr.sync_changes(none, kr.inputs(s), "t-worker") == ({}, [])
    assert changes(kr.ipsets(none), {st.name: st for st in kr.ipsets(none)}) == ([], [])
    relabel(s, "x/b", {"pod": "b", "role": "client"})     # the first peer: the rule and its set appear
    one = kr.inputs(s)
    assert set(kr.sync_changes(none, one, "t-worker")[0]) == {chain}
    write, stale = changes(kr.ipsets(one), {st.name: st for st in kr.ipsets(none)})
    assert ([w.name for w in write], stale) == ([src], [])
    relabel(s, "x/a", {"pod": "a", "role": "client"})     # a second one: only the set changes
    two = kr.inputs(s)
    assert kr.sync_changes(one, two, "t-worker") == ({}, [])
    write, stale = changes(kr.ipsets(two), {st.name: st for st in kr.ipsets(one)})
    assert ([w.name for w in write], stale) == ([src], [])
    assert set(write[0].entries) == {f"{ip(s, 'x/a')} timeout 0", f"{ip(s, 'x/b')} timeout 0"}
    s.network_policies = []
    gone = kr.inputs(s)
    write, stale = kr.sync_changes(two, gone, "t-worker")
    assert stale == [chain]
    assert set(write) == {kr.pod_chain("x", "a")}                  # back to the default chain both ways
    assert changes(kr.ipsets(gone), {st.name: st for st in kr.ipsets(two)}) == \
        ([], sorted([src, kr.target_set(kr.DST_PREFIX, "x", "p")]))


def test_a_new_pod_gets_its_chain_and_its_jumps():
    s = lab()
    before = kr.inputs(s)
    s.pods = [p for p in s.pods if p.key != "y/b"]
    write, stale = kr.sync_changes(kr.inputs(s), before, "t-worker")
    assert set(write) == {"KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT", kr.pod_chain("y", "b")}
    assert stale == []
    assert kr.sync_changes(before, kr.inputs(s), "t-worker")[1] == [kr.pod_chain("y", "b")]


# --- ipsets as values ----------------------------------------------------------------------------

def test_the_restore_input_fills_a_tmp_set_per_type_and_swaps_it_in():
    ip_tmp, net_tmp = tmp_set("hash:ip timeout 0"), tmp_set("hash:net timeout 0")
    assert ip_tmp == "TMP-" + base64.b32encode(hashlib.sha1(b"tmp:hash:ip timeout 0").digest()[:10]).decode()
    text = restore_text([IPSet("KUBE-SRC-B", "hash:net", ("10.0.0.0/8 timeout 0", "10.1.0.0/16 timeout 0 nomatch")),
                         IPSet("KUBE-DST-A", "hash:ip", ("10.244.1.2 timeout 0",)), IPSet("KUBE-DST-C", "hash:ip")])
    assert text.splitlines() == [
        f"create {ip_tmp} hash:ip timeout 0", f"flush {ip_tmp}", f"add {ip_tmp} 10.244.1.2 timeout 0",
        "create KUBE-DST-A hash:ip timeout 0", f"swap {ip_tmp} KUBE-DST-A", f"flush {ip_tmp}",
        "create KUBE-DST-C hash:ip timeout 0", f"swap {ip_tmp} KUBE-DST-C", f"flush {ip_tmp}",
        f"create {net_tmp} hash:net timeout 0", f"flush {net_tmp}",
        f"add {net_tmp} 10.0.0.0/8 timeout 0", f"add {net_tmp} 10.1.0.0/16 timeout 0 nomatch",
        "create KUBE-SRC-B hash:net timeout 0", f"swap {net_tmp} KUBE-SRC-B", f"flush {net_tmp}",
        *sorted([f"destroy {ip_tmp}", f"destroy {net_tmp}"])]
    assert restore_text([]) == ""


SAVED = """create KUBE-SRC-A hash:ip family inet hashsize 1024 maxelem 65536 timeout 0 bucketsize 12 initval 0xe654967c
add KUBE-SRC-A 10.244.1.3 timeout 0
add KUBE-SRC-A 10.244.1.2 timeout 0
create KUBE-DST-B hash:net family inet hashsize 1024 maxelem 65536 timeout 0 bucketsize 12 initval 0xe4409151
add KUBE-DST-B 10.244.0.0/16 timeout 0 nomatch
add KUBE-DST-B 10.244.1.5 timeout 0
create KUBE-DST-STALE hash:ip family inet hashsize 1024 maxelem 65536 timeout 0 bucketsize 12 initval 0x1
create someone-elses hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x2
"""


def test_sets_read_back_compare_by_members_and_only_ours_go_stale():
    have = parse_save(SAVED)
    planned = [IPSet("KUBE-SRC-A", "hash:ip", ("10.244.1.2 timeout 0", "10.244.1.3 timeout 0")),
               IPSet("KUBE-DST-B", "hash:net", ("10.244.1.5/32 timeout 0", "10.244.0.0/16 timeout 0 nomatch"))]
    assert changes(planned, have) == ([], ["KUBE-DST-STALE"])
    moved = [planned[0], IPSet("KUBE-DST-B", "hash:net", ("10.244.1.5/32 timeout 0", "10.244.0.0/16 timeout 0"))]
    assert changes(moved, have) == ([moved[1]], ["KUBE-DST-STALE"])     # an except is not its cidr
    assert changes([IPSet("KUBE-SRC-A", "hash:net", planned[0].entries)], have)[0] != []


# --- kube-router's jump at position 1 of a built-in chain -------------------------------------------

KR = '-m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD'
KP = '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD'
FLANNEL = '-m comment --comment "flanneld forward" -j FLANNEL-FWD'
PERSON = "-s 192.0.2.7/32 -j ACCEPT"


def run(have, edits):
    chain = list(have)
    for e in edits:
        if e.op == "-D":
            del chain[e.num - 1]
        elif e.op == "-I":
            chain.insert(e.num - 1, e.rule)
        else:
            chain.append(e.rule)
    return chain


def test_kube_routers_jump_is_kept_at_position_1_ahead_of_kube_proxys():
    planned = (KR, KP, FLANNEL)
    assert run([], builtin_edits(planned, [])) == [KR, KP, FLANNEL]
    assert builtin_edits(planned, [KR, KP, PERSON, FLANNEL]) == []
    # A node that had only kube-proxy's and flannel's: the jump goes in above them, nothing else moves.
    assert builtin_edits(planned, [KP, FLANNEL]) == [Edit("-I", 1, KR)]
    # A person's rule inserted at the top: kube-router moves its jump back above it (insert, delete the old).
    have = [PERSON, KR, KP, FLANNEL]
    assert builtin_edits(planned, have) == [Edit("-I", 1, KR), Edit("-D", 3)]
    assert run(have, builtin_edits(planned, have)) == [KR, PERSON, KP, FLANNEL]
    # kube-proxy's jump gone as well: it comes back right below kube-router's.
    have = [PERSON, KR, FLANNEL]
    assert run(have, builtin_edits(planned, have)) == [KR, KP, PERSON, FLANNEL]


# --- kube-router's rules through the python-iptables applier ----------------------------------------

class _Module:
    def __init__(self, kind, name):
        self.kind, self.name, self.parsed = kind, name, []

    def parse(self, option, value):
        self.parsed.append((option, value))

    def final_check(self):
        """python-iptables': the options read back through shlex and parsed again, then _final_check."""

    def _final_check(self):
        """The extension's own check."""


class _Rule:
    """What build_rule asks of an iptc.Rule: it records the matches and the target it is given."""

    def __init__(self, chain=None):
        self.modules = []

    def create_match(self, name):
        self.modules.append(_Module("match", name))
        return self.modules[-1]

    def create_target(self, name):
        self.modules.append(_Module("target", name))
        return self.modules[-1]


LOCAL_NODE_RULE = ("-d {ip}/32 -m comment --comment \"rule to permit the traffic traffic to pods when source is the "
                   "pod\\'s local node\" -m addrtype --src-type LOCAL -j ACCEPT")   # as iptables-save prints it


def test_the_python_iptables_applier_reads_kube_routers_rules_as_iptables_restore_does():
    from types import SimpleNamespace

    from netlab.kernel.python_iptables import build_rule
    iptc = SimpleNamespace(Rule=_Rule)
    pod_chain = kr.node_table(kr.inputs(lab()), "t-worker").chains[kr.pod_chain("x", "a")]
    assert pod_chain[1] == LOCAL_NODE_RULE.format(ip=ip(lab(), "x/a"))
    rule = build_rule(iptc, LOCAL_NODE_RULE.format(ip="10.244.1.2"), None)    # a comment with an apostrophe
    assert [(m.name, m.parsed) for m in rule.modules] == [
        ("comment", [("comment", "rule to permit the traffic traffic to pods when source is the pod's local node")]),
        ("addrtype", [("src-type", "LOCAL")]), ("ACCEPT", [])]
    # python-iptables would read "pod\\'s" back (shlex keeps the backslash): that round trip is skipped.
    assert rule.modules[0].final_check == rule.modules[0]._final_check
    assert rule.modules[1].final_check != rule.modules[1]._final_check
    rule = build_rule(iptc, '-p tcp -m comment --comment "\\"quoted\\"" -m set --match-set KUBE-SRC-A src '
                            "-m mark ! --mark 0x10000/0x10000 -j RETURN", None)
    assert [(m.name, m.parsed) for m in rule.modules] == [
        ("comment", [("comment", '"quoted"')]), ("set", [("match-set", ["KUBE-SRC-A", "src"])]),
        ("mark", [("mark", "!0x10000/0x10000")]), ("RETURN", [])]
