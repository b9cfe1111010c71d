"""The `netlab` command: a thin layer over netlab.Lab. Errors are one sentence and exit 1."""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from netlab.errors import NetlabError

DEFAULT_LABFILE = Path(__file__).resolve().parent.parent / "topologies" / "default.yaml"


# netlab.observe.probes.AREAS, kept here so that `netlab --help` imports no add-on (a unit
# test holds the two equal).
PROBE_AREAS = ("pods-same-node", "pods-across-nodes", "pod-matrix", "node-to-pod", "pod-to-node", "overlay",
               "egress", "services", "dns", "load-balancers", "ingress", "policy")


def _version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("netlab")
    except PackageNotFoundError:                  # run from a checkout that was never installed
        return "unknown (not installed)"


def plural(n, word, many=None):
    """A count with its noun, as a sentence needs it: "1 node", "2 nodes"."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _get_kinds_help():
    """kubectl's kinds and short names, from GET_KINDS: `nodes (node, no) | pods (pod, po) | ...`."""
    kinds = {}
    for name, kind in GET_KINDS.items():
        kinds.setdefault(kind, []).append(name)
    return " | ".join(f"{kind} ({', '.join(n for n in names if n != kind)})" for kind, names in kinds.items())


def _parser():
    p = argparse.ArgumentParser(prog="netlab", description="A Kubernetes cluster's network from real kernel objects.")
    p.add_argument("--version", action="version", version=f"netlab {_version()}", help="print netlab's version")
    p.add_argument("--lab", help="the lab to act on (needed when several are up)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, text):
        """A subcommand whose line in `netlab --help` is also what `netlab NAME --help` says."""
        return sub.add_parser(name, help=text, description=text)

    up = command("up", "build a lab from a lab file")
    up.add_argument("labfile", nargs="?", help="a kind Cluster file, with netlab's Lab document and manifests; "
                    f"default: {DEFAULT_LABFILE.relative_to(DEFAULT_LABFILE.parents[1])}")
    up.add_argument("-f", dest="manifests", action="append", default=[], metavar="PATH",
                    help="more manifests: a file or a folder (repeatable)")
    up.add_argument("--dry-run", action="store_true", help="print the planned kernel state; create nothing")

    down = command("down", "remove a lab and everything it created")
    down.add_argument("name", nargs="?", help="the lab (default: --lab, or the only lab up)")

    command("status", "labs on this machine")

    kc = command("kubeconfig", "print the lab's kubeconfig (kubectl's cluster, user and context), as kind does")
    kc.add_argument("name", nargs="?", help="the lab (default: --lab, or the only lab up)")

    clean = command("cleanup", "remove the leftovers of a crashed lab")
    clean.add_argument("name", nargs="?", help="the lab (default: --lab)")
    clean.add_argument("--all", action="store_true", help="every lab with a record on this machine")

    kinds = sorted(set(GET_KINDS.values()))
    get = command("get", f"list {', '.join(kinds[:-1])} or {kinds[-1]}, as kubectl get does")
    get.add_argument("kind", choices=sorted(GET_KINDS), metavar="KIND", help=_get_kinds_help())
    get.add_argument("name", nargs="?", help="one object by name")
    get.add_argument("-n", "--namespace", default="default", help="the namespace (default: default)")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="objects of every namespace")
    get.add_argument("-o", "--output", choices=["wide", "json"], help="wide: more columns; json: the API's objects")

    ex = command("exec", "run a command in a node, pod, external or lan namespace")
    ex.add_argument("target", help="NODE | POD | NAMESPACE/POD | external | lan")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments")

    sc = command("scale", "change a Deployment's replicas, as kubectl scale does")
    sc.add_argument("target", metavar="deployment/NAME", help="the Deployment")
    sc.add_argument("--replicas", type=int, required=True, help="how many pods it should have")
    sc.add_argument("-n", "--namespace", default="default", help="the Deployment's namespace (default: default)")

    ap = command("apply", "create or update Pods, Deployments, Services and Ingresses, "
                        "as kubectl apply does")
    ap.add_argument("-f", dest="manifests", action="append", required=True, metavar="PATH",
                    help="a manifest file or a folder of them (repeatable)")

    de = command("delete", "delete pod/NAME, deployment/NAME, service/NAME, ingress/NAME, networkpolicy/NAME, "
                        "or what -f names")
    de.add_argument("target", nargs="?", metavar="KIND/NAME",
                    help="pod, deployment, service, ingress or networkpolicy (and kubectl's short names), then "
                         "the name")
    de.add_argument("-f", dest="manifests", action="append", default=[], metavar="PATH",
                    help="delete the objects a manifest file or folder names (repeatable)")
    de.add_argument("-n", "--namespace", default="default", help="the object's namespace (default: default)")

    node = command("node", "a node joins or leaves the cluster")
    node.add_argument("action", choices=["add", "remove"], help="add: join a new node; remove: drain it and leave")
    node.add_argument("name", help="the node's name (a new worker's, for add)")

    pod = command("pod", "switch a pod's readiness (its endpoints follow)")
    pod.add_argument("action", choices=["ready", "unready"], help="the pod's new readiness")
    pod.add_argument("name", metavar="[NAMESPACE/]POD", help="the pod")

    command("reconcile", "restore what was changed by hand, as the agents' resync does")

    ev = command("events", "what each controller and agent changed, and why")
    ev.add_argument("-o", "--output", choices=["json"], help="the events as JSON")

    tr = command("trace", "send one flow and show its path from kernel evidence; "
                        "exit 1 when it got no answer")
    tr.add_argument("src", help="POD | NODE | external")
    tr.add_argument("dst", metavar="DST[:PORT]", help="an IP, pod, node or Service, and a port (1-65535); "
                    "no port: ICMP echo")
    tr.add_argument("--udp", action="store_true", help="send a UDP datagram to the port instead of an HTTP GET")
    tr.add_argument("-o", "--output", choices=["json"], help="the trace as JSON")

    cap = command("capture", "tcpdump in a node, pod or the LAN; VXLAN decoded")
    cap.add_argument("target", help="NODE | POD | lan | external")
    cap.add_argument("-i", "--interface", help="the interface (default: br0 on the LAN, eth0 elsewhere)")
    cap.add_argument("-w", "--write", metavar="FILE", help="write a pcap instead of printing")
    cap.add_argument("-c", "--count", type=int, help="stop after this many packets")
    cap.add_argument("filter", nargs="*", help="a tcpdump filter, before or after the options "
                     "(default on the LAN: the overlay's packets, udp port 8472 for VXLAN)")

    fa = command("fault", "inject a fault, list them, or clear them all")
    fa.add_argument("kind", choices=["node-down", "link-down", "partition", "loss", "delay", "bandwidth", "clear",
                                     "list"],
                    help="node-down NODE | link-down NODE|POD | partition NODE NODE | loss NODE|POD PERCENT | "
                    "delay NODE|POD MS | clear [one of the above, as list prints it] | list")
    fa.add_argument("targets", nargs="*", metavar="NODE|POD [NODE|VALUE]", help="what the fault applies to")
    fa.add_argument("--for", dest="seconds", type=float, metavar="SECONDS",
                    help="clear the fault by itself after this many seconds")

    gr = command("graph", "a diagram of the live lab, drawn from kernel state (Graphviz)")
    gr.add_argument("-o", "--output", default="netlab.svg", metavar="FILE.svg|.png|.dot",
                    help="the file to write; its suffix picks the format (default: netlab.svg)")

    ipt = command("iptables", "a node's rules, as iptables-save prints them")
    ipt.add_argument("node", help="the node")
    ipt.add_argument("-t", "--table", choices=["nat", "filter", "mangle", "raw"], help="only this table")
    ipt.add_argument("-6", "--ipv6", action="store_true", help="the IPv6 rules (ip6tables-save; a dual-stack lab)")

    nf = command("nft", "a node's kube-proxy table (nftables mode), as nft list table ip kube-proxy prints it "
                        "(and ip6 kube-proxy in a dual-stack lab)")
    nf.add_argument("node", help="the node")

    pr = command("probe", "send real packets along every path and report; exit 1 when a check "
                        "fails or none could run")
    pr.add_argument("-o", "--output", choices=["json"], help="the checks as JSON")
    pr.add_argument("--area", action="append", choices=list(PROBE_AREAS), metavar="AREA",
                    help="only these areas (repeatable): " + ", ".join(PROBE_AREAS)
                    + " (policy runs by default only where the lab has a NetworkPolicy)")

    po = command("policy", "NetworkPolicy: what the lab's policies allow, and why")
    po_sub = po.add_subparsers(dest="policy_command", required=True, metavar="COMMAND", help="explain")
    ex = po_sub.add_parser("explain", help="the verdict on a connection and its reasons; exit 0 allowed, 1 denied",
                           description="the verdict on a connection and its reasons, from the lab's policies "
                           "(no packet is sent); exit 0 allowed, 1 denied, 2 when SRC or DST is malformed or "
                           "names nothing in the lab")
    ex.add_argument("src", metavar="SRC", help="NAMESPACE/POD, POD (namespace default), a node, external or an IP")
    ex.add_argument("dst", metavar="DST[:PORT][/PROTO]",
                    help="the same, or a Service (NAMESPACE/NAME or its ClusterIP: judged on each ready backend); "
                    "PORT a number or a port name (none: every port DST declares); PROTO TCP (default), UDP, SCTP "
                    "or ICMP")
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


