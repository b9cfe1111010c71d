#!/usr/bin/env python3
"""Bring-up and teardown of N nodes x M pods, against an `ip -batch` baseline in the same run.

The baseline creates the very same namespaces, veth pairs, bridges, vxlan devices,
addresses, neighbours, FDB entries and routes (rendered from the same plan) with one
`ip -batch` per namespace and one `bridge -batch` per node, the fastest a shell script gets.
netlab does that and more (sysctls, iptables, pod servers). Prints the ratios and the
memory of the lab's processes per pod.

    sudo .venv/bin/python bench/bringup.py [--nodes 10] [--pods-per-node 200]
"""

import argparse
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab import Lab  # noqa: E402
from netlab.api.etcd import all_labs  # noqa: E402
from netlab.kernel import netns as ns  # noqa: E402
from bench.scratch import plan_batch, run_batch  # noqa: E402


def labfile(path, name, nodes, per_node):
    roles = "\n".join(["  - role: control-plane"] + ["  - role: worker"] * (nodes - 1))
    path.write_text(f"""kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: {name}
nodes:
{roles}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {nodes * per_node}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      tolerations: [{{key: node-role.kubernetes.io/control-plane, operator: Exists}}]
      containers: [{{name: netexec, ports: [{{containerPort: 8080}}, {{containerPort: 8081, protocol: UDP}}]}}]
""")
    return path


def baseline(plans):
    names = [p.netns for p in plans]
    t0 = time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names), text=True, check=True)
    for p in plans:
        ip, bridge = plan_batch(p)
        run_batch("ip", p.netns, ip)
        if bridge:
            run_batch("bridge", p.netns, bridge)
    t1 = time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], input="".join(f"netns del {n}\n" for n in reversed(names)),
                   text=True, check=True)
    return t1 - t0, time.perf_counter() - t1


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--pods-per-node", type=int, default=200)
    args = ap.parse_args()
    pods = args.nodes * args.pods_per_node
    tag = secrets.token_hex(2)
    with tempfile.TemporaryDirectory() as tmp:
        ours = labfile(Path(tmp) / "lab.yaml", f"bench{tag}", args.nodes, args.pods_per_node)
        theirs = labfile(Path(tmp) / "base.yaml", f"base{tag}", args.nodes, args.pods_per_node)
        _, plans = Lab.plan(theirs)
        try:
            t0 = time.perf_counter()
            lab = Lab.up(ours)
            up = time.perf_counter() - t0
            state = lab.state()
            procs = [r["pid"] for r in state.processes.values()] + [r["pid"] for p in state.pods for r in p.pids]
            memory = sum(rss_kib(pid) for pid in procs)
            t0 = time.perf_counter()
            lab.down()
            down = time.perf_counter() - t0
            base_up, base_down = baseline(plans)
        finally:
            for name in (f"bench{tag}",):
                if name in all_labs():
                    Lab.cleanup(name)
            for n in ns.list_names():
                if n.startswith(f"base{tag}-"):
                    ns.delete(n)
    print(f"{args.nodes} nodes x {args.pods_per_node} pods = {pods} pods, {len(plans)} namespaces")
    print(f"{'':24}{'netlab':>10}{'ip -batch':>12}{'ratio':>8}")
    print(f"{'bring-up (s)':24}{up:10.2f}{base_up:12.2f}{up / base_up:8.2f}")
    print(f"{'teardown (s)':24}{down:10.2f}{base_down:12.2f}{down / base_down:8.2f}")
    print(f"lab processes: {len(procs)}, resident memory {memory / 1024:.1f} MiB, {memory / pods:.1f} KiB per pod")


if __name__ == "__main__":
    main()
