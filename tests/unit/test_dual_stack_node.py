"""A dual-stack node and pod network (kind's `ipFamily: dual`, the bridge CNI with host-local's
two ranges) against shared/reference/dual-stack.md and the real components: the bridge
plugin's gateway (network + 1) and routes, host-local's files, kubelet's /etc/hosts and the
Node and Pod objects kubelet and kube-controller-manager write."""

import socket
from pathlib import Path

import pytest

from netlab import plan
from netlab.api import apiserver, printers, spec
from netlab.api.objects import HostLocal
from netlab.controllers import cluster
from netlab.kernel import netlink
from netlab.node import cni, files, kubelet, underlay
from netlab.values.desired import Addr, NetnsPlan, Route

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "dual-stack.yaml"


def dual_lab(pods=()):
    c = spec.ClusterConfig(name="d", roles=("control-plane", "worker", "worker"), ip_family="dual",
                           pod_subnet6="fd00:10:244::/56", service_subnet6="fd00:10:96::/112",
                           lan_cidr6="fc00:f853:ccd:e793::/64", dns_replicas=0)
    return cluster.new_state(spec.LabSpec(c, tuple(pods)))


def ipv4_lab(pods=()):
    c = spec.ClusterConfig(name="d", roles=("control-plane", "worker", "worker"), dns_replicas=0)
    return cluster.new_state(spec.LabSpec(c, tuple(pods)))


def pod_on(node, name="p", **template):
    t = spec.PodTemplate(labels={}, containers=(spec.Container("c"),), node_name=node, **template)
    return spec.PodManifest("default", name, t)


# --- the plans ---------------------------------------------------------------------------------

def test_the_topology_is_a_dual_stack_kind_cluster_of_three_nodes():
    s = cluster.new_state(spec.load(TOPOLOGY))
    assert s.cluster.dual and s.cluster.families == ("IPv4", "IPv6")
    assert [n.role for n in s.nodes] == ["control-plane", "worker", "worker"]
    assert (s.cluster.pod_subnet6, s.cluster.lan_cidr6) == ("fd00:10:244::/56", "fc00:f853:ccd:e793::/64")


def test_a_nodes_eth0_has_its_ipv6_twin_and_a_default_route_via_the_lan_gateway():
    s = dual_lab()
    p = plan.node_plan(s, s.node("d-worker"))
    assert [a for a in p.addrs if a.dev == "eth0"] == [Addr("eth0", "172.18.0.3/16"),
                                                      Addr("eth0", "fc00:f853:ccd:e793::3/64")]
    assert [r for r in p.routes if r.dev == "eth0"] == [Route("default", via="172.18.0.1", dev="eth0"),
                                                       Route("default", via="fc00:f853:ccd:e793::1", dev="eth0")]


def test_a_dual_node_has_kinds_ipv6_sysctls_beside_kubeadms():
    s = dual_lab()
    p = plan.node_plan(s, s.node("d-worker"))
    assert p.sysctls[:5] == (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1"),
                             ("net/bridge/bridge-nf-call-ip6tables", "1"),
                             ("net/ipv6/conf/all/disable_ipv6", "0"), ("net/ipv6/conf/all/forwarding", "1"))
    # the bridge plugin's ensureBridge: "we want to own the routes for this interface"
    assert ("net/ipv6/conf/cni0/accept_ra", "0") in p.sysctls


def test_the_lan_bridge_is_the_ipv6_gateway_and_the_external_client_has_its_twin():
    s = dual_lab()
    lan = underlay.lan_plan(s)
    assert lan.addrs == (Addr("br0", "172.18.0.1/16"), Addr("br0", "fc00:f853:ccd:e793::1/64"))
    assert ("net/ipv4/ip_forward", "0") in lan.sysctls and ("net/ipv6/conf/br0/accept_ra", "0") in lan.sysctls
    ext = underlay.external_plan(s)
    # the LAN's last host address, 172.18.255.254: host part 0xfffe
    assert ext.addrs == (Addr("eth0", "172.18.255.254/16"), Addr("eth0", "fc00:f853:ccd:e793::fffe/64"))
    assert ext.routes == (Route("default", via="172.18.0.1", dev="eth0"),
                          Route("default", via="fc00:f853:ccd:e793::1", dev="eth0"))
    assert ("net/ipv6/conf/eth0/accept_ra", "0") in ext.sysctls


