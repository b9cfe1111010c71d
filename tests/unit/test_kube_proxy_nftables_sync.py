"""kube-proxy's partial sync in nftables mode, driven by lab.py's `_sync_nftables` (the
planner's `sync`, then `NftApplier.partial`), written into a recording fake kernel: the
operation counts kube-proxy's own tests count (a Service without endpoints 2, its first
endpoint 10, a second 12, nothing changed 0), stale chains flushed at once and deleted more
than a second later, stale affinity sets deleted at once, and every sync ending where a full
sync of the same objects would (the table equals the plan)."""

import copy
import re
from types import SimpleNamespace

import pytest

from netlab.api.objects import SERVICE_NAME_LABEL, EndpointSlice, Port, SliceEndpoint
from netlab.api.spec import ServiceManifest, ServicePort
from netlab.kernel import nft as nft_kernel
from netlab.lab import Lab
from netlab.node.proxy import nftables as kube_proxy
from netlab.values import nftables as nft

NODE = SimpleNamespace(name="node1", ip="192.168.0.2", netns="t-node1")
CLUSTER = SimpleNamespace(pod_subnet="10.0.0.0/8", service_subnet="172.30.0.0/16")
P80 = (ServicePort(80, "TCP", "p80", 80),)
T = "ip kube-proxy"


# --- the objects (the style of test_kube_proxy_nftables.py) ----------------------------------

def service(ns, name, ip, ports=P80, **kw):
    return ServiceManifest(ns, name, kw.pop("labels", {}), cluster_ip=ip, ports=ports, selector={"app": name}, **kw)


def slice_of(svc, *endpoints, ports=None):
    """One EndpointSlice of ready endpoints: (ip, node), with the Service's ports by default."""
    eps = tuple(SliceEndpoint((ip,), ready=True, serving=True, terminating=False, node=node, pod=f"p{i}")
                for i, (ip, node) in enumerate(endpoints))
    ports = ports or tuple(Port(p.name, p.target_port, p.protocol) for p in svc.ports)
    return EndpointSlice(svc.namespace, f"{svc.name}-abcde", {SERVICE_NAME_LABEL: svc.name}, endpoints=eps,
                         ports=ports)


SVC1 = service("ns1", "svc1", "172.30.0.41")
SVC3 = service("ns3", "svc3", "172.30.0.43", type="NodePort", external_traffic_policy="Cluster",
               ports=(ServicePort(80, "TCP", "p80", 80, node_port=3003),))
OTHERS = [SVC1, SVC3]
OTHER_SLICES = [slice_of(SVC1, ("10.180.0.1", "node2")), slice_of(SVC3, ("10.180.0.3", "node2"))]
SVC6 = service("ns6", "svc6", "172.30.0.46")
STICKY = service("ns7", "sticky", "172.30.0.47", session_affinity="ClientIP", affinity_timeout=10800)


def chain(prefix, svc, endpoint=None, port=None):
    port = port or svc.ports[0]
    base = kube_proxy.endpoint_base(svc, port, endpoint) if endpoint else kube_proxy.port_base(svc, port)
    return kube_proxy.chain_name(prefix, base)


# --- a fake kernel ---------------------------------------------------------------------------

class Refused(Exception):
    """What `nft -f` would fail with."""


_LINE = re.compile(r"^(add|flush|delete) (table|chain|rule|set|map|element) ip kube-proxy(?: (\S+))?(?: (.*))?$")
_TARGET = re.compile(r"\b(?:jump|goto) (\S+)")
_SET_REF = re.compile(r"@(\S+)")
_ELEMENT = re.compile(r'^\{ (?P<key>.+?)(?: comment "(?P<comment>[^"]*)")?(?: : (?P<value>.+?))? \}$')


