"""The real kubectl (/usr/bin/kubectl) against a live lab's kube-apiserver (topologies/default.yaml):
what a person types on a kind cluster, read back from the kernel and from kubectl's own output.

Expected values come from Kubernetes' behaviour (the printers' columns, kubectl's messages,
kube-proxy's chain names) and from the kernel (pod addresses, namespaces, rules), never from
netlab's own rendering; the one comparison with netlab is the one the issue asks for: the tables
`netlab get` prints equal kubectl's, column by column.
"""

import base64
import hashlib
import ipaddress
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from netlab import Lab
from netlab.api.etcd import all_labs

from .conftest import TOPOLOGIES, lab_for_module, renamed, unique_name, wait_for

KUBECTL = "/usr/bin/kubectl"
# A ReplicaSet's pod: the Deployment's name, the pod-template-hash (rand.SafeEncodeString of a
# 32-bit hash: up to 10 characters), five random characters of the same alphabet.
SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
WEB_POD = rf"web-{SAFE}{{1,10}}-{SAFE}{{5}}"
TIMEOUT = 60                 # seconds any one kubectl command may take


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_for_module(TOPOLOGIES / "default.yaml", tmp_path_factory) as lab:
        yield lab


@pytest.fixture
def kc(lab, tmp_path):
    """kubectl against this lab only: its own kubeconfig and discovery cache, in tmp_path."""
    config = tmp_path / "kubeconfig"
    config.write_text(lab.kubeconfig())
    config.chmod(0o600)

    def run(*args, check=True, timeout=TIMEOUT):
        out = subprocess.run([KUBECTL, "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache"), *args],
                             capture_output=True, text=True, timeout=timeout)
        if check:
            assert out.returncode == 0, f"kubectl {' '.join(args)}: exit {out.returncode}: {out.stderr}"
        return out
    run.config = config
    run.cache = tmp_path / "cache"
    return run


# --- reading what kubectl prints ------------------------------------------------------------------

def parse_table(text):
    """kubectl's tabwriter output -> (header, rows of cells). Columns are left-aligned and
    separated by at least three spaces (padding 3), so each starts where its header starts."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "kubectl printed no table"
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
    header = [lines[0][a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
    rows = [[line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])] for line in lines[1:]]
    return header, rows


def as_dicts(text):
    header, rows = parse_table(text)
    return [dict(zip(header, row)) for row in rows]


def tables(text):
    """A multi-type `kubectl get a,b,c`: one table per type, separated by a blank line."""
    return [as_dicts(block) for block in re.split(r"\n\s*\n", text.strip()) if block.strip()]


def seconds(age):
    """kubectl's HumanDuration ("45s", "2m30s", "3h", "5d") -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}
    parts = re.findall(r"(\d+)([smhdy])", age)
    assert parts and "".join(n + u for n, u in parts) == age, f"not a kubectl age: {age!r}"
    return sum(int(n) * units[u] for n, u in parts)


# --- the kernel's view -------------------------------------------------------------------------------

def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def ipv4_of(netns, device):
    """The address and prefix of `device` in `netns`, as `ip -o -4 addr` shows it."""
    out = run(["ip", "-n", netns, "-o", "-4", "addr", "show", "dev", device])
    return ipaddress.ip_interface(out.split()[3])


def netns_names():
    return {line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()}


def node_names(lab):
    """The nodes of topologies/default.yaml, as kind names them."""
    return [f"{lab.name}-control-plane", f"{lab.name}-worker", f"{lab.name}-worker2"]


def node_of_ip(lab, ip):
    """The node whose cni0 bridge subnet holds the pod address (the bridge CNI's host-local range)."""
    found = [n for n in node_names(lab) if ipaddress.ip_address(ip) in ipv4_of(lab.netns_of(n), "cni0").network]
    assert len(found) == 1, f"{ip} is in the cni0 subnet of {found}"
    return found[0]


def pod_netns_of(lab, namespace, prefix):
    """The pod network namespaces of this lab in `namespace` whose pod name starts with `prefix`."""
    head = f"{lab.name}-{namespace}.{prefix}"
    return sorted(n for n in netns_names() if n.startswith(head))


