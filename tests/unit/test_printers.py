"""kube-apiserver's Tables and kubectl's printing of them (netlab.api.printers), the objects
behind the kinds `netlab get` gained (netlab.api.apiserver, netlab.api.events), and `netlab
get` itself on a saved state.

Expected values come from the real code: the column definitions and print functions of
kubernetes pkg/printers/internalversion/printers.go (v1.33), duration.HumanDuration of
k8s.io/apimachinery, cli-runtime's tableprinter.go and liggitt/tabwriter with kubectl's
settings (minwidth 6, padding 3), kubeadm's and kube-flannel.yml's manifests. The text of a
table is derived by hand from those rules; where root, unshare and kubectl are there, the
real kubectl prints the same Tables from a stand-in API server, byte for byte.
"""

import datetime
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netlab import cli, names
from netlab.api import apiserver, events, printers, spec
from netlab.api.etcd import Store
from netlab.controllers import cluster

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
NOW = datetime.datetime(2025, 6, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def ago(**delta):
    return (NOW - datetime.timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cells(kind, *objects):
    return [row["cells"] for row in printers.table(kind, objects, now=NOW)["rows"]]


# --- the columns, written out from printers.go's AddHandlers --------------------------------

REAL_COLUMNS = {
    "pods": [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0), ("IP", 1), ("Node", 1),
             ("Nominated Node", 1), ("Readiness Gates", 1)],
    "replicasets": [("Name", 0), ("Desired", 0), ("Current", 0), ("Ready", 0), ("Age", 0), ("Containers", 1),
                    ("Images", 1), ("Selector", 1)],
    "daemonsets": [("Name", 0), ("Desired", 0), ("Current", 0), ("Ready", 0), ("Up-to-date", 0), ("Available", 0),
                   ("Node Selector", 0), ("Age", 0), ("Containers", 1), ("Images", 1), ("Selector", 1)],
    "services": [("Name", 0), ("Type", 0), ("Cluster-IP", 0), ("External-IP", 0), ("Port(s)", 0), ("Age", 0),
                 ("Selector", 1)],
    "ingresses": [("Name", 0), ("Class", 0), ("Hosts", 0), ("Address", 0), ("Ports", 0), ("Age", 0)],
    "ingressclasses": [("Name", 0), ("Controller", 0), ("Parameters", 0), ("Age", 0)],
    "endpoints": [("Name", 0), ("Endpoints", 0), ("Age", 0)],
    "nodes": [("Name", 0), ("Status", 0), ("Roles", 0), ("Age", 0), ("Version", 0), ("Internal-IP", 1),
              ("External-IP", 1), ("OS-Image", 1), ("Kernel-Version", 1), ("Container-Runtime", 1)],
    "events": [("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0), ("Subobject", 1), ("Source", 1),
               ("Message", 0), ("First Seen", 1), ("Count", 1), ("Name", 1)],
    "namespaces": [("Name", 0), ("Status", 0), ("Age", 0)],
    "deployments": [("Name", 0), ("Ready", 0), ("Up-to-date", 0), ("Available", 0), ("Age", 0), ("Containers", 1),
                    ("Images", 1), ("Selector", 1)],
    "configmaps": [("Name", 0), ("Data", 0), ("Age", 0)],
    "endpointslices": [("Name", 0), ("AddressType", 0), ("Ports", 0), ("Endpoints", 0), ("Age", 0)],
}
# The columns whose type is not "string" (Desired and friends: "integer").
INTEGER_COLUMNS = {"replicasets": {"Desired", "Current", "Ready"},
                   "daemonsets": {"Desired", "Current", "Ready", "Up-to-date", "Available"}}
# What a real kube-apiserver sends (a captured `kubectl get ns -v 9` answer).
AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not "
    "guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It "
    "is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")


@pytest.mark.parametrize("kind", sorted(REAL_COLUMNS))
def test_each_kinds_columns_are_the_real_printers(kind):
    columns = printers.table(kind, [], now=NOW)["columnDefinitions"]
    assert [(c["name"], c["priority"]) for c in columns] == REAL_COLUMNS[kind]
    assert {c["name"] for c in columns if c["type"] == "integer"} == INTEGER_COLUMNS.get(kind, set())
    assert all(c["type"] in ("string", "integer") and set(c) == {"name", "type", "format", "description", "priority"}
               for c in columns)
    names_ = [c["name"] for c in columns if c["format"] == "name"]
    assert names_ == ["Name"]                     # the one column --show-kind prefixes
    assert all(c["description"] for c in columns)
    if any(c["name"] == "Age" for c in columns):
        assert next(c for c in columns if c["name"] == "Age")["description"] == AGE_DESCRIPTION


def test_the_table_is_what_the_server_answers_with_the_object_as_asked():
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                        "labels": {"app": "a"}, "creationTimestamp": ago(seconds=30)},
           "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}}
    t = printers.table("pods", [pod], resource_version="42", now=NOW)
    assert list(t) == ["kind", "apiVersion", "metadata", "columnDefinitions", "rows"]
    assert (t["kind"], t["apiVersion"], t["metadata"]) == ("Table", "meta.k8s.io/v1", {"resourceVersion": "42"})
    assert t["rows"] == [{"cells": ["p", "0/1", "Pending", "0", "30s", "<none>", "<none>", "<none>", "<none>"],
                          "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                     "metadata": pod["metadata"]}}]
    assert printers.table("pods", [pod], "Object", now=NOW)["rows"][0]["object"] == pod
    assert printers.table("pods", [pod], "None", now=NOW)["rows"][0]["object"] is None
    assert printers.table("pods", [pod], "", now=NOW)["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert printers.table("pods", [], now=NOW)["metadata"] == {}          # ListMeta's omitempty
    with pytest.raises(ValueError, match='^unrecognized includeObject value: "Everything"$'):
        printers.table("pods", [pod], "Everything")
    json.dumps(t)                                                         # a JSON document as it is


# --- cells --------------------------------------------------------------------------------

def test_a_pending_pod_from_the_scheduler_and_a_running_one():
    s = cluster.new_state(spec.LabSpec(spec.ClusterConfig(name="t", roles=("control-plane", "worker")), pods=(
        spec.PodManifest("default", "waiting", spec.PodTemplate(labels={}, containers=(spec.Container("c"),),
                                                                node_selector={"disk": "ssd"})),
        spec.PodManifest("default", "web", spec.PodTemplate(labels={}, containers=(spec.Container("c"),))))),
        random.Random(1))
    s.created = ago(minutes=5)
    waiting, web = (apiserver.pod_object(s, s.pod("default", n)) for n in ("waiting", "web"))
    assert cells("pods", waiting, web) == [
        ["waiting", "0/1", "Pending", "0", "5m", "<none>", "<none>", "<none>", "<none>"],
        ["web", "1/1", "Running", "0", "5m", s.pod("default", "web").ip, "t-worker", "<none>", "<none>"]]


def pod(name, phase="Running", statuses=(), **extra):
    spec_ = {"containers": [{"name": s["name"]} for s in statuses] or [{"name": "c"}], **extra.pop("spec", {})}
    meta = {"name": name, "namespace": "default", "creationTimestamp": ago(hours=1), **extra.pop("meta", {})}
    return {"metadata": meta,
            "spec": spec_, "status": {"phase": phase, "containerStatuses": list(statuses), **extra}}


def test_a_pods_status_and_restarts_as_printpod_reads_the_container_states():
    running = {"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}}
    crashing = {"name": "b", "ready": False, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(minutes=3)}}}
    killed = {"name": "c", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 137, "signal": 9}}}
    done = {"name": "d", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    ready_cond = [{"type": "Ready", "status": "False"}]
    rows = cells("pods",
                 pod("crash", statuses=[running, crashing]),
                 pod("killed", phase="Failed", statuses=[killed]),
                 pod("sidecar", statuses=[done, running], conditions=ready_cond),
                 pod("going", statuses=[running], meta={"deletionTimestamp": ago(seconds=1)}),
                 pod("lost", statuses=[running], reason="NodeLost", meta={"deletionTimestamp": ago(seconds=1)}),
                 pod("gated", phase="Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                                            "reason": "SchedulingGated"}]),
                 pod("gates", statuses=[running], conditions=[{"type": "x", "status": "True"}],
                     spec={"readinessGates": [{"conditionType": "x"}, {"conditionType": "y"}]}))
    assert [r[:4] for r in rows] == [
        ["crash", "1/2", "CrashLoopBackOff", "4 (3m ago)"],
        ["killed", "0/1", "Signal:9", "0"],
        ["sidecar", "1/2", "NotReady", "0"],          # Completed, but a container still runs
        ["going", "1/1", "Terminating", "0"],
        ["lost", "1/1", "Unknown", "0"],
        ["gated", "0/1", "SchedulingGated", "0"],
        ["gates", "1/1", "Running", "0"]]
    assert rows[-1][8] == "1/2"
    t = printers.table("pods", [pod("killed", phase="Failed", statuses=[killed])], now=NOW)
    assert t["rows"][0]["conditions"] == [{"type": "Completed", "status": "True", "reason": "Failed",
                                           "message": "The pod failed."}]


def service(name, type_, **spec_):
    return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": ago(days=3)},
            "spec": {"type": type_, **spec_}, "status": spec_.pop("status", {"loadBalancer": {}})}


def test_services_external_ips_ports_and_selectors():
    lb_status = {"loadBalancer": {"ingress": [{"hostname": "a-very-long-name.elb.example.com"},
                                              {"ip": "172.18.255.200"}]}}
    rows = cells(
        "services",
        service("np", "NodePort", clusterIPs=["10.96.1.2"], selector={"b": "2", "a": "1"},
                ports=[{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]),
        service("lb", "LoadBalancer", clusterIPs=["10.96.1.3"],
                ports=[{"port": 80, "nodePort": 31000, "protocol": "TCP"}]),
        service("lb2", "LoadBalancer", clusterIPs=["10.96.1.4"], externalIPs=["192.0.2.7"], status=lb_status),
        service("ext", "ExternalName", externalName="example.com"),
        service("headless", "ClusterIP", clusterIPs=["None"], clusterIP="None"))
    assert rows == [
        ["np", "NodePort", "10.96.1.2", "<none>", "80:30080/TCP,53/UDP", "3d", "a=1,b=2"],
        ["lb", "LoadBalancer", "10.96.1.3", "<pending>", "80:31000/TCP", "3d", "<none>"],
        # the server's wide cells: never clipped to 16 characters; a sorted set, then externalIPs
        ["lb2", "LoadBalancer", "10.96.1.4", "172.18.255.200,a-very-long-name.elb.example.com,192.0.2.7", "<none>",
         "3d", "<none>"],
        ["ext", "ExternalName", "<none>", "example.com", "<none>", "3d", "<none>"],
        ["headless", "ClusterIP", "None", "<none>", "<none>", "3d", "<none>"]]


def test_endpoints_show_three_then_how_many_more():
    def ep(subsets):
        return {"metadata": {"name": "e", "creationTimestamp": ago(minutes=1)}, "subsets": subsets}
    four = [{"ip": f"10.0.0.{i}"} for i in range(1, 5)]
    rows = cells("endpoints",
                 ep([{"addresses": four, "ports": [{"port": 80}, {"port": 81}]}]),
                 ep([{"addresses": four[:3], "ports": [{"port": 80}]}]),
                 ep([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]),
                 ep([{"addresses": four}]),                      # a headless Service's, no ports
                 ep([{"notReadyAddresses": four, "ports": [{"port": 80}]}]),
                 ep(None))
    assert [r[1] for r in rows] == ["10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 5 more...",
                                    "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80", "[fd00::1]:80",
                                    "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...", "", "<none>"]
    assert rows[0][2] == "60s"


def test_endpointslices_list_every_address_and_port():
    es = lambda endpoints, ports: {"metadata": {"name": "web-abcde", "creationTimestamp": ago(hours=2)},  # noqa: E731
                                   "addressType": "IPv4", "endpoints": endpoints, "ports": ports}
    endpoints = [{"addresses": [f"10.244.1.{i}"], "conditions": {"ready": i != 2}} for i in range(1, 6)]
    ports = [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "all", "protocol": "TCP"},
             {"protocol": "TCP"}, {"name": "x", "port": 1, "protocol": "TCP"}]
    assert cells("endpointslices", es(endpoints, ports), es(None, None)) == [
        ["web-abcde", "IPv4", "8080,all,* + 1 more...", "10.244.1.1,10.244.1.2,10.244.1.3 + 2 more...", "120m"],
        ["web-abcde", "IPv4", "<unset>", "<unset>", "120m"]]            # under 3 hours: minutes


def node(name, labels, ready="True", **spec_):
    return {"metadata": {"name": name, "labels": labels, "creationTimestamp": ago(days=10)}, "spec": spec_,
            "status": {"conditions": [{"type": "Ready", "status": ready}],
                       "addresses": [{"type": "InternalIP", "address": "172.18.0.2"},
                                     {"type": "Hostname", "address": name}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                                    "kernelVersion": "6.1.0", "containerRuntimeVersion": ""}}}


NODES = [node("kind-control-plane", {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/os": "linux"}),
         node("kind-worker", {"kubernetes.io/os": "linux"}),
         node("kind-worker2", {"kubernetes.io/role": "infra", "node-role.kubernetes.io/gpu": ""}, ready="False",
              unschedulable=True)]


def test_a_three_node_list_with_roles():
    assert cells("nodes", *NODES) == [
        ["kind-control-plane", "Ready", "control-plane", "10d", "v1.33.0", "172.18.0.2", "<none>",
         "Debian GNU/Linux 12 (bookworm)", "6.1.0", "<unknown>"],
        ["kind-worker", "Ready", "<none>", "10d", "v1.33.0", "172.18.0.2", "<none>", "Debian GNU/Linux 12 (bookworm)",
         "6.1.0", "<unknown>"],
        ["kind-worker2", "NotReady,SchedulingDisabled", "gpu,infra", "10d", "v1.33.0", "172.18.0.2", "<none>",
         "Debian GNU/Linux 12 (bookworm)", "6.1.0", "<unknown>"]]
    new = {"metadata": {"name": "new"}, "status": {}}
    assert cells("nodes", new)[0][:4] == ["new", "Unknown", "<none>", "<unknown>"]


def test_workloads_cells():
    template = {"spec": {"containers": [{"name": "a", "image": "img:1"}, {"name": "b", "image": "img:2"}],
                         "nodeSelector": {"kubernetes.io/os": "linux"}}}
    meta = {"name": "w", "namespace": "default", "creationTimestamp": ago(minutes=90)}
    selector = {"matchLabels": {"app": "w"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                                     {"key": "zone", "operator": "DoesNotExist"}]}
    deployment = {"metadata": meta, "spec": {"replicas": 3, "selector": selector, "template": template},
                  "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}}
    assert cells("deployments", deployment, {"metadata": meta, "spec": {"template": {}}}) == [
        ["w", "2/3", 3, 2, "90m", "a,b", "img:1,img:2", "app=w,tier in (a,b),!zone"],
        ["w", "0/1", 0, 0, "90m", "", "", ""]]          # replicas defaults to 1; no selector prints ""
    rs = {"metadata": meta, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "w"}}, "template": template},
          "status": {"replicas": 3, "readyReplicas": 1}}
    assert cells("replicasets", rs) == [["w", 3, 3, 1, "90m", "a,b", "img:1,img:2", "app=w"]]
    ds = {"metadata": meta, "spec": {"selector": {}, "template": template},
          "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                     "updatedNumberScheduled": 3, "numberAvailable": 2}}
    assert cells("daemonsets", ds) == [["w", 3, 3, 2, 3, 2, "kubernetes.io/os=linux", "90m", "a,b", "img:1,img:2",
                                        "<none>"]]


def test_ingresses_ingressclasses_namespaces_configmaps_cells():
    meta = {"name": "i", "namespace": "default", "creationTimestamp": ago(seconds=119)}
    hosts = [{"host": h} for h in ("a.example", "", "b.example", "c.example", "d.example")]
    assert cells("ingresses",
                 {"metadata": meta, "spec": {"ingressClassName": "nginx", "rules": hosts, "tls": [{"hosts": ["a"]}]},
                  "status": {"loadBalancer": {"ingress": [{"ip": "172.18.0.3"}]}}},
                 {"metadata": meta, "spec": {"rules": [{"http": {}}]}, "status": {"loadBalancer": {}}}) == [
        ["i", "nginx", "a.example,b.example,c.example + 2 more...", "172.18.0.3", "80, 443", "119s"],
        ["i", "<none>", "*", "", "80", "119s"]]
    assert cells("ingressclasses",
                 {"metadata": meta, "spec": {"controller": "k8s.io/ingress-nginx"}},
                 {"metadata": meta, "spec": {"controller": "c", "parameters": {"apiGroup": "k8s.example.com",
                                                                                "kind": "Params", "name": "p"}}}) == [
        ["i", "k8s.io/ingress-nginx", "<none>", "119s"], ["i", "c", "Params.k8s.example.com/p", "119s"]]
    assert cells("namespaces", {"metadata": meta, "status": {"phase": "Active"}}) == [["i", "Active", "119s"]]
    assert cells("configmaps", {"metadata": meta, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}},
                 {"metadata": meta}) == [["i", 3, "119s"], ["i", 0, "119s"]]


def test_events_cells_as_printevent_makes_them():
    base = {"metadata": {"name": "web-0.17f3a1b2c3d4e5f6", "namespace": "default"}, "type": "Warning",
            "reason": "BackOff", "message": "  Back-off restarting failed container\n", "count": 5,
            "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{c}"},
            "source": {"component": "kubelet", "host": "kind-worker"},
            "firstTimestamp": ago(minutes=30), "lastTimestamp": ago(seconds=50)}
    newer = {"metadata": {"name": "x.1", "namespace": "default"}, "type": "Normal", "reason": "R", "message": "m",
             "involvedObject": {"kind": "Node"}, "reportingComponent": "ctrl", "eventTime": ago(hours=2),
             "series": {"count": 7, "lastObservedTime": ago(minutes=4)}}
    single = {**newer, "series": None, "eventTime": ago(minutes=1)}
    assert cells("events", base, newer, single) == [
        ["50s", "Warning", "BackOff", "pod/web-0", "spec.containers{c}", "kubelet, kind-worker",
         "Back-off restarting failed container", "30m", 5, "web-0.17f3a1b2c3d4e5f6"],
        ["4m", "Normal", "R", "node", "", "ctrl", "m", "120m", 7, "x.1"],
        ["60s", "Normal", "R", "node", "", "ctrl", "m", "60s", 1, "x.1"]]


