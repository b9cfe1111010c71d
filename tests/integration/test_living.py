"""A living cluster: scaling, nodes joining and leaving, readiness, apply and delete, hand-made
damage and interrupted commands — every agent converging, on real labs (topologies/services.yaml)."""

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from netlab import plan
from netlab.api.etcd import all_labs
from netlab.errors import NetlabError
from netlab.kernel import netns as ns
from netlab.kernel.iptables_restore import parse_save
from netlab.node.netpol import kube_router

from .conftest import TOPOLOGIES, wait_for

TRIES = 80      # 5 endpoints: one missed in 80 random picks with probability 5·(4/5)^80 ≈ 1e-7


def web_pods(lab):
    return {p.name for p in lab.state().pods if p.owner == "Deployment/web"}


def answers(prober, ip, port, proto, tries=TRIES):
    ask = prober.http if proto == "tcp" else prober.udp
    return {(ask("client", ip, port) if proto == "tcp" else ask("client", ip, port, "hostname")).get("body") or ""
            for _ in range(tries)}

def kube_proxy_hash(text):
    """kube-proxy's portProtoHash: base32(sha256(text)), first 16 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def web_ip(lab):
    return lab.state().service("default", "web").cluster_ip


def kernel_matches_state(lab):
    """Every node holds exactly its planned rules, and the lab's namespaces are the state's."""
    state = lab.state()
    for node in state.nodes:
        for name, table in plan.node_plan(state, node).iptables.items():
            have = parse_save(ns.run(node.netns, ["iptables-save", "-t", name], capture_output=True, text=True).stdout)
            assert {c: have.get(c, []) for c in table.chains} == {c: list(r) for c, r in table.chains.items()}
            assert {c for c in have if c.startswith("KUBE-")} == {c for c in table.chains if c.startswith("KUBE-")}
    mine = sorted(n for n in ns.list_names() if n.startswith(state.lab + "-"))
    assert mine == sorted(state.netns) and all(ns.exists(n) for n in mine)


def test_scale_3_5_1_sends_traffic_only_to_live_endpoints(make_lab):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    with lab.prober() as prober:
        for replicas in (3, 5, 1):
            lab.scale("default", "web", replicas)
            live = web_pods(lab)
            assert len(live) == replicas
            assert answers(prober, web_ip(lab), 80, "tcp") == live
            assert answers(prober, web_ip(lab), 8081, "udp") == live
            kernel_matches_state(lab)


def test_a_node_joins_and_leaves(make_lab, tmp_path):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    node = lab.add_node("worker3")
    state = lab.state()
    assert node.pod_cidr == "10.244.3.0/24" and node.ip == "172.18.0.5"
    for other in state.nodes:
        if other.name == node.name:
            continue
        routes = ns.run(other.netns, ["ip", "route"], capture_output=True, text=True).stdout
        fdb = ns.run(other.netns, ["bridge", "fdb", "show", "dev", "flannel.1"], capture_output=True, text=True).stdout
        neigh = ns.run(other.netns, ["ip", "neigh", "show", "dev", "flannel.1"], capture_output=True, text=True).stdout
        assert "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink" in routes
        assert f"{node.vtep_mac} dst {node.ip} self permanent" in fdb
        assert f"10.244.3.0 lladdr {node.vtep_mac} PERMANENT" in neigh
    kernel_matches_state(lab)                                   # its own kube-proxy rules too
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(textwrap.dedent(f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: newcomer, labels: {{app: newcomer}}}}
        spec:
          nodeName: {node.name}
          containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]
    """))
    lab.apply([pinned])
    newcomer, client = lab.state().pod("default", "newcomer"), lab.state().pod("default", "client")
    with lab.prober() as prober:
        assert prober.ping("client", newcomer.ip)["ok"]
        seen = prober.http("client", newcomer.ip, 8080, "/clientip")["body"]
        assert seen.split(":")[0] == client.ip                # across the overlay, no NAT
        assert prober.http("default/newcomer", client.ip, 8080)["body"] == "client"

    lab.remove_node(node.name)
    state = lab.state()
    assert node.name not in {n.name for n in state.nodes} and not ns.exists(node.netns)
    assert "newcomer" not in {p.name for p in state.pods}     # a bare pod goes with its node
    for other in state.nodes:
        routes = ns.run(other.netns, ["ip", "route"], capture_output=True, text=True)
        fdb = ns.run(other.netns, ["bridge", "fdb", "show", "dev", "flannel.1"], capture_output=True, text=True)
        assert routes.returncode == 0 and fdb.returncode == 0
        for peer in (n for n in state.nodes if n.name != other.name):           # the others' stay
            vtep = peer.pod_cidr.split("/")[0]
            assert f"{peer.pod_cidr} via {vtep} dev flannel.1 onlink" in routes.stdout
            assert f"{peer.vtep_mac} dst {peer.ip} self permanent" in fdb.stdout
        assert "10.244.3.0/24" not in routes.stdout and node.vtep_mac not in fdb.stdout
    with lab.prober() as prober:
        for pod in (p for p in state.pods if p.owner == "Deployment/web"):
            assert prober.http("client", pod.ip, 8080)["body"] == pod.name
    kernel_matches_state(lab)


