"""An IPv6 lab (kind's `networking.ipFamily: ipv6`), planned: every agent's IPv6 side and
nothing of IPv4's. The values are the real components': kind's ipv6 defaults, the node
controller's /64 podCIDRs (one range), host-local's one range (last_reserved_ip.0),
flanneld with EnableIPv4 false (pkg/subnet/config.go WriteSubnetFile writes the IPv4 keys
only with EnableIPv4; no flannel.1; the network's MTU is flannel-v6.1's), kube-proxy's and
kube-router's IPv6 handlers alone, kubeadm's clusterDNS at the tenth address of the IPv6
service range, and the API server's Services SingleStack IPv6."""

import random

import pytest

from netlab.addons import coredns
from netlab.api import apiserver, netconf, spec
from netlab.errors import SpecError
from netlab.api.spec import (ClusterConfig, IPBlock, LabelSelector, LabSpec, NetworkPolicyManifest, PolicyPeer,
                             PolicyRule, ServiceManifest, ServicePort)
from netlab.controllers import cluster
from netlab.node import cni, files, kubelet
from netlab.node.flannel import flanneld
from netlab.node.netpol import kube_router as kr
from netlab.node.proxy import iptables as kube_proxy
from netlab.node.proxy import nftables as kube_proxy_nft

IPV6 = dict(ip_family="ipv6", pod_subnet="", service_subnet="", pod_subnet6="fd00:10:244::/56",
            service_subnet6="fd00:10:96::/112", lan_cidr6="fc00:f853:ccd:e793::/64")


def lab(*, mode="iptables", roles=("control-plane", "worker"), spec_=None):
    c = ClusterConfig(name="t", roles=roles, dns_replicas=1, kube_proxy_mode=mode, **IPV6)
    state = cluster.new_state(spec_ or LabSpec(c), rng=random.Random(7))
    return state


def web(state):
    """A Service asking nothing of families, with the coredns pod as its one endpoint."""
    svc = cluster.add_service(state, ServiceManifest("kube-system", "web", selector={"k8s-app": "kube-dns"},
                                                     ports=(ServicePort(53, "UDP", "dns", 53),)), random.Random(1))
    cluster.sync_endpoints(state, random.Random(2))
    return svc


def test_kinds_ipv6_defaults_give_one_ipv6_range_per_node_and_pod():
    state = lab()
    cp, worker = state.nodes
    assert (cp.pod_cidr, cp.pod_cidr6, worker.pod_cidr6) == ("", "fd00:10:244::/64", "fd00:10:244:1::/64")
    assert (cp.ip, cp.ip6) == ("172.18.0.2", "fc00:f853:ccd:e793::2")     # Docker's network keeps its IPv4
    assert cp.ips == ("fc00:f853:ccd:e793::2",) and cp.internal_ip == "fc00:f853:ccd:e793::2"
    assert cp.pod_cidrs == ("fd00:10:244::/64",)
    dns = next(p for p in state.pods if p.namespace == "kube-system")
    assert (dns.ip, dns.ips, dns.pod_ip) == (None, (dns.ip6,), dns.ip6)
    assert dns.ip6.endswith("::2")                                     # the gateway ::1 is skipped


def test_host_local_keeps_the_one_ranges_last_address_in_last_reserved_ip_0():
    state = lab()
    dns = next(p for p in state.pods if p.namespace == "kube-system")
    records = files.host_local_records(state.ipam[dns.node])
    assert records == {dns.ip6: f"{dns.container_id}\r\neth0", "last_reserved_ip.0": dns.ip6}


def test_the_api_servers_services_take_the_ipv6_range_singlestack():
    state = lab()
    kubernetes = state.service("default", "kubernetes")
    dns = state.service("kube-system", "kube-dns")
    assert (kubernetes.cluster_ip, dns.cluster_ip) == ("fd00:10:96::1", "fd00:10:96::a")
    svc = web(state)
    assert (svc.ip_family_policy, svc.ip_families, svc.cluster_ips) == ("SingleStack", ("IPv6",), (svc.cluster_ip,))
    assert svc.cluster_ip_of("IPv4") is None and svc.cluster_ip.startswith("fd00:10:96::")
    prefer = cluster.add_service(state, ServiceManifest("default", "p", ip_family_policy="PreferDualStack",
                                                        ports=(ServicePort(80),)), random.Random(3))
    assert prefer.ip_families == ("IPv6",)                              # no second family to prefer


