#!/usr/bin/env python3
"""Crash: `netlab up` killed with SIGKILL at N random moments (default 20). Each time
`netlab cleanup` must remove everything, and a fresh `up` must then succeed.

    sudo .venv/bin/python hardening/crash.py [--kills 20] [--seed 1]
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from common import ROOT, leftovers, renamed, root_snapshot


def netlab(*args):
    return subprocess.run([sys.executable, "-m", "netlab.cli", *args], capture_output=True, text=True, cwd=ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    name = f"crash{os.getpid() % 10000}"
    before = root_snapshot()
    rows, failures = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        labfile = renamed("services.yaml", name, tmp)
        for i in range(args.kills):
            moment = round(rng.uniform(0.05, 1.0), 2)
            proc = subprocess.Popen([sys.executable, "-m", "netlab.cli", "up", str(labfile)], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(moment)
            finished = proc.poll() is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            recorded = os.path.exists(f"/var/lib/netlab/{name}/state.json")
            state = "up" if finished else ("record" if recorded else "no record")
            namespaces = len([n for n in os.listdir("/run/netns") if n.startswith(name + "-")]) \
                if os.path.isdir("/run/netns") else 0
            cleaned = netlab("cleanup", name)
            left = leftovers(name)
            again = netlab("up", str(labfile))
            probe = netlab("--lab", name, "probe", "--area", "pods, across nodes")
            down = netlab("down", name)
            left_after = leftovers(name)
            ok = cleaned.returncode == 0 and not left and again.returncode == 0 and probe.returncode == 0 \
                and down.returncode == 0 and not left_after
            failures += not ok
            rows.append((i + 1, moment, state, namespaces, len(left), again.returncode == 0, probe.returncode == 0, ok))
            if not ok:
                print(f"  kill {i + 1}: cleanup {cleaned.stderr.strip()} left {left} up {again.stderr.strip()[-200:]}")
    changed = [k for k in before if before[k] != root_snapshot()[k]]
    print(f"crash: `netlab up` SIGKILLed at {args.kills} random moments (seed {args.seed})")
    print(f"  {'kill':>4} {'at (s)':>7} {'left':>9} {'netns':>6} {'after cleanup':>14} {'fresh up':>9} {'probe':>6}")
    for n, moment, state, namespaces, left, up, probe, _ in rows:
        print(f"  {n:>4} {moment:>7} {state:>9} {namespaces:>6} {left:>14} {'ok' if up else 'FAIL':>9} {'ok' if probe else 'FAIL':>6}")
    print(f"  host namespace changed: {', '.join(changed) or 'nothing'}")
    print("crash: " + ("every crash cleaned up, every fresh up worked" if not failures and not changed else f"{failures} FAILED"))
    return 0 if not failures and not changed else 1


if __name__ == "__main__":
    sys.exit(main())
