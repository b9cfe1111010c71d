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
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace

from netlab import addons  # noqa: F401  (the add-ons register their images and processes with the runtime)
from netlab import names, plan
from netlab.addons import cloud
from netlab.api import apiserver, events, kubeconfig, locks, pki, spec
from netlab.api.etcd import Store, all_labs
from netlab.controllers import cluster, kubeadm
from netlab.controllers.kubeadm import DOMAIN
from netlab.errors import LabNotFound, NetlabError, StateUnreadable
from netlab.kernel import conntrack
from netlab.kernel import iptables as iptables_backend
from netlab.kernel import netns as ns
from netlab.kernel import nft, processes, wireguard
from netlab.kernel.ipset import IpsetApplier
from netlab.kernel.netlink import NetlinkApplier
from netlab.node import files as node_files
from netlab.node import kubelet
from netlab.node.flannel import flanneld
from netlab.node.flannel import wireguard as flannel_wg
from netlab.node.netpol import kube_router
from netlab.node.proxy import healthcheck  # noqa: F401  (kube-proxy's health servers register with the runtime)
from netlab.node.proxy import iptables as kube_proxy
from netlab.node.proxy import nftables as kube_proxy_nft
from netlab.observe import preflight
from netlab.values import ipset as values_ipset


def _stale_chain_owner(chain):
    """The agent whose naming scheme a chain no plan wants follows (KUBE-: kube-proxy's, but
    kube-router's own)."""
    if kube_router.owned(chain):
        return "kube-router"
    return "flannel" if chain.startswith("FLANNEL-") else "kube-proxy"


def _sets_message(written, destroyed):
    """What an ipset call did, for the events: "ipsets: wrote 2 (KUBE-SRC-..., ...)"."""
    def names(sets):
        return ", ".join(sets[:4]) + (", ..." if len(sets) > 4 else "")
    return "ipsets: " + "; ".join([f"wrote {len(written)} ({names(written)})"] * bool(written)
                                  + [f"destroyed {len(destroyed)} ({names(destroyed)})"] * bool(destroyed))


WG_PROCESS = "wireguard-go."          # lab processes serving a node's WireGuard device: wireguard-go.<device>.<node>


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _NoProgress:
    def phase(self, description, total):
        pass

    def advance(self):
        pass


def _remove_netns(lab, netns_names):
    """Delete namespaces; what still runs inside a *pod* goes with it, as when kubelet removes
    a pod sandbox (a command started just before a crash may have no record yet). Processes
    inside nodes are left alone: a person's shell there is not ours."""
    running = ns.pids_by_netns()
    for name in netns_names:
        if names.is_pod_netns(lab, name):
            for pid in running.get(ns.netns_id(name), []):
                processes.stop({"pid": pid, "start": processes.start_time(pid)}, timeout=1.0)
        ns.delete(name)
        shutil.rmtree(names.NETNS_ETC / name, ignore_errors=True)


def _forget_kubeconfig(lab):
    """The lab's context leaves the user's kubeconfig; a file that cannot be read is said, and
    the lab goes anyway (as `kind delete cluster` does)."""
    try:
        kubeconfig.remove(lab)
    except NetlabError as e:
        print(f"netlab: warning: {e}", file=sys.stderr)


def _free_loopback_port():
    """A free TCP port on 127.0.0.1 for the API server, as kind picks one for its cluster."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_sockets(state):
    """About how many sockets the pod servers hold: each pod's ports, netexec's two by default."""
    return sum(max(2, sum(len(c.ports) for c in p.template.containers)) for p in state.scheduled_pods())


# Who reports a controller's event (the component kubectl describe names under From), and
# which are warnings (everything else: the controller manager's, Normal).
_SOURCES = {"Scheduled": "default-scheduler", "FailedScheduling": "default-scheduler",
            "ScalingReplicaSet": "deployment-controller", "SuccessfulCreate": "replicaset-controller",
            "SuccessfulDelete": "replicaset-controller", "RegisteredNode": "node-controller",
            "RemovingNode": "node-controller", "CIDRAssignmentSucceeded": "cidrAllocator", "Killing": "kubelet",
            "Ready": "kubelet", "Unhealthy": "kubelet", "Sync": "nginx-ingress-controller",
            "FaultInjected": "netlab", "FaultCleared": "netlab"}
_WARNINGS = {"FailedScheduling"}


def _record(lab, log, why):
    """The controllers' events, each under the component that reports it."""
    groups = {}
    for entry in log:
        key = (_SOURCES.get(entry[0], "controller-manager"), "Warning" if entry[0] in _WARNINGS else "Normal")
        groups.setdefault(key, []).append(entry)
    for (source, kind), entries in groups.items():
        events.record(lab, entries, source, why, kind=kind)


_IDENTITY = {"nodes": lambda n: n.name, "pods": lambda p: p.uid, "deployments": lambda d: (d.namespace, d.name)}


def _keys(state):
    """Who is there, by kind: what _stamp compares against."""
    return {kind: {key(o) for o in getattr(state, kind)} for kind, key in _IDENTITY.items()}


def _stamp(state, before, now):
    """The API server's creationTimestamp on what a change created: the nodes, pods and
    Deployments that were not there `before` it (what `up` made shows the lab's own)."""
    for kind, key in _IDENTITY.items():
        for obj in getattr(state, kind):
            if key(obj) not in before[kind] and not obj.created:
                obj.created = now


def _manifests(state, paths):
    """Manifests read against the running lab's cluster (validated under its lock)."""
    return spec.load(None, paths, cluster=state.cluster, nodes=[n.name for n in state.nodes])


KINDS = ("nodes", "pods", "deployments", "replicasets", "daemonsets", "services", "endpoints", "endpointslices",
         "ingresses", "ingressclasses", "networkpolicies", "namespaces", "configmaps", "events")  # resources' plurals