def test_cni0_has_the_ipv6_gateway_beside_the_ipv4_one():
    s = dual_lab()
    assert cni.node_plan(s, s.node("d-worker")).addrs == (Addr("cni0", "10.244.1.1/24"),
                                                          Addr("cni0", "fd00:10:244:1::1/64"))
    assert cni.node_plan(s, s.node("d-control-plane")).addrs == (Addr("cni0", "10.244.0.1/24"),
                                                                 Addr("cni0", "fd00:10:244::1/64"))


def test_a_pods_eth0_has_both_addresses_and_a_default_and_cluster_route_per_family():
    s = dual_lab([pod_on("d-worker")])
    pp = cni.pod_plan(s, s.pods[0])
    assert pp.addrs == (Addr("eth0", "10.244.1.2/24"), Addr("eth0", "fd00:10:244:1::2/64"))
    assert pp.routes == (Route("default", via="10.244.1.1", dev="eth0"),
                         Route("10.244.0.0/16", via="10.244.1.1", dev="eth0"),
                         Route("default", via="fd00:10:244:1::1", dev="eth0"),
                         Route("fd00:10:244::/56", via="fd00:10:244:1::1", dev="eth0"))
    # the bridge plugin: accept_dad 0 (enabledad false), arp_notify 1; no router advertisements
    assert pp.sysctls == (("net/ipv6/conf/eth0/accept_dad", "0"), ("net/ipv4/conf/eth0/arp_notify", "1"),
                          ("net/ipv6/conf/eth0/accept_ra", "0"))
    assert str(pp.routes[3]) == "fd00:10:244::/56 via fd00:10:244:1::1 dev eth0"   # as `ip -6 route` prints it


def test_an_ipv4_labs_plans_have_nothing_of_ipv6():
    s = ipv4_lab([pod_on("d-worker")])
    for p in plan.lab_plans(s):
        assert not [a for a in p.addrs if ":" in a.cidr], p.netns
        assert not [r for r in p.routes if ":" in r.dst or ":" in (r.via or "")], p.netns
        assert not [k for k, _ in p.sysctls if "ipv6" in k], p.netns
    assert plan.node_plan(s, s.node("d-worker")).sysctls[:3] == plan.NODE_SYSCTLS
    assert cni.pod_plan(s, s.pods[0]).sysctls == (("net/ipv4/conf/eth0/arp_notify", "1"),)
    assert underlay.external_plan(s).sysctls == ()


# --- what kubelet and host-local write ---------------------------------------------------------

def test_kubelets_hosts_file_has_one_line_per_pod_ip_of_both_families():
    s = dual_lab([pod_on("d-worker", "web")])
    assert kubelet.hosts_file(s.pods[0]) == (
        "# Kubernetes-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        "10.244.1.2\tweb\n"
        "fd00:10:244:1::2\tweb\n")


def test_a_hostname_and_subdomain_name_both_lines():
    s = dual_lab([pod_on("d-worker", "web", hostname="h", subdomain="sub")])
    assert kubelet.hosts_file(s.pods[0]).splitlines()[-2:] == [
        "10.244.1.2\th.sub.default.svc.cluster.local\th", "fd00:10:244:1::2\th.sub.default.svc.cluster.local\th"]


def test_an_ipv4_pods_hosts_file_is_unchanged():
    s = ipv4_lab([pod_on("d-worker", "web")])
    assert kubelet.hosts_file(s.pods[0]).splitlines()[-2:] == ["fe00::2\tip6-allrouters", "10.244.1.2\tweb"]


def test_host_local_keeps_one_file_per_address_and_the_last_reserved_of_each_range():
    s = dual_lab([pod_on("d-worker", "a"), pod_on("d-worker", "b")])
    a, b = s.pods
    assert files.host_local_records(s.ipam["d-worker"]) == {
        "10.244.1.2": f"{a.container_id}\r\neth0", "fd00:10:244:1::2": f"{a.container_id}\r\neth0",
        "10.244.1.3": f"{b.container_id}\r\neth0", "fd00:10:244:1::3": f"{b.container_id}\r\neth0",
        "last_reserved_ip.0": "10.244.1.3", "last_reserved_ip.1": "fd00:10:244:1::3"}
    assert files.host_local_records(HostLocal()) == {}


def test_an_ipv4_nodes_host_local_files_have_no_second_range():
    s = ipv4_lab([pod_on("d-worker", "a")])
    assert set(files.host_local_records(s.ipam["d-worker"])) == {"10.244.1.2", "last_reserved_ip.0"}


# --- the API -----------------------------------------------------------------------------------

