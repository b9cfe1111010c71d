"""kubelet and the container runtime: the processes that run in pods.

Pods whose containers have no command run agnhost netexec, all of them served by one lab
process (netlab.addons.agnhost), which also serves agnhost's serve-hostname, porter and pause
whether the image's args or a command (`/agnhost serve-hostname ...`) name them. Any other
command runs inside the pod's namespace the way `ip netns exec` runs it, so
/etc/netns/<pod netns>/ files apply.
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
from netlab.api.objects import Node, Pod
from netlab.controllers.kubeadm import DOMAIN, dns_ip
from netlab.errors import NetlabError
from netlab.kernel import netns as ns
from netlab.kernel.processes import alive, record, start_time
from netlab.node import runtime

POLL_SECONDS = 0.2

# kubeadm's static pod: the kubelet of the control plane runs kube-apiserver from its manifest
# (a lab process, named here by its module; the node layer imports nothing of the control plane).
runtime.register_process(runtime.LabProcess("kube_apiserver", "netlab.control_plane.kube_apiserver"))
# and kube-controller-manager's timed part, while a fault waits to end (it exits when none does)
runtime.register_process(runtime.LabProcess("kube_controller_manager", "netlab.control_plane.kube_controller_manager",
                                            wanted=lambda state: any(f.get("until") for f in state.faults)))


def process_log(lab, name):
    """A lab process's log file, open for appending: <state>/logs/<name>.log."""
    d = names.state_dir(lab) / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return open(d / f"{name}.log", "ab")


def pod_servers(state):
    """The lab processes this state needs, in the order they registered: a lab without
    LoadBalancers or an ingress controller runs no cloud, speaker or ingress controller."""
    return [name for name, p in runtime.PROCESSES.items() if p.wanted(state)]


def start_pod_server(lab, name):
    with process_log(lab, name) as log:
        proc = subprocess.Popen([sys.executable, "-m", runtime.PROCESSES[name].module, lab], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True, close_fds=True)
    announce(lab, name, proc.pid)
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
    (d / "hosts").write_text(hosts_file(pod))


