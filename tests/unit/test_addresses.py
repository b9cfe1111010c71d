"""The LAN's addresses from lab file to state: the gateway (.1, as Docker gives kind's network),
the nodes (.2 up), the external client (the last host address) and the load balancers (the
pool, lowest free first as MetalLB allocates) never share one; a wrong pool or a LAN too
small is refused at load naming the file and field; an exhausted LAN is one sentence."""

import ipaddress
import random

import pytest

from netlab.api import spec
from netlab.controllers import cluster, ipam
from netlab.errors import NetlabError, SpecError

WEB = """
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53, ports: [{containerPort: 8080}]}]
"""


def lb_service(name):
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def write(tmp_path, nodes=3, lan=None, pool=None, mode="cloud", services=()):
    roles = "".join(f"\n  - role: {'control-plane' if i == 0 else 'worker'}" for i in range(nodes))
    text = f"kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: t\nnodes:{roles}\n"
    text += f"---\napiVersion: netlab.io/v1alpha1\nkind: Lab\nloadBalancer: {{mode: {mode}}}\n"
    if lan:
        text += f"lan: {{cidr: {lan}}}\n"
    if pool:
        text = text.replace("{mode: ", f"{{pool: {pool}, mode: ")
    text += WEB + "".join(lb_service(s) for s in services)
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return path


def refusal(tmp_path, **kw):
    with pytest.raises(SpecError) as e:
        spec.load(write(tmp_path, **kw))
    return str(e.value).replace(f"{tmp_path}/", "")


def state_of(tmp_path, **kw):
    return cluster.new_state(spec.load(write(tmp_path, **kw)), random.Random(1))


def lan_addresses(state):
    """Every LAN address in the state, by holder."""
    c = state.cluster
    out = [("gateway", ipam.lan_gateway(c.lan_cidr)), ("external", ipam.lan_external_ip(c.lan_cidr))]
    out += [(n.name, n.ip) for n in state.nodes]
    out += [(s.key, s.load_balancer_ip) for s in state.services if s.type == "LoadBalancer"]
    return out


def assert_apart(state):
    ips = [ip for _, ip in lan_addresses(state)]
    assert len(ips) == len(set(ips)), lan_addresses(state)
    net = ipaddress.ip_network(state.cluster.lan_cidr)
    assert all(ipaddress.ip_address(ip) in net for ip in ips)


# --- the pool, at load --------------------------------------------------------------------

def test_a_pool_over_the_gateway_and_nodes_is_refused(tmp_path):
    # The case: 172.18.0.1-172.18.0.3 gave Services the gateway and a node's address.
    assert refusal(tmp_path, pool="172.18.0.1-172.18.0.3") == (
        "lab.yaml: Lab: loadBalancer.pool: '172.18.0.1-172.18.0.3' holds 172.18.0.1, the LAN gateway's address; "
        "load balancers need addresses of their own")


def test_a_pool_over_the_nodes_is_refused_naming_where_they_are(tmp_path):
    assert refusal(tmp_path, pool="172.18.0.3-172.18.0.9", mode="metallb") == (
        "lab.yaml: Lab: loadBalancer.pool: '172.18.0.3-172.18.0.9' holds 172.18.0.3-172.18.0.4, addresses the "
        "lab's nodes take (172.18.0.2-172.18.0.4, from .2 up, as Docker gives kind's nodes theirs); put the pool "
        "above them (left out, it is 172.18.255.200-172.18.255.250)")


def test_a_pool_over_the_external_client_is_refused(tmp_path):
    assert refusal(tmp_path, pool="172.18.255.200-172.18.255.254") == (
        "lab.yaml: Lab: loadBalancer.pool: '172.18.255.200-172.18.255.254' holds 172.18.255.254, the external "
        "client's address; load balancers need addresses of their own")


def test_a_reversed_pool_is_refused(tmp_path):
    assert refusal(tmp_path, pool="172.18.255.250-172.18.255.200") == (
        "lab.yaml: Lab: loadBalancer.pool: '172.18.255.250-172.18.255.200' is reversed: the first address must "
        "not be above the last (172.18.255.200-172.18.255.250)")


