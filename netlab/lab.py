"""The Python API: a Lab to bring up, inspect, exec into, probe and tear down.

    from netlab import Lab
    lab = Lab.up("topologies/default.yaml")
    print(lab.get("pods"))
    with lab.prober() as p:
        p.http("default/web-0", "10.244.2.3", 8080, "/hostname")
    lab.down()

The CLI is a thin layer over this class; a user's own pytest suite can use it the same way.
"""

import datetime
import shutil
import subprocess

from netlab import apiserver, cluster, kubelet, names, plan, preflight, spec
from netlab.errors import LabNotFound, NetlabError
from netlab.etcd import Store, all_labs
from netlab.kernel import netns as ns
from netlab.kernel.iptables_restore import RestoreApplier
from netlab.kernel.netlink import Handles, NetlinkApplier

# What reads a node's rules back, per applier: the system's iptables, or the legacy tables
# python-iptables writes.
SAVE_TOOL = {"iptables-restore": "iptables-save", "python-iptables": "iptables-legacy-save"}


def iptables_applier(cluster):
    """The applier the lab file chose; both are fed by the same plan."""
    if cluster.iptables_applier == "python-iptables":
        from netlab.kernel.python_iptables import PythonIptablesApplier
        return PythonIptablesApplier()
    return RestoreApplier()


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _NoProgress:
    def phase(self, description, total):
        pass

    def advance(self):
        pass


def _remove_netns(netns_names):
    """Delete namespaces; what still runs inside a *pod* goes with it, as when kubelet removes
    a pod sandbox (a command started just before a crash may have no record yet). Processes
    inside nodes are left alone: a person's shell there is not ours."""
    running = ns.pids_by_netns()
    for name in netns_names:
        if "." in name:
            for pid in running.get(ns.netns_id(name), []):
                kubelet.stop({"pid": pid, "start": kubelet.start_time(pid)}, timeout=1.0)
        ns.delete(name)
        shutil.rmtree(names.NETNS_ETC / name, ignore_errors=True)


KINDS = ("nodes", "pods", "services", "endpoints", "daemonsets")


