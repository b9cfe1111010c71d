"""kube-proxy on real nodes: the rules as iptables-save shows them, and real traffic through
ClusterIPs and NodePorts from pods, nodes and the external client (topologies/services.yaml)."""

import json
import subprocess
import sys
import time

import pytest

from netlab import Lab, plan
from netlab.api.etcd import all_labs
from netlab.controllers import ipam
from netlab.kernel import netns as ns
from netlab.kernel.iptables_restore import RestoreApplier, parse_save
from netlab.node.proxy import iptables as kube_proxy
from netlab.values.iptables import BUILTIN

from .conftest import TOPOLOGIES, lab_for_module, renamed, unique_name

TRIES = 60      # with 4 endpoints, one is missed in 60 random picks with probability 4·(3/4)^60 ≈ 1e-7


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_for_module(TOPOLOGIES / "services.yaml", tmp_path_factory) as lab:
        yield lab


@pytest.fixture(scope="module")
def prober(lab):
    with lab.prober() as p:
        yield p


def ip_of(lab, service):
    return lab.state().service("default", service).cluster_ip


def curl(lab, target, url, timeout=3):
    return lab.exec(target, ["curl", "-sS", "-m", str(timeout), url], capture_output=True, text=True)


def nc_udp(lab, target, ip, port, message):
    return lab.exec(target, ["sh", "-c", f"printf {message} | nc -u -w1 {ip} {port}"],
                    capture_output=True, text=True).stdout


def web_pods(lab):
    return {p.name for p in lab.state().pods if p.owner == "Deployment/web"}


def nodes(lab):
    return lab.state().nodes


# --- the rules -------------------------------------------------------------------------

def rules_as_printed(netns, table):
    """`iptables -t TABLE -S`, read into chain -> rules; and what it wrote on stderr."""
    out = ns.run(netns, ["iptables", "-t", table, "-S"], capture_output=True, text=True)
    chains = {}
    for line in out.stdout.splitlines():
        verb, chain, *rest = line.split(" ", 2)
        rules = chains.setdefault(chain, [])
        if verb == "-A":
            rules.append(rest[0])
    return chains, out.stderr


def test_every_node_holds_exactly_the_planned_rules_and_iptables_prints_no_warning(lab):
    state = lab.state()
    for node in state.nodes:
        planned = plan.node_plan(state, node).iptables
        for table in ("nat", "filter"):
            have, warnings = rules_as_printed(node.netns, table)
            assert warnings == ""
            want = {c: list(r) for c, r in planned[table].chains.items()}
            assert {c: have.get(c, []) for c in want} == want
            assert set(have) - set(BUILTIN[table]) == set(planned[table].user_chains())


def test_kube_proxys_chains_are_there_by_their_hashed_names(lab):
    nat = lab.iptables(f"{lab.name}-worker", "nat")
    assert "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment \"default/kubernetes:https cluster IP\" " \
           "-m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y" in nat
    # base32(sha256("default/web:httptcp"))[:16], and so on: kube-proxy's names, written out
    assert nat.count("-A KUBE-SVC-CDGGSHYLG3RE2FKL ") == 1 + 4          # default/web:http: masquerade + 4 endpoints
    assert nat.count("-A KUBE-SVC-OORGQSBIFXI7NHIM ") == 1 + 4          # default/web:udp
    assert nat.count("-A KUBE-SVC-BJWR5DPVIKTHVKZU ") == 1 + 4 + 4      # default/sticky: and a recent check each
    assert "-j KUBE-EXT-IWCJJAMV7TQADP7P" in nat                        # default/web-nodeport:http's NodePort
    assert "-A KUBE-EXT-V7ZMVOA2AOW6ATRL -j KUBE-SVL-V7ZMVOA2AOW6ATRL" in nat    # default/web-local:http, Local
    services = [l for l in nat.splitlines() if l.startswith("-A KUBE-SERVICES")]
    assert "kubernetes service nodeports; NOTE: this must be the last rule" in services[-1]
    for skipped in ("web-headless", "elsewhere"):
        assert f"default/{skipped}" not in nat


