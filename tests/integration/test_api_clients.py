"""Client libraries and in-cluster clients against a live lab's kube-apiserver (topologies/default.yaml):
the Python `kubernetes` client (list, watch, create, patch, replace, delete, the scale
subresource; every kind deserialized into its models) and a pod reaching the API server as
kubernetes.default.svc through kube-proxy's rules.

The client's models check required fields as they are built from a response, so listing a kind
is already a check that every object of it has the shape the real API gives it.
"""

import base64
import hashlib
import ipaddress
import json
import re
import subprocess
import threading

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from .conftest import TOPOLOGIES, lab_for_module, wait_for


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_for_module(TOPOLOGIES / "default.yaml", tmp_path_factory) as lab:
        yield lab


def new_client(lab, path):
    """An ApiClient from the lab's kubeconfig, as a user's script makes one."""
    path.write_text(lab.kubeconfig())
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    return client.ApiClient(configuration)


@pytest.fixture
def api(lab, tmp_path):
    with new_client(lab, tmp_path / "kubeconfig") as c:
        yield c


# --- the kernel's view -------------------------------------------------------------------------------

def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def ipv4_of(netns, device):
    out = run(["ip", "-n", netns, "-o", "-4", "addr", "show", "dev", device])
    return ipaddress.ip_interface(out.split()[3])


def pod_netns_of(lab, namespace, prefix):
    head = f"{lab.name}-{namespace}.{prefix}"
    return sorted(line.split()[0] for line in run(["ip", "netns", "list"]).splitlines()
                  if line.startswith(head))


def node_names(lab):
    return [f"{lab.name}-control-plane", f"{lab.name}-worker", f"{lab.name}-worker2"]


def svc_chain(service_port, protocol="tcp"):
    """kube-proxy's KUBE-SVC chain name: base32(sha256(namespace/name:port + protocol))[:16]."""
    return "KUBE-SVC-" + base64.b32encode(hashlib.sha256((service_port + protocol).encode()).digest()).decode()[:16]


def sep_jumps(lab, node, chain):
    return [line for line in lab.iptables(node, "nat").splitlines()
            if line.startswith(f"-A {chain} ") and re.search(r"-j KUBE-SEP-[A-Z2-7]{16}$", line)]


# --- list ----------------------------------------------------------------------------------------------

def test_list_pods_nodes_and_services(lab, api):
    core = client.CoreV1Api(api)
    pods = core.list_pod_for_all_namespaces().items
    assert {p.metadata.namespace for p in pods} == {"default", "kube-system"}
    for p in pods:
        assert p.status.phase == "Running"
        assert p.status.pod_ip == str(ipv4_of(lab.netns_of(f"{p.metadata.namespace}/{p.metadata.name}"), "eth0").ip)
        assert p.spec.node_name in node_names(lab)
    assert len([p for p in pods if (p.metadata.labels or {}).get("app") == "web"]) == 4
    nodes = core.list_node().items
    assert [n.metadata.name for n in nodes] == node_names(lab)
    for n in nodes:
        internal = [a.address for a in n.status.addresses if a.type == "InternalIP"]
        assert internal == [str(ipv4_of(lab.netns_of(n.metadata.name), "eth0").ip)]
        assert [c.status for c in n.status.conditions if c.type == "Ready"] == ["True"]
        # the node's podCIDR is what its cni0 bridge serves
        assert ipv4_of(lab.netns_of(n.metadata.name), "cni0").network == ipaddress.ip_network(n.spec.pod_cidr)
    services = {s.metadata.name: s for s in core.list_namespaced_service("default").items}
    assert set(services) == {"kubernetes", "web", "web-nodeport"}
    assert services["kubernetes"].spec.cluster_ip == "10.96.0.1"
    assert [(p.name, p.port, p.protocol) for p in services["kubernetes"].spec.ports] == [("https", 443, "TCP")]
    assert services["web-nodeport"].spec.type == "NodePort"
    assert [p.node_port for p in services["web-nodeport"].spec.ports] == [30080]


