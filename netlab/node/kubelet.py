"""kubelet and the container runtime: the processes that run in pods.

Pods whose containers have no command run agnhost netexec, all of them served by one lab
process (netlab.addons.agnhost). A container with a command runs that command inside the pod's
namespace the way `ip netns exec` runs it, so /etc/netns/<pod netns>/ files apply.
Every process is recorded with its pid and start time, and only a process that still has
both is ever signalled: we end only what we started.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

from netlab import names
from netlab.controllers.kubeadm import DOMAIN, dns_ip
from netlab.errors import NetlabError
from netlab.kernel.processes import alive, record, start_time
from netlab.node import runtime

POLL_SECONDS = 0.2


def _log(lab, name):
    d = names.state_dir(lab) / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return open(d / f"{name}.log", "ab")


def pod_servers(state):
    """The lab processes this state needs, in the order they registered: a lab without
    LoadBalancers or an ingress controller runs no cloud, speaker or ingress controller."""
    return [name for name, p in runtime.PROCESSES.items() if p.wanted(state)]


def start_pod_server(lab, name):
    with _log(lab, name) as log:
        proc = subprocess.Popen([sys.executable, "-m", runtime.PROCESSES[name].module, lab], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True, close_fds=True)
    return record(proc)


def wait_served(lab, name, rec, state_mtime_ns, timeout=30.0):
    """Wait until a pod server has opened the sockets of the state written at `state_mtime_ns`."""
    marker = names.state_dir(lab) / f"{name}.served"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if int(marker.read_text() or 0) >= state_mtime_ns:
                return
        except (FileNotFoundError, ValueError):
            pass
        if not alive(rec):
            raise NetlabError(f"the pod server ({name}) of lab {lab} exited; see {names.state_dir(lab)}/logs/{name}.log")
        time.sleep(0.01)
    raise NetlabError(f"the pod server ({name}) of lab {lab} did not come up within {timeout:.0f}s")


def pod_running(pod):
    """A pod runs when every container with a command still runs (lab-served ones run with the lab)."""
    return all(alive(r) for r in pod.pids)


def write_pod_files(state, pod):
    """/etc/resolv.conf and /etc/hosts as kubelet writes them for a ClusterFirst pod, placed
    where `ip netns exec` bind-mounts them: /etc/netns/<pod netns>/. Pods of an image that
    uses the node's resolver (dnsPolicy Default: CoreDNS's own) get none."""
    if any(getattr(runtime.image_of(c), "dns_policy", "ClusterFirst") == "Default" for c in pod.template.containers):
        return
    d = names.NETNS_ETC / pod.netns
    d.mkdir(parents=True, exist_ok=True)
    (d / "resolv.conf").write_text(resolv_conf(state.cluster, pod.namespace))
    t = pod.template
    me = f"{pod.ip}\t{pod.name}"
    if t.hostname and t.subdomain:
        me = f"{pod.ip}\t{t.hostname}.{t.subdomain}.{pod.namespace}.svc.{DOMAIN[:-1]}\t{t.hostname}"
    (d / "hosts").write_text("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
                             "::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
                             "fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
                             f"{me}\n")


def resolv_conf(cluster, namespace):
    """What kubelet writes for a pod with dnsPolicy ClusterFirst (the CRI's layout)."""
    search = f"{namespace}.svc.{DOMAIN[:-1]} svc.{DOMAIN[:-1]} {DOMAIN[:-1]}"
    return f"search {search}\nnameserver {dns_ip(cluster)}\noptions ndots:5\n"


# --- what the pod servers share -------------------------------------------------------

class PodServer:
    """One process serving many pods from sockets opened inside each pod's namespace (a
    socket keeps the namespace it was opened in), from one asyncio loop. It follows the
    lab's state: at start, on SIGHUP and whenever state.json changes it opens and closes
    sockets to match (level-triggered), then writes the state's generation to
    `<name>.served`. It exits when the lab's state is gone."""

    name = "pods"

    def __init__(self, lab):
        from netlab.api.etcd import Store
        self.store = Store(lab)
        self.running = {}      # key -> ((netns, ports), [servers or transports])
        self.reload_requested = asyncio.Event()

    def ports(self, pod):
        """(port, protocol) pairs this server serves for a pod."""
        raise NotImplementedError

    def targets(self, state):
        """What to serve: key -> (netns, [(port, protocol)], the object served). Pods by default."""
        from netlab.kernel import netns as ns
        return {p.key: (p.netns, self.ports(p), p) for p in state.pods if self.ports(p) and ns.exists(p.netns)}

    async def serve(self, target, proto, port, sock):
        """Start serving an open socket; returns something with close()."""
        raise NotImplementedError

    def updated(self, state):
        """The state changed (before sockets are matched to it)."""

    async def start(self, netns, ports, target):
        """Open a target's listening sockets inside its namespace and serve them."""
        return [await self.serve(target, proto, port, s) for proto, port, s in _open_sockets(netns, ports)]

    async def reconcile(self):
        state_mtime = os.stat(self.store.path).st_mtime_ns
        state = self.store.load()
        self.updated(state)
        wanted = self.targets(state)
        for key in list(self.running):
            if key not in wanted or self.running[key][0] != wanted[key][:2]:
                for s in self.running.pop(key)[1]:
                    s.close()
        for key, (netns, ports, target) in wanted.items():
            if key in self.running:
                continue
            handles = []
            try:
                handles = await self.start(netns, ports, target)
            except OSError as e:
                print(f"{self.name}: {key}: {e}", file=sys.stderr, flush=True)
            self.running[key] = ((netns, ports), handles)
        (self.store.dir / f"{self.name}.served").write_text(str(state_mtime))

    async def run(self):
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: (stop.set(), self.reload_requested.set()))
        seen = None
        while not stop.is_set():
            try:
                mtime = os.stat(self.store.path).st_mtime_ns
            except FileNotFoundError:
                break                                   # the lab is gone: so are we
            if mtime != seen or self.reload_requested.is_set():
                self.reload_requested.clear()
                seen = mtime
                await self.reconcile()
            try:
                await asyncio.wait_for(self.reload_requested.wait(), timeout=POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
        for _, handles in self.running.values():
            for h in handles:
                h.close()


def _open_sockets(netns, ports):
    """Listening sockets, opened inside a network namespace."""
    from netlab.kernel import netns as ns
    socks = []
    with ns.entered(netns):
        for port, proto in ports:
            kind = socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM
            s = socket.socket(socket.AF_INET, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            if proto == "TCP":
                s.listen(128)
            s.setblocking(False)
            socks.append((proto, port, s))
    return socks


def poll(store, step, name, seconds=POLL_SECONDS, every_pass=False):
    """The loop of a lab process that is not a socket server: `step()` whenever
    the state changed (or on every pass), until the lab's state is gone. One failing pass is
    logged and the next one tried: a controller must outlive a bad moment."""
    seen = None
    while True:
        try:
            mtime = os.stat(store.path).st_mtime_ns
        except FileNotFoundError:
            return
        if every_pass or mtime != seen:
            seen = mtime
            try:
                step()
            except FileNotFoundError:
                return
            except Exception as e:
                print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        time.sleep(seconds)


def announce(lab, name):
    """A lab process writes its own pid and start time where teardown looks: a command killed
    between starting it and recording it still leaves a way to end it (by that pid only)."""
    import json
    d = names.state_dir(lab)
    if d.is_dir():
        pid = os.getpid()
        (d / f"{name}.pid").write_text(json.dumps({"pid": pid, "start": start_time(pid)}))


def announced(lab):
    """The records lab processes wrote for themselves."""
    import json
    out = []
    for f in names.state_dir(lab).glob("*.pid") if names.state_dir(lab).is_dir() else ():
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            pass
    return out


def serve_pods(server_class, lab):
    """The entry point of a pod server process: `python -m netlab.<name> LAB`."""
    if not names.DNS1123_LABEL.match(lab):
        sys.exit(f"{server_class.name}: bad lab name {lab!r}")
    announce(lab, server_class.name)
    asyncio.run(server_class(lab).run())


def container_argv(state, pod, container):
    """What the runtime runs for a container as its own process: its command, or what its
    image's add-on starts (ingress-nginx's real nginx). None: a lab process serves it."""
    if container.command:
        return [*container.command, *container.args]
    image = runtime.image_of(container)
    return image.argv(state, pod) if image is not None and image.argv else None


def start_commands(state, pod, only=None):
    """Start the containers of `pod` that run as processes (all, or those named in `only`);
    returns their records."""
    recs = []
    lab = state.lab
    for c in pod.template.containers:
        argv = container_argv(state, pod, c) if only is None or c.name in only else None
        if argv is None:
            continue
        with _log(lab, f"{pod.namespace}_{pod.name}_{c.name}") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", pod.netns, *argv],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True)
        recs.append({**record(proc), "container": c.name})
    return recs
