"""kube-proxy's nftables mode on real labs (issue 14's "Must show"): the probe suite passes
on nftables-mode labs of topologies/services.yaml and loadbalancer.yaml exactly as on their
iptables-mode twins; every node's `ip kube-proxy` table, as `nft list` prints it, is the
plan; reconcile finds nothing to do, and after a hand-made change restores that change and
nothing else; a scale writes only the chains and elements of the Services that select the
Deployment's pods (the ruleset diffed, and `nft monitor` watching); an unknown port of a
ClusterIP is rejected, an unallocated address of the service CIDR dropped.

Four labs at most: each topology once per mode; the iptables ones are up only while they
are probed."""

import ipaddress
import json
import re
import subprocess
import sys
import threading
from collections import Counter
from contextlib import ExitStack
from types import SimpleNamespace

import pytest

from netlab.node.proxy import nftables as kube_proxy
from netlab.values import nftables as nft

from .conftest import TOPOLOGIES, lab_for_module, wait_for

TOPOS = ("services.yaml", "loadbalancer.yaml")
T = "ip kube-proxy"
# The Services of services.yaml whose selector takes the web Deployment's pods and that
# kube-proxy proxies (web-headless has no ClusterIP; elsewhere is another proxy's).
SELECTING_WEB = {"default/web", "default/dual", "default/sticky", "default/web-nodeport", "default/web-local"}


def netlab(*argv):
    return subprocess.run([sys.executable, "-m", "netlab.cli", *argv], capture_output=True, text=True, timeout=600)


def probe_json(lab):
    r = netlab("--lab", lab.name, "probe", "-o", "json")
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout), r.stderr


def failed(checks):
    return [f"{c['name']}: expected {c['expected']}, saw {c['observed']}" for c in checks if c["result"] == "fail"]


def nftables_variant(topology, directory):
    """A copy of a shipped topology whose kind Cluster document says kubeProxyMode: nftables."""
    text = (TOPOLOGIES / topology).read_text()
    head, marker, rest = text.partition("apiVersion: kind.x-k8s.io/v1alpha4\n")
    assert marker and "networking:" not in rest.split("\n---", 1)[0], topology
    path = directory / f"nftables-{topology}"
    path.write_text(head + marker + "networking: {kubeProxyMode: nftables}\n" + rest)
    return path


@pytest.fixture(scope="module")
def iptables_probes(tmp_path_factory):
    """Each topology in iptables mode, up just long enough to be probed: (lab name, probe)."""
    out = {}
    for topology in TOPOS:
        with lab_for_module(TOPOLOGIES / topology, tmp_path_factory) as lab:
            out[topology] = (lab.name, probe_json(lab))
    return out


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    """Each topology in nftables mode, probed before any test changes it, up for the module."""
    directory = tmp_path_factory.mktemp("nftables-variants")
    with ExitStack() as stack:
        out = {}
        for topology in TOPOS:
            lab = stack.enter_context(lab_for_module(nftables_variant(topology, directory), tmp_path_factory))
            out[topology] = SimpleNamespace(lab=lab, probe=probe_json(lab))
        yield out


# --- reading a node's table back -------------------------------------------------------------

def listing(netns):
    r = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "ip", "kube-proxy"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def read_back(node):
    """The node's table as `nft list table ip kube-proxy` prints it, parsed. The elements of
    dynamic sets (the affinity- sets) are the packets' own, added by `update @set` as
    clients connect (the probe's did); kube-proxy never writes them, so they are left out."""
    have = nft.parse_listing(listing(node.netns))
    dynamic = {s for s, spec in have.sets.items() if any(line.startswith("flags") and "dynamic" in line
                                                         for line in spec)}
    return nft.Listed(have.chains, have.sets, {s: {} if s in dynamic else e for s, e in have.elements.items()})


def planned(state, node):
    return nft.listed_table(kube_proxy.node_table(state.services, state.endpoint_slices, node, state.cluster))


def tables_are_planned(lab):
    state = lab.state()
    return all(read_back(node) == planned(state, node) for node in state.nodes)