class FakeKernel:
    """One node's `ip kube-proxy` table as the kernel keeps it, changed by `nft -f`
    transactions only (all or nothing), refusing what the kernel refuses (seen with nft
    1.0.6 on this machine's kernel): a rule, element or flush naming a chain or set that is
    not there (ENOENT); an element added again with another verdict (EEXIST); deleting an
    element that is not there (ENOENT); deleting a chain a rule or element still points at,
    or a set a rule names (EBUSY). Adding a set that exists takes the new spec (the kernel
    updates an existing set's timeout on `add set`); deleting an unreferenced chain that
    still has rules is allowed, as the kernel allows it."""

    def __init__(self):
        self.state = SimpleNamespace(table=False, chains={}, sets={}, elements={})
        self.transactions = []

    def run(self, netns, lines):
        assert netns == NODE.netns
        self.transactions.append(list(lines))
        trial = copy.deepcopy(self.state)
        for line in lines:
            self._apply(trial, line)
        self.state = trial

    def _apply(self, s, line):
        m = _LINE.match(line)
        if not m:
            raise Refused(f"syntax: {line}")
        verb, kind, name, rest = m.groups()

        def need(found, why="No such file or directory"):
            if not found:
                raise Refused(f"{why}: {line}")

        need(s.table or (verb, kind) == ("add", "table"))
        if kind == "table":
            s.table = True
        elif (verb, kind) == ("add", "chain"):
            s.chains.setdefault(name, [])
        elif (verb, kind) == ("flush", "chain"):
            need(name in s.chains)
            s.chains[name] = []
        elif (verb, kind) == ("delete", "chain"):
            need(name in s.chains)
            need(name not in self._chain_refs(s), "Device or resource busy")
            del s.chains[name]
        elif kind == "rule":
            rule = rest
            need(name in s.chains)
            need(all(t in s.chains for t in _TARGET.findall(rule)))
            need(all(r in s.sets for r in _SET_REF.findall(rule)))
            s.chains[name].append(rule)
        elif verb == "add" and kind in ("set", "map"):
            s.sets[name] = rest
            s.elements.setdefault(name, {})
        elif verb == "flush" and kind in ("set", "map"):
            need(name in s.sets)
            s.elements[name] = {}
        elif verb == "delete" and kind in ("set", "map"):
            need(name in s.sets)
            need(not any(name in _SET_REF.findall(r) for rules in s.chains.values() for r in rules),
                 "Device or resource busy")
            del s.sets[name], s.elements[name]
        elif kind == "element":
            need(name in s.sets)
            e = _ELEMENT.match(rest)
            need(e, "syntax")
            members = s.elements[name]
            if verb == "add":
                need(all(t in s.chains for t in _TARGET.findall(e["value"] or "")))
                if e["key"] in members:
                    need(members[e["key"]][1] == e["value"], "File exists")
                else:
                    members[e["key"]] = (e["comment"], e["value"])
            else:
                need(e["key"] in members)
                del members[e["key"]]

    @staticmethod
    def _chain_refs(s):
        refs = {t for rules in s.chains.values() for r in rules for t in _TARGET.findall(r)}
        return refs | {t for members in s.elements.values() for _, v in members.values()
                       for t in _TARGET.findall(v or "")}


def planned(services, slices):
    """The kernel's table after a full sync of these objects into an empty namespace."""
    k = FakeKernel()
    k.run(NODE.netns, nft.script(kube_proxy.node_table(services, slices, NODE, CLUSTER)))
    return k.state