def svc_chain(service_port, protocol="tcp"):
    """kube-proxy's KUBE-SVC chain name: base32(sha256(namespace/name:port + protocol))[:16]."""
    digest = hashlib.sha256((service_port + protocol).encode()).digest()
    return "KUBE-SVC-" + base64.b32encode(digest).decode()[:16]


def sep_jumps(lab, node, chain):
    """The KUBE-SEP-* jumps of `chain` in the node's nat table."""
    return [line for line in lab.iptables(node, "nat").splitlines()
            if line.startswith(f"-A {chain} ") and re.search(r"-j KUBE-SEP-[A-Z2-7]{16}$", line)]


def names_of(kc, *selector):
    out = kc("get", "pods", *selector, "-o", "jsonpath={.items[*].metadata.name}").stdout
    return set(out.split())


# --- get -------------------------------------------------------------------------------------------

def test_get_nodes_lists_the_kind_nodes_ready_with_their_roles(lab, kc):
    rows = as_dicts(kc("get", "nodes").stdout)
    assert [r["NAME"] for r in rows] == node_names(lab)
    assert [r["STATUS"] for r in rows] == ["Ready"] * 3
    assert [r["ROLES"] for r in rows] == ["control-plane", "<none>", "<none>"]
    assert all(re.fullmatch(r"v1\.\d+\.\d+\S*", r["VERSION"]) for r in rows)
    assert list(rows[0]) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]


def test_get_pods_all_namespaces_wide_shows_each_pod_with_its_kernel_address_and_node(lab, kc):
    out = kc("get", "pods", "-A", "-o", "wide").stdout
    header, _ = parse_table(out)
    assert header == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE",
                      "READINESS GATES"]
    rows = as_dicts(out)
    default = sorted(r["NAME"] for r in rows if r["NAMESPACE"] == "default")
    assert default[0] == "client" and len(default) == 5           # the client and web's 4 replicas
    assert all(re.fullmatch(WEB_POD, n) for n in default[1:])   # a ReplicaSet's names
    assert len([r for r in rows if r["NAMESPACE"] == "kube-system" and r["NAME"].startswith("coredns-")]) == 2
    for r in rows:
        assert (r["READY"], r["STATUS"], r["RESTARTS"]) == ("1/1", "Running", "0"), r
        ip = ipv4_of(lab.netns_of(f"{r['NAMESPACE']}/{r['NAME']}"), "eth0").ip
        assert r["IP"] == str(ip)
        assert r["NODE"] == node_of_ip(lab, ip)
        assert (r["NOMINATED NODE"], r["READINESS GATES"]) == ("<none>", "<none>")
    # -A sorts by namespace, then name
    assert [(r["NAMESPACE"], r["NAME"]) for r in rows] == sorted((r["NAMESPACE"], r["NAME"]) for r in rows)