def test_a_dual_nodes_object_has_both_pod_cidrs_and_both_internal_ips_then_the_hostname():
    s = dual_lab()
    obj = apiserver.node_object(s, s.node("d-worker"))
    assert obj["spec"]["podCIDR"] == "10.244.1.0/24"
    assert obj["spec"]["podCIDRs"] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert obj["status"]["addresses"] == [{"type": "InternalIP", "address": "172.18.0.3"},
                                          {"type": "InternalIP", "address": "fc00:f853:ccd:e793::3"},
                                          {"type": "Hostname", "address": "d-worker"}]


def test_a_dual_pods_object_has_both_pod_ips_and_host_ips_ipv4_first():
    s = dual_lab([pod_on("d-worker")])
    st = apiserver.pod_object(s, s.pods[0])["status"]
    assert (st["podIP"], st["podIPs"]) == ("10.244.1.2", [{"ip": "10.244.1.2"}, {"ip": "fd00:10:244:1::2"}])
    assert (st["hostIP"], st["hostIPs"]) == ("172.18.0.3", [{"ip": "172.18.0.3"}, {"ip": "fc00:f853:ccd:e793::3"}])


def test_an_ipv4_labs_node_and_pod_objects_are_unchanged():
    s = ipv4_lab([pod_on("d-worker")])
    node = apiserver.node_object(s, s.node("d-worker"))
    assert node["spec"]["podCIDRs"] == ["10.244.1.0/24"]
    assert node["status"]["addresses"] == [{"type": "InternalIP", "address": "172.18.0.3"},
                                           {"type": "Hostname", "address": "d-worker"}]
    st = apiserver.pod_object(s, s.pods[0])["status"]
    assert (st["podIPs"], st["hostIPs"]) == ([{"ip": "10.244.1.2"}], [{"ip": "172.18.0.3"}])