class Lab:
    def __init__(self, name):
        self.name = name
        self.store = Store(name)

    # --- finding labs ------------------------------------------------------------------

    @classmethod
    def find(cls, name=None):
        """The lab called `name`, or the only lab that is up."""
        if name:
            lab = cls(name)
            if not lab.store.exists():
                raise LabNotFound(f"no lab named {name!r} is up (see `netlab status`)")
            return lab
        labs = all_labs()
        if not labs:
            raise LabNotFound("no lab is up: start one with `netlab up`")
        if len(labs) > 1:
            raise NetlabError(f"several labs are up ({', '.join(labs)}): choose one with --lab NAME")
        return cls(labs[0])

    def state(self):
        return self.store.load()

    # --- up and down -------------------------------------------------------------------

    @classmethod
    def plan(cls, labfile=None, manifests=()):
        """The state and kernel plans a lab file would produce, touching nothing (--dry-run)."""
        lab_spec = spec.load(labfile, manifests)
        state = cluster.new_state(lab_spec)
        return state, plan.lab_plans(state)

    @classmethod
    def up(cls, labfile=None, manifests=(), progress=None):
        lab_spec = spec.load(labfile, manifests)      # a wrong file stops here: nothing exists yet
        preflight.check(lab_spec.cluster.iptables_applier)
        lab = cls(lab_spec.cluster.name)
        with lab.store.locked():
            if lab.store.exists():
                raise NetlabError(f"lab {lab.name!r} is already up; remove it first with `netlab down {lab.name}`")
            leftovers = lab._unclaimed_netns()
            if leftovers:
                raise NetlabError(f"network namespaces of an earlier lab {lab.name!r} remain "
                                  f"({', '.join(leftovers[:3])}...); remove them with `netlab cleanup {lab.name}`")
            state = cluster.new_state(lab_spec)
            state.created = _now()
            lab.store.save(state)                        # the record comes before any kernel object
            try:
                lab._build(state, progress or _NoProgress())
            except BaseException:
                lab._teardown(state)
                raise
        return lab

    def _build(self, state, progress):
        progress.phase("network namespaces", len(state.netns))
        for name in state.netns:
            ns.create(name)
            progress.advance()
        plans = plan.lab_plans(state)
        progress.phase("links, addresses, routes", len(plans))
        with Handles() as handles:
            applier = NetlinkApplier(handles)
            for p in plans:
                applier.apply(p, fresh=True)     # every namespace was created just above
                progress.advance()
        progress.phase("iptables", len(state.nodes))
        iptables = iptables_applier(state.cluster)
        for p in plans:
            if p.iptables:
                iptables.apply(p.netns, p.iptables, fresh=True)
                progress.advance()
        progress.phase("pods", len(state.pods))
        for pod in state.pods:
            kubelet.write_pod_files(state, pod)
        for server in kubelet.POD_SERVERS:
            state.processes[server] = kubelet.start_pod_server(state.lab, server)
        for pod in state.pods:
            pod.pids = kubelet.start_commands(state.lab, pod)
            pod.created = state.created
            progress.advance()
        state.phase = "Running"
        self.store.save(state)
        for server in kubelet.POD_SERVERS:
            kubelet.wait_served(state.lab, server, state.processes[server], self.store.path.stat().st_mtime_ns)

    def scale(self, namespace, name, replicas):
        """`kubectl scale deployment/NAME --replicas N`: the state changes first, then every
        agent converges its part: namespaces, veths and routes (kubelet, CNI), kube-proxy's
        rules on every node, and the pod servers and DNS, which follow the state."""
        if replicas < 0:
            raise NetlabError("--replicas must be 0 or more")
        with self.store.locked():
            state = self.store.load()
            before = list(state.netns)
            added, removed = cluster.scale(state, namespace, name, replicas)
            for pod in removed:
                for rec in pod.pids:
                    kubelet.stop(rec)
            self.store.save(state)                       # intent first: a crash leaves a record
            self._converge(state, before, added)
        return added, removed

    def _converge(self, state, before, added=()):
        """Bring the kernel to the state: remove what it no longer has, create what it gained,
        and re-apply every plan (only differences are written)."""
        _remove_netns(reversed([n for n in before if n not in state.netns]))
        fresh = [n for n in state.netns if not ns.exists(n)]
        for name in fresh:
            ns.create(name)
        plans = plan.lab_plans(state)
        with Handles() as handles:
            applier = NetlinkApplier(handles)
            for p in plans:
                applier.apply(p, fresh=p.netns in fresh)
        iptables = iptables_applier(state.cluster)
        for p in plans:
            if p.iptables:
                iptables.apply(p.netns, p.iptables)
        now = _now()
        for pod in added:
            kubelet.write_pod_files(state, pod)
            pod.pids = kubelet.start_commands(state.lab, pod)
            pod.created = now
        self.store.save(state)
        for server in kubelet.POD_SERVERS:
            kubelet.wait_served(state.lab, server, state.processes[server], self.store.path.stat().st_mtime_ns)

    def down(self):
        with self.store.locked():
            self._teardown(self.store.load())

    def _teardown(self, state):
        """Reverse order, every step idempotent: processes, then namespaces, then records."""
        for pod in state.pods:
            for rec in pod.pids:
                kubelet.stop(rec)
        for rec in state.processes.values():
            kubelet.stop(rec)
        recorded = list(state.netns)
        _remove_netns(reversed(recorded + [n for n in self._unclaimed_netns() if n not in recorded]))
        self.store.remove()

    def _unclaimed_netns(self):
        """Namespaces with this lab's prefix that no other lab's record claims."""
        others = set()
        for other in all_labs():
            if other != self.name:
                try:
                    others.update(Store(other).load().netns)
                except (LabNotFound, ValueError, KeyError):
                    pass
        return [n for n in ns.list_names() if names.belongs_to(self.name, n) and n not in others]

    @classmethod
    def cleanup(cls, name=None):
        """Remove a crashed lab: from its record if it has one, else by its name prefix.
        Without a name, every lab that has a record. Returns the names cleaned."""
        targets = [name] if name else all_labs()
        for target in targets:
            lab = cls(target)
            with lab.store.locked():
                try:
                    state = lab.store.load()
                except (LabNotFound, ValueError, KeyError):
                    state = None
                if state is not None:
                    lab._teardown(state)
                else:
                    _remove_netns(reversed(lab._unclaimed_netns()))
                    lab.store.remove()
        return targets

    # --- looking at it -----------------------------------------------------------------

    def get(self, kind, namespace="default", all_namespaces=False):
        """API objects of a kind ("nodes", "pods"), in the Kubernetes API's shapes."""
        state = self.state()
        if kind in ("nodes", "node", "no"):
            return [apiserver.node_object(state, n) for n in state.nodes]
        wanted = lambda obj: all_namespaces or obj.namespace == namespace  # noqa: E731
        by_name = lambda obj: (obj.namespace, obj.name)                     # noqa: E731  kubectl's order
        if kind in ("pods", "pod", "po"):
            return [apiserver.pod_object(state, p) for p in sorted(state.pods, key=by_name) if wanted(p)]
        if kind in ("services", "service", "svc"):
            return [apiserver.service_object(state, s) for s in sorted(state.services, key=by_name) if wanted(s)]
        if kind in ("endpoints", "ep"):
            return [apiserver.endpoints_object(state, e) for e in sorted(state.endpoints, key=by_name) if wanted(e)]
        if kind in ("daemonsets", "daemonset", "ds"):
            return [d for d in apiserver.daemonset_objects(state)
                    if all_namespaces or d["metadata"]["namespace"] == namespace]
        raise NetlabError(f"unknown resource type {kind!r} (known: {', '.join(KINDS)})")

    def iptables(self, node, table=None):
        """A node's rules as iptables-save prints them, read with the lab's own backend."""
        state = self.state()
        state.node(node)
        argv = [SAVE_TOOL[state.cluster.iptables_applier]] + (["-t", table] if table else [])
        out = ns.run(node, argv, capture_output=True, text=True)
        if out.returncode != 0:
            raise NetlabError(f"{node}: {' '.join(argv)}: {out.stderr.strip()}")
        return out.stdout

    def netns_of(self, target):
        """The namespace behind a target: a node, a pod (NAME or NAMESPACE/NAME), external, lan."""
        state = self.state()
        if target == "external":
            return state.external_netns()
        if target == "lan":
            return state.lan_netns()
        if any(n.name == target for n in state.nodes):
            return target
        namespace, _, name = target.rpartition("/")
        pods = [p for p in state.pods if p.name == name and p.namespace == (namespace or "default")]
        if pods:
            return pods[0].netns
        raise NetlabError(f"lab {self.name}: no node or pod named {target!r}")

    def exec(self, target, argv, **kwargs):
        """Run argv in the target's namespace as `ip netns exec` runs it."""
        return subprocess.run(["ip", "netns", "exec", self.netns_of(target), *argv], **kwargs)

    def prober(self):
        from netlab.probes import Prober
        return Prober(self)
