#!/usr/bin/env python3
"""kube-proxy at scale: planning plus applying N Services x 2 endpoints on 3 nodes, through
both appliers, against a raw restore of the very same rule text in the same run; and one
endpoint change with 1,000 Services, partial sync against a full resync.

    sudo .venv/bin/python bench/kube_proxy.py [--services 1000 5000] [--partial 1000]
        [--modes 1000 5000 10000] [--connect 10 1000 5000 10000] [--connections 1000]

(an empty list, e.g. `--services`, skips that part).

For each size, on three fresh scratch namespaces per measurement:
  raw iptables-restore          the plan's text piped to `iptables-restore --noflush` (baseline)
  restore applier               planning + reading each table back + one iptables-restore per node
  raw iptables-legacy-restore   the same text into the legacy tables (the second baseline)
  python-iptables applier       planning + reading back + libiptc commits per table
and, on the namespaces the restore applier filled, a second sync with nothing changed.

Then kube-proxy's two modes side by side (`--modes`, `--connect`), one scratch node
namespace per mode and size:
  full sync       plan + write into the fresh node (iptables: RestoreApplier.apply(fresh=True);
                  nftables: NftApplier.full, kube-proxy's one `nft -f` transaction)
  partial sync    one Service gains a third endpoint: plan the changed port + write its
                  chains (iptables: sync_changes + apply_changes; nftables: sync + partial);
                  the median of several, each a different Service
  connect         a client pod's namespace routed through the node to a server pod's: the
                  median time of a new TCP connection to the ClusterIP of the Service whose
                  rule is the last of KUBE-SERVICES, each one a new conntrack entry, so its
                  SYN is DNATed by the node's nat rules (iptables walks KUBE-SERVICES rule by
                  rule; nftables looks the ClusterIP up in the service-ips verdict map)
"""

import argparse
import gc
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import Namespaces, ip_batch  # noqa: E402
from netlab.api.objects import SERVICE_NAME_LABEL, EndpointSlice, Port, SliceEndpoint  # noqa: E402
from netlab.api.spec import ClusterConfig, ServiceManifest, ServicePort  # noqa: E402
from netlab.errors import NetlabError  # noqa: E402
from netlab.kernel import netns as ns  # noqa: E402
from netlab.kernel.iptables_restore import RestoreApplier, render  # noqa: E402
from netlab.kernel.nft import NftApplier  # noqa: E402
from netlab.kernel.python_iptables import PythonIptablesApplier  # noqa: E402
from netlab.node.proxy import iptables as kube_proxy  # noqa: E402
from netlab.node.proxy import nftables as kube_proxy_nft  # noqa: E402
from netlab.node.proxy.endpointslicecache import port_name  # noqa: E402
from netlab.values import nftables as nft_values  # noqa: E402
from netlab.values.iptables import restore_text  # noqa: E402

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


# --- the two modes side by side ------------------------------------------------------------

NODE = SimpleNamespace(name=NODES[0].name, ip="172.18.0.2")     # the node the mode rows plan for
CLUSTER = ClusterConfig(pod_subnet=POD_CIDR, service_subnet="10.96.0.0/12")
CLIENT_NET, CLIENT_GW = "10.244.3.2/24", "10.244.3.1"     # no endpoint of cluster() is in 10.244.3.0/24
SERVER_LINK, SERVER_GW = "10.244.200.2", "10.244.200.1"
SERVICE_PORT, TARGET_PORT = 80, 8080
RESET_ON_CLOSE = struct.pack("ii", 1, 0)    # SO_LINGER 0: close sends RST, no TIME_WAIT, a new port each time
SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""


def ms(seconds):
    return seconds * 1000


def last_service(services):
    """The Service whose rule kube-proxy's iptables mode writes last in KUBE-SERVICES (its
    ports are written in ServicePortName order): the one a packet reaches after every other."""
    return max(services, key=lambda s: (port_name(s, s.ports[0]), s.ports[0].protocol))