def parse(argv=None):
    """The command line as the commands take it (argparse's, and what it cannot express)."""
    parser = _parser()
    args, extra = parser.parse_known_args(_global_flags_first(argv))
    # kubectl takes `get svc -n NS NAME`: a name after the options is still the name.
    if args.command == "get" and len(extra) == 1 and not extra[0].startswith("-") and args.name is None:
        args.name = extra[0]
    # tcpdump takes its filter after its options (`capture client -c 3 tcp port 8080`):
    # argparse gives the words after an option to no positional, so they are the filter's.
    elif args.command == "capture" and extra and not any(e.startswith("-") for e in extra):
        args.filter += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv=None):
    args = parse(argv)
    try:
        code = COMMANDS[args.command](args) or 0
        sys.stdout.flush()                     # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (`netlab events -o json | head`): stop quietly, as a Unix tool
        # killed by SIGPIPE does, with the shell's status for it. stdout goes to /dev/null so
        # that the interpreter's last flush at exit finds nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
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
    if lab.kube_proxy_restarted:
        print(f"lab {lab.name}: kube-proxy restarted in {lab.kube_proxy_restarted} mode on every node "
              f"(see: netlab events)")
        return 0
    print(f"lab {lab.name} is up: {plural(len(state.nodes), 'node')}, {plural(len(state.pods), 'pod')}. "
          f"Try: netlab get pods -A -o wide; netlab exec {state.nodes[0].name} -- ip route")
    if state.wireguard:
        print(f"flannel's wireguard backend: {_wireguard_served(state)}")
    return 0


