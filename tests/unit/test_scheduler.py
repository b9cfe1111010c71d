"""Placement as the default scheduler does it."""

from netlab.api import spec
from netlab.controllers import cluster, scheduler


def state_for(roles=("control-plane", "worker", "worker"), pods=(), deployments=()):
    c = spec.ClusterConfig(name="t", roles=roles, dns_replicas=0)    # no coredns pods: only the test's own
    return cluster.new_state(spec.LabSpec(c, tuple(pods), tuple(deployments)))


def template(**kw):
    return spec.PodTemplate(labels=kw.pop("labels", {}), containers=(spec.Container("c"),), **kw)


def test_control_plane_is_tainted_when_there_are_workers():
    s = state_for()
    assert s.node("t-control-plane").taints == [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    assert s.node("t-worker").taints == []


def test_single_node_cluster_schedules_on_the_control_plane():
    # kind removes the control-plane taint when the cluster has no workers.
    s = state_for(roles=("control-plane",), pods=[spec.PodManifest("default", "p", template())])
    assert s.pods[0].node == "t-control-plane"


def test_replicas_spread_over_schedulable_nodes():
    d = spec.DeploymentManifest("default", "web", 4, {"app": "web"}, template(labels={"app": "web"}))
    s = state_for(deployments=[d])
    assert sorted(p.node for p in s.pods) == ["t-worker", "t-worker", "t-worker2", "t-worker2"]


def test_toleration_opens_the_control_plane():
    tol = (spec.Toleration("node-role.kubernetes.io/control-plane", "Exists", None, "NoSchedule"),)
    d = spec.DeploymentManifest("default", "web", 3, {"app": "web"}, template(labels={"app": "web"}, tolerations=tol))
    s = state_for(deployments=[d])
    assert sorted(p.node for p in s.pods) == ["t-control-plane", "t-worker", "t-worker2"]


def test_node_name_and_node_selector_are_honoured():
    s = state_for(pods=[
        spec.PodManifest("default", "a", template(node_name="t-control-plane")),
        spec.PodManifest("default", "b", template(node_selector={"kubernetes.io/hostname": "t-worker2"})),
    ])
    assert [p.node for p in s.pods] == ["t-control-plane", "t-worker2"]


def test_unschedulable_pod_stays_pending_with_the_schedulers_message():
    # kube-scheduler v1.33's FailedScheduling: TaintToleration rejects the control plane before
    # NodeAffinity looks at it; preemption cannot help with a label or a taint.
    s = state_for(pods=[spec.PodManifest("default", "a", template(node_selector={"disk": "ssd"}))])
    pod = s.pod("default", "a")
    assert (pod.node, pod.ip, pod.host_veth) == (None, None, "")
    assert pod.unschedulable == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "2 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")
    assert pod.netns not in s.netns


def test_pods_get_host_local_addresses_in_order():
    s = state_for(roles=("control-plane",), pods=[spec.PodManifest("default", n, template()) for n in "abc"])
    assert [p.ip for p in s.pods] == ["10.244.0.2", "10.244.0.3", "10.244.0.4"]
    assert s.ipam["t-control-plane"].last_reserved == "10.244.0.4"


def test_deployment_pods_are_named_as_kubernetes_names_them():
    d = spec.DeploymentManifest("default", "web", 2, {"app": "web"}, template(labels={"app": "web"}))
    s = state_for(deployments=[d])
    for p in s.pods:
        prefix, h, suffix = p.name.rsplit("-", 2)
        assert prefix == "web" and p.labels["pod-template-hash"] == h and len(suffix) == 5
        assert set(h + suffix) <= set(scheduler.__dict__.get("SAFE", "bcdfghjklmnpqrstvwxz2456789"))


def test_toleration_rules():
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    assert spec.Toleration("k", "Equal", "v", "NoSchedule").tolerates(taint)
    assert not spec.Toleration("k", "Equal", "w", "NoSchedule").tolerates(taint)
    assert spec.Toleration(None, "Exists").tolerates(taint)
    assert not spec.Toleration("k", "Exists", None, "NoExecute").tolerates(taint)


def test_kubeadms_coredns_pods_tolerate_the_control_plane_and_spread():
    s = cluster.new_state(spec.LabSpec(spec.ClusterConfig(name="t", roles=("control-plane", "worker", "worker"))))
    dns = [p for p in s.pods if p.namespace == "kube-system"]
    assert [p.node for p in dns] == ["t-control-plane", "t-worker"]
    assert all(p.name.startswith("coredns-") and p.labels["k8s-app"] == "kube-dns" for p in dns)


def test_scale_adds_replicas_and_removes_the_ranked_ones_releasing_their_addresses():
    web = spec.DeploymentManifest("default", "web", 3, {"app": "web"}, template(labels={"app": "web"}))
    s = state_for(deployments=[web])
    added, removed = cluster.scale(s, "default", "web", 5)
    d = next(x for x in s.deployments if x.name == "web")
    assert len(added) == 2 and not removed and len(cluster.replicas_of(s, d)) == 5 and d.replicas == 5
    assert all(p.netns in s.netns for p in added)
    victim = cluster.replicas_of(s, d)[0]
    victim.ready = False                                         # not ready goes first
    added, removed = cluster.scale(s, "default", "web", 3)
    assert removed[0] is victim and len(removed) == 2
    assert all(p.ip not in s.ipam[p.node].allocated and p.netns not in s.netns for p in removed)
