#!/usr/bin/env python3
"""kube-router's network policy agent at scale: its syncs with 10, 100 and 1,000
NetworkPolicies over 500 pods, against the very same `ipset` and `iptables-restore` calls
replayed raw in the same run; and what a new connection pays with no policy against 1,000.

    sudo .venv/bin/python bench/netpol.py [--policies 10 100 1000] [--pods 500] [--repeat 5]
        [--changes 5] [--connect 0 1000] [--connections 10000] [--per-round 5]

(an empty list, e.g. `--connect`, skips that part).

The cluster: 500 pods on one node, in 10 namespaces (labels team, env), each pod with app,
tier and version labels and two named container ports (http 8080, metrics 9090); N policies of
the shapes clusters have: app-to-app ingress (some on every port), from namespaces by label,
namespace and pod selectors together with a named port, ipBlocks with an except and an
endPort range, egress to the databases and to DNS, matchExpressions, default deny.

Syncs, each the way lab.py's _converge drives the agent (kube_router, IpsetApplier,
RestoreApplier), timed with its planning; every `ipset` and `iptables-restore`/`-save` call it
makes is recorded and replayed, with the same input, into a twin node namespace that is in the
same state (raw: what the tools cost alone; the ratio is the agent's overhead):
  full sync       plan + ipset restore + iptables-restore into a fresh node (median of --repeat)
  unchanged       nothing changed: the full resync (read back with ipset save and iptables-save,
                  compare, write nothing) and the partial sync (its inputs compare equal to the
                  last ones: nothing planned, nothing read, nothing written)
  partial sync    one policy edited (a rule added), or one pod's labels changed: the inputs
                  before and after planned, the sets and chains that differ written
                  (median of --changes, each a different policy or pod)

The connection: a node namespace holding the agent's rules for N policies, a bridge cni0
with two pods' veths, bridge-nf-call-iptables=1 in the node, so a frame from pod to pod goes
through the node's FORWARD -> KUBE-ROUTER-FORWARD -> the pods' KUBE-POD-FW- chains as on a real
node. The client is the first pod of KUBE-ROUTER-FORWARD, the server the last; with policies,
the server is selected by several, and the one rule allowing the client is the last rule of the
policy its pod chain jumps to last. A port no policy allows is checked to be REJECTed by the
server's pod chain (its counter) before anything is measured. The median and the 10th
percentile of many new TCP connections (each a new conntrack entry, closed with RST: an
established connection's packets are accepted by KUBE-NWPLCY-COMMON before any policy), taken
a few at a time over every point in turn; a point with no agent (an empty filter table) is the
kernel's own cost.
"""

import argparse
import gc
import hashlib
import ipaddress
import os
import random
import re
import signal
import socket
import statistics
import struct
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import Namespaces, ip_batch  # noqa: E402
from netlab.api.objects import Pod  # noqa: E402
from netlab.api.spec import (ClusterConfig, Container, ContainerPort, IPBlock, LabelSelector,  # noqa: E402
                             NetworkPolicyManifest, PodTemplate, PolicyPeer, PolicyPort, PolicyRule)
from netlab.errors import NetlabError  # noqa: E402
from netlab.kernel import netns as ns  # noqa: E402
from netlab.kernel.ipset import IpsetApplier  # noqa: E402
from netlab.kernel.ipset import current as current_sets  # noqa: E402
from netlab.kernel.iptables_restore import RestoreApplier  # noqa: E402
from netlab.kernel.iptables_restore import parse_save as parse_iptables_save  # noqa: E402
from netlab.node.netpol import kube_router  # noqa: E402
from netlab.values import ipset as values_ipset  # noqa: E402

