"""host-local's round-robin and the node range allocator, per the CNI plugin's documented behaviour."""

import pytest

from netlab.api import spec
from netlab.controllers import ipam
from netlab.errors import NetlabError


def test_first_address_is_dot_two_skipping_the_gateway():
    assert ipam.host_local_next("10.244.1.0/24", None, {}) == "10.244.1.2"


def test_round_robin_resumes_after_the_last_reserved():
    # .2 and .3 were handed out, .2 was freed: the next is .4, not the freed .2.
    assert ipam.host_local_next("10.244.1.0/24", "10.244.1.3", {"10.244.1.3": "c"}) == "10.244.1.4"


def test_wraps_to_the_start_of_the_range():
    assert ipam.host_local_next("10.244.1.0/24", "10.244.1.254", {"10.244.1.254": "c"}) == "10.244.1.2"


def test_skips_allocated_addresses_when_wrapping():
    allocated = {"10.244.1.2": "a", "10.244.1.254": "b"}
    assert ipam.host_local_next("10.244.1.0/24", "10.244.1.254", allocated) == "10.244.1.3"


def test_full_range_is_an_error():
    allocated = {f"10.244.1.{i}": "x" for i in range(2, 255)}
    with pytest.raises(NetlabError):
        ipam.host_local_next("10.244.1.0/24", "10.244.1.9", allocated)


def test_node_cidrs_in_order():
    assert ipam.node_pod_cidrs("10.244.0.0/16", set(), 3) == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    assert ipam.node_pod_cidrs("10.244.0.0/16", {"10.244.0.0/24"}, 1) == ["10.244.1.0/24"]


def lan(cidr="172.18.0.0/16", nodes=3, pool=""):
    return spec.ClusterConfig(name="t", roles=("control-plane",) + ("worker",) * (nodes - 1), lan_cidr=cidr,
                              lb_pool=pool)


def test_lan_addresses_as_docker_gives_them_to_kind():
    c = lan()
    assert ipam.lan_gateway("172.18.0.0/16") == "172.18.0.1"
    assert ipam.node_ips(c, ipam.lan_holders(c), ["a", "b", "c"]) == ["172.18.0.2", "172.18.0.3", "172.18.0.4"]
    assert ipam.lan_external_ip("172.18.0.0/16") == "172.18.255.254"


@pytest.mark.parametrize("cidr, nodes, pool", [
    ("172.18.0.0/16", 3, ("172.18.255.200", "172.18.255.250")),   # the range kind users give MetalLB
    ("192.168.1.0/24", 3, ("192.168.1.200", "192.168.1.250")),
    ("10.10.0.0/26", 3, ("10.10.0.8", "10.10.0.58")),              # still above the nodes (.2-.4)
    ("10.10.0.0/26", 7, ("10.10.0.9", "10.10.0.61")),              # .8 is the 7th node's: above the nodes instead
    ("10.10.0.0/27", 3, ("10.10.0.5", "10.10.0.29")),              # .255.200's offsets fall outside a /27
    ("10.0.0.0/29", 3, ("10.0.0.5", "10.0.0.5")),                  # .1 gateway, .2-.4 nodes, .6 external client
])
def test_the_default_pool_lies_inside_the_lan_above_the_nodes(cidr, nodes, pool):
    assert spec.default_lb_pool(cidr, nodes) == pool


def test_a_load_balancer_skips_the_addresses_nodes_hold():
    c = lan("10.10.0.0/27")
    held = {**ipam.lan_holders(c), "10.10.0.5": "node t-worker3", "10.10.0.6": "Service default/a"}
    assert ipam.allocate_lb_ip(c, held, "default/b") == "10.10.0.7"
    with pytest.raises(NetlabError) as e:
        ipam.allocate_lb_ip(c, held, "default/b", wanted="10.10.0.5")
    assert str(e.value) == "Service default/b: loadBalancerIP 10.10.0.5 is already held by node t-worker3"
    with pytest.raises(NetlabError) as e:
        ipam.allocate_lb_ip(c, held, "default/b", wanted="10.10.0.30")
    assert str(e.value) == ("Service default/b: loadBalancerIP 10.10.0.30 is not in the load-balancer pool "
                            "10.10.0.5-10.10.0.29")


def test_a_node_skips_the_addresses_load_balancers_hold_and_keeps_out_of_the_pool_while_it_can():
    c = lan("10.10.0.0/26")                                   # pool 10.10.0.8-10.10.0.58
    held = {**ipam.lan_holders(c), **{f"10.10.0.{i}": f"node {i}" for i in (2, 3, 4)},
            "10.10.0.8": "Service default/web-lb"}
    assert ipam.node_ips(c, held, [f"n{i}" for i in range(7)]) == [
        "10.10.0.5", "10.10.0.6", "10.10.0.7", "10.10.0.59", "10.10.0.60", "10.10.0.61", "10.10.0.9"]


