"""The processes a lab starts, known by pid and start time: only a process that still has
both is ever signalled, so we end only what we started."""

import os
import signal
import time


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
    stop_all([rec], timeout)


def stop_all(recs, timeout=5.0):
    """stop() for several processes at once: all are signalled, then all are waited for."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        running = [r for r in recs if alive(r)]
        for rec in running:
            pid = rec["pid"]
            try:
                os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while running and time.monotonic() < deadline:
            for rec in running:
                _reap(rec["pid"])
            running = [r for r in running if alive(r)]
            if running:
                time.sleep(0.02)
        if not running:
            return


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
