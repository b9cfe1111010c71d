"""The cluster's controllers against kube's own behaviour: node names the lab keeps for itself,
Pending pods with kube-scheduler's messages, the add-on's objects, node names in full or short,
faults, Deployments and Ingresses in the API's shapes, creation times, Docker's MACs."""

import copy
import hashlib
import json
import random

import pytest

from netlab import lab as lab_module
from netlab import names, plan
from netlab.api import apiserver, etcd, printers, spec
from netlab.api.spec import IngressManifest, IngressPath, IngressRule, ServiceManifest, ServicePort
from netlab.controllers import cluster
from netlab.errors import EnvironmentProblem, NetlabError
from netlab.node import underlay
from netlab.observe import faults
from netlab.values.desired import Qdisc

TAINTED_CP = "1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"


def state_for(roles=("control-plane", "worker", "worker"), pods=(), deployments=(), seed=1, log=None):
    c = spec.ClusterConfig(name="t", roles=roles, dns_replicas=0)    # no coredns pods: only the test's own
    return cluster.new_state(spec.LabSpec(c, tuple(pods), tuple(deployments)), random.Random(seed), log=log)


def template(**kw):
    return spec.PodTemplate(labels=kw.pop("labels", {}), containers=(spec.Container("c"),), **kw)


def web(replicas, **kw):
    return spec.DeploymentManifest("default", "web", replicas, {"app": "web"}, template(labels={"app": "web"}, **kw))


def bound(state):
    return [p for p in state.pods if p.node is not None]


# --- node names the lab keeps for itself ----------------------------------------------------

@pytest.mark.parametrize("name, message", [
    ("lan", "node name 'lan' is the lab's own: t-lan is the lab's LAN namespace "
            "(lan, external and lb-* name the lab's own machines)"),
    ("t-lan", "node name 'lan' is the lab's own: t-lan is the lab's LAN namespace "
              "(lan, external and lb-* name the lab's own machines)"),
    ("external", "node name 'external' is the lab's own: t-external is the external client's namespace "
                 "(lan, external and lb-* name the lab's own machines)"),
    ("lb-x", "node name 'lb-x' is the lab's own: t-lb-* name the load balancers' namespaces"),
    ("br0", "node name 'br0' cannot be used: its port on the LAN switch would be 'br0', which is the LAN switch's bridge"),
    ("lo", "node name 'lo' cannot be used: its port on the LAN switch would be 'lo', which is the LAN namespace's loopback"),
    ("lb0123abcd", "node name 'lb0123abcd' cannot be used: its port on the LAN switch would be 'lb0123abcd', "
                   "which is the shape of a load balancer's port (lb + 8 hex digits)"),
])
def test_a_node_named_as_the_labs_own_machines_is_refused_and_nothing_changes(name, message):
    s = state_for()
    before = copy.deepcopy(s)
    with pytest.raises(NetlabError) as e:
        cluster.add_node(s, name)
    assert str(e.value) == message
    assert s == before


def test_a_name_whose_port_is_another_nodes_is_refused():
    s = state_for()
    first = cluster.add_node(s, "a" * 20, random.Random(2))          # too long for a port name: hashed
    port = "n" + hashlib.sha256(first.name.encode()).hexdigest()[:14]
    assert names.lan_port("t", first.name) == port
    with pytest.raises(NetlabError) as e:
        cluster.add_node(s, port)
    assert str(e.value) == (f"node name {port!r} cannot be used: its port on the LAN switch would be {port!r}, "
                            f"which is node t-{'a' * 20}'s port")


def test_an_ordinary_name_joins_with_the_next_addresses():
    s = state_for()
    node = cluster.add_node(s, "worker3", random.Random(2))
    assert (node.name, node.ip, node.pod_cidr) == ("t-worker3", "172.18.0.5", "10.244.3.0/24")
    assert s.netns.index("t-worker3") == s.netns.index("t-worker2") + 1


# --- Pending pods ---------------------------------------------------------------------------

