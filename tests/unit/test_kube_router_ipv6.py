"""kube-router's IPv6 family on a dual-stack node, against kube-router v2.6.3 (pkg/controllers/netpol:
policy.go's networkPolicyChainName and set names hashed with string(v1.IPv6Protocol) and passed
through ipSetName; pkg/utils/ipset.go: the "inet6:" prefix, RefreshSet's `family inet6` option,
buildIPSetRestore's TMP set per option string; pkg/utils/iptables.go: CommonICMPRules(IPv6);
policy.go's evalIPBlockPeer: an IPv6 /0 as 2000::/3 and fd00::/8, the other family's blocks left
to the other handler), and the evaluator's verdicts on IPv6 connections."""

import base64
import hashlib

from netlab.api.spec import (ClusterConfig, Container, ContainerPort, IPBlock, LabelSelector, LabSpec,
                             NetworkPolicyManifest, PodManifest, PodTemplate, PolicyPeer, PolicyPort, PolicyRule)
from netlab.controllers import cluster
from netlab.controllers import networkpolicy as np
from netlab.node.netpol import kube_router as kr
from netlab.values.ipset import IPSet, by_family, changes, parse_save, restore_text


def b32(text):
    """kube-router's names: base32(sha256(text)), its first 16 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def tmp(options):
    """buildIPSetRestore's temporary set: "TMP-" + base32(sha1("tmp:" + options)[:10])."""
    return "TMP-" + base64.b32encode(hashlib.sha1(f"tmp:{options}".encode()).digest()[:10]).decode()


PORTS = (ContainerPort(80, "TCP", "serve-80-tcp"),)


def pod(namespace, name, node):
    return PodManifest(namespace, name, PodTemplate({"pod": name}, (Container("c", ports=PORTS),), node_name=node))


def dual_lab(*policies, dual=True):
    """kind's dual-stack defaults; x/a and x/b on the worker (fd00:10:244:1::/64), y/a on the control plane."""
    six = dict(ip_family="dual", pod_subnet6="fd00:10:244::/56", service_subnet6="fd00:10:96::/112",
               lan_cidr6="fc00:f853:ccd:e793::/64") if dual else {}
    c = ClusterConfig(name="t", roles=("control-plane", "worker"), dns_replicas=0, **six)
    state = cluster.new_state(LabSpec(c, (pod("x", "a", "t-worker"), pod("x", "b", "t-worker"),
                                          pod("y", "a", "t-control-plane"))))
    state.network_policies = list(policies)
    return state


def policy(namespace, name, types=("Ingress",), ingress=(), egress=()):
    return NetworkPolicyManifest(namespace, name, LabelSelector({}), types, ingress, egress)


def table6(state, node="t-worker"):
    return kr.node_plan(state, state.find_node(node)).ip6tables["filter"].chains


def sets(state):
    return {s.name: s for s in kr.ipsets(kr.inputs(state))}


XA, XB, YA = "fd00:10:244:1::2", "fd00:10:244:1::3", "fd00:10:244::2"   # host-local's first addresses, in order


def test_the_pods_have_host_locals_ipv6_addresses_the_tests_rely_on():
    s = dual_lab()
    assert [(p.key, p.ip6) for p in s.pods] == [("x/a", XA), ("x/b", XB), ("y/a", YA)]


# --- names ---------------------------------------------------------------------------------------

def test_ipv6_chain_and_set_names_hash_the_family_and_carry_the_inet6_prefix():
    assert kr.policy_chain("nsA", "simple-egress", family="IPv6") == "KUBE-NWPLCY-" + b32("nsAsimple-egress1IPv6")
    assert kr.policy_chain("nsA", "simple-egress", family="IPv6") != "KUBE-NWPLCY-C23KD7UE4TAT3Y5M"
    assert kr.target_set(kr.DST_PREFIX, "default", "allow-web", "IPv6") == \
        "inet6:KUBE-DST-" + b32("defaultallow-webIPv6")
    assert kr.rule_set(kr.SRC_PREFIX, "x", "p", "ingress", 0, "pod", family="IPv6") == \
        "inet6:KUBE-SRC-" + b32("xpingressrule0IPv6pod")
    assert kr.rule_set(kr.DST_PREFIX, "x", "p", "egress", 2, "ipblock", family="IPv6") == \
        "inet6:KUBE-DST-" + b32("xpegressrule2IPv6ipblock")
    assert kr.rule_set(kr.DST_PREFIX, "x", "p", "ingress", 1, "namedport", 0, "IPv6") == \
        "inet6:KUBE-DST-" + b32("xpingressrule10IPv6namedport")
    # ipset's limit is 31 characters: "inet6:" + "KUBE-DST-" + 16 fits exactly.
    assert len(kr.target_set(kr.DST_PREFIX, "default", "allow-web", "IPv6")) == 31