def run_nft(netns, command):
    subprocess.run(["ip", "netns", "exec", netns, "nft", command], check=True)


_OWNED = re.compile(r"^(?:service|local|external|firewall|endpoint|affinity)-[A-Z2-7]{8}-([^/]+/[^/]+)/")


def owner(name):
    """The Service ("ns/name") of a service port's chain or affinity set, from its name
    (`<prefix><hash>-<ns>/<name>/<proto>/<port>`); None for the fixed chains and sets."""
    m = _OWNED.match(name)
    return m[1] if m else None


def element_owner(state, set_name, key, comment, value):
    """The Service a map or set element is for: the chain its verdict goes to, the
    "ns/name:port" comment kube-proxy gives the no-endpoint elements, or its ClusterIP."""
    target = re.search(r"(?:goto|jump) (\S+)", value or "")
    if target and owner(target[1]):
        return owner(target[1])
    if comment:
        return comment.split(":")[0]
    ip = key.split(" ", 1)[0]
    return next((s.key for s in state.services if s.cluster_ip == ip), f"{set_name}: {key}")


def changed_owners(state, before, after):
    """Whose objects differ between two read-backs: {"chains"|"sets"|"elements": {owner}}."""
    chains = {owner(c) for c in before.chains.keys() | after.chains.keys()
              if before.chains.get(c) != after.chains.get(c)}
    sets = {owner(s) for s in before.sets.keys() | after.sets.keys() if before.sets.get(s) != after.sets.get(s)}
    elements = set()
    for s in before.elements.keys() | after.elements.keys():
        old, new = before.elements.get(s, {}), after.elements.get(s, {})
        elements |= {element_owner(state, s, k, c, old[k, c] if (k, c) in old else new[k, c])
                     for k, c in old.keys() | new.keys() if old.get((k, c)) != new.get((k, c))}
    return {"chains": chains, "sets": sets, "elements": elements}


class Monitor:
    """`nft monitor` in a namespace while a command runs, as a person would watch it: the
    transactions committed there meanwhile, each as the lines nft printed for it. It counts
    as listening once it has printed a marker table the test adds and deletes in that
    namespace, and as having seen everything once it has printed a second one; then it is
    stopped by its own pid."""

    MARK = "netlab-test-monitor"

    def __init__(self, netns):
        self.netns, self.lines = netns, []

    def __enter__(self):
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, "nft", "monitor"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            self._mark("start")
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, kind, *_):
        try:
            if kind is None:
                self._mark("end")
        finally:
            self._stop()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)

    def _mark(self, what):
        table = f"{self.MARK}-{what}"

        def printed():
            if f"add table ip {table}" in self.lines:
                return True
            run_nft(self.netns, f"add table ip {table}; delete table ip {table}")
            return False
        wait_for(printed, timeout=10, every=0.1, what=f"nft monitor in {self.netns} printing {table}")

    def transactions(self, table="ip kube-proxy"):
        """The transactions of `table` between the markers. Others are left out: iptables-nft
        commits kube-router's filter-table writes (a new pod's KUBE-POD-FW- chain) as nf_tables
        transactions of `ip filter` too."""
        groups, current = [], []
        for line in self.lines:
            if line.startswith("# new generation"):
                groups.append(current)
                current = []
            else:
                current.append(line)
        start = next(i for i, g in enumerate(groups) if f"add table ip {self.MARK}-start" in g)
        return [g for g in groups[start + 1:]
                if not any(self.MARK in line for line in g) and any(f" {table} " in line for line in g)]


def line_owner(state, line):
    """The Service an `nft monitor` line is about ("anonymous" for the numgen vmaps' own
    anonymous sets, which go and come with their rule)."""
    words = line.split(" ", 5)
    assert words[1:4] == [words[1], "ip", "kube-proxy"], line
    name = words[4]
    if name.startswith("__map") or name.startswith("__set"):
        return "anonymous"
    if words[1] == "element":
        body = words[5].strip("{} ")
        m = re.match(r'^(?P<key>.+?)(?: comment "(?P<comment>[^"]*)")?(?: : (?P<value>.+))?$', body)
        return element_owner(state, name, m["key"], m["comment"], m["value"])
    return owner(name)


