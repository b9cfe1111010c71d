"""flannel's IPv6 overlay in a dual-stack lab (EnableIPv6): flannel-v6.1 and its per-node
entries in the kernel, its ip6tables chains, subnet.env and the Node annotations; pod to pod
across nodes over IPv6 with no NAT; the VXLAN packet on the LAN with an IPv6 outer header; and
the IPv6 path's MTU with DF (1430: the kernel's clamp of a vxlan device over IPv6)."""

import json
import re
import subprocess

import pytest

from netlab import lab as lab_module
from netlab import names, plan
from netlab.kernel import netns as ns
from netlab.kernel.iptables_restore import RestoreApplier
from netlab.kernel.netlink import apply_all

from .conftest import lab_for_module
from .test_observe import vxlan_capture

# 1 control plane + 2 workers, one netexec pod pinned on each node.
LAB = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: dsov
nodes:
  - role: control-plane
  - role: worker
  - role: worker
networking: {ipFamily: dual}
""" + "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, labels: {{app: {pod}}}}}
spec:
  nodeName: dsov-{node}
  tolerations: [{{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}}]
  containers:
    - name: netexec
      image: registry.k8s.io/e2e-test-images/agnhost:2.53
      args: ["netexec", "--http-port=8080", "--udp-port=8081"]
      ports: [{{containerPort: 8080}}, {{containerPort: 8081, protocol: UDP}}]
""" for pod, node in (("c", "control-plane"), ("a", "worker"), ("b", "worker2")))

MASQ = '-m comment --comment "flanneld masq"'
FWD = '-m comment --comment "flanneld forward"'


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    path = tmp_path_factory.mktemp("dsov") / "dsov.yaml"
    path.write_text(LAB)
    with lab_for_module(path, tmp_path_factory) as lab:
        yield lab


def _in(netns, argv, timeout=30):
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=timeout)


def _pods(state):
    return {p.name: p for p in state.pods if p.namespace == "default"}


def _mac(netns, dev):
    return re.search(r"link/ether (\S+)", _in(netns, ["ip", "link", "show", dev]).stdout).group(1)


def test_flannel_v6_1_is_laid_out_as_flannel_makes_it(lab):
    state = lab.state()
    for node in state.nodes:
        d = _in(node.netns, ["ip", "-d", "link", "show", "flannel-v6.1"]).stdout
        # created with MTU - 50, held by the kernel at MTU - 70 over an IPv6 underlay
        for fact in ("mtu 1430 ", "vxlan id 1 ", f"local {node.ip6} ", "dev eth0 ", "dstport 8472 ", "nolearning "):
            assert fact in d, (fact, d)
        assert _mac(node.netns, "flannel-v6.1") != _mac(node.netns, "flannel.1")     # a MAC per device
        addrs = _in(node.netns, ["ip", "-6", "-o", "addr", "show", "dev", "flannel-v6.1", "scope", "global"]).stdout
        assert re.findall(r"inet6 (\S+)", addrs) == [node.pod_cidr6.replace("::/64", "::/128")]
        assert ns.read_sysctl(node.netns, "net/ipv6/conf/flannel-v6.1/accept_ra") == "0"
        assert "mtu 1450 " in _in(node.netns, ["ip", "link", "show", "flannel.1"]).stdout    # IPv4's as it was


def test_every_node_has_a_neighbour_fdb_entry_and_onlink_route_per_remote_node(lab):
    state = lab.state()
    for node in state.nodes:
        fdb = _in(node.netns, ["bridge", "fdb", "show", "dev", "flannel-v6.1"]).stdout
        neigh = _in(node.netns, ["ip", "-6", "neigh", "show", "dev", "flannel-v6.1"]).stdout
        routes = _in(node.netns, ["ip", "-6", "route", "show", "dev", "flannel-v6.1"]).stdout
        others = [n for n in state.nodes if n.name != node.name]
        for other in others:
            vtep, mac = other.pod_cidr6.split("/")[0], _mac(other.netns, "flannel-v6.1")   # the peer's own device
            assert f"{mac} dst {other.ip6} self permanent" in fdb
            assert f"{vtep} lladdr {mac} PERMANENT" in neigh
            assert re.search(rf"^{re.escape(other.pod_cidr6)} via {re.escape(vtep)} .*onlink", routes, re.M), routes
        assert len(fdb.strip().splitlines()) == len(others)