def test_a_pod_no_node_matches_is_pending_with_the_schedulers_event_and_no_sandbox():
    log = []
    s = state_for(pods=[spec.PodManifest("default", "p", template(node_selector={"disk": "ssd"}))], log=log)
    pod = s.pod("default", "p")
    message = (f"0/3 nodes are available: {TAINTED_CP}, 2 node(s) didn't match Pod's node affinity/selector. "
               "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")
    assert (pod.node, pod.ip, pod.host_veth, pod.unschedulable) == (None, None, "", message)
    assert log == [("FailedScheduling", "pod/p", "default", message)]
    assert pod.netns not in s.netns and pod.netns not in {p.netns for p in plan.lab_plans(s)}
    obj = apiserver.pod_object(s, pod)
    assert "nodeName" not in obj["spec"]
    assert obj["status"] == {"phase": "Pending", "qosClass": "BestEffort", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}
    row = printers.render(printers.table("pods", [obj]), wide=True).splitlines()[1].split()
    assert row[:4] == ["p", "0/1", "Pending", "0"] and row[5:7] == ["<none>", "<none>"]


def test_the_reasons_are_sorted_as_strings_as_fiterror_sorts_them():
    s = state_for(roles=("control-plane", "worker"), pods=[spec.PodManifest("default", "p", template(node_selector={"a": "b"}))])
    assert s.pod("default", "p").unschedulable == (
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. "
        "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")


def test_a_pending_pod_is_scheduled_when_a_node_it_fits_joins():
    s = state_for(pods=[spec.PodManifest("default", "p", template(node_selector={"kubernetes.io/hostname": "t-worker3"}))])
    log = []
    node = cluster.add_node(s, "worker3", random.Random(2), log=log)
    pod = s.pod("default", "p")
    assert (pod.node, pod.ip, pod.unschedulable) == ("t-worker3", "10.244.3.2", "")
    assert pod.host_veth.startswith("veth") and len(pod.host_veth) == 12
    assert s.netns[-1] == pod.netns
    assert log[-1] == ("Scheduled", "pod/p", "default", "Successfully assigned default/p to t-worker3")
    assert s.ipam[node.name].allocated == {"10.244.3.2": pod.container_id}


def test_a_retry_that_still_fails_reports_again_only_when_the_reason_changed():
    s = state_for(pods=[spec.PodManifest("default", "p", template(node_selector={"disk": "ssd"}))])
    log = []
    cluster.schedule_pending(s, random.Random(2), log)
    assert log == []                                   # nothing changed: no new event
    cluster.add_node(s, "worker3", random.Random(2), log=log)
    assert log[-1] == ("FailedScheduling", "pod/p", "default",
                       f"0/4 nodes are available: {TAINTED_CP}, 3 node(s) didn't match Pod's node affinity/selector. "
                       "preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.")


def test_2000_replicas_on_two_workers_fill_kubelets_110_pods_per_node_and_the_rest_wait():
    # 110 (kubelet's maxPods) minus kube-proxy's, flannel's and kube-router's DaemonSet pods: 107 per worker.
    s = state_for(deployments=[web(2000)])
    assert len(s.pods) == 2000
    assert [len(s.pods_on(n)) for n in ("t-control-plane", "t-worker", "t-worker2")] == [0, 107, 107]
    pending = [p for p in s.pods if p.node is None]
    assert len(pending) == 1786
    assert {p.unschedulable for p in pending} == {
        f"0/3 nodes are available: {TAINTED_CP}, 2 Too many pods. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."}
    assert len(s.netns) == 2 + 3 + 214
    d = apiserver.deployment_object(s, cluster.deployment_named(s, "default", "web"), {p.key for p in bound(s)})
    assert printers.render(printers.table("deployments", [d])).splitlines()[1].split()[:4] == [
        "web", "214/2000", "2000", "214"]


def test_scaling_down_removes_pending_pods_first_and_freed_slots_go_to_the_oldest_pending():
    s = state_for(deployments=[web(218)])
    assert len(bound(s)) == 214
    cluster.scale(s, "default", "web", 214, random.Random(2))
    assert len(s.pods) == 214 and all(p.node for p in s.pods)
    other = spec.DeploymentManifest("default", "db", 2, {"app": "db"}, template(labels={"app": "db"}))
    cluster.apply(s, spec.LabSpec(s.cluster, (), (other,)), random.Random(3))
    db = [p for p in s.pods if p.owner == "Deployment/db"]
    assert [p.node for p in db] == [None, None]
    cluster.scale(s, "default", "web", 213, random.Random(4))       # one slot frees: the oldest db pod takes it
    assert db[0].node is not None and db[1].node is None


def test_a_node_name_pod_is_bound_by_name_past_the_taint():
    s = state_for(pods=[spec.PodManifest("default", "p", template(node_name="t-control-plane"))])
    assert s.pod("default", "p").node == "t-control-plane"


# --- the add-on's objects --------------------------------------------------------------------