# --- the probe suite, in both modes ----------------------------------------------------------

def comparable(checks, lab_name):
    """What of a probe run two labs of one topology share, whatever their mode: each check's
    area, name, result and skip reason, with what differs between two labs of one file by
    chance alone written as placeholders: the lab's name (a prefix of node names), the
    random suffixes of Deployments' pod names (`web-7889577b54-7j4zw` -> `web-*`), pod IPs
    (they follow the order pods were named in), and node ports the API server picked at
    random. Observed values (which backend answered, an address seen) differ by chance
    between any two runs and are not compared; whether a check ran, passed, or was skipped
    and why, is decided by the lab's objects and their placement, the same for one file in
    both modes, and by what the kernel did."""
    out = []
    for c in checks:
        texts = []
        for text in (c["name"], c.get("skipped") or ""):
            text = text.replace(f"{lab_name}-", "LAB-")
            text = re.sub(r"\b([a-z][a-z0-9-]*?)-[a-z0-9]{8,10}-[a-z0-9]{5}\b", r"\1-*", text)
            text = re.sub(r"\b10\.244\.\d+\.\d+\b", "POD-IP", text)
            text = re.sub(r":3[0-2]\d{3}\b", ":NODEPORT", text)
            texts.append(text)
        out.append((c["area"], texts[0], c["result"], texts[1]))
    return Counter(out)


# What issue 14 names, by topology: (area, a part of a check's name) that must have passed.
NAMED_CHECKS = {
    "services.yaml": [
        ("services", "default/web:http/TCP cluster IP from "),
        ("services", "default/web-nodeport:http/TCP node port "),              # NodePort
        ("services", "default/sticky:80/TCP ClientIP affinity"),                 # affinity
        ("services", "default/web-local:http/TCP node port "),                 # Local policy
        ("services", "default/web:http/TCP hairpin from "),                     # hairpin
        ("services", "default/nobody:http/TCP without endpoints from "),        # no endpoint
        ("dns", "kubernetes.default.svc.cluster.local. A over udp"),             # DNS
    ],
    "loadbalancer.yaml": [
        ("load-balancers", "default/web-lb:80 at "),
        ("load-balancers", "default/web-local-lb:8000 at "),
        ("services", "default/web-local-lb:http/TCP node port "),
        ("dns", "kubernetes.default.svc.cluster.local. A over tcp"),
    ],
}


@pytest.mark.parametrize("topology", TOPOS)
def test_every_probe_check_passes_as_it_does_in_iptables_mode(labs, iptables_probes, topology):
    lab = labs[topology].lab
    code, checks, err = labs[topology].probe
    ipt_name, (ipt_code, ipt_checks, ipt_err) = iptables_probes[topology]
    assert not failed(ipt_checks) and ipt_code == 0, (failed(ipt_checks), ipt_err)     # the baseline holds
    assert not failed(checks), failed(checks)
    assert code == 0, err
    mine, theirs = comparable(checks, lab.name), comparable(ipt_checks, ipt_name)
    assert (sorted((mine - theirs).elements()), sorted((theirs - mine).elements())) == ([], [])
    passed = [(c["area"], c["name"]) for c in checks if c["result"] == "pass"]
    for area, part in NAMED_CHECKS[topology]:
        assert any(a == area and part in name for a, name in passed), (area, part)


# --- the table is the plan -------------------------------------------------------------------

@pytest.mark.parametrize("topology", TOPOS)
def test_every_node_lists_the_planned_table(labs, topology):
    lab = labs[topology].lab
    state = lab.state()
    for node in state.nodes:
        have, want = read_back(node), planned(state, node)
        assert have.chains == want.chains, node.name
        assert have.sets == want.sets, node.name
        assert have.elements == want.elements, node.name
        # nftables mode leaves none of iptables mode's chains (kube-proxy's --cleanup of the other mode).
        nat = lab.iptables(node.name, "nat")
        assert not re.search(r"^:KUBE-(SERVICES|NODEPORTS|SVC-|SEP-|EXT-|POSTROUTING)", nat, re.M), nat


