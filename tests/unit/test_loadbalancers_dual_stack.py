"""A dual-stack lab's LoadBalancers: MetalLB assigns one address of each family the Service has
from the pool's range of that family (lowest free first; the default IPv6 range is the IPv6
twins of the IPv4 pool), cloud-provider-kind's balancer holds both addresses of its Docker
network (the IPv6 twin of its IPv4 one); status.loadBalancer.ingress lists them in the
Service's family order; the Lab's loadBalancer.pool takes one range per family, refused with
its field named; the cloud's balancer proxies IPv6 to the nodes' IPv6 NodePorts, MetalLB's
speaker answers neighbour solicitations; ingress-nginx listens on [::]:80 in a dual lab."""

import random

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import Ether

from netlab.addons import cloud, ingress_nginx, metallb
from netlab.api import apiserver, spec
from netlab.controllers import cluster
from netlab.errors import NetlabError, SpecError
from netlab.node.proxy import endpointslicecache

CLUSTER = """kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: t
nodes: [{role: control-plane}, {role: worker}]
"""
DUAL = CLUSTER + "networking: {ipFamily: dual}\n"
POD = """apiVersion: v1
kind: Pod
metadata: {name: p, labels: {app: a}}
spec: {containers: [{name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: [netexec]}]}
"""
NET6 = "fc00:f853:ccd:e793::"


def lb(name, families=""):
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: LoadBalancer\n"
            f"  selector: {{app: a}}\n  ports: [{{port: 80, targetPort: 8080}}]\n{families}")


PREFER = "  ipFamilyPolicy: PreferDualStack\n"
ONLY6 = "  ipFamilies: [IPv6]\n"


def lab_doc(mode="metallb", pool=None, ingress=None):
    text = f"apiVersion: netlab.io/v1alpha1\nkind: Lab\nloadBalancer: {{mode: {mode}"
    text += f", pool: {pool}}}\n" if pool else "}\n"
    return text + (f"ingress: {ingress}\n" if ingress else "")


def write(tmp_path, cluster_doc, lab, *docs):
    f = tmp_path / "lab.yaml"
    f.write_text("---\n".join((cluster_doc, lab, POD, *docs)))
    return f


def state_of(tmp_path, cluster_doc, lab, *docs):
    return cluster.new_state(spec.load(write(tmp_path, cluster_doc, lab, *docs)), random.Random(1))


def refusal(tmp_path, cluster_doc, lab):
    with pytest.raises(SpecError) as e:
        spec.load(write(tmp_path, cluster_doc, lab))
    return str(e.value).replace(f"{tmp_path}/", "")


# --- allocation per family ------------------------------------------------------------------

def test_metallb_gives_a_dual_stack_service_an_address_of_each_family(tmp_path):
    state = state_of(tmp_path, DUAL, lab_doc(), lb("a", PREFER), lb("b", PREFER), lb("v4"), lb("v6", ONLY6))
    got = {s.name: (s.load_balancer_ip, s.load_balancer_ips) for s in state.services if s.type == "LoadBalancer"}
    assert got == {"a": ("172.18.255.200", ("172.18.255.200", NET6 + "ffc8")),
                   "b": ("172.18.255.201", ("172.18.255.201", NET6 + "ffc9")),
                   "v4": ("172.18.255.202", ("172.18.255.202",)),
                   # single-stack IPv6: MetalLB assigns no IPv4 address; the next IPv6 one
                   "v6": (None, (NET6 + "ffca",))}


def test_the_cloud_balancer_has_both_addresses_and_the_status_lists_the_services_families(tmp_path):
    state = state_of(tmp_path, DUAL, lab_doc("cloud"), lb("a", PREFER), lb("v6", ONLY6))
    a, v6 = state.service("default", "a"), state.service("default", "v6")
    assert (a.load_balancer_ip, a.load_balancer_ips) == ("172.18.255.200", ("172.18.255.200", NET6 + "ffc8"))
    # The balancer's container still has its IPv4 address (its machine), the status the IPv6 one.
    assert (v6.load_balancer_ip, v6.load_balancer_ips) == ("172.18.255.201", (NET6 + "ffc9",))


