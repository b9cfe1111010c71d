"""What a real node keeps on its disk, under /var/lib/netlab/<lab>/nodes/<node>/: flanneld's
/run/flannel/subnet.env (which flannel's CNI plugin reads to configure the bridge), its
WireGuard private key /run/flannel/wgkey (wireguard backend), and
host-local's allocation records in /var/lib/cni/networks/cbr0 (one file per address, holding
the container ID and interface, and last_reserved_ip.<range>: .0 for the IPv4 range, .1 for the
IPv6 one of a dual-stack node (.0 for an IPv6 lab's one range); IPv6 files are named by the address, colons kept). Written after
every save of the state.
"""

import base64
import os
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from netlab import names
from netlab.api.objects import HostLocal
from netlab.node.flannel import flanneld, wireguard


def write(state):
    for node in state.nodes:
        _write_node(state, node)
    nodes = names.state_dir(state.lab) / "nodes"
    for d in nodes.iterdir() if nodes.is_dir() else ():
        if d.name not in {n.name for n in state.nodes}:
            shutil.rmtree(d, ignore_errors=True)           # a node that left takes its disk along


def _write_node(state, node):
    root = names.node_dir(state.lab, node.name)
    env = root / "run" / "flannel" / "subnet.env"
    env.parent.mkdir(parents=True, exist_ok=True)
    env.write_text(flanneld.subnet_env(state.cluster, node))
    records = root / "var" / "lib" / "cni" / "networks" / "cbr0"
    records.mkdir(parents=True, exist_ok=True)
    wanted = host_local_records(state.ipam.get(node.name, HostLocal()))
    for f in records.iterdir():
        if f.name not in wanted and f.name != "lock":
            f.unlink()
    for fname, content in wanted.items():
        (records / fname).write_text(content)


def host_local_records(ipam):
    """host-local's disk store: {file name: content}. An address's file holds the container ID
    and the interface, CRLF between them; last_reserved_ip.N the last address range N gave."""
    wanted = {ip: f"{cid}\r\n{names.POD_IFNAME}" for ip, cid in ipam.allocated.items()}
    for i, last in enumerate(last for last in (ipam.last_reserved, ipam.last_reserved6) if last):
        wanted[f"last_reserved_ip.{i}"] = last
    return wanted


def wireguard_key(lab, node_name):
    """flanneld's setupKeys: the node's private key from /run/flannel/wgkey, or a new one
    written there (mode 0400) when the file is missing. (public key in base64, whether it was made)."""
    path = Path(wireguard.key_file(lab, node_name))
    made = not path.exists()
    if made:
        raw = X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(raw).decode())       # wgtypes.Key.String(), no newline
    private = X25519PrivateKey.from_private_bytes(base64.b64decode(path.read_text().strip()))
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(public).decode(), made