# --- AGE: duration.HumanDuration at its thresholds --------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (-2, "<invalid>"), (-1.5, "0s"), (-1, "0s"), (0, "0s"), (0.9, "0s"), (59, "59s"), (119, "119s"),
    (120, "2m"), (121, "2m1s"), (599, "9m59s"), (600, "10m"), (601, "10m"), (3 * 3600 - 1, "179m"),
    (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"), (8 * 3600 - 1, "7h59m"), (8 * 3600, "8h"), (48 * 3600 - 1, "47h"),
    (48 * 3600, "2d"), (49 * 3600, "2d1h"), (8 * 86400 - 1, "7d23h"), (8 * 86400, "8d"),
    (2 * 365 * 86400 - 1, "729d"), (2 * 365 * 86400, "2y"), (731 * 86400, "2y1d"),
    (8 * 365 * 86400 - 1, "7y364d"), (8 * 365 * 86400, "8y"), (20 * 365 * 86400, "20y"),
])
def test_ages_follow_human_duration(seconds, text):
    assert printers.human_duration(datetime.timedelta(seconds=seconds)) == text


def test_age_of_a_timestamp():
    assert printers.age("", NOW) == "<unknown>"
    assert printers.age("2025-06-01T11:57:30Z", NOW) == "2m30s"
    assert printers.age("2025-06-01T11:57:30.999999Z", NOW) == "2m29s"      # a MicroTime
    assert printers.age("2025-06-01T12:00:01Z", NOW) == "0s"                # a clock a second ahead