class _Before:
    """What the agents last converged to, for a partial sync (immutable values: no copy)."""

    def __init__(self, state):
        self.services = list(state.services)
        self.endpoints = list(state.endpoints)
        self.endpoint_slices = list(state.endpoint_slices)      # what kube-proxy reads
        self.nodes = {n.name for n in state.nodes}
        self.synced = state.synced
        self.kube_proxy_mode = state.cluster.kube_proxy_mode
        self.netpol = kube_router.inputs(state)               # what kube-router reads (a snapshot)


class Lab:
    def __init__(self, name):
        self.name = names.check_lab(name)         # before it becomes a path or a netns prefix
        self.store = Store(name)
        self.last_changes = None          # what the last change made each agent do
        self.kube_proxy_restarted = None  # the mode an `up` of a running lab switched kube-proxy to

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

    def locked(self):
        """This lab's lock, for one command's read, change and convergence."""
        return locks.held(self.name, self.store.exists)

    def _save(self, state):
        """The record, then the files every node keeps on its disk (they follow the record)."""
        self.store.save(state)
        node_files.write(state)

    # --- up and down -------------------------------------------------------------------

    @classmethod
    def plan(cls, labfile=None, manifests=()):
        """The state and kernel plans a lab file would produce, touching nothing (--dry-run)."""
        lab_spec = spec.load(labfile, manifests)
        state = cluster.new_state(lab_spec)
        return state, plan.lab_plans(state)

    @classmethod
    def up(cls, labfile=None, manifests=(), progress=None):
        """Create the lab's record, then converge it as every other change converges: one
        mechanism, whose fast path for fresh namespaces reads nothing back. The record says
        "not synced" until the first convergence ends, so a command that follows a killed
        `up` converges in full."""
        lab_spec = spec.load(labfile, manifests)      # a wrong file stops here: nothing exists yet
        preflight.check(lab_spec.cluster.iptables_applier)
        if kube_proxy_nft.uses_nftables(lab_spec.cluster):
            preflight.check_nftables()
        serves_wireguard = preflight.wireguard_implementation() if lab_spec.cluster.flannel_backend == "wireguard" \
            else ""
        lab = cls(lab_spec.cluster.name)
        if lab.store.exists() and lab._restart_kube_proxy(lab_spec.cluster):
            lab.kube_proxy_restarted = lab_spec.cluster.kube_proxy_mode
            return lab
        with lab.locked():
            with locks.creating():                   # no other lab comes up between the check and the record
                lab._check_prefix()
                if lab.store.exists():
                    raise NetlabError(f"lab {lab.name!r} is already up; remove it first with `netlab down {lab.name}`")
                leftovers = lab._unclaimed_netns()
                if leftovers:
                    raise NetlabError(f"network namespaces of an earlier lab {lab.name!r} remain "
                                      f"({', '.join(leftovers[:3])}...); remove them with `netlab cleanup {lab.name}`")
                log = []
                state = cluster.new_state(lab_spec, log=log)
                state.created = _now()
                state.synced = False
                state.api_port = _free_loopback_port()
                state.wireguard = serves_wireguard
                lab._save(state)                     # the record comes before any kernel object
                _record(lab.name, log, "up")         # the pods left Pending, and why
            try:
                lab._converge(state, None, "up", full=True, progress=progress or _NoProgress())
                lab._export_kubeconfig(state)
            except BaseException as e:
                try:
                    lab._teardown(state)
                except Exception as cleanup:         # the first error is the one to report
                    e.add_note(f"netlab: removing the half-built lab also failed: {cleanup}")
                raise
        return lab

    def _restart_kube_proxy(self, wanted):
        """`netlab up` of a running lab's file whose kubeProxyMode changed: kube-proxy
        restarted in the other mode (as after editing the kube-proxy ConfigMap), whose
        start cleans up the other mode's rules. True when it switched; False when the file
        asks for no switch (then `up` says the lab is already up)."""
        def switch(state, log):
            if wanted == state.cluster:
                return False
            if replace(wanted, kube_proxy_mode=state.cluster.kube_proxy_mode) != state.cluster:
                raise NetlabError(f"lab {self.name!r} is already up with another configuration; only "
                                  "networking.kubeProxyMode can change on a running lab (kube-proxy restarts in "
                                  f"the new mode); to change the rest, `netlab down {self.name}` first")
            state.cluster = wanted
            return True
        with self.locked():
            state = self.store.load()
            if wanted == state.cluster or not self.store.exists():
                return False
        if wanted.kube_proxy_mode == "nftables":
            preflight.check_nftables()
        return bool(self.change(f"up: kube-proxy restarted in {wanted.kube_proxy_mode} mode", switch))

    def _check_prefix(self):
        for other in all_labs():
            if other != self.name and (other.startswith(self.name + "-") or self.name.startswith(other + "-")):
                raise NetlabError(f"lab {self.name!r} and the running lab {other!r} would share namespace "
                                  f"names' prefixes; choose a name that neither starts nor ends one")

    # --- changing a running lab --------------------------------------------------------

    def scale(self, namespace, name, replicas):
        """`kubectl scale deployment/NAME --replicas N`."""
        if replicas < 0:
            raise NetlabError("--replicas must be 0 or more")
        return self.change(f"scale deployment/{name} --replicas {replicas}",
                            lambda state, log: cluster.scale(state, namespace, name, replicas, log=log))

    def apply(self, manifests):
        """`kubectl apply -f`: Pods, Deployments and Services created or updated."""
        def apply(state, log):
            cluster.apply(state, _manifests(state, manifests), log=log, now=_now(), namespaces=namespaces_of(state))
        return self.change(f"apply -f {' '.join(map(str, manifests))}", apply)

    def delete(self, kind, namespace, name):
        """`kubectl delete KIND/NAME`."""
        return self.change(f"delete {kind}/{name}",
                            lambda state, log: cluster.delete(state, kind, namespace, name, log=log))

    def delete_manifests(self, manifests):
        """`kubectl delete -f`: every object the files name."""
        def delete_all(state, log):
            lab_spec = _manifests(state, manifests)
            objects = ([("networkpolicy", p.namespace, p.name) for p in lab_spec.network_policies]
                       + [("ingress", i.namespace, i.name) for i in lab_spec.ingresses]
                       + [("service", s.namespace, s.name) for s in lab_spec.services]
                       + [("deployment", d.namespace, d.name) for d in lab_spec.deployments]
                       + [("pod", p.namespace, p.name) for p in lab_spec.pods])
            for kind, namespace, name in objects:
                cluster.delete(state, kind, namespace, name, log=log)
        return self.change(f"delete -f {' '.join(map(str, manifests))}", delete_all)

    def add_node(self, name):
        """`kind` adding a node container and kubeadm joining it. Names the lab uses itself
        (lan, external, lb-*) are refused before anything is stored."""
        return self.change(f"node add {name}", lambda state, log: cluster.add_node(state, name, log=log))

    def remove_node(self, name):
        """The node leaves (NAME or the name without the lab's prefix); the faults naming it go too."""
        return self.change(f"node remove {name}", lambda state, log: remove_node(state, name, log))

    def set_ready(self, pod, ready):
        namespace, _, name = pod.rpartition("/")
        return self.change(f"pod {'ready' if ready else 'unready'} {pod}",
                            lambda state, log: cluster.set_ready(state, namespace or "default", name, ready, log=log))

    def fault(self, kind, targets, seconds=None):
        """Inject a fault (faults.KINDS); it stays until `clear_faults`, or with `seconds` until
        then (the controller manager clears it). The same fault twice is refused."""
        from netlab.observe import faults

        def add(state, log):
            fault = faults.check(state, kind, list(targets), seconds)
            state.faults.append(fault)
            log.append(("FaultInjected", f"fault/{kind}", "", " ".join(fault["targets"])))
            return fault
        return self.change(f"fault {kind} {' '.join(targets)}", add)

    def clear_faults(self, fault=()):
        """Clear every fault, or with `fault` (KIND TARGET..., as `netlab fault list` prints
        one) only that one. Returns the faults cleared."""
        from netlab.observe import faults

        def clear(state, log):
            gone = faults.named(state, list(fault)) if fault else list(state.faults)
            log += [("FaultCleared", f"fault/{f['kind']}", "", " ".join(f["targets"])) for f in gone]
            state.faults = [f for f in state.faults if f not in gone]
            return gone
        return self.change(" ".join(["fault clear", *fault]), clear)

    def reconcile(self):
        """kube-proxy's and flanneld's periodic resync, kubelet's restarts: read every
        namespace and table back and restore what differs. Returns the changes made."""
        return self.change("reconcile", None)

    def change(self, why, mutate, converged=None):
        """The one mechanism for every change, a netlab command's or an API request's:
        `mutate(state, log)` (the controllers) changes the state, which is saved before the
        kernel is touched (a command killed half-way leaves a record the next command
        converges); then every agent converges what it owns. `converged()`, when given, runs
        before the lock is let go (the API server reads its answer there)."""
        with self.locked():
            state = self.store.load()
            if not state.endpoint_slices and state.endpoints:
                cluster.sync_endpoints(state)        # a record from before EndpointSlices: kube-proxy reads them
            old = _Before(state)
            result = None
            if mutate is not None:
                log, before = [], _keys(state)
                result = mutate(state, log)          # refused here (a NetlabError): nothing is stored
                _stamp(state, before, _now())
                state.synced = False
                self._save(state)
                _record(self.name, log, why)
            # A kernel failure from here on leaves the change stored and the record "not
            # synced", as an API server keeps an object its agents failed to realize: the
            # next command (or `netlab reconcile`) converges in full and retries it.
            changes = self._converge(state, old, why, full=mutate is None)
            if not old.synced and state.api_port:
                self._export_kubeconfig(state)       # an interrupted `up` never exported its context
            if converged is not None:
                converged()
        self.last_changes = changes
        return result if mutate is not None else changes

    def _converge(self, state, old, why, full=False, progress=None):
        """Bring the kernel to the state; a partial kube-proxy and kube-router sync when the last
        command converged (their chains and kube-router's sets that the change changed, nothing
        read back), a full one (read back and compare) otherwise. `old`: what the agents last
        converged to (None: nothing yet, as for `up`). A namespace created here is fresh:
        nothing in it is read back."""
        progress = progress or _NoProgress()
        preflight.ensure_fd_limit(_listening_sockets(state))   # raised to the hard limit when the lab needs it
        changes = events.Changes()
        gone = [n for n in self._unclaimed_netns() if n not in state.netns]
        _remove_netns(self.name, reversed(gone))
        changes.add("kubelet", [(n, "removed pod sandbox") for n in gone if names.is_pod_netns(self.name, n)])
        fresh = {n for n in state.netns if not ns.exists(n)}
        progress.phase("network namespaces", len(fresh))
        for name in state.netns:
            if name in fresh:
                ns.create(name)
                progress.advance()
        # A mode switch is kube-proxy restarted in the other mode: a full sync, after the
        # other mode's --cleanup (its chains are in no plan now, so the full sync removes them).
        partial = not full and old is not None and old.synced and old.kube_proxy_mode == state.cluster.kube_proxy_mode
        self._run_wireguard(state, changes)
        netpol_inputs = kube_router.inputs(state)      # what kube-router reads; its policies compiled once, if needed
        compiled = []

        def netpol():
            compiled[:] = compiled or [(netpol_inputs, kube_router.policies(netpol_inputs))]
            return compiled[0]
        plans = plan.lab_plans(state, cloud.read_health(self.name), node_rules=not partial,
                               netpol=None if partial else netpol())
        progress.phase("links, addresses, routes", len(plans))
        applier = NetlinkApplier()
        for p in plans:
            applier.apply(p, fresh=p.netns in fresh)
            progress.advance()
        for netns, what, owner in applier.log:
            changes.add(owner, [(netns, what)])
        changes.netlink_writes = applier.writes
        iptables = iptables_backend.applier(state.cluster.iptables_applier)
        nft_mode = kube_proxy_nft.uses_nftables(state.cluster)
        nftables = nft.NftApplier() if nft_mode else None
        nodes_netns = {n.netns for n in state.nodes} if nft_mode else set()
        # Keyed by netns (the ip table's) and "<netns> ip6" (a dual-stack node's ip6 table's).
        state.stale_chains = {k: v for k, v in state.stale_chains.items() if k.split(" ")[0] in nodes_netns}
        progress.phase("iptables and nftables" if nft_mode else "iptables", len(state.nodes))
        ipsets = IpsetApplier()
        # kube-router's partial sync: the chains and sets that differ between its last inputs'
        # plan and this one; nothing at all when what it reads is unchanged.
        netpol_moved = partial and old.netpol != netpol_inputs
        old_netpol = (old.netpol, kube_router.policies(old.netpol)) if netpol_moved else None
        set_work = values_ipset.changes(netpol()[1].sets, {s.name: s for s in old_netpol[1].sets}) if netpol_moved \
            else ([], [])
        chain_owner = {}                                # netns -> {chain: the agent that planned it}
        # A dual-stack node's stale IPv6 sets go once ip6tables no longer matches on them (after
        # _sync_ip6tables), the IPv4 ones once iptables does not.
        stale6 = []                                     # (netns, [inet6 set names])

        def destroy_sets(netns, stale_names):
            ipsets.destroy(netns, [n for n in stale_names if values_ipset.family_of(n) == "inet"])
            stale6.append((netns, [n for n in stale_names if values_ipset.family_of(n) == "inet6"]))
        for node in state.nodes:
            progress.advance()
            converged = partial and node.name in old.nodes and node.netns not in fresh
            if nft_mode:
                self._sync_nftables(nftables, state, old, node, partial, node.netns in fresh)
            elif not partial and node.netns not in fresh and nft.available():
                for family in state.cluster.families:       # iptables mode's cleanup of nftables mode's
                    nft.delete_table(node.netns, kube_proxy_nft.FAMILIES[family][0], kube_proxy_nft.TABLE)
            if converged:
                work = {"nat": ({}, []), "filter": ({}, [])} if nft_mode or not state.cluster.ipv4 else \
                    kube_proxy.sync_changes(old.services, old.endpoint_slices, state.services,
                                            state.endpoint_slices, node, state.cluster.pod_subnet)
                owner = {c: "kube-proxy" for write, stale in work.values() for c in [*write, *stale]}
                if netpol_moved and state.cluster.ipv4:
                    (before, old_policies), policies = old_netpol, netpol()[1]
                    write, stale = kube_router.sync_changes(before, netpol_inputs, node.name, old_policies, policies)
                    work["filter"] = ({**work["filter"][0], **write}, work["filter"][1] + stale)
                    owner.update({c: "kube-router" for c in [*write, *stale]})
                ipsets.write(node.netns, set_work[0])   # before a rule matches on them
                iptables.apply_changes(node.netns, {t: w for t, w in work.items() if w[0] or w[1]})
                destroy_sets(node.netns, set_work[1])   # once no rule does
                chain_owner[node.netns] = owner
            else:                                       # read back, or a node that joined: its whole plan
                node_plan = plan.node_plan(state, node, netpol=netpol()) if partial else \
                    next(p for p in plans if p.netns == node.netns)
                stale_sets = ipsets.sync(node.netns, netpol()[1].sets, fresh=node.netns in fresh)
                iptables.apply(node.netns, node_plan.iptables, fresh=node.netns in fresh)
                destroy_sets(node.netns, stale_sets)
                chain_owner[node.netns] = {k[2]: o for k, o in node_plan.owners.items() if k[0] == "chain"}
        if state.cluster.ipv6:
            self._sync_ip6tables(state, old, plans, partial, fresh, netpol, changes, old_netpol, netpol_inputs)
        for netns, stale_names in stale6:
            ipsets.destroy(netns, stale_names)
        lan = next(p for p in plans if p.netns == state.lan_netns())
        iptables.apply(lan.netns, lan.iptables, fresh=lan.netns in fresh)   # faults' rules; the cloud writes the balancers'
        for netns, (written, deleted) in iptables.log:
            changes.chains[netns] = (written, deleted)
            if netns == state.lan_netns():
                changes.add("faults", [(netns, events.chains_message(written, deleted))])
                continue
            by_agent = {}
            for chain in written:
                by_agent.setdefault(chain_owner[netns].get(chain, "kube-proxy"), ([], []))[0].append(chain)
            for chain in deleted:                       # stale chains carry their agent's prefix
                by_agent.setdefault(chain_owner[netns].get(chain) or _stale_chain_owner(chain), ([], []))[1].append(chain)
            for agent, (w, d) in by_agent.items():
                changes.add(agent, [(netns, events.chains_message(w, d))])
        changes.iptables_writes += iptables.writes
        for netns, written, destroyed in ipsets.log:
            changes.add("kube-router", [(netns, _sets_message(written, destroyed))])
        changes.ipset_writes = ipsets.writes
        for netns, (written, deleted, operations), ref in nftables.log if nftables else ():
            what = events.chains_message(written, deleted) or f"updated map elements ({operations} operations)"
            family = "" if ref.startswith("ip ") else " " + ref.split(" ")[0]     # the ip6 table's: "nftables ip6: "
            changes.add("kube-proxy", [(netns, f"nftables{family}: {what}")])
        changes.kube_proxy_mode = state.cluster.kube_proxy_mode
        changes.nft_writes = nftables.writes if nftables else 0
        changes.nft_operations = nftables.operations if nftables else 0
        for family in state.cluster.families:
            flows = [] if full or old is None else kube_proxy.stale_udp_flows(
                old.services, old.endpoint_slices, state.services, state.endpoint_slices, family)
            for node in state.nodes if flows else ():
                deleted = conntrack.delete_flows(node.netns, flows, family)
                if deleted:
                    what = "" if family == "IPv4" else " IPv6"
                    changes.add("kube-proxy", [(node.netns, f"deleted {deleted}{what} conntrack entries of removed "
                                                            f"UDP endpoints")])
        progress.phase("pods", len(state.scheduled_pods()))
        if not processes.alive(state.processes.get("kube_apiserver")):
            self._certificates(state)                # an `up` killed before them: the API server needs them
        self._run_processes(state, fresh, changes, progress)
        state.synced = True
        state.phase = "Running"
        if changes.any() or not full or old is None:
            self._save(state)
        for agent, items in changes.by_agent.items():
            events.record(self.name, events.summarize(state, agent, items), agent, why)
        self._wait_served(state, changes, full)
        return changes

    def _sync_ip6tables(self, state, old, plans, partial, fresh, netpol, changes, old_netpol, netpol_inputs):
        """The IPv6 rules of a dual-stack or IPv6 lab (kube-proxy's, flanneld's and
        kube-router's IPv6 side, each family with its own tables as each agent runs a proxier
        or a sync per family), as the IPv4 ones: after a converged command only the chains of
        what changed (kube-proxy's changed ports, kube-router's changed policies), else every
        node's tables read back with ip6tables-save and what differs from the plan written,
        with one ip6tables-restore per node."""
        ip6 = iptables_backend.applier(state.cluster.iptables_applier, "IPv6")
        nft_mode = kube_proxy_nft.uses_nftables(state.cluster)
        owners = {}
        for node in state.nodes:
            if partial and node.name in old.nodes and node.netns not in fresh:
                work = {"nat": ({}, []), "filter": ({}, [])} if nft_mode else kube_proxy.sync_changes(
                    old.services, old.endpoint_slices, state.services, state.endpoint_slices, node,
                    state.cluster.pod_subnet6, "IPv6")
                owner = {c: "kube-proxy" for write, stale in work.values() for c in [*write, *stale]}
                if old_netpol is not None:
                    (before, old_policies), policies = old_netpol, netpol()[1]
                    write, stale = kube_router.sync_changes(before, netpol_inputs, node.name, old_policies, policies,
                                                            kube_router.IPV6)
                    work["filter"] = ({**work["filter"][0], **write}, work["filter"][1] + stale)
                    owner.update({c: "kube-router" for c in [*write, *stale]})
                ip6.apply_changes(node.netns, {t: w for t, w in work.items() if w[0] or w[1]})
                owners[node.netns] = owner
                continue
            node_plan = plan.node_plan(state, node, netpol=netpol()) if partial else \
                next(p for p in plans if p.netns == node.netns)
            ip6.apply(node.netns, node_plan.ip6tables, fresh=node.netns in fresh)
            owners[node.netns] = {k[2]: o for k, o in node_plan.owners.items() if k[0] == "chain6"}
        for netns, (written, deleted) in ip6.log:
            by_agent = {}
            for chain in written:
                by_agent.setdefault(owners[netns].get(chain, "kube-proxy"), ([], []))[0].append(chain)
            for chain in deleted:
                by_agent.setdefault(owners[netns].get(chain) or _stale_chain_owner(chain), ([], []))[1].append(chain)
            for agent, (w, d) in by_agent.items():
                changes.add(agent, [(netns, "ip6tables: " + events.chains_message(w, d))])
        changes.iptables_writes += ip6.writes

    def _sync_nftables(self, nftables, state, old, node, partial, fresh):
        """kube-proxy's nftables sync of one node, per family (the IPv4 proxier's `ip
        kube-proxy`, the IPv6 one's `ip6 kube-proxy`): the full transaction into a fresh
        namespace, the changed ports only after a converged command, else the table read
        back and only what differs written."""
        for family in getattr(state.cluster, "families", ("IPv4",)):    # (a test's stand-in cluster may not say)
            _sync_nftables_family(nftables, state, old, node, partial, fresh, family)

    def _wait_served(self, state, changes, full=False):
        """Wait for the pod servers to follow the saved state; one found dead meanwhile (a
        process that was ending as we looked) is started again, once. A full sync also has
        the cloud read its balancers' tables back."""
        saved = self.store.path.stat().st_mtime_ns
        for server in kubelet.pod_servers(state):
            if (state.processes.get(server) or {}).get("pid") == os.getpid():
                continue                             # the lab process making this change: it has seen it
            since = cloud.request_resync(self.name) if full and server == "cloud" else saved
            for attempt in (1, 2):
                try:
                    kubelet.wait_served(state.lab, server, state.processes[server], since)
                    break
                except NetlabError:
                    if attempt == 2 or processes.alive(state.processes[server]):
                        raise
                    state.processes[server] = kubelet.start_pod_server(state.lab, server)
                    changes.add("kubelet", [(state.lab, f"started {server}, which serves the pods")])
                    self._save(state)

    def _run_processes(self, state, fresh, changes, progress):
        """kubelet's part, level-triggered: resolver files for new pods, the lab's pod servers
        (their records saved before any container starts), then containers whose process is
        not running (started, or restarted)."""
        now = _now()
        pods = state.scheduled_pods()                # a Pending pod has no sandbox and runs nothing
        for pod in pods:
            if pod.netns in fresh:
                kubelet.write_pod_files(state, pod)
                pod.created = pod.created or now
        wanted = kubelet.pod_servers(state)
        self._keep_running(state, wanted, lambda name: not name.startswith(WG_PROCESS),
                           lambda name: kubelet.start_pod_server(state.lab, name), "which serves the pods", changes)
        for pod in pods:
            progress.advance()
            running = {r["container"] for r in pod.pids if processes.alive(r)}
            missing = [c for c in pod.template.containers
                       if c.name not in running and kubelet.container_argv(state, pod, c) is not None]
            if missing:
                pod.pids = [r for r in pod.pids if r["container"] in running]
                pod.pids += kubelet.start_commands(state, pod, only={c.name for c in missing})
                changes.add("kubelet", [(pod.netns, f"started container {', '.join(c.name for c in missing)}")])

    def _keep_running(self, state, wanted, mine, start, what, changes):
        """Lab processes, level-triggered: of those `mine` says are this kind's, the `wanted`
        names run (started, their records saved before anything else), others end. A process
        a killed command started after its last save is running but unrecorded: it is adopted
        (as a runtime lists its containers) rather than started a second time."""
        for rec in kubelet.announced(self.name):
            name = rec.get("name") or ""
            if not mine(name) or not processes.alive(rec) or (state.processes.get(name) or {}).get("pid") == rec["pid"]:
                continue
            if name in wanted and not processes.alive(state.processes.get(name)):
                state.processes[name] = {"pid": rec["pid"], "start": rec["start"]}
                changes.add("kubelet", [(state.lab, f"adopted {name}, started by an interrupted command")])
            else:
                processes.stop(rec)
                changes.add("kubelet", [(state.lab, f"stopped a second {name}")])
        started = [s for s in wanted if not processes.alive(state.processes.get(s))]
        for name in started:
            state.processes[name] = start(name)
            changes.add("kubelet", [(state.lab, f"started {name}, {what}")])
        if started:
            self._save(state)                        # their records, before anything else
        for name in [s for s in state.processes if mine(s) and s not in wanted]:
            rec = state.processes.pop(name)
            if rec["pid"] == os.getpid():
                continue                             # the process making this change ends by itself after it
            processes.stop(rec)
            changes.add("kubelet", [(state.lab, f"stopped {name}: nothing needs it any more")])
        return started

    def _run_wireguard(self, state, changes):
        """flanneld's wireguard backend, before its devices are configured: every node's key
        (/run/flannel/wgkey, made when missing; its public key on the Node for the others), and
        where the kernel makes no wireguard devices one wireguard-go per device, a lab process
        in the node's namespace with the node's own /run/wireguard."""
        c = state.cluster
        on = c.flannel_backend == "wireguard"
        state.wireguard = (state.wireguard or preflight.wireguard_implementation()) if on else ""
        for node in state.nodes if on else ():
            node.wg_public_key, made = node_files.wireguard_key(state.lab, node.name)
            if made:
                changes.add("flannel", [(node.netns, "wrote a new private key to /run/flannel/wgkey")])
        serving = {f"{WG_PROCESS}{dev}.{node.name}": (node, dev) for node in state.nodes
                   for dev, _ in flannel_wg.devices(c)} if on and state.wireguard == wireguard.USERSPACE else {}

        def start(name):
            node, dev = serving[name]
            with kubelet.process_log(state.lab, name) as log:
                proc = wireguard.start(node.netns, dev, flannel_wg.socket_dir(state.lab, node.name), log,
                                       names.STATE_ROOT)
            kubelet.announce(state.lab, name, proc.pid)
            return processes.record(proc)
        started = self._keep_running(state, list(serving), lambda name: name.startswith(WG_PROCESS), start,
                                     "which serves the node's WireGuard device", changes)
        for name in started:
            node, dev = serving[name]
            rec = state.processes[name]
            try:
                wireguard.wait_ready(node.netns, dev, flannel_wg.socket_dir(state.lab, node.name),
                                     lambda: processes.alive(rec))
            except NetlabError as e:
                log = names.state_dir(state.lab) / "logs" / f"{name}.log"
                last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
                raise NetlabError(f"{e}: {last[0] if last else 'no word'} (see {log})") from None

    def down(self):
        with self.locked():
            self._teardown(self.store.load())

    def _teardown(self, state):
        """Reverse order, every step idempotent: processes, then namespaces, then records."""
        processes.stop_all([rec for pod in state.pods for rec in pod.pids] + list(state.processes.values())
                         + kubelet.announced(self.name))
        recorded = list(state.netns)
        _remove_netns(self.name, reversed(recorded + [n for n in self._unclaimed_netns() if n not in recorded]))
        wireguard.release_socket_dir(names.STATE_ROOT)
        _forget_kubeconfig(self.name)
        self.store.remove()

    def _certificates(self, state):
        """kubeadm's certificates for the API server: its serving names and addresses as a
        kind cluster's (the loopback the host reaches it on, the control plane's, the Service's)."""
        control_plane = next(n for n in state.nodes if n.role == "control-plane")
        service_ip = next(s.cluster_ip for s in state.services if s.key == "default/kubernetes")
        dns = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{DOMAIN[:-1]}",
               control_plane.name, "localhost"]
        return pki.ensure(self.store.dir, self.name, ["127.0.0.1", control_plane.ip, service_ip], dns)

    def _kubeconfig_entries(self, state):
        """(lab, server, CA, admin certificate, admin key): what a kubeconfig says of the lab."""
        p = pki.paths(self.store.dir)
        return (self.name, f"https://127.0.0.1:{state.api_port}", p.ca_crt.read_bytes(), p.admin_crt.read_bytes(),
                p.admin_key.read_bytes())

    def kubeconfig(self):
        """The lab's kubeconfig, as `kind get kubeconfig` prints it."""
        return kubeconfig.render(*self._kubeconfig_entries(self.state()))

    def _export_kubeconfig(self, state):
        """As `kind create cluster`: the lab's cluster, user and context in the user's kubeconfig, current."""
        kubeconfig.merge(*self._kubeconfig_entries(state))

    def _unclaimed_netns(self):
        """Namespaces with this lab's prefix that no other lab's record claims."""
        others, unreadable = set(), []
        for other in all_labs():
            if other != self.name:
                try:
                    others.update(Store(other).load().netns)
                except LabNotFound:
                    pass
                except StateUnreadable:              # its record is lost: what its prefix names is its own
                    unreadable.append(other)
        return [n for n in ns.list_names() if names.belongs_to(self.name, n) and n not in others
                and not any(names.belongs_to(u, n) for u in unreadable)]

    @classmethod
    def cleanup(cls, name=None):
        """Remove a crashed lab: from its record if it has one, else by its name prefix.
        Without a name, every lab that has a record. Returns the names of the labs it found
        something of (a lab never up, or already gone, is not among them)."""
        preflight.sweep_scratch()
        targets = [name] if name else all_labs()
        cleaned = []
        for target in targets:
            lab = cls(target)
            with lab.locked():
                if not (lab.store.dir.exists() or lab._unclaimed_netns()):
                    continue                         # nothing of it on this machine: nothing to do
                cleaned.append(target)
                try:
                    state = lab.store.load()
                except (LabNotFound, StateUnreadable):
                    state = None                     # no record to go by: the name prefix will do
                if state is not None:
                    lab._teardown(state)
                else:
                    processes.stop_all(kubelet.announced(lab.name))
                    _remove_netns(lab.name, reversed(lab._unclaimed_netns()))
                    wireguard.release_socket_dir(names.STATE_ROOT)
                    _forget_kubeconfig(lab.name)
                    lab.store.remove()
        return cleaned

    # --- looking at it -----------------------------------------------------------------

    def get(self, kind, namespace="default", all_namespaces=False):
        """API objects of a kind (a resource's plural, as KINDS names them, or kubectl's singular
        or short name) in the Kubernetes API's shapes and order: what kube-apiserver serves,
        of `namespace` (or, with all_namespaces, of every one) for a namespaced kind."""
        from netlab.api import printers
        short = {"no": "nodes", "po": "pods", "deploy": "deployments", "rs": "replicasets", "ds": "daemonsets",
                 "svc": "services", "ep": "endpoints", "ing": "ingresses", "ns": "namespaces", "cm": "configmaps",
                 "ev": "events", "ingressclass": "ingressclasses", "ingress": "ingresses", "netpol": "networkpolicies",
                 "networkpolicy": "networkpolicies"}
        plural = short.get(kind) or next((k for k in KINDS if kind in (k, k[:-1])), None)
        if plural is None:
            raise NetlabError(f"unknown resource type {kind!r} (known: {', '.join(KINDS)})")
        found = objects(self.state(), plural)        # kube-apiserver's view of the state
        if all_namespaces or not printers.namespaced(plural):
            return found
        return [o for o in found if o["metadata"].get("namespace") == namespace]

    def iptables(self, node, table=None, family="IPv4"):
        """A node's rules (NAME or the name without the lab's prefix) as iptables-save prints
        them, read with the lab's own backend; `family` IPv6: ip6tables-save's (a dual-stack lab)."""
        state = self.state()
        netns = state.node(node).netns
        if family not in state.cluster.families:
            raise NetlabError(f"lab {self.name} is single-stack {state.cluster.primary}: its nodes hold no {family} "
                              f"rules of its agents ({'netlab iptables -6' if family == 'IPv4' else 'networking.ipFamily: dual makes a dual-stack lab'})")
        return iptables_backend.save(netns, state.cluster.iptables_applier, *(["-t", table] if table else []),
                                     family=family)

    def nft(self, node):
        """A node's `ip kube-proxy` table as `nft list table` prints it (nftables mode), then its
        `ip6 kube-proxy` table in a dual-stack lab."""
        state = self.state()
        n = state.node(node)
        if not kube_proxy_nft.uses_nftables(state.cluster):
            raise NetlabError(f"lab {self.name} runs kube-proxy in {state.cluster.kube_proxy_mode} mode, which writes "
                              f"no nftables table: its rules are iptables chains (netlab iptables {node})")
        out = []
        for family in (kube_proxy_nft.FAMILIES[f][0] for f in state.cluster.families):
            text = nft.list_table(n.netns, family, kube_proxy_nft.TABLE)
            if text is None:
                raise NetlabError(f"node {n.name} has no {family} kube-proxy table (netlab reconcile writes it again)")
            out.append(text)
        return "".join(out)

    def netns_of(self, target):
        """The namespace behind a target: external, lan, a node (its name, or the name without
        the lab's prefix: a node comes before a pod of the same name), a pod (NAME or
        NAMESPACE/NAME)."""
        state = self.state()
        if target == "external":
            return state.external_netns()
        if target == "lan":
            return state.lan_netns()
        node = state.find_node(target)
        if node is not None:
            return node.netns
        namespace, _, name = target.rpartition("/")
        pods = [p for p in state.pods if p.name == name and p.namespace == (namespace or "default")]
        if pods and pods[0].node is None:
            raise NetlabError(f"pod {pods[0].key} is Pending, with no network namespace yet: {pods[0].unschedulable}")
        if pods:
            return pods[0].netns
        raise NetlabError(f"lab {self.name}: no node or pod named {target!r}")

    def exec_argv(self, target, argv):
        """The command line that runs argv in the target's namespace as `ip netns exec` runs
        it; in a pod, with the pod's hostname too and its image's programs (`/agnhost`), as
        `kubectl exec` sees it; in a node, with the node's /run/wireguard where it has one."""
        state = self.state()
        netns = self.netns_of(target)
        pod = next((p for p in state.pods if p.netns == netns), None)
        if pod is not None:
            return kubelet.exec_argv(pod, argv)
        node = next((n for n in state.nodes if n.netns == netns), None)
        # a node whose WireGuard devices wireguard-go serves: with its own /run/wireguard, so `wg` finds them
        sockets = flannel_wg.socket_dir(state.lab, node.name) if node and state.wireguard == wireguard.USERSPACE else None
        return wireguard.in_node(netns, sockets, argv)

    def exec(self, target, argv, **kwargs):
        return subprocess.run(self.exec_argv(target, argv), **kwargs)

    def prober(self):
        from netlab.observe.probes import Prober
        return Prober(self)


