"""What the bench scripts share: namespaces no lab owns and the processes started in them,
removed whatever happens, and `ip -batch` into one of them."""

import os
import subprocess

from netlab.kernel import netns as ns


class Namespaces:
    """Every namespace and process a bench creates, removed in reverse order (processes first:
    a process inside keeps its namespace alive). Names are netlab.bench.<pid>.<prefix><tag>."""

    def __init__(self, prefix=""):
        self.prefix, self.names, self.processes = prefix, [], []

    def create(self, tag):
        name = f"netlab.bench.{os.getpid()}.{self.prefix}{tag}"
        ns.create(name)
        self.names.append(name)
        return name

    def drop(self, name):
        ns.delete(name)
        self.names.remove(name)

    def start(self, netns, argv):
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=subprocess.PIPE, text=True)
        self.processes.append(proc)
        return proc

    def close(self):
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()
        self.processes = []
        for name in reversed(self.names):
            ns.delete(name)
        self.names = []


def ip_batch(netns, commands):
    ns.run(netns, ["ip", "-batch", "-"], input="\n".join(commands) + "\n", text=True, check=True)


def plan_batch(plan, made=()):
    """The `ip` and `bridge` batch lines that build one namespace's plan: its links, addresses,
    neighbours, FDB entries and routes as netlab plans them, and nothing else. `made`: devices
    that exist already (a WireGuard device wireguard-go made)."""
    ip, bridge = ["link set lo up"], []
    for l in plan.links:
        mtu = f" mtu {l.mtu}" if l.mtu else ""
        if l.kind == "bridge":
            ip.append(f"link add {l.ifname}{mtu} type bridge")
        elif l.kind == "veth":
            ip.append(f"link add {l.ifname}{mtu} type veth peer name {l.peer.ifname} netns {l.peer.netns}")
        elif l.kind == "vxlan":
            v = l.vxlan
            ip.append(f"link add {l.ifname} address {l.address}{mtu} type vxlan id {v.vni} local {v.local} "
                      f"dev {v.dev} dstport {v.port} nolearning")
        elif l.kind == "peer" and mtu:
            ip.append(f"link set {l.ifname}{mtu}")
        elif l.kind == "wireguard" and l.ifname not in made:
            ip.append(f"link add {l.ifname}{mtu} type wireguard")
        elif l.kind == "wireguard" and mtu:
            ip.append(f"link set {l.ifname}{mtu}")     # wireguard-go made it
        if l.master:
            ip.append(f"link set {l.ifname} master {l.master}")
        if l.hairpin:
            ip.append(f"link set {l.ifname} type bridge_slave hairpin on")
        ip.append(f"link set {l.ifname} up")
    ip += [f"addr add {a}" for a in plan.addrs]
    ip += [f"neigh replace {n}" for n in plan.neighs]
    bridge += [f"fdb append {f}" for f in plan.fdb]
    ip += [f"route add {r}" for r in plan.routes]
    return ip, bridge


def run_batch(tool, netns, lines):
    subprocess.run([tool, "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)
