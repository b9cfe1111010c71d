#!/usr/bin/env python3
"""Crash: `netlab up` killed with SIGKILL at N random moments (default 20), two kills in
iptables mode, then two in nftables mode, in turn. After every odd
kill `netlab cleanup` must remove everything and a fresh `up` must then succeed; after every
even one a change command (`netlab scale`) must converge whatever the killed `up` left (when
it left a record) into a working lab. Every lab must pass the probe and come down clean.

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

from common import ROOT, in_mode, isolate_kubeconfig, leftovers, renamed, root_snapshot


def netlab(*args):
    return subprocess.run([sys.executable, "-m", "netlab.cli", *args], capture_output=True, text=True, cwd=ROOT)


def main():
    isolate_kubeconfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    name = f"crash{os.getpid() % 10000}"
    before = root_snapshot()
    rows, failures = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        base = renamed("services.yaml", name, tmp)
        labfiles = {mode: in_mode(base, mode) for mode in ("iptables", "nftables")}
        for i in range(args.kills):
            mode = ("iptables", "nftables")[i // 2 % 2]     # a cleanup and a change in each mode
            labfile = labfiles[mode]
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
            if i % 2 and recorded:           # the next command converges what the kill left
                after_kill = "change"
                first = netlab("--lab", name, "scale", "deployment/web", "--replicas", "3")
                left, again = [], first
            else:
                after_kill = "cleanup"
                first = netlab("cleanup", name)
                left = leftovers(name)
                again = netlab("up", str(labfile))
            probe = netlab("--lab", name, "probe", "--area", "pods-across-nodes")
            down = netlab("down", name)
            left_after = leftovers(name)
            ok = first.returncode == 0 and not left and again.returncode == 0 and probe.returncode == 0 \
                and down.returncode == 0 and not left_after
            failures += not ok
            rows.append((i + 1, moment, state, namespaces, after_kill, len(left), again.returncode == 0,
                         probe.returncode == 0, ok, mode))
            if not ok:
                print(f"  kill {i + 1}: {after_kill} {first.stderr.strip()[-200:]} left {left} "
                      f"up {again.stderr.strip()[-200:]} probe {probe.returncode} {probe.stderr.strip()[-200:]} "
                      f"down {down.returncode} {down.stderr.strip()[-300:]} left after down {left_after}")
    changed = [k for k in before if before[k] != root_snapshot()[k]]
    print(f"crash: `netlab up` SIGKILLed at {args.kills} random moments (seed {args.seed})")
    print(f"  {'kill':>4} {'mode':>8} {'at (s)':>7} {'left':>9} {'netns':>6} {'then':>8} {'left after':>10} "
          f"{'lab up':>7} {'probe':>6}")
    for n, moment, state, namespaces, after_kill, left, up, probe, _, mode in rows:
        print(f"  {n:>4} {mode:>8} {moment:>7} {state:>9} {namespaces:>6} {after_kill:>8} {left:>10} "
              f"{'ok' if up else 'FAIL':>7} {'ok' if probe else 'FAIL':>6}")
    changes = [r for r in rows if r[4] == "change"]
    print(f"  a change command converged {sum(r[8] for r in changes)} of {len(changes)} killed ups that left a record")
    print(f"  host namespace changed: {', '.join(changed) or 'nothing'}")
    print("crash: " + ("every crash cleaned up, every fresh up worked" if not failures and not changed else f"{failures} FAILED"))
    return 0 if not failures and not changed else 1


if __name__ == "__main__":
    sys.exit(main())