def test_a_pool_outside_the_lan_is_refused(tmp_path):
    assert refusal(tmp_path, lan="10.10.0.0/24", pool="10.10.1.10-10.10.1.20") == (
        "lab.yaml: Lab: loadBalancer.pool: '10.10.1.10-10.10.1.20' must be a range inside the LAN 10.10.0.0/24")


# --- the LAN's size -------------------------------------------------------------------------

def test_a_slash_29_holds_three_nodes_the_gateway_the_client_and_one_balancer(tmp_path):
    # 6 host addresses: .1 gateway, .2-.4 the nodes, .5 the balancer, .6 the external client.
    s = state_of(tmp_path, lan="10.0.0.0/29", services=["web-lb"])
    assert [ip for _, ip in lan_addresses(s)] == ["10.0.0.1", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4",
                                                  "10.0.0.5"]


def test_a_slash_29_with_a_second_balancer_has_no_address_for_it(tmp_path):
    with pytest.raises(NetlabError) as e:
        state_of(tmp_path, lan="10.0.0.0/29", services=["a", "b"])
    assert str(e.value) == ("Service default/b gets no load-balancer address: every address of the pool "
                            "10.0.0.5-10.0.0.5 is held (widen the Lab's loadBalancer.pool or lan.cidr)")


def test_a_lan_too_small_for_the_nodes_is_refused(tmp_path):
    assert refusal(tmp_path, nodes=5, lan="10.0.0.0/29") == (
        "lab.yaml: Lab: lan.cidr: 10.0.0.0/29 is too small for 5 nodes: it has 6 host addresses, and the gateway, "
        "the external client and each node take one")


def test_a_slash_27_gives_its_balancers_addresses_inside_it(tmp_path):
    # The default pool's .255.200 offsets lie outside a /27: up used to fail in the kernel.
    s = state_of(tmp_path, lan="10.10.0.0/27", services=["web-lb", "web-lb2"])
    assert [s.service("default", n).load_balancer_ip for n in ("web-lb", "web-lb2")] == ["10.10.0.5", "10.10.0.6"]
    assert_apart(s)


# --- nodes and balancers share the LAN -------------------------------------------------------

def test_node_add_skips_the_balancers_addresses(tmp_path):
    # The user's report: on a /26 the default pool starts at .8, and the 4th added node took
    # web-lb's .8. Added nodes keep out of the pool while the LAN has room, then skip .8.
    s = state_of(tmp_path, lan="10.10.0.0/26", services=["web-lb"])
    assert s.service("default", "web-lb").load_balancer_ip == "10.10.0.8"
    added = [cluster.add_node(s, f"extra{i}").ip for i in range(7)]
    assert added == ["10.10.0.5", "10.10.0.6", "10.10.0.7", "10.10.0.59", "10.10.0.60", "10.10.0.61", "10.10.0.9"]
    assert_apart(s)


def test_a_balancer_applied_later_skips_the_added_nodes_addresses(tmp_path):
    s = state_of(tmp_path, lan="10.10.0.0/27", services=["web-lb"])        # pool .5-.29, web-lb .5
    assert cluster.add_node(s, "extra").ip == "10.10.0.6"                  # nothing outside the pool is left
    more = tmp_path / "more"
    more.mkdir()
    (more / "svc.yaml").write_text(lb_service("web-lb2"))
    cluster.apply(s, spec.load(None, [more], cluster=s.cluster, nodes=[n.name for n in s.nodes]), random.Random(2))
    assert s.service("default", "web-lb2").load_balancer_ip == "10.10.0.7"
    assert_apart(s)


def test_a_full_lan_is_a_sentence_naming_the_node(tmp_path):
    s = state_of(tmp_path, nodes=4, lan="10.0.0.0/29")                     # .2-.5: nothing left
    with pytest.raises(NetlabError) as e:
        cluster.add_node(s, "extra")
    assert str(e.value) == ("node t-extra gets no address: every address of the LAN 10.0.0.0/29 is held by its "
                            "gateway, external client, nodes and load balancers (give the Lab a larger lan.cidr)")
    assert [n.name for n in s.nodes] == ["t-control-plane", "t-worker", "t-worker2", "t-worker3"]
