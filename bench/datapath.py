#!/usr/bin/env python3
"""Pod-to-pod across nodes, per flannel backend: TCP throughput (iperf3) and round-trip time
(ICMP echo), on a netlab lab against the same kernel objects built by hand in the same run.

For each backend (vxlan, vxlan with DirectRouting, host-gw, wireguard) a lab of two nodes with
a pod on each comes up, and beside it its baseline: the namespaces, veth pairs, bridges, vxlan
and wireguard devices, addresses, neighbours, FDB entries, routes and forwarding sysctls of the
same plan, made with `ip -batch` (WireGuard's keys and peers with `wg set`, its devices served by
wireguard-go where the kernel has no module, as netlab serves them) and nothing else (no
iptables: no kube-proxy, flannel or kube-router rules, no conntrack). iperf3 runs from the pod on the control plane to the pod on the worker in both,
in turns (the median of each side kept); the ratio netlab ÷ by hand is what the lab's agents cost the data path
(goal ≥ 0.95), and the backends are compared with each other.

    sudo .venv/bin/python bench/datapath.py [--seconds 5] [--pings 500]
"""

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import plan_batch, run_batch  # noqa: E402
from netlab import Lab  # noqa: E402
from netlab.api.etcd import all_labs  # noqa: E402
from netlab.api.netconf import OVERHEAD  # noqa: E402
from netlab.kernel import netns as ns  # noqa: E402
from netlab.kernel import wireguard  # noqa: E402
from netlab.node.flannel import flanneld  # noqa: E402
from netlab.observe import preflight  # noqa: E402
from netlab.plan import lab_plans  # noqa: E402

BACKENDS = (("vxlan", "{Type: vxlan}"), ("vxlan DirectRouting", "{Type: vxlan, DirectRouting: true}"),
            ("host-gw", "{Type: host-gw}"), ("wireguard", "{Type: wireguard}"))


def labfile(path, name, backend):
    """Two nodes, a pod pinned on each (the client on the control plane, the server on the worker)."""
    pods = "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  nodeName: {name}-{node}
  tolerations: [{{key: node-role.kubernetes.io/control-plane, operator: Exists}}]
  containers: [{{name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53}}]
""" for pod, node in (("client", "control-plane"), ("server", "worker")))
    path.write_text(f"""kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: {name}
nodes: [{{role: control-plane}}, {{role: worker}}]
---
apiVersion: netlab.io/v1alpha1
kind: Lab
flannel: {{backend: {backend}}}
""" + pods)
    return path


def measure(client_netns, server_netns, server_ip, seconds, pings):
    """(Gbit/s of one iperf3 TCP stream, mean RTT in µs) from one namespace to the other."""
    server = subprocess.Popen(["ip", "netns", "exec", server_netns, "iperf3", "-s", "-1", "-B", server_ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):                    # until the server listens
            probe = subprocess.run(["ip", "netns", "exec", server_netns, "ss", "-Htln", f"sport = :5201"],
                                   capture_output=True, text=True)
            if probe.stdout.strip():
                break
            subprocess.run(["sleep", "0.05"])
        out = subprocess.run(["ip", "netns", "exec", client_netns, "iperf3", "-c", server_ip, "-t", str(seconds),
                              "-J"], capture_output=True, text=True, timeout=seconds + 30, check=True)
        gbits = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait()
    ping = subprocess.run(["ip", "netns", "exec", client_netns, "ping", "-q", "-c", str(pings), "-i", "0.002",
                           server_ip], capture_output=True, text=True, timeout=60, check=True)
    rtt = float(ping.stdout.rsplit("=", 1)[1].split("/")[1]) * 1000     # rtt min/avg/max/mdev = a/b/c/d ms
    return gbits, rtt


def by_hand(plans, keys, tmp, servers):
    """The plans' kernel objects and forwarding sysctls with `ip` (and WireGuard's with `wg set`,
    wireguard-go started first where the kernel has no module), nothing else; the namespaces."""
    names = [p.netns for p in plans]
    subprocess.run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names), text=True, check=True)
    userspace = any(l.kind == "wireguard" for p in plans for l in p.links) and \
        preflight.wireguard_implementation() == wireguard.USERSPACE
    for p in plans:
        tunnels = [l for l in p.links if l.kind == "wireguard"]
        sockets = Path(tmp) / f"{p.netns}-run-wireguard"
        if tunnels and userspace:
            with open(Path(tmp) / f"{p.netns}.log", "ab") as log:
                servers += [wireguard.start(p.netns, l.ifname, sockets, log, Path(tmp)) for l in tunnels]
            for l in tunnels:
                wireguard.wait_ready(p.netns, l.ifname, sockets, lambda: True)
        ip, bridge = plan_batch(p, made=[l.ifname for l in tunnels] if userspace else ())
        run_batch("ip", p.netns, ip)
        if bridge:
            run_batch("bridge", p.netns, bridge)
        for l in tunnels:
            key = Path(tmp) / f"{p.netns}.key"
            key.write_text(keys[p.netns][0])
            argv = ["wg", "set", l.ifname, "private-key", str(key), "listen-port", str(l.wireguard.listen_port)]
            for peer in l.wireguard.peers:
                argv += ["peer", peer.public_key, "endpoint", peer.endpoint, "allowed-ips", ",".join(peer.allowed_ips)]
            subprocess.run(wireguard.in_node(p.netns, sockets if userspace else None, argv), check=True)
        for key, value in p.sysctls:
            if key.endswith(("ip_forward", "/forwarding")):
                ns.write_sysctl(p.netns, key, value)
    return names


def wireguard_keys(state):
    """A key pair per node of a plan's state (`wg genkey`, `wg pubkey`), the public one on its Node."""
    keys = {}
    for node in state.nodes:
        private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
        node.wg_public_key = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True,
                                            check=True).stdout.strip()
        keys[node.netns] = (private, node.wg_public_key)
    return keys


