"""WireGuard devices: the kernel's `wireguard` link, or where the kernel has no module the same
device served by wireguard-go on a TUN device; either one configured with `wg`, which speaks
netlink to the kernel's and the control socket to wireguard-go.

wireguard-go's control socket is /var/run/wireguard/<device>.sock, one path for every network
namespace: two nodes' flannel-wg would meet there. So each node's wireguard-go runs in the mount
namespace `ip netns exec` gives it, with the node's own directory bound over /run/wireguard, and
every `wg` netlab runs for the node (and `netlab exec NODE`) binds the same directory: each
meets its node's sockets and no other. Mounting needs /run/wireguard to exist (wireguard-go
makes it anyway); it is made when missing and removed again once no lab mounts on it.

wireguard-go refuses to run on a kernel that has WireGuard (5.6 and later) unless
WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 is set: netlab sets it, and runs it only where
the kernel cannot make the link.
"""

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netlab.errors import NetlabError
from netlab.kernel import netns as ns

SOCKET_DIR = Path("/run/wireguard")
MADE_MARK = ".netlab-made"           # in the state root: netlab made SOCKET_DIR, so may remove it
USERSPACE = "wireguard-go"
KERNEL = "kernel"
USERSPACE_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "error"}
BIND = 'mount --bind "$0" /run/wireguard && exec "$@"'


def kernel_has_wireguard(netns):
    """Whether the kernel makes `wireguard` links (built in, or its module loads on demand):
    one made and removed again in `netns`."""
    with ns.entered(netns):
        ipr = IPRoute()
    with ipr:
        try:
            ipr.link("add", ifname="netlab-wgtry", kind="wireguard")
        except NetlinkError as e:
            if e.code in (errno.EOPNOTSUPP, errno.EINVAL):
                return False
            raise
        ipr.link("del", ifname="netlab-wgtry")
    return True


def in_node(netns, socket_dir, argv):
    """argv as it runs in a node: its network namespace, and its /run/wireguard where it has
    one (a node whose devices wireguard-go serves)."""
    if not socket_dir or not os.path.isdir(socket_dir) or not SOCKET_DIR.is_dir():
        return ["ip", "netns", "exec", netns, *argv]
    return ["ip", "netns", "exec", netns, "sh", "-c", BIND, str(socket_dir), *argv]