def test_an_unchanged_rule_set_is_not_rewritten(lab):
    state = lab.state()
    applier = RestoreApplier()
    for node in state.nodes:
        applier.apply(node.netns, plan.node_plan(state, node).iptables)
    assert applier.writes == 0


def test_route_localnet_is_set_on_every_node(lab):
    for node in nodes(lab):
        assert ns.read_sysctl(node.netns, "net/ipv4/conf/all/route_localnet") == "1"


def test_probabilities_are_what_iptables_stores_for_kube_proxys_values(lab):
    """kube-proxy writes 1/n with 10 decimals; the kernel keeps a 31-bit fraction. Feed the
    real iptables kube-proxy's own text and read back what the planner predicts."""
    node = f"{lab.name}-control-plane"
    rules = "".join(f"-A NETLAB-PROB -m statistic --mode random --probability {1.0 / n:0.10f} -j RETURN\n"
                    for n in range(2, 12))
    text = f"*filter\n:NETLAB-PROB - [0:0]\n{rules}COMMIT\n"
    subprocess.run(["ip", "netns", "exec", node, "iptables-restore", "--noflush"], input=text, text=True, check=True)
    try:
        saved = parse_save(ns.run(node, ["iptables-save", "-t", "filter"], capture_output=True, text=True).stdout)
        got = [r.split("--probability ")[1].split()[0] for r in saved["NETLAB-PROB"]]
        assert got == [kube_proxy.probability(n) for n in range(2, 12)]
    finally:
        ns.run(node, ["sh", "-c", "iptables -F NETLAB-PROB; iptables -X NETLAB-PROB"])


# --- ClusterIP -------------------------------------------------------------------------

def test_pod_to_cluster_ip_over_tcp_reaches_a_backend_that_sees_the_pod(lab, prober):
    client = lab.state().pod("default", "client")
    answer = prober.http("client", ip_of(lab, "web"), 80, "/hostname")
    assert answer["ok"] and answer["body"] in web_pods(lab)
    seen = curl(lab, "client", f"http://{ip_of(lab, 'web')}/clientip").stdout
    assert seen.split(":")[0] == client.ip


def test_pod_to_cluster_ip_over_udp(lab, prober):
    client = lab.state().pod("default", "client")
    answer = prober.udp("client", ip_of(lab, "web"), 8081, "hostname")
    assert answer["ok"] and answer["body"] in web_pods(lab)
    assert nc_udp(lab, "client", ip_of(lab, "web"), 8081, "clientip").split(":")[0] == client.ip


def test_node_to_cluster_ip(lab):
    for node in nodes(lab):
        assert curl(lab, node.name, f"http://{ip_of(lab, 'web')}/hostname").stdout in web_pods(lab)


def test_every_endpoint_answers_within_a_bounded_number_of_tries(lab, prober):
    seen = {prober.http("client", ip_of(lab, "web"), 80)["body"] for _ in range(TRIES)}
    assert seen == web_pods(lab)


def test_client_ip_affinity_keeps_one_backend(lab, prober):
    seen = {prober.http("client", ip_of(lab, "sticky"), 80)["body"] for _ in range(20)}
    assert len(seen) == 1 and seen <= web_pods(lab)


AFFINITY_SECONDS = 2
FLEETING = f"""
apiVersion: v1
kind: Service
metadata: {{name: fleeting}}
spec:
  selector: {{app: web}}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: {AFFINITY_SECONDS}}}}}
  ports:
    - {{name: http, port: 80, targetPort: 8080}}
"""


