"""flannel's wireguard backend planned against its code (pkg/backend/wireguard): flannel-wg and,
in Mode separate with IPv6, flannel-wg-v6 at MTU - 80, the node subnet's network address as /32
(/128), one `scope link` route for the whole cluster network, one peer per other node with its
public key, `<public-ip>:<Port>` and its subnet as AllowedIPs; backend-data with the public key
and port; the private key in /run/flannel/wgkey, 0400."""

import base64
import json
import stat

import pytest

from netlab.api import netconf, spec
from netlab.controllers import cluster
from netlab.kernel import wireguard as kernel_wg
from netlab.node import files
from netlab.node.flannel import flanneld, wireguard
from netlab.values.desired import Addr, Route, WgPeer
from tests.unit.test_flannel_backends import CLUSTER, DUAL, configmap, lab, lab_doc, refused

KEYS = ["A" * 43 + "=", "B" * 43 + "=", "C" * 43 + "="]


def keyed(**fields):
    state = lab(flannel_backend="wireguard", **fields)
    for node, key in zip(state.nodes, KEYS):
        node.wg_public_key = key
    return state


def test_separate_tunnels_per_family_with_a_peer_per_node():
    state = keyed(**DUAL)
    a, node, b = state.nodes
    p = flanneld.node_plan(state, node)
    assert [(link.ifname, link.kind, link.mtu) for link in p.links] == [("flannel-wg", "wireguard", 1420),
                                                                        ("flannel-wg-v6", "wireguard", 1420)]
    v4, v6 = (link.wireguard for link in p.links)
    assert (v4.listen_port, v6.listen_port) == (51820, 51821)
    assert v4.peers == (WgPeer(KEYS[0], f"{a.ip}:51820", (a.pod_cidr,)), WgPeer(KEYS[2], f"{b.ip}:51820", (b.pod_cidr,)))
    assert v6.peers == (WgPeer(KEYS[0], f"[{a.ip6}]:51821", (a.pod_cidr6,)),
                        WgPeer(KEYS[2], f"[{b.ip6}]:51821", (b.pod_cidr6,)))
    assert v4.private_key_file == v6.private_key_file == wireguard.key_file("t", node.name)
    assert v4.private_key_file.endswith(f"/t/nodes/{node.name}/run/flannel/wgkey")
    assert p.addrs == (Addr("flannel-wg", "10.244.1.0/32"), Addr("flannel-wg-v6", "fd00:10:244:1::/128"))
    assert p.routes == (Route("10.244.0.0/16", dev="flannel-wg"), Route("fd00:10:244::/56", dev="flannel-wg-v6"))
    assert [str(r) for r in p.routes] == ["10.244.0.0/16 dev flannel-wg scope link",
                                          "fd00:10:244::/56 dev flannel-wg-v6"]
    assert p.neighs == () and p.fdb == ()
    assert set(p.iptables) == set(p.ip6tables) == {"nat", "filter"}         # flanneld's ip-masq, any backend


def test_one_tunnel_for_both_families_reaches_the_ipv4_endpoints():
    state = keyed(wg_mode="auto", **DUAL)
    a, node, _ = state.nodes
    p = flanneld.node_plan(state, node)
    link, = p.links
    assert link.ifname == "flannel-wg" and link.wireguard.listen_port == 51820
    assert link.wireguard.peers[0] == WgPeer(KEYS[0], f"{a.ip}:51820", (a.pod_cidr, a.pod_cidr6))
    assert p.addrs == (Addr("flannel-wg", "10.244.1.0/32"), Addr("flannel-wg", "fd00:10:244:1::/128"))
    assert p.routes == (Route("10.244.0.0/16", dev="flannel-wg"), Route("fd00:10:244::/56", dev="flannel-wg"))
    assert flanneld.device(state.cluster) == flanneld.device6(state.cluster) == "flannel-wg"


