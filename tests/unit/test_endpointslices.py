"""The EndpointSlice controller as kube-controller-manager runs it (k8s.io/endpointslice's
reconciler), the API server's default/kubernetes slice (EndpointsAdapter), the
discovery.k8s.io/v1 JSON shape, and kube-proxy reading slices (EndpointSliceCache).

Expected values are the real components': the labels setEndpointSliceLabels writes, the
generateName "<service>-" plus 5 characters of utilrand's alphabet cut as the API server's
name generator cuts (58 + 5), 100 endpoints a slice, one slice per distinct set of ports,
podToEndpoint's conditions, the reconciler's filling order (slices it changes anyway, then the
unchanged one the rest fits best, then new ones) and finalize's reuse of a deleted slice's name."""

import dataclasses
import random
import re
import textwrap

import pytest

from netlab.api import apiserver, etcd, spec
from netlab.api.objects import SERVICE_NAME_LABEL, EndpointSlice, Port, SliceEndpoint
from netlab.controllers import cluster, endpointslice
from netlab.node.proxy import iptables as kube_proxy

CLUSTER = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: t
nodes: [{role: control-plane}, {role: worker}, {role: worker}, {role: worker}]   # 110 pods a node (maxPods)
"""

MANAGED = {SERVICE_NAME_LABEL: "web", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
NAME = re.compile(r"^web-[bcdfghjklmnpqrstvwxz2456789]{5}$")


def deployment(replicas, name="web", port=8080):
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: c, ports: [{{name: http, containerPort: {port}}}]}}]
"""


WEB = "selector: {app: web}\nports: [{port: 80, targetPort: 8080}]"


def service(name="web", labels="{app: web, tier: front}", body=WEB):
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, labels: {labels}}}\nspec:\n"
            + textwrap.indent(body, "  ") + "\n")


def state_of(tmp_path, *docs, seed=1):
    f = tmp_path / "lab.yaml"
    f.write_text(CLUSTER + "".join("---\n" + textwrap.dedent(d) for d in docs))
    return cluster.new_state(spec.load(f), random.Random(seed))


def slices_of(state, name="web"):
    return state.slices_of(state.service("default", name))


def ips(slices):
    return sorted(e.addresses[0] for s in slices for e in s.endpoints)


def pod_ips(state, app="web"):
    return sorted(p.ip for p in state.pods if p.labels.get("app") == app)


# --- the controller ------------------------------------------------------------------------

def test_a_slice_carries_the_service_labels_the_controller_copies_and_a_generated_name(tmp_path):
    state = state_of(tmp_path, deployment(2), service())
    (s,) = slices_of(state)
    assert s.labels == {"app": "web", "tier": "front", **MANAGED}
    assert NAME.match(s.name) and s.generate_name == "web-"
    assert (s.namespace, s.address_type, s.ports) == ("default", "IPv4", (Port("", 8080, "TCP"),))
    assert s.owner_uid == endpointslice.service_uid(state.service("default", "web"))
    assert ips([s]) == pod_ips(state)


def test_reserved_labels_of_the_service_are_not_copied_and_a_headless_service_is_marked(tmp_path):
    state = state_of(tmp_path, deployment(1),
                     service(labels="{app: web, kubernetes.io/service-name: other, "
                                    "endpointslice.kubernetes.io/managed-by: me}",
                             body="clusterIP: None\nselector: {app: web}\nports: [{port: 80, targetPort: 8080}]"))
    (s,) = slices_of(state)
    assert s.labels == {"app": "web", "service.kubernetes.io/headless": "", **MANAGED}


def test_a_long_service_name_is_cut_to_58_characters_before_the_5_random_ones(tmp_path):
    long = "w" * 63
    state = state_of(tmp_path, deployment(1), service(name=long))
    (s,) = slices_of(state, long)
    assert s.generate_name == long + "-"
    assert len(s.name) == 63 and s.name.startswith("w" * 58) and s.name[58:].isalnum()