def test_the_table_reads_as_kube_proxy_writes_it(labs):
    """Lines of kube-proxy 1.33's table as nft 1.0.6 prints them (the reference's facts)."""
    lab = labs["services.yaml"].lab
    state = lab.state()
    has_web = {p.node for p in state.pods if p.labels.get("app") == "web" and p.node}
    nobody, local = state.service("default", "nobody"), state.service("default", "web-local")
    for node in state.nodes:
        text = listing(node.netns)
        assert text.startswith('table ip kube-proxy {\n\tcomment "rules for kube-proxy"\n'), text[:80]
        have = nft.parse_listing(text)
        assert have.chains["masquerading"] == (None, None, [
            "meta mark & 0x00004000 == 0x00000000 return", "meta mark set meta mark ^ 0x00004000",
            "masquerade fully-random"])
        assert have.chains["mark-for-masquerade"] == (None, None, ["meta mark set meta mark | 0x00004000"])
        hooks = {name: chain[0] for name, chain in have.chains.items() if chain[0]}
        assert hooks == {
            "filter-prerouting": "type filter hook prerouting priority dstnat - 10; policy accept;",
            "filter-input": "type filter hook input priority -110; policy accept;",
            "filter-forward": "type filter hook forward priority -110; policy accept;",
            "filter-output": "type filter hook output priority -110; policy accept;",
            "filter-output-post-dnat": "type filter hook output priority -90; policy accept;",
            "nat-prerouting": "type nat hook prerouting priority dstnat; policy accept;",
            "nat-output": "type nat hook output priority -100; policy accept;",
            "nat-postrouting": "type nat hook postrouting priority srcnat; policy accept;",
        }
        assert have.chains["nat-prerouting"][2] == ["jump services"]
        assert have.chains["filter-forward"][2] == ["ct state new jump service-endpoints-check",
                                                    "ct state new jump cluster-ips-check"]
        assert have.chains["cluster-ips-check"][2] == [
            'ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
            f'ip daddr {state.cluster.service_subnet} drop comment "Drop traffic to unallocated ClusterIPs"']
        assert have.chains["reject-chain"] == (None, "helper for @no-endpoint-services / @no-endpoint-nodeports",
                                               ["reject"])
        assert have.chains["services"][2] == ["ip daddr . meta l4proto . th dport vmap @service-ips",
                                              "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"]
        assert have.elements["nodeport-ips"] == {(node.ip, None): None}
        service_ips = have.elements["service-ips"]
        assert service_ips[("10.96.0.10 . udp . 53", None)] == "goto service-FY5PMXPG-kube-system/kube-dns/udp/dns"
        assert service_ips[("10.96.0.1 . tcp . 443", None)] == "goto service-2QRHZV4L-default/kubernetes/tcp/https"
        assert have.elements["no-endpoint-services"] == {
            (f"{nobody.cluster_ip} . tcp . 80", "default/nobody:http"): "goto reject-chain"}
        # externalTrafficPolicy Local: a node without a local endpoint drops the NodePort.
        assert have.elements["no-endpoint-nodeports"] == ({} if node.name in has_web else {
            (f"tcp . {local.ports[0].node_port}", "default/web-local:http"): "drop"})
        # Every ClusterIP is in cluster-ips, with or without endpoints.
        assert {k for k, _ in have.elements["cluster-ips"]} >= {nobody.cluster_ip, local.cluster_ip}