def test_an_ipv6_lab_has_flannel_wg_v6_alone(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text(CLUSTER + "nodes: [{role: control-plane}, {role: worker}]\nnetworking: {ipFamily: ipv6}\n"
                 + lab_doc("{Type: wireguard}"))
    state = cluster.new_state(spec.load(f))
    for node, key in zip(state.nodes, KEYS):
        node.wg_public_key = key
    p = flanneld.node_plan(state, state.nodes[1])
    assert p.links[0].wireguard.peers == (WgPeer(KEYS[0], f"[{state.nodes[0].ip6}]:51821",
                                                 (state.nodes[0].pod_cidr6,)),)
    assert [link.ifname for link in p.links] == ["flannel-wg-v6"]
    assert p.routes == (Route("fd00:10:244::/56", dev="flannel-wg-v6"),)


def test_mtu_keepalive_and_psk_reach_the_devices_and_subnet_env():
    psk = base64.b64encode(bytes(range(32))).decode()
    state = keyed(backend_mtu=1400, wg_keepalive=25, wg_psk=psk)
    node = state.nodes[1]
    link, = flanneld.node_plan(state, node).links
    assert link.mtu == 1320
    assert {(peer.keepalive, peer.preshared_key) for peer in link.wireguard.peers} == {(25, psk)}
    assert "FLANNEL_MTU=1320\n" in flanneld.subnet_env(state.cluster, node)
    assert "FLANNEL_MTU=1420\n" in flanneld.subnet_env(keyed().cluster, node)
    assert json.loads(netconf.net_conf(state.cluster))["Backend"] == {
        "Type": "wireguard", "PSK": psk, "PersistentKeepaliveInterval": 25, "MTU": 1400}


def test_a_node_with_no_key_yet_is_no_peer():
    state = keyed()
    state.nodes[2].wg_public_key = ""
    link, = flanneld.node_plan(state, state.nodes[1]).links
    assert [peer.public_key for peer in link.wireguard.peers] == [KEYS[0]]


def test_the_node_annotations_carry_the_public_key_and_ports():
    state = keyed(**DUAL)
    node = state.nodes[1]
    ann = flanneld.annotations(node, state.cluster)
    assert ann["flannel.alpha.coreos.com/backend-type"] == "wireguard"
    assert ann["flannel.alpha.coreos.com/backend-data"] == f'{{"PublicKey":"{KEYS[1]}","Port":51820}}'
    assert ann["flannel.alpha.coreos.com/backend-v6-data"] == f'{{"PublicKey":"{KEYS[1]}","Port":51821}}'
    assert ann["flannel.alpha.coreos.com/public-ip"] == node.ip


def test_the_private_key_file_is_made_once_root_only_and_gives_the_public_key(tmp_path, monkeypatch):
    monkeypatch.setattr(files.names, "STATE_ROOT", tmp_path)
    public, made = files.wireguard_key("t", "t-worker")
    path = tmp_path / "t" / "nodes" / "t-worker" / "run" / "flannel" / "wgkey"
    assert made and stat.S_IMODE(path.stat().st_mode) == 0o400
    assert len(base64.b64decode(path.read_text(), validate=True)) == 32 and "\n" not in path.read_text()
    assert files.wireguard_key("t", "t-worker") == (public, False)
    # RFC 7748 section 6.1: Alice's private key gives her public key (X25519 with the base point 9)
    path.chmod(0o600)
    path.write_text(base64.b64encode(bytes.fromhex(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")).decode())
    assert base64.b64decode(files.wireguard_key("t", "t-worker")[0]).hex() == \
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"


def test_wg_is_told_only_what_differs_and_in_its_file_format():
    peer = (KEYS[0], ("", "172.18.0.2:51820", frozenset({"10.244.0.0/24"}), 0))
    want = {"private_key": KEYS[2], "listen_port": 51820, "peers": dict([peer])}
    assert kernel_wg.differences(want, want) == []
    have = {"private_key": "", "listen_port": 0, "peers": {KEYS[1]: ("", "", frozenset(), 0)}}
    assert kernel_wg.differences(have, want) == [
        "private key", "listen-port 51820", f"peer {KEYS[1]} remove",
        f"peer {KEYS[0]} endpoint 172.18.0.2:51820 allowed-ips 10.244.0.0/24"]
    assert kernel_wg.conf(want) == (f"[Interface]\nPrivateKey = {KEYS[2]}\nListenPort = 51820\n\n"
                                    f"[Peer]\nPublicKey = {KEYS[0]}\nEndpoint = 172.18.0.2:51820\n"
                                    f"AllowedIPs = 10.244.0.0/24\n")


@pytest.mark.parametrize("backend, message", [
    ("{Type: wireguard, Mode: ipv6}", "Lab: flannel.backend.Mode: ipv6: flanneld's one tunnel listens on ListenPort "
     "but gives its peers ListenPortV6 as its port (backend-v6-data); netlab builds Mode separate, auto and ipv4"),
    ("{Type: wireguard, Mode: tunnel}", "Lab: flannel.backend.Mode: 'tunnel' must be one of separate, auto, ipv4, "
     "ipv6"),
    ("{Type: wireguard, PersistentKeepaliveInterval: 25s}", "Lab: flannel.backend.PersistentKeepaliveInterval: "
     "'25s': must be a number of seconds between 0 and 65535 (flanneld decodes an integer; wg's "
     "persistent-keepalive)"),
    ("{Type: wireguard, PSK: abc}", "Lab: flannel.backend.PSK: must be a WireGuard key: 32 bytes in base64, as "
     "`wg genpsk` prints one"),
    ("{Type: wireguard, VNI: 1}", "Lab: flannel.backend.VNI: unknown field, not in flannel's wireguard backend "
     "(known here: ListenPort, ListenPortV6, MTU, Mode, PSK, PersistentKeepaliveInterval, Type)"),
])
def test_a_wrong_wireguard_backend_names_its_field(tmp_path, backend, message):
    assert refused(tmp_path, CLUSTER + lab_doc(backend)) == message


def test_one_tunnel_is_refused_in_an_ipv6_lab(tmp_path):
    text = (CLUSTER + "networking: {ipFamily: ipv6}\n"
            + configmap('{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", '
                        '"Backend": {"Type": "wireguard", "Mode": "auto"}}'))
    assert refused(tmp_path, text) == (
        "ConfigMap kube-flannel/kube-flannel-cfg: data.net-conf.json.Backend.Mode: auto: one tunnel reaches its "
        "peers at their IPv4 addresses, which an IPv6 lab's nodes do not publish "
        "(flannel.alpha.coreos.com/public-ip); use Mode separate")


def test_a_lan_capture_takes_the_backends_own_packets_by_default():
    from netlab import cli
    args = cli.parse(["capture", "lan", "-c", "4"])
    base = ["tcpdump", "-n", "-l", "-i", "br0", "-c", "4"]
    assert cli.capture_argv(True, args, keyed().cluster) == [*base, "udp", "port", "51820", "or", "udp", "port",
                                                             "51821"]
    assert cli.capture_argv(True, args, lab(vxlan_port=4789).cluster) == [*base, "-T", "vxlan", "udp", "port", "4789"]
    assert cli.capture_argv(True, args, lab(flannel_backend="host-gw").cluster) == base
    assert cli.capture_argv(True, args) == [*base, "-T", "vxlan", "udp", "port", "8472"]
