"""The cloud's load balancers and MetalLB's layer-2 speakers, as values."""

import random

from netlab import names
from netlab.addons import cloud, metallb
from netlab.api import spec
from netlab.api.spec import ServiceManifest, ServicePort
from netlab.controllers import cluster

CLUSTER = spec.ClusterConfig(name="t", roles=("control-plane", "worker", "worker"))


def lab(mode="cloud", policy="Cluster"):
    c = spec.ClusterConfig(**{**CLUSTER.__dict__, "lb_mode": mode})
    web = spec.DeploymentManifest("default", "web", 2, {"app": "web"}, spec.PodTemplate(
        labels={"app": "web"}, containers=(spec.Container("c", ports=(spec.ContainerPort(8080, "TCP", "http"),)),)))
    svc = ServiceManifest("default", "web-lb", type="LoadBalancer", selector={"app": "web"},
                          external_traffic_policy=policy, ports=(ServicePort(80, "TCP", "http", "http"),))
    return cluster.new_state(spec.LabSpec(c, deployments=(web,), services=(svc,)), random.Random(3))


def test_addresses_come_from_the_pool_in_order_and_local_gets_a_health_port():
    s = lab(policy="Local")
    svc = s.service("default", "web-lb")
    assert (svc.load_balancer_ip, svc.load_balancer_ip_mode) == ("172.18.255.200", "Proxy")
    assert 30000 <= svc.health_check_node_port <= 32767 and svc.ports[0].node_port
    assert names.lb_netns("t", svc.key) in s.netns


def test_the_cloud_balancer_forwards_to_healthy_nodes_node_ports():
    s = lab()
    svc = s.service("default", "web-lb")
    np = svc.ports[0].node_port
    plan = cloud.lb_plan(s, svc, {"t-worker", "t-worker2"})
    nat = plan.iptables["nat"].chains
    assert nat["PREROUTING"] == ("-d 172.18.255.200/32 -p tcp -m tcp --dport 80 -j LB-TCP-80",)
    assert nat["LB-TCP-80"] == (
        f"-p tcp -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 172.18.0.3:{np}",
        f"-p tcp -j DNAT --to-destination 172.18.0.4:{np}")
    assert nat["POSTROUTING"] == ("-m conntrack --ctstate DNAT -j MASQUERADE",)
    assert [str(a) for a in plan.addrs] == ["172.18.255.200/16 dev eth0"]
    assert cloud.lb_plan(s, svc, set()).iptables["nat"].chains["LB-TCP-80"] == ()


def test_until_checked_every_node_is_healthy():
    s = lab()
    svc = s.service("default", "web-lb")
    assert cloud.healthy_nodes(s, svc, {}) == {n.name for n in s.nodes}
    assert cloud.healthy_nodes(s, svc, {svc.key: ["t-worker"]}) == {"t-worker"}


def test_metallb_elects_one_node_and_local_only_among_nodes_with_endpoints():
    s = lab("metallb")
    svc = s.service("default", "web-lb")
    assert svc.load_balancer_ip_mode == "VIP"
    (ip, node), = metallb.announcements(s).items()
    assert ip == "172.18.255.200" and node in {n.name for n in s.nodes}
    local = lab("metallb", "Local")
    hosts = {p.node for p in local.pods if p.owner == "Deployment/web"}
    assert {n.name for n in metallb.eligible(local, local.service("default", "web-lb"))} == hosts
    assert set(metallb.announcements(local).values()) <= hosts


def test_arp_replies_and_requests_on_the_wire():
    frame = metallb.arp_reply("02:00:00:00:00:01", "172.18.255.200", "02:00:00:00:00:02", "172.18.255.254")
    assert frame[:6] == bytes.fromhex("020000000002") and frame[12:14] == b"\x08\x06"
    request = bytearray(frame)
    request[20:22] = b"\x00\x01"                                  # the same, as a request
    assert metallb.parse_request(bytes(request)) == ("02:00:00:00:00:01", "172.18.255.200", "172.18.255.254")
    assert metallb.parse_request(frame) is None
