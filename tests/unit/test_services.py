"""Services as the API server validates and allocates them, and the endpoints controller."""

import random
import textwrap

import pytest

from netlab.api import printers as kubectl
from netlab.api import spec
from netlab.api.spec import ServicePort
from netlab.controllers import cluster, endpoints, ipam
from netlab.errors import SpecError

CLUSTER = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: t
nodes: [{role: control-plane}, {role: worker}, {role: worker}]
"""


def load(tmp_path, *services):
    f = tmp_path / "lab.yaml"
    f.write_text(CLUSTER + "".join("---\n" + textwrap.dedent(s) for s in services))
    return spec.load(f)


def error_of(tmp_path, *services):
    with pytest.raises(SpecError) as e:
        load(tmp_path, *services)
    return e.value


def svc(body, name="s", kind="Service"):
    return f"apiVersion: v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n" + textwrap.indent(textwrap.dedent(body), "  ") + "\n"


def test_defaults_of_a_service(tmp_path):
    s = load(tmp_path, svc("selector: {app: a}\nports: [{port: 80}]")).services[0]
    assert (s.type, s.cluster_ip, s.session_affinity, s.external_traffic_policy) == ("ClusterIP", None, "None", None)
    assert s.ports == (ServicePort(80, "TCP", "", 80, None),)


def test_nodeport_gets_the_cluster_external_traffic_policy(tmp_path):
    s = load(tmp_path, svc("type: NodePort\nselector: {app: a}\nports: [{port: 80, nodePort: 30001}]")).services[0]
    assert s.external_traffic_policy == "Cluster" and s.ports[0].node_port == 30001


@pytest.mark.parametrize("body, field, words", [
    ("ports: [{port: 80}, {port: 81}]", "spec.ports[0].name", "more than one port"),
    ("ports: [{name: a, port: 80}, {name: a, port: 81}]", "spec.ports[1].name", "duplicate"),
    ("ports: [{name: a, port: 80}, {name: b, port: 80}]", "spec.ports[1].port", "duplicate port 80/TCP"),
    ("ports: [{port: 80, protocol: SCTP}]", "spec.ports[0].protocol", "SCTP"),
    ("ports: [{port: 70000}]", "spec.ports[0].port", "must be between"),
    ("ports: [{port: 80, targetPort: Not_A_Name}]", "spec.ports[0].targetPort", "IANA"),
    ("ports: [{port: 80, nodePort: 30001}]", "spec.ports[0].nodePort", "ClusterIP"),
    ("type: NodePort\nports: [{port: 80, nodePort: 29999}]", "spec.ports[0].nodePort", "must be between"),
    ("clusterIP: 10.200.0.1\nports: [{port: 80}]", "spec.clusterIP", "serviceSubnet"),
    ("clusterIP: 10.96.0.10\nports: [{port: 80}]", "spec.clusterIP", "kube-dns"),
    ("clusterIP: 10.96.0.1\nports: [{port: 80}]", "spec.clusterIP", "default/kubernetes"),
    ("clusterIP: nonsense\nports: [{port: 80}]", "spec.clusterIP", "not a valid"),
    ("sessionAffinity: Sticky\nports: [{port: 80}]", "spec.sessionAffinity", "ClientIP"),
    ("sessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeoutSeconds: 90000}}\nports: [{port: 80}]",
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "must be between"),
    ("externalTrafficPolicy: Local\nports: [{port: 80}]", "spec.externalTrafficPolicy", "externally-accessible"),
    ("loadBalancerSourceRanges: [10.0.0.0/8]\nports: [{port: 80}]", "spec.loadBalancerSourceRanges", "LoadBalancer"),
    ("type: LoadBalancer\nhealthCheckNodePort: 30500\nports: [{port: 80}]", "spec.healthCheckNodePort", "Local"),
    ("type: LoadBalancer\nallocateLoadBalancerNodePorts: false\nports: [{port: 80}]",
     "spec.allocateLoadBalancerNodePorts", "NodePorts"),
    ("type: LoadBalancer\nloadBalancerSourceRanges: [10.0.0.1/8]\nports: [{port: 80}]",
     "spec.loadBalancerSourceRanges[0]", "CIDR"),
    ("type: NodePort\nclusterIP: None\nports: [{port: 80}]", "spec.clusterIP", "None"),
    ("selector: {app: a}", "spec.ports", "required"),
])
def test_invalid_services_name_their_field(tmp_path, body, field, words):
    e = error_of(tmp_path, svc(body))
    assert (e.obj, e.field) == ("Service default/s", field) and words in e.message


def test_service_names_are_dns_1035_labels(tmp_path):
    e = error_of(tmp_path, svc("ports: [{port: 80}]", name="9lives"))
    assert e.field == "metadata.name" and "DNS-1035" in e.message


def test_taken_addresses_are_refused_across_services(tmp_path):
    e = error_of(tmp_path, svc("clusterIP: 10.96.7.7\nports: [{port: 80}]", "a"),
                 svc("clusterIP: 10.96.7.7\nports: [{port: 80}]", "b"))
    assert (e.obj, e.field) == ("Service default/b", "spec.clusterIP") and "default/a" in e.message
    e = error_of(tmp_path, svc("type: NodePort\nports: [{port: 80, nodePort: 30001}]", "a"),
                 svc("type: NodePort\nports: [{port: 80, nodePort: 30001}]", "b"))
    assert e.field == "spec.ports[0].nodePort" and "already allocated" in e.message


def test_one_service_may_use_a_node_port_for_tcp_and_udp(tmp_path):
    s = load(tmp_path, svc("type: NodePort\nports: [{name: t, port: 53, nodePort: 30053}, "
                           "{name: u, port: 53, protocol: UDP, nodePort: 30053}]")).services[0]
    assert [p.node_port for p in s.ports] == [30053, 30053]


def test_headless_and_external_name(tmp_path):
    s = load(tmp_path, svc("clusterIP: None\nselector: {app: a}"),
             svc("type: ExternalName\nexternalName: example.org", name="ext")).services
    assert s[0].headless and s[0].ports == ()
    assert (s[1].type, s[1].external_name, s[1].cluster_ip) == ("ExternalName", "example.org", None)


# --- allocation --------------------------------------------------------------------------

def test_cluster_ips_come_from_above_the_static_band():
    """KEP-3070: a /12 keeps its first 256 addresses for clusterIPs users ask for."""
    rng = random.Random(7)
    taken = set()
    for _ in range(200):
        ip = ipam.allocate_service_ip("10.96.0.0/12", taken, rng)
        assert ip not in taken
        taken.add(ip)
    assert all(tuple(map(int, ip.split("."))) >= (10, 96, 1, 1) for ip in taken)


def test_static_band_is_used_when_the_upper_range_is_full():
    taken = {f"10.96.0.{i}" for i in range(17, 31)}          # a /27 keeps 16 (the minimum) low
    assert ipam.allocate_service_ip("10.96.0.0/27", taken, random.Random(1)) in {f"10.96.0.{i}" for i in range(1, 17)}


def test_node_ports_come_from_above_the_static_band():
    """KEP-3668: 30000-32767 keeps 30000-30085 (86 ports) for nodePorts users ask for."""
    rng = random.Random(3)
    ports = {ipam.allocate_node_port((30000, 32767), set(), rng) for _ in range(300)}
    assert min(ports) >= 30086 and max(ports) <= 32767


def test_default_kubernetes_service_and_its_endpoints():
    s = cluster.new_state(spec.LabSpec(spec.ClusterConfig(name="t", roles=("control-plane", "worker"))))
    k = s.service("default", "kubernetes")
    assert (k.cluster_ip, k.ports) == ("10.96.0.1", (ServicePort(443, "TCP", "https", 6443),))
    (subset,) = s.endpoints_of(k).subsets
    assert [a.ip for a in subset.addresses] == [s.node("t-control-plane").ip]
    assert subset.ports == (endpoints.Port("https", 6443, "TCP"),)


def test_tcp_and_udp_ports_share_an_allocated_node_port(tmp_path):
    lab = load(tmp_path, svc("type: NodePort\nports: [{name: t, port: 53}, {name: u, port: 53, protocol: UDP}]"))
    s = cluster.new_state(lab, random.Random(1)).service("default", "s")
    assert s.ports[0].node_port == s.ports[1].node_port and s.cluster_ip.startswith("10.")


# --- the endpoints controller ------------------------------------------------------------

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: a}}}}
spec:
  nodeName: t-worker
  containers: [{{name: c, ports: [{{name: web, containerPort: {port}}}]}}]
"""


