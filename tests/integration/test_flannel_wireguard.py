"""flannel's wireguard backend in the kernel: flannel-wg and flannel-wg-v6 (Mode separate, a
dual-stack lab), served by the kernel's wireguard link or, on a kernel without the module, by
wireguard-go. A capture on the LAN during an HTTP exchange between pods on two nodes holds UDP
to 51820 and not one byte of the body (which a capture on flannel-wg inside the node does
hold); `wg show` lists every other node as a peer with its endpoint and a recent handshake; a
node that joins gets and gives keys, one that leaves is in no peer list; a killed wireguard-go
is started again by reconcile; the probe suite passes; switching to vxlan removes it all."""

import os
import signal
import stat
import subprocess
import time

import pytest
from scapy.all import UDP, rdpcap

from netlab import names
from netlab.cli import main as cli_main
from netlab.kernel import processes, wireguard
from netlab.node.flannel import wireguard as flannel_wg

from .conftest import lab_for_module, wait_for
from .test_dual_stack_api import kubectl_for
from .test_flannel_backends import CLUSTER, WORKLOAD, _node_annotations, _probe_passes, _routes
from .test_observe import wait_until_listening

WIREGUARD = CLUSTER.format(name="wg", family="dual") + """---
apiVersion: netlab.io/v1alpha1
kind: Lab
flannel: {backend: {Type: wireguard}}
""" + WORKLOAD
CONFIGMAP = """apiVersion: v1
kind: ConfigMap
metadata: {name: kube-flannel-cfg, namespace: kube-flannel}
data:
  net-conf.json: |
    {"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56",
     "Backend": {"Type": "%s"}}
"""


@pytest.fixture(scope="module")
def wg_lab(tmp_path_factory):
    had_socket_dir = wireguard.SOCKET_DIR.exists()
    path = tmp_path_factory.mktemp("wg") / "wg.yaml"
    path.write_text(WIREGUARD)
    with lab_for_module(path, tmp_path_factory) as lab:
        yield lab
        served = [r for name, r in lab.state().processes.items() if name.startswith("wireguard-go.")]
    assert not any(processes.alive(r) for r in served)             # ended by down, by their pids
    if not had_socket_dir:
        assert not wireguard.SOCKET_DIR.exists()                # made for the lab, gone with it