def _down(args):
    from netlab.lab import Lab
    lab = Lab.find(args.name or args.lab)
    lab.down()
    print(f"lab {lab.name} removed")


def _kubeconfig(args):
    from netlab.lab import Lab
    sys.stdout.write(Lab.find(args.name or args.lab).kubeconfig())


def _wireguard_served(state):
    if state.wireguard == "kernel":
        return "the kernel's wireguard devices"
    return "wireguard-go, one per device (this kernel makes no wireguard devices)"


def _backend(state):
    """The flannel backend a lab runs, and for wireguard what serves its devices."""
    kind = state.cluster.flannel_backend
    return f"{kind} ({state.wireguard})" if kind == "wireguard" and state.wireguard else kind


def _status(args):
    from netlab.api.etcd import Store, all_labs
    from netlab.api.printers import age, render
    from netlab.errors import StateUnreadable
    rows = []
    for name in all_labs():
        try:
            s = Store(name).load()
        except StateUnreadable as e:                   # one lab's bad record hides no other lab
            rows.append([name, "Unreadable", "-", "-", "-", "-", "-", "-", "-", "-"])
            print(f"netlab: {e}", file=sys.stderr)
            continue
        lbs = sum(1 for svc in s.services if svc.type == "LoadBalancer")
        api = f"https://127.0.0.1:{s.api_port}" if s.api_port else "-"
        rows.append([name, s.phase, len(s.nodes), len(s.pods), len(s.services), lbs, _backend(s), len(s.netns), api,
                     age(s.created)])
    # LOAD-BALANCERS: what the cloud bills, one per LoadBalancer Service. API: kube-apiserver, for kubectl.
    # BACKEND: flannel's, and for wireguard what serves its devices (the kernel, or wireguard-go).
    print(render(["LAB", "PHASE", "NODES", "PODS", "SERVICES", "LOAD-BALANCERS", "BACKEND", "NETNS", "API", "AGE"], rows)
          if rows else "no lab is up")