def test_every_kind_deserializes_into_the_clients_models(lab, api, tmp_path):
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    net, discovery = client.NetworkingV1Api(api), client.DiscoveryV1Api(api)
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "listed"},
               "spec": {"rules": [{"host": "web.example", "http": {"paths": [
                   {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}
    net.create_namespaced_ingress("default", ingress)
    try:
        listed = {
            "pods": core.list_pod_for_all_namespaces(), "nodes": core.list_node(),
            "services": core.list_service_for_all_namespaces(), "endpoints": core.list_endpoints_for_all_namespaces(),
            "endpointslices": discovery.list_endpoint_slice_for_all_namespaces(),
            "deployments": apps.list_deployment_for_all_namespaces(),
            "replicasets": apps.list_replica_set_for_all_namespaces(),
            "daemonsets": apps.list_daemon_set_for_all_namespaces(),
            "ingresses": net.list_ingress_for_all_namespaces(), "namespaces": core.list_namespace(),
            "configmaps": core.list_config_map_for_all_namespaces(), "events": core.list_event_for_all_namespaces(),
        }
    finally:
        net.delete_namespaced_ingress("listed", "default")
    empty = [kind for kind, result in listed.items() if not result.items]
    assert empty == [], f"no items listed for {empty}"
    for kind, result in listed.items():
        assert result.metadata.resource_version, kind
    by = lambda kind: {(o.metadata.namespace, o.metadata.name): o for o in listed[kind].items}  # noqa: E731
    rs = [r for r in listed["replicasets"].items if (r.metadata.namespace, (r.metadata.labels or {}).get("app")) ==
          ("default", "web")]
    assert len(rs) == 1 and rs[0].spec.replicas == 4
    assert [(o.kind, o.name, o.controller) for o in rs[0].metadata.owner_references] == [("Deployment", "web", True)]
    assert rs[0].metadata.name == "web-" + rs[0].metadata.labels["pod-template-hash"]
    assert set(by("daemonsets")) == {("kube-system", "kube-proxy"), ("kube-flannel", "kube-flannel-ds"),
                                     ("kube-system", "kube-router")}
    assert {("default", "web"), ("kube-system", "coredns")} <= set(by("deployments"))
    assert ("default", "listed") in by("ingresses")
    slices = [s for s in listed["endpointslices"].items if s.metadata.labels.get("kubernetes.io/service-name") == "web"]
    assert len(slices) == 1 and slices[0].address_type == "IPv4"
    web_ips = {str(ipv4_of(n, "eth0").ip) for n in pod_netns_of(lab, "default", "web-")}
    assert {a for e in slices[0].endpoints for a in e.addresses} == web_ips
    assert all(e.conditions.ready and e.target_ref.kind == "Pod" for e in slices[0].endpoints)
    configmaps = by("configmaps")
    assert "Corefile" in configmaps[("kube-system", "coredns")].data
    assert "config.conf" in configmaps[("kube-system", "kube-proxy")].data
    net_conf = json.loads(configmaps[("kube-flannel", "kube-flannel-cfg")].data["net-conf.json"])
    assert (net_conf["Network"], net_conf["Backend"]["Type"]) == ("10.244.0.0/16", "vxlan")
    for e in listed["events"].items:
        assert e.involved_object.kind and e.involved_object.name and e.reason, e
    assert {"default", "kube-system", "kube-public", "kube-node-lease", "kube-flannel"} <= \
        {n.metadata.name for n in listed["namespaces"].items}


# --- watch ---------------------------------------------------------------------------------------------

def test_a_watch_with_a_label_selector_sees_another_clients_scale_as_added_and_deleted(lab, api, tmp_path):
    core = client.CoreV1Api(api)
    listed = core.list_namespaced_pod("default", label_selector="app=web")
    before = {p.metadata.name for p in listed.items}
    n = len(before)
    with new_client(lab, tmp_path / "other-kubeconfig") as other_api:
        other = client.AppsV1Api(other_api)
        scaler = threading.Thread(target=other.patch_namespaced_deployment_scale,
                                  args=("web", "default", {"spec": {"replicas": n + 2}}))
        w = watch.Watch()
        stream = w.stream(core.list_namespaced_pod, "default", label_selector="app=web",
                          resource_version=listed.metadata.resource_version, timeout_seconds=60)
        seen, added, deleted, scaled_down = [], set(), set(), False
        scaler.start()
        try:
            for event in stream:                  # from the list's resourceVersion: nothing in between is missed
                obj = event["object"]
                seen.append((event["type"], obj.metadata.name))
                assert obj.metadata.labels.get("app") == "web", event      # the selector holds for every event
                if event["type"] == "ADDED":
                    added.add(obj.metadata.name)
                elif event["type"] == "DELETED":
                    deleted.add(obj.metadata.name)
                if len(added) == 2 and not scaled_down:
                    scaler.join()
                    other.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": n}})
                    scaled_down = True
                if len(deleted) == 2:
                    break
        finally:
            w.stop()
            stream.close()
            scaler.join()
    assert not added & before, seen
    assert len(added) == 2 and len(deleted) == 2, seen
    now = {p.metadata.name for p in core.list_namespaced_pod("default", label_selector="app=web").items}
    assert now == (before | added) - deleted and len(now) == n


# --- create, patch, replace, delete --------------------------------------------------------------------

def test_create_patch_replace_and_delete_a_service(lab, api):
    core = client.CoreV1Api(api)
    chain = svc_chain("default/made:http")
    body = client.V1Service(metadata=client.V1ObjectMeta(name="made", labels={"made-by": "client"}),
                            spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[
                                client.V1ServicePort(name="http", port=81, target_port=8080)]))
    created = core.create_namespaced_service("default", body)
    try:
        assert ipaddress.ip_address(created.spec.cluster_ip) in ipaddress.ip_network("10.96.0.0/12")
        assert created.spec.type == "ClusterIP" and created.metadata.uid
        for node in node_names(lab):      # kube-proxy follows: the Service's chain with web's 4 endpoints
            wait_for(lambda: len(sep_jumps(lab, node, chain)) == 4, what=f"{chain} on {node}")
        patched = core.patch_namespaced_service("made", "default", {"metadata": {"labels": {"patched": "yes"}}})
        assert patched.metadata.labels == {"made-by": "client", "patched": "yes"}
        assert patched.metadata.resource_version != created.metadata.resource_version
        stale = created
        stale.metadata.labels = {"stale": "write"}
        with pytest.raises(ApiException) as refused:
            core.replace_namespaced_service("made", "default", stale)
        assert refused.value.status == 409
        status = json.loads(refused.value.body)
        assert (status["kind"], status["reason"], status["code"]) == ("Status", "Conflict", 409)
        assert status["message"] == ('Operation cannot be fulfilled on services "made": the object has been modified; '
                                     'please apply your changes to the latest version and try again')
        current = core.read_namespaced_service("made", "default")
        assert current.metadata.labels == {"made-by": "client", "patched": "yes"}       # the stale write changed nothing
        current.metadata.labels["replaced"] = "yes"
        replaced = core.replace_namespaced_service("made", "default", current)
        assert replaced.metadata.labels == {"made-by": "client", "patched": "yes", "replaced": "yes"}
        assert replaced.spec.cluster_ip == created.spec.cluster_ip                     # immutable, kept
    finally:
        core.delete_namespaced_service("made", "default")
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_service("made", "default")
    assert gone.value.status == 404
    for node in node_names(lab):
        wait_for(lambda: not sep_jumps(lab, node, chain), what=f"{chain} to go from {node}")


def test_patch_deployment_scale_answers_a_scale_and_the_pods_follow(lab, api):
    apps = client.AppsV1Api(api)
    try:
        scale = apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 5}})
        assert isinstance(scale, client.V1Scale)
        assert (scale.metadata.name, scale.spec.replicas) == ("web", 5)
        read = apps.read_namespaced_deployment_scale("web", "default")
        assert read.spec.replicas == 5 and read.status.selector == "app=web"
        wait_for(lambda: len(pod_netns_of(lab, "default", "web-")) == 5, what="web's 5 pod namespaces")
        wait_for(lambda: apps.read_namespaced_deployment("web", "default").status.ready_replicas == 5,
                 what="5 ready replicas")
    finally:
        apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 4}})
    wait_for(lambda: len(pod_netns_of(lab, "default", "web-")) == 4, what="web back to 4 pods")