def test_client_ip_affinity_lasts_while_requests_come_and_ends_its_timeout_after_the_last(lab, prober, tmp_path):
    """kube-proxy's `recent` match: each new connection renews the client's entry; one older
    than timeoutSeconds no longer matches, and the client is placed afresh (then kept)."""
    f = tmp_path / "fleeting.yaml"
    f.write_text(FLEETING)
    lab.apply([f])
    try:
        ip, client = ip_of(lab, "fleeting"), lab.state().pod("default", "client")
        svc_chain = "KUBE-SVC-GU5R654OQO6L7WMQ"                       # default/fleeting:http, TCP
        nat = [l for l in lab.iptables(client.node, "nat").splitlines() if l.startswith(f"-A {svc_chain} ")]
        assert len([l for l in nat if f"-m recent --rcheck --seconds {AFFINITY_SECONDS} --reap" in l]) == 4
        first = prober.http("client", ip, 80)["body"]
        assert first in web_pods(lab)
        renewed_until = time.monotonic() + 2 * AFFINITY_SECONDS         # longer than the timeout
        while time.monotonic() < renewed_until:
            time.sleep(AFFINITY_SECONDS / 4)                           # the requests' pace: what is tested
            assert prober.http("client", ip, 80)["body"] == first
        chosen = {first}
        for _ in range(10):                    # each time one of 4 endpoints: only `first` 10 times, p = 4^-10
            time.sleep(AFFINITY_SECONDS + 0.5)                         # the idle time: what is tested
            now = prober.http("client", ip, 80)["body"]
            assert {prober.http("client", ip, 80)["body"] for _ in range(4)} == {now}    # kept again
            chosen.add(now)
            if len(chosen) > 1:
                break
        assert len(chosen) > 1 and chosen <= web_pods(lab)
    finally:
        lab.delete("service", "default", "fleeting")


def test_hairpin_a_pod_reaches_itself_through_its_service(lab, prober):
    state = lab.state()
    client = state.pod("default", "client")
    assert prober.http("client", ip_of(lab, "client"), 80)["body"] == "client"
    # Masqueraded to the bridge address, as kube-proxy's KUBE-SEP "-s <pod ip>" rule asks.
    seen = prober.http("client", ip_of(lab, "client"), 80, "/clientip")["body"]
    assert seen.split(":")[0] == ipam.gateway(state.node(client.node).pod_cidr)


def test_a_service_without_endpoints_is_refused_at_once(lab, prober):
    dst = ip_of(lab, "nobody")
    answer = prober.knock("client", dst, 80)                 # a SYN made by scapy
    assert (answer["reply"], answer["type"], answer["code"]) == ("icmp", 3, 3)   # port unreachable
    assert answer["elapsed"] < 1.0
    out = curl(lab, "client", f"http://{dst}/", timeout=5)
    assert out.returncode == 7                               # "Couldn't connect", not 28 (timeout)


def test_multi_port_and_one_port_number_on_tcp_and_udp(lab, prober):
    dual = ip_of(lab, "dual")
    assert prober.http("client", dual, 9000)["body"] in web_pods(lab)
    assert prober.udp("client", dual, 9000, "hostname")["body"] in web_pods(lab)
    assert nc_udp(lab, "client", dual, 9000, "hostname") in web_pods(lab)


# --- NodePort --------------------------------------------------------------------------

def test_node_port_from_a_pod_and_from_every_node_to_every_node(lab, prober):
    for node in nodes(lab):
        assert prober.http("client", node.ip, 30080)["body"] in web_pods(lab)
        for target in nodes(lab):
            assert curl(lab, node.name, f"http://{target.ip}:30080/hostname").stdout in web_pods(lab)
        assert curl(lab, node.name, "http://127.0.0.1:30080/hostname").stdout in web_pods(lab)   # route_localnet


def test_node_port_from_outside_through_a_node_without_backends_is_source_nated(lab):
    state = lab.state()
    cp = state.node(f"{lab.name}-control-plane")
    assert not [p for p in state.pods_on(cp.name) if p.owner == "Deployment/web"]
    outside = ipam.lan_external_ip(state.cluster.lan_cidr)
    seen = curl(lab, "external", f"http://{cp.ip}:30080/clientip").stdout.split(":")[0]
    assert seen != outside and seen == f"{cp.pod_cidr.split('/')[0]}"      # cp's flannel.1 address
    assert nc_udp(lab, "external", cp.ip, 30081, "hostname") in web_pods(lab)