def test_250_pods_make_three_slices_of_100_100_and_50(tmp_path):
    state = state_of(tmp_path, deployment(250), service())
    assert len(pod_ips(state)) == 250                    # every replica placed and addressed
    slices = slices_of(state)
    assert sorted(len(s.endpoints) for s in slices) == [50, 100, 100]
    assert ips(slices) == pod_ips(state) and len(set(ips(slices))) == 250
    assert all(NAME.match(s.name) for s in slices) and len({s.name for s in slices}) == 3


POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  nodeName: t-worker
  containers: [{{name: c, ports: [{{name: {port_name}, containerPort: {port}}}]}}]
"""


def test_pods_whose_ports_differ_go_to_different_slices(tmp_path):
    """getEndpointPorts per pod: a named targetPort resolves to each pod's own number; a pod
    without the port is an endpoint of a slice with no ports (kube-proxy takes nothing from it)."""
    state = state_of(tmp_path, POD.format(name="a", port_name="web", port=8080),
                     POD.format(name="b", port_name="web", port=9090), POD.format(name="c", port_name="web", port=8080),
                     POD.format(name="d", port_name="other", port=8080),
                     service(body="selector: {app: web}\nports: [{name: http, port: 80, targetPort: web}]"))
    by_ports = {s.ports: sorted(e.pod for e in s.endpoints) for s in slices_of(state)}
    assert by_ports == {(Port("http", 8080, "TCP"),): ["a", "c"], (Port("http", 9090, "TCP"),): ["b"], (): ["d"]}
    svc = state.service("default", "web")
    assert kube_proxy.ready_endpoints(slices_of(state), svc.ports[0]) == sorted(
        [(f"{state.pod('default', p).ip}:{n}", "t-worker") for p, n in (("a", 8080), ("b", 9090), ("c", 8080))])


def test_an_endpoint_has_conditions_node_and_target_and_a_not_ready_pod_stays_in_its_slice(tmp_path):
    state = state_of(tmp_path, deployment(2), service())
    (before,) = slices_of(state)
    pod = sorted((p for p in state.pods if p.labels.get("app") == "web"), key=lambda p: p.ip)[0]
    e = next(e for e in before.endpoints if e.pod == pod.name)
    assert e == SliceEndpoint((pod.ip,), ready=True, serving=True, terminating=False, node=pod.node, pod=pod.name,
                              uid=pod.uid)
    cluster.set_ready(state, "default", pod.name, False)
    (after,) = slices_of(state)
    assert after.name == before.name
    assert next(e for e in after.endpoints if e.pod == pod.name) == dataclasses.replace(e, ready=False, serving=False)
    assert [ep for ep, _ in kube_proxy.ready_endpoints([after], state.service("default", "web").ports[0])] == [
        f"{p.ip}:8080" for p in state.pods if p.labels.get("app") == "web" and p.ready]


def test_hostname_is_set_when_the_pods_subdomain_is_the_service(tmp_path):
    pod = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec: {{hostname: {name}-host, subdomain: {subdomain}, containers: [{{name: c}}]}}
"""
    state = state_of(tmp_path, pod.format(name="a", subdomain="web"), pod.format(name="b", subdomain="elsewhere"),
                     service(body="clusterIP: None\nselector: {app: web}\nports: [{port: 80}]"))
    assert {e.pod: e.hostname for s in slices_of(state) for e in s.endpoints} == {"a": "a-host", "b": None}


def test_slice_names_stay_across_a_scale_up_and_down(tmp_path):
    state = state_of(tmp_path, deployment(3), service())
    (first,) = slices_of(state)
    rng = random.Random(2)
    cluster.scale(state, "default", "web", 250, rng)
    slices = {s.name: s for s in slices_of(state)}
    # The 3 stay where they were; 100 and 100 go to two new slices, the last 47 to the old one.
    assert sorted(len(s.endpoints) for s in slices.values()) == [50, 100, 100]
    assert len(slices[first.name].endpoints) == 50 and set(first.endpoints) <= set(slices[first.name].endpoints)
    assert ips(slices.values()) == pod_ips(state)
    cluster.scale(state, "default", "web", 120, rng)
    after = {s.name: s for s in slices_of(state)}
    assert set(after) <= set(slices) and ips(after.values()) == pod_ips(state)
    for name, s in after.items():                        # the endpoints that stayed stayed in their slice
        assert {e.addresses for e in s.endpoints} <= {e.addresses for e in slices[name].endpoints}
    cluster.scale(state, "default", "web", 0, rng)
    (placeholder,) = slices_of(state)
    # No endpoints left: one placeholder (no ports, no endpoints), which takes a deleted slice's name.
    assert placeholder.name in after and (placeholder.endpoints, placeholder.ports) == ((), ())
    assert placeholder.labels == {"app": "web", "tier": "front", **MANAGED}