class KubeProxy:
    """One node's kube-proxy, synced by lab.py's own `_sync_nftables` (which uses nothing of
    the Lab itself): the full sync into a fresh namespace, then partial syncs from the
    objects the last sync saw, with the stale-chain record it keeps in the state. `nft.run`
    records into a fake kernel; the clock is the test's."""

    def __init__(self, monkeypatch, services, slices):
        self.kernel, self.now = FakeKernel(), 1_000_000.0
        monkeypatch.setattr(nft_kernel, "available", lambda: True)
        monkeypatch.setattr(nft_kernel, "run", self.kernel.run)
        monkeypatch.setattr(nft_kernel, "time", SimpleNamespace(time=lambda: self.now))
        self.applier = nft_kernel.NftApplier()
        self.state = SimpleNamespace(services=list(services), endpoint_slices=list(slices), cluster=CLUSTER,
                                     stale_chains={})
        Lab._sync_nftables(None, self.applier, self.state, None, NODE, partial=False, fresh=True)
        self.kernel.transactions.clear()

    @property
    def stale(self):
        return self.state.stale_chains.get(NODE.netns, {})

    def sync(self, services, slices, after=0.0):
        """The sync `after` seconds after the last one: the transactions it wrote."""
        self.now += after
        first, operations = len(self.kernel.transactions), self.applier.operations
        old = SimpleNamespace(services=self.state.services, endpoint_slices=self.state.endpoint_slices,
                              nodes={NODE.name})
        self.state.services, self.state.endpoint_slices = list(services), list(slices)
        Lab._sync_nftables(None, self.applier, self.state, old, NODE, partial=True, fresh=False)
        out = self.kernel.transactions[first:]
        assert self.applier.operations - operations == sum(len(t) for t in out)
        return out

    def assert_planned(self):
        """The table is what a full sync would write, but for the stale chains not yet
        deleted, which are empty."""
        have, want = self.kernel.state, planned(self.state.services, self.state.endpoint_slices)
        left = {c: rules for c, rules in have.chains.items() if c not in want.chains}
        assert left == {c: [] for c in self.stale}
        assert {c: r for c, r in have.chains.items() if c in want.chains} == want.chains
        assert have.sets == want.sets
        assert have.elements == want.elements


def lines_of(transactions):
    (tx,) = transactions
    return sorted(tx)


# --- the counts ------------------------------------------------------------------------------

def test_a_service_growing_from_no_endpoints_costs_2_then_10_then_12_operations(monkeypatch):
    proxy = KubeProxy(monkeypatch, OTHERS, OTHER_SLICES)
    services = OTHERS + [SVC6]
    assert lines_of(proxy.sync(services, OTHER_SLICES)) == sorted([
        f"add element {T} cluster-ips {{ 172.30.0.46 }}",
        f'add element {T} no-endpoint-services {{ 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }}',
    ])
    proxy.assert_planned()

    svc_chain, ep_a = chain("service-", SVC6), chain("endpoint-", SVC6, "10.180.0.6:80")
    one = OTHER_SLICES + [slice_of(SVC6, ("10.180.0.6", "node2"))]
    assert lines_of(proxy.sync(services, one)) == sorted([
        f"add chain {T} {svc_chain}", f"flush chain {T} {svc_chain}",
        f"add rule {T} {svc_chain} ip daddr 172.30.0.46 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
        f"add rule {T} {svc_chain} numgen random mod 1 vmap {{ 0 : goto {ep_a} }}",
        f"add chain {T} {ep_a}", f"flush chain {T} {ep_a}",
        f"add rule {T} {ep_a} ip saddr 10.180.0.6 jump mark-for-masquerade",
        f"add rule {T} {ep_a} meta l4proto tcp dnat to 10.180.0.6:80",
        f"delete element {T} no-endpoint-services {{ 172.30.0.46 . tcp . 80 }}",
        f"add element {T} service-ips {{ 172.30.0.46 . tcp . 80 : goto {svc_chain} }}",
    ])
    proxy.assert_planned()

    ep_b = chain("endpoint-", SVC6, "10.180.0.7:80")
    two = OTHER_SLICES + [slice_of(SVC6, ("10.180.0.6", "node2"), ("10.180.0.7", NODE.name))]
    tx = lines_of(proxy.sync(services, two))
    assert len(tx) == 12
    # The Service's chain and both endpoints' written again (add, flush, rules); no element changes.
    assert {line.split()[4] for line in tx} == {svc_chain, ep_a, ep_b}
    assert [line for line in tx if line.startswith(f"add rule {T} {svc_chain} numgen")] == [
        f"add rule {T} {svc_chain} numgen random mod 2 vmap {{ 0 : goto {ep_a} , 1 : goto {ep_b} }}"]
    proxy.assert_planned()

    # Nothing changed: no transaction at all, also from objects rebuilt equal, and none
    # from the applier itself when given no change.
    assert proxy.sync(services, two) == []
    assert proxy.applier.partial(NODE.netns, kube_proxy.empty_table(), [], set(), {}) == 0
    assert proxy.sync([copy.deepcopy(s) for s in services], [copy.deepcopy(s) for s in two], after=5) == []
    proxy.assert_planned()