# --- the ip6tables table -------------------------------------------------------------------------

def test_an_ipv6_pod_chain_uses_its_128_and_rejects_with_icmp6_port_unreachable():
    s = dual_lab(policy("x", "deny"))
    chains = table6(s)
    fw = "KUBE-POD-FW-" + b32("xa1")                # no family in the pod chain's hash: the same name in both
    assert chains[fw] == (
        '-m comment --comment "common bi-directional traffic policy rules" -j KUBE-NWPLCY-COMMON',
        f"-d {XA}/128 -m comment --comment \"rule to permit the traffic traffic to pods when source is the pod\\'s "
        'local node" -m addrtype --src-type LOCAL -j ACCEPT',
        f'-s {XA}/128 -m comment --comment "run through default egress network policy chain" -j KUBE-NWPLCY-DEFAULT',
        f'-d {XA}/128 -m comment --comment "run through nw policy deny" -j KUBE-NWPLCY-' + b32("xdeny1IPv6"),
        '-m comment --comment "rule to log dropped traffic POD name:a namespace: x" -m mark ! --mark 0x10000/0x10000 '
        "-m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100",
        '-m comment --comment "rule to REJECT traffic destined for POD name:a namespace: x" '
        "-m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp6-port-unreachable",
        "-j MARK --set-xmark 0x0/0x10000",
        '-m comment --comment "set mark to ACCEPT traffic that comply to network policies" '
        "-j MARK --set-xmark 0x20000/0x20000",
    )
    to = f'-m comment --comment "rule to jump traffic destined to POD name:a namespace: x to chain {fw}" -j {fw}'
    frm = f'-m comment --comment "rule to jump traffic from POD name:a namespace: x to chain {fw}" -j {fw}'
    bridged = "-m physdev --physdev-is-bridged"
    assert chains["KUBE-ROUTER-FORWARD"][:4] == (f"-d {XA}/128 {to}", f"-d {XA}/128 {bridged} {to}",
                                                 f"-s {XA}/128 {frm}", f"-s {XA}/128 {bridged} {frm}")
    assert chains["KUBE-ROUTER-OUTPUT"][:2] == (f"-d {XA}/128 {to}", f"-s {XA}/128 {frm}")
    # The policy's IPv6 chain, empty (deny all), and only the worker's pods have chains here.
    assert chains["KUBE-NWPLCY-" + b32("xdeny1IPv6")] == ()
    assert {c for c in chains if c.startswith("KUBE-POD-FW-")} == {"KUBE-POD-FW-" + b32("xa1"),
                                                                   "KUBE-POD-FW-" + b32("xb1")}
    assert kr.policy_chain("x", "deny") not in chains                                   # the IPv4 chain's name


def test_the_ipv6_input_head_returns_the_ipv6_service_subnet_and_the_jumps_keep_their_uuids():
    chains = table6(dual_lab())
    text = "allow traffic to primary/secondary cluster IP range"
    uuid = b32("KUBE-ROUTER-INPUT-mcomment--comment" + text + "-dfd00:10:96::/112-jRETURN")
    assert chains["KUBE-ROUTER-INPUT"][0] == f'-d fd00:10:96::/112 -m comment --comment "{text} - {uuid}" -j RETURN'
    head = chains["KUBE-ROUTER-INPUT"]
    assert head[1].startswith("-p tcp ") and "--dports 30000:32767" in head[1] and head[2].startswith("-p udp ")
    assert chains["INPUT"] == ('-m comment --comment "kube-router netpol - 4IA2OSFRMVNDXBVV" -j KUBE-ROUTER-INPUT',)
    assert chains["FORWARD"] == ('-m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD',)
    assert chains["OUTPUT"] == ('-m comment --comment "kube-router netpol - VEAAIY32XVBHCSCY" -j KUBE-ROUTER-OUTPUT',)