def _cleanup(args):
    from netlab.lab import Lab
    name = args.name or args.lab
    if not name and not args.all:
        raise NetlabError("name the lab to clean up, or pass --all")
    cleaned = Lab.cleanup(name)
    print(f"cleaned: {', '.join(cleaned)}" if cleaned else f"nothing of {'lab ' + name if name else 'any lab'} to clean up")


GET_KINDS = {
    "nodes": "nodes", "node": "nodes", "no": "nodes",
    "pods": "pods", "pod": "pods", "po": "pods",
    "services": "services", "service": "services", "svc": "services",
    "endpoints": "endpoints", "ep": "endpoints",
    "daemonsets": "daemonsets", "daemonset": "daemonsets", "ds": "daemonsets",
    "ingresses": "ingresses", "ingress": "ingresses", "ing": "ingresses",
    "deployments": "deployments", "deployment": "deployments", "deploy": "deployments",
    "replicasets": "replicasets", "replicaset": "replicasets", "rs": "replicasets",
    "endpointslices": "endpointslices", "endpointslice": "endpointslices",
    "ingressclasses": "ingressclasses", "ingressclass": "ingressclasses",
    "networkpolicies": "networkpolicies", "networkpolicy": "networkpolicies", "netpol": "networkpolicies",
    "namespaces": "namespaces", "namespace": "namespaces", "ns": "namespaces",
    "configmaps": "configmaps", "configmap": "configmaps", "cm": "configmaps",
    "events": "events", "event": "events", "ev": "events",
}


def _get(args):
    """kube-apiserver's Table of the objects, printed as kubectl prints it: the same code path
    as the API's `as=Table` answers. Nothing found: kubectl's message, on stderr."""
    from netlab.api import apiserver, printers
    from netlab.lab import Lab
    lab = Lab.find(args.lab)
    kind = GET_KINDS[args.kind]
    objects = lab.get(kind, args.namespace, args.all_namespaces)
    if args.name:
        objects = [o for o in objects if o["metadata"]["name"] == args.name]
        if not objects:
            raise NetlabError(f'{printers.qualified(kind)} "{args.name}" not found')
    if args.output == "json":
        print(json.dumps(objects[0] if args.name else apiserver.as_list(objects), indent=4))
        return
    namespaced = printers.namespaced(kind)
    text = printers.render(printers.table(kind, objects), wide=args.output == "wide",
                           all_namespaces=args.all_namespaces and namespaced)
    if text:
        sys.stdout.write(text)
    else:
        print(printers.no_resources(args.namespace if namespaced and not args.all_namespaces else None),
              file=sys.stderr)


def _scale(args):
    from netlab.lab import Lab
    kind, _, name = args.target.partition("/")
    if kind not in ("deployment", "deployments", "deploy") or not name:
        raise NetlabError(f"scale takes deployment/NAME, not {args.target!r}")
    Lab.find(args.lab).scale(args.namespace, name, args.replicas)
    print(f"deployment.apps/{name} scaled")


KINDS = {"pod": "pod", "pods": "pod", "po": "pod", "deployment": "deployment", "deployments": "deployment",
         "deploy": "deployment", "service": "service", "services": "service", "svc": "service",
         "ingress": "ingress", "ingresses": "ingress", "ing": "ingress", "networkpolicy": "networkpolicy",
         "networkpolicies": "networkpolicy", "netpol": "networkpolicy"}


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
        raise NetlabError("delete takes KIND/NAME (pod, deployment, service, ingress or networkpolicy) or -f FILE")
    lab.delete(KINDS[kind], args.namespace, name)
    print(f'{KINDS[kind]} "{name}" deleted')


