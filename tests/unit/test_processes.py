"""The lab's processes known by pid and start time: a killed server is dead at once (not a
zombie counted as alive), it is reaped, and a reused pid is not taken for it."""

import os
import shutil
import signal
import subprocess
import time

from netlab.kernel import processes


def wait_for(condition, timeout=5.0):
    """Poll `condition` until it holds or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def state_of(pid):
    """The state letter of /proc/PID/stat (after the last ')'), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def test_a_killed_child_is_not_alive_and_is_reaped():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        rec = processes.record(proc)
        assert processes.alive(rec)
        os.kill(proc.pid, signal.SIGKILL)
        # Nobody waits for it: the kernel keeps it as a zombie (state Z) with its start time.
        assert wait_for(lambda: state_of(proc.pid) == "Z")
        assert not processes.alive(rec)                          # dead the moment it is a zombie
        assert not os.path.exists(f"/proc/{proc.pid}")          # reaped: no zombie left behind
    finally:
        proc.kill()
        try:
            proc.wait(timeout=5)
        except ChildProcessError:
            pass


def test_a_live_process_is_alive_and_a_reused_pid_is_not():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        rec = processes.record(proc)
        assert rec["start"] is not None and processes.alive(rec)
        assert not processes.alive({"pid": proc.pid, "start": rec["start"] + 1})   # another process, same pid
        assert not processes.alive(None)
    finally:
        proc.kill()
        proc.wait(timeout=5)


def test_a_command_name_with_spaces_and_parentheses_is_parsed_after_the_last_paren(tmp_path):
    # /proc/PID/stat reads "PID (a) Z (b) S ...": a parser that splits at the first ')'
    # would read this live process's state as Z.
    weird = tmp_path / "a) Z (b"
    shutil.copy(shutil.which("sleep"), weird)
    proc = subprocess.Popen([str(weird), "60"])
    try:
        assert wait_for(lambda: state_of(proc.pid) == "S")
        with open(f"/proc/{proc.pid}/stat") as f:
            assert f.read().startswith(f"{proc.pid} (a) Z (b) S ")
        assert processes.alive(processes.record(proc))
    finally:
        proc.kill()
        proc.wait(timeout=5)


def test_stop_all_ends_a_session_whose_leader_is_already_a_zombie():
    # The leader dies first (SIGKILL, unreaped); the server it started runs on in its session.
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        leader = processes.record(proc)
        child_pid = int(proc.stdout.readline())
        child = {"pid": child_pid, "start": processes.start_time(child_pid)}
        assert processes.alive(child)
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_for(lambda: state_of(proc.pid) == "Z")
        processes.stop_all([leader], timeout=2.0)
        assert wait_for(lambda: not processes.alive(child))
        assert not os.path.exists(f"/proc/{proc.pid}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.stdout.close()
        try:
            proc.wait(timeout=5)
        except ChildProcessError:
            pass