@pytest.mark.parametrize("manifest, field, message", [
    (ServiceManifest("default", "r", ip_family_policy="RequireDualStack", ports=(ServicePort(80),)),
     "spec.ipFamilyPolicy", 'Invalid value: "RequireDualStack": this cluster is not configured for dual-stack '
                            'services'),
    (ServiceManifest("default", "f", ip_families=("IPv4",), ports=(ServicePort(80),)),
     "spec.ipFamilies[0]", 'Invalid value: "IPv4": not configured on this cluster'),
])
def test_an_ipv4_service_is_refused_with_the_api_servers_message(manifest, field, message):
    state = lab()
    with pytest.raises(SpecError) as e:
        cluster.add_service(state, manifest, random.Random(1))
    assert (e.value.field, e.value.message) == (field, message)


def test_the_kubernetes_endpoints_are_the_control_planes_ipv6_address():
    state = lab()
    web(state)
    k8s = next(s for s in state.endpoint_slices if s.name == "kubernetes")
    assert (k8s.address_type, k8s.endpoints[0].addresses) == ("IPv6", ("fc00:f853:ccd:e793::2",))
    slices = [s for s in state.endpoint_slices if s.service == "web"]
    dns = next(p for p in state.pods if p.namespace == "kube-system")
    assert [(s.address_type, [e.addresses for e in s.endpoints]) for s in slices] == [("IPv6", [(dns.ip6,)])]


def test_flanneld_with_ipv4_off_has_flannel_v6_alone_and_its_mtu():
    state = lab()
    cp, worker = state.nodes
    p = flanneld.node_plan(state, cp)
    assert [link.ifname for link in p.links] == ["flannel-v6.1"]
    assert [a.cidr for a in p.addrs] == ["fd00:10:244::/128"]
    assert [(r.dst, r.via) for r in p.routes] == [("fd00:10:244:1::/64", "fd00:10:244:1::")]
    assert p.iptables == {} and set(p.ip6tables) == {"nat", "filter"}
    assert flanneld.mtu(state.cluster) == flanneld.mtu6(state.cluster) == 1430
    assert flanneld.subnet_env(state.cluster, cp) == ("FLANNEL_IPV6_NETWORK=fd00:10:244::/56\n"
                                                     "FLANNEL_IPV6_SUBNET=fd00:10:244::1/64\n"
                                                     "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n")
    annotations = flanneld.annotations(cp)
    assert set(annotations) == {"flannel.alpha.coreos.com/backend-type", "flannel.alpha.coreos.com/backend-v6-data",
                                "flannel.alpha.coreos.com/kube-subnet-manager",
                                "flannel.alpha.coreos.com/public-ipv6"}
    assert annotations["flannel.alpha.coreos.com/public-ipv6"] == cp.ip6


def test_the_cni_gives_pods_and_cni0_ipv6_alone():
    state = lab()
    dns = next(p for p in state.pods if p.namespace == "kube-system")
    node = state.node(dns.node)
    pod = cni.pod_plan(state, dns)
    assert [a.cidr for a in pod.addrs] == [f"{dns.ip6}/64"]
    gw = node.pod_cidr6.split("/")[0] + "1"
    assert [(r.dst, r.via) for r in pod.routes] == [("default", gw), ("fd00:10:244::/56", gw)]
    assert all("ipv4" not in key for key, _ in pod.sysctls)             # no arp_notify without IPv4
    assert [link.mtu for link in pod.links] == [1430]
    assert [a.cidr for a in cni.node_plan(state, node).addrs] == [f"{gw}/64"]