def test_a_sync_with_nothing_changed_changes_no_slice(tmp_path):
    state = state_of(tmp_path, deployment(150), service())
    before = list(state.endpoint_slices)
    cluster.sync_endpoints(state, random.Random(99))
    assert state.endpoint_slices == before


def test_the_same_state_and_seed_give_the_same_slices(tmp_path):
    a = state_of(tmp_path, deployment(120), service(), seed=7)
    b = state_of(tmp_path, deployment(120), service(), seed=7)
    assert a.endpoint_slices == b.endpoint_slices


def test_a_service_without_endpoints_has_a_placeholder_slice(tmp_path):
    state = state_of(tmp_path, service())
    (s,) = slices_of(state)
    assert NAME.match(s.name) and (s.endpoints, s.ports) == ((), ())


def test_a_deleted_service_takes_its_slices_and_a_selector_removed_leaves_them(tmp_path):
    """The garbage collector follows ownerReferences; a Service whose selector goes keeps its
    slices, as Kubernetes leaves them (kubernetes/kubernetes#118376)."""
    state = state_of(tmp_path, deployment(2), service(), service(name="other", labels="{}"))
    cluster.delete(state, "service", "default", "other", random.Random(3))
    assert not [s for s in state.endpoint_slices if s.service == "other"]
    kept = slices_of(state)
    i = state.services.index(state.service("default", "web"))
    state.services[i] = dataclasses.replace(state.services[i], selector=None)
    cluster.sync_endpoints(state, random.Random(4))
    assert slices_of(state) == kept


def test_the_api_servers_slice_for_default_kubernetes(tmp_path):
    state = state_of(tmp_path)
    (s,) = slices_of(state, "kubernetes")
    cp = state.node("t-control-plane").ip
    assert s == EndpointSlice("default", "kubernetes", {SERVICE_NAME_LABEL: "kubernetes"}, "IPv4",
                              (SliceEndpoint((cp,), ready=True),), (Port("https", 6443, "TCP"),))
    obj = apiserver.endpointslice_object(state, s)
    assert obj == {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": "kubernetes", "namespace": "default",
                                "labels": {SERVICE_NAME_LABEL: "kubernetes"},
                                "creationTimestamp": state.created},
                   "addressType": "IPv4", "endpoints": [{"addresses": [cp], "conditions": {"ready": True}}],
                   "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}


def test_slices_survive_the_state_file(tmp_path):
    state = state_of(tmp_path, deployment(120), service(),
                     service(name="h", labels="{}", body="clusterIP: None\nselector: {app: web}"))
    assert etcd.from_json(etcd.to_json(state)).endpoint_slices == state.endpoint_slices


def test_a_record_without_slices_reads_as_none():
    d = etcd.to_json(cluster.new_state(spec.LabSpec(spec.ClusterConfig(name="t", roles=("control-plane",)))))
    del d["endpoint_slices"]
    assert etcd.from_json(d).endpoint_slices == []


# --- the API's JSON ------------------------------------------------------------------------

def test_endpointslice_object_is_the_discovery_v1_shape(tmp_path):
    state = state_of(tmp_path, deployment(2), service())
    a, b = sorted((p for p in state.pods if p.labels.get("app") == "web"), key=lambda p: p.ip)
    cluster.set_ready(state, "default", b.name, False)
    (s,) = slices_of(state)
    svc = state.service("default", "web")
    assert apiserver.endpointslice_object(state, s) == {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": s.name, "generateName": "web-", "namespace": "default",
            "labels": {"app": "web", "tier": "front", **MANAGED},
            "creationTimestamp": svc.created or state.created,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                 "uid": endpointslice.service_uid(svc), "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [a.ip], "conditions": {"ready": True, "serving": True, "terminating": False},
             "targetRef": {"kind": "Pod", "namespace": "default", "name": a.name, "uid": a.uid}, "nodeName": a.node},
            {"addresses": [b.ip], "conditions": {"ready": False, "serving": False, "terminating": False},
             "targetRef": {"kind": "Pod", "namespace": "default", "name": b.name, "uid": b.uid}, "nodeName": b.node},
        ],
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
    }