def start(netns, device, socket_dir, log, state_root):
    """wireguard-go serving `device` in the node `netns`, its control socket in `socket_dir`;
    the process (its pid is wireguard-go's: ip and sh exec into it)."""
    if shutil.which(USERSPACE) is None:
        raise NetlabError("wireguard-go is not installed (this kernel has no wireguard module): run `make setup`")
    _ensure_socket_dir(state_root)
    Path(socket_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    _wait_gone(netns, device)
    env = {**os.environ, **USERSPACE_ENV}
    return subprocess.Popen(in_node(netns, socket_dir, [USERSPACE, "-f", device]), env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, start_new_session=True, close_fds=True)


def _wait_gone(netns, device, timeout=5.0):
    """A TUN device whose wireguard-go was killed goes a moment after its process: the kernel
    may close the last descriptor from a work queue. A new wireguard-go before that fails
    (TUNSETIFF: device or resource busy)."""
    with ns.entered(netns):
        ipr = IPRoute()
    with ipr:
        deadline = time.monotonic() + timeout
        while ipr.link_lookup(ifname=device) and time.monotonic() < deadline:
            time.sleep(0.02)


def wait_ready(netns, device, socket_dir, alive, timeout=15.0):
    """Until the device exists and its control socket answers; `alive()` false: it exited."""
    sock = Path(socket_dir) / f"{device}.sock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.exists() and dump(netns, device, socket_dir) is not None:
            return
        if not alive():
            raise NetlabError(f"{netns}: wireguard-go for {device} exited")
        time.sleep(0.02)
    raise NetlabError(f"{netns}: wireguard-go did not make {device} within {timeout:.0f}s")


def _wg(netns, socket_dir, args, **kwargs):
    return subprocess.run(in_node(netns, socket_dir, ["wg", *args]), capture_output=True, text=True, **kwargs)


def dump(netns, device, socket_dir):
    """`wg show DEVICE dump` as a dict (private_key, listen_port, peers: {public key: (psk,
    endpoint, allowed IPs, keepalive)}), or None where there is no such device."""
    out = _wg(netns, socket_dir, ["show", device, "dump"])
    if out.returncode != 0:
        return None
    lines = [line.split("\t") for line in out.stdout.splitlines() if line]
    private, _, port, _ = lines[0][:4]
    peers = {}
    for f in lines[1:]:
        allowed = frozenset(a for a in f[3].split(",") if a and a != "(none)")
        peers[f[0]] = ("" if f[1] == "(none)" else f[1], "" if f[2] == "(none)" else f[2], allowed,
                       0 if f[7] == "off" else int(f[7]))
    return {"private_key": "" if private == "(none)" else private, "listen_port": int(port), "peers": peers}


def wanted(config):
    """A WireGuard value (netlab.values.desired) in dump()'s shape, its private key read from its file."""
    private = Path(config.private_key_file).read_text().strip()
    return {"private_key": private, "listen_port": config.listen_port,
            "peers": {p.public_key: (p.preshared_key, p.endpoint, frozenset(p.allowed_ips), p.keepalive)
                      for p in config.peers}}


def differences(have, want):
    """What `wg syncconf` would change, one line each (the private key by its being set only)."""
    out = []
    if have["private_key"] != want["private_key"]:
        out.append("private key")
    if have["listen_port"] != want["listen_port"]:
        out.append(f"listen-port {want['listen_port']}")
    for key in sorted(set(have["peers"]) - set(want["peers"])):
        out.append(f"peer {key} remove")
    for key, (psk, endpoint, allowed, keepalive) in want["peers"].items():
        if have["peers"].get(key) != (psk, endpoint, allowed, keepalive):
            out.append(f"peer {key} endpoint {endpoint} allowed-ips {','.join(sorted(allowed))}"
                       + (f" persistent-keepalive {keepalive}" if keepalive else "") + (" preshared-key" if psk else ""))
    return out


def conf(want):
    """The device's configuration in wg's file format (`wg showconf`), for `wg syncconf`."""
    lines = ["[Interface]", f"PrivateKey = {want['private_key']}", f"ListenPort = {want['listen_port']}"]
    for key, (psk, endpoint, allowed, keepalive) in want["peers"].items():
        lines += ["", "[Peer]", f"PublicKey = {key}"]
        lines += [f"PresharedKey = {psk}"] if psk else []
        lines += [f"Endpoint = {endpoint}", f"AllowedIPs = {', '.join(sorted(allowed))}"]
        lines += [f"PersistentKeepalive = {keepalive}"] if keepalive else []
    return "\n".join(lines) + "\n"


def sync(netns, device, config):
    """Converge one device's keys, port and peers: read back with `wg show dump`, and where it
    differs one `wg syncconf` (which keeps the sessions of peers it does not change). Returns
    what changed."""
    have = dump(netns, device, config.socket_dir)
    if have is None:
        raise NetlabError(f"{netns}: WireGuard device {device} is missing")
    want = wanted(config)
    changed = differences(have, want)
    if changed:
        out = _wg(netns, config.socket_dir, ["syncconf", device, "/dev/stdin"], input=conf(want))
        if out.returncode != 0:
            raise NetlabError(f"{netns}: wg syncconf {device}: {out.stderr.strip()}")
    return changed


def _ensure_socket_dir(state_root):
    """/run/wireguard, to mount the nodes' directories on; marked in the state root when netlab made it."""
    if SOCKET_DIR.is_dir():
        return
    state_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    (state_root / MADE_MARK).touch()
    SOCKET_DIR.mkdir(mode=0o755, exist_ok=True)


def release_socket_dir(state_root):
    """Remove /run/wireguard if netlab made it and no process mounts anything on it any more
    (another lab's wireguard-go still may)."""
    mark = state_root / MADE_MARK
    if not mark.exists() or not SOCKET_DIR.is_dir() or _mounted_on(SOCKET_DIR):
        return
    try:
        SOCKET_DIR.rmdir()
    except OSError:
        return                                  # something of someone else's is in it: theirs
    mark.unlink(missing_ok=True)


def _mounted_on(path):
    """Whether any process's mount namespace has a mount on `path` (mountinfo's fifth field)."""
    target, seen = str(path), set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            mnt = os.readlink(proc / "ns" / "mnt")
            if mnt in seen:
                continue
            seen.add(mnt)
            text = (proc / "mountinfo").read_text()
        except OSError:
            continue
        if any(line.split(" ")[4] == target for line in text.splitlines() if line.count(" ") >= 4):
            return True
    return False