# --- kubectl's text ---------------------------------------------------------------------------

RUNNING = {"name": "c", "ready": True, "restartCount": 0, "state": {"running": {}}}
PODS = [
    {"metadata": {"name": "web-7f8d9c6b5-abcde", "namespace": "default", "creationTimestamp": ago(minutes=5)},
     "spec": {"containers": [{"name": "c"}], "nodeName": "kind-worker"},
     "status": {"phase": "Running", "podIPs": [{"ip": "10.244.1.2"}], "containerStatuses": [RUNNING]}},
    {"metadata": {"name": "waiting", "namespace": "default", "creationTimestamp": ago(seconds=30)},
     "spec": {"containers": [{"name": "c"}, {"name": "d"}]}, "status": {"phase": "Pending"}},
    {"metadata": {"name": "coredns-1", "namespace": "kube-system", "creationTimestamp": ago(days=2)},
     "spec": {"containers": [{"name": "c"}], "nodeName": "kind-control-plane"},
     "status": {"phase": "Running", "podIPs": [{"ip": "10.244.0.3"}], "containerStatuses": [RUNNING]}},
]

# By hand: a column is as wide as its widest cell plus 3 (at least 6); the last one is not padded.
PODS_WIDE = (
    "NAME                  READY   STATUS    RESTARTS   AGE   IP           NODE          NOMINATED NODE   "
    "READINESS GATES\n"
    "web-7f8d9c6b5-abcde   1/1     Running   0          5m    10.244.1.2   kind-worker   <none>           <none>\n"
    "waiting               0/2     Pending   0          30s   <none>       <none>        <none>           <none>\n")