def test_a_removed_nodes_deployment_pods_are_replaced_elsewhere(make_lab):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    client_node = lab.state().pod("default", "client").node
    worker2 = next(n.name for n in lab.state().nodes if n.role == "worker" and n.name != client_node)
    lost = {p.name for p in lab.state().pods_on(worker2) if p.owner == "Deployment/web"}
    assert lost
    lab.remove_node(worker2)
    state = lab.state()
    assert len(web_pods(lab)) == 4 and not lost & web_pods(lab)
    assert all(p.node != worker2 for p in state.pods)
    with lab.prober() as prober:
        assert answers(prober, web_ip(lab), 80, "tcp", 60) == web_pods(lab)


def test_reconcile_restores_what_an_operator_broke_and_then_changes_nothing(make_lab):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    state = lab.state()
    client = state.pod("default", "client")
    node = state.node(client.node)
    other = next(n for n in state.nodes if n.name != node.name and n.role == "worker")
    url = f"http://{web_ip(lab)}/hostname"
    assert lab.exec("client", ["curl", "-s", "-m", "2", url], capture_output=True).returncode == 0
    for cmd in (["iptables", "-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment",
                 "kubernetes service portals", "-j", "KUBE-SERVICES"],
                ["iptables", "-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment",
                 "kubernetes service portals", "-j", "KUBE-SERVICES"],
                ["iptables", "-t", "nat", "-F", "KUBE-SERVICES"], ["iptables", "-t", "nat", "-X", "KUBE-SERVICES"],
                ["ip", "route", "del", other.pod_cidr]):
        assert ns.run(node.netns, cmd, capture_output=True).returncode == 0
    assert lab.exec("client", ["curl", "-s", "-m", "2", url], capture_output=True).returncode != 0
    with lab.prober() as prober:
        target = next(p for p in state.pods_on(other.name) if p.owner == "Deployment/web")
        assert not prober.ping("client", target.ip)["ok"]     # the route across the overlay is gone

        changes = lab.reconcile()
        assert changes.iptables_writes == 1 and changes.netlink_writes == 1
        assert "kube-proxy" in changes.by_agent and "flannel" in changes.by_agent
        assert lab.exec("client", ["curl", "-s", "-m", "2", url], capture_output=True).returncode == 0
        assert prober.ping("client", target.ip)["ok"]

    saved = {n.name: ns.run(n.netns, ["iptables-save"], capture_output=True, text=True).stdout for n in state.nodes}
    mtime = lab.store.path.stat().st_mtime_ns
    again = lab.reconcile()
    assert (again.netlink_writes, again.iptables_writes, again.any()) == (0, 0, False)
    strip = lambda t: [l for l in t.splitlines() if not l.startswith("#")]  # noqa: E731
    assert all(strip(saved[n.name]) == strip(ns.run(n.netns, ["iptables-save"], capture_output=True,
                                                          text=True).stdout) for n in state.nodes)
    assert lab.store.path.stat().st_mtime_ns == mtime                # not even the record was rewritten


def test_reconcile_puts_back_a_neighbour_an_fdb_entry_and_a_killed_pod_server(make_lab):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    state = lab.state()
    node, other = state.nodes[1], state.nodes[2]
    vtep = other.pod_cidr.split("/")[0]
    assert ns.run(node.netns, ["ip", "neigh", "del", vtep, "dev", "flannel.1"]).returncode == 0
    assert ns.run(node.netns, ["bridge", "fdb", "del", other.vtep_mac, "dev", "flannel.1", "dst", other.ip,
                               "self"]).returncode == 0
    os.kill(state.processes["agnhost"]["pid"], signal.SIGKILL)
    changes = lab.reconcile()
    assert changes.netlink_writes == 2
    assert any("started agnhost" in what for _, what in changes.by_agent["kubelet"])
    with lab.prober() as prober:
        pod = next(p for p in lab.state().pods_on(other.name) if p.owner == "Deployment/web")
        assert prober.http("client", pod.ip, 8080)["body"] == pod.name
    assert not lab.reconcile().any()