def test_the_ipv6_common_chain_accepts_icmpv6s_types_as_ip6tables_save_prints_them():
    """CommonICMPRules(IPv6): echo-request 128, destination-unreachable 1, time-exceeded 3,
    neighbor-solicitation 135, neighbor-advertisement 136, echo-reply 129 (RFC 4443, 4861)."""
    def rule(text, n):
        return f'-p ipv6-icmp -m comment --comment "{text}" -m icmp6 --icmpv6-type {n} -j ACCEPT'
    assert table6(dual_lab())["KUBE-NWPLCY-COMMON"] == (
        '-m comment --comment "\\"rule to drop invalid state for pod\\"" -m conntrack --ctstate INVALID -j DROP',
        '-m comment --comment "\\"rule for stateful firewall for pod\\"" -m conntrack --ctstate RELATED,ESTABLISHED '
        "-j ACCEPT",
        rule("allow icmp echo requests", 128),
        rule("allow icmp destination unreachable messages", 1),
        rule("allow icmp time exceeded messages", 3),
        rule("allow icmp neighbor solicitation messages", 135),
        rule("allow icmp neighbor advertisement messages", 136),
        rule("allow icmp echo reply messages", 129),
    )


def test_k3s_explicit_accept_is_in_ip6tables_builtin_chains_on_a_dual_node_only():
    s = dual_lab()
    accept = ('-m comment --comment "KUBE-ROUTER rule to explicitly ACCEPT traffic that comply to network policies" '
              "-m mark --mark 0x20000/0x20000 -j ACCEPT")
    node = s.find_node("t-worker")
    builtins = ("INPUT", "FORWARD", "OUTPUT")
    assert kr.accept_plan(node, s.cluster).ip6tables["filter"].chains == {b: (accept,) for b in builtins}
    assert kr.accept_plan(node, dual_lab(dual=False).cluster).ip6tables == {}


def test_an_ipv4_lab_has_no_ipv6_side():
    s = dual_lab(policy("x", "deny"), dual=False)
    assert kr.node_plan(s, s.find_node("t-worker")).ip6tables == {}
    assert all(not n.startswith("inet6:") and st.family == "inet" for n, st in sets(s).items())


# --- the IPv6 sets -------------------------------------------------------------------------------

def test_ipv6_sets_hold_the_pods_ipv6_addresses_and_are_created_family_inet6():
    from_b = PolicyRule(peers=(PolicyPeer(pod_selector=LabelSelector({"pod": "b"})),), ports=(PolicyPort("TCP", 80),))
    s = dual_lab(policy("x", "web", ingress=(from_b,)))
    dst6, src6 = "inet6:KUBE-DST-" + b32("xwebIPv6"), "inet6:KUBE-SRC-" + b32("xwebingressrule0IPv6pod")
    dst4, src4 = "KUBE-DST-" + b32("xwebIPv4"), "KUBE-SRC-" + b32("xwebingressrule0IPv4pod")
    assert sets(s) == {
        dst4: IPSet(dst4, "hash:ip", ("10.244.1.2 timeout 0", "10.244.1.3 timeout 0")),
        src4: IPSet(src4, "hash:ip", ("10.244.1.3 timeout 0",)),
        dst6: IPSet(dst6, "hash:ip", (f"{XA} timeout 0", f"{XB} timeout 0"), "inet6"),
        src6: IPSet(src6, "hash:ip", (f"{XB} timeout 0",), "inet6"),
    }
    assert sets(s)[dst6].options == "hash:ip timeout 0 family inet6"
    chain = table6(s)["KUBE-NWPLCY-" + b32("xweb1IPv6")]
    words = (f'-p tcp -m comment --comment "rule to ACCEPT traffic from source pods to dest pods selected by policy '
             f'name web namespace x" -m set --match-set {src6} src -m set --match-set {dst6} dst -m tcp --dport 80')
    assert chain == (f"{words} -j MARK --set-xmark 0x10000/0x10000",
                     f"{words} -m mark --mark 0x10000/0x10000 -j RETURN")
    # Each family is one restore of its own; the IPv6 one fills its own TMP set.
    v4, v6 = by_family(kr.ipsets(kr.inputs(s)))
    t6 = tmp("hash:ip timeout 0 family inet6")
    assert restore_text(v6).splitlines() == [
        f"create {t6} hash:ip timeout 0 family inet6", f"flush {t6}",
        f"add {t6} {XA} timeout 0", f"add {t6} {XB} timeout 0",
        f"create {dst6} hash:ip timeout 0 family inet6", f"swap {t6} {dst6}", f"flush {t6}",
        f"add {t6} {XB} timeout 0",
        f"create {src6} hash:ip timeout 0 family inet6", f"swap {t6} {src6}", f"flush {t6}",
        f"destroy {t6}"]
    assert {st.family for st in v4} == {"inet"} and "family" not in restore_text(v4)