# --- what goes, and when ---------------------------------------------------------------------

def test_a_removed_service_is_flushed_at_once_and_deleted_more_than_a_second_later(monkeypatch):
    slices = OTHER_SLICES + [slice_of(SVC6, ("10.180.0.6", "node2"))]
    proxy = KubeProxy(monkeypatch, OTHERS + [SVC6], slices)
    svc_chain, ep = chain("service-", SVC6), chain("endpoint-", SVC6, "10.180.0.6:80")
    assert lines_of(proxy.sync(OTHERS, OTHER_SLICES)) == sorted([
        f"delete element {T} cluster-ips {{ 172.30.0.46 }}",
        f"delete element {T} service-ips {{ 172.30.0.46 . tcp . 80 }}",
        f"flush chain {T} {svc_chain}", f"flush chain {T} {ep}",
    ])
    assert proxy.kernel.state.chains[svc_chain] == proxy.kernel.state.chains[ep] == []
    proxy.assert_planned()

    assert proxy.sync(OTHERS, OTHER_SLICES, after=0.5) == []          # flushed half a second ago: kept
    assert {svc_chain, ep} <= set(proxy.kernel.state.chains)
    assert lines_of(proxy.sync(OTHERS, OTHER_SLICES, after=0.6)) == sorted([
        f"delete chain {T} {svc_chain}", f"delete chain {T} {ep}"])
    assert proxy.stale == {} and proxy.sync(OTHERS, OTHER_SLICES, after=5) == []
    proxy.assert_planned()


def test_stale_chains_are_deleted_in_a_transaction_of_their_own(monkeypatch):
    """kube-proxy (pkg/proxy/nftables/proxier.go, syncProxyRules) deletes the chains it
    flushed more than a second ago in a transaction of their own, before the sync's, so that
    a delete the kernel still refuses (before 6.2 a chain stays referenced a moment after its
    map element goes) never fails the sync that carries the Services' changes."""
    slices = OTHER_SLICES + [slice_of(SVC6, ("10.180.0.6", "node2"))]
    proxy = KubeProxy(monkeypatch, OTHERS + [SVC6], slices)
    proxy.sync(OTHERS, OTHER_SLICES)
    gone = {chain("service-", SVC6), chain("endpoint-", SVC6, "10.180.0.6:80")}
    later = proxy.sync(OTHERS + [SVC6], OTHER_SLICES, after=1.5)                 # and a change
    deleting = [tx for tx in later if any(line.startswith("delete chain") for line in tx)]
    assert [sorted(tx) for tx in deleting] == [sorted(f"delete chain {T} {c}" for c in gone)]
    assert len(later) == 2
    proxy.assert_planned()


def test_an_endpoint_back_within_the_second_keeps_its_chain(monkeypatch):
    one = OTHER_SLICES + [slice_of(SVC6, ("10.180.0.6", "node2"))]
    two = OTHER_SLICES + [slice_of(SVC6, ("10.180.0.6", "node2"), ("10.180.0.7", "node2"))]
    proxy = KubeProxy(monkeypatch, OTHERS + [SVC6], two)
    ep_b = chain("endpoint-", SVC6, "10.180.0.7:80")
    assert f"flush chain {T} {ep_b}" in lines_of(proxy.sync(OTHERS + [SVC6], one))
    assert ep_b in proxy.stale
    assert f"add rule {T} {ep_b} meta l4proto tcp dnat to 10.180.0.7:80" in lines_of(
        proxy.sync(OTHERS + [SVC6], two, after=0.5))
    assert proxy.stale == {}
    assert proxy.sync(OTHERS + [SVC6], two, after=1.5) == []     # the fake kernel refuses deleting a used chain
    proxy.assert_planned()