def _node(args):
    from netlab.lab import Lab
    lab = Lab.find(args.lab)
    if args.action == "add":
        node = lab.add_node(args.name)
        print(f"node/{node.name} joined: {node.internal_ip}, podCIDR {node.pod_cidrs[0]}")
    else:
        node, gone = lab.remove_node(args.name)
        print(f"node/{node.name} removed ({plural(len(gone), 'pod')} went with it)")


def _pod(args):
    from netlab.lab import Lab
    pod = Lab.find(args.lab).set_ready(args.name, args.action == "ready")
    print(f"pod/{pod.name} {'ready' if pod.ready else 'not ready'}")


def _reconcile(args):
    from netlab.lab import Lab
    changes = Lab.find(args.lab).reconcile()
    writes = [plural(changes.netlink_writes, "netlink write"), plural(changes.iptables_writes, "iptables write")]
    if changes.kube_proxy_mode == "nftables":
        writes.append(plural(changes.nft_writes, "nftables transaction"))
    if changes.ipset_writes:
        writes.append(plural(changes.ipset_writes, "ipset restore"))
    if not changes.any():
        print(f"reconcile: nothing to do ({', '.join(writes)})")
        return
    print(f"reconcile: {plural(changes.count(), 'change')} ({', '.join(writes)})")
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
    if not trace.answered(result):
        a = result["answer"]
        why = a.get("error") or (f"icmp {a['type']}/{a['code']} in reply" if a.get("type") is not None else "no reply")
        print(f"netlab: trace: the {result['protocol']} flow to {args.dst} got no answer ({why})", file=sys.stderr)
        return 1
    return 0


def capture_argv(target_is_lan, args, cluster=None):
    """tcpdump's arguments. On the LAN the default filter is the overlay's own packets: flannel's
    VXLAN port (8472, not IANA's 4789, so tcpdump is told with -T vxlan to decode it as VXLAN)
    or WireGuard's; host-gw has no packet of its own, so nothing is filtered."""
    iface = args.interface or ("br0" if target_is_lan else "eth0")
    argv = ["tcpdump", "-n", "-l", "-i", iface]
    if args.write:
        argv += ["-w", args.write]
    if args.count:
        argv += ["-c", str(args.count)]
    from netlab.node.flannel import flanneld
    kind = flanneld.backend_of(cluster) if cluster is not None else "vxlan"
    port = str(flanneld.port(cluster)) if cluster is not None else "8472"
    overlay = {"vxlan": ["udp", "port", port], "host-gw": [],
               "wireguard": ["udp", "port", str(getattr(cluster, "wg_listen_port", 51820)), "or", "udp", "port",
                             str(getattr(cluster, "wg_listen_port6", 51821))]}[kind]
    flt = args.filter or (overlay if target_is_lan else [])
    if kind == "vxlan" and flt[:3] == ["udp", "port", port]:
        argv += ["-T", "vxlan"]
    return argv + flt


def _capture(args):
    from netlab.lab import Lab
    lab = Lab.find(args.lab)
    netns = lab.netns_of(args.target)
    _become(["ip", "netns", "exec", netns, *capture_argv(args.target == "lan", args, lab.state().cluster)])


def _remaining(fault):
    """`  (ends in 12s)` for a fault injected --for a while."""
    import time
    return f"  (ends in {max(0, fault['until'] - time.time()):.0f}s)" if fault.get("until") else ""


def _fault(args):
    from netlab.lab import Lab
    lab = Lab.find(args.lab)
    if args.kind == "list":
        found = lab.state().faults
        print("\n".join(f"{f['kind']} {' '.join(f['targets'])}" + _remaining(f) for f in found) if found
              else "no faults")
    elif args.kind == "clear":
        gone = lab.clear_faults(args.targets)
        print("\n".join(f"cleared {f['kind']} {' '.join(f['targets'])}" for f in gone) if gone else "no faults")
    else:
        lab.fault(args.kind, args.targets, args.seconds)
        print(f"fault {args.kind} {' '.join(args.targets)} injected "
              + (f"for {args.seconds:g}s" if args.seconds else "(netlab fault clear removes it)"))


