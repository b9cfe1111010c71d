"""Cluster DNS on a live lab, asked with the real `dig` and `curl` from pods, as a pod on a
real cluster asks it (topologies/services.yaml: web, a headless web, an ExternalName)."""

import sys
import textwrap
import time

import pytest

from netlab import names
from netlab.kernel import netns as ns

from .conftest import TOPOLOGIES, lab_for_module


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_for_module(TOPOLOGIES / "services.yaml", tmp_path_factory) as lab:
        yield lab


def dig(lab, *args, target="client"):
    out = lab.exec(target, ["dig", "+time=2", "+tries=1", *args], capture_output=True, text=True)
    return out.stdout


def short(lab, *args, target="client"):
    return sorted(dig(lab, "+short", *args, target=target).split())


def status(lab, *args):
    return next(l for l in dig(lab, *args).splitlines() if "status:" in l).split("status: ")[1].split(",")[0]


def web_ips(lab):
    return sorted(p.ip for p in lab.state().pods if p.owner == "Deployment/web")


def svc_ip(lab, name, namespace="default"):
    return lab.state().service(namespace, name).cluster_ip


def test_every_pod_gets_kubelets_resolv_conf(lab):
    assert lab.exec("client", ["cat", "/etc/resolv.conf"], capture_output=True, text=True).stdout == (
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\noptions ndots:5\n")
    client = lab.state().pod("default", "client")
    hosts = lab.exec("client", ["cat", "/etc/hosts"], capture_output=True, text=True).stdout
    assert hosts.startswith("# Kubernetes-managed hosts file.") and f"{client.ip}\tclient" in hosts


def test_kube_dns_is_the_well_known_service(lab):
    assert svc_ip(lab, "kube-dns", "kube-system") == "10.96.0.10"
    nat = lab.iptables(f"{lab.name}-worker", "nat")
    assert "-j KUBE-SVC-TCOU7JCQXEZGVUNU" in nat                       # kube-system/kube-dns:dns
    dns_pods = [p for p in lab.state().pods if p.namespace == "kube-system"]
    assert len(dns_pods) == 2 and all(p.name.startswith("coredns-") for p in dns_pods)


def test_short_names_through_the_search_path(lab):
    assert short(lab, "+search", "web") == [svc_ip(lab, "web")]
    assert short(lab, "+search", "web.default") == [svc_ip(lab, "web")]
    assert short(lab, "+search", "kubernetes.default") == ["10.96.0.1"]
    assert short(lab, "+search", "kube-dns.kube-system") == ["10.96.0.10"]


def test_fully_qualified_names_over_udp_and_tcp(lab):
    for transport in ("+notcp", "+tcp"):
        assert short(lab, transport, "web.default.svc.cluster.local") == [svc_ip(lab, "web")]


def test_srv_and_ptr(lab):
    assert short(lab, "SRV", "_http._tcp.web.default.svc.cluster.local") == sorted(
        ["0", "100", "80", "web.default.svc.cluster.local."])
    assert short(lab, "-x", svc_ip(lab, "web")) == ["web.default.svc.cluster.local."]


def test_headless_answers_every_ready_pod(lab):
    assert short(lab, "web-headless.default.svc.cluster.local") == web_ips(lab)
    srv = dig(lab, "+short", "SRV", "_http._tcp.web-headless.default.svc.cluster.local").splitlines()
    assert sorted(l.split()[3] for l in srv) == sorted(
        f"{ip.replace('.', '-')}.web-headless.default.svc.cluster.local." for ip in web_ips(lab))
    assert all(l.split()[:3] == ["0", "25", "8080"] for l in srv)          # 4 endpoints: weight 100/4


def test_nxdomain_carries_the_soa_and_outside_names_fail_at_once(lab):
    out = dig(lab, "nothing.default.svc.cluster.local")
    assert "status: NXDOMAIN" in out and "IN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local." in out
    start = time.monotonic()
    assert status(lab, "example.org") == "SERVFAIL"
    assert time.monotonic() - start < 1.5


def test_curl_by_service_name(lab):
    out = lab.exec("client", ["curl", "-sS", "-m", "3", "http://web/hostname"], capture_output=True, text=True)
    assert out.stdout in {p.name for p in lab.state().pods if p.owner == "Deployment/web"}
    out = lab.exec("client", ["curl", "-sS", "-m", "3", "http://web.default.svc.cluster.local:8081"],
                   capture_output=True, text=True)
    assert out.returncode != 0                                       # 8081 is the UDP port: nothing on TCP


def test_coredns_metrics_count_what_it_answered(lab):
    pod = next(p for p in lab.state().pods if p.namespace == "kube-system")
    before = lab.exec("client", ["curl", "-s", f"http://{pod.ip}:9153/metrics"], capture_output=True, text=True).stdout
    dig(lab, f"@{pod.ip}", "web.default.svc.cluster.local")
    after = lab.exec("client", ["curl", "-s", f"http://{pod.ip}:9153/metrics"], capture_output=True, text=True).stdout

    def count(text):
        line = next((l for l in text.splitlines() if l.startswith("coredns_dns_requests_total") and 'proto="udp"' in l
                     and 'type="A"' in l), "x 0")
        return int(line.rsplit(" ", 1)[1])
    assert count(after) == count(before) + 1


FUZZ = textwrap.dedent("""
    import os, random, socket, struct, sys
    from dnslib import DNSRecord
    server, count = sys.argv[1], int(sys.argv[2])
    rng = random.Random(1)
    valid = DNSRecord.question("web.default.svc.cluster.local").pack()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(count):
        kind = i % 4
        if kind == 0:
            data = os.urandom(rng.randrange(0, 600))
        elif kind == 1:
            data = bytearray(valid)
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        elif kind == 2:
            data = valid[:rng.randrange(len(valid))]
        else:
            data = valid[:12] + bytes([63]) + os.urandom(rng.randrange(0, 300))
        udp.sendto(data, (server, 53))
    for i in range(200):                       # TCP: garbage lengths, cut messages, idle opens
        t = socket.create_connection((server, 53), timeout=2)
        t.sendall(struct.pack("!H", rng.randrange(65536)) + os.urandom(rng.randrange(0, 100)))
        t.close()
    print("sent")
""")


def test_the_server_survives_a_flood_of_garbage_and_still_answers(lab):
    state = lab.state()
    before = dict(state.processes["coredns"])
    out = lab.exec("client", [sys.executable, "-c", FUZZ, "10.96.0.10", "20000"], capture_output=True, text=True)
    assert out.stdout.strip() == "sent", out.stderr
    assert short(lab, "web.default.svc.cluster.local") == [svc_ip(lab, "web")]
    assert short(lab, "+tcp", "web-headless.default.svc.cluster.local") == web_ips(lab)
    from netlab.node.kubelet import alive
    assert alive(before)


def test_resolver_files_go_with_the_lab(tmp_path):
    from netlab import Lab

    from .conftest import renamed, unique_name
    name = unique_name()
    lab = Lab.up(renamed(TOPOLOGIES / "two-nodes.yaml", name, tmp_path))
    try:
        pod = lab.state().pod("default", "a")
        assert (names.NETNS_ETC / pod.netns / "resolv.conf").exists()
    finally:
        lab.down()
    assert not (names.NETNS_ETC / pod.netns).exists()
    assert not ns.exists(pod.netns)


def test_headless_answers_follow_the_pods_and_a_cached_answer_goes_stale(make_lab):
    lab = make_lab(TOPOLOGIES / "services.yaml")
    server = dict(lab.state().processes["coredns"])
    name = "web-headless.default.svc.cluster.local"
    cached = short(lab, name)
    assert cached == web_ips(lab) and len(cached) == 4
    ttl = dig(lab, "+noall", "+answer", name).split()[1]
    assert ttl == "30"                                              # how long a client may keep it

    lab.scale("default", "web", 6)
    assert short(lab, name) == web_ips(lab) and len(web_ips(lab)) == 6

    lab.scale("default", "web", 2)
    fresh = short(lab, name)
    assert fresh == web_ips(lab) and len(fresh) == 2
    gone = sorted(set(cached) - set(fresh))
    assert gone                                                     # the cache names pods that no longer exist
    for ip in gone:                                                 # a client that kept them fails
        out = lab.exec("client", ["curl", "-sS", "-m", "2", f"http://{ip}:8080/hostname"], capture_output=True, text=True)
        assert out.returncode != 0
    for ip in fresh:                                                # one that asked again does not
        out = lab.exec("client", ["curl", "-sS", "-m", "2", f"http://{ip}:8080/hostname"], capture_output=True, text=True)
        assert out.returncode == 0
    assert lab.state().processes["coredns"] == server                # followed without a restart
    from netlab.node.kubelet import alive
    assert alive(server)