PODS_ALL_NAMESPACES = (
    "NAMESPACE     NAME                  READY   STATUS    RESTARTS   AGE\n"
    "default       web-7f8d9c6b5-abcde   1/1     Running   0          5m\n"
    "default       waiting               0/2     Pending   0          30s\n"
    "kube-system   coredns-1             1/1     Running   0          2d\n")
NODES_TEXT = (
    "NAME                 STATUS                        ROLES           AGE   VERSION\n"
    "kind-control-plane   Ready                         control-plane   10d   v1.33.0\n"
    "kind-worker          Ready                         <none>          10d   v1.33.0\n"
    "kind-worker2         NotReady,SchedulingDisabled   gpu,infra       10d   v1.33.0\n")
EVENT = {"metadata": {"name": "n.1", "namespace": "default"}, "involvedObject": {"kind": "Node", "name": "n"},
         "type": "Normal", "reason": "R", "message": "", "source": {"component": "kubelet"},
         "firstTimestamp": ago(minutes=60), "lastTimestamp": ago(minutes=10), "count": 2}
# An empty last cell leaves the one before it padded: kubectl's trailing spaces.
EVENTS_TEXT = ("LAST SEEN   TYPE     REASON   OBJECT   MESSAGE\n"
               "10m         Normal   R        node/n   \n")