def test_local_policy_keeps_the_client_address_and_drops_without_a_local_endpoint(lab, prober):
    state = lab.state()
    outside = ipam.lan_external_ip(state.cluster.lan_cidr)
    preserved, dropped = [], []
    for node in state.nodes:
        out = curl(lab, "external", f"http://{node.ip}:30082/clientip", timeout=2)
        if any(p.owner == "Deployment/web" for p in state.pods_on(node.name)):
            assert out.stdout.split(":")[0] == outside
            preserved.append(node.name)
        else:
            assert out.returncode == 28                      # dropped: a timeout, not a refusal
            dropped.append(node.name)
    assert preserved and dropped == [f"{lab.name}-control-plane"]
    # A pod is not outside: on its own node kube-proxy sends it to every endpoint (the "pod
    # traffic" rule), not only the local ones...
    client = state.pod("default", "client")
    here = state.node(client.node)
    seen = {prober.http("client", here.ip, 30082)["body"] for _ in range(30)}
    assert seen <= web_pods(lab) and seen - {p.name for p in state.pods_on(here.name)}
    # ...but towards another node it leaves masqueraded by flannel, so there it is outside.
    assert curl(lab, "client", f"http://{state.node(dropped[0]).ip}:30082/hostname", timeout=2).returncode == 28
    drop = [l for l in lab.iptables(dropped[0], "filter").splitlines() if "has no local endpoints" in l]
    assert drop and "--dport 30082 -j DROP" in drop[0]


# --- the API ---------------------------------------------------------------------------

def netlab(*args):
    return subprocess.run([sys.executable, "-m", "netlab.cli", *args], capture_output=True, text=True)


def test_get_services_and_endpoints_in_the_apis_shapes(lab):
    svcs = json.loads(netlab("--lab", lab.name, "get", "services", "-o", "json").stdout)["items"]
    by_name = {s["metadata"]["name"]: s for s in svcs}
    assert by_name["kubernetes"]["spec"]["clusterIP"] == "10.96.0.1"
    assert by_name["web-nodeport"]["spec"]["ports"][0]["nodePort"] == 30080
    assert by_name["web-headless"]["spec"]["clusterIP"] == "None"
    eps = json.loads(netlab("--lab", lab.name, "get", "endpoints", "-o", "json").stdout)["items"]
    web = next(e for e in eps if e["metadata"]["name"] == "web")
    addresses = [a for s in web["subsets"] for a in s["addresses"]]
    assert {a["targetRef"]["name"] for a in addresses} == web_pods(lab)
    assert all(a["nodeName"].startswith(lab.name) and a["targetRef"]["kind"] == "Pod" for a in addresses)
    assert {(p["name"], p["port"], p["protocol"]) for s in web["subsets"] for p in s["ports"]} == {
        ("http", 8080, "TCP"), ("udp", 8081, "UDP")}
    kubernetes = next(e for e in eps if e["metadata"]["name"] == "kubernetes")
    assert kubernetes["subsets"][0]["ports"] == [{"name": "https", "port": 6443, "protocol": "TCP"}]
    assert "subsets" not in next(e for e in eps if e["metadata"]["name"] == "nobody")
    one = json.loads(netlab("--lab", lab.name, "get", "svc", "web", "-o", "json").stdout)
    assert (one["kind"], one["metadata"]["name"]) == ("Service", "web")
    missing = netlab("--lab", lab.name, "get", "svc", "nope")
    assert missing.returncode == 1 and 'services "nope" not found' in missing.stderr
    table = netlab("--lab", lab.name, "get", "svc").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert any(l.split()[:5] == ["web-nodeport", "NodePort", by_name["web-nodeport"]["spec"]["clusterIP"], "<none>",
                                 "80:30080/TCP,8081:30081/UDP"] for l in table)


