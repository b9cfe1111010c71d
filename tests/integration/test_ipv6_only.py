"""An IPv6 lab (kind's `networking.ipFamily: ipv6`) in the kernel: pods, Services and the nodes'
InternalIPs are IPv6 alone. Pod to pod across nodes over flannel-v6.1 with no NAT, the VXLAN
packet on the LAN with an IPv6 outer header, the path's MTU with DF, SingleStack IPv6 Services
through kube-proxy's ip6tables (and its `ip6 kube-proxy` table in nftables mode), NodePorts
from outside over IPv6, CoreDNS's AAAA, NODATA, ip6.arpa and headless answers, a NetworkPolicy
with an IPv6 ipBlock, no IPv4 rule of any agent, and the probe suite in the one family."""

import json
import re
import subprocess
import sys

import pytest

from netlab import names
from netlab.observe import probes

from .conftest import lab_for_module, wait_for
from .test_dual_stack_api import kubectl_for
from .test_observe import vxlan_capture

# 1 control plane + 2 workers: a netexec pod pinned on each node, a Deployment of two behind a
# NodePort Service that asks nothing of families, a headless Service and an explicit
# SingleStack IPv6 one.
LAB = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: six
nodes:
  - role: control-plane
  - role: worker
  - role: worker
networking: {ipFamily: ipv6}
""" + "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, labels: {{app: {pod}, tier: pods}}}}
spec:
  nodeName: six-{node}
  tolerations: [{{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}}]
  containers:
    - name: netexec
      image: registry.k8s.io/e2e-test-images/agnhost:2.53
      args: ["netexec", "--http-port=8080", "--udp-port=8081"]
      ports: [{{containerPort: 8080}}, {{containerPort: 8081, protocol: UDP}}]
""" for pod, node in (("c", "control-plane"), ("a", "worker"), ("b", "worker2"))) + """---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {tier: pods}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: udp, port: 8081, protocol: UDP, targetPort: 8081}]
---
apiVersion: v1
kind: Service
metadata: {name: pods}
spec:
  clusterIP: None
  selector: {tier: pods}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: single6}
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  selector: {app: b}
  ports: [{port: 80, targetPort: 8080}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    path = tmp_path_factory.mktemp("six") / "six.yaml"
    path.write_text(LAB)
    with lab_for_module(path, tmp_path_factory) as lab:
        yield lab


@pytest.fixture
def kc(lab, tmp_path):
    return kubectl_for(lab, tmp_path)


def _in(netns, argv, timeout=30):
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=timeout)


def _pods(state):
    return {p.name: p for p in state.pods if p.namespace == "default"}


def _curl(netns, url, *extra):
    out = _in(netns, ["curl", "-g", "-s", "--max-time", "10", *extra, url])
    assert out.returncode == 0, f"curl {url}: {out.returncode} {out.stderr}"
    return out.stdout.strip()


def test_pods_have_ipv6_alone_and_nodes_keep_dockers_ipv4_off_the_cluster(lab):
    state = lab.state()
    for pod in _pods(state).values():
        assert pod.ip is None and pod.pod_ip == pod.ip6
        assert _in(pod.netns, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout == ""
        assert _in(pod.netns, ["ip", "-4", "route"]).stdout == ""
        six = _in(pod.netns, ["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"]).stdout
        assert f"inet6 {pod.ip6}/64 " in six
        assert " mtu 1430 " in _in(pod.netns, ["ip", "-o", "link", "show", "dev", "eth0"]).stdout
    node = state.node(f"{state.lab}-worker")
    assert _in(node.netns, ["ip", "-4", "-o", "addr", "show", "dev", "cni0"]).stdout == ""
    assert f"inet {node.ip}/16 " in _in(node.netns, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    links = _in(node.netns, ["ip", "-o", "link", "show"]).stdout
    assert "flannel.1:" not in links and re.search(r"flannel-v6\.1: .* mtu 1430 ", links)


def test_a_pod_reaches_pods_on_other_nodes_over_ipv6_and_is_seen_by_its_own_address(lab):
    pods = _pods(lab.state())
    client = pods["a"]
    for server in (pods["b"], pods["c"]):
        seen = _curl(client.netns, f"http://[{server.ip6}]:8080/clientip")
        assert seen.rsplit(":", 1)[0] == f"[{client.ip6}]"          # no NAT on the way


def _ping(netns, *args):
    ping = _in(netns, ["ping", "-c", "1", "-W", "5", *args])
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_the_lan_carries_the_pods_packet_in_vxlan_over_ipv6(lab):
    state = lab.state()
    pods = _pods(state)
    a, b = pods["a"], pods["b"]
    src, dst = state.node(a.node), state.node(b.node)
    port = names.lan_port(state.lab, src.name)
    text = vxlan_capture(state.lan_netns(), port, f"ip6 and udp dst port 8472 and src host {src.ip6}",
                         lambda: _ping(a.netns, "-6", b.ip6))
    assert re.search(rf"{re.escape(src.ip6)}\.\d+ > {re.escape(dst.ip6)}\.8472: .*VXLAN.*vni 1", text, re.S), text
    assert re.search(rf"{re.escape(a.ip6)} > {re.escape(b.ip6)}: .*ICMP6, echo request", text, re.S), text


def test_the_path_takes_1430_bytes_with_df_and_not_one_more(lab):
    """With no flannel.1, FLANNEL_MTU is flannel-v6.1's (1430), so the pod's own eth0 is the
    limit: 40 (IPv6) + 8 (ICMPv6) + 1382 fits, one more byte is refused in the pod."""
    pods = _pods(lab.state())
    a, b = pods["a"], pods["b"]
    ok = _in(a.netns, ["ping", "-6", "-M", "do", "-c", "1", "-W", "5", "-s", "1382", b.ip6])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    too_big = _in(a.netns, ["ping", "-6", "-M", "do", "-c", "1", "-W", "2", "-s", "1383", b.ip6])
    assert too_big.returncode != 0
    assert "1430" in too_big.stdout + too_big.stderr


def test_services_are_singlestack_ipv6_through_the_api(lab, kc):
    svcs = {s["metadata"]["name"]: s["spec"] for s in json.loads(kc("get", "svc", "-o", "json").stdout)["items"]}
    for name in ("web", "single6", "kubernetes"):
        spec = svcs[name]
        assert (spec["ipFamilyPolicy"], spec["ipFamilies"]) == ("SingleStack", ["IPv6"])
        assert spec["clusterIPs"] == [spec["clusterIP"]] and spec["clusterIP"].startswith("fd00:10:96::")
    assert svcs["kubernetes"]["clusterIP"] == "fd00:10:96::1"
    assert svcs["pods"]["clusterIPs"] == ["None"]
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dual"},
            "spec": {"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}}
    out = kc("create", "-f", "-", stdin=json.dumps(body), check=False)
    assert out.returncode == 1
    assert 'spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for ' \
           'dual-stack services' in out.stderr
    worker = lab.state().node(f"{lab.name}-worker")
    node = json.loads(kc("get", "node", worker.name, "-o", "json").stdout)
    assert [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"] == [worker.ip6]
    assert node["spec"]["podCIDRs"] == ["fd00:10:244:1::/64"]


def test_a_singlestack_ipv6_service_answers_on_its_clusterip(lab):
    state = lab.state()
    single = state.service("default", "single6")
    assert _curl(_pods(state)["a"].netns, f"http://[{single.cluster_ip}]/hostname") == "b"


def test_a_nodeport_answers_over_ipv6_from_outside_on_every_node(lab):
    state = lab.state()
    port = next(p.node_port for p in state.service("default", "web").ports if p.name == "http")
    for node in state.nodes:
        assert _curl(state.external_netns(), f"http://[{node.ip6}]:{port}/hostname") in {"a", "b", "c"}


def _dig(lab, *args):
    return _in(_pods(lab.state())["a"].netns, ["dig", "+time=3", "+tries=2", *args]).stdout


def test_coredns_answers_aaaa_nodata_ptr_and_headless_sets(lab):
    state = lab.state()
    web = state.service("default", "web")
    assert _dig(lab, "+short", "AAAA", "web.default.svc.cluster.local").split() == [web.cluster_ip]
    a = _dig(lab, "A", "web.default.svc.cluster.local")
    assert "status: NOERROR" in a and "ANSWER: 0," in a and "\tSOA\t" in a            # NODATA
    assert _dig(lab, "+short", "-x", web.cluster_ip).split() == ["web.default.svc.cluster.local."]
    pods = _pods(state)
    headless = _dig(lab, "+short", "AAAA", "pods.default.svc.cluster.local").split()
    assert sorted(headless) == sorted(p.ip6 for p in pods.values())
    assert _in(pods["a"].netns, ["cat", "/etc/resolv.conf"]).stdout.splitlines()[1] == "nameserver fd00:10:96::a"
    # a pod's address: one PTR per Service that has it as an endpoint (CoreDNS's reverse.go)
    dashed = pods["b"].ip6.replace(":", "-") + ("0" if pods["b"].ip6.endswith(":") else "")
    assert sorted(_dig(lab, "+short", "-x", pods["b"].ip6).split()) == sorted(
        f"{dashed}.{svc}.default.svc.cluster.local." for svc in ("pods", "single6", "web"))


def test_a_networkpolicy_with_an_ipv6_ipblock_is_enforced(lab, kc):
    pods = _pods(lab.state())
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "b-from-a"},
              "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"ipBlock": {"cidr": "fd00:10:244::/56",
                                                          "except": [pods["c"].ip6 + "/128"]}}]}]}}
    kc("apply", "-f", "-", stdin=json.dumps(policy))
    try:
        url = f"http://[{pods['b'].ip6}]:8080/hostname"
        wait_for(lambda: _in(pods["c"].netns, ["curl", "-g", "-s", "--max-time", "2", url]).returncode != 0,
                 what="c refused by the policy")
        assert _curl(pods["a"].netns, url) == "b"
        node = lab.state().node(pods["b"].node)
        sets = _in(node.netns, ["ipset", "list", "-n"]).stdout.split()
        assert sets and all(s.startswith("inet6:") for s in sets)
        rules = _in(node.netns, ["ip6tables-save", "-t", "filter"]).stdout
        assert re.search(r"-A KUBE-NWPLCY-\w+ .*--match-set inet6:KUBE-SRC-\w+ src", rules)
    finally:
        kc("delete", "networkpolicy", "b-from-a")
    wait_for(lambda: _in(pods["c"].netns, ["curl", "-g", "-s", "--max-time", "2", url]).returncode == 0,
             what="c allowed again")


def test_no_agent_writes_an_ipv4_rule_and_the_files_are_ipv6s(lab):
    state = lab.state()
    node = state.node(f"{state.lab}-worker2")
    four = _in(node.netns, ["iptables-save"]).stdout
    assert not re.search(r"^:(KUBE|FLANNEL)", four, re.M), four
    six = _in(node.netns, ["ip6tables-save"]).stdout
    for chain in ("KUBE-SERVICES", "KUBE-POSTROUTING", "FLANNEL-POSTRTG", "FLANNEL-FWD", "KUBE-ROUTER-FORWARD"):
        assert f":{chain} " in six
    assert "! -d ::1/128" in six                                       # no localhost NodePorts in IPv6
    assert _in(node.netns, ["sysctl", "-n", "net.ipv4.conf.all.route_localnet"]).stdout.strip() == "0"
    root = names.node_dir(state.lab, node.name)
    assert (root / "run" / "flannel" / "subnet.env").read_text() == (
        "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:2::1/64\n"
        "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n")
    records = root / "var" / "lib" / "cni" / "networks" / "cbr0"
    pod = _pods(state)["b"]
    assert (records / "last_reserved_ip.0").read_text() == pod.ip6
    assert not (records / "last_reserved_ip.1").exists()


def _changes_then_reconcile(lab, kc):
    """A Service created and deleted, an endpoint leaving and coming back: each converged by a
    partial sync of the IPv6 proxier (only the changed ports' chains); a reconcile then finds
    nothing to write, as after a full sync."""
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extra"},
            "spec": {"selector": {"app": "a"}, "ports": [{"port": 81, "targetPort": 8080}]}}
    kc("apply", "-f", "-", stdin=json.dumps(body))
    kc("label", "pod", "c", "tier-")
    kc("label", "pod", "c", "tier=pods")
    kc("delete", "service", "extra")
    r = subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", lab.name, "reconcile"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_partial_syncs_of_ip6tables_leave_what_a_full_sync_writes(lab, kc):
    assert _changes_then_reconcile(lab, kc) == "reconcile: nothing to do (0 netlink writes, 0 iptables writes)\n"


def test_the_probe_suite_passes_in_the_one_family(lab):
    checks = probes.suite(lab)
    failed = [(c.name, c.observed) for c in checks if c.ok is False]
    assert failed == []
    ran = [c for c in checks if c.ok]
    assert any(c.area == "overlay" and "vxlan" in c.name for c in ran)
    assert any(c.area == "services" and "from external" in c.name for c in ran)
    assert not any(c.name.endswith(("[IPv4]", "[IPv6]")) for c in checks)     # one family: no tags


# --- nftables mode ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nft_lab(lab, tmp_path_factory):
    """After the iptables lab's tests (`lab` first, so the two share the module's span)."""
    text = (LAB.replace("name: six\n", "name: sixn\n").replace("six-", "sixn-")
            .replace("networking: {ipFamily: ipv6}", "networking: {ipFamily: ipv6, kubeProxyMode: nftables}"))
    path = tmp_path_factory.mktemp("sixn") / "sixn.yaml"
    path.write_text(text)
    with lab_for_module(path, tmp_path_factory) as lab:
        yield lab


def test_nftables_mode_has_the_ip6_table_alone_and_services_answer(nft_lab):
    state = nft_lab.state()
    node = state.node(f"{state.lab}-worker")
    tables = _in(node.netns, ["nft", "list", "tables"]).stdout.splitlines()
    assert "table ip6 kube-proxy" in tables and "table ip kube-proxy" not in tables
    pods = _pods(state)
    web = state.service("default", "web")
    assert _curl(pods["a"].netns, f"http://[{web.cluster_ip}]/hostname") in {"a", "b", "c"}
    port = next(p.node_port for p in web.ports if p.name == "http")
    assert _curl(state.external_netns(), f"http://[{node.ip6}]:{port}/hostname") in {"a", "b", "c"}
    checks = probes.suite(nft_lab, ["services", "dns"])
    assert [(c.name, c.observed) for c in checks if c.ok is False] == []


def test_partial_syncs_of_the_ip6_table_leave_what_a_full_sync_writes(nft_lab, tmp_path):
    out = _changes_then_reconcile(nft_lab, kubectl_for(nft_lab, tmp_path))
    assert out == "reconcile: nothing to do (0 netlink writes, 0 iptables writes, 0 nftables transactions)\n"