def test_an_ipv6_ipblock_with_except_fills_only_the_ipv6_set_and_an_ipv4_block_only_the_ipv4_one():
    rule = PolicyRule(peers=(PolicyPeer(ip_block=IPBlock("fd00:10:244::/56", ("fd00:10:244:1::/64",))),
                             PolicyPeer(ip_block=IPBlock("10.244.0.0/16", ("10.244.1.0/24",))),
                             PolicyPeer(ip_block=IPBlock("::/0", ("fd00:10:244:1::3/128",)))),
                      ports=(PolicyPort("TCP", 80),))
    s = dual_lab(policy("x", "blocks", ingress=(rule,)))
    src6 = "inet6:KUBE-SRC-" + b32("xblocksingressrule0IPv6ipblock")
    src4 = "KUBE-SRC-" + b32("xblocksingressrule0IPv4ipblock")
    assert sets(s)[src6] == IPSet(src6, "hash:net", (
        "fd00:10:244::/56 timeout 0", "fd00:10:244:1::/64 timeout 0 nomatch",
        "2000::/3 timeout 0", "fd00::/8 timeout 0", "fd00:10:244:1::3/128 timeout 0 nomatch"), "inet6")
    assert sets(s)[src4] == IPSet(src4, "hash:net", ("10.244.0.0/16 timeout 0", "10.244.1.0/24 timeout 0 nomatch"))
    dst6 = "inet6:KUBE-DST-" + b32("xblocksIPv6")
    words = ('-p tcp -m comment --comment "rule to ACCEPT traffic from specified ipBlocks to dest pods selected by '
             f'policy name: blocks namespace x" -m set --match-set {src6} src -m set --match-set {dst6} dst '
             "-m tcp --dport 80")
    assert table6(s)["KUBE-NWPLCY-" + b32("xblocks1IPv6")] == (
        f"{words} -j MARK --set-xmark 0x10000/0x10000", f"{words} -m mark --mark 0x10000/0x10000 -j RETURN")
    # Only IPv6 blocks: the IPv4 side has no ipBlock set and no ipBlock rule.
    s = dual_lab(policy("x", "blocks", ingress=(PolicyRule(peers=rule.peers[:1]),)))
    assert src4 not in sets(s) and src6 in sets(s)
    assert kr.node_table(kr.inputs(s), "t-worker").chains[kr.policy_chain("x", "blocks")] == ()


def test_ipset_save_of_inet6_sets_reads_back_as_planned():
    s = dual_lab(policy("x", "deny"))
    planned = kr.ipsets(kr.inputs(s))
    dst6 = "inet6:KUBE-DST-" + b32("xdenyIPv6")
    saved = (f"create {dst6} hash:ip family inet6 hashsize 1024 maxelem 65536 timeout 0 bucketsize 12 initval 0x1\n"
             f"add {dst6} {XB} timeout 0\nadd {dst6} {XA} timeout 0\n"
             f"create KUBE-DST-{b32('xdenyIPv4')} hash:ip family inet hashsize 1024 maxelem 65536 timeout 0\n"
             "add KUBE-DST-" + b32("xdenyIPv4") + " 10.244.1.2 timeout 0\nadd KUBE-DST-" + b32("xdenyIPv4")
             + " 10.244.1.3 timeout 0\n"
             "create inet6:KUBE-SRC-STALE hash:ip family inet6 hashsize 1024 maxelem 65536 timeout 0\n")
    have = parse_save(saved)
    assert have[dst6].family == "inet6"
    assert changes(planned, have) == ([], ["inet6:KUBE-SRC-STALE"])
    # An IPv4 set of the same name would be of the wrong family: rewritten.
    have[dst6] = IPSet(dst6, "hash:ip", have[dst6].entries)
    assert [st.name for st in changes(planned, have)[0]] == [dst6]