def test_a_load_balancer_in_proxy_mode_is_no_vip_of_kube_proxy(labs):
    """cloud-provider-kind's load balancers set ipMode Proxy: kube-proxy captures no traffic
    to their IPs (KEP-1860), only the NodePorts they forward to."""
    state = labs["loadbalancer.yaml"].lab.state()
    lbs = [s for s in state.services if s.type == "LoadBalancer"]
    assert lbs and all(s.load_balancer_ip and s.load_balancer_ip_mode == "Proxy" for s in lbs)
    for node in state.nodes:
        have = read_back(node)
        keys = {k.split(" ")[0] for set_name in ("service-ips", "no-endpoint-services", "firewall-ips")
                for k, _ in have.elements[set_name]}
        assert keys.isdisjoint(s.load_balancer_ip for s in lbs)
        assert {k for k, _ in have.elements["service-nodeports"]} == {f"tcp . {s.ports[0].node_port}" for s in lbs}


# --- a second sync writes nothing; reconcile restores what was changed by hand -----------------

@pytest.mark.parametrize("topology", TOPOS)
def test_reconcile_right_after_up_has_nothing_to_do(labs, topology):
    r = netlab("--lab", labs[topology].lab.name, "reconcile")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "reconcile: nothing to do (0 netlink writes, 0 iptables writes, 0 nftables transactions)\n"


def test_a_change_that_changes_nothing_writes_nothing(labs):
    lab = labs["services.yaml"].lab
    replicas = len([p for p in lab.state().pods if p.labels.get("app") == "web"])
    lab.scale("default", "web", replicas)                          # a partial sync of no change
    assert (lab.last_changes.nft_writes, lab.last_changes.nft_operations) == (0, 0)


def test_reconcile_restores_a_deleted_element_and_a_flushed_chain_and_nothing_else(labs):
    lab = labs["services.yaml"].lab
    state = lab.state()
    node = state.nodes[1]
    web = state.service("default", "web")
    before = read_back(node)
    key = f"{web.cluster_ip} . tcp . 80"
    verdict = before.elements["service-ips"][(key, None)]
    endpoint = next(c for c in before.chains if c.startswith("endpoint-") and "-default/web/tcp/http__" in c)
    rules = before.chains[endpoint][2]
    assert verdict == f"goto {kube_proxy.chain_name('service-', 'default/web/tcp/http')}" and len(rules) == 2

    run_nft(node.netns, f"delete element {T} service-ips {{ {key} }}")
    run_nft(node.netns, f"flush chain {T} {endpoint}")
    damaged = read_back(node)
    assert (key, None) not in damaged.elements["service-ips"] and damaged.chains[endpoint][2] == []

    with Monitor(node.netns) as monitor:
        r = netlab("--lab", lab.name, "reconcile")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "reconcile: 1 change (0 netlink writes, 0 iptables writes, 1 nftables transaction)", r.stdout
    assert len(lines) == 2 and f" {node.netns}: nftables: " in lines[1], r.stdout
    (written,) = monitor.transactions()
    assert sorted(line for line in written if line != f"add chain {T} {endpoint}") == sorted(
        [f"add element {T} service-ips {{ {key} : {verdict} }}"]
        + [f"add rule {T} {endpoint} {rule}" for rule in rules])
    assert read_back(node) == before == planned(lab.state(), node)
    assert tables_are_planned(lab)


# --- a scale writes only the selecting Services' objects -------------------------------------

