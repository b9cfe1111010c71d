"""The `netlab` command: a thin layer over netlab.Lab. Errors are one sentence and exit 1."""

import argparse
import json
import os
import sys
from pathlib import Path

from netlab.errors import NetlabError

DEFAULT_LABFILE = Path(__file__).resolve().parent.parent / "topologies" / "default.yaml"


PROBE_AREAS = ("pods, same node", "pods, across nodes", "pod matrix", "node to pod", "pod to node", "overlay",
               "egress", "services", "dns", "load balancers", "ingress")


def _parser():
    p = argparse.ArgumentParser(prog="netlab", description="A Kubernetes cluster's network from real kernel objects.")
    p.add_argument("--lab", help="the lab to act on (needed when several are up)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="build a lab from a lab file")
    up.add_argument("labfile", nargs="?", help=f"default: {DEFAULT_LABFILE.relative_to(DEFAULT_LABFILE.parents[1])}")
    up.add_argument("-f", dest="manifests", action="append", default=[], metavar="PATH",
                    help="more manifests: a file or a folder (repeatable)")
    up.add_argument("--dry-run", action="store_true", help="print the planned kernel state; create nothing")

    down = sub.add_parser("down", help="remove a lab and everything it created")
    down.add_argument("name", nargs="?")

    sub.add_parser("status", help="labs on this machine")

    clean = sub.add_parser("cleanup", help="remove the leftovers of a crashed lab")
    clean.add_argument("name", nargs="?")
    clean.add_argument("--all", action="store_true", help="every lab with a record on this machine")

    get = sub.add_parser("get", help="list nodes, pods, services, endpoints or daemonsets, as kubectl get does")
    get.add_argument("kind", choices=sorted(GET_KINDS), metavar="KIND",
                     help="nodes | pods | services | endpoints | daemonsets (and kubectl's short names)")
    get.add_argument("name", nargs="?", help="one object by name")
    get.add_argument("-n", "--namespace", default="default")
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.add_argument("-o", "--output", choices=["wide", "json"])

    ex = sub.add_parser("exec", help="run a command in a node, pod, external or lan namespace")
    ex.add_argument("target", help="NODE | POD | NAMESPACE/POD | external | lan")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")

    sc = sub.add_parser("scale", help="change a Deployment's replicas, as kubectl scale does")
    sc.add_argument("target", metavar="deployment/NAME")
    sc.add_argument("--replicas", type=int, required=True)
    sc.add_argument("-n", "--namespace", default="default")

    ap = sub.add_parser("apply", help="create or update Pods, Deployments and Services, as kubectl apply does")
    ap.add_argument("-f", dest="manifests", action="append", required=True, metavar="PATH")

    de = sub.add_parser("delete", help="delete pod/NAME, deployment/NAME, service/NAME, or what -f names")
    de.add_argument("target", nargs="?", metavar="KIND/NAME")
    de.add_argument("-f", dest="manifests", action="append", default=[], metavar="PATH")
    de.add_argument("-n", "--namespace", default="default")

    node = sub.add_parser("node", help="a node joins or leaves the cluster")
    node.add_argument("action", choices=["add", "remove"])
    node.add_argument("name")

    pod = sub.add_parser("pod", help="switch a pod's readiness (its endpoints follow)")
    pod.add_argument("action", choices=["ready", "unready"])
    pod.add_argument("name", metavar="[NAMESPACE/]POD")

    sub.add_parser("reconcile", help="restore what was changed by hand, as the agents' resync does")

    ev = sub.add_parser("events", help="what each controller and agent changed, and why")
    ev.add_argument("-o", "--output", choices=["json"])

    tr = sub.add_parser("trace", help="send one flow and show its path from kernel evidence")
    tr.add_argument("src", help="POD | NODE | external")
    tr.add_argument("dst", metavar="DST[:PORT]", help="an IP, pod, node or Service; no port: ICMP echo")
    tr.add_argument("--udp", action="store_true")
    tr.add_argument("-o", "--output", choices=["json"])

    cap = sub.add_parser("capture", help="tcpdump in a node, pod or the LAN; VXLAN decoded")
    cap.add_argument("target", help="NODE | POD | lan | external")
    cap.add_argument("-i", "--interface", help="default: br0 on the LAN, eth0 elsewhere")
    cap.add_argument("-w", "--write", metavar="FILE", help="write a pcap instead of printing")
    cap.add_argument("-c", "--count", type=int, help="stop after this many packets")
    cap.add_argument("filter", nargs="*", help="a tcpdump filter (default on the LAN: udp port 8472)")

    fa = sub.add_parser("fault", help="inject a fault, list them, or clear them all")
    fa.add_argument("kind", choices=["node-down", "link-down", "partition", "loss", "delay", "clear", "list"])
    fa.add_argument("targets", nargs="*", metavar="NODE|POD [NODE|VALUE]")

    gr = sub.add_parser("graph", help="a diagram of the live lab, drawn from kernel state (Graphviz)")
    gr.add_argument("-o", "--output", default="netlab.svg", metavar="FILE.svg|.png|.dot")

    ipt = sub.add_parser("iptables", help="a node's rules, as iptables-save prints them")
    ipt.add_argument("node")
    ipt.add_argument("-t", "--table", choices=["nat", "filter", "mangle", "raw"])

    pr = sub.add_parser("probe", help="send real packets along every path and report")
    pr.add_argument("-o", "--output", choices=["json"])
    pr.add_argument("--area", action="append", choices=list(PROBE_AREAS), help="only these areas (repeatable)")
    return p


def _global_flags_first(argv):
    """kubectl takes its global flags anywhere: move `--lab NAME` (or `--lab=NAME`) before the
    command, leaving what follows `--` (a command to exec) alone."""
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    head, rest, moved = argv[:end], argv[end:], []
    i = 0
    while i < len(head):
        if head[i] == "--lab" and i + 1 < len(head):
            moved += head[i:i + 2]
            del head[i:i + 2]
        elif head[i].startswith("--lab="):
            moved.append(head.pop(i))
        else:
            i += 1
    return moved + head + rest


def main(argv=None):
    parser = _parser()
    args, extra = parser.parse_known_args(_global_flags_first(argv))
    # kubectl takes `get svc -n NS NAME`: a name after the options is still the name.
    if args.command == "get" and len(extra) == 1 and not extra[0].startswith("-") and args.name is None:
        args.name = extra[0]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.command](args) or 0
    except NetlabError as e:
        print(f"netlab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("netlab: interrupted", file=sys.stderr)
        return 130


def _up(args):
    from netlab.lab import Lab
    labfile = args.labfile or str(DEFAULT_LABFILE)
    if args.dry_run:
        from netlab.plan import describe
        _, plans = Lab.plan(labfile, args.manifests)
        print(describe(plans))
        return 0
    with _Progress() as progress:
        lab = Lab.up(labfile, args.manifests, progress=progress)
    state = lab.state()
    print(f"lab {lab.name} is up: {len(state.nodes)} nodes, {len(state.pods)} pods. "
          f"Try: netlab get pods -A -o wide; netlab exec {state.nodes[0].name} -- ip route")
    return 0


def _down(args):
    from netlab.lab import Lab
    lab = Lab.find(args.name or args.lab)
    lab.down()
    print(f"lab {lab.name} removed")


def _status(args):
    from netlab.api.etcd import Store, all_labs
    from netlab.api.printers import age, render
    from netlab.errors import StateUnreadable
    rows = []
    for name in all_labs():
        try:
            s = Store(name).load()
        except StateUnreadable as e:                   # one lab's bad record hides no other lab
            rows.append([name, "Unreadable", "-", "-", "-", "-", "-", "-"])
            print(f"netlab: {e}", file=sys.stderr)
            continue
        lbs = sum(1 for svc in s.services if svc.type == "LoadBalancer")
        rows.append([name, s.phase, len(s.nodes), len(s.pods), len(s.services), lbs, len(s.netns), age(s.created)])
    # LOAD-BALANCERS: what the cloud bills, one per LoadBalancer Service.
    print(render(["LAB", "PHASE", "NODES", "PODS", "SERVICES", "LOAD-BALANCERS", "NETNS", "AGE"], rows)
          if rows else "no lab is up")


def _cleanup(args):
    from netlab.lab import Lab
    name = args.name or args.lab
    if not name and not args.all:
        raise NetlabError("name the lab to clean up, or pass --all")
    cleaned = Lab.cleanup(name)
    print(f"cleaned: {', '.join(cleaned) if cleaned else 'nothing to clean'}")


GET_KINDS = {
    "nodes": "nodes", "node": "nodes", "no": "nodes",
    "pods": "pods", "pod": "pods", "po": "pods",
    "services": "services", "service": "services", "svc": "services",
    "endpoints": "endpoints", "ep": "endpoints",
    "daemonsets": "daemonsets", "daemonset": "daemonsets", "ds": "daemonsets",
    "ingresses": "ingresses", "ingress": "ingresses", "ing": "ingresses",
}


def _get(args):
    from netlab.api import apiserver
    from netlab.api import printers as kubectl
    from netlab.lab import Lab
    lab = Lab.find(args.lab)
    kind = GET_KINDS[args.kind]
    objects = lab.get(kind, args.namespace, args.all_namespaces)
    if args.name:
        objects = [o for o in objects if o["metadata"]["name"] == args.name]
        if not objects:
            raise NetlabError(f'{kind} "{args.name}" not found')
    if args.output == "json":
        print(json.dumps(objects[0] if args.name else apiserver.as_list(objects), indent=4))
    elif kind == "nodes":
        print(kubectl.nodes_table(objects, wide=args.output == "wide"))
    elif not objects:
        print(f"No resources found in {args.namespace} namespace." if not args.all_namespaces else "No resources found")
    else:
        table = {"pods": kubectl.pods_table, "services": kubectl.services_table,
                 "endpoints": kubectl.endpoints_table, "daemonsets": kubectl.daemonsets_table,
                 "ingresses": kubectl.ingresses_table}[kind]
        print(table(objects, wide=args.output == "wide", all_namespaces=args.all_namespaces))


def _scale(args):
    from netlab.lab import Lab
    kind, _, name = args.target.partition("/")
    if kind not in ("deployment", "deployments", "deploy") or not name:
        raise NetlabError(f"scale takes deployment/NAME, not {args.target!r}")
    Lab.find(args.lab).scale(args.namespace, name, args.replicas)
    print(f"deployment.apps/{name} scaled")


KINDS = {"pod": "pod", "pods": "pod", "po": "pod", "deployment": "deployment", "deployments": "deployment",
         "deploy": "deployment", "service": "service", "services": "service", "svc": "service",
         "ingress": "ingress", "ingresses": "ingress", "ing": "ingress"}


def _apply(args):
    from netlab.lab import Lab
    Lab.find(args.lab).apply(args.manifests)
    print("applied: " + ", ".join(args.manifests))


def _delete(args):
    from netlab.lab import Lab
    lab = Lab.find(args.lab)
    if args.manifests:
        lab.delete_manifests(args.manifests)
        print("deleted what " + ", ".join(args.manifests) + " names")
        return
    kind, _, name = (args.target or "").partition("/")
    if kind not in KINDS or not name:
        raise NetlabError("delete takes KIND/NAME (pod, deployment or service) or -f FILE")
    lab.delete(KINDS[kind], args.namespace, name)
    print(f'{KINDS[kind]} "{name}" deleted')


def _node(args):
    from netlab.lab import Lab
    lab = Lab.find(args.lab)
    if args.action == "add":
        node = lab.add_node(args.name)
        print(f"node/{node.name} joined: {node.ip}, podCIDR {node.pod_cidr}")
    else:
        node, gone = lab.remove_node(args.name)
        print(f"node/{node.name} removed ({len(gone)} pods went with it)")


def _pod(args):
    from netlab.lab import Lab
    pod = Lab.find(args.lab).set_ready(args.name, args.action == "ready")
    print(f"pod/{pod.name} {'ready' if pod.ready else 'not ready'}")


def _reconcile(args):
    from netlab.lab import Lab
    changes = Lab.find(args.lab).reconcile()
    if not changes.any():
        print("reconcile: nothing to do (0 netlink writes, 0 iptables writes)")
        return
    print(f"reconcile: {changes.count()} changes ({changes.netlink_writes} netlink writes, "
          f"{changes.iptables_writes} iptables writes)")
    for agent, items in changes.by_agent.items():
        for netns, what in items:
            print(f"  {agent:<12} {netns}: {what}")


def _events(args):
    from netlab.api import events
    from netlab.lab import Lab
    found = events.read(Lab.find(args.lab).name)
    if args.output == "json":
        print(json.dumps(found, indent=2))
    elif not found:
        print("No events found.")
    else:
        print(events.table(found))


def _trace(args):
    from netlab.lab import Lab
    from netlab.observe import trace
    result = trace.trace(Lab.find(args.lab), args.src, args.dst, udp=args.udp)
    print(json.dumps(result, indent=2) if args.output == "json" else trace.render(result))


def capture_argv(target_is_lan, args):
    """tcpdump's arguments. flannel's VXLAN runs on 8472, not IANA's 4789, so tcpdump is told
    (-T vxlan) to decode what the filter selects as VXLAN: on the LAN that is the overlay."""
    iface = args.interface or ("br0" if target_is_lan else "eth0")
    argv = ["tcpdump", "-n", "-l", "-i", iface]
    if args.write:
        argv += ["-w", args.write]
    if args.count:
        argv += ["-c", str(args.count)]
    flt = args.filter or (["udp", "port", "8472"] if target_is_lan else [])
    if flt[:3] == ["udp", "port", "8472"]:
        argv += ["-T", "vxlan"]
    return argv + flt


def _capture(args):
    from netlab.lab import Lab
    _run_in(Lab.find(args.lab).netns_of(args.target), capture_argv(args.target == "lan", args))


def _fault(args):
    from netlab.lab import Lab
    lab = Lab.find(args.lab)
    if args.kind == "list":
        found = lab.state().faults
        print("\n".join(f"{f['kind']} {' '.join(f['targets'])}" for f in found) if found else "no faults")
    elif args.kind == "clear":
        lab.clear_faults()
        print("faults cleared")
    else:
        lab.fault(args.kind, args.targets)
        print(f"fault {args.kind} {' '.join(args.targets)} injected (netlab fault clear removes it)")


def _graph(args):
    from netlab.lab import Lab
    from netlab.observe import graph
    graph.render(Lab.find(args.lab), args.output)
    print(f"wrote {args.output}")


def _iptables(args):
    from netlab.lab import Lab
    sys.stdout.write(Lab.find(args.lab).iptables(args.node, args.table))


def _exec(args):
    from netlab.lab import Lab
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise NetlabError("give a command to run: netlab exec TARGET -- CMD ...")
    _run_in(Lab.find(args.lab).netns_of(args.target), argv)


def _run_in(netns, argv):
    """Become `ip netns exec NETNS ARGV`, as a person would type it (and see /etc/netns)."""
    sys.stdout.flush()
    try:
        os.execvp("ip", ["ip", "netns", "exec", netns, *argv])
    except OSError as e:
        raise NetlabError(f"cannot run ip netns exec: {e.strerror}") from None


def _probe(args):
    from netlab.api.printers import render
    from netlab.lab import Lab
    from netlab.observe import probes
    checks = probes.suite(Lab.find(args.lab), args.area or None)
    if args.output == "json":
        print(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        header, rows = probes.matrix(checks)
        if rows:
            print("pod reachability (TCP):\n" + render(header, rows) + "\n")
        print(render(["AREA", "CHECK", "EXPECTED", "OBSERVED", "RESULT"],
                     [[c.area, c.name, c.expected, c.observed, "pass" if c.ok else "FAIL"] for c in checks]))
        failed = [c for c in checks if not c.ok]
        print(f"\n{len(checks) - len(failed)} passed, {len(failed)} failed")
        for c in failed:
            print(f"  {c.name}: look at {c.hint}")
    return 1 if any(not c.ok for c in checks) else 0


class _Progress:
    """rich progress on stderr, one bar per phase of a long operation."""

    def __enter__(self):
        self.progress, self.task = None, None
        return self

    def phase(self, description, total):
        if self.progress is None:        # shown from the first phase: an early error prints alone
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            self.progress.__enter__()
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[self.task].total)
        self.task = self.progress.add_task(description, total=total)

    def advance(self):
        self.progress.advance(self.task)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)


COMMANDS = {"up": _up, "down": _down, "status": _status, "cleanup": _cleanup, "get": _get,
            "exec": _exec, "probe": _probe, "iptables": _iptables, "scale": _scale,
            "apply": _apply, "delete": _delete, "node": _node, "pod": _pod, "reconcile": _reconcile, "events": _events,
            "graph": _graph, "fault": _fault, "capture": _capture,
            "trace": _trace}

if __name__ == "__main__":
    sys.exit(main())
