"""Soundness: a killed `up` is converged by the next command, the lab lock holds across a
`down`, and a python-iptables lab keeps one rule set that every reader sees."""

import json
import subprocess
import sys
import textwrap

from netlab import Lab, names
from netlab.kernel import netns as ns
from netlab.observe import graph, probes, trace

from .conftest import TOPOLOGIES, leftovers, renamed, unique_name, wait_for

ROOT = TOPOLOGIES.parent


def netlab(*args, **kw):
    return subprocess.run([sys.executable, "-m", "netlab.cli", *args], capture_output=True, text=True, cwd=ROOT, **kw)


# `up` in a child that SIGKILLs itself at its first iptables write: flannel.1 and every link
# exist, no KUBE chain does. (Before the house moved, the applier was chosen in netlab.lab.)
KILLED_UP = textwrap.dedent("""
    import os, signal, sys
    import netlab.lab as lab_module
    class Killer:
        writes, log = 0, []
        def apply(self, *a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        apply_changes = apply
    try:
        from netlab.kernel import iptables
        iptables.applier = lambda backend: Killer()
    except ImportError:
        pass
    lab_module.iptables_applier = lambda cluster: Killer()
    lab_module.Lab.up(sys.argv[1])
""")


def test_a_change_after_a_killed_up_converges_the_whole_lab(tmp_path):
    name = unique_name("k")
    labfile = renamed("default.yaml", name, tmp_path)
    try:
        killed = subprocess.run([sys.executable, "-c", KILLED_UP, str(labfile)], cwd=ROOT, capture_output=True)
        assert killed.returncode == -9
        control_plane = f"{name}-control-plane"
        assert "flannel.1" in ns.run(control_plane, ["ip", "-o", "link"], capture_output=True, text=True).stdout
        saved = ns.run(control_plane, ["iptables-save"], capture_output=True, text=True)
        assert saved.returncode == 0 and "FLANNEL-" not in saved.stdout and "KUBE-" not in saved.stdout
        scaled = netlab("--lab", name, "scale", "deployment/web", "--replicas", "5")
        assert scaled.returncode == 0, scaled.stderr
        status = netlab("status").stdout
        assert any(line.split()[:2] == [name, "Running"] for line in status.splitlines()), status
        ds = json.loads(netlab("--lab", name, "get", "ds", "-A", "-o", "json").stdout)["items"]
        assert {d["metadata"]["name"]: d["status"]["numberReady"] for d in ds} == {
            "kube-flannel-ds": 3, "kube-proxy": 3, "kube-router": 3}     # every node's agents are back
        lab = Lab(name)
        state = lab.state()
        for node in state.nodes:
            nat = lab.iptables(node.name, "nat")
            assert "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" in nat
            assert "-A KUBE-POSTROUTING" in nat
        checks = probes.suite(lab, ["pods-across-nodes", "services"])
        assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
        assert len([p for p in state.pods if p.owner == "Deployment/web"]) == 5
    finally:
        Lab.cleanup(name)
    assert leftovers(name) == []


# Three commands on one lab: A holds the lock and removes the lab's record (as `down` does),
# B waits for it, C comes after the record is gone while B still holds the lock.
LOCKER = textwrap.dedent("""
    import shutil, sys, time
    from netlab import Lab, names
    name, role, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    lab = Lab(name)
    lock = lab.locked() if hasattr(lab, "locked") else lab.store.locked()
    with lock:
        start = time.monotonic()
        print("held", flush=True)
        time.sleep(hold)
        if role == "A":
            shutil.rmtree(names.state_dir(name))
        end = time.monotonic()
    print(start, end)
""")


def test_the_lab_lock_holds_while_down_removes_the_lab():
    name = unique_name("l")
    d = names.state_dir(name)
    d.mkdir(parents=True)
    (d / "state.json").write_text("{}")
    try:
        run = lambda role, hold: subprocess.Popen([sys.executable, "-c", LOCKER, name, role, str(hold)],  # noqa: E731
                                                  cwd=ROOT, stdout=subprocess.PIPE, text=True)
        a = run("A", 1.0)
        assert a.stdout.readline() == "held\n"      # B waits on A's lock
        b = run("B", 1.0)
        assert b.stdout.readline() == "held\n"      # A removed the record and let go; B holds the lock
        assert not d.exists()
        c = run("C", 0.2)                           # C comes after the record is gone, while B holds it
        spans = {k: tuple(map(float, p.communicate(timeout=30)[0].split()[-2:])) for k, p in (("A", a), ("B", b), ("C", c))}
        (_, a1), (b0, b1), (c0, c1) = spans["A"], spans["B"], spans["C"]
        assert b0 >= a1 and (c0 >= b1 or b0 >= c1), spans
    finally:
        import shutil
        shutil.rmtree(d, ignore_errors=True)
    assert not (names.STATE_ROOT / ".locks" / name).exists()

