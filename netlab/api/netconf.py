"""flannel's net-conf.json (ConfigMap kube-flannel/kube-flannel-cfg), as flanneld reads it:
pkg/subnet/config.go's ParseConfig for the network, each backend's RegisterNetwork for its
`Backend` keys (Documentation/backends.md). A lab takes it from the Lab document's
`flannel.backend` (the Backend object alone) or from the ConfigMap of kube-flannel.yml pasted
as is, whose `Network` and IPv6 keys must then be the cluster's.

flanneld decodes the Backend with json.Unmarshal, which drops keys it does not know; netlab
refuses them instead (a misspelt DirectRouting would silently leave VXLAN everywhere)."""

import base64
import binascii
import json

BACKEND_KEYS = {
    "vxlan": ("Type", "VNI", "Port", "GBP", "Learning", "DirectRouting", "MTU"),
    "host-gw": ("Type",),
    "wireguard": ("Type", "ListenPort", "ListenPortV6", "PSK", "PersistentKeepaliveInterval", "Mode", "MTU"),
}
OTHER_BACKENDS = ("udp", "ipip", "ipsec", "alloc", "extension", "gce", "aws-vpc", "ali-vpc", "tencent-vpc")
WIREGUARD_MODES = ("separate", "auto", "ipv4", "ipv6")
BUILT_MODES = ("separate", "auto", "ipv4")
NETCONF_KEYS = ("Network", "IPv6Network", "EnableIPv4", "EnableIPv6", "EnableNFTables", "SubnetLen", "SubnetMin",
                "SubnetMax", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "Backend")
CONFIGMAP = ("kube-flannel", "kube-flannel-cfg")        # (namespace, name) in kube-flannel.yml
OVERHEAD = {"vxlan": 50, "host-gw": 0, "wireguard": 80}   # bytes each backend adds to a packet (IPv4 outer)


def is_configmap(doc):
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    return doc.get("kind") == "ConfigMap" and meta.get("name") == CONFIGMAP[1]


def backend(at, cluster, refuse_unknown):
    """The ClusterConfig fields of a Backend object (`at` an _At on it) for `cluster`'s network:
    type and options, with flannel's defaults (VNI 1, Port 0 for the kernel's 8472; WireGuard's
    ports 51820/51821, Mode separate, no keepalive, no PSK; MTU 0: the uplink's)."""
    underlay_mtu = cluster.underlay_mtu
    b = at.mapping(required=True)
    kind = at.child("Type").string(required=True)
    if kind in OTHER_BACKENDS:
        raise at.child("Type").error(f"{kind!r}: netlab builds flannel's vxlan, host-gw and wireguard backends")
    if kind not in BACKEND_KEYS:
        raise at.child("Type").error(f"{kind!r} is not a flannel backend (netlab builds vxlan, host-gw, wireguard)")
    refuse_unknown(at, b, set(BACKEND_KEYS[kind]), f"flannel's {kind} backend")
    out = {"flannel_backend": kind}
    if kind == "vxlan":
        for key in ("GBP", "Learning"):
            if _boolean(at.child(key)):
                raise at.child(key).error(f"true: netlab's flannel.1 runs without {key} (flannel's default)")
        out.update(vxlan_vni=at.child("VNI").integer(1, lo=1, hi=2 ** 24 - 1),
                   vxlan_port=at.child("Port").integer(0, lo=0, hi=65535),
                   direct_routing=_boolean(at.child("DirectRouting")))
    if kind == "wireguard":
        out.update(wg_listen_port=at.child("ListenPort").integer(51820, lo=1, hi=65535),
                   wg_listen_port6=at.child("ListenPortV6").integer(51821, lo=1, hi=65535),
                   wg_psk=_psk(at.child("PSK")),
                   wg_keepalive=_keepalive(at.child("PersistentKeepaliveInterval")),
                   wg_mode=_mode(at.child("Mode"), cluster))
    if "MTU" in BACKEND_KEYS[kind]:
        mtu = at.child("MTU").integer(0, lo=0, hi=underlay_mtu)
        if 0 < mtu < 1280:
            raise at.child("MTU").error(f"{mtu}: the packets a backend sends need 1280 bytes at least (IPv6's minimum "
                                        f"MTU; 0 takes the uplink's, {underlay_mtu})")
        out["backend_mtu"] = mtu
    return out


def _boolean(at):
    if at.value is None:
        return False
    if not isinstance(at.value, bool):
        raise at.error(f"must be true or false, not {at.value!r}")
    return at.value


def _psk(at):
    """A WireGuard preshared key as `wg genpsk` prints it: 32 bytes in base64."""
    text = at.string("")
    if text:
        try:
            ok = len(base64.b64decode(text, validate=True)) == 32
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise at.error("must be a WireGuard key: 32 bytes in base64, as `wg genpsk` prints one")
    return text


def _keepalive(at):
    """PersistentKeepaliveInterval: a number of seconds; 0 turns it off. flanneld decodes it into
    a time.Duration and multiplies by a second, so a JSON string ("25s") fails its decoding."""
    v = at.value
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535:
        raise at.error(f"{v!r}: must be a number of seconds between 0 and 65535 (flanneld decodes an integer; "
                       f"wg's persistent-keepalive)")
    return v