def run(backend_name, backend, seconds, pings, rounds, tmp):
    """The lab and its by-hand twin side by side, measured in turns (`rounds` each, the
    median kept), so that the machine's moods fall on both alike."""
    tag = secrets.token_hex(2)
    ours, theirs = f"dp{tag}", f"dq{tag}"
    state, plans = Lab.plan(labfile(Path(tmp) / f"{theirs}.yaml", theirs, backend))
    keys = wireguard_keys(state) if state.cluster.flannel_backend == "wireguard" else {}
    plans = lab_plans(state) if keys else plans
    made, servers = [], []
    try:
        lab = Lab.up(labfile(Path(tmp) / f"{ours}.yaml", ours, backend))
        made = by_hand(plans, keys, tmp, servers)
        live = lab.state()
        pairs = {"netlab": [live.pod("default", n) for n in ("client", "server")],
                 "hand": [state.pod("default", n) for n in ("client", "server")]}
        figures = {"netlab": [], "hand": []}
        for _ in range(rounds):
            for side, (client, server) in pairs.items():
                figures[side].append(measure(client.netns, server.netns, server.ip, seconds, pings))
        lab.down()
    finally:
        if ours in all_labs():
            Lab.cleanup(ours)
        for server in servers:
            server.terminate()
            server.wait()
        for name in reversed(made):
            ns.delete(name)
        wireguard.release_socket_dir(Path(tmp))
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {"backend": backend_name, "mtu": flanneld.mtu(state.cluster),
            "overhead": OVERHEAD[state.cluster.flannel_backend] if not state.cluster.direct_routing else 0,
            **{side: (median([g for g, _ in f]), median([t for _, t in f])) for side, f in figures.items()}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5, help="iperf3's -t")
    ap.add_argument("--pings", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5, help="measurements of each side, in turns (the median kept)")
    ap.add_argument("--backend", action="append", choices=[name for name, _ in BACKENDS],
                    help="only this backend (again for more; vxlan is always measured: the others are compared to it)")
    args = ap.parse_args()
    chosen = [(n, b) for n, b in BACKENDS if not args.backend or n in args.backend or n == "vxlan"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(name, backend, args.seconds, args.pings, args.rounds, tmp) for name, backend in chosen]
    print("pod to pod across two nodes, one TCP stream (iperf3) and ICMP echo round trips")
    print(f"{'backend':22}{'MTU':>6}{'overhead':>10}{'netlab Gbit/s':>15}{'by hand':>9}{'ratio':>7}"
          f"{'netlab RTT µs':>15}{'by hand':>9}{'ratio':>7}{'vs vxlan':>10}")
    vxlan = rows[0]["netlab"][0]
    for r in rows:
        (g, t), (hg, ht) = r["netlab"], r["hand"]
        print(f"{r['backend']:22}{r['mtu']:>6}{r['overhead']:>10}{g:>15.2f}{hg:>9.2f}{g / hg:>7.2f}"
              f"{t:>15.1f}{ht:>9.1f}{ht / t:>7.2f}{g / vxlan:>10.2f}")
    print("ratio: netlab ÷ by hand for throughput, by hand ÷ netlab for RTT (both: 1.00 is the kernel's own path)")


if __name__ == "__main__":
    main()