def test_get_daemonsets_shows_the_per_node_agents(lab):
    out = netlab("--lab", lab.name, "get", "daemonsets", "-A").stdout.splitlines()
    rows = {l.split()[1]: l.split() for l in out[1:]}
    assert rows["kube-proxy"][:7] == ["kube-system", "kube-proxy", "3", "3", "3", "3", "3"]
    assert rows["kube-flannel-ds"][0] == "kube-flannel"


def test_netlab_iptables_prints_what_iptables_save_prints(lab):
    node = f"{lab.name}-worker"
    ours = netlab("--lab", lab.name, "iptables", node, "-t", "nat").stdout
    theirs = ns.run(node, ["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    strip = lambda t: [l for l in t.splitlines() if not l.startswith("#")]  # noqa: E731  (timestamps)
    assert strip(ours) == strip(theirs)


def test_dry_run_prints_every_nodes_rules_and_creates_nothing(tmp_path):
    name = unique_name("d")
    out = netlab("up", str(renamed(TOPOLOGIES / "services.yaml", name, tmp_path)), "--dry-run")
    assert out.returncode == 0 and [n for n in ns.list_names() if n.startswith(name + "-")] == []
    assert name not in all_labs()
    for node in ("control-plane", "worker", "worker2"):
        section = out.stdout.split(f"# netns {name}-{node}\n")[1].split("# netns")[0]
        assert "*nat" in section and "-A KUBE-SERVICES" in section and "-A KUBE-NODEPORTS" in section


# --- the second applier ----------------------------------------------------------------

def with_applier(src, applier, tmp_path):
    f = tmp_path / "with-applier.yaml"
    f.write_text(src.read_text() + f"---\napiVersion: netlab.io/v1alpha1\nkind: Lab\niptables: {{applier: {applier}}}\n")
    return f


def test_python_iptables_applier_writes_the_same_plan_to_the_legacy_tables(make_lab, tmp_path):
    from netlab.kernel.python_iptables import SAVE, PythonIptablesApplier
    lab = make_lab(with_applier(TOPOLOGIES / "services.yaml", "python-iptables", tmp_path))
    state = lab.state()
    assert state.cluster.iptables_applier == "python-iptables"
    for node in state.nodes:
        planned = plan.node_plan(state, node).iptables
        for table in ("nat", "filter"):
            have = parse_save(ns.run(node.netns, [SAVE, "-t", table], capture_output=True, text=True).stdout)
            assert {c: have.get(c) for c in planned[table].chains} == {c: list(r) for c, r in planned[table].chains.items()}
        nft = ns.run(node.netns, ["iptables-nft-save"], capture_output=True, text=True)
        assert nft.returncode == 0 and "iptables-legacy tables present" in nft.stderr      # it looked, and saw them
        assert "KUBE" not in nft.stdout
    web = state.service("default", "web").cluster_ip
    assert curl(lab, "client", f"http://{web}/hostname").stdout in web_pods(lab)
    assert curl(lab, "external", f"http://{state.nodes[0].ip}:30080/hostname").stdout in web_pods(lab)
    assert "KUBE-NODEPORTS" in lab.iptables(state.nodes[0].name, "nat")
    again = PythonIptablesApplier()
    for node in state.nodes:
        again.apply(node.netns, plan.node_plan(state, node).iptables)
    assert again.writes == 0


def test_an_unusable_backend_is_a_clear_error_and_builds_nothing(tmp_path, monkeypatch):
    from netlab.errors import EnvironmentProblem
    monkeypatch.setitem(sys.modules, "iptc", None)            # `import iptc` now fails
    name = unique_name("b")
    with pytest.raises(EnvironmentProblem, match="python-iptables"):
        Lab.up(with_applier(renamed(TOPOLOGIES / "services.yaml", name, tmp_path), "python-iptables", tmp_path))
    # Only this lab's names: other labs may come and go on the machine meanwhile.
    assert [n for n in ns.list_names() if n.startswith(name + "-")] == [] and name not in all_labs()