def test_an_ipv6_range_of_the_pool_is_allocated_from_its_first_address(tmp_path):
    pool = f"[172.18.255.10-172.18.255.20, '{NET6}1:0-{NET6}1:1']"
    state = state_of(tmp_path, DUAL, lab_doc(pool=pool), lb("a", PREFER), lb("b", PREFER))
    assert [s.load_balancer_ips for s in state.services if s.type == "LoadBalancer"] == [
        ("172.18.255.10", NET6 + "1:0"), ("172.18.255.11", NET6 + "1:1")]


def test_an_exhausted_ipv6_range_is_one_sentence(tmp_path):
    pool = f"[172.18.255.10-172.18.255.20, '{NET6}1:0-{NET6}1:0']"
    with pytest.raises(NetlabError) as e:
        state_of(tmp_path, DUAL, lab_doc(pool=pool), lb("a", PREFER), lb("b", PREFER))
    assert str(e.value) == (f"Service default/b gets no IPv6 load-balancer address: every address of the pool's IPv6 "
                            f"range {NET6}1:0-{NET6}1:0 is held (widen the Lab's loadBalancer.pool)")


def test_an_update_keeps_both_addresses(tmp_path):
    import yaml
    state = state_of(tmp_path, DUAL, lab_doc(), lb("a", PREFER))
    before = state.service("default", "a").load_balancer_ips
    doc = yaml.safe_load(lb("a", PREFER).replace("port: 80,", "port: 81,"))
    cluster.apply(state, spec.build([("request", 0, doc)], cluster=state.cluster,
                                    nodes=[n.name for n in state.nodes]), random.Random(7))
    after = state.service("default", "a")
    assert after.ports[0].port == 81 and after.load_balancer_ips == before


# --- the pool's validation ------------------------------------------------------------------

@pytest.mark.parametrize("cluster_doc,mode,pool,message", [
    (CLUSTER, "metallb", f"['{NET6}1:0-{NET6}1:ff']",
     f"'{NET6}1:0-{NET6}1:ff': an IPv6 range is for a dual-stack or IPv6 lab (the Cluster's "
     f"networking.ipFamily: dual or ipv6)"),
    (DUAL, "cloud", f"['{NET6}1:0-{NET6}1:ff']",
     f"'{NET6}1:0-{NET6}1:ff': an IPv6 range is MetalLB's (loadBalancer.mode: metallb); the cloud's load "
     f"balancers take the IPv6 twin of their IPv4 address, as Docker numbers both families alike"),
    (DUAL, "metallb", f"['172.18.255.10-{NET6}1:ff']",
     f"'172.18.255.10-{NET6}1:ff' mixes IPv4 and IPv6: a range's two ends are of one family"),
    (DUAL, "metallb", "[172.18.255.10-172.18.255.20, 172.18.255.30-172.18.255.40]",
     "'172.18.255.30-172.18.255.40' is a second IPv4 range (the first: '172.18.255.10-172.18.255.20'): the pool "
     "takes one range per family"),
    (DUAL, "metallb", "['fd00:99::1-fd00:99::9']",
     f"'fd00:99::1-fd00:99::9' must be a range inside the LAN's IPv6 range {NET6}/64"),
    (DUAL, "metallb", f"['{NET6}1-{NET6}9']",
     f"'{NET6}1-{NET6}9' holds {NET6}1, the LAN gateway's IPv6 address; load balancers need addresses of their own"),
    (DUAL, "metallb", f"['{NET6}3-{NET6}9']",
     f"'{NET6}3-{NET6}9' holds {NET6}3, an address the lab's nodes take ({NET6}2-{NET6}3, the IPv6 twins of "
     f"their IPv4 addresses); put the range above them"),
    (DUAL, "metallb", f"['{NET6}9-{NET6}1']",
     f"'{NET6}9-{NET6}1' is reversed: the first address must not be above the last ({NET6}1-{NET6}9)"),
])
def test_a_bad_pool_is_refused_naming_its_item(tmp_path, cluster_doc, mode, pool, message):
    item = "[0]" if not pool.startswith("[172.18.255.10-172.18.255.20, 172") else "[1]"
    assert refusal(tmp_path, cluster_doc, lab_doc(mode, pool)) == f"lab.yaml: Lab: loadBalancer.pool{item}: {message}"