def test_get_svc_ep_endpointslices_prints_one_table_a_type_with_kind_prefixed_names(lab, kc):
    services, endpoints, slices = tables(kc("get", "svc,ep,endpointslices").stdout)
    control_plane_ip = ipv4_of(lab.netns_of(f"{lab.name}-control-plane"), "eth0").ip
    svc = {r["NAME"]: r for r in services}
    assert set(svc) == {"service/kubernetes", "service/web", "service/web-nodeport"}
    assert (svc["service/kubernetes"]["TYPE"], svc["service/kubernetes"]["CLUSTER-IP"],
            svc["service/kubernetes"]["PORT(S)"]) == ("ClusterIP", "10.96.0.1", "443/TCP")
    assert (svc["service/web"]["TYPE"], svc["service/web"]["PORT(S)"]) == ("ClusterIP", "80/TCP,8081/UDP")
    assert (svc["service/web-nodeport"]["TYPE"], svc["service/web-nodeport"]["PORT(S)"]) == ("NodePort", "80:30080/TCP")
    assert ipaddress.ip_address(svc["service/web"]["CLUSTER-IP"]) in ipaddress.ip_network("10.96.0.0/12")
    ep = {r["NAME"]: r for r in endpoints}
    assert set(ep) == {"endpoints/kubernetes", "endpoints/web", "endpoints/web-nodeport"}
    assert ep["endpoints/kubernetes"]["ENDPOINTS"] == f"{control_plane_ip}:6443"
    # kubectl lists at most 3 addresses, then "+ N more..." (4 web pods x 2 ports = 8 for web)
    assert ep["endpoints/web"]["ENDPOINTS"].endswith(" + 5 more...")
    assert ep["endpoints/web-nodeport"]["ENDPOINTS"].endswith(" + 1 more...")
    web_ips = {str(ipv4_of(n, "eth0").ip) for n in pod_netns_of(lab, "default", "web-")}
    shown = ep["endpoints/web-nodeport"]["ENDPOINTS"].split(" ")[0].split(",")
    assert {a.rsplit(":", 1)[0] for a in shown} < web_ips and {a.rsplit(":", 1)[1] for a in shown} == {"8080"}
    assert list(slices[0]) == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    sl = {r["NAME"]: r for r in slices}
    assert sl["endpointslice.discovery.k8s.io/kubernetes"]["ENDPOINTS"] == str(control_plane_ip)
    assert sl["endpointslice.discovery.k8s.io/kubernetes"]["PORTS"] == "6443"
    web = [r for n, r in sl.items() if re.fullmatch(r"endpointslice.discovery.k8s.io/web-[a-z0-9]{5}", n)]
    assert len(web) == 1 and web[0]["ADDRESSTYPE"] == "IPv4"
    assert sorted(web[0]["PORTS"].split(",")) == ["8080", "8081"]
    assert web[0]["ENDPOINTS"].endswith(" + 1 more...")


def test_get_daemonsets_all_namespaces_shows_kube_proxy_flannel_and_kube_router_on_every_node(lab, kc):
    rows = {(r["NAMESPACE"], r["NAME"]): r for r in as_dicts(kc("get", "ds", "-A").stdout)}
    assert set(rows) == {("kube-system", "kube-proxy"), ("kube-flannel", "kube-flannel-ds"),
                         ("kube-system", "kube-router")}
    for r in rows.values():
        assert [r[c] for c in ("DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE")] == ["3"] * 5
    assert rows[("kube-system", "kube-proxy")]["NODE SELECTOR"] == "kubernetes.io/os=linux"   # kubeadm's DaemonSet
    assert rows[("kube-flannel", "kube-flannel-ds")]["NODE SELECTOR"] == "<none>"           # flannel's: an affinity


def test_get_namespaces_lists_a_kind_clusters_namespaces_active(lab, kc):
    rows = {r["NAME"]: r["STATUS"] for r in as_dicts(kc("get", "ns").stdout)}
    for name in ("default", "kube-flannel", "kube-node-lease", "kube-public", "kube-system"):
        assert rows.get(name) == "Active", rows
    labels = yaml.safe_load(kc("get", "ns", "kube-system", "-o", "yaml").stdout)["metadata"]["labels"]
    assert labels["kubernetes.io/metadata.name"] == "kube-system"