# --- one backend for every writer and reader ------------------------------------------------

def test_a_python_iptables_lab_keeps_one_rule_set_for_balancers_faults_trace_and_graph(make_lab, tmp_path):
    labfile = tmp_path / "lb-legacy.yaml"
    labfile.write_text((TOPOLOGIES / "loadbalancer.yaml").read_text().replace(
        "loadBalancer: {mode: cloud}", "loadBalancer: {mode: cloud}\niptables: {applier: python-iptables}"))
    lab = make_lab(labfile)
    state = lab.state()
    svc = state.service("default", "web-lb")
    lb = names.lb_netns(lab.name, svc.key)
    legacy = lambda: ns.run(lb, ["iptables-legacy-save", "-t", "nat"], capture_output=True, text=True).stdout  # noqa: E731
    nft = lambda: ns.run(lb, ["iptables-nft-save", "-t", "nat"], capture_output=True, text=True)  # noqa: E731
    assert nft().returncode == 0 and "*nat" in nft().stdout and "LB-" not in nft().stdout   # no second copy there
    assert "LB-TCP-80" in legacy()
    workers = [n for n in state.nodes if n.role == "worker"]
    assert all(f"--to-destination {n.ip}:" in legacy() for n in state.nodes)
    lab.fault("node-down", [workers[0].name])
    wait_for(lambda: f"--to-destination {workers[0].ip}:" not in legacy(), 20)
    assert nft().returncode == 0 and "LB-" not in nft().stdout
    # The balancer skips the dead node; kube-proxy behind it may still pick a pod there (its
    # endpoints stay until a node lifecycle says otherwise), so some tries time out.
    answers = [lab.exec("external", ["curl", "-sS", "-m", "2", f"http://{svc.load_balancer_ip}/hostname"],
                        capture_output=True, text=True) for _ in range(8)]
    assert any(a.returncode == 0 and a.stdout.startswith("web-") for a in answers)
    lab.clear_faults()
    src = next(p for p in state.pods if p.owner == "Deployment/web")
    t = trace.trace(lab, f"default/{src.name}", "web-lb:80")
    assert any(r["chain"] == "KUBE-SERVICES" for r in t["rules"]), t["rules"]
    assert any(r["chain"].startswith("KUBE-SEP-") and "DNAT" in r["rule"] for r in t["rules"])
    assert '"svc:default/web-lb:http" -> ' in graph.dot(lab)


def test_a_large_lab_comes_up_under_an_open_files_limit_of_1024(tmp_path):
    """Each open netlink socket holds 4 fds: bring-up holds one at a time, not one per namespace."""
    name = unique_name("f")
    labfile = tmp_path / f"{name}.yaml"
    labfile.write_text(textwrap.dedent(f"""
        kind: Cluster
        apiVersion: kind.x-k8s.io/v1alpha4
        name: {name}
        nodes: [{{role: control-plane}}, {{role: worker}}, {{role: worker}}]
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: many}}
        spec:
          replicas: 260
          selector: {{matchLabels: {{app: many}}}}
          template:
            metadata: {{labels: {{app: many}}}}
            spec: {{containers: [{{name: netexec, image: registry.k8s.io/e2e-test-images/agnhost:2.53}}]}}
    """))
    try:
        up = subprocess.run(["prlimit", "--nofile=1024:1024", sys.executable, "-m", "netlab.cli", "up", str(labfile)],
                            capture_output=True, text=True, cwd=ROOT)
        assert up.returncode == 0, up.stderr[-2000:]
        assert "Traceback" not in up.stderr
        assert len([p for p in Lab(name).state().pods if p.owner == "Deployment/many"]) == 260
    finally:
        Lab.cleanup(name)
    assert leftovers(name) == []