def test_a_gone_affinity_endpoint_loses_its_set_at_once_and_its_chain_later(monkeypatch):
    two = OTHER_SLICES + [slice_of(STICKY, ("10.180.0.8", "node2"), ("10.180.0.9", NODE.name))]
    one = OTHER_SLICES + [slice_of(STICKY, ("10.180.0.8", "node2"))]
    proxy = KubeProxy(monkeypatch, OTHERS + [STICKY], two)
    gone_set = kube_proxy.chain_name("affinity-", kube_proxy.endpoint_base(STICKY, STICKY.ports[0], "10.180.0.9:80"))
    assert gone_set == "affinity-" + chain("endpoint-", STICKY, "10.180.0.9:80").removeprefix("endpoint-")
    assert gone_set in proxy.kernel.state.sets
    tx = lines_of(proxy.sync(OTHERS + [STICKY], one))
    assert f"delete set {T} {gone_set}" in tx
    assert f"flush chain {T} {chain('endpoint-', STICKY, '10.180.0.9:80')}" in tx
    assert not [line for line in tx if line.startswith("delete chain")]
    assert gone_set not in proxy.kernel.state.sets
    proxy.assert_planned()
    assert lines_of(proxy.sync(OTHERS + [STICKY], one, after=1.5)) == [
        f"delete chain {T} {chain('endpoint-', STICKY, '10.180.0.9:80')}"]
    proxy.assert_planned()


def test_a_cluster_ip_stays_in_cluster_ips_while_a_port_of_its_service_is_left(monkeypatch):
    ports = (ServicePort(80, "TCP", "p80", 80), ServicePort(443, "TCP", "p443", 443))
    both = service("ns8", "two", "172.30.0.48", ports=ports)
    one = service("ns8", "two", "172.30.0.48", ports=ports[:1])
    slices = OTHER_SLICES + [slice_of(both, ("10.180.0.10", "node2"))]
    proxy = KubeProxy(monkeypatch, OTHERS + [both], slices)
    assert list(proxy.kernel.state.elements["cluster-ips"]).count("172.30.0.48") == 1
    tx = lines_of(proxy.sync(OTHERS + [one], slices))
    assert f"delete element {T} service-ips {{ 172.30.0.48 . tcp . 443 }}" in tx
    assert not [line for line in tx if " cluster-ips " in line]
    assert "172.30.0.48" in proxy.kernel.state.elements["cluster-ips"]
    proxy.assert_planned()
    # The last port gone, the address goes.
    assert f"delete element {T} cluster-ips {{ 172.30.0.48 }}" in lines_of(proxy.sync(OTHERS, OTHER_SLICES))
    proxy.assert_planned()


# --- every partial sync ends at the plan -----------------------------------------------------

LB = service("ns5", "svc5", "172.30.0.45", type="LoadBalancer", external_traffic_policy="Cluster",
             ports=(ServicePort(80, "TCP", "p80", 80, node_port=3002),), load_balancer_ip="5.6.7.8",
             load_balancer_ip_mode="VIP", load_balancer_source_ranges=("203.0.113.0/25",))


def _steps():
    """A walk through the changes a Service goes through: (services, slices) per step."""
    web = service("ns9", "web", "172.30.0.49")
    remote, local = ("10.180.1.1", "node2"), ("10.180.1.2", NODE.name)
    nodeport = service("ns9", "web", "172.30.0.49", type="NodePort", external_traffic_policy="Cluster",
                       ports=(ServicePort(80, "TCP", "p80", 80, node_port=30080),))
    local_np = service("ns9", "web", "172.30.0.49", type="NodePort", external_traffic_policy="Local",
                       health_check_node_port=30999, ports=nodeport.ports)
    sticky_np = service("ns9", "web", "172.30.0.49", type="NodePort", external_traffic_policy="Cluster",
                        ports=nodeport.ports, session_affinity="ClientIP", affinity_timeout=10800)
    lb_slices = [slice_of(LB, ("10.180.0.3", "node2"))]
    yield [web], []
    yield [web], [slice_of(web, remote)]
    yield [web], [slice_of(web, remote, local)]
    yield [nodeport], [slice_of(web, remote, local)]
    yield [local_np], [slice_of(web, remote, local)]
    yield [local_np], [slice_of(web, remote)]                    # no local endpoint: NodePort dropped here
    yield [local_np], []
    yield [sticky_np], [slice_of(web, remote, local)]
    yield [sticky_np], [slice_of(web, local)]
    yield [web], [slice_of(web, local)]                          # affinity and node port gone
    yield [web, LB], [slice_of(web, local)] + lb_slices
    yield [LB], lb_slices
    yield [], []


