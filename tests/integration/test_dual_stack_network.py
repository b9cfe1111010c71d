"""A dual-stack lab's node and pod network in the kernel: IPv6 on every eth0 and on cni0, the
pods' IPv6 routes, kind's per-node sysctls, reachability over IPv6 with no NAT (agnhost
netexec's /clientip shows the client's own IPv6 address), host-local's and kubelet's files,
and the host's own namespace (its IPv6 side too) untouched. Pod traffic across nodes over
IPv6 needs flannel-v6.1 and is not tested here."""

import re
import subprocess

import pytest

from netlab import names
from netlab.kernel import netns as ns

from .conftest import lab_for_module, root_snapshot


@pytest.fixture(scope="module")
def host_before():
    """The host's namespace before the lab (lab_for_module compares it again after teardown)."""
    return root_snapshot()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, host_before):
    with lab_for_module("dual-stack.yaml", tmp_path_factory) as lab:
        yield lab


def _netexec_pods(state):
    return [p for p in state.pods if p.namespace == "default" and p.node is not None]


def _same_node_pair(state):
    """Two netexec pods on one node: three pods on two schedulable workers always give one."""
    by_node = {}
    for p in _netexec_pods(state):
        by_node.setdefault(p.node, []).append(p)
    return next(ps[:2] for ps in by_node.values() if len(ps) >= 2)


def _in(netns, argv):
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=30)


def _global6(netns, dev):
    """`ip -6 addr show dev X scope global` as (address/prefix, flags) pairs."""
    out = _in(netns, ["ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global"]).stdout
    return [(m.group(1), m.group(2).split()) for m in re.finditer(r"inet6 (\S+) scope global ?([^\\]*)", out)]


def test_every_nodes_eth0_and_cni0_hold_their_ipv6_addresses_usable_at_once(lab):
    state = lab.state()
    bridges = ["fd00:10:244::1/64", "fd00:10:244:1::1/64", "fd00:10:244:2::1/64"]   # podCIDRs[1] + 1
    for i, node in enumerate(state.nodes):
        assert node.ip6 == f"fc00:f853:ccd:e793::{i + 2}"                 # Docker's numbering: ::2 upward
        assert [a for a, _ in _global6(node.netns, "eth0")] == [f"{node.ip6}/64"]
        assert [a for a, _ in _global6(node.netns, "cni0")] == [bridges[i]]
        for _, flags in _global6(node.netns, "eth0") + _global6(node.netns, "cni0"):
            assert "tentative" not in flags and "dadfailed" not in flags and "nodad" in flags
    lan = state.lan_netns()
    assert [a for a, _ in _global6(lan, "br0")] == ["fc00:f853:ccd:e793::1/64"]
    assert [a for a, _ in _global6(state.external_netns(), "eth0")] == ["fc00:f853:ccd:e793::fffe/64"]


def test_a_node_has_kinds_ipv6_sysctls_and_an_ipv6_default_route(lab):
    node = lab.state().nodes[1]
    assert ns.read_sysctl(node.netns, "net/ipv6/conf/all/disable_ipv6") == "0"
    assert ns.read_sysctl(node.netns, "net/ipv6/conf/all/forwarding") == "1"
    assert ns.read_sysctl(node.netns, "net/ipv6/conf/cni0/accept_ra") == "0"
    routes = _in(node.netns, ["ip", "-6", "route", "show", "default"]).stdout
    assert routes.startswith("default via fc00:f853:ccd:e793::1 dev eth0 ")


def test_a_pods_eth0_has_both_addresses_and_the_bridge_plugins_ipv6_routes(lab):
    pod = _netexec_pods(lab.state())[0]
    cidr6 = lab.state().node(pod.node).pod_cidr6
    gw6 = cidr6.split("/")[0] + "1"                                         # fd00:10:244:N:: + 1
    assert [a for a, _ in _global6(pod.netns, "eth0")] == [f"{pod.ip6}/64"]
    routes = [" ".join(line.split()[:5]) for line in _in(pod.netns, ["ip", "-6", "route"]).stdout.splitlines()]
    assert f"default via {gw6} dev eth0" in routes
    assert f"fd00:10:244::/56 via {gw6} dev eth0" in routes
    assert ns.read_sysctl(pod.netns, "net/ipv6/conf/eth0/accept_dad") == "0"


def test_a_pod_reaches_a_pod_on_its_node_over_ipv6_and_is_seen_by_its_own_address(lab):
    client, server = _same_node_pair(lab.state())
    out = _in(client.netns, ["curl", "-g", "-s", "--max-time", "10", f"http://[{server.ip6}]:8080/clientip"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().rsplit(":", 1)[0] == f"[{client.ip6}]"       # Go's [addr]:port; no NAT on the way
    out = _in(client.netns, ["curl", "-g", "-s", "--max-time", "10", f"http://[{server.ip6}]:8080/hostname"])
    assert out.stdout.strip() == server.name


def test_a_pod_still_answers_over_ipv4_with_the_clients_ipv4_address(lab):
    client, server = _same_node_pair(lab.state())
    out = _in(client.netns, ["curl", "-s", "--max-time", "10", f"http://{server.ip}:8080/clientip"])
    assert out.stdout.strip().rsplit(":", 1)[0] == client.ip


def test_a_node_reaches_its_pods_over_ipv6(lab):
    state = lab.state()
    for pod in _netexec_pods(state):
        node = state.node(pod.node)
        out = _in(node.netns, ["curl", "-g", "-s", "--max-time", "10", f"http://[{pod.ip6}]:8080/clientip"])
        assert out.stdout.strip().rsplit(":", 1)[0] == f"[{node.pod_cidr6.split('/')[0]}1]"   # cni0's


def test_a_node_reaches_another_nodes_eth0_over_ipv6_across_the_lan(lab):
    a, b = lab.state().nodes[1], lab.state().nodes[0]
    out = _in(a.netns, ["ping", "-6", "-c", "1", "-W", "5", b.ip6])
    assert out.returncode == 0, out.stdout + out.stderr
    out = _in(lab.state().external_netns(), ["ping", "-6", "-c", "1", "-W", "5", a.ip6])   # the laptop too
    assert out.returncode == 0, out.stdout + out.stderr


def test_host_local_and_kubelet_files_hold_both_families(lab):
    state = lab.state()
    pod = _netexec_pods(state)[0]
    records = names.node_dir(state.lab, pod.node) / "var/lib/cni/networks/cbr0"
    assert (records / pod.ip6).read_bytes() == f"{pod.container_id}\r\neth0".encode()
    assert (records / "last_reserved_ip.1").read_text() == state.ipam[pod.node].last_reserved6
    hosts = (names.NETNS_ETC / pod.netns / "hosts").read_text().splitlines()
    assert hosts[-2:] == [f"{pod.ip}\t{pod.name}", f"{pod.ip6}\t{pod.name}"]


def test_a_second_converge_writes_nothing(lab):
    changes = lab.reconcile()
    assert changes.netlink_writes == 0


def test_the_hosts_own_namespace_ipv6_side_included_is_untouched(lab, host_before):
    now = root_snapshot()
    assert now == host_before
    assert "ip -6 route show table all" in now and "ip6tables-save" in now