@pytest.mark.parametrize("kind, namespace, name, message", [
    ("deployment", "kube-system", "coredns", "Deployment kube-system/coredns is managed by kubeadm's CoreDNS addon: "
                                              "deleting it breaks cluster DNS (netlab keeps it)"),
    ("service", "kube-system", "kube-dns", "Service kube-system/kube-dns is managed by kubeadm's CoreDNS addon: "
                                           "deleting it breaks cluster DNS (netlab keeps it)"),
    ("service", "default", "kubernetes", "Service default/kubernetes is managed by the API server: deleting it "
                                         "cuts pods off the API until the API server recreates it (netlab keeps it)"),
])
def test_the_clusters_own_objects_are_refused_alike(kind, namespace, name, message):
    s = cluster.new_state(spec.LabSpec(spec.ClusterConfig(name="t", roles=("control-plane", "worker"))), random.Random(1))
    before = copy.deepcopy(s)
    with pytest.raises(NetlabError) as e:
        cluster.delete(s, kind, namespace, name)
    assert str(e.value) == message and s == before


def test_a_coredns_pod_may_still_be_deleted_and_is_replaced():
    s = cluster.new_state(spec.LabSpec(spec.ClusterConfig(name="t", roles=("control-plane", "worker"))), random.Random(1))
    victim = next(p for p in s.pods if p.namespace == "kube-system")
    cluster.delete(s, "pod", "kube-system", victim.name, random.Random(2))
    assert len([p for p in s.pods if p.owner == "Deployment/coredns"]) == 2 and victim not in s.pods


# --- node names, full or short ----------------------------------------------------------------

def test_a_node_is_found_by_its_full_name_or_without_the_labs_prefix():
    s = state_for()
    assert s.node("worker2") is s.node("t-worker2") is s.find_node("worker2")
    assert s.find_node("worker9") is None
    with pytest.raises(NetlabError, match=r"^lab t: no node named 'worker9' \(nodes: t-control-plane, t-worker, t-worker2\)$"):
        s.node("worker9")
    node, gone = cluster.remove_node(s, "worker2", random.Random(2))
    assert node.name == "t-worker2" and s.find_node("t-worker2") is None


# --- faults -----------------------------------------------------------------------------------

def faulted():
    s = state_for(pods=[spec.PodManifest("default", "client", template())])
    s.faults.append(faults.check(s, "node-down", ["worker"]))
    s.faults.append(faults.check(s, "partition", ["worker", "t-worker2"]))
    s.faults.append(faults.check(s, "link-down", ["client"]))
    return s


def test_faults_are_recorded_with_full_names():
    assert faulted().faults == [{"kind": "node-down", "targets": ["t-worker"]},
                                {"kind": "partition", "targets": ["t-worker", "t-worker2"]},
                                {"kind": "link-down", "targets": ["default/client"]}]


@pytest.mark.parametrize("kind, targets, message", [
    ("node-down", ["t-worker"], "fault node-down t-worker is already injected "
                                "(`netlab fault clear node-down t-worker` removes it)"),
    ("partition", ["worker2", "worker"], "fault partition t-worker t-worker2 is already injected "
                                         "(`netlab fault clear partition t-worker t-worker2` removes it)"),
    ("link-down", ["default/client"], "fault link-down default/client is already injected "
                                      "(`netlab fault clear link-down default/client` removes it)"),
    ("partition", ["worker", "t-worker"], "fault partition takes two different nodes, not t-worker twice"),
    ("node-down", ["worker9"], "lab t: no node 'worker9'"),
])
def test_a_fault_twice_or_a_partition_of_a_node_with_itself_is_refused(kind, targets, message):
    s = faulted()
    with pytest.raises(NetlabError) as e:
        faults.check(s, kind, targets)
    assert str(e.value) == message


def test_clearing_names_one_fault_or_refuses_what_is_not_a_fault():
    s = faulted()
    assert faults.named(s, ["partition", "worker2", "worker"]) == [{"kind": "partition", "targets": ["t-worker", "t-worker2"]}]
    with pytest.raises(NetlabError) as e:
        faults.named(s, ["extra"])
    assert str(e.value) == ("'extra' is not a fault: `fault clear` takes nothing (every fault goes) or one fault as "
                            "`netlab fault list` prints it (node-down, link-down, partition, loss, delay, bandwidth "
                            "and its targets)")
    with pytest.raises(NetlabError) as e:
        faults.named(s, ["node-down", "worker2"])
    assert str(e.value) == "no fault node-down worker2 is injected (see `netlab fault list`)"