# --- the API's view of a state ------------------------------------------------------------------

# The namespaces every kind cluster with flannel has.
SYSTEM_NAMESPACES = ("default", "kube-flannel", "kube-node-lease", "kube-public", "kube-system")


def namespaces_of(state):
    """Every namespace of the lab: the system ones, those requests created, and those its objects use."""
    used = {o.namespace for kind in (state.pods, state.deployments, state.services, state.ingresses,
                                     state.network_policies) for o in kind}
    extra = {"ingress-nginx"} if state.cluster.ingress else set()
    return sorted(set(SYSTEM_NAMESPACES) | extra | used | set(state.namespaces))


def objects(state, kind):
    """Every object of a kind (a resource's plural), in the API's shapes, from one state: what
    `netlab get` prints and kube-apiserver serves."""
    by_name = lambda obj: (obj.namespace, obj.name)                     # noqa: E731  kubectl's order
    if kind == "nodes":
        return [apiserver.node_object(state, n, flanneld.annotations(n, state.cluster)) for n in state.nodes]
    if kind == "pods":
        return [apiserver.pod_object(state, p, kubelet.pod_running(p)) for p in sorted(state.pods, key=by_name)]
    if kind == "deployments":
        ready = {p.key for p in state.scheduled_pods() if p.ready and kubelet.pod_running(p)}
        return [apiserver.deployment_object(state, d, ready) for d in sorted(state.deployments, key=by_name)]
    if kind == "services":
        return [apiserver.service_object(state, s) for s in sorted(state.services, key=by_name)]
    if kind == "endpoints":
        return [apiserver.endpoints_object(state, e) for e in sorted(state.endpoints, key=by_name)]
    if kind == "ingresses":
        return [apiserver.ingress_object(state, i) for i in sorted(state.ingresses, key=by_name)]
    if kind == "networkpolicies":
        return [apiserver.networkpolicy_object(state, p) for p in sorted(state.network_policies, key=by_name)]
    if kind == "daemonsets":
        return apiserver.daemonset_objects(state)
    if kind == "endpointslices":
        return [apiserver.endpointslice_object(state, s) for s in sorted(state.endpoint_slices, key=by_name)]
    if kind == "namespaces":
        return [apiserver.namespace_object(state, n, state.namespaces.get(n, {}).get("labels"),
                                           state.namespaces.get(n, {}).get("created", "")) for n in namespaces_of(state)]
    if kind == "replicasets":
        ready = {p.key for p in state.scheduled_pods() if p.ready and kubelet.pod_running(p)}
        return apiserver.replicaset_objects(state, ready)
    if kind == "configmaps":
        return apiserver.configmap_objects(state, DOMAIN.rstrip("."))
    if kind == "ingressclasses":
        return apiserver.ingressclass_objects(state, kubeadm.INGRESS_IMAGE.rpartition(":v")[2])
    if kind == "events":
        return events.event_objects(events.read(state.lab), state)
    return []