class IptablesMode:
    name = "iptables"

    def full(self, netns, services, slices):
        """(rules written, plan s, write s) of a full sync into a fresh node."""
        start = time.perf_counter()
        tables = kube_proxy.node_tables(services, slices, NODE, POD_CIDR)
        planned = time.perf_counter()
        RestoreApplier().apply(netns, tables, fresh=True)
        done = time.perf_counter()
        target = last_service(services)
        services_chain = tables["nat"].chains["KUBE-SERVICES"]
        assert services_chain[-2].startswith(f"-d {target.cluster_ip}/32 "), "the target is not KUBE-SERVICES' last"
        return sum(len(r) for t in tables.values() for r in t.chains.values()), planned - start, done - planned

    def partial(self, netns, old_services, old_slices, services, slices):
        """(rules written, plan s, write s) of a partial sync."""
        start = time.perf_counter()
        work = kube_proxy.sync_changes(old_services, old_slices, services, slices, NODE, POD_CIDR)
        planned = time.perf_counter()
        applier = RestoreApplier()
        applier.apply_changes(netns, {t: w for t, w in work.items() if w[0] or w[1]})
        done = time.perf_counter()
        assert applier.writes == 1
        return sum(len(r) for w in work.values() for r in w[0].values()), planned - start, done - planned


class NftablesMode:
    name = "nftables"

    def __init__(self):
        self.stale = {}                          # netns -> {chain: flushed at}, as the lab keeps it

    def full(self, netns, services, slices):
        """(operations written, plan s, write s): the lines of kube-proxy's full-sync transaction."""
        start = time.perf_counter()
        table = kube_proxy_nft.node_table(services, slices, NODE, CLUSTER)
        planned = time.perf_counter()
        applier = NftApplier()
        applier.full(netns, table)
        done = time.perf_counter()
        assert applier.operations == len(nft_values.script(table))
        return applier.operations, planned - start, done - planned

    def partial(self, netns, old_services, old_slices, services, slices):
        """(operations written, plan s, write s), as lab.py's _sync_nftables does it."""
        start = time.perf_counter()
        pairs = kube_proxy_nft.sync(old_services, old_slices, services, slices, NODE, CLUSTER)
        live = {s.cluster_ip for s in services if s.cluster_ip not in (None, "None")}
        planned = time.perf_counter()
        applier = NftApplier()
        applier.partial(netns, kube_proxy_nft.empty_table(), pairs, live, self.stale.setdefault(netns, {}))
        done = time.perf_counter()
        assert applier.writes == 1
        return applier.operations, planned - start, done - planned


def wire(scratch, node, tag, target, slices):
    """A client pod and a server pod, each joined to the node by a veth: the client's packets
    to the ClusterIP are routed through the node (its nat prerouting DNATs them), the server
    holds the target Service's endpoint addresses and accepts on its target port. Returns
    the client's namespace."""
    client, server = scratch.create(f"{tag}.client"), scratch.create(f"{tag}.server")
    endpoints = [e.addresses[0] for s in slices if s.labels[SERVICE_NAME_LABEL] == target.name for e in s.endpoints]
    ip_batch(node, ["link set lo up",
                    f"link add veth-c type veth peer name eth0 netns {client}",
                    f"link add veth-s type veth peer name eth0 netns {server}",
                    f"addr add {CLIENT_GW}/24 dev veth-c", f"addr add {SERVER_GW}/24 dev veth-s",
                    "link set veth-c up", "link set veth-s up",
                    *[f"route add {ip}/32 via {SERVER_LINK}" for ip in endpoints]])
    ns.write_sysctl(node, "net/ipv4/ip_forward", 1)
    ip_batch(client, ["link set lo up", f"addr add {CLIENT_NET} dev eth0", "link set eth0 up",
                      f"route add default via {CLIENT_GW}"])
    ip_batch(server, ["link set lo up", f"addr add {SERVER_LINK}/24 dev eth0",
                      *[f"addr add {ip}/32 dev eth0" for ip in endpoints], "link set eth0 up",
                      f"route add default via {SERVER_GW}"])
    proc = scratch.start(server, [sys.executable, "-c", SERVER, str(TARGET_PORT)])
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"{server}: the TCP server did not start")
    return client


def connect_times(client, ip, count):
    """count new TCP connections from the client pod to ip:80: the connect() time of each, in s."""
    times = []
    with ns.entered(client):
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
                s.settimeout(5)
                start = time.perf_counter()
                s.connect((ip, SERVICE_PORT))
                times.append(time.perf_counter() - start)
            finally:
                s.close()
    return times