# --- Deployments and Ingresses in the API's shapes ---------------------------------------------

def test_a_deployment_in_apps_v1_shape_and_kubectls_columns():
    s = state_for(deployments=[web(3)])
    d = cluster.deployment_named(s, "default", "web")
    pods = cluster.replicas_of(s, d)
    obj = apiserver.deployment_object(s, d, {pods[0].key, pods[1].key})
    assert obj["apiVersion"] == "apps/v1" and obj["kind"] == "Deployment"
    assert obj["spec"]["selector"] == {"matchLabels": {"app": "web"}} and obj["spec"]["replicas"] == 3
    assert obj["spec"]["template"]["metadata"]["labels"] == {"app": "web"}
    # 3 replicas, maxUnavailable 25% rounds down to 0: 2 ready is below the minimum.
    assert {k: v for k, v in obj["status"].items() if k != "conditions"} == {
        "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2,
        "unavailableReplicas": 1}
    assert obj["status"]["conditions"][0] == {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                                              "message": "Deployment does not have minimum availability."}
    table = printers.render(printers.table("deployments", [obj]), wide=True).splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert table[1].split() == ["web", "2/3", "3", "2", "<unknown>", "c", "registry.k8s.io/e2e-test-images/agnhost:2.53",
                                "app=web"]
    empty = apiserver.deployment_object(s, d, set())
    assert "readyReplicas" not in empty["status"] and "availableReplicas" not in empty["status"]   # omitempty
    assert printers.render(printers.table("deployments", [empty])).splitlines()[1].split()[:4] == ["web", "0/3", "3", "0"]


def test_only_ingresses_nginx_serves_get_its_address():
    s = cluster.new_state(spec.LabSpec(spec.ClusterConfig(name="t", roles=("control-plane", "worker"), ingress=True)),
                          random.Random(1))
    path = (IngressPath("/", "Prefix", "web", 80),)
    address = {cls: apiserver.ingress_object(s, IngressManifest("default", f"i-{cls}", (IngressRule(None, path),),
                                                                ingress_class=cls))["status"]
               for cls in (None, "nginx", "traefik")}
    nginx_node = next(p.node for p in s.pods if p.namespace == "ingress-nginx")
    assert address[None] == address["nginx"] == {"loadBalancer": {"ingress": [{"ip": s.node(nginx_node).ip}]}}
    assert address["traefik"] == {"loadBalancer": {}}


# --- creation times -------------------------------------------------------------------------

def test_what_a_change_creates_gets_the_changes_time_and_the_labs_own_keep_the_labs():
    s = state_for(deployments=[web(2)])
    s.created = "2025-01-01T00:00:00Z"
    before = lab_module._keys(s)
    cluster.add_node(s, "worker3", random.Random(2))
    cluster.scale(s, "default", "web", 3, random.Random(3))
    lab_module._stamp(s, before, "2025-01-02T03:04:05Z")
    nodes = {n.name: apiserver.node_object(s, n)["metadata"]["creationTimestamp"] for n in s.nodes}
    assert nodes == {"t-control-plane": "2025-01-01T00:00:00Z", "t-worker": "2025-01-01T00:00:00Z",
                     "t-worker2": "2025-01-01T00:00:00Z", "t-worker3": "2025-01-02T03:04:05Z"}
    stamps = [apiserver.pod_object(s, p)["metadata"]["creationTimestamp"] for p in s.pods]
    assert stamps == ["2025-01-01T00:00:00Z"] * 2 + ["2025-01-02T03:04:05Z"]


def test_a_record_without_the_new_fields_reads_with_their_defaults():
    s = state_for(pods=[spec.PodManifest("default", "p", template(node_selector={"disk": "ssd"}))])
    s.created = "2025-01-01T00:00:00Z"
    d = json.loads(json.dumps(etcd.to_json(s)))
    for n in d["nodes"]:
        del n["created"]
    for p in d["pods"]:
        del p["unschedulable"]
    back = etcd.from_json(d)
    assert [n.created for n in back.nodes] == [""] * 3 and back.pods[0].unschedulable == ""
    assert apiserver.node_object(back, back.nodes[0])["metadata"]["creationTimestamp"] == "2025-01-01T00:00:00Z"


# --- Docker's MACs ----------------------------------------------------------------------------