def remove_node(state, name, log):
    """A node leaves (NAME or the name without the lab's prefix); the faults naming it go too."""
    node, gone = cluster.remove_node(state, name, log=log)
    gone_faults = [f for f in state.faults if node.name in f["targets"]]
    log += [("FaultCleared", f"fault/{f['kind']}", "", " ".join(f["targets"])) for f in gone_faults]
    state.faults = [f for f in state.faults if f not in gone_faults]
    return node, gone


def _sync_nftables_family(nftables, state, old, node, partial, fresh, family="IPv4"):
    """kube-proxy's proxier of one family in nftables mode on one node (Lab._sync_nftables):
    its table's stale chains kept under "<netns>" (IPv4) or "<netns> ip6"."""
    key = node.netns if family == "IPv4" else f"{node.netns} ip6"
    stale = state.stale_chains.setdefault(key, {})
    if partial and node.name in old.nodes and not fresh:
        pairs = kube_proxy_nft.sync(old.services, old.endpoint_slices, state.services, state.endpoint_slices,
                                    node, state.cluster, family)
        if pairs or stale:
            nftables.partial(node.netns, kube_proxy_nft.empty_table(family), pairs,
                             kube_proxy_nft.live_cluster_ips(state.services, family), stale)
    else:
        table = kube_proxy_nft.node_table(state.services, state.endpoint_slices, node, state.cluster, family)
        nftables.full(node.netns, table) if fresh else nftables.resync(node.netns, table, stale)
    if not stale:
        state.stale_chains.pop(key, None)