def test_replacing_a_scale_with_a_stale_resource_version_conflicts(lab, api):
    """The Scale's resourceVersion is the Deployment's: a PUT of a Scale read before another
    write is refused as a PUT of the Deployment itself would be."""
    apps = client.AppsV1Api(api)
    stale = apps.read_namespaced_deployment_scale("web", "default")
    try:
        apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
        stale.spec.replicas = 5
        with pytest.raises(ApiException) as refused:
            apps.replace_namespaced_deployment_scale("web", "default", stale)
        assert refused.value.status == 409
        assert json.loads(refused.value.body)["reason"] == "Conflict"
        assert apps.read_namespaced_deployment("web", "default").spec.replicas == 3
    finally:
        apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 4}})
    wait_for(lambda: len(pod_netns_of(lab, "default", "web-")) == 4, what="web back to 4 pods")


# --- from a pod ------------------------------------------------------------------------------------------

def curl_from_client(lab, path, port):
    return lab.exec("client", ["curl", "-sk", "-m", "5", "--local-port", str(port), "-w", "\n%{http_code} %{remote_ip}",
                               f"https://kubernetes.default.svc{path}"], capture_output=True, text=True, timeout=30)


def dnat_of(lab, port):
    """The conntrack entry of the client pod's connection from `port` in its node's table: the
    original destination and the reply's source (where kube-proxy's DNAT sent it)."""
    node = lab.state().pod("default", "client").node
    out = run(["ip", "netns", "exec", lab.netns_of(node), "conntrack", "-L", "-p", "tcp", "--sport", str(port)])
    for line in out.splitlines():
        fields = re.findall(r"(src|dst|sport|dport)=(\S+)", line)
        if len(fields) >= 8:
            orig, reply = dict(fields[:4]), dict(fields[4:8])
            return (orig["dst"], orig["dport"]), (reply["src"], reply["sport"])
    return None