EVENTS_WIDE = (
    "LAST SEEN   TYPE     REASON   OBJECT   SUBOBJECT   SOURCE    MESSAGE   FIRST SEEN   COUNT   NAME\n"
    "10m         Normal   R        node/n               kubelet             60m          2       n.1\n")
DEPLOYMENT = {"metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(hours=1)},
              "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                       "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
              "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
DEPLOYMENT_WITH_KIND = ("NAME                  READY   UP-TO-DATE   AVAILABLE   AGE\n"
                        "deployment.apps/web   2/3     3            2           60m\n")
# Columns of 1-character cells: tabwriter's minwidth of 6. Then a cell cut at its newline, an
# escape shown, and a number and a boolean as fmt.Sprint writes them.
COLUMNS_NX = [{"name": "N", "type": "string", "format": "name", "description": "", "priority": 0},
              {"name": "X", "type": "string", "format": "", "description": "", "priority": 0}]
NARROW = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": COLUMNS_NX,
          "rows": [{"cells": ["a", "b"], "object": None}]}
NARROW_TEXT = "N     X\na     b\n"
CUT = {**NARROW, "rows": [{"cells": ["line\nbreak", "\x1b[31m"], "object": None},
                          {"cells": [7, True], "object": None}, {"cells": [None, "x"], "object": None}]}
CUT_TEXT = "N         X\nline...   ^[[31m\n7         true\n          x\n"

CASES = [   # (what, kind, objects, kubectl's arguments, render's options, the text)
    ("pods -o wide", "pods", PODS[:2], ["get", "pods", "-o", "wide"], {"wide": True}, PODS_WIDE),
    ("pods -A", "pods", PODS, ["get", "pods", "-A"], {"all_namespaces": True}, PODS_ALL_NAMESPACES),
    ("nodes", "nodes", NODES, ["get", "nodes"], {}, NODES_TEXT),
    ("nodes -A", "nodes", NODES, ["get", "nodes", "-A"], {}, NODES_TEXT),          # cluster-scoped: no NAMESPACE
    ("events", "events", [EVENT], ["get", "events"], {}, EVENTS_TEXT),
    ("events -o wide", "events", [EVENT], ["get", "events", "-o", "wide"], {"wide": True}, EVENTS_WIDE),
    ("--show-kind", "deployments", [DEPLOYMENT], ["get", "deployments", "--show-kind"],
     {"with_kind": "Deployment.apps"}, DEPLOYMENT_WITH_KIND),
    ("empty", "pods", [], ["get", "pods"], {}, ""),
]


@pytest.mark.parametrize("what, kind, objects, argv, options, text", CASES, ids=[c[0] for c in CASES])
def test_render_prints_what_kubectl_prints(what, kind, objects, argv, options, text):
    assert printers.render(printers.table(kind, objects, now=NOW), **options) == text


def test_cells_are_cut_at_a_newline_and_escapes_shown_and_narrow_columns_are_six_wide():
    assert printers.render(NARROW) == NARROW_TEXT
    assert printers.render(CUT) == CUT_TEXT


def test_nothing_found_says_so_as_kubectl_does():
    assert printers.no_resources("default") == "No resources found in default namespace."
    assert printers.no_resources() == "No resources found"


def test_a_namespace_column_for_a_row_without_an_object_is_empty():
    t = printers.table("pods", PODS[:1], "None", now=NOW)
    assert printers.render(t, all_namespaces=True) == (
        "NAMESPACE   NAME                  READY   STATUS    RESTARTS   AGE\n"
        "            web-7f8d9c6b5-abcde   1/1     Running   0          5m\n")


def test_the_tabwriter_pads_columns_and_leaves_the_last_cell_alone():
    assert printers.tabwriter("a\tbb\tc\nddddd\te\t\n") == "a       bb    c\nddddd   e     \n"
    # a line of one cell flushes; the widths seen so far are kept for what follows
    assert printers.tabwriter("abcdefgh\tx\none\nab\ty\n") == "abcdefgh   x\none\nab         y\n"