def test_every_eth0_on_the_lan_has_the_mac_docker_derives_from_its_address():
    # libnetwork's GenerateMACFromIP: 02:42 and the IPv4 address's four bytes (172.18.0.2 -> ac:12:00:02).
    assert underlay.docker_mac("172.18.0.2") == "02:42:ac:12:00:02"
    assert underlay.docker_mac("10.10.0.255") == "02:42:0a:0a:00:ff"
    s = state_for()
    lb = ServiceManifest("default", "lb", selector={"app": "web"}, cluster_ip="10.96.0.50", type="LoadBalancer",
                         ports=(ServicePort(80, "TCP", "", 8080, 30080),), load_balancer_ip="172.18.255.200",
                         load_balancer_ip_mode="Proxy")
    s.services.append(lb)
    hosts = ["t-external", names.lb_netns("t", "default/lb"), "t-control-plane", "t-worker", "t-worker2"]
    eth0 = {p.netns: l for p in plan.lab_plans(s) if p.netns in hosts for l in p.links if l.ifname == "eth0"}
    assert {n: (l.kind, l.address) for n, l in eth0.items()} == {
        "t-external": ("peer", "02:42:ac:12:ff:fe"),              # 172.18.255.254
        names.lb_netns("t", "default/lb"): ("peer", "02:42:ac:12:ff:c8"),   # 172.18.255.200
        "t-control-plane": ("peer", "02:42:ac:12:00:02"), "t-worker": ("peer", "02:42:ac:12:00:03"),
        "t-worker2": ("peer", "02:42:ac:12:00:04")}


def test_a_nodes_loss_without_netem_is_a_statistic_rule_and_bandwidth_a_tbf(monkeypatch):
    monkeypatch.setattr(faults, "qdisc_available", lambda kind: kind == "tbf")
    s = state_for(pods=[spec.PodManifest("default", "client", template())])
    s.faults.append(faults.check(s, "loss", ["worker", "12.5"]))
    s.faults.append(faults.check(s, "bandwidth", ["client", "10mbit"]))
    assert s.faults == [{"kind": "loss", "targets": ["t-worker", "12.5"], "by": "statistic"},
                        {"kind": "bandwidth", "targets": ["default/client", "10mbit"]}]
    pod = s.pod("default", "client")
    # as iptables-save prints them (libxt_statistic keeps lround(p * 2^31), prints it back with %.11f)
    assert faults._probability("12.5") == "0.12500000000" and faults._probability("33.3") == "0.33300000010"
    assert faults.qdiscs(s) == {pod.node: {pod.host_veth: Qdisc(pod.host_veth, "tbf", rate="10mbit")}}
    assert str(Qdisc(pod.host_veth, "tbf", rate="10mbit")) == \
        f"dev {pod.host_veth} root tbf rate 10mbit burst 32kb latency 50ms"
    with pytest.raises(EnvironmentProblem, match="no netem .* loss cannot be emulated on a pod here"):
        faults.check(s, "loss", ["client", "5"])
    with pytest.raises(EnvironmentProblem, match="delay cannot be emulated on anything here"):
        faults.check(s, "delay", ["worker", "5"])
    with pytest.raises(NetlabError, match="bandwidth takes a rate as tc writes it .*, not '10MB'"):
        faults.check(s, "bandwidth", ["worker", "10MB"])


def test_netem_loss_and_delay_share_one_qdisc_and_exclude_a_tbf(monkeypatch):
    monkeypatch.setattr(faults, "qdisc_available", lambda kind: True)
    s = state_for()
    s.faults.append(faults.check(s, "loss", ["worker", "10"]))
    s.faults.append(faults.check(s, "delay", ["worker", "40"]))
    assert faults.qdiscs(s) == {"t-lan": {"worker": Qdisc("worker", "netem", loss=10.0, delay=40.0)}}
    assert str(Qdisc("worker", "netem", loss=10.0, delay=40.0)) == "dev worker root netem delay 40ms loss 10%"
    with pytest.raises(NetlabError, match="t-worker has loss already, and a device has one root qdisc"):
        faults.check(s, "bandwidth", ["worker", "1mbit"])


def test_a_fault_for_a_while_records_its_end(monkeypatch):
    monkeypatch.setattr(faults.time, "time", lambda: 1000.0)
    s = state_for()
    assert faults.check(s, "node-down", ["worker"], 30)["until"] == 1030.0
    with pytest.raises(NetlabError, match="--for 0: a fault lasts a positive number of seconds"):
        faults.check(s, "node-down", ["worker"], 0)