def test_an_ipv4_labs_pool_string_is_read_as_before(tmp_path):
    c = spec.load(write(tmp_path, CLUSTER, lab_doc("metallb", "172.18.255.10-172.18.255.20")))
    assert (c.cluster.lb_pool, c.cluster.lb_pool6) == ("172.18.255.10-172.18.255.20", "")
    assert spec.lb_pool_range(c.cluster) == ("172.18.255.10", "172.18.255.20")


def test_the_default_ipv6_range_is_the_twins_of_the_ipv4_pool(tmp_path):
    c = spec.load(write(tmp_path, DUAL, lab_doc())).cluster
    assert spec.lb_pool6_range(c) == (NET6 + "ffc8", NET6 + "fffa")        # .255.200-.255.250


# --- status JSON ----------------------------------------------------------------------------

def test_the_status_lists_both_addresses_ipv4_first(tmp_path):
    state = state_of(tmp_path, DUAL, lab_doc(), lb("a", PREFER))
    status = apiserver.service_object(state, state.service("default", "a"))["status"]
    assert status == {"loadBalancer": {"ingress": [{"ip": "172.18.255.200", "ipMode": "VIP"},
                                                   {"ip": NET6 + "ffc8", "ipMode": "VIP"}]}}


def test_an_ipv4_labs_service_keeps_its_record_and_status(tmp_path):
    state = state_of(tmp_path, CLUSTER, lab_doc("cloud"), lb("a"))
    svc = state.service("default", "a")
    assert (svc.load_balancer_ip, svc.load_balancer_ips) == ("172.18.255.200", ())
    assert apiserver.service_object(state, svc)["status"] == {
        "loadBalancer": {"ingress": [{"ip": "172.18.255.200", "ipMode": "Proxy"}]}}
    plan = cloud.lb_plan(state, svc, {n.name for n in state.nodes})
    assert plan.ip6tables == {} and plan.sysctls == (("net/ipv4/ip_forward", "1"),)


# --- the data path's plans ------------------------------------------------------------------

def test_kube_proxys_ipv6_proxier_sees_the_ipv6_vip(tmp_path):
    state = state_of(tmp_path, DUAL, lab_doc(), lb("a", PREFER))
    svc = state.service("default", "a")
    assert endpointslicecache.family_view(svc, "IPv6").load_balancer_ip == NET6 + "ffc8"
    assert endpointslicecache.family_view(svc, "IPv4").load_balancer_ip == "172.18.255.200"


def test_the_cloud_balancer_proxies_ipv6_to_the_nodes_ipv6_nodeports(tmp_path):
    state = state_of(tmp_path, DUAL, lab_doc("cloud"), lb("a", PREFER))
    svc = state.service("default", "a")
    np = svc.ports[0].node_port
    plan = cloud.lb_plan(state, svc, {n.name for n in state.nodes})
    assert plan.ip6tables["nat"].chains == {
        "PREROUTING": (f"-d {NET6}ffc8/128 -p tcp -m tcp --dport 80 -j LB-TCP-80",),
        # iptables-save's form of the statistic match (libxt_statistic prints %.11f)
        "LB-TCP-80": (f"-p tcp -m statistic --mode random --probability 0.50000000000 -j DNAT "
                      f"--to-destination [{NET6}2]:{np}",
                      f"-p tcp -j DNAT --to-destination [{NET6}3]:{np}"),
        "POSTROUTING": ("-m conntrack --ctstate DNAT -j MASQUERADE",)}
    assert plan.iptables["nat"].chains["PREROUTING"] == ("-d 172.18.255.200/32 -p tcp -m tcp --dport 80 -j LB-TCP-80",)
    assert ("net/ipv6/conf/all/forwarding", "1") in plan.sysctls
    assert f"{NET6}ffc8/64" in {a.cidr for a in plan.addrs}