def hosts_file(pod):
    """kubelet's managedHostsFileContent: the localhost and ip6 lines, then one line per pod IP
    (status.podIPs: both families in a dual-stack pod, IPv4 first)."""
    t = pod.template
    if t.hostname and t.subdomain:
        aliases = f"{t.hostname}.{t.subdomain}.{pod.namespace}.svc.{DOMAIN[:-1]}\t{t.hostname}"
    else:
        aliases = pod.name
    return ("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
            "fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
            + "".join(f"{ip}\t{aliases}\n" for ip in pod.ips))


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
        self.retry = False     # a target could not be served: reconcile again on the next pass
        self.failed = {}       # key -> the last error serving it (logged once)
        self.reload_requested = asyncio.Event()

    def ports(self, pod):
        """(port, protocol) pairs this server serves for a pod."""
        raise NotImplementedError

    def targets(self, state):
        """What to serve: key -> (netns, [(port, protocol)], the object served). Pods by default."""
        return {p.key: (p.netns, self.ports(p), p) for p in state.pods if self.ports(p) and ns.exists(p.netns)}

    async def serve(self, target, proto, port, sock):
        """Start serving an open socket; returns something with close()."""
        raise NotImplementedError

    def updated(self, state):
        """The state changed (before sockets are matched to it)."""

    async def start(self, netns, ports, target):
        """Open a target's listening sockets inside its namespace and serve them (a dual-stack
        pod's or node's on both families, as a Go server bound to ":PORT" listens: kube-proxy's
        :10256 on a node)."""
        six = isinstance(target, (Pod, Node)) and bool(target.ip6)
        return [await self.serve(target, proto, port, s) for proto, port, s in _open_sockets(netns, ports, six)]

    async def reconcile(self):
        state_mtime = os.stat(self.store.path).st_mtime_ns
        state = self.store.load()
        self.updated(state)
        wanted = self.targets(state)
        for key in list(self.running):
            if key not in wanted or self.running[key][0] != wanted[key][:2]:
                for s in self.running.pop(key)[1]:
                    s.close()
        self.retry = False
        for key, (netns, ports, target) in wanted.items():
            if key in self.running:
                continue
            try:
                self.running[key] = ((netns, ports), await self.start(netns, ports, target))
            except (OSError, NetlabError) as e:     # a port taken, a namespace gone: try again soon
                if self.failed.get(key) != str(e):
                    print(f"{self.name}: {key}: {e}", file=sys.stderr, flush=True)
                self.failed[key] = str(e)
                self.retry = True
            else:
                self.failed.pop(key, None)
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
            if mtime != seen or self.reload_requested.is_set() or self.retry:
                self.reload_requested.clear()
                seen = mtime
                try:
                    await self.reconcile()
                except Exception as e:                  # one bad moment (a state being replaced): next pass
                    print(f"{self.name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                    self.retry = True
            try:
                await asyncio.wait_for(self.reload_requested.wait(), timeout=POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
        for _, handles in self.running.values():
            for h in handles:
                h.close()


def _open_sockets(netns, ports, six=False):
    """Listening sockets, opened inside a network namespace; `six`: an IPv6 one (IPV6_V6ONLY,
    beside the IPv4 one, so an IPv4 client is still seen by its IPv4 address) per port too."""
    families = ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")) if six else ((socket.AF_INET, "0.0.0.0"),)
    socks = []
    try:
        with ns.entered(netns):
            for (port, proto), (family, anywhere) in ((p, f) for p in ports for f in families):
                s = socket.socket(family, socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM)
                socks.append((proto, port, s))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((anywhere, port))
                if proto == "TCP":
                    s.listen(128)
                s.setblocking(False)
    except BaseException:
        for _, _, s in socks:                       # all of a target's sockets, or none
            s.close()
        raise
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
            except FileNotFoundError as e:
                if not store.path.exists():
                    return                              # the lab is gone
                print(f"{name}: {e}", file=sys.stderr, flush=True)
            except Exception as e:
                print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        time.sleep(seconds)


def announce(lab, name, pid=None):
    """A lab process's pid and start time, where teardown looks: a command killed between
    starting it and recording it still leaves a way to end it (by that pid only). The command
    that starts it writes it at once (`pid`), and the process itself again when it runs: a
    command killed before the process got that far (its imports take a while on a loaded
    machine) leaves no process that cleanup cannot find."""
    import json
    d = names.state_dir(lab)
    if d.is_dir():
        pid = pid or os.getpid()       # one file per process: a second one of the same name hides none
        (d / f"{name}.{pid}.pid").write_text(json.dumps({"pid": pid, "start": start_time(pid), "name": name}))


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
    """What the runtime runs for a container as its own process: what its image's add-on
    starts (ingress-nginx's real nginx), its command, or its image's ENTRYPOINT with its args;
    a program an image ships runs what stands in for it (agnhost's). None: a lab process
    serves it."""
    image = runtime.image_of(container)
    if image is not None and image.server:
        return None
    if image is not None and image.argv:
        return image.argv(state, pod)
    if container.command:
        return runtime.program_argv([*container.command, *container.args])
    if image is not None and image.entrypoint:
        return runtime.program_argv([*image.entrypoint, *container.args])
    return None


# --- a container's process ---------------------------------------------------------------
# A command pasted into a pod runs as a container runtime would run it, not as root on the
# host (runc with Docker's and containerd's defaults, and a non-root USER):
#   ip netns exec POD    the pod's network namespace, and a mount namespace of its own in which
#                        /etc/netns/POD/* (resolv.conf, hosts) are bind-mounted over /etc
#   unshare --uts --pid --fork --mount-proc
#                        the pod's own hostname (its name, as kubelet gives it), set before
#                        the privileges go;
#                        a PID namespace of its own, and a /proc that shows only it; inside the
#                        ip netns exec, so those bind mounts are still there
#   setpriv              uid and gid 65534, no supplementary groups, no_new_privs (a setuid or
#                        file-capability binary gains nothing), the bounding set cut to the
#                        runtime's default set, and NET_BIND_SERVICE and NET_RAW kept as ambient
#                        capabilities, so it can listen on port 80 and ping. setpriv's
#                        --ambient-caps does nothing without --inh-caps: a capability is raised
#                        into the ambient set only if it is permitted and inheritable.
#   an init (PID 1)      as `docker run --init` runs tini: the kernel gives a namespace's PID 1
#                        no default signal action, so a command without a SIGTERM handler
#                        (sleep) would ignore `netlab down`; and unshare --fork blocks SIGTERM
#                        in its own process while it waits. The init runs the command as its
#                        child in a process group of its own, passes signals on to it, reaps
#                        orphans and exits with the command's status, ending the namespace.
# The process recorded is the command itself (its pid seen from the host): it leads its
# group, so stopping the record ends it and what it started; the init, then unshare, follow
# it out. The host's files stay visible, as uid 65534 sees them: the lab's state and /root
# are root's alone (0700).
# Only NET_BIND_SERVICE and NET_RAW take effect, not the whole default set Docker gives a
# *root* container: on the host's filesystem DAC_OVERRIDE reads every file, SETUID makes the
# process root again, CHOWN and FOWNER take any file. (Docker lets a non-root process serve
# low ports and ping with the netns sysctls ip_unprivileged_port_start=0 and ping_group_range.)

CONTAINER_UID = CONTAINER_GID = 65534      # nobody / nogroup on Debian: `runAsUser: 65534`
RUNTIME_DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")
CONTAINER_CAPS = ("NET_BIND_SERVICE", "NET_RAW")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"    # containerd's default

# The init's code reaches it in its environment, which it then removes, so that `ps` in the
# container reads `python3 -I -S -c <bootstrap> COMMAND...` rather than the whole program.
_INIT_VARIABLE = "NETLAB_CONTAINER_INIT"
_INIT_BOOTSTRAP = f"import os; exec(os.environ.pop({_INIT_VARIABLE!r}))"
_INIT = """\
# netlab's container init: PID 1 of the container, as docker run --init's tini
import os, signal, sys
PASSED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
          signal.SIGWINCH}
def forward(sig, frame):
    try:
        os.kill(main, sig)
    except ProcessLookupError:
        pass
# Blocked across the fork: a signal sent before the command runs waits, then ends the child
# (default action) or is passed on by the init (its handler), never lost in between.
signal.pthread_sigmask(signal.SIG_BLOCK, PASSED)
main = os.fork()
if main == 0:
    os.setpgid(0, 0)
    for s in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):    # python's own; not the command's
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PASSED)
    os.environ.pop("LC_CTYPE", None)     # python's C-locale coercion (PEP 538): not the container's
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    except OSError as e:
        print(f"{sys.argv[1]}: {e.strerror}", file=sys.stderr, flush=True)
        os._exit(127 if isinstance(e, FileNotFoundError) else 126)
for s in PASSED:
    signal.signal(s, forward)
try:
    os.setpgid(main, main)
except OSError:
    pass
signal.pthread_sigmask(signal.SIG_UNBLOCK, PASSED)
while True:
    child, status = os.wait()
    if child == main:
        code = os.waitstatus_to_exitcode(status)
        sys.exit(code if code >= 0 else 128 - code)
"""


def pod_hostname(pod):
    """The hostname kubelet gives a pod's containers: spec.hostname, or the pod's name, cut
    to 63 characters as kubelet cuts it."""
    return (pod.template.hostname or pod.name)[:63].rstrip("-.")


# Sets the hostname, then becomes argv: no process of its own (a forked `hostname` would be
# taken for the container's command while it ran).
_SET_HOSTNAME = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execvp(sys.argv[2], sys.argv[2:])"


def with_hostname(hostname, argv):
    """argv in a UTS namespace of its own whose hostname is `hostname` (set while still root)."""
    return ["unshare", "--uts", "python3", "-I", "-S", "-c", _SET_HOSTNAME, hostname, *argv]


def exec_argv(pod, argv):
    """`netlab exec POD -- argv` and `kubectl exec`: the pod's network namespace and its
    hostname; a program an image ships (`/agnhost`) runs what stands in for it."""
    return ["ip", "netns", "exec", pod.netns, *with_hostname(pod_hostname(pod), runtime.program_argv(argv))]


def _sandboxed(pod, argv):
    """The host's command line for a container's process: its namespaces, its user, its init.
    The init is the system's python3, found on the container's PATH as the container's user
    finds it (netlab's own interpreter may live where that user cannot reach)."""
    caps = ",".join(["-all"] + [f"+{c.lower()}" for c in CONTAINER_CAPS])
    return ["ip", "netns", "exec", pod.netns,
            "unshare", "--uts", "--pid", "--fork", "--mount-proc",
            "python3", "-I", "-S", "-c", _SET_HOSTNAME, pod_hostname(pod),
            "setpriv", f"--reuid={CONTAINER_UID}", f"--regid={CONTAINER_GID}", "--clear-groups", "--no-new-privs",
            "--bounding-set=" + ",".join(["-all"] + [f"+{c.lower()}" for c in RUNTIME_DEFAULT_CAPS]),
            f"--inh-caps={caps}", f"--ambient-caps={caps}", "--",
            "python3", "-I", "-S", "-c", _INIT_BOOTSTRAP, *argv]


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def _command_record(proc, timeout=10.0):
    """The record of a container's command: the init's child, unshare's grandchild (about
    15 ms after the start: python's own). If the container ends before the command is seen,
    the record is unshare's, ended too; if it is not seen in time, unshare's, which leads the
    session: stopping it reaches the init, which passes the signal on."""
    deadline = time.monotonic() + timeout
    pid = proc.pid
    for _ in ("the init", "the command"):
        while not (children := _children(pid)):
            if proc.poll() is not None or time.monotonic() > deadline:
                return record(proc)
            time.sleep(0.001)
        pid = children[0]
    return {"pid": pid, "start": start_time(pid)}


def start_commands(state, pod, only=None):
    """Start the containers of `pod` that run as processes (all, or those named in `only`);
    returns their records. Each runs unprivileged in its own PID namespace (see above), from
    /, with a container's environment rather than netlab's."""
    started = []
    lab = state.lab
    for c in pod.template.containers:
        argv = container_argv(state, pod, c) if only is None or c.name in only else None
        if argv is None:
            continue
        with process_log(lab, f"{pod.namespace}_{pod.name}_{c.name}") as log:
            proc = subprocess.Popen(_sandboxed(pod, argv), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True, close_fds=True, cwd="/",
                                    env={"PATH": CONTAINER_PATH, "HOME": "/", _INIT_VARIABLE: _INIT})
        started.append((c.name, proc))
    return [{**_command_record(proc), "container": name} for name, proc in started]
