"""kube-proxy's two proxiers on a real dual-stack lab, in both modes: a PreferDualStack
Service answers a pod on both its ClusterIPs, its NodePort answers the external client over
IPv6 on a node's IPv6 address, and the IPv6 rules are in the kernel as kube-proxy lays them
out (ip6tables nat chains with bracketed DNAT targets, or the `ip6 kube-proxy` table)."""

import subprocess

import pytest

from netlab.kernel import nft

from .conftest import wait_for

LAB = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: dkp
nodes:
  - role: control-plane
  - role: worker
networking: {{ipFamily: dual, kubeProxyMode: {mode}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: netexec
          image: registry.k8s.io/e2e-test-images/agnhost:2.53
          args: ["netexec", "--http-port=8080"]
          ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, labels: {{app: client}}}}
spec:
  containers:
    - name: netexec
      image: registry.k8s.io/e2e-test-images/agnhost:2.53
      args: ["netexec", "--http-port=8080"]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  ipFamilyPolicy: PreferDualStack
  selector: {{app: web}}
  ports:
    - {{name: http, port: 80, targetPort: http, nodePort: 30080}}
"""


@pytest.fixture(params=["iptables", "nftables"])
def lab(request, make_lab, tmp_path):
    path = tmp_path / f"dkp-{request.param}.yaml"
    path.write_text(LAB.format(mode=request.param))
    return make_lab(path)


def _in(netns, *argv):
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=30)


def _curl(netns, url):
    out = _in(netns, "curl", "-g", "-s", "--max-time", "3", url)
    return out.stdout.strip() if out.returncode == 0 else None


def test_a_dual_stack_service_answers_on_both_families(lab):
    state = lab.state()
    svc = state.service("default", "web")
    assert svc.ip_families == ("IPv4", "IPv6") and len(svc.cluster_ips) == 2
    v4, v6 = svc.cluster_ip_of("IPv4"), svc.cluster_ip_of("IPv6")
    assert v6.startswith("fd00:10:96::")
    web = {p.name for p in state.pods if p.labels.get("app") == "web"}
    client = next(p for p in state.pods if p.name == "client")

    assert wait_for(lambda: _curl(client.netns, f"http://{v4}:80/hostname"), what="the IPv4 ClusterIP") in web
    assert wait_for(lambda: _curl(client.netns, f"http://[{v6}]:80/hostname"), what="the IPv6 ClusterIP") in web
    # The NodePort from outside the cluster, over IPv6, on each node's IPv6 address.
    for node in state.nodes:
        got = wait_for(lambda: _curl(state.external_netns(), f"http://[{node.ip6}]:30080/hostname"),
                       what=f"the NodePort on {node.ip6}")
        assert got in web

    # The IPv6 proxier's rules in the kernel, as kube-proxy writes them.
    node = state.nodes[0]
    endpoints = sorted(p.ip6 for p in state.pods if p.labels.get("app") == "web")
    if state.cluster.kube_proxy_mode == "iptables":
        saved = _in(node.netns, "ip6tables-save", "-t", "nat").stdout
        for ip in endpoints:
            assert f"-j DNAT --to-destination [{ip}]:8080" in saved
        assert ("! -d ::1/128 -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last "
                "rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS") in saved
        assert "route_localnet" not in saved
        filt = _in(node.netns, "ip6tables-save", "-t", "filter").stdout
        assert ":KUBE-FIREWALL - [0:0]" in filt and "block incoming localnet connections" not in filt
        assert nft.list_table(node.netns, "ip6", "kube-proxy") is None
    else:
        listed = nft.list_table(node.netns, "ip6", "kube-proxy")
        assert listed is not None and "type ipv6_addr" in listed
        for ip in endpoints:
            assert f"dnat to [{ip}]:8080" in listed
        assert node.ip6 in listed                        # nodeport-ips
        assert "KUBE-SERVICES" not in _in(node.netns, "ip6tables-save", "-t", "nat").stdout


    # A third replica: the IPv6 side follows (a full read-back of the IPv6 rules per converge,
    # beside the IPv4 side's partial sync); a full resync of the unchanged lab then writes no
    # kube-proxy rule of either family.
    lab.scale("default", "web", 3)
    state = lab.state()
    endpoints = sorted(p.ip6 for p in state.pods if p.labels.get("app") == "web")
    assert len(endpoints) == 3
    for node in state.nodes:
        if state.cluster.kube_proxy_mode == "iptables":
            now = _in(node.netns, "ip6tables-save", "-t", "nat").stdout
        else:
            now = nft.list_table(node.netns, "ip6", "kube-proxy")
        assert [ip for ip in endpoints if f"[{ip}]:8080" not in now] == []
    changes = lab.reconcile()
    assert changes.by_agent.get("kube-proxy", []) == []
    assert changes.nft_writes == 0