def test_named_target_ports_resolve_per_pod_and_unready_pods_are_kept_apart(tmp_path):
    lab = load(tmp_path, POD.format(name="p1", port=8080), POD.format(name="p2", port=9090),
               POD.format(name="p3", port=8080),
               svc("selector: {app: a}\nports: [{name: http, port: 80, targetPort: web}]", name="s"))
    state = cluster.new_state(lab, random.Random(1))
    state.pod("default", "p3").ready = False
    cluster.sync_endpoints(state)
    ep = state.endpoints_of(state.service("default", "s"))
    by_port = {s.ports[0].port: s for s in ep.subsets}
    assert {a.pod for a in by_port[8080].addresses} == {"p1"}
    assert {a.pod for a in by_port[8080].not_ready} == {"p3"}
    assert {a.pod for a in by_port[9090].addresses} == {"p2"}
    assert endpoints.ready_endpoints(ep, state.service("default", "s").ports[0]) == sorted(
        [(f"{state.pod('default', 'p1').ip}:8080", "t-worker"), (f"{state.pod('default', 'p2').ip}:9090", "t-worker")])


def test_a_pod_without_the_named_port_is_left_out(tmp_path):
    lab = load(tmp_path, POD.format(name="p1", port=8080),
               svc("selector: {app: a}\nports: [{port: 80, targetPort: other}]"))
    state = cluster.new_state(lab, random.Random(1))
    assert state.endpoints_of(state.service("default", "s")).subsets == ()