def test_a_scale_changes_only_the_chains_and_elements_of_the_services_of_its_pods(labs):
    lab = labs["services.yaml"].lab
    state = lab.state()
    replicas = len([p for p in state.pods if p.labels.get("app") == "web"])
    watched = state.nodes[1]
    before = {n.name: read_back(n) for n in state.nodes}

    with Monitor(watched.netns) as monitor:
        r = netlab("--lab", lab.name, "scale", "deployment/web", "--replicas", str(replicas + 1))
    assert r.returncode == 0, r.stderr
    grown = lab.state()
    (new_pod,) = [p for p in grown.pods if p.key not in {q.key for q in state.pods}]
    for node in grown.nodes:
        after = read_back(node)
        changed = changed_owners(grown, before[node.name], after)
        # Each selecting Service gained an endpoint chain (and sticky an affinity set);
        # every other chain, set and element is as it was.
        assert changed["chains"] == SELECTING_WEB, (node.name, changed)
        assert changed["sets"] == {"default/sticky"}, (node.name, changed)
        assert changed["elements"] <= SELECTING_WEB, (node.name, changed)
        new_chains = {c for c in after.chains if c not in before[node.name].chains}
        assert {owner(c) for c in new_chains if f"__{new_pod.ip}/" in c} == SELECTING_WEB
        assert after == planned(grown, node)
    # What was written, as nft monitor saw it: one transaction, of those Services' objects alone.
    (written,) = monitor.transactions()
    assert {line_owner(grown, line) for line in written} <= SELECTING_WEB | {"anonymous"}, written
    assert {line_owner(grown, line) for line in written if line.startswith("add chain")} == SELECTING_WEB

    # Scaled back: the gone pod's endpoint chains are flushed at once, deleted a second or
    # more later (by the next sync), and nothing else but the same Services' objects moved.
    before = {n.name: read_back(n) for n in grown.nodes}
    r = netlab("--lab", lab.name, "scale", "deployment/web", "--replicas", str(replicas))
    assert r.returncode == 0, r.stderr
    shrunk = lab.state()
    (gone_pod,) = [p for p in grown.pods if p.key not in {q.key for q in shrunk.pods}]
    for node in shrunk.nodes:
        after = read_back(node)
        assert changed_owners(shrunk, before[node.name], after)["chains"] == SELECTING_WEB
        stale = {c: rules for c, (_, _, rules) in after.chains.items() if f"__{gone_pod.ip}/" in c}
        assert {owner(c) for c in stale} == SELECTING_WEB and set(map(len, stale.values())) == {0}, stale
        want = planned(shrunk, node)
        assert {c: v for c, v in after.chains.items() if c not in stale} == want.chains
    wait_for(lambda: netlab("--lab", lab.name, "reconcile").returncode == 0 and tables_are_planned(lab),
             timeout=15, every=0.2, what="the flushed chains deleted by a later sync")
    assert not any(f"__{gone_pod.ip}/" in c for n in shrunk.nodes for c in read_back(n).chains)


# --- what the fixed chains answer ------------------------------------------------------------

def test_an_unknown_port_of_a_cluster_ip_is_rejected_and_an_unallocated_address_dropped(labs):
    lab = labs["services.yaml"].lab
    state = lab.state()
    client = state.pod("default", "client")
    node = state.node(client.node)
    web = state.service("default", "web")
    assert 81 not in {p.port for p in web.ports}
    allocated = {s.cluster_ip for s in state.services}
    last = ipaddress.ip_network(state.cluster.service_subnet).broadcast_address
    unallocated = next(str(last - i) for i in range(1, 64) if str(last - i) not in allocated)
    gateway = str(ipaddress.ip_network(node.pod_cidr)[1])          # the client's node, on its cni0
    with lab.prober() as prober:
        # cluster-ips-check: the ClusterIP is active, the port is not: rejected at once by the
        # client's own node, with ICMP port unreachable, which a TCP connect sees as refused.
        knock = prober.knock(client.key, web.cluster_ip, 81)
        assert (knock["reply"], knock.get("type"), knock.get("code"), knock.get("from")) == ("icmp", 3, 3, gateway)
        assert prober.http(client.key, web.cluster_ip, 81)["error"].startswith("ConnectionRefusedError")
        # ... and an address of the service CIDR no Service has is dropped in that node:
        # it arrives on cni0, never leaves by eth0, and nothing answers.
        with prober.capture(node.name, "cni0", f"tcp and dst host {unallocated}") as arrived, \
                prober.capture(node.name, "eth0", f"dst host {unallocated}") as left:
            silent = prober.knock(client.key, unallocated, 80, timeout=1.0)
            connect = prober.http(client.key, unallocated, 80, timeout=1.0)
        assert silent["reply"] == "none", silent
        assert connect["error"].startswith("TimeoutError"), connect
        assert arrived.packets and not left.packets, (arrived.packets, left.packets)