NODE = "bench-node"
NAMESPACES = 10
POD_NET = ipaddress.ip_network("10.244.0.0/22")     # the node's pods: 500 need more than a /24
GATEWAY = "10.244.0.1"
ALLOWED, DENIED = 9999, 9998                        # the server's ports: no generated policy names them
ALLOW_POLICY = "allow-load-client"                  # sorts first in its namespace: the pod chain's last jump
CLIENT_LABELS = {"app": "load-client"}              # selected by no generated policy
RESET_ON_CLOSE = struct.pack("ii", 1, 0)    # SO_LINGER 0: close sends RST, no TIME_WAIT, a new port each time
# The server's listeners defer accept: the handshake's last ACK carries no data, so the kernel
# keeps the request and never wakes the server (the client's RST removes it). A connect() then
# times the path alone, not the wake-up of a process that may be waiting on the other core.
SERVER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
    s.bind(("0.0.0.0", int(port)))
    s.listen(4096)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        try:
            c, _ = key.fileobj.accept()
            c.close()
        except BlockingIOError:
            pass
"""


# --- the cluster --------------------------------------------------------------------------------

def namespace(i):
    return f"ns{i}"


def pod_ip(k):
    return str(POD_NET.network_address + 2 + k)


def make_pod(k):
    """Pod k of the node: namespace k % 10, the (k // 10)th of its namespace."""
    j = k // NAMESPACES
    labels = {"app": f"app-{j % 10}", "tier": ("web", "api", "db")[j % 3], "version": f"v{1 + j % 2}"}
    ports = (ContainerPort(8080, "TCP", "http"), ContainerPort(9090, "TCP", "metrics"))
    template = PodTemplate(labels, (Container("main", ports=ports),))
    return Pod(namespace(k % NAMESPACES), f"pod-{j:03d}", f"uid-{k}", NODE, template, f"cid-{k}", "", "", ip=pod_ip(k))


def generated(i):
    """Policy i: in namespace i % 10, selecting app-((i // 10) % 10) (each app of each
    namespace gets every 100th policy), of a shape drawn from policy i's own seed."""
    rng = random.Random(i)
    ns_name, name = namespace(i % NAMESPACES), f"np-{i:04d}"
    selector = LabelSelector({"app": f"app-{(i // 10) % 10}"})

    def ingress(*rules, pods=selector):
        return NetworkPolicyManifest(ns_name, name, pods, ("Ingress",), rules)

    def tcp(port, end=None):
        return PolicyPort("TCP", port, end)
    x = rng.random()
    if x < 0.35:                 # app to app in the namespace, on 8080 or every port
        ports = () if rng.random() < 0.3 else (tcp(8080),)
        return ingress(PolicyRule((PolicyPeer(LabelSelector({"app": f"app-{rng.randrange(10)}"})),), ports))
    if x < 0.55:                 # from every pod of a team's namespaces
        return ingress(PolicyRule((PolicyPeer(None, LabelSelector({"team": f"team-{rng.randrange(3)}"})),),
                                  (tcp(80), tcp(443))))
    if x < 0.70:                 # from the web tier of the prod namespaces, to the named port
        return ingress(PolicyRule((PolicyPeer(LabelSelector({"tier": "web"}), LabelSelector({"env": "prod"})),),
                                  (tcp("http"),)))
    if x < 0.80:                 # from outside the cluster: ipBlocks, an except, a port range
        blocks = (PolicyPeer(ip_block=IPBlock("192.168.0.0/16", ("192.168.1.0/24",))),
                  PolicyPeer(ip_block=IPBlock("172.16.0.0/12")))
        return ingress(PolicyRule(blocks, (tcp(443), tcp(30000, 30100))))
    if x < 0.92:                 # egress to the databases and to DNS
        rules = (PolicyRule((PolicyPeer(LabelSelector({"tier": "db"})),), (tcp(5432),)),
                 PolicyRule((PolicyPeer(None, LabelSelector({"kubernetes.io/metadata.name": namespace(0)})),),
                            (PolicyPort("UDP", 53), tcp(53))))
        return NetworkPolicyManifest(ns_name, name, selector, ("Egress",), (), rules)
    if x < 0.97:                 # matchExpressions on both sides, to the metrics port
        return ingress(PolicyRule((PolicyPeer(LabelSelector({}, (("app", "NotIn", ("app-0",)),))),), (tcp("metrics"),)),
                       pods=LabelSelector({}, (("tier", "In", ("web", "api")),)))
    return ingress(pods=LabelSelector())        # default deny ingress for the namespace


def allow_policy(server):
    """The policy that lets the client reach the server's ALLOWED port: its last rule, after
    three that do not match the client."""
    client_peer = PolicyPeer(LabelSelector(CLIENT_LABELS), LabelSelector({"kubernetes.io/metadata.name": namespace(0)}))
    rules = (PolicyRule((PolicyPeer(LabelSelector({"app": "app-3"})),), (PolicyPort("TCP", 8080),)),
             PolicyRule((PolicyPeer(None, LabelSelector({"team": "team-1"})),), (PolicyPort("TCP", 443),)),
             PolicyRule((PolicyPeer(ip_block=IPBlock("192.168.0.0/16")),), (PolicyPort("TCP", ALLOWED),)),
             PolicyRule((client_peer,), (PolicyPort("TCP", ALLOWED),)))
    return NetworkPolicyManifest(server.namespace, ALLOW_POLICY, LabelSelector({"app": server.labels["app"]}),
                                 ("Ingress",), rules)


def cluster(n_policies, n_pods):
    """The state the agent reads: n_pods pods on the node (the first is the client, the last
    the server), their namespaces' labels, n_policies policies (the allow policy among them)."""
    pods = [make_pod(k) for k in range(n_pods)]
    pods[0].template = replace(pods[0].template, labels=dict(CLIENT_LABELS))
    server = max(pods, key=lambda p: (p.namespace, p.name))
    policies = [generated(i) for i in range(n_policies - 1)] + ([allow_policy(server)] if n_policies else [])
    namespaces = {namespace(i): {"labels": {"team": f"team-{i % 3}", "env": "prod" if i < 6 else "dev"}}
                  for i in range(NAMESPACES)}
    return SimpleNamespace(pods=pods, namespaces=namespaces, network_policies=policies,
                           cluster=ClusterConfig(service_subnet="10.96.0.0/12"))


def client_and_server(state):
    pods = sorted(state.pods, key=lambda p: (p.namespace, p.name))
    return pods[0], pods[-1]


def edited(policy):
    """One policy edited as a person edits one: a rule added (from app-1 pods on TCP 8081)."""
    rule = PolicyRule((PolicyPeer(LabelSelector({"app": "app-1"})),), (PolicyPort("TCP", 8081),))
    types = policy.policy_types if "Ingress" in policy.policy_types else ("Ingress", *policy.policy_types)
    return replace(policy, policy_types=types, ingress=policy.ingress + (rule,))


def relabel(pod):
    """One pod's labels changed: it moves to the next app (other policies select it now)."""
    app = int(pod.labels["app"].removeprefix("app-"))
    pod.template = replace(pod.template, labels={**pod.labels, "app": f"app-{(app + 1) % 10}"})


# --- the agent, as lab.py's _converge drives it --------------------------------------------------

class Recorder:
    """Every tool call the appliers make through netns.run, with its input, to replay raw."""

    def __init__(self):
        self.calls = []
        self._run = ns.run

    def __enter__(self):
        def run(name, argv, **kwargs):
            self.calls.append((list(argv), kwargs.get("input")))
            return self._run(name, argv, **kwargs)
        ns.run = run
        return self

    def __exit__(self, *exc):
        ns.run = self._run


def replay(netns, calls):
    """The recorded calls again, the same way the appliers run them (a child in the netns)."""
    for argv, text in calls:
        out = ns.run(netns, argv, input=text, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{netns}: {' '.join(argv)} failed in the raw replay: {out.stderr.strip()}")


def replayed(netns, calls):
    """The time of the raw replay (none when the agent made no call)."""
    return timed(lambda: replay(netns, calls))[0] if calls else 0.0


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def full_sync(netns, state, fresh):
    """lab.py's full sync of one node: plan, sets written before the rules that match on them,
    the filter table, stale sets destroyed after. Returns (plan s, write s, writes, calls, inputs)."""
    start = time.perf_counter()
    inp, compiled = kube_router.read(state)
    table = kube_router.node_table(inp, NODE, compiled)
    planned = time.perf_counter()
    ipsets, iptables = IpsetApplier(), RestoreApplier()
    with Recorder() as rec:
        stale = ipsets.sync(netns, compiled.sets, fresh=fresh)
        iptables.apply(netns, {"filter": table}, fresh=fresh)
        ipsets.destroy(netns, stale)
    done = time.perf_counter()
    return planned - start, done - planned, ipsets.writes + iptables.writes, rec.calls, inp


def partial_sync(netns, old, state):
    """lab.py's partial sync: the last inputs and these compared; if they differ, both planned
    (the old policies compiled again, as lab.py does), the sets that differ written, the
    chains that differ written, stale sets destroyed. Returns (plan s, write s, writes,
    calls, inputs, chains written, sets written)."""
    start = time.perf_counter()
    inp = kube_router.inputs(state)
    if inp == old:
        return time.perf_counter() - start, 0.0, 0, [], inp, 0, 0
    before, after = kube_router.policies(old), kube_router.policies(inp)
    set_write, set_stale = values_ipset.changes(after.sets, {s.name: s for s in before.sets})
    write, stale = kube_router.sync_changes(old, inp, NODE, before, after)
    planned = time.perf_counter()
    ipsets, iptables = IpsetApplier(), RestoreApplier()
    with Recorder() as rec:
        ipsets.write(netns, set_write)
        iptables.apply_changes(netns, {"filter": (write, stale)} if write or stale else {})
        ipsets.destroy(netns, set_stale)
    done = time.perf_counter()
    return (planned - start, done - planned, ipsets.writes + iptables.writes, rec.calls, inp,
            len(write) + len(stale), len(set_write) + len(set_stale))


def node_content(netns):
    """What the agent keeps in a node: its filter chains and its sets' members."""
    out = ns.run(netns, ["iptables-save", "-t", "filter"], capture_output=True, text=True, check=True)
    return parse_iptables_save(out.stdout), {n: (s.type, s.members()) for n, s in current_sets(netns).items()}


# --- the syncs -----------------------------------------------------------------------------------

def measure_sync(scratch, n, n_pods, repeat, n_changes):
    row = {"policies": n}
    full, raw = [], []
    kept = None
    for r in range(repeat):
        agent, twin = scratch.create(f"sync{n}.{r}"), scratch.create(f"sync{n}.{r}.raw")
        state = cluster(n, n_pods)
        plan_s, write_s, writes, calls, inp = full_sync(agent, state, fresh=True)
        raw_s = replayed(twin, calls)
        full.append((plan_s, write_s, writes))
        raw.append(raw_s)
        if kept is None:
            kept = agent, twin, state, inp
        else:
            scratch.drop(agent)
            scratch.drop(twin)
    agent, twin, state, old = kept
    if node_content(agent) != node_content(twin):
        raise SystemExit(f"{n} policies: the raw replay did not make the node the agent made")
    compiled = kube_router.policies(old)
    table = kube_router.node_table(old, NODE, compiled)
    row["rules"] = sum(len(rules) for rules in table.chains.values())
    row["sets"], row["entries"] = len(compiled.sets), sum(len(s.entries) for s in compiled.sets)
    row["full plan"] = statistics.median(f[0] for f in full)
    row["full write"] = statistics.median(f[1] for f in full)
    row["full"] = statistics.median(f[0] + f[1] for f in full)
    row["full writes"] = statistics.median(f[2] for f in full)
    row["full raw"] = statistics.median(raw)

    unchanged, unchanged_raw = [], []
    for _ in range(repeat):
        plan_s, write_s, writes, calls, _ = full_sync(agent, state, fresh=False)
        assert writes == 0, f"{n} policies: an unchanged full resync wrote {writes} times"
        unchanged.append(plan_s + write_s)
        unchanged_raw.append(replayed(twin, calls))
    row["unchanged"], row["unchanged raw"] = statistics.median(unchanged), statistics.median(unchanged_raw)
    partial_s, _, writes, calls, _, _, _ = partial_sync(agent, old, state)
    assert writes == 0 and not calls, f"{n} policies: an unchanged partial sync wrote or read"
    row["unchanged partial"] = partial_s

    for kind, change in (("policy", edit_policy), ("pod", relabel_pod)):
        runs = []
        for i in picks(len(state.network_policies) if kind == "policy" else len(state.pods), n_changes):
            change(state, i)
            plan_s, write_s, writes, calls, old, chains, sets = partial_sync(agent, old, state)
            raw_s = replayed(twin, calls)
            runs.append((plan_s + write_s, raw_s, writes, chains, sets))
        if runs:
            row[kind] = {key: statistics.median(r[k] for r in runs)
                         for k, key in enumerate(("time", "raw", "writes", "chains", "sets"))}
    _, _, writes, _, _ = full_sync(agent, state, fresh=False)       # the partial syncs converged the node
    assert writes == 0, f"{n} policies: the node differs from the plan after the partial syncs"
    if node_content(agent) != node_content(twin):
        raise SystemExit(f"{n} policies: the raw replay of the partial syncs did not follow the agent")
    scratch.drop(agent)
    scratch.drop(twin)
    return row


def picks(count, k):
    """k indices spread over range(count), none the first or the last (the client and the
    server, or the allow policy)."""
    inner = list(range(1, count - 1))
    if not inner or k <= 0:
        return []
    return sorted({inner[(j * len(inner)) // k] for j in range(min(k, len(inner)))})


def edit_policy(state, i):
    state.network_policies[i] = edited(state.network_policies[i])


def relabel_pod(state, i):
    relabel(state.pods[i])


# --- the connection ------------------------------------------------------------------------------

def wire(scratch, node, tag, client, server):
    """The two pods' namespaces on the node's bridge cni0, their veths named as the CNI names
    them; bridged frames go through the node's iptables (bridge-nf-call-iptables, per netns).
    The server listens on ALLOWED and DENIED. Returns the client's namespace."""
    pods = {}
    batch = ["link set lo up", "link add cni0 type bridge", f"addr add {GATEWAY}/{POD_NET.prefixlen} dev cni0",
             "link set cni0 up"]
    for role, pod in (("client", client), ("server", server)):
        pods[role] = scratch.create(f"{tag}.{role}")
        veth = "veth" + hashlib.sha1(pod.key.encode()).hexdigest()[:8]
        batch += [f"link add {veth} type veth peer name eth0 netns {pods[role]}", f"link set {veth} master cni0",
                  f"link set {veth} up"]
    ip_batch(node, batch)
    ns.write_sysctl(node, "net/bridge/bridge-nf-call-iptables", 1)
    for role, pod in (("client", client), ("server", server)):
        ip_batch(pods[role], ["link set lo up", f"addr add {pod.ip}/{POD_NET.prefixlen} dev eth0", "link set eth0 up",
                              f"route add default via {GATEWAY}"])
    proc = scratch.start(pods["server"], [sys.executable, "-c", SERVER, str(ALLOWED), str(DENIED)])
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"{pods['server']}: the TCP server did not start")
    return pods["client"]


def connect_times(client, ip, port, count):
    """count new TCP connections from the client pod to ip:port: the connect() time of each, in s."""
    times = []
    with ns.entered(client):
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
                s.settimeout(5)
                start = time.perf_counter()
                s.connect((ip, port))
                times.append(time.perf_counter() - start)
            finally:
                s.close()
    return times


def refused(client, ip, port):
    try:
        connect_times(client, ip, port, 1)
    except ConnectionRefusedError:
        return True
    return False


_COUNTED = re.compile(r"^\[(\d+):\d+\] -A (\S+) (.*)$")


def counters(node):
    """{(chain, rule): packets} of the node's filter table."""
    out = ns.run(node, ["iptables-save", "-c", "-t", "filter"], capture_output=True, text=True, check=True)
    return {(m[2], m[3]): int(m[1]) for m in map(_COUNTED.match, out.stdout.splitlines()) if m}


def load_connect(scratch, n, n_pods):
    """One point: a node with the agent's rules for n policies (None: no agent at all), the
    two pods around it, and the checks that the layout filters as a node does."""
    state = cluster(n or 0, n_pods)
    client, server = client_and_server(state)
    tag = f"conn{'none' if n is None else n}"
    node = scratch.create(f"{tag}.node")
    row = {"policies": n, "server ip": server.ip}
    if n is not None:
        full_sync(node, state, fresh=True)
        inp, compiled = kube_router.read(state)
        row["selecting"] = len(compiled.selecting.get(server.ip, []))
    row["client"] = wire(scratch, node, tag, client, server)
    try:
        connect_times(row["client"], server.ip, ALLOWED, 1)
    except OSError as e:
        raise SystemExit(f"{tag}: the client pod cannot reach the server pod {server.ip}:{ALLOWED}: {e}") from None
    if n is None:
        return row
    pod_chain = kube_router.pod_chain(server.namespace, server.name)
    seen = counters(node)
    jumped = sum(p for (chain, rule), p in seen.items() if chain == kube_router.FORWARD and rule.endswith(pod_chain))
    if not jumped:
        raise SystemExit(f"{tag}: the connection did not go through {kube_router.FORWARD} to {pod_chain}")
    if row["selecting"]:
        policy = kube_router.policy_chain(server.namespace, ALLOW_POLICY)
        chain = kube_router.node_table(inp, NODE, compiled).chains[pod_chain]
        jumps = [r for r in chain if " -j KUBE-NWPLCY-" in r and not r.endswith(kube_router.DEFAULT)
                 and not r.endswith(kube_router.COMMON)]
        assert jumps[-1].endswith(policy), "the allow policy is not the pod chain's last jump"
        mark = compiled.chains[policy][-2]
        assert f"--dport {ALLOWED}" in mark and seen.get((policy, mark), 0) > 0, \
            f"{tag}: the client was not allowed by the last rule of {ALLOW_POLICY}"
        reject = next(r for r in chain if "-j REJECT" in r)
        if not refused(row["client"], server.ip, DENIED):
            raise SystemExit(f"{tag}: a port no policy allows ({DENIED}) was not refused: the layout does not "
                             "filter as a node does")
        if counters(node).get((pod_chain, reject), 0) <= seen.get((pod_chain, reject), 0):
            raise SystemExit(f"{tag}: port {DENIED} was refused, but not by {pod_chain}'s REJECT")
        row["reject checked"] = True
    elif refused(row["client"], server.ip, DENIED):
        raise SystemExit(f"{tag}: with no policy selecting the server, port {DENIED} was refused")
    return row


def measure_connect(scratch, sizes, n_pods, connections, per_round):
    """The points loaded, then the samples taken in short rounds over all of them in turn (in
    the reverse order every other round), so what the machine does meanwhile falls on every
    point alike. Per point: the median and the 10th percentile (the fastest tenth: the cost of
    the path itself, the least touched by other work) of every sample."""
    rows = {}
    for n in [None, *sizes]:
        print(f"  loading the connection layout, {'no agent' if n is None else f'{n:,} policies'} ...",
              file=sys.stderr, flush=True)
        rows[n] = load_connect(scratch, n, n_pods)
    samples = {n: [] for n in rows}
    gc.disable()
    try:
        for r in range(max(1, connections // per_round)):
            for n in list(rows)[::-1 if r % 2 else 1]:
                samples[n] += connect_times(rows[n]["client"], rows[n]["server ip"], ALLOWED, per_round)
    finally:
        gc.enable()
    for n, times in samples.items():
        rows[n]["connect"], rows[n]["connections"] = statistics.median(times), len(times)
        rows[n]["p10"] = statistics.quantiles(times, n=10)[0] if len(times) > 1 else times[0]
    return rows


# --- the report ----------------------------------------------------------------------------------

def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def ms(seconds):
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def report_sync(rows, n_pods, repeat, n_changes):
    print(f"{'policies':>8} {'rules':>7} {'sets':>5} {'entries':>8} {'full sync':>11} {'(plan':>10} {'write)':>11}"
          f" {'raw tools':>11} {'ratio':>6} {'writes':>6}   {'unchanged':>11} {'raw tools':>11} {'ratio':>6}"
          f" {'writes':>6}   {'unchanged partial':>17}")
    for r in rows:
        print(f"{r['policies']:>8,} {r['rules']:>7,} {r['sets']:>5,} {r['entries']:>8,} {ms(r['full']):>11}"
              f" {ms(r['full plan']):>10} {ms(r['full write']):>11} {ms(r['full raw']):>11}"
              f" {ratio(r['full'], r['full raw']):>6} {r['full writes']:>6.0f}   {ms(r['unchanged']):>11}"
              f" {ms(r['unchanged raw']):>11} {ratio(r['unchanged'], r['unchanged raw']):>6} {0:>6}"
              f"   {ms(r['unchanged partial']):>17}")
    print(f"\none node, {n_pods} local pods in {NAMESPACES} namespaces; rules, sets, entries: the agent's filter rules "
          "and its KUBE-SRC-/KUBE-DST- sets; full sync: plan + ipset restore + iptables-restore into a fresh node; "
          "raw tools: the very same calls with the same input replayed into a twin node; ratio: agent / raw; "
          "writes: ipset and iptables-restore calls that write; unchanged: a full resync with nothing changed "
          "(ipset save + iptables-save, compare; 0 writes); unchanged partial: the partial sync's check (the "
          f"inputs compare equal: nothing read or written); medians of {repeat}\n")
    if not any("policy" in r or "pod" in r for r in rows):
        return
    print(f"{'policies':>8} {'change':<15} {'partial sync':>13} {'raw tools':>11} {'ratio':>6} {'writes':>6}"
          f" {'chains':>7} {'sets':>5} {'partial/full':>13}")
    for r in rows:
        for kind, label in (("policy", "policy edited"), ("pod", "pod relabelled")):
            if kind in r:
                p = r[kind]
                print(f"{r['policies']:>8,} {label:<15} {ms(p['time']):>13} {ms(p['raw']):>11}"
                      f" {ratio(p['time'], p['raw']):>6} {p['writes']:>6.0f} {p['chains']:>7.0f} {p['sets']:>5.0f}"
                      f" {p['time'] / r['full']:>13.3f}")
    print("\npartial sync: one policy gains a rule, or one pod moves to another app; plan the inputs before and "
          "after, write the sets and chains that differ (chains, sets: how many written or removed); raw tools: "
          "the same calls replayed; partial/full: against the full sync into a fresh node; medians of "
          f"{n_changes} changes, each a different policy or pod\n")


def report_connect(rows, n_pods, per_round):
    base = rows.get(0)
    print(f"{'policies':>12} {'selecting the server':>21} {'median':>9} {'ratio to no policy':>19}"
          f" {'ratio to no agent':>18} {'10th pct':>9} {'ratio to no policy':>19} {'ratio to no agent':>18}")
    for n, r in rows.items():
        label = "no agent" if n is None else f"{n:,}"
        selecting = "" if n is None else str(r["selecting"])
        cells = []
        for key in ("connect", "p10"):
            ratio = f"{r[key] / base[key]:.2f}" if base and n is not None else ""
            cells.append(f"{r[key] * 1e6:>6.1f} µs {ratio:>19} {r[key] / rows[None][key]:>18.2f}")
        print(f"{label:>12} {selecting:>21} " + " ".join(cells))
    count = rows[None]["connections"]
    print(f"\nthe time of connect() from a client pod to a server pod on the same node's bridge, through the node's "
          f"FORWARD -> {kube_router.FORWARD} ({n_pods} pods' jumps, the client's first, the server's last) -> the "
          f"pods' chains: median and 10th percentile of {count} new connections per point (each a new conntrack "
          f"entry, closed with RST), taken {per_round} at a time over all points in turn; no agent: the same layout "
          f"with an empty filter table; with policies, port {DENIED} (no policy allows it) was checked to be "
          "REJECTed by the server's pod chain first\n")
    top = max((n for n in rows if n), default=None)
    if base and top:
        print(f"a new connection pays {rows[top]['connect'] / base['connect']:.2f}x (median; "
              f"{rows[top]['p10'] / base['p10']:.2f}x at the 10th percentile) with {top:,} policies against none, "
              f"and {base['connect'] / rows[None]['connect']:.2f}x ({base['p10'] / rows[None]['p10']:.2f}x) for the "
              f"agent's {n_pods} pod chains with no policy against no agent")


def _terminated(signum, frame):
    raise SystemExit(128 + signum)          # unwinds through the finally blocks that clean up


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, nargs="*", default=[10, 100, 1000], help="sizes of the sync table")
    parser.add_argument("--pods", type=int, default=500, help="pods on the node")
    parser.add_argument("--repeat", type=int, default=5, help="full and unchanged syncs per size (their median)")
    parser.add_argument("--changes", type=int, default=5, help="partial syncs per size and kind of change")
    parser.add_argument("--connect", type=int, nargs="*", default=[0, 1000],
                        help="policy counts of the connection-setup points (a point with no agent is added)")
    parser.add_argument("--connections", type=int, default=10000, help="new connections per point")
    parser.add_argument("--per-round", type=int, default=5,
                        help="connections to one point before the next point's (the points taken in turn)")
    args = parser.parse_args()
    if args.repeat < 1 or args.connections < 1 or args.per_round < 1 or args.changes < 0:
        parser.error("--repeat, --connections and --per-round take a positive number, --changes zero or more")
    if not 2 <= args.pods <= POD_NET.num_addresses - 3:
        parser.error(f"--pods takes 2 to {POD_NET.num_addresses - 3} (the node's pod network is {POD_NET})")
    if any(n < 0 for n in args.policies + args.connect):
        parser.error("--policies and --connect take policy counts, 0 or more")
    if os.geteuid() != 0:
        raise SystemExit("bench/netpol.py makes network namespaces: run it as root")
    signal.signal(signal.SIGTERM, _terminated)
    scratch = Namespaces("np.")
    try:
        if args.policies:
            rows = []
            for n in args.policies:
                print(f"  syncs with {n:,} policies ...", file=sys.stderr, flush=True)
                rows.append(measure_sync(scratch, n, args.pods, args.repeat, args.changes))
            report_sync(rows, args.pods, args.repeat, args.changes)
        if args.connect:
            rows = measure_connect(scratch, args.connect, args.pods, args.connections, args.per_round)
            report_connect(rows, args.pods, args.per_round)
    except NetlabError as e:
        raise SystemExit(str(e)) from None
    finally:
        scratch.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:                # the namespaces and servers are gone already
        sys.exit(130)