# The real kubectl printing the same Tables: a stand-in API server (legacy discovery, then the
# canned Table of each request) inside a network namespace of its own, which goes with it.
FAKE_APISERVER = r'''
import json, os, subprocess, sys, tempfile, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESOURCES = {"pods": ("", "Pod", True), "nodes": ("", "Node", False), "events": ("", "Event", True),
             "deployments": ("apps", "Deployment", True), "narrow": ("", "Narrow", True)}
cases = json.load(open(sys.argv[1]))
current = {}


def resources(group):
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/v1" if group else "v1",
            "resources": [{"name": p, "singularName": k.lower(), "namespaced": n, "kind": k, "verbs": ["get", "list"]}
                          for p, (g, k, n) in RESOURCES.items() if g == group]}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/api":
            body = {"kind": "APIVersions", "versions": ["v1"]}
        elif path == "/apis":
            body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "apps", "versions": [
                {"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1",
                                                                                       "version": "v1"}}]}
        elif path == "/api/v1":
            body = resources("")
        elif path == "/apis/apps/v1":
            body = resources("apps")
        else:
            body = current["table"]
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
results = []
with tempfile.TemporaryDirectory() as home:
    config = os.path.join(home, "config")
    open(config, "w").close()
    for table, argv in cases:
        current["table"] = table
        r = subprocess.run(["kubectl", f"--server=http://127.0.0.1:{server.server_address[1]}",
                            f"--cache-dir={home}/cache", *argv], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "KUBECONFIG": config, "HOME": home})
        results.append([r.returncode, r.stdout, r.stderr])
print(json.dumps(results))
'''


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("kubectl") or not shutil.which("unshare"),
                    reason="needs root (a network namespace of its own), unshare and kubectl")