def test_get_events_all_namespaces_lists_the_schedulers_assignments(lab, kc):
    got = kc("get", "events", "-A")
    out = got.stdout
    assert out, got.stderr
    header, _ = parse_table(out)
    assert header == ["NAMESPACE", "LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    rows = as_dicts(out)
    scheduled = {r["OBJECT"]: r for r in rows if r["REASON"] == "Scheduled"}
    for pod in names_of(kc, "-l", "app=web"):
        r = scheduled.get(f"pod/{pod}")
        assert r is not None, f"no Scheduled event for pod/{pod} in:\n{out}"
        ip = ipv4_of(lab.netns_of(f"default/{pod}"), "eth0").ip
        assert (r["NAMESPACE"], r["TYPE"]) == ("default", "Normal")
        assert r["MESSAGE"] == f"Successfully assigned default/{pod} to {node_of_ip(lab, ip)}"   # default-scheduler's


def test_describe_pod_names_its_node_and_address_and_lists_its_events(lab, kc):
    pod = sorted(names_of(kc, "-l", "app=web"))[0]
    ip = ipv4_of(lab.netns_of(f"default/{pod}"), "eth0").ip
    node = node_of_ip(lab, ip)
    node_ip = ipv4_of(lab.netns_of(node), "eth0").ip
    out = kc("describe", "pod", pod).stdout
    fields = dict(re.findall(r"^([A-Z][A-Za-z ]+):\s+(.*)$", out, re.M))
    assert fields["Name"] == pod and fields["Namespace"] == "default"
    assert fields["Node"] == f"{node}/{node_ip}"
    assert fields["IP"] == str(ip)
    assert fields["Status"] == "Running"
    assert re.search(rf"^Controlled By:\s+ReplicaSet/web-{SAFE}{{1,10}}$", out, re.M)
    events = out.split("\nEvents:", 1)[1]
    assert "<none>" not in events.splitlines()[0], f"no events listed:\n{out}"
    assert re.search(rf"Normal\s+Scheduled\s+\S+\s+default-scheduler\s+Successfully assigned default/{pod} to {node}$",
                     events, re.M), events


def test_get_raw_version_answers_the_servers_git_version(kc):
    version = json.loads(kc("get", "--raw", "/version").stdout)
    assert re.fullmatch(r"v1\.(\d+)\.\d+", version["gitVersion"])
    assert version["major"] == "1" and version["minor"] == version["gitVersion"].split(".")[1]
    assert set(version) >= {"gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler", "platform"}


# --- the same tables as netlab get ---------------------------------------------------------------

@pytest.mark.parametrize("args", [["nodes"], ["pods", "-A", "-o", "wide"], ["services", "-o", "wide"], ["endpoints"],
                                  ["deployments"]], ids=" ".join)
def test_kubectls_table_equals_netlab_gets_column_by_column(lab, kc, args):
    start = time.monotonic()
    ours = subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", lab.name, "get", *args],
                          capture_output=True, text=True, timeout=TIMEOUT)
    theirs = kc("get", *args)
    took = time.monotonic() - start
    assert ours.returncode == 0, ours.stderr
    (h1, rows1), (h2, rows2) = parse_table(ours.stdout), parse_table(theirs.stdout)
    assert h1 == h2
    assert len(rows1) == len(rows2), f"netlab:\n{ours.stdout}\nkubectl:\n{theirs.stdout}"
    age = h2.index("AGE")
    for a, b in zip(rows1, rows2):
        assert a[:age] + a[age + 1:] == b[:age] + b[age + 1:]
        assert abs(seconds(a[age]) - seconds(b[age])) <= int(took) + 1, (a[age], b[age])


# --- apply, delete, scale, watch ---------------------------------------------------------------------

ECHO = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: netexec
          image: registry.k8s.io/e2e-test-images/agnhost:2.53
          args: ["netexec", "--http-port=8080"]
          ports:
            - {{name: http, containerPort: 8080}}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
    - {{name: http, port: 80, targetPort: http}}