def test_every_partial_sync_leaves_the_table_a_full_sync_would_write(monkeypatch):
    proxy = KubeProxy(monkeypatch, OTHERS, OTHER_SLICES)
    for services, slices in _steps():
        proxy.sync(OTHERS + services, OTHER_SLICES + slices, after=0.4)
        proxy.assert_planned()
    proxy.sync(OTHERS, OTHER_SLICES, after=1.5)
    assert proxy.stale == {}
    proxy.assert_planned()


def test_a_service_handed_to_another_proxy_leaves_cluster_ips(monkeypatch):
    """A Service labelled service.kubernetes.io/service-proxy-name is no longer kube-proxy's:
    its ports leave kube-proxy's service map, so its ClusterIP leaves cluster-ips
    (cleanupLeftoverKeys), as the full plan has it."""
    slices = OTHER_SLICES + [slice_of(SVC6, ("10.180.0.6", "node2"))]
    proxy = KubeProxy(monkeypatch, OTHERS + [SVC6], slices)
    elsewhere = service("ns6", "svc6", "172.30.0.46", labels={"service.kubernetes.io/service-proxy-name": "other"})
    tx = lines_of(proxy.sync(OTHERS + [elsewhere], slices))
    assert f"delete element {T} cluster-ips {{ 172.30.0.46 }}" in tx
    proxy.assert_planned()


def test_a_new_affinity_timeout_reaches_the_affinity_sets(monkeypatch):
    """kube-proxy adds every affinity set of a changed Service again, with its timeout (and
    the kernel takes the new timeout of a set added again): a sessionAffinityConfig change
    reaches the sets in the partial sync."""
    slices = OTHER_SLICES + [slice_of(STICKY, ("10.180.0.8", "node2"))]
    proxy = KubeProxy(monkeypatch, OTHERS + [STICKY], slices)
    shorter = service("ns7", "sticky", "172.30.0.47", session_affinity="ClientIP", affinity_timeout=600)
    proxy.sync(OTHERS + [shorter], slices)
    affinity = "affinity-" + chain("endpoint-", STICKY, "10.180.0.8:80").removeprefix("endpoint-")
    assert "timeout 600s" in proxy.kernel.state.sets[affinity]
    proxy.assert_planned()


@pytest.mark.parametrize("line", [
    f"add rule {T} nowhere jump mark-for-masquerade",
    f"add element {T} service-ips {{ 1.2.3.4 . tcp . 80 : goto nowhere }}",
    f"delete element {T} service-ips {{ 9.9.9.9 . tcp . 80 }}",
    f"delete chain {T} mark-for-masquerade",
    f"add element {T} no-endpoint-services {{ 172.30.0.41 . tcp . 80 : drop }}",
])
def test_the_fake_kernel_refuses_what_nft_refuses(line):
    k = FakeKernel()
    k.run(NODE.netns, nft.script(kube_proxy.node_table(OTHERS, OTHER_SLICES, NODE, CLUSTER)))
    k.run(NODE.netns, [f"add element {T} no-endpoint-services {{ 172.30.0.41 . tcp . 80 : goto reject-chain }}"])
    before = copy.deepcopy(k.state)
    with pytest.raises(Refused):
        k.run(NODE.netns, [f"flush chain {T} services", line])
    assert k.state == before                      # all or nothing
