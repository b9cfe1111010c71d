#!/usr/bin/env python3
"""kube-proxy at scale: planning plus applying N Services x 2 endpoints on 3 nodes, through
both appliers, against a raw restore of the very same rule text in the same run; and one
endpoint change with 1,000 Services, partial sync against a full resync.

    sudo .venv/bin/python bench/kube_proxy.py [--services 1000 5000] [--partial 1000]

For each size, on three fresh scratch namespaces per measurement:
  raw iptables-restore          the plan's text piped to `iptables-restore --noflush` (baseline)
  restore applier               planning + reading each table back + one iptables-restore per node
  raw iptables-legacy-restore   the same text into the legacy tables (the second baseline)
  python-iptables applier       planning + reading back + libiptc commits per table
and, on the namespaces the restore applier filled, a second sync with nothing changed.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab.node.proxy import iptables as kube_proxy  # noqa: E402
from netlab.api.objects import SERVICE_NAME_LABEL, EndpointSlice, Port, SliceEndpoint  # noqa: E402
from netlab.values.iptables import restore_text  # noqa: E402
from netlab.kernel import netns as ns  # noqa: E402
from netlab.kernel.iptables_restore import RestoreApplier, render  # noqa: E402
from netlab.kernel.python_iptables import PythonIptablesApplier  # noqa: E402
from netlab.api.spec import ServiceManifest, ServicePort  # noqa: E402

NODES = [SimpleNamespace(name=f"bench-node{i}") for i in range(3)]
POD_CIDR = "10.244.0.0/16"


def cluster(n):
    """n ClusterIP Services, each with two ready endpoints on two different nodes."""
    services, endpoints = [], []
    for i in range(n):
        name = f"svc{i}"
        services.append(ServiceManifest("bench", name, cluster_ip=f"10.96.{16 + i // 250}.{1 + i % 250}",
                                        ports=(ServicePort(80, "TCP", "http", 8080),), selector={"app": name}))
        pods = tuple(SliceEndpoint((f"10.244.{k}.{2 + i % 250}",), ready=True, node=NODES[(i + k) % 3].name)
                     for k in range(2))
        endpoints.append(slice_of(name, pods))
    return services, endpoints


def slice_of(service, endpoints):
    """The EndpointSlice kube-proxy reads for one Service of the bench."""
    return EndpointSlice("bench", f"{service}-bench", {SERVICE_NAME_LABEL: service}, endpoints=endpoints,
                         ports=(Port("http", 8080, "TCP"),))


def plan(services, endpoints):
    return {node.name: kube_proxy.node_tables(services, endpoints, node, POD_CIDR) for node in NODES}


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Scratch:
    """Three namespaces no lab owns, removed on exit."""

    def __init__(self, tag):
        self.names = [f"netlab.bench.{os.getpid()}.{tag}.{i}" for i in range(len(NODES))]

    def __enter__(self):
        for name in self.names:
            ns.create(name)
        return self.names

    def __exit__(self, *exc):
        for name in self.names:
            ns.delete(name)


def raw_restore(binary, texts):
    def run():
        for netns, text in texts:
            subprocess.run(["ip", "netns", "exec", netns, binary, "--noflush"], input=text, text=True, check=True)
    return run


def through(applier_class, services, endpoints, names):
    def run():
        applier = applier_class()
        for netns, tables in zip(names, plan(services, endpoints).values()):
            applier.apply(netns, tables)
    return run


def measure(n):
    services, endpoints = cluster(n)
    planned = plan(services, endpoints)
    rules = sum(len(r) for tables in planned.values() for t in tables.values() for r in t.chains.values())
    texts = [restore_text(t) for t in planned.values()]
    row = {"services": n, "rules": rules}
    with Scratch("raw") as names:
        row["raw restore"] = timed(raw_restore("iptables-restore", zip(names, texts)))
    with Scratch("restore") as names:
        row["restore applier"] = timed(through(RestoreApplier, services, endpoints, names))
        again = RestoreApplier()
        row["unchanged resync"] = timed(lambda: [again.apply(netns, t) for netns, t in zip(names, planned.values())])
        assert again.writes == 0
    with Scratch("rawlegacy") as names:
        row["raw legacy restore"] = timed(raw_restore("iptables-legacy-restore", zip(names, texts)))
    with Scratch("pyiptc") as names:
        row["python-iptables applier"] = timed(through(PythonIptablesApplier, services, endpoints, names))
    return row


def with_one_more_endpoint(endpoints, i):
    """The endpoint change of the partial-sync measurement: Service i gains a third pod."""
    e = endpoints[i]
    extra = SliceEndpoint((f"10.244.2.{200 + i % 50}",), ready=True, node=NODES[2].name)
    return endpoints[:i] + [slice_of(e.labels[SERVICE_NAME_LABEL], e.endpoints + (extra,))] + endpoints[i + 1:]


def measure_partial(n):
    """One endpoint change with n Services: kube-proxy's partial sync (plan the changed
    service port, write its chains) against a full resync (plan everything, write every
    chain, as kube-proxy's full sync does), on the same three namespaces, in the same run."""
    services, endpoints = cluster(n)
    changed = with_one_more_endpoint(endpoints, n // 2)
    with Scratch("partial") as names:
        first = RestoreApplier()
        for netns, tables in zip(names, plan(services, endpoints).values()):
            first.apply(netns, tables, fresh=True)

        def partial():
            applier = RestoreApplier()
            for netns, node in zip(names, NODES):
                work = kube_proxy.sync_changes(services, endpoints, services, changed, node, POD_CIDR)
                applier.apply_changes(netns, {t: w for t, w in work.items() if w[0] or w[1]})
            return applier
        t_partial = timed(partial)

        def full():
            for netns, tables in zip(names, plan(services, changed).values()):
                # Every chain of kube-proxy's written again (the built-in hooks are ensured
                # apart, as kube-proxy does, and are in place already).
                text = "".join(render(t.name, {c: t.chains[c] for c in t.user_chains()}, []) for t in tables.values())
                subprocess.run(["ip", "netns", "exec", netns, "iptables-restore", "--noflush"],
                               input=text, text=True, check=True)
        t_full = timed(full)

        def read_back():
            applier = RestoreApplier()
            for netns, tables in zip(names, plan(services, changed).values()):
                applier.apply(netns, tables)
            assert applier.writes == 0
        t_reconcile = timed(read_back)
    written = sum(len(r) for w in kube_proxy.sync_changes(services, endpoints, services, changed, NODES[0], POD_CIDR).values()
                  for r in w[0].values())
    return {"services": n, "partial": t_partial, "full": t_full, "reconcile": t_reconcile, "written": written}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--partial", type=int, nargs="*", default=[1000],
                        help="sizes for the one-endpoint-change measurement (partial vs full sync)")
    args = parser.parse_args()
    if args.partial:
        print(f"{'services':>8} {'partial sync':>13} {'full resync':>12} {'ratio':>6} {'rules written':>14} {'read-back check':>16}")
        for n in args.partial:
            r = measure_partial(n)
            print(f"{r['services']:>8} {r['partial']:>12.3f}s {r['full']:>11.3f}s {r['partial'] / r['full']:>6.3f}"
                  f" {r['written']:>14} {r['reconcile']:>15.3f}s", flush=True)
        print("\none endpoint added to one Service, on 3 nodes; partial: plan the changed port, write its chains; "
              "full: plan every Service, write every chain (kube-proxy's full sync); read-back: netlab reconcile's "
              "iptables-save and compare (goal for the ratio: <= 0.1)\n")
    if not args.services:
        return
    print(f"{'services':>8} {'rules':>7} {'raw restore':>12} {'applier':>9} {'ratio':>6}"
          f" {'raw legacy':>11} {'python-iptables':>16} {'ratio':>6} {'unchanged':>10}")
    for n in args.services:
        r = measure(n)
        print(f"{r['services']:>8} {r['rules']:>7} {r['raw restore']:>11.2f}s {r['restore applier']:>8.2f}s"
              f" {r['restore applier'] / r['raw restore']:>6.2f} {r['raw legacy restore']:>10.2f}s"
              f" {r['python-iptables applier']:>15.2f}s {r['python-iptables applier'] / r['raw legacy restore']:>6.2f}"
              f" {r['unchanged resync']:>9.2f}s", flush=True)
    print("\nrules: nat + filter rules over the 3 nodes; ratio: applier / raw restore of the same text "
          "(goal for the restore applier: <= 1.5); unchanged: a second sync that reads back and writes nothing")


if __name__ == "__main__":
    main()
