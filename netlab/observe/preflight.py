"""Check the machine before creating anything: root, namespaces, the kernel's devices,
br_netfilter, a working iptables and enough file descriptors. One clear sentence for the
first thing missing."""

import os
import resource
import shutil
import subprocess
from pathlib import Path

from netlab.errors import EnvironmentProblem

TOOLS = ("ip", "iptables-restore", "iptables-save", "ipset")

# What kube-router's network policy rules need of the kernel: ipsets (ip_set, hash:ip and
# hash:net) matched by xt_set, bridged traffic told apart by xt_physdev, denied traffic logged
# by NFLOG. Tried in the scratch namespace with one rule using each.
NETPOL_PROBE_SETS = "create netlab-pf-ip hash:ip timeout 0\ncreate netlab-pf-net hash:net timeout 0\n"
NETPOL_PROBE_RULES = ("*filter\n:NETLAB-PF - [0:0]\n"
                      "-A NETLAB-PF -m set --match-set netlab-pf-ip src -m set --match-set netlab-pf-net dst "
                      "-j RETURN\n"
                      "-A NETLAB-PF -m physdev --physdev-is-bridged -j RETURN\n"
                      "-A NETLAB-PF -m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100\n"
                      "COMMIT\n")


# kube-proxy's nftables mode refuses older kernels (nftables.go: "kernel 5.13 or later"),
# unless told to skip the check, and needs nft 1.0.1 or later.
NFTABLES_KERNEL = (5, 13)
NFTABLES_SKIP = "KUBE_PROXY_NFTABLES_SKIP_KERNEL_VERSION_CHECK"


def check_nftables(release=None):
    """What kube-proxy's nftables mode checks before it starts."""
    if shutil.which("nft") is None:
        raise EnvironmentProblem("nft is not installed: kube-proxy's nftables mode needs it; run `make setup`")
    release = release or os.uname().release
    numbers = tuple(int(part) for part in release.split("-")[0].split(".")[:2] if part.isdigit())
    if numbers < NFTABLES_KERNEL and not os.environ.get(NFTABLES_SKIP):
        raise EnvironmentProblem(f"kube-proxy's nftables mode needs kernel 5.13 or later (this is {release}); "
                                 f"use kubeProxyMode: iptables, or set {NFTABLES_SKIP}=1 to try anyway")


def wireguard_implementation():
    """What serves flannel's WireGuard devices on this machine: the kernel's wireguard link
    (tried in a scratch namespace), or else wireguard-go on a TUN device. `wg` configures
    either; without it, or with neither, the lab cannot have the wireguard backend."""
    from netlab.kernel import netns as ns
    from netlab.kernel import wireguard
    if shutil.which("wg") is None:
        raise EnvironmentProblem("wg is not installed (wireguard-tools): flannel's wireguard backend needs it; "
                                 "run `make setup`")
    name = f"netlab.preflight.{os.getpid()}"
    ns.create(name)
    try:
        if wireguard.kernel_has_wireguard(name):
            return wireguard.KERNEL
    finally:
        ns.delete(name)
    if shutil.which(wireguard.USERSPACE) is None:
        raise EnvironmentProblem("this kernel makes no wireguard devices and wireguard-go is not installed: "
                                 "flannel's wireguard backend needs one of them; run `make setup`")
    if not Path("/dev/net/tun").exists():
        raise EnvironmentProblem("this kernel makes no wireguard devices and has no /dev/net/tun for wireguard-go")
    return wireguard.USERSPACE


def check(applier="iptables-restore"):
    if os.geteuid() != 0:
        raise EnvironmentProblem("netlab must run as root: it creates network namespaces (try sudo)")
    if not Path("/proc/self/ns/net").exists():
        raise EnvironmentProblem("this kernel has no network namespaces (CONFIG_NET_NS)")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise EnvironmentProblem(f"{tool} is not installed: run `make setup` (scripts/provision.sh)")
    _ensure_br_netfilter()
    sweep_scratch()
    _try_devices(applier)


# What grows with a lab is the pod servers' listening sockets: one lab process (agnhost's)
# holds a socket for every port of every pod it serves, and inherits netlab's limit. A
# convergence itself holds one netlink socket (4 fds) at a time. The rest (Python, the
# lock, iptables-restore's pipes, probe workers) is a fixed headroom.
FD_HEADROOM = 128


def fds_needed(sockets):
    """About how many open files a lab whose busiest process listens on `sockets` needs."""
    return sockets + FD_HEADROOM