def test_a_pod_reaches_the_api_server_as_kubernetes_default_through_kube_proxys_rules(lab):
    port = 40000 + int(lab.name[1:], 16) % 5000
    out = curl_from_client(lab, "/version", port)
    assert out.returncode == 0, out.stderr
    body, tail = out.stdout.rsplit("\n", 1)
    assert tail == "200 10.96.0.1"                                # the Service's address, not the node's
    assert re.fullmatch(r"v1\.\d+\.\d+", json.loads(body)["gitVersion"])
    control_plane_ip = str(ipv4_of(lab.netns_of(f"{lab.name}-control-plane"), "eth0").ip)
    assert dnat_of(lab, port) == (("10.96.0.1", "443"), (control_plane_ip, "6443"))


def test_a_pod_without_credentials_is_refused_the_pod_list_with_a_status(lab):
    out = curl_from_client(lab, "/api/v1/pods", 45000 + int(lab.name[1:], 16) % 5000)
    assert out.returncode == 0, out.stderr
    body, tail = out.stdout.rsplit("\n", 1)
    assert tail.split()[0] == "403"
    status = json.loads(body)
    assert (status["kind"], status["apiVersion"], status["status"], status["reason"], status["code"]) == \
        ("Status", "v1", "Failure", "Forbidden", 403)
    assert status["message"] == ('pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group '
                                 '"" at the cluster scope')