def test_the_real_kubectl_prints_the_same_text(tmp_path):
    cases = [[printers.table(kind, objects, now=NOW), argv] for _, kind, objects, argv, _, _ in CASES]
    cases += [[NARROW, ["get", "narrow"]], [CUT, ["get", "narrow"]]]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "fake_apiserver.py").write_text(FAKE_APISERVER)
    done = subprocess.run(["unshare", "--net", sys.executable, str(tmp_path / "fake_apiserver.py"),
                           str(tmp_path / "cases.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    expected = [(0, text, "") for *_, text in CASES] + [(0, NARROW_TEXT, ""), (0, CUT_TEXT, "")]
    expected[len(CASES) - 1] = (0, "", "No resources found in default namespace.\n")     # the empty table
    assert [tuple(r) for r in results] == expected


# --- the objects behind the new kinds -------------------------------------------------------

def ingress_state():
    s = cluster.new_state(spec.load(TOPOLOGIES / "ingress.yaml"), random.Random(7))
    s.created = "2025-01-01T00:00:00Z"
    return s


def test_a_deployments_replicaset():
    s = ingress_state()
    d = next(d for d in s.deployments if d.namespace == "default")
    pods = [p for p in s.pods if p.owner == f"Deployment/{d.name}"]
    rs = apiserver.replicaset_object(s, d, {pods[0].key})
    name = f"{d.name}-{d.template_hash}"
    assert rs["metadata"]["name"] == name and rs["metadata"]["namespace"] == "default"
    assert rs["metadata"]["labels"] == {**d.template.labels, "pod-template-hash": d.template_hash}
    assert rs["spec"]["selector"] == {"matchLabels": {**d.match_labels, "pod-template-hash": d.template_hash}}
    assert rs["spec"]["replicas"] == d.replicas and rs["status"]["replicas"] == len(pods)
    assert (rs["status"]["readyReplicas"], rs["status"]["availableReplicas"]) == (1, 1)
    owner = rs["metadata"]["ownerReferences"]
    assert [(o["apiVersion"], o["kind"], o["name"], o["controller"]) for o in owner] == [
        ("apps/v1", "Deployment", d.name, True)]
    # the pods' controller reference names this ReplicaSet
    assert apiserver.pod_object(s, pods[0])["metadata"]["ownerReferences"][0]["name"] == name
    assert "readyReplicas" not in apiserver.replicaset_object(s, d)["status"]       # omitempty
    # maxSurge 25% rounds up: the deployment controller's max-replicas annotation
    for replicas, most in ((3, "4"), (4, "5"), (10, "13"), (1, "2")):
        d.replicas = replicas
        assert apiserver.replicaset_object(s, d)["metadata"]["annotations"] == {
            "deployment.kubernetes.io/desired-replicas": str(replicas), "deployment.kubernetes.io/max-replicas": most,
            "deployment.kubernetes.io/revision": "1"}


def test_namespaces_carry_the_immutable_name_label():
    s = ingress_state()
    ns = apiserver.namespace_object(s, "kube-flannel")
    assert ns["metadata"]["labels"] == {"k8s-app": "flannel", "pod-security.kubernetes.io/enforce": "privileged",
                                        "kubernetes.io/metadata.name": "kube-flannel"}
    mine = apiserver.namespace_object(s, "team", {"kubernetes.io/metadata.name": "other", "a": "b"},
                                      "2025-02-02T00:00:00Z")
    assert mine["metadata"]["labels"] == {"a": "b", "kubernetes.io/metadata.name": "team"}
    assert mine["metadata"]["creationTimestamp"] == "2025-02-02T00:00:00Z" and mine["status"] == {"phase": "Active"}


# kubeadm's CoreDNSConfigMap template (cmd/kubeadm/app/phases/addons/dns/manifests.go),
# rendered for DNSDomain cluster.local.
KUBEADM_COREFILE = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""


def test_the_configmaps_of_a_kind_cluster_with_flannel():
    s = ingress_state()
    found = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in apiserver.configmap_objects(
        s, "cluster.local")}
    assert list(found) == [("kube-flannel", "kube-flannel-cfg"), ("kube-system", "coredns"),
                           ("kube-system", "kube-proxy")]
    assert found[("kube-system", "coredns")]["data"] == {"Corefile": KUBEADM_COREFILE}
    flannel = found[("kube-flannel", "kube-flannel-cfg")]
    assert json.loads(flannel["data"]["net-conf.json"]) == {"Network": "10.244.0.0/16", "EnableNFTables": False,
                                                            "Backend": {"Type": "vxlan"}}
    cni = json.loads(flannel["data"]["cni-conf.json"])
    assert (cni["name"], [p["type"] for p in cni["plugins"]]) == ("cbr0", ["flannel", "portmap"])
    assert cni["plugins"][0]["delegate"] == {"hairpinMode": True, "isDefaultGateway": True}
    proxy = found[("kube-system", "kube-proxy")]
    config = yaml.safe_load(proxy["data"]["config.conf"])
    assert (config["apiVersion"], config["kind"], config["mode"], config["clusterCIDR"]) == (
        "kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration", "iptables", "10.244.0.0/16")
    assert config["clientConnection"]["kubeconfig"] == "/var/lib/kube-proxy/kubeconfig.conf"
    assert (config["conntrack"]["maxPerCore"], config["iptables"]["minSyncPeriod"]) == (0, "1s")   # kind's
    assert list(config) == sorted(config)                      # as sigs.k8s.io/yaml marshals it
    kubeconfig = yaml.safe_load(proxy["data"]["kubeconfig.conf"])
    control_plane = next(n.name for n in s.nodes if n.role == "control-plane")
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{control_plane}:6443"
    assert not proxy["data"]["config.conf"].endswith("\n")      # `|-` blocks in kubeadm's manifest
    assert cells("configmaps", *found.values()) == [["kube-flannel-cfg", 2, "151d"], ["coredns", 1, "151d"],
                                                    ["kube-proxy", 2, "151d"]]


def test_the_ingress_class_is_there_with_the_controller():
    s = ingress_state()
    (ic,) = apiserver.ingressclass_objects(s, "1.12.1")
    assert ic["metadata"]["name"] == "nginx" and ic["spec"] == {"controller": "k8s.io/ingress-nginx"}
    assert ic["metadata"]["annotations"] == {"ingressclass.kubernetes.io/is-default-class": "true"}
    assert ic["metadata"]["labels"]["app.kubernetes.io/version"] == "1.12.1"
    s = cluster.new_state(spec.LabSpec(spec.ClusterConfig(name="t")), random.Random(1))
    assert apiserver.ingressclass_objects(s, "1.12.1") == []


RECORDS = [
    {"time": "2025-06-01T11:50:00Z", "type": "Normal", "reason": "ScalingReplicaSet", "object": "deployment/web",
     "namespace": "default", "source": "controller-manager", "message": "Scaled up replica set web-1 to 2",
     "why": "scale deployment/web --replicas 2"},
    {"time": "2025-06-01T11:50:00Z", "type": "Normal", "reason": "SyncProxyRules", "object": "node/t-worker",
     "namespace": "", "source": "kube-proxy", "message": "wrote 3 chains", "why": "up"},
    {"time": "2025-06-01T11:50:00Z", "type": "Normal", "reason": "NetworkConfigured", "object": "pod/kube-system/c1",
     "namespace": "", "source": "cni", "message": "eth0", "why": "up"},
    {"time": "2025-06-01T11:51:00Z", "type": "Normal", "reason": "FaultInjected", "object": "fault/loss",
     "namespace": "", "source": "controller-manager", "message": "t-worker 10", "why": ""},
]


def test_the_lab_records_as_core_v1_events():
    s = cluster.new_state(spec.LabSpec(spec.ClusterConfig(name="t", roles=("control-plane", "worker"))),
                          random.Random(1))
    pod = s.pods[0]
    records = RECORDS + [{**RECORDS[0]}, {"time": "2025-06-01T11:52:00Z", "type": "Warning", "reason": "Unhealthy",
                                          "object": f"pod/{pod.name}", "namespace": pod.namespace, "source": "kubelet",
                                          "message": "not ready", "why": ""}]
    found = events.event_objects(records, s)
    assert [(e["metadata"]["namespace"], e["metadata"]["name"].split(".")[0]) for e in found] == sorted(
        [("default", "web"), ("default", "t-worker"), ("kube-system", "c1"), ("default", "loss"),
         ("kube-system", pod.name)])
    assert all(re.fullmatch(r"[a-z0-9-]+\.[0-9a-f]{16}", e["metadata"]["name"]) for e in found)
    by_reason = {e["reason"]: e for e in found}
    scaled = by_reason["ScalingReplicaSet"]
    assert scaled["involvedObject"] == {"kind": "Deployment", "namespace": "default", "name": "web",
                                        "apiVersion": "apps/v1"}
    assert scaled["count"] == 2                                  # the same record twice: aggregated
    assert scaled["message"] == "Scaled up replica set web-1 to 2"      # the real recorder's text
    assert scaled["metadata"]["annotations"] == {events.CAUSE_ANNOTATION: "scale deployment/web --replicas 2"}
    assert (scaled["source"], scaled["reportingComponent"], scaled["type"]) == (
        {"component": "controller-manager"}, "controller-manager", "Normal")
    assert scaled["firstTimestamp"] == scaled["lastTimestamp"] == "2025-06-01T11:50:00Z"
    # a cluster-scoped object's events live in default, with no namespace in the reference
    assert by_reason["SyncProxyRules"]["involvedObject"] == {"kind": "Node", "name": "t-worker", "apiVersion": "v1"}
    assert by_reason["Unhealthy"]["involvedObject"]["uid"] == pod.uid
    # the name is the same however many older records there are before it
    assert events.event_objects(records[-1:], s)[0]["metadata"]["name"] == by_reason["Unhealthy"]["metadata"]["name"]
    rows = cells("events", *[e for e in found if e["metadata"]["namespace"] == "default"])
    assert sorted((r[0], r[2], r[3], r[6]) for r in rows) == [
        ("10m", "ScalingReplicaSet", "deployment/web", "Scaled up replica set web-1 to 2"),
        ("10m", "SyncProxyRules", "node/t-worker", "wrote 3 chains"),
        ("9m", "FaultInjected", "fault/loss", "t-worker 10")]


# --- `netlab get`, from a saved lab ------------------------------------------------------------

@pytest.fixture
def saved_lab(tmp_path, monkeypatch):
    """An ingress lab's state under a temporary state root, ten days old, with two events."""
    monkeypatch.setattr(names, "STATE_ROOT", tmp_path / "netlab")
    s = cluster.new_state(spec.load(TOPOLOGIES / "ingress.yaml"), random.Random(7))
    ten_days = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10, hours=1)
    s.created = ten_days.strftime("%Y-%m-%dT%H:%M:%SZ")
    s.phase = "Running"
    Store(s.lab).save(s)
    events.record(s.lab, [("ScalingReplicaSet", "deployment/web", "default", "Scaled up")], "controller-manager", "up")
    events.record(s.lab, [("SyncProxyRules", "node/x", "", "wrote")], "kube-proxy", "up")
    (names.state_dir(s.lab) / events.FILE).write_text("".join(
        json.dumps({**json.loads(line), "time": s.created}) + "\n"
        for line in (names.state_dir(s.lab) / events.FILE).read_text().splitlines()))
    return s


def get(capsys, lab, *argv):
    code = cli.main(["--lab", lab.lab, "get", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_netlab_get_prints_the_tables_of_the_new_kinds(saved_lab, capsys):
    code, out, err = get(capsys, saved_lab, "ingressclass")
    assert (code, err) == (0, "")
    assert out == ("NAME    CONTROLLER             PARAMETERS   AGE\n"
                   "nginx   k8s.io/ingress-nginx   <none>       10d\n")
    code, out, _ = get(capsys, saved_lab, "ns")
    assert [line.split() for line in out.splitlines()] == [["NAME", "STATUS", "AGE"]] + [
        [n, "Active", "10d"] for n in ("default", "ingress-nginx", "kube-flannel", "kube-node-lease", "kube-public",
                                       "kube-system")]
    code, out, _ = get(capsys, saved_lab, "cm", "-A")
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["NAMESPACE", "NAME", "DATA"], ["kube-flannel", "kube-flannel-cfg", "2"], ["kube-system", "coredns", "1"],
        ["kube-system", "kube-proxy", "2"]]
    code, out, _ = get(capsys, saved_lab, "rs", "-A", "-o", "wide")
    header, *rows = [line.split() for line in out.splitlines()]
    assert header == ["NAMESPACE", "NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert {(r[0], r[1].rsplit("-", 1)[0]) for r in rows} == {(d.namespace, d.name) for d in saved_lab.deployments}
    code, out, _ = get(capsys, saved_lab, "ev", "-A")
    assert [line.split()[:5] for line in out.splitlines()] == [
        ["NAMESPACE", "LAST", "SEEN", "TYPE", "REASON"],
        ["default", "10d", "Normal", "ScalingReplicaSet", "deployment/web"],
        ["default", "10d", "Normal", "SyncProxyRules", "node/x"]]
    code, out, _ = get(capsys, saved_lab, "endpointslices", "-n", "kube-system")
    assert out.splitlines()[0].split() == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]


def test_netlab_get_says_when_nothing_is_found(saved_lab, capsys):
    assert get(capsys, saved_lab, "pods", "-n", "nobody") == (0, "", "No resources found in nobody namespace.\n")
    assert get(capsys, saved_lab, "events", "-n", "nobody") == (0, "", "No resources found in nobody namespace.\n")
    code, out, err = get(capsys, saved_lab, "rs", "nope")
    assert (code, out, err) == (1, "", 'netlab: replicasets.apps "nope" not found\n')


def test_netlab_get_and_the_table_are_one_code_path(saved_lab, capsys):
    from netlab.lab import Lab
    lab = Lab(saved_lab.lab)
    for kind in ("pods", "services", "deployments", "daemonsets", "endpoints", "ingresses", "nodes"):
        code, out, _ = get(capsys, saved_lab, kind, "-A", "-o", "wide")
        table = printers.table(kind, lab.get(kind, all_namespaces=True))
        assert out == printers.render(table, wide=True, all_namespaces=printers.namespaced(kind)), kind
