"""The cloud's load balancers and MetalLB's layer-2 speakers, as values."""

import dataclasses
import hashlib
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


EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"


def first_by_metallb_hash(node_names, ip):
    """MetalLB's speaker (layer2_controller.go ShouldAnnounce) sorts the usable nodes by
    sha256(node name + "#" + IP), comparing the digests' bytes, and the first announces."""
    return min(node_names, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).digest())


def metallb_lab(policy="Cluster", pinned=None, excluded=(), selector="web"):
    """Two MetalLB LoadBalancer Services asking for .200 and .201; with `pinned`, web's
    only pods are Pods placed on those nodes (nodeName); `excluded` nodes carry the label
    MetalLB's speakers honour."""
    c = spec.ClusterConfig(**{**CLUSTER.__dict__, "lb_mode": "metallb"})
    template = spec.PodTemplate(labels={"app": "web"}, containers=(
        spec.Container("c", ports=(spec.ContainerPort(8080, "TCP", "http"),)),))
    pods = tuple(spec.PodManifest("default", f"web-{i}", dataclasses.replace(template, node_name=n))
                 for i, n in enumerate(pinned or ()))
    deployments = (spec.DeploymentManifest("default", "web", 2, {"app": "web"}, template),) if pinned is None else ()
    services = tuple(ServiceManifest("default", f"lb{i}", type="LoadBalancer", selector={"app": selector},
                                     external_traffic_policy=policy, load_balancer_ip=ip,
                                     ports=(ServicePort(80, "TCP", "http", "http"),))
                     for i, ip in enumerate(("172.18.255.200", "172.18.255.201")))
    state = cluster.new_state(spec.LabSpec(c, pods=pods, deployments=deployments, services=services), random.Random(3))
    for n in state.nodes:
        if n.name in excluded:
            n.labels[EXCLUDE] = ""
        else:
            n.labels.pop(EXCLUDE, None)
    return state


def test_metallb_elects_the_node_whose_hash_sorts_first_for_each_address():
    s = metallb_lab()
    everyone = ["t-control-plane", "t-worker", "t-worker2"]
    assert [n.name for n in s.nodes] == everyone
    assert {svc.load_balancer_ip_mode for svc in s.services if svc.type == "LoadBalancer"} == {"VIP"}
    expected = {ip: first_by_metallb_hash(everyone, ip) for ip in ("172.18.255.200", "172.18.255.201")}
    assert expected == {"172.18.255.200": "t-worker", "172.18.255.201": "t-control-plane"}
    assert metallb.announcements(s) == expected


def test_metallb_passes_over_a_first_sorted_node_excluded_from_load_balancers():
    # sha256 order for .200: t-worker, t-control-plane, t-worker2; for .201: t-control-plane,
    # t-worker2, t-worker.
    s = metallb_lab(excluded={"t-worker"})
    assert first_by_metallb_hash(["t-control-plane", "t-worker2"], "172.18.255.200") == "t-control-plane"
    assert metallb.announcements(s) == {"172.18.255.200": "t-control-plane", "172.18.255.201": "t-control-plane"}
    s = metallb_lab(excluded={"t-worker", "t-control-plane"})
    assert metallb.announcements(s) == {"172.18.255.200": "t-worker2", "172.18.255.201": "t-worker2"}


def test_metallb_local_policy_elects_only_among_nodes_with_a_ready_endpoint():
    s = metallb_lab("Local", pinned=["t-control-plane", "t-worker2"])      # none on t-worker
    assert {p.node for p in s.pods if p.name.startswith("web-")} == {"t-control-plane", "t-worker2"}
    assert {n.name for n in metallb.eligible(s, s.service("default", "lb0"))} == {"t-control-plane", "t-worker2"}
    # .200: t-worker sorts first but has no endpoint; of the other two t-control-plane does.
    assert metallb.announcements(s) == {"172.18.255.200": "t-control-plane", "172.18.255.201": "t-control-plane"}
    s = metallb_lab("Local", pinned=["t-worker2"])
    assert metallb.announcements(s) == {"172.18.255.200": "t-worker2", "172.18.255.201": "t-worker2"}


def test_metallb_announces_no_service_without_a_ready_endpoint():
    # ShouldAnnounce returns "notOwner" on every speaker when no endpoint can serve, whatever
    # the traffic policy: nobody answers ARP for the address.
    s = metallb_lab(selector="nothing")
    assert metallb.announcements(s) == {}


MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def test_an_arp_reply_on_the_wire():
    frame = metallb.arp_reply(MAC_A, "172.18.255.200", MAC_B, "172.18.255.254")
    assert frame == bytes.fromhex(
        "020000000002" "020000000001" "0806"         # Ethernet: to the asker, from the speaker, ARP
        "0001" "0800" "06" "04" "0002"               # Ethernet/IPv4, 6- and 4-byte addresses, reply
        "020000000001" "ac12ffc8"                    # sender: 02:00:00:00:00:01 is 172.18.255.200
        "020000000002" "ac12fffe")                   # target: the asker, 172.18.255.254


def test_a_gratuitous_arp_on_the_wire():
    frame = metallb.arp_reply(MAC_A, "172.18.255.200", "ff:ff:ff:ff:ff:ff", "172.18.255.200")
    assert frame == bytes.fromhex(
        "ffffffffffff" "020000000001" "0806"
        "0001" "0800" "06" "04" "0002"
        "020000000001" "ac12ffc8"
        "ffffffffffff" "ac12ffc8")


# Who has 172.18.255.200? Tell 172.18.255.254 (02:00:00:00:00:02): as Linux sends it, 42 bytes
# on a veth; a physical NIC pads it to 60.
REQUEST = bytes.fromhex("ffffffffffff" "020000000002" "0806" "0001" "0800" "06" "04" "0001"
                        "020000000002" "ac12fffe" "000000000000" "ac12ffc8")


def test_arp_requests_are_read_and_everything_else_ignored():
    assert metallb.parse_request(REQUEST) == (MAC_B, "172.18.255.254", "172.18.255.200")
    assert metallb.parse_request(REQUEST + bytes(18)) == (MAC_B, "172.18.255.254", "172.18.255.200")
    reply = REQUEST[:20] + b"\x00\x02" + REQUEST[22:]
    assert metallb.parse_request(reply) is None
    assert metallb.parse_request(REQUEST[:12] + b"\x08\x00" + REQUEST[14:]) is None      # an IPv4 packet
    assert metallb.parse_request(REQUEST[:41]) is None
