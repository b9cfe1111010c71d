"""The processes a lab starts, known by pid and start time: only a process that still has
both is ever signalled, so we end only what we started."""

import os
import signal
import time


def _stat(pid):
    """(state, start time) from /proc/PID/stat, or None when there is no such process.

    Field 2, the command name, is in parentheses and may itself hold spaces and ')' (a
    program may name itself anything), so fields are counted after the *last* ')':
    there the state (field 3) is the first and the start time (field 22, clock ticks
    since boot) the twentieth."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def start_time(pid):
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    stat = _stat(pid)
    return stat[1] if stat else None


def record(proc):
    return {"pid": proc.pid, "start": start_time(proc.pid)}


# A process that has exited keeps its /proc/PID/stat, with state Z, until its parent
# reaps it (X is the instant of being reaped). Its start time still matches, so the
# state is what tells a dead server from a live one.
DEAD_STATES = ("Z", "X")


def alive(rec):
    """The recorded process still runs: same pid, same start time, and not a zombie. A
    zombie that is our child is reaped here, so a killed server leaves nothing behind."""
    if rec is None:
        return False
    stat = _stat(rec["pid"])
    if stat is None or stat[1] != rec["start"]:
        return False
    if stat[0] in DEAD_STATES:
        _reap(rec["pid"])
        return False
    return True


def stop(rec, timeout=5.0):
    """SIGTERM, then SIGKILL, to a process we started (and its session, which it leads)."""
    stop_all([rec], timeout)


def stop_all(recs, timeout=5.0):
    """stop() for several processes at once: all are signalled, then all are waited for.

    A recorded leader that is already a zombie is signalled too (before it is reaped): the
    rest of its session may still run, and killpg reaches them."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        running = [r for r in recs if _ours(r)]
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


def _ours(rec):
    """The recorded process still exists, running or a zombie: same pid, same start time."""
    stat = rec and _stat(rec["pid"])
    return bool(stat) and stat[1] == rec["start"]


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
