"""The one way into a network namespace. Nothing else in netlab calls setns.

A named netns is what `ip netns add` makes: an empty file under /run/netns bind-mounted
over a namespace, so `ip netns exec NAME ...` and every other tool find it. We create it
in-process (unshare + bind mount, then setns back) instead of forking, because a lab has
hundreds of them and a fork costs ~10 ms. setns affects only the calling thread, and
sockets keep the namespace they were opened in, so a netlink or TCP socket opened inside
`entered(name)` keeps working there after we return.
"""

import ctypes
import errno
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

from netlab.errors import NetlabError

RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_REC, MS_BIND, MS_SHARED = 0x4000, 0x1000, 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _setns(fd):
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def path(name):
    return RUN_DIR / name


def exists(name):
    """A namespace is mounted there. A bare file (a create killed between making the file and
    mounting the namespace on it) is not one."""
    try:
        return os.stat(path(name)).st_dev == os.stat("/proc/self/ns/net").st_dev
    except FileNotFoundError:
        return False


def list_names():
    return sorted(p.name for p in RUN_DIR.iterdir()) if RUN_DIR.is_dir() else []


@contextmanager
def entered(name):
    """Run the body with this thread in netns `name`, then come back, whatever happens."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        os.close(own)
        raise NetlabError(f"network namespace {name!r} does not exist") from None
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def enter_for_good(name):
    """Move this whole (single-threaded) process into netns `name`: for worker processes."""
    fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def fd(name):
    """An open fd of the namespace, for netlink's IFLA_NET_NS_FD; the caller closes it."""
    return os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)


def _ensure_run_dir():
    """As iproute2 does: /run/netns is a shared mount, so the mounts under it propagate."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    d = str(RUN_DIR).encode()
    if _libc.mount(b"none", d, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        _check(-1, f"mount --make-shared {RUN_DIR}")
    _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None), f"mount --bind {RUN_DIR}")
    _check(_libc.mount(b"none", d, b"none", MS_SHARED | MS_REC, None), f"mount --make-shared {RUN_DIR}")


def create(name):
    """`ip netns add name`, in-process. An existing namespace of that name is kept."""
    if exists(name):
        return False
    _ensure_run_dir()
    target = path(name)
    target.unlink(missing_ok=True)          # a bare file an interrupted create left
    os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            _check(_libc.mount(b"/proc/thread-self/ns/net", str(target).encode(), b"none", MS_BIND, None),
                   f"bind mount {target}")
        finally:
            _setns(own)
    except OSError:
        target.unlink(missing_ok=True)
        raise
    finally:
        os.close(own)
    return True


def delete(name):
    """`ip netns del name`. Already gone is success. The kernel frees the namespace once
    nothing holds it: no process inside, no open socket, no other bind mount."""
    target = path(name)
    if not target.exists():
        return False
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL:                 # EINVAL: not a mount point (a bare file): nothing to detach
            raise NetlabError(f"netns {name}: umount {target}: {os.strerror(err)}")
    target.unlink(missing_ok=True)
    return True


def netns_id(name):
    """(device, inode) of a named namespace, or None; what /proc/PID/ns/net also stats to."""
    try:
        st = os.stat(path(name))
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def pids_by_netns():
    """{(device, inode): [pids]} for every process, in one pass over /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            found.setdefault((st.st_dev, st.st_ino), []).append(int(entry))
    return found


def pids_inside(name):
    """Processes whose network namespace is `name` (what `ip netns pids` prints)."""
    return pids_by_netns().get(netns_id(name), [])


def _sysctl_path(key):
    """Keys are written with slashes (net/ipv4/conf/flannel.1/...) since a device name may hold a dot."""
    return "/proc/sys/" + key


def write_sysctl(name, key, value):
    """Set a sysctl inside netns `name` (the /proc/sys/net view follows the thread's netns)."""
    with entered(name):
        with open(_sysctl_path(key), "w") as f:
            f.write(str(value))


def read_sysctl(name, key):
    with entered(name):
        with open(_sysctl_path(key)) as f:
            return f.read().strip()


def run(name, argv, **kwargs):
    """Run a program inside netns `name` (the way `ip netns exec` does, minus /etc/netns:
    for the lab's own tools such as iptables-restore)."""
    return subprocess.run(argv, preexec_fn=lambda: enter_for_good(name), **kwargs)

