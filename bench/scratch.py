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