def test_kubectl_wide_prints_the_first_address_of_a_dual_node_and_pod():
    s = dual_lab([pod_on("d-worker")])
    pods = printers.render(printers.table("pods", [apiserver.pod_object(s, s.pods[0])]), wide=True)
    assert pods.splitlines()[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert pods.splitlines()[1].split()[5:7] == ["10.244.1.2", "d-worker"]
    nodes = printers.render(printers.table("nodes", [apiserver.node_object(s, s.node("d-worker"))]), wide=True)
    header, row = nodes.splitlines()
    assert row.split()[header.split().index("INTERNAL-IP")] == "172.18.0.3"
    assert "fc00" not in nodes and "fd00" not in pods


# --- applying: IPv6 addresses and routes through netlink (a recording fake of IPRoute) ----------

class FakeIPRoute:
    """Dumps what it is given, per family; records every change."""

    def __init__(self, addrs=(), routes=()):
        self.addrs, self.routes, self.calls = list(addrs), list(routes), []

    def addr(self, cmd, **kw):
        if cmd == "dump":
            return [a for a in self.addrs if a["family"] == kw["family"]]
        self.calls.append(("addr", cmd, kw))

    def route(self, cmd, **kw):
        if cmd == "dump":
            return [r for r in self.routes if r["family"] == kw["family"]]
        self.calls.append(("route", cmd, kw))


def _addr(family, index, address, prefixlen, scope=0):
    return {"family": family, "index": index, "prefixlen": prefixlen, "scope": scope,
            "IFA_ADDRESS": address}


def _route(family, dst, dst_len, gateway, oif, proto=3):
    return {"family": family, "dst_len": dst_len, "proto": proto, "flags": 0, "RTA_TABLE": 254,
            "RTA_DST": dst, "RTA_GATEWAY": gateway, "RTA_OIF": oif}


POD = NetnsPlan("d-default.p", addrs=(Addr("eth0", "10.244.1.2/24"), Addr("eth0", "fd00:10:244:1::2/64")),
                routes=(Route("default", via="10.244.1.1", dev="eth0"),
                        Route("default", via="fd00:10:244:1::1", dev="eth0"),
                        Route("fd00:10:244::/56", via="fd00:10:244:1::1", dev="eth0")), owner="cni")


def _applier_on(ipr, plan_, fresh=False):
    applier = netlink.NetlinkApplier()
    index = netlink._Index({"lo": 1, "eth0": 2})
    applier._addrs(plan_, ipr, index, fresh)
    applier._routes(plan_, ipr, index, fresh)
    return applier


def test_ipv6_addresses_are_added_nodad_and_ipv6_routes_with_their_family():
    ipr = FakeIPRoute()
    _applier_on(ipr, POD, fresh=True)
    assert ipr.calls == [
        ("addr", "add", dict(index=2, address="10.244.1.2", prefixlen=24)),
        ("addr", "add", dict(index=2, address="fd00:10:244:1::2", prefixlen=64, flags=0x02)),  # IFA_F_NODAD
        ("route", "replace", dict(dst="0.0.0.0/0", oif=2, proto=3, table=254, family=socket.AF_INET,
                                  gateway="10.244.1.1")),
        ("route", "replace", dict(dst="::/0", oif=2, proto=3, table=254, family=socket.AF_INET6,
                                  gateway="fd00:10:244:1::1")),
        ("route", "replace", dict(dst="fd00:10:244::/56", oif=2, proto=3, table=254, family=socket.AF_INET6,
                                  gateway="fd00:10:244:1::1"))]


def test_a_converged_dual_namespace_gets_no_write_and_its_link_local_address_is_kept():
    v4, v6 = socket.AF_INET, socket.AF_INET6
    ipr = FakeIPRoute(
        addrs=[_addr(v4, 2, "10.244.1.2", 24), _addr(v6, 2, "fd00:10:244:1::2", 64),
               _addr(v6, 2, "fe80::1c:2ff:fe3a:1", 64, scope=253), _addr(v6, 1, "::1", 128, scope=254)],
        routes=[_route(v4, None, 0, "10.244.1.1", 2), _route(v6, None, 0, "fd00:10:244:1::1", 2),
                _route(v6, "fd00:10:244::", 56, "fd00:10:244:1::1", 2),
                _route(v6, "fd00:10:244:1::", 64, None, 2, proto=2), _route(v6, "fe80::", 64, None, 2, proto=2)])
    assert _applier_on(ipr, POD).writes == 0 and ipr.calls == []


def test_a_stale_ipv6_route_is_deleted_in_its_family():
    v6 = socket.AF_INET6
    ipr = FakeIPRoute(routes=[_route(v6, "fd00:10:244:9::", 64, "fd00:10:244:1::1", 2),
                              _route(v6, None, 0, "fd00:10:244:1::1", 2),
                              _route(v6, "fd00:10:244::", 56, "fd00:10:244:1::1", 2)],
                      addrs=[_addr(socket.AF_INET, 2, "10.244.1.2", 24), _addr(v6, 2, "fd00:10:244:1::2", 64)])
    applier = _applier_on(ipr, POD)
    assert ipr.calls[0] == ("route", "del", dict(dst="fd00:10:244:9::/64", table=254, family=v6))
    assert applier.log[0] == ("d-default.p", "del route fd00:10:244:9::/64", "cni")


def test_an_ipv4_plan_reads_back_only_ipv4():
    ipr = FakeIPRoute(addrs=[_addr(socket.AF_INET6, 2, "fd00::5", 64)])   # never looked at
    p = NetnsPlan("n", addrs=(Addr("eth0", "10.244.1.2/24"),), routes=(Route("default", via="10.244.1.1", dev="eth0"),))
    _applier_on(ipr, p)
    assert [c[1] for c in ipr.calls] == ["add", "replace"]
    assert ipr.calls[1][2]["family"] == socket.AF_INET


@pytest.mark.parametrize("dst,via,family,wire", [
    ("default", "10.244.1.1", socket.AF_INET, "0.0.0.0/0"),
    ("default", "fd00:10:244:1::1", socket.AF_INET6, "::/0"),
    ("fd00:10:244::/56", None, socket.AF_INET6, "fd00:10:244::/56"),
    ("10.244.0.0/16", "10.244.1.1", socket.AF_INET, "10.244.0.0/16"),
    ("default", None, socket.AF_INET, "0.0.0.0/0"),
])
def test_a_routes_family_and_wire_destination(dst, via, family, wire):
    assert netlink._route_family(dst, via) == family
    assert netlink._route_dst(dst, family) == wire


def test_netexec_prints_an_ipv6_client_as_go_joins_host_and_port():
    from netlab.addons import agnhost
    assert agnhost.http_answer("web", "/clientip", ("fd00:10:244:1::2", 40000)) == (200, "[fd00:10:244:1::2]:40000")
    assert agnhost.udp_answer("web", b"clientip", ("fd00:10:244:1::2", 40000)) == "[fd00:10:244:1::2]:40000"
    assert agnhost.http_answer("web", "/clientip", ("10.244.1.2", 40000)) == (200, "10.244.1.2:40000")
