"""kube-proxy's nftables mode, planned: the `ip kube-proxy` table against kube-proxy's own
expected dump (TestOverallNFTablesRules, in tests/unit/data), its chain-name hashes, and
the partial sync's operations as kube-proxy counts them."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from netlab.api.objects import SERVICE_NAME_LABEL, EndpointSlice, Port, SliceEndpoint
from netlab.api.spec import ServiceManifest, ServicePort
from netlab.node.proxy import nftables as kube_proxy
from netlab.values import nftables as nft

DUMP = Path(__file__).parent / "data" / "nftables_overall.nft"
NODE = SimpleNamespace(name="node1", ip="192.168.0.2")
CLUSTER = SimpleNamespace(pod_subnet="10.0.0.0/8", service_subnet="172.30.0.0/16")
P80 = (ServicePort(80, "TCP", "p80", 80),)


@pytest.mark.parametrize("base, digest", [
    ("ns1/svc1/tcp/p80", "ULMVA6XW"), ("ns1/svc1/tcp/p80__10.180.0.1/80", "5OJB2KTY"),
    ("ns2/svc2/tcp/p80", "42NFTM6N"), ("ns5/svc5/tcp/p80__10.180.0.3/80", "GTK6MW7G"),
    ("kube-system/kube-dns/udp/dns", "FY5PMXPG"), ("default/kubernetes/tcp/https", "2QRHZV4L"),
])
def test_chain_names_hash_as_kube_proxy_hashes_them(base, digest):
    assert kube_proxy.chain_name("service-", base) == f"service-{digest}-{base}"


def test_names_of_unnamed_ports_and_ipv6_endpoints():
    svc = service("ns1", "svc1", "172.30.0.41", ports=(ServicePort(80, "TCP", "", 80),))
    assert kube_proxy.port_base(svc, svc.ports[0]) == "ns1/svc1/tcp/"
    assert kube_proxy.endpoint_base(svc, svc.ports[0], "[fd00:10:180::1]:80") == "ns1/svc1/tcp/__fd00.10.180..1/80"


def service(ns, name, ip, ports=P80, **kw):
    return ServiceManifest(ns, name, {}, cluster_ip=ip, ports=ports, selector={"app": name}, **kw)


def slice_of(svc, *endpoints):
    """One EndpointSlice of ready endpoints: (ip, node)."""
    eps = tuple(SliceEndpoint((ip,), ready=True, serving=True, terminating=False, node=node, pod=f"p{i}")
                for i, (ip, node) in enumerate(endpoints))
    return EndpointSlice(svc.namespace, f"{svc.name}-abcde", {SERVICE_NAME_LABEL: svc.name}, endpoints=eps,
                         ports=(Port("p80", 80, "TCP"),))


def overall_inputs():
    """The six Services of TestOverallNFTablesRules and their endpoints."""
    svc1 = service("ns1", "svc1", "172.30.0.41")
    svc2 = service("ns2", "svc2", "172.30.0.42", type="LoadBalancer", external_traffic_policy="Local",
                   ports=(ServicePort(80, "TCP", "p80", 80, node_port=3001),), external_ips=("192.168.99.22",),
                   load_balancer_ip="1.2.3.4", load_balancer_ip_mode="VIP", health_check_node_port=30000)
    svc3 = service("ns3", "svc3", "172.30.0.43", type="NodePort", external_traffic_policy="Cluster",
                   ports=(ServicePort(80, "TCP", "p80", 80, node_port=3003),))
    # svc4 is a NodePort Service whose port has no node port: only its external IP is external.
    svc4 = service("ns4", "svc4", "172.30.0.44", type="NodePort", external_traffic_policy="Cluster",
                   external_ips=("192.168.99.33",))
    svc5 = service("ns5", "svc5", "172.30.0.45", type="LoadBalancer", external_traffic_policy="Cluster",
                   ports=(ServicePort(80, "TCP", "p80", 80, node_port=3002),), load_balancer_ip="5.6.7.8",
                   load_balancer_ip_mode="VIP", load_balancer_source_ranges=("203.0.113.0/25",),
                   session_affinity="ClientIP", affinity_timeout=10800)
    svc6 = service("ns6", "svc6", "172.30.0.46")
    slices = [slice_of(svc1, ("10.180.0.1", "node2")), slice_of(svc2, ("10.180.0.2", "node2")),
              slice_of(svc3, ("10.180.0.3", "node2")),
              slice_of(svc4, ("10.180.0.4", "node2"), ("10.180.0.5", NODE.name)),
              slice_of(svc5, ("10.180.0.3", "node2"))]
    return [svc1, svc2, svc3, svc4, svc5, svc6], slices


def expected_dump():
    return [line for line in DUMP.read_text().splitlines() if line and not line.startswith("#")]


def by_chain(lines):
    """The `add rule` lines grouped by chain, in order (a chain's rules keep their order);
    every other line as a set."""
    rules, rest = {}, set()
    for line in lines:
        words = line.split(" ", 5)
        if words[1] == "rule":
            rules.setdefault(words[4], []).append(words[5])
        else:
            rest.add(line)
    return rules, rest


def test_the_overall_table_is_kube_proxys_dump_element_for_element():
    services, slices = overall_inputs()
    table = kube_proxy.node_table(services, slices, NODE, CLUSTER)
    got_rules, got_rest = by_chain(nft.dump(table))
    want_rules, want_rest = by_chain(expected_dump())
    assert got_rules == want_rules
    assert sorted(got_rest - want_rest) == [] and sorted(want_rest - got_rest) == []
    assert len(nft.dump(table)) == len(expected_dump())      # and nothing twice


def test_the_table_renders_as_a_full_sync_transaction():
    services, slices = overall_inputs()
    table = kube_proxy.node_table(services, slices, NODE, CLUSTER)
    lines = nft.script(table)
    assert lines[0] == 'add table ip kube-proxy { comment "rules for kube-proxy" ; }'
    # Every chain and set added and flushed before any rule or element is written.
    first_rule = next(i for i, line in enumerate(lines) if line.startswith(("add rule", "add element")))
    flushed = {line.split()[-1] for line in lines[:first_rule] if line.startswith("flush ")}
    assert flushed == set(table.chains) | set(table.sets)
    assert "flush chain ip kube-proxy services" in lines
