#!/usr/bin/env python3
"""The Kubernetes API of a lab: listing 2,000 pods as a Table through kube-apiserver
(`kubectl get pods -A`) against `netlab get pods -A` on the same lab, in one run, and the
delay from a `kubectl scale` to the watch event and to kube-proxy's rules on a node.

    sudo .venv/bin/python bench/api.py [--nodes 20] [--pods-per-node 100] [--runs 7]

Both listings are whole commands, run in turn (A B A B ...), and the ratio is taken pair by
pair; the median is printed. The watch delay is measured with a watch opened by a client of
the API before the scale (the ADDED event of the new pod); the rule delay by polling the
node's nat table until the new pod's KUBE-SEP chain is there.
"""

import argparse
import http.client
import json
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bringup import labfile  # noqa: E402

from netlab import Lab  # noqa: E402
from netlab.api import pki  # noqa: E402

NETLAB = [sys.executable, "-m", "netlab.cli"]
# The Service in front of the web pods: kube-proxy's rules for a new replica are what the
# second measurement waits for.
SERVICE = """---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def timed(argv, env):
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout
    return time.perf_counter() - start, out


def pair(a, b, runs, env):
    """(median A seconds, median B seconds, median A/B), alternating A and B after a warm-up."""
    timed(a, env), timed(b, env)
    times_a, times_b = [], []
    for _ in range(runs):
        times_a.append(timed(a, env)[0])
        times_b.append(timed(b, env)[0])
    return (statistics.median(times_a), statistics.median(times_b),
            statistics.median(x / y for x, y in zip(times_a, times_b)))


def watch_added(lab, port, label, ready, seen):
    """A watch on the lab's pods: records when the first ADDED event after `ready` arrives."""
    p = pki.paths(lab.store.dir)
    ctx = ssl.create_default_context(cafile=str(p.ca_crt))
    ctx.load_cert_chain(str(p.admin_crt), str(p.admin_key))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
    conn.request("GET", f"/api/v1/pods?labelSelector={label}")
    rv = json.loads(conn.getresponse().read())["metadata"]["resourceVersion"]
    conn.request("GET", f"/api/v1/pods?watch=true&labelSelector={label}&resourceVersion={rv}")
    response = conn.getresponse()
    ready.set()
    for line in response:
        if json.loads(line)["type"] == "ADDED":
            seen.append(time.perf_counter())
            break
    conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--pods-per-node", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    name = f"api{secrets.token_hex(2)}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "KUBECONFIG": str(Path(tmp) / "kubeconfig")}
        os.environ["KUBECONFIG"] = env["KUBECONFIG"]
        path = labfile(Path(tmp) / "lab.yaml", name, args.nodes, args.pods_per_node)
        path.write_text(path.read_text() + SERVICE)
        lab = Lab.up(path)
        try:
            state = lab.state()
            pods = len(state.pods)
            kubectl = ["kubectl", "--context", f"netlab-{name}", "get", "pods", "-A"]
            netlab = NETLAB + ["--lab", name, "get", "pods", "-A"]
            api, own, ratio = pair(kubectl, netlab, args.runs, env)
            print(f"listing {pods} pods as a table ({args.runs} runs each, medians):")
            print(f"  kubectl get pods -A (Table through kube-apiserver)  {api * 1000:8.0f} ms")
            print(f"  netlab get pods -A (the state, same printers)       {own * 1000:8.0f} ms")
            print(f"  ratio kubectl / netlab                               {ratio:8.2f}")

            node = next(n for n in state.nodes if n.role == "worker")
            replicas = next(d.replicas for d in state.deployments if d.name == "web")
            delays_watch, delays_rules = [], []
            for i in range(3):
                ready, seen = threading.Event(), []
                watcher = threading.Thread(target=watch_added, args=(lab, state.api_port, "app%3Dweb", ready, seen))
                watcher.start()
                ready.wait(30)
                before = {p.ip for p in lab.state().pods}
                replicas += 1
                start = time.perf_counter()
                subprocess.run(["kubectl", "--context", f"netlab-{name}", "scale", "deployment", "web",
                                f"--replicas={replicas}"], capture_output=True, env=env, check=True)
                new_ip = next(p.ip for p in lab.state().pods if p.ip not in before and p.ip)
                deadline = time.monotonic() + 60
                rule = f"--to-destination {new_ip}:8080"
                while rule not in lab.iptables(node.name, "nat") and time.monotonic() < deadline:
                    time.sleep(0.001)
                delays_rules.append(time.perf_counter() - start)
                watcher.join(60)
                delays_watch.append(seen[0] - start)
            own_scale = []
            for i in range(3):                       # the same change through netlab's own command
                replicas += 1
                own_scale.append(timed(NETLAB + ["--lab", name, "scale", "deployment/web", "--replicas",
                                                 str(replicas)], env)[0])
            print("a scale of one more replica, 3 times each (medians):")
            print(f"  kubectl scale: to the watch's ADDED event       {statistics.median(delays_watch) * 1000:8.0f} ms")
            print(f"  kubectl scale: to its KUBE-SEP rule on a node    {statistics.median(delays_rules) * 1000:8.0f} ms")
            print(f"  netlab scale (the same change, every agent)     {statistics.median(own_scale) * 1000:8.0f} ms")
            print(f"  ratio kubectl / netlab                           "
                  f"{statistics.median(delays_rules) / statistics.median(own_scale):8.2f}")
        finally:
            lab.down()


if __name__ == "__main__":
    main()