"""


def converged(lab, kc, name, replicas):
    """The Deployment's pods are in netlab's state, have network namespaces, and are its
    Service's endpoints (addresses read from the pods' eth0): what a scale must end in."""
    in_state = {p.name for p in lab.state().pods if p.owner == f"Deployment/{name}"}
    spaces = pod_netns_of(lab, "default", f"{name}-")
    if len(in_state) != replicas or len(spaces) != replicas:
        return False
    ips = {str(ipv4_of(n, "eth0").ip) for n in spaces}
    listed = kc("get", "endpoints", name, "-o", "jsonpath={.subsets[*].addresses[*].ip}").stdout.split()
    return set(listed) == ips and len(listed) == replicas


def test_apply_creates_then_leaves_unchanged_then_configures_and_the_pods_converge(lab, kc, tmp_path):
    manifest = tmp_path / "echo.yaml"
    manifest.write_text(ECHO.format(name="echo", replicas=2))
    try:
        assert kc("apply", "-f", str(manifest)).stdout.splitlines() == ["deployment.apps/echo created",
                                                                       "service/echo created"]
        wait_for(lambda: converged(lab, kc, "echo", 2), what="echo's 2 pods")
        assert kc("apply", "-f", str(manifest)).stdout.splitlines() == ["deployment.apps/echo unchanged",
                                                                       "service/echo unchanged"]
        manifest.write_text(ECHO.format(name="echo", replicas=3))
        assert kc("apply", "-f", str(manifest)).stdout.splitlines() == ["deployment.apps/echo configured",
                                                                       "service/echo unchanged"]
        wait_for(lambda: converged(lab, kc, "echo", 3), what="echo's 3 pods")
        last = yaml.safe_load(kc("get", "deployment", "echo", "-o", "yaml").stdout)["metadata"]["annotations"]
        assert yaml.safe_load(last["kubectl.kubernetes.io/last-applied-configuration"])["spec"]["replicas"] == 3
    finally:
        kc("delete", "-f", str(manifest), "--ignore-not-found", check=False)
    wait_for(lambda: not pod_netns_of(lab, "default", "echo-"), what="echo's pods to go")


def test_server_side_apply_creates_and_changes_and_delete_removes(lab, kc, tmp_path):
    manifest = tmp_path / "ssa.yaml"
    manifest.write_text(ECHO.format(name="ssa", replicas=1))
    try:
        assert kc("apply", "--server-side", "-f", str(manifest)).stdout.splitlines() == [
            "deployment.apps/ssa serverside-applied", "service/ssa serverside-applied"]
        wait_for(lambda: converged(lab, kc, "ssa", 1), what="ssa's pod")
        manifest.write_text(ECHO.format(name="ssa", replicas=2))
        assert kc("apply", "--server-side", "-f", str(manifest)).stdout.splitlines() == [
            "deployment.apps/ssa serverside-applied", "service/ssa serverside-applied"]
        wait_for(lambda: converged(lab, kc, "ssa", 2), what="ssa's 2 pods")
        out = kc("delete", "-f", str(manifest))
        assert out.stdout.splitlines() == ['deployment.apps "ssa" deleted', 'service "ssa" deleted']
        wait_for(lambda: not pod_netns_of(lab, "default", "ssa-"), what="ssa's pod namespaces to go")
        gone = kc("get", "deployment", "ssa", check=False)
        assert gone.returncode == 1
        assert gone.stderr.strip() == 'Error from server (NotFound): deployments.apps "ssa" not found'
        assert not [p for p in lab.state().pods if p.owner == "Deployment/ssa"]
    finally:
        kc("delete", "-f", str(manifest), "--ignore-not-found", check=False)


def test_server_side_apply_of_another_manager_conflicts_until_forced(lab, kc, tmp_path):
    manifest = tmp_path / "owned.yaml"
    manifest.write_text(ECHO.format(name="owned", replicas=1).split("---")[0])      # the Deployment alone
    try:
        kc("apply", "--server-side", "-f", str(manifest))
        manifest.write_text(ECHO.format(name="owned", replicas=2).split("---")[0])
        refused = kc("apply", "--server-side", "--field-manager", "other", "-f", str(manifest), check=False)
        assert refused.returncode == 1
        # Only the changed field conflicts (the same value is co-owned); an Apply manager is named
        # without "using <version>", which only Update managers get.
        assert refused.stderr.splitlines()[0] == 'error: Apply failed with 1 conflict: conflict with "kubectl": ' \
                                                 '.spec.replicas'
        assert kc("get", "deployment", "owned", "-o", "jsonpath={.spec.replicas}").stdout == "1"
        forced = kc("apply", "--server-side", "--field-manager", "other", "--force-conflicts", "-f", str(manifest))
        assert forced.stdout.strip() == "deployment.apps/owned serverside-applied"
        wait_for(lambda: len(pod_netns_of(lab, "default", "owned-")) == 2, what="owned's 2 pods")
        managed = yaml.safe_load(kc("get", "deployment", "owned", "-o", "yaml", "--show-managed-fields").stdout)
        entries = {(m["manager"], m["operation"]) for m in managed["metadata"].get("managedFields") or []}
        assert {("kubectl", "Apply"), ("other", "Apply")} <= entries, managed["metadata"]
    finally:
        kc("delete", "-f", str(manifest), "--ignore-not-found", check=False)
    wait_for(lambda: not pod_netns_of(lab, "default", "owned-"), what="owned's pods to go")


def test_server_side_apply_takes_over_what_client_side_apply_made(lab, kc, tmp_path):
    """kubectl's documented upgrade path: `apply --server-side` (manager "kubectl") on an object
    that `apply` made takes over its fields without conflicts (kube-apiserver's lastAppliedManager
    allows conflicts with what the last-applied-configuration annotation holds)."""
    manifest = tmp_path / "upgrade.yaml"
    manifest.write_text(ECHO.format(name="upgrade", replicas=1))
    try:
        kc("apply", "-f", str(manifest))
        manifest.write_text(ECHO.format(name="upgrade", replicas=2))
        out = kc("apply", "--server-side", "-f", str(manifest), check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["deployment.apps/upgrade serverside-applied",
                                           "service/upgrade serverside-applied"]
        wait_for(lambda: converged(lab, kc, "upgrade", 2), what="upgrade's 2 pods")
    finally:
        kc("delete", "-f", str(manifest), "--ignore-not-found", check=False)
    wait_for(lambda: not pod_netns_of(lab, "default", "upgrade-"), what="upgrade's pods to go")


def test_scale_writes_that_many_endpoints_into_the_services_chain_on_every_node(lab, kc):
    chain = svc_chain("default/web:http")
    try:
        assert kc("scale", "deployment", "web", "--replicas", "6").stdout.strip() == "deployment.apps/web scaled"
        for node in node_names(lab):
            wait_for(lambda: len(sep_jumps(lab, node, chain)) == 6, what=f"6 endpoints in {chain} on {node}")
        wait_for(lambda: converged(lab, kc, "web", 6), what="web's 6 pods")
        assert kc("scale", "deployment", "web", "--replicas", "2").stdout.strip() == "deployment.apps/web scaled"
        for node in node_names(lab):
            wait_for(lambda: len(sep_jumps(lab, node, chain)) == 2, what=f"2 endpoints in {chain} on {node}")
    finally:
        kc("scale", "deployment", "web", "--replicas", "4")
    for node in node_names(lab):
        wait_for(lambda: len(sep_jumps(lab, node, chain)) == 4, what=f"4 endpoints in {chain} on {node}")


def test_get_watch_started_before_a_scale_sees_the_new_pods_appear(lab, kc):
    before = names_of(kc, "-l", "app=web")
    watch = subprocess.Popen([KUBECTL, "--kubeconfig", str(kc.config), "--cache-dir", str(kc.cache), "get", "pods",
                              "-l", "app=web", "-w", "--no-headers"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in watch.stdout], daemon=True).start()
    seen = set()

    def read_until(done, timeout=30):
        deadline = time.monotonic() + timeout
        while not done():
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"kubectl get -w printed only {sorted(seen)}") from None
            if line.strip():
                seen.add(line.split()[0])
    try:
        read_until(lambda: seen >= before)             # the list is printed: the watch follows from its version
        kc("scale", "deployment", "web", "--replicas", str(len(before) + 2))
        read_until(lambda: len(seen - before) == 2)
        assert all(re.fullmatch(WEB_POD, n) for n in seen - before)
        assert seen - before == names_of(kc, "-l", "app=web") - before
    finally:
        watch.kill()
        watch.wait(timeout=10)
        watch.stdout.close()
        watch.stderr.close()
        kc("scale", "deployment", "web", "--replicas", "4")


# --- exec, logs ----------------------------------------------------------------------------------------

def test_exec_curl_answers_with_the_serving_pods_hostname(kc):
    out = kc("exec", "client", "--", "curl", "-s", "-m", "5", "http://web/hostname")
    assert out.stdout in names_of(kc, "-l", "app=web")


def test_exec_passes_the_commands_exit_code(kc):
    out = kc("exec", "client", "--", "sh", "-c", "exit 3", check=False)
    assert out.returncode == 3
    # client-go's own log line, when the server's "connected" message (an empty one on stdout, as
    # the kubelet's createWebSocketStreams sends) beats its stream setup on a loaded machine
    lines = [l for l in out.stderr.strip().splitlines() if not re.search(r"websocket\.go:\d+\] Unknown stream id", l)]
    assert lines == ["command terminated with exit code 3"]


def test_exec_passes_stdin_and_stdout(kc):
    out = subprocess.run([KUBECTL, "--kubeconfig", str(kc.config), "--cache-dir", str(kc.cache), "exec", "-i",
                          "client", "--", "tr", "a-z", "A-Z"], input="hello pods\n", capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert (out.returncode, out.stdout) == (0, "HELLO PODS\n"), out.stderr


def test_logs_print_what_the_containers_command_wrote(lab, kc, tmp_path):
    manifest = tmp_path / "talker.yaml"
    manifest.write_text("""\
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  containers:
    - name: main
      image: busybox:1.36
      command: ["sh", "-c", "echo hello-from-netlab; sleep 3600"]