def test_unready_pods_leave_the_endpoints_and_come_back(make_lab):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    victim = sorted(web_pods(lab))[0]
    lab.set_ready(f"default/{victim}", False)
    eps = lab.get("endpoints")
    web = next(e for e in eps if e["metadata"]["name"] == "web")
    assert victim in {a["targetRef"]["name"] for s in web["subsets"] for a in s.get("notReadyAddresses", [])}
    with lab.prober() as prober:
        assert answers(prober, web_ip(lab), 80, "tcp", 60) == web_pods(lab) - {victim}
        lab.set_ready(f"default/{victim}", True)
        assert answers(prober, web_ip(lab), 80, "tcp") == web_pods(lab)


UDP_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 40123))                   # one source port: one conntrack entry
    s.settimeout(2)
    s.sendto(b"hostname", (sys.argv[1], 8081))
    print(s.recvfrom(100)[0].decode(), flush=True)
    sys.stdin.readline()                         # the test removes that backend meanwhile
    s.sendto(b"hostname", (sys.argv[1], 8081))
    try:
        print(s.recvfrom(100)[0].decode(), flush=True)
    except socket.timeout:
        print("timeout", flush=True)
""")


def test_a_udp_client_moves_to_a_live_backend_when_its_own_goes(make_lab):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    proc = subprocess.Popen(["ip", "netns", "exec", lab.netns_of("client"), sys.executable, "-c", UDP_CLIENT,
                             web_ip(lab)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first in web_pods(lab)
        lab.delete("pod", "default", first)                   # its ReplicaSet puts another in its place
        events = [e for e in __import__("netlab.api.events", fromlist=["read"]).read(lab.name)
                  if "conntrack" in e["message"]]
        assert events, "kube-proxy deleted no conntrack entry"
        proc.stdin.write("\n")
        proc.stdin.flush()
        second = proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()
    assert second in web_pods(lab) and second != first


def test_apply_and_delete_follow_through_to_dns_and_rules(make_lab, tmp_path):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    extra = tmp_path / "extra.yaml"
    extra.write_text(textwrap.dedent("""
        apiVersion: v1
        kind: Service
        metadata: {name: extra}
        spec:
          selector: {app: web}
          ports: [{name: http, port: 8080}]
    """))
    lab.apply([extra])
    out = lab.exec("client", ["curl", "-s", "-m", "2", "http://extra:8080/hostname"], capture_output=True, text=True)
    assert out.stdout in web_pods(lab)
    kernel_matches_state(lab)
    lab.delete_manifests([extra])
    out = lab.exec("client", ["dig", "+time=2", "+tries=2", "extra.default.svc.cluster.local"], capture_output=True,
                   text=True)
    assert out.returncode == 0 and "status: NXDOMAIN" in out.stdout      # answered, and the name is gone
    nat = lab.iptables(f"{lab.name}-worker", "nat")
    assert '"default/web:http cluster IP"' in nat and "default/extra" not in nat
    kernel_matches_state(lab)


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "netlab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def killed_at(lab, before, phase):
    """Whether the scale has reached `phase`: its record saved, unconverged ("saved"); a new
    pod's namespace made ("namespaces"); a new pod's eth0 addressed ("addresses")."""
    try:
        state = lab.state()
    except NetlabError:                    # not readable at this instant: look again
        return False
    new = [p for p in state.pods if p.owner == "Deployment/web" and p.name not in before]
    if len(new) != 5:
        return False
    if phase == "saved":
        return True
    made = [p for p in new if ns.exists(p.netns)]
    if phase == "namespaces":
        return bool(made)
    return any(p.ip in ns.run(p.netns, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"], capture_output=True,
                              text=True).stdout for p in made)


@pytest.mark.parametrize("phase", ["saved", "namespaces", "addresses"])
def test_a_command_killed_half_way_is_converged_by_the_next(make_lab, phase):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    before = web_pods(lab)
    proc = cli("--lab", lab.name, "scale", "deployment/web", "--replicas", "9")
    try:
        wait_for(lambda: killed_at(lab, before, phase), what=f"scale reaching {phase!r}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    lab.reconcile()                                            # the next command
    kernel_matches_state(lab)
    assert not lab.reconcile().any()
    with lab.prober() as prober:
        for pod in (p for p in lab.state().pods if p.owner == "Deployment/web"):
            assert prober.http("client", pod.ip, 8080)["body"] == pod.name
        assert answers(prober, web_ip(lab), 80, "tcp", 100) == web_pods(lab)
    lab.scale("default", "web", 2)
    kernel_matches_state(lab)


def test_concurrent_commands_serialize_on_the_lock(make_lab):
    """The second command starts while the first holds the lock: it waits, then wins."""
    import fcntl

    from netlab import names
    lab = make_lab(TOPOLOGIES / "services.yaml")
    first = cli("--lab", lab.name, "scale", "deployment/web", "--replicas", "6")
    lock = names.STATE_ROOT / ".locks" / lab.name

    def held():
        try:
            with open(lock) as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return False
        except FileNotFoundError:
            return False
        except BlockingIOError:
            return True
    deadline = time.monotonic() + 30
    while not held():
        assert first.poll() is None and time.monotonic() < deadline, "the first command never held the lock"
        time.sleep(0.001)
    second = cli("--lab", lab.name, "scale", "deployment/web", "--replicas", "2")
    for p in (first, second):
        assert p.wait(timeout=120) == 0, p.stderr.read()
    assert len(web_pods(lab)) == 2
    scales = [e["message"] for e in __import__("netlab.api.events", fromlist=["read"]).read(lab.name)
              if e["reason"] == "ScalingReplicaSet"]
    assert [" ".join(m.split()[-4:]) for m in scales][-2:] == ["from 4 to 6", "from 6 to 2"], scales
    kernel_matches_state(lab)
    assert not lab.reconcile().any()


def test_events_say_who_changed_what_and_why(make_lab):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    lab.scale("default", "web", 5)
    out = subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", lab.name, "events", "-o", "json"],
                         capture_output=True, text=True, check=True).stdout
    found = json.loads(out)
    sources = {e["source"] for e in found}
    assert {"deployment-controller", "replicaset-controller", "default-scheduler", "kube-proxy", "cni"} <= sources
    assert any(e["reason"] == "ScalingReplicaSet" and "from 4 to 5" in e["message"] for e in found)
    proxy = [e for e in found if e["source"] == "kube-proxy" and e["why"] != "up"]   # bring-up converges too
    assert {e["object"] for e in proxy} == {f"node/{n.name}" for n in lab.state().nodes}
    assert all(e["why"] == "scale deployment/web --replicas 5" for e in proxy)
    assert {e["object"] for e in found if e["source"] == "kube-proxy" and e["why"] == "up"} == \
        {f"node/{n.name}" for n in lab.state().nodes}
    table = subprocess.run([sys.executable, "-m", "netlab.cli", "--lab", lab.name, "events"],
                           capture_output=True, text=True, check=True).stdout
    assert table.splitlines()[0].split()[:4] == ["NAMESPACE", "LAST", "SEEN", "TYPE"]


def test_the_lab_stays_removable_after_all_this(make_lab):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    lab.add_node("worker3")
    lab.scale("default", "web", 7)
    lab.down()
    assert lab.name not in all_labs() and not [n for n in ns.list_names() if n.startswith(lab.name + "-")]
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert "ps -eo args" in ps                                          # the listing is there to read
    assert f"netlab.addons.agnhost {lab.name}" not in ps and f"netlab.addons.coredns {lab.name}" not in ps


# The service ports of services.yaml that select app=web and kube-proxy handles (not the
# headless one, not the one for another proxy), as kube-proxy hashes them: "ns/name:port" +
# protocol, then the hash.
WEB_PORTS = {
    "default/web:httptcp": "CDGGSHYLG3RE2FKL", "default/web:udpudp": "OORGQSBIFXI7NHIM",
    "default/dual:tcptcp": "DZH5ZS2T3QVIDUNJ", "default/dual:udpudp": "WT7JEPBRB72U5DBI",
    "default/stickytcp": "BJWR5DPVIKTHVKZU",
    "default/web-nodeport:httptcp": "IWCJJAMV7TQADP7P", "default/web-nodeport:udpudp": "OSS4Z53ODTYOYGND",
    "default/web-local:httptcp": "V7ZMVOA2AOW6ATRL",
}


def test_a_scale_rewrites_only_the_chains_of_the_services_it_touches(make_lab):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    before = {p.key for p in lab.state().pods}
    lab.scale("default", "web", 5)
    state = lab.state()
    assert {k: kube_proxy_hash(k) for k in WEB_PORTS} == WEB_PORTS
    allowed = {f"{prefix}{h}" for h in WEB_PORTS.values() for prefix in ("KUBE-SVC-", "KUBE-EXT-", "KUBE-SVL-")}
    allowed |= {f"KUBE-SEP-{kube_proxy_hash(f'{k}{p.ip}:{port}')}" for k in WEB_PORTS for p in state.pods
                if p.owner == "Deployment/web" for port in (8080, 8081)}
    # kube-router follows the new pods too, on their own nodes: their KUBE-POD-FW- chains and
    # the jumps to them in its top-level chains.
    new_pods = [p for p in state.pods if p.owner == "Deployment/web" and p.key not in before]
    allowed |= {kube_router.pod_chain(p.namespace, p.name) for p in new_pods}
    allowed |= {"KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT"}
    chains = lab.last_changes.chains
    assert set(chains) == {n.netns for n in state.nodes}
    for netns, (written, deleted) in chains.items():
        assert written and not deleted
        assert "KUBE-SERVICES" not in written and "KUBE-SVC-TCOU7JCQXEZGVUNU" not in written
        assert set(written) <= allowed, written
    kernel_matches_state(lab)