def test_metallb_announces_both_addresses_from_one_node(tmp_path):
    state = state_of(tmp_path, DUAL, lab_doc(), lb("a", PREFER))
    got = metallb.announcements(state)
    assert set(got) == {"172.18.255.200", NET6 + "ffc8"} and len(set(got.values())) == 1


def test_the_neighbour_advertisement_is_ndps(tmp_path):
    frame = metallb.neighbour_advert("02:42:ac:12:00:02", NET6 + "2", NET6 + "ffc8", "02:42:ac:12:00:fe", NET6 + "fffe")
    pkt = Ether(frame)
    na = pkt[ICMPv6ND_NA]
    assert (pkt.dst, pkt.src, pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (
        "02:42:ac:12:00:fe", "02:42:ac:12:00:02", NET6 + "2", NET6 + "fffe", 255)
    assert (na.tgt, na.S, na.O, na.R, pkt[ICMPv6NDOptDstLLAddr].lladdr) == (NET6 + "ffc8", 1, 0, 0, "02:42:ac:12:00:02")
    want = na.cksum
    del pkt[ICMPv6ND_NA].cksum
    assert Ether(bytes(pkt))[ICMPv6ND_NA].cksum == want            # scapy computes the same checksum
    gratuitous = Ether(metallb.neighbour_advert("02:42:ac:12:00:02", NET6 + "2", NET6 + "ffc8", metallb.ALL_NODES_MAC,
                                                metallb.ALL_NODES, solicited=False))
    assert (gratuitous[IPv6].dst, gratuitous[ICMPv6ND_NA].S, gratuitous[ICMPv6ND_NA].O) == ("ff02::1", 0, 1)


def test_a_neighbour_solicitation_is_parsed_and_dad_is_not_answered():
    ns = Ether(src="02:42:ac:12:00:fe", dst="33:33:ff:00:ff:c8") / IPv6(src=NET6 + "fffe", dst="ff02::1:ff00:ffc8") \
        / ICMPv6ND_NS(tgt=NET6 + "ffc8")
    assert metallb.parse_solicit(bytes(ns)) == ("02:42:ac:12:00:fe", NET6 + "fffe", NET6 + "ffc8")
    dad = Ether(src="02:42:ac:12:00:fe") / IPv6(src="::", dst="ff02::1:ff00:ffc8") / ICMPv6ND_NS(tgt=NET6 + "ffc8")
    assert metallb.parse_solicit(bytes(dad)) is None


# --- ingress-nginx over both families -------------------------------------------------------

def test_ingress_nginx_listens_on_ipv6_in_a_dual_lab_only(tmp_path):
    dual = state_of(tmp_path, DUAL, lab_doc(ingress="{enabled: true}"))
    text = ingress_nginx.config(dual, tmp_path)
    assert "    listen 80 default_server;\n    listen [::]:80 default_server;\n" in text
    single = state_of(tmp_path, CLUSTER, lab_doc(ingress="{enabled: true}"))
    assert "[::]" not in ingress_nginx.config(single, tmp_path)


def test_the_controllers_service_is_single_stack_ipv4_unless_asked(tmp_path):
    dual = state_of(tmp_path, DUAL, lab_doc(ingress="{enabled: true, service: LoadBalancer}"))
    controller = dual.service("ingress-nginx", "ingress-nginx-controller")
    assert (controller.ip_family_policy, controller.ip_families) == ("SingleStack", ("IPv4",))   # deploy.yaml's
    asked = state_of(tmp_path, DUAL, lab_doc(ingress="{enabled: true, service: LoadBalancer, "
                                                     "ipFamilyPolicy: PreferDualStack}"))
    controller = asked.service("ingress-nginx", "ingress-nginx-controller")
    assert controller.ip_families == ("IPv4", "IPv6")
    assert controller.load_balancer_ips == ("172.18.255.200", NET6 + "ffc8")


def test_a_dual_stack_ingress_policy_needs_a_dual_lab(tmp_path):
    assert refusal(tmp_path, CLUSTER, lab_doc(ingress="{enabled: true, ipFamilyPolicy: PreferDualStack}")) == (
        "lab.yaml: Lab: ingress.ipFamilyPolicy: PreferDualStack is for a dual-stack lab (the Cluster's "
        "networking.ipFamily: dual)")