""")
    try:
        assert kc("apply", "-f", str(manifest)).stdout.strip() == "pod/talker created"
        wait_for(lambda: kc("logs", "talker", check=False).stdout == "hello-from-netlab\n", what="talker's log line")
        assert kc("logs", "talker", "-c", "main").stdout == "hello-from-netlab\n"
    finally:
        kc("delete", "-f", str(manifest), "--ignore-not-found", "--wait=false", check=False)
    wait_for(lambda: not pod_netns_of(lab, "default", "talker"), what="talker to go")


# --- the kubeconfig ------------------------------------------------------------------------------------

def entries(doc, exclude):
    return {key: [e for e in doc.get(key) or [] if e["name"] != exclude] for key in ("clusters", "users", "contexts")}


def test_up_makes_its_context_current_in_the_kubeconfig_and_down_removes_exactly_it(lab, tmp_path):
    session = Path(os.environ["KUBECONFIG"])
    original = session.read_text()
    doc = yaml.safe_load(original)
    assert f"netlab-{lab.name}" in [c["name"] for c in doc["contexts"]]      # the module's lab, from its `up`
    other = {"clusters": [{"name": "elsewhere", "cluster": {"server": "https://192.0.2.1:6443"}}],
             "users": [{"name": "someone", "user": {"token": "not-a-secret"}}],
             "contexts": [{"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "someone"}}]}
    for key, more in other.items():
        doc[key] = (doc.get(key) or []) + more
    doc["current-context"] = "elsewhere"
    session.write_text(yaml.safe_dump(doc))
    before = yaml.safe_load(session.read_text())
    name = unique_name()
    netlab = lambda *a: subprocess.run([sys.executable, "-m", "netlab.cli", *a], capture_output=True,  # noqa: E731
                                       text=True, timeout=120)
    try:
        up = netlab("up", str(renamed("two-nodes.yaml", name, tmp_path)))
        assert up.returncode == 0, up.stderr
        after_up = yaml.safe_load(session.read_text())
        assert after_up["current-context"] == f"netlab-{name}"
        for key in ("clusters", "users", "contexts"):
            assert f"netlab-{name}" in [e["name"] for e in after_up[key]]
        assert entries(after_up, f"netlab-{name}") == entries(before, f"netlab-{name}")
        # kubectl with no --kubeconfig and no --context talks to the lab just made
        nodes = subprocess.run([KUBECTL, "--cache-dir", str(tmp_path / "cache"), "get", "nodes", "-o", "name"],
                               capture_output=True, text=True, timeout=TIMEOUT)
        assert nodes.stdout.split() == [f"node/{name}-control-plane", f"node/{name}-worker"], nodes.stderr
        down = netlab("down", name)
        assert down.returncode == 0, down.stderr
        after_down = yaml.safe_load(session.read_text())
        for key in ("clusters", "users", "contexts"):
            assert after_down.get(key) == before.get(key)
        assert after_down.get("current-context") in (None, "")     # kind unsets the context it removes
        assert f"netlab-{name}" not in session.read_text()
    finally:
        if name in all_labs():
            Lab.cleanup(name)
        session.write_text(original)
