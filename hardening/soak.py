#!/usr/bin/env python3
"""Soak: the default lab up and down N times (default 50), kube-proxy in iptables and nftables
mode in turn. After every cycle nothing of the lab may remain; the host's namespace must be as it was; this process's file descriptors and
the lab processes' memory must stay flat. Every tenth cycle `up` is killed once its record
exists and a change command (`scale`) must converge the lab before it comes down.

    sudo .venv/bin/python hardening/soak.py [--cycles 50]
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, fds, in_mode, isolate_kubeconfig, leftovers, renamed, root_snapshot, rss_kib

from netlab import Lab


def netlab(*args):
    return subprocess.run([sys.executable, "-m", "netlab.cli", *args], capture_output=True, text=True, cwd=ROOT)


def killed_up_then_change(name, labfile):
    """`up` SIGKILLed as soon as its record exists, then `scale`: the lab must work after it."""
    proc = subprocess.Popen([sys.executable, "-m", "netlab.cli", "up", str(labfile)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = f"/var/lib/netlab/{name}/state.json"
    deadline = time.monotonic() + 30
    while not os.path.exists(record) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ok = netlab("--lab", name, "scale", "deployment/web", "--replicas", "3").returncode == 0 \
        and netlab("--lab", name, "probe", "--area", "pods-across-nodes").returncode == 0
    return netlab("down", name).returncode == 0 and ok


def main():
    isolate_kubeconfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    args = parser.parse_args()
    name = f"soak{os.getpid() % 10000}"
    before = root_snapshot()
    own_fds, servers, ups, downs, lost, killed = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        base = renamed("default.yaml", name, tmp)
        labfiles = [in_mode(base, "iptables"), in_mode(base, "nftables")]
        for i in range(args.cycles):
            labfile = labfiles[i % 2]
            t0 = time.perf_counter()
            lab = Lab.up(labfile)
            ups.append(time.perf_counter() - t0)
            procs = lab.state().processes
            servers.append(sum(rss_kib(p["pid"]) or 0 for p in procs.values()))
            t0 = time.perf_counter()
            lab.down()
            downs.append(time.perf_counter() - t0)
            left = leftovers(name)
            lost += [f"cycle {i + 1}: {x}" for x in left]
            own_fds.append(fds(os.getpid()))
            if (i + 1) % 10 == 0:
                killed.append(killed_up_then_change(name, labfiles[(i + 1) // 10 % 2]))
                lost += [f"cycle {i + 1} (killed up): {x}" for x in leftovers(name)]
    after = root_snapshot()
    changed = [k for k in before if before[k] != after[k]]
    print(f"soak: {args.cycles} up/down cycles of the default lab, kube-proxy in iptables and nftables mode in turn")
    print(f"  up   {statistics.mean(ups):.2f} s mean, down {statistics.mean(downs):.2f} s mean")
    print(f"  left behind after a cycle: {len(lost)}")
    print(f"  killed ups converged by the next change command: {sum(killed)} of {len(killed)}")
    print(f"  host namespace changed: {', '.join(changed) or 'nothing'}")
    print(f"  this process's fds: first {own_fds[0]}, last {own_fds[-1]}")
    print(f"  lab processes' memory: first {servers[0] / 1024:.1f} MiB, last {servers[-1] / 1024:.1f} MiB")
    for line in lost[:10]:
        print("  LEFT:", line)
    ok = all(killed) and not lost and not changed and own_fds[-1] <= own_fds[0] and servers[-1] <= servers[0] * 1.2
    print("soak: " + ("nothing lost, nothing left" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