def test_kube_proxy_runs_the_ipv6_proxier_alone_in_both_modes():
    state = lab()
    web(state)
    node = state.nodes[1]
    p = kube_proxy.node_plan(state, node)
    assert p.iptables == {} and p.sysctls == ()                          # no route_localnet: no IPv4 proxier
    nat = p.ip6tables["nat"].chains
    svc = state.service("kube-system", "web")
    assert any(f"-d {svc.cluster_ip}/128" in r for r in nat["KUBE-SERVICES"])
    nft = lab(mode="nftables")
    web(nft)
    assert list(kube_proxy_nft.node_plan(nft, nft.nodes[1]).nftables) == ["ip6 kube-proxy"]


def test_kube_router_writes_ip6tables_and_inet6_sets_alone():
    state = lab()
    state.network_policies = [NetworkPolicyManifest(
        "kube-system", "from-block", LabelSelector({}), ("Ingress",),
        (PolicyRule(peers=(PolicyPeer(ip_block=IPBlock("fd00:10:244::/56", ("fd00:10:244:1::/64",))),)),))]
    inp, compiled = kr.read(state)
    assert inp.families == ("IPv6",)
    p = kr.node_plan(state, state.nodes[0], inp, compiled)
    assert p.iptables == {} and "KUBE-ROUTER-FORWARD" in p.ip6tables["filter"].chains
    assert compiled.sets and all(s.name.startswith("inet6:") for s in compiled.sets)
    blocks = next(s for s in compiled.sets if s.type == "hash:net")
    assert ("fd00:10:244:1::/64 timeout 0 nomatch" in blocks.entries
            and "fd00:10:244::/56 timeout 0" in blocks.entries)
    accept = kr.accept_plan(state.nodes[0], state.cluster)
    assert accept.iptables == {} and set(accept.ip6tables) == {"filter"}


def test_coredns_answers_aaaa_and_nodata_for_a():
    state = lab()
    svc = web(state)
    z = coredns.zone(state)
    assert coredns.lookup(z, "ns.dns.cluster.local.", "AAAA")[1][0].data == "fd00:10:96::a"
    rcode, answers, _ = coredns.lookup(z, "web.kube-system.svc.cluster.local.", "AAAA")
    assert (rcode, [a.data for a in answers]) == ("NOERROR", [svc.cluster_ip])
    assert coredns.lookup(z, "web.kube-system.svc.cluster.local.", "A")[:2] == ("NOERROR", [])
    assert kubelet.resolv_conf(state.cluster, "default").splitlines()[1] == "nameserver fd00:10:96::a"


def test_the_api_shows_ipv6_node_and_pod_addresses_and_the_ipv6_configmaps():
    state = lab()
    cp = state.nodes[0]
    node = apiserver.node_object(state, cp)
    assert [a for a in node["status"]["addresses"] if a["type"] == "InternalIP"] == [
        {"type": "InternalIP", "address": "fc00:f853:ccd:e793::2"}]
    assert node["spec"]["podCIDRs"] == ["fd00:10:244::/64"] and node["spec"]["podCIDR"] == "fd00:10:244::/64"
    dns = next(p for p in state.pods if p.namespace == "kube-system")
    status = apiserver.pod_object(state, dns)["status"]
    assert (status["podIP"], status["podIPs"]) == (dns.ip6, [{"ip": dns.ip6}])
    assert status["hostIP"] == state.node(dns.node).ip6
    assert "clusterCIDR: fd00:10:244::/56\n" in apiserver.kube_proxy_config(state.cluster)
    assert netconf.net_conf(state.cluster).startswith(
        '{\n  "EnableIPv4": false,\n  "EnableIPv6": true,\n  "IPv6Network": "fd00:10:244::/56",\n')


def test_metallb_takes_no_ipv4_pool_in_an_ipv6_lab(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking: {ipFamily: ipv6}\n---\n"
                 "apiVersion: netlab.io/v1alpha1\nkind: Lab\n"
                 "loadBalancer: {mode: metallb, pool: 172.18.255.200-172.18.255.250}\n")
    with pytest.raises(SpecError) as e:
        spec.load(f)
    assert str(e.value) == (f"{f}: Lab: loadBalancer.pool: '172.18.255.200-172.18.255.250': an IPv4 range is for "
                            f"an IPv4 or dual-stack lab; an IPv6 lab's Services are IPv6 alone, and MetalLB gives "
                            f"them addresses of its IPv6 range")