def test_a_full_lan_or_pool_is_a_sentence_naming_what_gets_no_address():
    c = lan("10.0.0.0/29", nodes=4)                           # .1 gateway, .2-.5 nodes, .6 external client
    held = {**ipam.lan_holders(c), **{f"10.0.0.{i}": f"node {i}" for i in (2, 3, 4, 5)}}
    with pytest.raises(NetlabError) as e:
        ipam.node_ips(c, held, ["t-worker4"])
    assert str(e.value) == ("node t-worker4 gets no address: every address of the LAN 10.0.0.0/29 is held by its "
                            "gateway, external client, nodes and load balancers (give the Lab a larger lan.cidr)")
    with pytest.raises(NetlabError) as e:
        ipam.allocate_lb_ip(c, held, "default/web-lb")
    assert str(e.value) == ("Service default/web-lb gets no load-balancer address: the LAN 10.0.0.0/29 has none "
                            "left above its nodes (give the Lab a larger lan.cidr)")
    c = lan("10.0.0.0/29", nodes=3)                           # pool 10.0.0.5-10.0.0.5
    with pytest.raises(NetlabError) as e:
        ipam.allocate_lb_ip(c, {**held, "10.0.0.5": "Service default/a"}, "default/b")
    assert str(e.value) == ("Service default/b gets no load-balancer address: every address of the pool "
                            "10.0.0.5-10.0.0.5 is held (widen the Lab's loadBalancer.pool or lan.cidr)")


# --- dual-stack: the IPv6 family ---------------------------------------------------------------

def dual_state(roles=("control-plane", "worker", "worker")):
    from netlab.api.spec import ClusterConfig, LabSpec
    from netlab.controllers import cluster
    c = ClusterConfig(name="d", roles=roles, ip_family="dual", pod_subnet6="fd00:10:244::/56",
                      service_subnet6="fd00:10:96::/112", lan_cidr6="fc00:f853:ccd:e793::/64", dns_replicas=0)
    return cluster.new_state(LabSpec(c))


def test_each_node_takes_the_lowest_free_64_of_the_ipv6_pod_subnet_beside_its_24():
    from netlab.controllers import ipam
    assert ipam.node_pod_cidrs6("fd00:10:244::/56", set(), 3) == [
        "fd00:10:244::/64", "fd00:10:244:1::/64", "fd00:10:244:2::/64"]
    assert ipam.node_pod_cidrs6("fd00:10:244::/56", {"fd00:10:244::/64"}, 1) == ["fd00:10:244:1::/64"]
    state = dual_state()
    assert [(n.pod_cidrs, n.ips) for n in state.nodes] == [
        (("10.244.0.0/24", "fd00:10:244::/64"), ("172.18.0.2", "fc00:f853:ccd:e793::2")),
        (("10.244.1.0/24", "fd00:10:244:1::/64"), ("172.18.0.3", "fc00:f853:ccd:e793::3")),
        (("10.244.2.0/24", "fd00:10:244:2::/64"), ("172.18.0.4", "fc00:f853:ccd:e793::4"))]


def test_host_local_gives_a_pod_one_address_per_range_in_order_and_releases_both():
    from netlab.api.spec import PodTemplate
    from netlab.controllers import cluster
    state = dual_state(("control-plane", "worker"))
    a = cluster.add_pod(state, "default", "a", PodTemplate(labels={}, containers=()))
    b = cluster.add_pod(state, "default", "b", PodTemplate(labels={}, containers=()))
    assert (a.ips, b.ips) == (("10.244.1.2", "fd00:10:244:1::2"), ("10.244.1.3", "fd00:10:244:1::3"))
    pool = state.ipam[a.node]
    assert (pool.last_reserved, pool.last_reserved6) == ("10.244.1.3", "fd00:10:244:1::3")
    cluster.remove_pod(state, a)
    assert set(pool.allocated) == {"10.244.1.3", "fd00:10:244:1::3"}
    c = cluster.add_pod(state, "default", "c", PodTemplate(labels={}, containers=()))
    assert c.ips == ("10.244.1.4", "fd00:10:244:1::4")           # round-robin: a's address waits its turn


def test_host_local_ipv6_wraps_past_the_ranges_end_and_skips_the_gateway():
    from netlab.controllers import ipam
    assert ipam.host_local_next6("fd00::/126", None, {}) == "fd00::2"
    assert ipam.host_local_next6("fd00::/126", "fd00::3", {}) == "fd00::2"      # ::3 is the last: wraps to ::2
    assert ipam.host_local_next6("fd00::/126", "fd00::2", {"fd00::3": "x"}) == "fd00::2"
    with pytest.raises(NetlabError, match="full"):
        ipam.host_local_next6("fd00::/126", None, {"fd00::2": "x", "fd00::3": "y"})