def test_ip6tables_hold_flannels_ipv6_masquerade_and_forward_chains(lab):
    state = lab.state()
    node = state.node("%s-worker" % state.lab)
    net, mine = "fd00:10:244::/56", node.pod_cidr6
    nat = _in(node.netns, ["ip6tables-save", "-t", "nat"]).stdout.splitlines()
    assert [l for l in nat if "FLANNEL-POSTRTG" in l and l.startswith("-A")] == [
        f"-A POSTROUTING {MASQ} -j FLANNEL-POSTRTG",
        f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {mine} -d {net} {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {net} -d {mine} {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s {net} -d {mine} {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {net} ! -d ff00::/8 {MASQ} -j MASQUERADE --random-fully",
        f"-A FLANNEL-POSTRTG ! -s {net} -d {net} {MASQ} -j MASQUERADE --random-fully",
    ]
    flt = _in(node.netns, ["ip6tables-save", "-t", "filter"]).stdout.splitlines()
    assert [l for l in flt if "FLANNEL-FWD" in l and l.startswith("-A")] == [
        f"-A FORWARD {FWD} -j FLANNEL-FWD",
        f"-A FLANNEL-FWD -s {net} {FWD} -j ACCEPT",
        f"-A FLANNEL-FWD -d {net} {FWD} -j ACCEPT",
    ]
    # and IPv4's chains still say IPv4's network
    assert f"-A FLANNEL-FWD -s 10.244.0.0/16 {FWD} -j ACCEPT" in _in(node.netns, ["iptables-save", "-t", "filter"]).stdout


def test_subnet_env_and_node_annotations_carry_the_ipv6_side(lab):
    state = lab.state()
    node = state.node("%s-worker2" % state.lab)
    env = (names.node_dir(state.lab, node.name) / "run" / "flannel" / "subnet.env").read_text()
    assert env == ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.2.1/24\n"
                   "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:2::1/64\n"
                   "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    obj = next(o for o in lab_module.objects(state, "nodes") if o["metadata"]["name"] == node.name)
    ann = obj["metadata"]["annotations"]
    assert json.loads(ann["flannel.alpha.coreos.com/backend-v6-data"]) == {
        "VNI": 1, "VtepMAC": _mac(node.netns, "flannel-v6.1")}
    assert ann["flannel.alpha.coreos.com/public-ipv6"] == node.ip6


def test_a_pod_reaches_pods_on_other_nodes_over_ipv6_and_is_seen_by_its_own_address(lab):
    pods = _pods(lab.state())
    client = pods["a"]
    for server in (pods["b"], pods["c"]):
        out = _in(client.netns, ["curl", "-g", "-s", "--max-time", "10", f"http://[{server.ip6}]:8080/clientip"])
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().rsplit(":", 1)[0] == f"[{client.ip6}]"           # no NAT on the way
        out = _in(client.netns, ["curl", "-s", "--max-time", "10", f"http://{server.ip}:8080/clientip"])
        assert out.stdout.strip().rsplit(":", 1)[0] == client.ip                    # IPv4 as before


def _ping6(a, b):
    ping = _in(a.netns, ["ping", "-6", "-c", "1", "-W", "5", b.ip6])
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_the_lan_carries_the_pods_ipv6_packet_in_vxlan_over_ipv6(lab):
    state = lab.state()
    pods = _pods(state)
    a, b = pods["a"], pods["b"]
    src, dst = state.node(a.node), state.node(b.node)
    port = names.lan_port(state.lab, src.name)
    text = vxlan_capture(state.lan_netns(), port, f"ip6 and udp dst port 8472 and src host {src.ip6}",
                         lambda: _ping6(a, b))
    # outer: IPv6 between the nodes' LAN addresses, UDP to 8472, VNI 1; inner: the pods' IPv6
    assert re.search(rf"{re.escape(src.ip6)}\.\d+ > {re.escape(dst.ip6)}\.8472: .*VXLAN.*vni 1", text, re.S), text
    assert re.search(rf"{re.escape(a.ip6)} > {re.escape(b.ip6)}: .*ICMP6, echo request", text, re.S), text


def test_the_ipv6_path_takes_1430_bytes_with_df_and_not_one_more(lab):
    pods = _pods(lab.state())
    a, b = pods["a"], pods["b"]
    # 1430 = 40 (IPv6) + 8 (ICMPv6) + 1382: the overlay's limit; the pod's eth0 (1450) takes
    # 1431, so the node answers Packet Too Big with flannel-v6.1's MTU.
    ok = _in(a.netns, ["ping", "-6", "-M", "do", "-c", "1", "-W", "5", "-s", "1382", b.ip6])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    too_big = _in(a.netns, ["ping", "-6", "-M", "do", "-c", "1", "-W", "2", "-s", "1383", b.ip6])
    assert too_big.returncode != 0
    assert "mtu=1430" in too_big.stdout + too_big.stderr or "mtu = 1430" in too_big.stdout + too_big.stderr, \
        too_big.stdout + too_big.stderr


def test_a_second_apply_changes_nothing_on_the_ipv6_side(lab):
    """flannel-v6.1's MTU is planned as the kernel holds it, and its IPv6 entries and chains
    are read back: applying the same plans again writes nothing."""
    plans = plan.lab_plans(lab.state())
    applier = apply_all(plans)
    assert applier.writes == 0, applier.log
    ip6 = RestoreApplier("ip6tables-restore", "ip6tables-save")
    for p in plans:
        if p.ip6tables:
            ip6.apply(p.netns, p.ip6tables)
    assert ip6.writes == 0, ip6.log