def _mode(at, cluster):
    """Mode: separate (a tunnel per family: flannel-wg, flannel-wg-v6), or one tunnel, flannel-wg,
    for both (auto picks the peer's IPv4 endpoint on a private LAN; ipv4 always does)."""
    mode = at.choice(WIREGUARD_MODES, "separate")
    if mode == "ipv6":
        raise at.error("ipv6: flanneld's one tunnel listens on ListenPort but gives its peers ListenPortV6 as its "
                       "port (backend-v6-data); netlab builds Mode separate, auto and ipv4")
    if mode != "separate" and not cluster.ipv4:
        raise at.error(f"{mode}: one tunnel reaches its peers at their IPv4 addresses, which an IPv6 lab's nodes do "
                       f"not publish (flannel.alpha.coreos.com/public-ip); use Mode separate")
    return mode


def from_configmap(at, cluster, refuse_unknown):
    """The ClusterConfig fields of kube-flannel-cfg's data.net-conf.json (`at` on the ConfigMap):
    its Backend; its network keys must say what the cluster is (flannel's kube subnet manager
    leases each node its podCIDR, so Network is the cluster's podSubnet, SubnetLen its /24)."""
    meta = at.child("metadata")
    if meta.child("namespace").string(CONFIGMAP[0]) != CONFIGMAP[0]:
        raise meta.child("namespace").error(f"kube-flannel-cfg lives in namespace {CONFIGMAP[0]} (kube-flannel.yml)")
    data = at.child("data")
    text_at = data.child("net-conf.json")
    text = text_at.string(required=True)
    try:
        conf = json.loads(text)
    except ValueError as e:
        raise text_at.error(f"is not JSON: {e}") from None
    conf_at = type(text_at)(text_at.file, text_at.obj, conf, text_at.path)
    conf_at.mapping(required=True)
    refuse_unknown(conf_at, conf, set(NETCONF_KEYS), "flannel's net-conf.json")
    four, six = _boolean_default(conf_at.child("EnableIPv4"), True), _boolean(conf_at.child("EnableIPv6"))
    if (four, six) != (cluster.ipv4, cluster.ipv6):
        raise conf_at.child("EnableIPv6" if four == cluster.ipv4 else "EnableIPv4").error(
            f"EnableIPv4 {str(four).lower()}, EnableIPv6 {str(six).lower()}: the cluster is "
            f"{' and '.join(cluster.families)} (its networking.ipFamily)")
    for key, want in (("Network", cluster.pod_subnet), ("IPv6Network", cluster.pod_subnet6)):
        given = conf_at.child(key).string("")
        if given != want and (given or want):
            raise conf_at.child(key).error(f"{given or 'unset'}: flannel's network is the cluster's podSubnet "
                                           f"{want or '(none of that family)'}")
    for key, want in (("SubnetLen", 24), ("IPv6SubnetLen", 64)):
        if conf_at.child(key).integer(want) != want:
            raise conf_at.child(key).error(f"must be {want}: the kube subnet manager's leases are the nodes' podCIDRs")
    if _boolean(conf_at.child("EnableNFTables")):
        raise conf_at.child("EnableNFTables").error("true: netlab's flanneld writes its masquerade rules with "
                                                    "iptables (flannel's default)")
    return backend(conf_at.child("Backend"), cluster, refuse_unknown)


def _boolean_default(at, default):
    return default if at.value is None else _boolean(at)


def net_conf(cluster):
    """net-conf.json as kube-flannel.yml writes it, for this cluster's network and backend."""
    conf = {}
    if cluster.ipv4:
        conf["Network"] = cluster.pod_subnet
    else:
        conf["EnableIPv4"] = False
    if cluster.ipv6:
        conf.update(EnableIPv6=True, IPv6Network=cluster.pod_subnet6)
    conf["EnableNFTables"] = False
    conf["Backend"] = backend_object(cluster)
    return json.dumps(conf, indent=2) + "\n"


def backend_object(cluster):
    """The Backend object of the cluster's backend, its defaults left out as kube-flannel.yml does."""
    kind = cluster.flannel_backend
    out = {"Type": kind}
    if kind == "vxlan":
        for key, value, default in (("VNI", cluster.vxlan_vni, 1), ("Port", cluster.vxlan_port, 0),
                                    ("DirectRouting", cluster.direct_routing, False)):
            if value != default:
                out[key] = value
    if kind == "wireguard":
        for key, value, default in (("ListenPort", cluster.wg_listen_port, 51820),
                                    ("ListenPortV6", cluster.wg_listen_port6, 51821), ("PSK", cluster.wg_psk, ""),
                                    ("PersistentKeepaliveInterval", cluster.wg_keepalive, 0),
                                    ("Mode", cluster.wg_mode, "separate")):
            if value != default:
                out[key] = value
    if kind != "host-gw" and cluster.backend_mtu:
        out["MTU"] = cluster.backend_mtu
    return out