def test_an_empty_slice_has_null_endpoints_and_ports(tmp_path):
    state = state_of(tmp_path, service())
    obj = apiserver.endpointslice_object(state, slices_of(state)[0])
    assert (obj["endpoints"], obj["ports"]) == (None, None)


# --- kube-proxy reading slices -------------------------------------------------------------

def eps(name, *endpoints, service="web", ports=(Port("", 8080, "TCP"),)):
    return EndpointSlice("default", name, {SERVICE_NAME_LABEL: service} if service else {}, endpoints=endpoints,
                         ports=ports)


def ep(ip, node="t-worker", ready=True):
    return SliceEndpoint((ip,), ready=ready, node=node)


PORT = spec.ServicePort(80, "TCP", "", 8080)


def test_kube_proxy_merges_a_services_slices_sorted_by_ip_port():
    slices = [eps("web-b", ep("10.244.1.10"), ep("10.244.2.3", "t-worker2")), eps("web-a", ep("10.244.1.9"))]
    assert kube_proxy.ready_endpoints(slices, PORT) == [
        ("10.244.1.10:8080", "t-worker"), ("10.244.1.9:8080", "t-worker"), ("10.244.2.3:8080", "t-worker2")]


@pytest.mark.parametrize("slices, expected", [
    ([eps("web-a", ep("10.244.1.5", ready=False), ep("10.244.1.6"))], ["10.244.1.6:8080"]),     # not ready
    ([eps("web-a", SliceEndpoint(("10.244.1.5",)))], ["10.244.1.5:8080"]),                       # unset ready: ready
    ([eps("web-a", ep("10.244.1.5"), ep("10.244.1.5"))], ["10.244.1.5:8080"]),                   # one per ip:port
    ([eps("web-a", ep("10.244.1.5")), eps("web-b", ep("10.244.1.5"))], ["10.244.1.5:8080"]),
    ([eps("web-a", ep("10.244.1.5"), service=None)], []),                                         # no service label
    ([eps("web-a", ep("10.244.1.5"), ports=(Port("other", 8080, "TCP"),))], []),                  # another port
    ([eps("web-a", ep("10.244.1.5"), ports=(Port("", 8080, "UDP"),))], []),                       # another protocol
    ([eps("web-a", ep("10.244.1.5"), ports=())], []),
    ([eps("web-a", ep("fd00::5"))], []),                                                          # the other family
])
def test_which_endpoints_kube_proxy_takes(slices, expected):
    by = kube_proxy.slices_by_service(slices).get("default/web")
    assert [e for e, _ in kube_proxy.ready_endpoints(by, PORT)] == expected


def test_the_rules_of_250_pods_in_three_slices_send_to_all_250(tmp_path):
    state = state_of(tmp_path, deployment(250), service())
    svc = state.service("default", "web")
    chain = kube_proxy.service_chain("KUBE-SVC-", kube_proxy.port_key("default", "web", "", "TCP"))
    rules = kube_proxy.node_tables(state.services, state.endpoint_slices, state.node("t-worker"),
                                   "10.244.0.0/16")["nat"].chains[chain]
    jumps = [r for r in rules if "-j KUBE-SEP-" in r]
    assert len(jumps) == 250
    first = sorted(f"{ip}:8080" for ip in pod_ips(state))[0]          # kube-proxy sorts by "ip:port"
    assert jumps[0] == (f'-m comment --comment "default/web -> {first}" -m statistic --mode random '
                        f"--probability 0.00400000019 -j {kube_proxy.endpoint_chain('default/webtcp', first)}")
    assert svc.cluster_ip in rules[0]