def ensure_fd_limit(sockets):
    """Make RLIMIT_NOFILE fit a lab whose pod servers listen on `sockets` sockets, before its
    processes start (they inherit the limit).

    When the soft limit is too low, it is raised to the hard limit, as Go's runtime does at
    start (systemd keeps the soft limit at 1024 for select()'s sake and expects programs that
    need more to raise it); the hard limit is the administrator's cap and is left alone.
    When even the hard limit is too low, EnvironmentProblem says so, rather than
    `OSError: [Errno 24] Too many open files` halfway through the bring-up.
    Returns the soft limit in force afterwards."""
    need = fds_needed(sockets)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if _unlimited(soft) or soft >= need:
        return soft
    ceiling = hard if not _unlimited(hard) else _nr_open()
    if ceiling < need:
        raise EnvironmentProblem(
            f"this lab needs about {need} open files (its pods listen on {sockets} sockets); the limit is {ceiling} "
            f"(ulimit -Hn); raise it, e.g. `ulimit -n {need}` in the shell that runs netlab, "
            "or nofile in /etc/security/limits.conf")
    resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    return ceiling


def _unlimited(limit):
    return limit == resource.RLIM_INFINITY


def _nr_open():
    """The kernel's cap on any process's RLIMIT_NOFILE (fs.nr_open): an unlimited hard
    limit still cannot lift the soft one above it."""
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1024 * 1024


SCRATCH_PREFIXES = ("netlab.preflight.", "netlab.netem.")


def sweep_scratch():
    """Remove scratch namespaces whose creator is gone (a command killed during its checks).
    They carry the creator's pid in their name; one whose process still runs is left alone."""
    from netlab.kernel import netns as ns
    for name in ns.list_names():
        if name.startswith(SCRATCH_PREFIXES):
            pid = name.rsplit(".", 1)[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                ns.delete(name)


def _ensure_br_netfilter():
    """kubeadm's prerequisite. Loading the module is what a node's provisioning does too."""
    if Path("/proc/sys/net/bridge").exists():
        return
    subprocess.run(["modprobe", "br_netfilter"], capture_output=True)
    if not Path("/proc/sys/net/bridge").exists():
        raise EnvironmentProblem("the kernel lacks br_netfilter (modprobe br_netfilter failed), "
                                 "which pods need so bridged traffic passes iptables")


def _try_devices(applier):
    """Create each kind of device in a scratch namespace, and run the chosen iptables there."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    from netlab.kernel import netns as ns

    name = f"netlab.preflight.{os.getpid()}"   # no lab owns it: not "<lab>-" prefixed
    ns.create(name)
    try:
        with ns.entered(name):
            ipr = IPRoute()
        with ipr:
            for what, kwargs in (
                ("veth", dict(ifname="pf0", kind="veth", peer="pf1")),
                ("bridge", dict(ifname="pfbr", kind="bridge")),
                ("vxlan", dict(ifname="pfvx", kind="vxlan", vxlan_id=1, vxlan_port=8472, vxlan_learning=0)),
            ):
                try:
                    ipr.link("add", **kwargs)
                except NetlinkError as e:
                    raise EnvironmentProblem(f"the kernel cannot create {what} devices ({os.strerror(e.code)})") from None
        if not Path("/proc/sys/net/bridge").exists():
            raise EnvironmentProblem("br_netfilter is not available in network namespaces")
        out = ns.run(name, ["iptables-save", "-t", "nat"], capture_output=True, text=True)
        if out.returncode != 0:
            backend = subprocess.run(["iptables", "-V"], capture_output=True, text=True).stdout.strip()
            raise EnvironmentProblem(f"iptables does not work here ({backend}): {out.stderr.strip()}")
        _try_netpol(name)
        if applier == "python-iptables":
            from netlab.kernel import python_iptables
            with ns.entered(name):
                python_iptables.usable()
    finally:
        ns.delete(name)


def _try_netpol(netns):
    """kube-router's needs, in a scratch namespace: the ipset tool and ip_set's hash types,
    then xt_set, xt_physdev and NFLOG through iptables-restore."""
    from netlab.kernel import netns as ns
    out = ns.run(netns, ["ipset", "restore"], input=NETPOL_PROBE_SETS, capture_output=True, text=True)
    if out.returncode != 0:
        raise EnvironmentProblem(f"the kernel cannot make ipsets (ip_set, hash:ip, hash:net), which kube-router's "
                                 f"network policy rules match on: {out.stderr.strip()}")
    out = ns.run(netns, ["iptables-restore", "--noflush"], input=NETPOL_PROBE_RULES, capture_output=True, text=True)
    if out.returncode != 0:
        raise EnvironmentProblem("iptables cannot use the set, physdev and NFLOG extensions (xt_set, xt_physdev, "
                                 f"xt_NFLOG), which kube-router's network policy rules need: {out.stderr.strip()}")