def test_events_credit_each_write_to_the_agent_that_planned_it_whatever_the_lab_is_called(tmp_path):
    name = unique_name("flannel")                       # a name the agents' own words contain
    try:
        lab = Lab.up(renamed("default.yaml", name, tmp_path))
        lab.scale("default", "web", len([p for p in lab.state().pods if p.owner == "Deployment/web"]) + 1)
        by_agent = lab.last_changes.by_agent
        veths = [(agent, what) for agent, items in by_agent.items() for _, what in items if what.startswith("add veth")]
        assert veths and {agent for agent, _ in veths} == {"cni"}, by_agent
        assert all("veth" not in what for _, what in by_agent.get("flannel", []))
        from netlab.api import events
        found = [e for e in events.read(name) if e["why"].startswith("scale")]
        assert {e["source"] for e in found if "add veth" in e["message"]} == {"cni"}
    finally:
        Lab.cleanup(name)
    assert leftovers(name) == []


def test_a_pod_server_that_cannot_bind_tries_again_until_it_can(make_lab):
    import asyncio
    import socket

    from netlab.node import kubelet
    lab = make_lab(TOPOLOGIES / "two-nodes.yaml")
    pod = lab.state().pods[-1]

    class OnePort(kubelet.PodServer):
        name = "bindtest"

        def targets(self, state):
            return {pod.key: (pod.netns, [(9999, "TCP")], pod)}

        async def serve(self, target, proto, port, sock):
            return await asyncio.start_server(lambda r, w: w.close(), sock=sock)

    with ns.entered(pod.netns):
        blocker = socket.socket()
    blocker.bind(("0.0.0.0", 9999))
    blocker.listen()

    async def scenario():
        server = OnePort(lab.name)
        await server.reconcile()
        first = (pod.key in server.running, server.retry)
        blocker.close()
        await server.reconcile()
        with ns.entered(pod.netns):
            client = socket.socket()
        with client:
            client.settimeout(2)
            client.connect(("127.0.0.1", 9999))
        for _, handles in server.running.values():
            for h in handles:
                h.close()
        return first, pod.key in server.running
    assert asyncio.run(scenario()) == ((False, True), True)


def test_an_unreadable_record_stops_no_other_lab_and_is_cleaned_by_its_prefix(make_lab):
    lab = make_lab(TOPOLOGIES / "two-nodes.yaml")
    other = unique_name("u")
    d = names.state_dir(other)
    d.mkdir(parents=True)
    record = json.loads(lab.store.path.read_text())
    ns.create(f"{other}-control-plane")                     # something of it on the machine
    try:
        for text in (json.dumps({**record, "lab": other, "netns": [f"{other}-control-plane"], "lease": {"holder": "x"}}),
                     "{not json", json.dumps({**record, "version": 99})):
            (d / "state.json").write_text(text)
            lab.set_ready("a", False)                      # a change: it looks at every other lab's record
            lab.set_ready("a", True)
            assert not lab.reconcile().any()
            status = netlab("status")
            assert status.returncode == 0 and lab.name in status.stdout and other in status.stdout, status
            assert "Traceback" not in status.stderr
        assert "Unreadable" in netlab("status").stdout
        down = netlab("down", other)
        assert down.returncode == 1 and down.stderr.count("\n") == 1 and "state.json cannot be read" in down.stderr
        cleaned = netlab("cleanup", other)
        assert cleaned.returncode == 0, cleaned.stderr
        assert not d.exists() and f"{other}-control-plane" not in ns.list_names()
        assert lab.name in netlab("status").stdout
    finally:
        import shutil
        shutil.rmtree(d, ignore_errors=True)
        ns.delete(f"{other}-control-plane")


def test_a_server_started_but_never_recorded_is_adopted_or_stopped_never_doubled(make_lab):
    """A command killed between starting a pod server and saving its record leaves one
    running that only its own pid file names: the next command adopts it, or stops it when
    another already serves."""
    from netlab.kernel import processes
    from netlab.node import kubelet
    lab = make_lab(TOPOLOGIES / "two-nodes.yaml")
    extra = subprocess.Popen([sys.executable, "-m", "netlab.addons.agnhost", lab.name], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: any(r["pid"] == extra.pid for r in kubelet.announced(lab.name)), 20)
    changes = lab.reconcile()
    assert (lab.name, "stopped a second agnhost") in changes.by_agent["kubelet"]
    assert extra.wait(timeout=10) is not None
    state = lab.state()
    recorded = state.processes.pop("agnhost")          # as if the record had never been saved
    lab.store.save(state)
    changes = lab.reconcile()
    assert (lab.name, "adopted agnhost, started by an interrupted command") in changes.by_agent["kubelet"]
    assert lab.state().processes["agnhost"] == recorded and processes.alive(recorded)