def _wg(lab, node, *args):
    """`netlab exec NODE -- wg ARGS`: the node's own /run/wireguard, as a person runs it."""
    out = lab.exec(node, ["wg", *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _peers(lab, node, device="flannel-wg"):
    """{public key: (endpoint, allowed IPs, latest handshake)} from `wg show DEVICE dump`."""
    rows = [line.split("\t") for line in _wg(lab, node, "show", device, "dump").splitlines()[1:]]
    return {r[0]: (r[2], r[3], int(r[4])) for r in rows}


def _web_pods(lab):
    return {p.node: p for p in lab.state().pods if p.owner == "Deployment/web"}


def _pcap(netns, iface, bpf, send, path):
    """The raw packets tcpdump writes (-w) on `iface` while `send()` runs."""
    cap = subprocess.Popen(["ip", "netns", "exec", netns, "tcpdump", "-nn", "-U", "-i", iface, "-w", str(path), bpf],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_listening(cap)
        send()
        time.sleep(0.3)
    finally:
        cap.send_signal(signal.SIGINT)
        cap.wait(timeout=10)
    return path.read_bytes()


def test_each_node_has_its_tunnels_its_key_and_one_route_per_network(wg_lab):
    state = wg_lab.state()
    node = state.node(f"{state.lab}-worker")
    assert state.wireguard in (wireguard.KERNEL, wireguard.USERSPACE)
    assert "10.244.0.0/16 dev flannel-wg scope link" in _routes(node.netns)
    assert "fd00:10:244::/56 dev flannel-wg-v6" in " ".join(_routes(node.netns, six=True))
    for dev, addr in (("flannel-wg", f"{node.pod_cidr.split('/')[0]}/32"),
                      ("flannel-wg-v6", f"{node.pod_cidr6.split('/')[0]}/128")):
        out = subprocess.run(["ip", "netns", "exec", node.netns, "ip", "-o", "addr", "show", "dev", dev],
                             capture_output=True, text=True).stdout
        assert addr in out
        link = subprocess.run(["ip", "netns", "exec", node.netns, "ip", "-d", "-o", "link", "show", dev],
                              capture_output=True, text=True).stdout
        assert " mtu 1420 " in link
        assert ("tun type tun" in link) == (state.wireguard == wireguard.USERSPACE)
    key = names.node_dir(state.lab, node.name) / "run" / "flannel" / "wgkey"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    public = subprocess.run(["wg", "pubkey"], input=key.read_text(), capture_output=True, text=True).stdout.strip()
    assert public == node.wg_public_key
    assert f"public key: {public}" in _wg(wg_lab, node.name, "show", "flannel-wg")
    ann = _node_annotations(wg_lab, node)
    assert ann["flannel.alpha.coreos.com/backend-data"] == f'{{"PublicKey":"{public}","Port":51820}}'
    assert ann["flannel.alpha.coreos.com/backend-v6-data"] == f'{{"PublicKey":"{public}","Port":51821}}'
    env = (names.node_dir(state.lab, node.name) / "run" / "flannel" / "subnet.env").read_text()
    assert "FLANNEL_MTU=1420\n" in env


def test_status_says_what_serves_the_devices(wg_lab, capsys):
    assert cli_main(["status"]) in (0, None)
    header, *rows = capsys.readouterr().out.splitlines()
    row = next(r.split() for r in rows if r.split()[0] == wg_lab.name)
    assert row[header.split().index("BACKEND"):][:2] == ["wireguard", f"({wg_lab.state().wireguard})"]


def test_the_lan_carries_udp_51820_and_no_byte_of_the_http_body(wg_lab, tmp_path):
    state = wg_lab.state()
    pods = _web_pods(wg_lab)
    a, b = pods[f"{state.lab}-worker"], pods[f"{state.lab}-worker2"]
    na, nb = state.node(a.node), state.node(b.node)
    token = f"netlab-secret-{os.urandom(6).hex()}"

    def exchange():
        with wg_lab.prober() as p:
            assert p.http(a.key, b.ip, 8080, f"/echo?msg={token}")["body"] == token

    lan = _pcap(state.lan_netns(), "br0", "udp", exchange, tmp_path / "lan.pcap")
    assert token.encode() not in lan
    udp = [p for p in rdpcap(str(tmp_path / "lan.pcap")) if p.haslayer(UDP)]
    between = [p for p in udp if {p["IP"].src, p["IP"].dst} == {na.ip, nb.ip}]
    assert between and all(p[UDP].dport == 51820 or p[UDP].sport == 51820 for p in between)
    assert {bytes(p[UDP].payload)[0] for p in between} >= {4}       # WireGuard transport data
    # the same exchange seen inside the tunnel, on flannel-wg: the body is there in clear
    inside = _pcap(na.netns, "flannel-wg", "tcp port 8080", exchange, tmp_path / "inside.pcap")
    assert token.encode() in inside


def test_wg_show_lists_every_other_node_with_its_endpoint_and_a_recent_handshake(wg_lab):
    state = wg_lab.state()
    with wg_lab.prober() as p:
        for node in state.nodes:
            for other in state.nodes:
                if other is not node:
                    assert p.ping(node.name, other.pod_cidr.split("/")[0])["ok"]
                    assert p.ping(node.name, other.pod_cidr6.split("/")[0])["ok"]
    for node in state.nodes:
        others = [n for n in state.nodes if n is not node]
        v4, v6 = _peers(wg_lab, node.name), _peers(wg_lab, node.name, "flannel-wg-v6")
        assert {k: v[:2] for k, v in v4.items()} == {n.wg_public_key: (f"{n.ip}:51820", n.pod_cidr) for n in others}
        assert {k: v[:2] for k, v in v6.items()} == {n.wg_public_key: (f"[{n.ip6}]:51821", n.pod_cidr6)
                                                     for n in others}
        assert all(time.time() - v[2] < 120 for v in [*v4.values(), *v6.values()])
        assert "latest handshake:" in _wg(wg_lab, node.name, "show")


def test_the_probe_suite_passes_with_wireguard_on_the_lan_at_1420(wg_lab):
    ran = _probe_passes(wg_lab)
    overlay = [c.name for c in ran if c.area == "overlay"]
    assert sum(n.startswith("wireguard encryption") for n in overlay) == 2          # IPv4's and IPv6's tunnel
    assert sum(n.startswith("mtu 1420 DF") for n in overlay) == 2
    assert {c.area for c in ran} >= {"pod-matrix", "services", "dns", "overlay", "node-to-pod"}


def test_a_node_that_joins_gets_and_gives_keys_and_one_that_leaves_is_no_peer(wg_lab):
    wg_lab.add_node("worker3")
    state = wg_lab.state()
    new = state.node(f"{state.lab}-worker3")
    assert new.wg_public_key
    assert set(_peers(wg_lab, new.name)) == {n.wg_public_key for n in state.nodes if n is not new}
    for node in state.nodes:
        if node is not new:
            assert _peers(wg_lab, node.name)[new.wg_public_key][:2] == (f"{new.ip}:51820", new.pod_cidr)
    pod = _web_pods(wg_lab)[f"{state.lab}-worker"]
    with wg_lab.prober() as p:
        assert p.http(new.name, pod.ip, 8080, "/hostname")["body"] == pod.name
    wg_lab.remove_node("worker3")
    for node in wg_lab.state().nodes:
        assert new.wg_public_key not in _peers(wg_lab, node.name)
        assert new.wg_public_key not in _peers(wg_lab, node.name, "flannel-wg-v6")
    assert not any(name.endswith(f".{new.name}") for name in wg_lab.state().processes)


def test_reconcile_starts_a_killed_wireguard_go_again(wg_lab):
    state = wg_lab.state()
    if state.wireguard != wireguard.USERSPACE:
        pytest.skip("the kernel serves the devices: no wireguard-go runs")
    node = state.node(f"{state.lab}-worker2")
    rec = state.processes[f"wireguard-go.flannel-wg.{node.name}"]
    os.kill(rec["pid"], signal.SIGKILL)
    wait_for(lambda: not processes.alive(rec), what="wireguard-go's end")
    wg_lab.reconcile()
    assert processes.alive(wg_lab.state().processes[f"wireguard-go.flannel-wg.{node.name}"])
    assert "10.244.0.0/16 dev flannel-wg scope link" in _routes(node.netns)
    pod = _web_pods(wg_lab)[f"{state.lab}-worker"]
    with wg_lab.prober() as p:
        assert p.http(node.name, pod.ip, 8080, "/hostname")["body"] == pod.name
    assert len(_peers(wg_lab, node.name)) == len(state.nodes) - 1


def test_switching_to_vxlan_removes_the_tunnels_and_their_processes(wg_lab, tmp_path):
    (tmp_path / "vxlan.yaml").write_text(CONFIGMAP % "vxlan")
    wg_lab.apply([tmp_path / "vxlan.yaml"])
    state = wg_lab.state()
    assert state.wireguard == "" and not any(n.startswith("wireguard-go.") for n in state.processes)
    for node in state.nodes:
        links = subprocess.run(["ip", "netns", "exec", node.netns, "ip", "-o", "link"], capture_output=True,
                               text=True).stdout
        assert "flannel-wg" not in links and "flannel.1" in links
    pods = _web_pods(wg_lab)
    with wg_lab.prober() as p:
        b = pods[f"{state.lab}-worker2"]
        assert p.http(pods[f"{state.lab}-worker"].key, b.ip, 8080, "/hostname")["body"] == b.name
    # back through the API, as `kubectl apply` of kube-flannel-cfg (the same controller)
    (tmp_path / "wireguard.yaml").write_text(CONFIGMAP % "wireguard")
    kubectl = kubectl_for(wg_lab, tmp_path)
    assert "configured" in kubectl("apply", "-f", str(tmp_path / "wireguard.yaml")).stdout
    state = wg_lab.state()
    assert state.cluster.flannel_backend == "wireguard"
    (tmp_path / "ipv6.yaml").write_text(CONFIGMAP % 'wireguard", "Mode": "ipv6')
    bad = kubectl("apply", "-f", str(tmp_path / "ipv6.yaml"), check=False)
    assert bad.returncode == 1 and 'The ConfigMap "kube-flannel-cfg" is invalid: data.net-conf.json.Backend.Mode' \
        in bad.stderr
    assert wg_lab.state().cluster == state.cluster                  # a refused update changes nothing
    assert len(_peers(wg_lab, state.nodes[0].name)) == len(state.nodes) - 1
    assert all(n.wg_public_key for n in state.nodes)
    assert flannel_wg.DEVICE in subprocess.run(["ip", "netns", "exec", state.nodes[0].netns, "ip", "-o", "link"],
                                               capture_output=True, text=True).stdout