def _graph(args):
    from netlab.lab import Lab
    from netlab.observe import graph
    graph.render(Lab.find(args.lab), args.output)
    print(f"wrote {args.output}")


def _iptables(args):
    from netlab.lab import Lab
    sys.stdout.write(Lab.find(args.lab).iptables(args.node, args.table, "IPv6" if args.ipv6 else "IPv4"))


def _nft(args):
    from netlab.lab import Lab
    sys.stdout.write(Lab.find(args.lab).nft(args.node))


def _exec(args):
    from netlab.lab import Lab
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise NetlabError("give a command to run: netlab exec TARGET -- CMD ...")
    _become(Lab.find(args.lab).exec_argv(args.target, argv))


def _become(command):
    """Become the command (`ip netns exec NETNS ...`), as a person would type it (and see /etc/netns)."""
    sys.stdout.flush()
    try:
        os.execvp(command[0], command)
    except OSError as e:
        raise NetlabError(f"cannot run {command[0]}: {e.strerror}") from None


def _probe(args):
    from netlab.api.printers import render
    from netlab.lab import Lab
    from netlab.observe import probes
    checks = probes.suite(Lab.find(args.lab), args.area or None)
    ran = [c for c in checks if not c.skipped]
    failed = [c for c in ran if not c.ok]
    if args.output == "json":
        print(json.dumps([c.as_json() for c in checks], indent=2))
    else:
        for family in dict.fromkeys(c.family for c in checks):     # "" in a single-stack lab
            header, rows = probes.matrix(checks, family)
            if rows:
                legend = "; - skipped" if any("-" in row[1:] for row in rows) else ""
                print(f"pod reachability (TCP{', ' + family if family else ''}{legend}):\n"
                      + render(header, rows) + "\n")
        for c in checks:
            if c.area == "policy" and not c.skipped:
                print(probes.policy_report(c) + "\n")
        if checks:
            result = {"pass": "pass", "fail": "FAIL", "skipped": "skipped"}
            print(render(["AREA", "CHECK", "EXPECTED", "OBSERVED", "RESULT"],
                         [[probes.TITLES[c.area], c.name, c.expected, c.observed,
                           f"skipped: {c.skipped}" if c.skipped else result[c.result]] for c in checks]))
        print(f"\n{len(ran) - len(failed)} passed, {len(failed)} failed, {len(checks) - len(ran)} skipped")
        for c in failed:
            print(f"  {c.name}: look at {c.hint}")
    if not ran:
        areas = ", ".join(args.area or probes.AREAS)
        print("netlab: probe: nothing was checked: " + (
            f"every check was skipped ({plural(len(checks), 'check')}, each with its reason)" if checks
            else f"the lab has nothing to check in {areas}"), file=sys.stderr)
        return 1
    return 1 if failed else 0


def _policy(args):
    """policy explain: exit 0 allowed, 1 denied, 2 when SRC or DST names nothing (as a usage
    error does), so a script can tell a refusal from a typo."""
    from netlab.lab import Lab
    from netlab.observe import probes
    try:
        text, allowed = probes.policy_explain(Lab.find(args.lab).state(), args.src, args.dst)
    except NetlabError as e:
        print(f"netlab: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0 if allowed else 1


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


COMMANDS = {"up": _up, "down": _down, "status": _status, "kubeconfig": _kubeconfig, "cleanup": _cleanup, "get": _get,
            "exec": _exec, "probe": _probe, "iptables": _iptables, "nft": _nft, "scale": _scale,
            "apply": _apply, "delete": _delete, "node": _node, "pod": _pod, "reconcile": _reconcile, "events": _events,
            "graph": _graph, "fault": _fault, "capture": _capture,
            "trace": _trace, "policy": _policy}

if __name__ == "__main__":
    sys.exit(main())