def load(scratch, mode, n, partials, wired):
    """One mode at one size: a fresh node, its full sync, `partials` partial syncs (each a
    different Service gaining a third endpoint), and, if `wired`, the pods around it."""
    services, slices = cluster(n)
    tag = f"{mode.name}.{n}"
    node = scratch.create(f"{tag}.node")
    row = {"mode": mode.name, "services": n}
    try:
        row["written"], plan_s, write_s = mode.full(node, services, slices)
    except NetlabError as e:                # seen once with nft at 10,000 Services, with no message
        row["note"] = f"the first full sync failed ({e}); measured again into a second fresh node"
        node = scratch.create(f"{tag}.node2")
        row["written"], plan_s, write_s = mode.full(node, services, slices)
    row["full"], row["full plan"], row["full write"] = plan_s + write_s, plan_s, write_s
    target = last_service(services)
    runs = []
    for i in [i for i in range(n // 2, n) if services[i] is not target][:partials]:
        changed = with_one_more_endpoint(slices, i)
        runs.append(mode.partial(node, services, slices, services, changed))
        slices = changed
    if runs:
        row["partial written"] = statistics.median(r[0] for r in runs)
        row["partial plan"] = statistics.median(r[1] for r in runs)
        row["partial write"] = statistics.median(r[2] for r in runs)
        row["partial"] = statistics.median(r[1] + r[2] for r in runs)
    if wired:
        row["client"], row["ip"] = wire(scratch, node, tag, target, slices), target.cluster_ip
        try:
            connect_times(row["client"], row["ip"], 1)
        except OSError as e:
            raise SystemExit(f"{tag}: the client pod cannot reach {target.key} at {row['ip']}:{SERVICE_PORT} "
                             f"through the node's rules: {e}") from None
    return row


def measure_modes(sync_sizes, connect_sizes, partials, connections, rounds):
    """Every (mode, size) loaded once; the connection samples taken in rounds over all of
    them in turn, so a slow moment of the machine falls on every point alike."""
    rows = {}
    scratch = Namespaces()
    try:
        for mode in (IptablesMode(), NftablesMode()):
            for n in sorted(set(sync_sizes) | set(connect_sizes)):
                print(f"  loading {mode.name}, {n:,} Services ...", file=sys.stderr, flush=True)
                rows[mode.name, n] = load(scratch, mode, n, partials if n in sync_sizes else 0, n in connect_sizes)
        samples = {key: [] for key, row in rows.items() if "client" in row}
        per_round = max(1, connections // rounds)
        gc.disable()
        try:
            for _ in range(rounds):
                for key in samples:
                    samples[key] += connect_times(rows[key]["client"], rows[key]["ip"], per_round)
        finally:
            gc.enable()
        for key, times in samples.items():
            rows[key]["connect"] = statistics.median(times)
            rows[key]["connections"] = len(times)
    finally:
        scratch.close()
    return rows


def verdict(ok):
    return "goal met" if ok else "goal not met"


def report_modes(rows, sync_sizes, connect_sizes):
    if sync_sizes:
        print(f"{'mode':<9} {'services':>8} {'written':>8} {'full sync':>11} {'(plan':>9} {'write)':>10}"
              f" {'partial sync':>13} {'(plan':>8} {'write)':>8} {'partial/full':>13} {'partial written':>16}")
        for mode in ("iptables", "nftables"):
            for n in sync_sizes:
                r = rows[mode, n]
                print(f"{mode:<9} {n:>8,} {r['written']:>8,} {ms(r['full']):>8,.0f} ms {ms(r['full plan']):>9,.0f}"
                      f" {ms(r['full write']):>10,.0f} {ms(r['partial']):>10,.1f} ms {ms(r['partial plan']):>8.1f}"
                      f" {ms(r['partial write']):>8.1f} {r['partial'] / r['full']:>13.4f}"
                      f" {r['partial written']:>16,.0f}")
        for (mode, n), r in rows.items():
            if "note" in r:
                print(f"note: {mode}, {n:,} Services: {r['note']}")
        print("\none node; written: rules (iptables, nat + filter) or lines of the `nft -f` transaction (nftables: "
              "tables, chains, sets, flushes, rules, elements); full sync: plan + write into a fresh node; partial "
              "sync: one Service gains a third endpoint, plan the changed port + write its chains (median of "
              "several, each a different Service); plan and write in ms\n")
    if connect_sizes:
        base = min(connect_sizes)
        print(f"{'services':>8} {'iptables':>10} {'nftables':>10} {'iptables/iptables(' + str(base) + ')':>22}"
              f" {'nftables/nftables(' + str(base) + ')':>22} {'iptables/nftables':>18}")
        for n in connect_sizes:
            i, f = rows["iptables", n]["connect"], rows["nftables", n]["connect"]
            print(f"{n:>8,} {i * 1e6:>7.1f} µs {f * 1e6:>7.1f} µs {i / rows['iptables', base]['connect']:>22.2f}"
                  f" {f / rows['nftables', base]['connect']:>22.2f} {i / f:>18.2f}")
        count = rows["iptables", base]["connections"]
        print(f"\nmedian time of connect() from a client pod to the ClusterIP:80 of the Service last in "
              f"KUBE-SERVICES, routed through the node that DNATs it to a server pod; {count} new connections "
              "per point (each a new conntrack entry, closed with RST), taken in rounds over all points\n")
    goal_sizes = [n for n in sync_sizes if n >= 10000]
    if goal_sizes:
        n = goal_sizes[0]
        ratio = rows["nftables", n]["partial"] / rows["nftables", n]["full"]
        print(f"goal: nftables partial sync <= 0.02 of its full sync at {n:,} Services: {ratio:.4f}: "
              f"{verdict(ratio <= 0.02)}")
    else:
        print("goal: nftables partial sync <= 0.02 of its full sync at 10,000 Services: not measured "
              "(add 10000 to --modes)")
    if len(connect_sizes) > 1 and min(connect_sizes) <= 10 and max(connect_sizes) >= 10000:
        curve = [rows["nftables", n]["connect"] for n in connect_sizes]
        spread = max(curve) / min(curve)
        print(f"goal: nftables connection setup flat within 1.2x from {min(connect_sizes)} to {max(connect_sizes):,} "
              f"Services (slowest / fastest point): {spread:.2f}: {verdict(spread <= 1.2)}")
    else:
        print("goal: nftables connection setup flat within 1.2x from 10 to 10,000 Services: not measured "
              "(--connect needs 10 and 10000)")


def _terminated(signum, frame):
    raise SystemExit(128 + signum)          # unwinds through the finally blocks that clean up


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--partial", type=int, nargs="*", default=[1000],
                        help="sizes for the one-endpoint-change measurement (partial vs full sync)")
    parser.add_argument("--modes", type=int, nargs="*", default=[1000, 5000, 10000],
                        help="sizes for the iptables/nftables sync table (full and one-endpoint partial sync)")
    parser.add_argument("--connect", type=int, nargs="*", default=[10, 1000, 5000, 10000],
                        help="sizes for the connection-setup curve (new TCP connections to the last Service)")
    parser.add_argument("--connections", type=int, default=1000, help="new connections per mode and size")
    parser.add_argument("--rounds", type=int, default=10, help="rounds the connections are taken in, over every point")
    parser.add_argument("--partials", type=int, default=5, help="partial syncs per mode and size (their median)")
    args = parser.parse_args()
    if args.partials < 1 or args.connections < 1 or args.rounds < 1:
        parser.error("--partials, --connections and --rounds take a positive number")
    signal.signal(signal.SIGTERM, _terminated)
    if args.partial:
        print(f"{'services':>8} {'partial sync':>13} {'full resync':>12} {'ratio':>6} {'rules written':>14} {'read-back check':>16}")
        for n in args.partial:
            r = measure_partial(n)
            print(f"{r['services']:>8} {r['partial']:>12.3f}s {r['full']:>11.3f}s {r['partial'] / r['full']:>6.3f}"
                  f" {r['written']:>14} {r['reconcile']:>15.3f}s", flush=True)
        print("\none endpoint added to one Service, on 3 nodes; partial: plan the changed port, write its chains; "
              "full: plan every Service, write every chain (kube-proxy's full sync); read-back: netlab reconcile's "
              "iptables-save and compare (goal for the ratio: <= 0.1)\n")
    if args.services:
        appliers(args.services)
    if args.modes or args.connect:
        print("\nkube-proxy's two modes: N Services x 2 endpoints (the mode column)\n", flush=True)
        rows = measure_modes(args.modes, args.connect, args.partials, args.connections, args.rounds)
        report_modes(rows, args.modes, args.connect)


def appliers(sizes):
    print(f"{'services':>8} {'rules':>7} {'raw restore':>12} {'applier':>9} {'ratio':>6}"
          f" {'raw legacy':>11} {'python-iptables':>16} {'ratio':>6} {'unchanged':>10}")
    for n in sizes:
        r = measure(n)
        print(f"{r['services']:>8} {r['rules']:>7} {r['raw restore']:>11.2f}s {r['restore applier']:>8.2f}s"
              f" {r['restore applier'] / r['raw restore']:>6.2f} {r['raw legacy restore']:>10.2f}s"
              f" {r['python-iptables applier']:>15.2f}s {r['python-iptables applier'] / r['raw legacy restore']:>6.2f}"
              f" {r['unchanged resync']:>9.2f}s", flush=True)
    print("\nrules: nat + filter rules over the 3 nodes; ratio: applier / raw restore of the same text "
          "(goal for the restore applier: <= 1.5); unchanged: a second sync that reads back and writes nothing")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:                # the namespaces and servers are gone already
        sys.exit(130)
