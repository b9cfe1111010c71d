"""kubelet and the container runtime: the processes that run in pods.

Pods whose containers have no command run agnhost netexec, all of them served by one lab
process (netlab.agnhost). A container with a command runs that command inside the pod's
namespace the way `ip netns exec` runs it, so /etc/netns/<pod netns>/ files apply.
Every process is recorded with its pid and start time, and only a process that still has
both is ever signalled: we end only what we started.
"""

import os
import signal
import subprocess
import sys
import time

from netlab import names
from netlab.errors import NetlabError


def start_time(pid):
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def record(proc):
    return {"pid": proc.pid, "start": start_time(proc.pid)}


def alive(rec):
    return rec is not None and start_time(rec["pid"]) == rec["start"]


def stop(rec, timeout=5.0):
    """SIGTERM, then SIGKILL, to a process we started (and its session, which it leads)."""
    if not alive(rec):
        return
    pid = rec["pid"]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(rec):
                return
            time.sleep(0.02)


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _log(lab, name):
    d = names.state_dir(lab) / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return open(d / f"{name}.log", "ab")


def start_agnhost(lab):
    with _log(lab, "agnhost") as log:
        proc = subprocess.Popen([sys.executable, "-m", "netlab.agnhost", lab], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True, close_fds=True)
    return record(proc)


def wait_served(lab, rec, state_mtime_ns, timeout=30.0):
    """Wait until agnhost has opened the sockets of the state written at `state_mtime_ns`."""
    marker = names.state_dir(lab) / "agnhost.served"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if int(marker.read_text() or 0) >= state_mtime_ns:
                return
        except (FileNotFoundError, ValueError):
            pass
        if not alive(rec):
            raise NetlabError(f"the pod server (agnhost) of lab {lab} exited; see {names.state_dir(lab)}/logs/agnhost.log")
        time.sleep(0.01)
    raise NetlabError(f"the pod server (agnhost) of lab {lab} did not come up within {timeout:.0f}s")


def start_commands(lab, pod):
    """Start the containers of `pod` that have a command; returns their records."""
    recs = []
    for c in pod.template.containers:
        if not c.command:
            continue
        with _log(lab, f"{pod.namespace}_{pod.name}_{c.name}") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", pod.netns, *c.command, *c.args],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True)
        recs.append({**record(proc), "container": c.name})
    return recs