# --- the evaluator on IPv6 -----------------------------------------------------------------------

def test_default_deny_refuses_a_pods_ipv6_address_as_its_ipv4_one_and_an_allow_reopens_both():
    s = dual_lab(policy("x", "deny"))
    assert not np.evaluate(s, XB, XA, 80).allowed
    assert not np.evaluate(s, "10.244.1.3", "10.244.1.2", 80).allowed
    v = np.evaluate(s, XB, XA, 80)
    assert (v.src, v.dst) == ("x/b", "x/a")                  # an IPv6 address a pod holds is that pod
    s = dual_lab(policy("x", "deny"), policy("x", "all", ingress=(PolicyRule(),)))
    assert np.evaluate(s, XB, XA, 80).allowed and np.evaluate(s, "10.244.1.3", "10.244.1.2", 80).allowed


def test_an_ipv6_ipblock_allows_its_client_over_ipv6_only():
    only_b = PolicyRule(peers=(PolicyPeer(ip_block=IPBlock(f"{XB}/128")),))
    s = dual_lab(policy("x", "b6", ingress=(only_b,)))
    ya = s.pod("y", "a")
    assert np.evaluate(s, XB, XA, 80).allowed                 # x/b's IPv6 address is in the block
    assert not np.evaluate(s, YA, XA, 80).allowed             # y/a's is not
    assert not np.evaluate(s, "10.244.1.3", "10.244.1.2", 80).allowed   # over IPv4 the block matches nothing
    assert np.evaluate(s, s.pod("x", "b"), s.pod("x", "a"), 80, family="IPv6").allowed
    assert not np.evaluate(s, s.pod("x", "b"), s.pod("x", "a"), 80).allowed       # pods alone: IPv4
    assert not np.evaluate(s, ya, s.pod("x", "a"), 80, family="IPv6").allowed
    # The same reading through kube-router's one hash:net set per rule and family.
    kube = np.PolicyIndex(s, kube_router=True)
    assert np.evaluate(kube, XB, XA, 80).allowed and not np.evaluate(kube, YA, XA, 80).allowed
    assert not np.evaluate(kube, "10.244.1.3", "10.244.1.2", 80).allowed
    # And an IPv4 block of x/b: IPv4 only.
    s = dual_lab(policy("x", "b4", ingress=(PolicyRule(peers=(PolicyPeer(ip_block=IPBlock("10.244.1.3/32")),)),)))
    assert np.evaluate(s, "10.244.1.3", "10.244.1.2", 80).allowed and not np.evaluate(s, XB, XA, 80).allowed


def test_an_ipv6_ipblock_except_takes_the_client_out():
    rule = PolicyRule(peers=(PolicyPeer(ip_block=IPBlock("fd00:10:244::/56", (f"{XB}/128",))),))
    s = dual_lab(policy("x", "blocks", ingress=(rule,)))
    assert np.evaluate(s, YA, XA, 80).allowed and not np.evaluate(s, XB, XA, 80).allowed
    kube = np.PolicyIndex(s, kube_router=True)
    assert np.evaluate(kube, YA, XA, 80).allowed and not np.evaluate(kube, XB, XA, 80).allowed


def test_icmpv6_and_the_nodes_ipv6_addresses_pass_a_default_deny():
    s = dual_lab(policy("x", "deny"))
    v = np.evaluate(s, YA, XA, None, "icmpv6")
    assert v.allowed and v.protocol == "ICMPv6" and "ICMPv6" in v.explain()
    # kube-router's --src-type LOCAL on the IPv6 side: the worker's eth0 and cni0 (<podCIDR6>::1).
    assert np.evaluate(s, "fc00:f853:ccd:e793::3", XA, 80).allowed
    assert np.evaluate(s, "fd00:10:244:1::1", XA, 80).allowed
    assert not np.evaluate(s, "fc00:f853:ccd:e793::2", XA, 80).allowed    # another node's address