def test_kubectl_endpoints_column_shows_three_then_a_count():
    obj = {"subsets": [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(1, 5)],
                        "ports": [{"port": 80}, {"port": 81}]}]}
    assert kubectl.format_endpoints(obj) == "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 5 more..."
    assert kubectl.format_endpoints({}) == "<none>"
    assert kubectl.format_endpoints({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]}) == "10.0.0.1"


def test_kubectl_ports_column():
    objs = [{"metadata": {"name": "s", "namespace": "default", "creationTimestamp": ""},
             "spec": {"type": "NodePort", "clusterIP": "10.96.1.2", "clusterIPs": ["10.96.1.2"],
                      "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}}]
    row = kubectl.render(kubectl.table("services", objs)).splitlines()[1].split()
    assert row[:5] == ["s", "NodePort", "10.96.1.2", "<none>", "80:30080/TCP,53/UDP"]


def test_stale_udp_flows_include_a_load_balancer_vip():
    """kube-proxy clears UDP conntrack entries of a removed endpoint for every address the
    service port answers on: its ClusterIP, external IPs, load-balancer VIPs and NodePort."""
    from netlab.api.objects import SERVICE_NAME_LABEL, EndpointSlice, Port, SliceEndpoint
    from netlab.api.spec import ServiceManifest
    from netlab.node.proxy import iptables as kube_proxy
    port = ServicePort(53, "UDP", "dns", 53, node_port=30053)
    s = ServiceManifest("default", "d", {}, cluster_ip="10.96.0.50", ports=(port,), type="LoadBalancer",
                        selector={"app": "d"}, external_ips=("192.0.2.7",), load_balancer_ip="172.18.255.200",
                        load_balancer_ip_mode="VIP")
    a = lambda ip: SliceEndpoint((ip,), ready=True, node="t-worker", pod="p", uid="u")  # noqa: E731
    eps = lambda *e: [EndpointSlice("default", "d-x2b4c", {SERVICE_NAME_LABEL: "d"}, endpoints=e,  # noqa: E731
                                    ports=(Port("dns", 53, "UDP"),))]
    before = eps(a("10.244.1.5"), a("10.244.1.6"))
    after = eps(a("10.244.1.6"))
    assert kube_proxy.stale_udp_flows([s], before, [s], after) == [
        ("10.96.0.50", 53, "10.244.1.5"), ("192.0.2.7", 53, "10.244.1.5"), ("172.18.255.200", 53, "10.244.1.5"),
        (None, 30053, "10.244.1.5")]


def test_a_node_port_one_manifest_asks_for_is_never_given_at_random_to_another(tmp_path):
    """Random(1) hands 31968 to the first NodePort Service; the second asks for 31968."""
    lab = load(tmp_path, svc("type: NodePort\nselector: {app: a}\nports: [{port: 80}]", name="first"),
               svc("type: NodePort\nselector: {app: a}\nports: [{port: 80, nodePort: 31968}]", name="second"))
    state = cluster.new_state(lab, random.Random(1))
    ports = {s.name: s.ports[0].node_port for s in state.services if s.name in ("first", "second")}
    assert ports["second"] == 31968 and ports["first"] != 31968
