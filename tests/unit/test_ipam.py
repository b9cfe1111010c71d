"""host-local's round-robin and the node range allocator, per the CNI plugin's documented behaviour."""

import pytest

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


def test_lan_addresses_as_docker_gives_them_to_kind():
    assert ipam.lan_gateway("172.18.0.0/16") == "172.18.0.1"
    assert ipam.node_ips("172.18.0.0/16", set(), 3) == ["172.18.0.2", "172.18.0.3", "172.18.0.4"]
    assert ipam.lan_external_ip("172.18.0.0/16") == "172.18.255.254"
