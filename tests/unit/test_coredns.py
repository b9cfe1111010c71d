"""The cluster DNS zone and its answers, against the Kubernetes DNS specification 1.1.0 and
CoreDNS's kubernetes plugin as kubeadm configures it (shared/REFERENCE.md)."""

import random

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from netlab.addons import coredns
from netlab.api import spec
from netlab.api.spec import Container, ContainerPort, PodTemplate, ServiceManifest, ServicePort
from netlab.controllers import cluster

D = "cluster.local."


def web_template(**kw):
    return PodTemplate(labels={"app": "web"}, containers=(Container("c", ports=(ContainerPort(8080, "TCP", "http"),)),), **kw)


def make_state(web=3, dns_ttl=30):
    c = spec.ClusterConfig(name="t", roles=("control-plane", "worker", "worker"), dns_ttl=dns_ttl)
    s = cluster.new_state(spec.LabSpec(c, deployments=(
        spec.DeploymentManifest("default", "web", web, {"app": "web"}, web_template()),)), random.Random(5))
    cluster.add_pod(s, "default", "named", web_template(hostname="alpha", subdomain="web-headless"), rng=random.Random(1))
    for svc in (
        ServiceManifest("default", "web", cluster_ip="10.96.100.1", selector={"app": "web"},
                        ports=(ServicePort(80, "TCP", "http", "http"), ServicePort(81, "TCP", "", 8080))),
        ServiceManifest("default", "web-headless", cluster_ip="None", selector={"app": "web"},
                        ports=(ServicePort(80, "TCP", "http", 8080),)),
        ServiceManifest("default", "empty", cluster_ip="10.96.100.2", selector={"app": "none"},
                        ports=(ServicePort(80, "TCP", "http", 8080),)),
        ServiceManifest("default", "empty-headless", cluster_ip="None", selector={"app": "none"},
                        ports=(ServicePort(80, "TCP", "http", 8080),)),
        ServiceManifest("default", "docs", type="ExternalName", external_name="Docs.Example.org"),
    ):
        cluster.add_service(s, svc, random.Random(2))
    cluster.sync_endpoints(s)
    return s


def web_ips(s):
    return sorted((p.ip for p in s.pods if p.labels.get("app") == "web"), key=lambda ip: tuple(map(int, ip.split("."))))


def ask(z, name, qtype="A", transport="udp", edns=None):
    q = DNSRecord.question(name, qtype)
    if edns:
        q.add_ar(EDNS0(udp_len=edns))
    return DNSRecord.parse(coredns.answer(z, q.pack(), transport))


def data(reply, qtype, section="rr"):
    return sorted(str(r.rdata) for r in getattr(reply, section) if r.rtype == getattr(QTYPE, qtype))


@pytest.fixture(scope="module")
def state():
    return make_state()


@pytest.fixture(scope="module")
def z(state):
    return coredns.zone(state, 30, serial=7)


# --- ClusterIP Services ------------------------------------------------------------------

def test_cluster_ip_service_a_record(z):
    r = ask(z, f"web.default.svc.{D}")
    assert data(r, "A") == ["10.96.100.1"] and r.rr[0].ttl == 30 and r.header.aa


def test_srv_per_named_port_only(z):
    r = ask(z, f"_http._tcp.web.default.svc.{D}", "SRV")
    assert data(r, "SRV") == [f"0 100 80 web.default.svc.{D}"]
    assert data(r, "A", "ar") == ["10.96.100.1"]                    # the target, in the additional section
    assert ask(z, f"__tcp.web.default.svc.{D}", "SRV").rr == []


def test_ptr_for_the_cluster_ip(z):
    assert data(ask(z, "1.100.96.10.in-addr.arpa.", "PTR"), "PTR") == [f"web.default.svc.{D}"]


def test_a_cluster_ip_service_without_endpoints_still_has_its_a_record(z):
    assert data(ask(z, f"empty.default.svc.{D}"), "A") == ["10.96.100.2"]


def test_the_well_known_names(z):
    assert data(ask(z, f"kubernetes.default.svc.{D}"), "A") == ["10.96.0.1"]
    assert data(ask(z, f"kube-dns.kube-system.svc.{D}"), "A") == ["10.96.0.10"]
    assert data(ask(z, f"_dns._udp.kube-dns.kube-system.svc.{D}", "SRV"), "SRV") == [
        f"0 100 53 kube-dns.kube-system.svc.{D}"]


# --- headless Services -------------------------------------------------------------------

def test_headless_one_a_per_ready_endpoint(state):
    s = make_state()
    not_ready = next(p for p in s.pods if p.labels.get("app") == "web")
    not_ready.ready = False
    cluster.sync_endpoints(s)
    r = ask(coredns.zone(s), f"web-headless.default.svc.{D}")
    assert data(r, "A") == sorted(ip for ip in web_ips(s) if ip != not_ready.ip)


def test_headless_without_ready_endpoints_is_nxdomain(z):
    r = ask(z, f"empty-headless.default.svc.{D}")
    assert r.header.rcode == RCODE.NXDOMAIN and r.rr == []


def test_hostname_and_subdomain_and_dashed_ip_names(state, z):
    named = state.pod("default", "named")
    assert data(ask(z, f"alpha.web-headless.default.svc.{D}"), "A") == [named.ip]
    other = next(p for p in state.pods if p.labels.get("app") == "web" and p.name != "named")
    dashed = other.ip.replace(".", "-")
    assert data(ask(z, f"{dashed}.web-headless.default.svc.{D}"), "A") == [other.ip]


def test_headless_srv_per_endpoint_named_after_it(state, z):
    r = ask(z, f"_http._tcp.web-headless.default.svc.{D}", "SRV")
    ips = web_ips(state)
    names = {ip: ("alpha" if ip == state.pod("default", "named").ip else ip.replace(".", "-")) for ip in ips}
    weight = 100 // len(ips)                                        # CoreDNS: floor(100 / n)
    assert data(r, "SRV") == sorted(f"0 {weight} 8080 {names[ip]}.web-headless.default.svc.{D}" for ip in ips)
    assert data(r, "A", "ar") == sorted(ips)


def test_an_endpoint_has_a_ptr_per_service_that_has_it(state, z):
    """CoreDNS's serviceRecordForIP: an address no ClusterIP has is looked up among every
    Service's endpoints (reverse.go), headless or not: the pod behind web (a ClusterIP) and
    web-headless (where its hostname names it) has two PTRs."""
    named = state.pod("default", "named")
    reverse = ".".join(reversed(named.ip.split("."))) + ".in-addr.arpa."
    assert sorted(data(ask(z, reverse, "PTR"), "PTR")) == [f"{named.ip.replace('.', '-')}.web.default.svc.{D}",
                                                           f"alpha.web-headless.default.svc.{D}"]


# --- other records -----------------------------------------------------------------------

def test_external_name_is_a_cname(z):
    for qtype in ("A", "CNAME"):
        r = ask(z, f"docs.default.svc.{D}", qtype)
        assert data(r, "CNAME") == ["docs.example.org."] and r.header.rcode == RCODE.NOERROR


def test_dns_version_txt(z):
    r = ask(z, f"dns-version.{D}", "TXT")
    assert data(r, "TXT") == ['"1.1.0"'] and r.rr[0].ttl == 28800


def test_pod_records_as_pods_insecure_gives_them(z):
    assert data(ask(z, f"10-244-1-7.default.pod.{D}"), "A") == ["10.244.1.7"]
    assert ask(z, f"10-244-1-999.default.pod.{D}").header.rcode == RCODE.NXDOMAIN


def test_negative_answers_carry_the_soa(z):
    nx = ask(z, f"nothing.default.svc.{D}")
    nodata = ask(z, f"web.default.svc.{D}", "AAAA")
    for r, rcode in ((nx, RCODE.NXDOMAIN), (nodata, RCODE.NOERROR)):
        assert r.header.rcode == rcode and r.rr == []
        (soa,) = r.auth
        assert str(soa.rname) == D and soa.rtype == QTYPE.SOA
        assert str(soa.rdata).split() == [f"ns.dns.{D}", f"hostmaster.{D}", "7", "7200", "1800", "86400", "30"]


def test_names_above_records_exist_without_data(z):
    r = ask(z, f"default.svc.{D}")
    assert r.header.rcode == RCODE.NOERROR and r.rr == [] and r.auth


def test_names_compare_case_insensitively_and_keep_the_askers_case(z):
    r = ask(z, "WEB.Default.SVC.Cluster.Local.")
    assert data(r, "A") == ["10.96.100.1"] and str(r.rr[0].rname) == "WEB.Default.SVC.Cluster.Local."


def test_the_ttl_is_configurable():
    z = coredns.zone(make_state(dns_ttl=5), 5)
    assert ask(z, f"web.default.svc.{D}").rr[0].ttl == 5


def test_outside_the_cluster_domain_is_a_prompt_servfail(z):
    for name, qtype in (("example.org.", "A"), ("8.8.8.8.in-addr.arpa.", "PTR")):
        assert ask(z, name, qtype).header.rcode == RCODE.SERVFAIL


# --- the wire ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big():
    """A headless Service with 40 ready endpoints: its A answer is far over 512 bytes."""
    s = make_state(web=40)
    return coredns.zone(s), web_ips(s)


def test_udp_answers_over_512_bytes_are_truncated_without_edns(big):
    z, ips = big
    q = DNSRecord.question(f"web-headless.default.svc.{D}").pack()
    raw = coredns.answer(z, q, "udp")
    r = DNSRecord.parse(raw)
    assert len(raw) <= 512 and r.header.tc and len(r.rr) < len(ips)


def test_edns0_raises_the_limit_and_is_echoed(big):
    z, ips = big
    r = ask(z, f"web-headless.default.svc.{D}", edns=4096)
    assert not r.header.tc and len(data(r, "A")) == len(ips)
    assert any(rr.rtype == QTYPE.OPT for rr in r.ar)


def test_tcp_answers_are_whole(big):
    z, ips = big
    r = ask(z, f"web-headless.default.svc.{D}", transport="tcp")
    assert not r.header.tc and len(data(r, "A")) == len(ips)


def test_garbage_gets_formerr_or_nothing(z):
    q = DNSRecord.question(f"web.default.svc.{D}").pack()
    formerr = DNSRecord.parse(coredns.answer(z, q[:12] + b"\xff\xff\xff", "udp"))
    assert formerr.header.rcode == RCODE.FORMERR and formerr.header.id == DNSRecord.parse(q).header.id
    assert coredns.answer(z, b"\x01\x02", "udp") is None
    reply = coredns.answer(z, q, "udp")
    assert coredns.answer(z, reply, "udp") is None                    # responses are never answered


# --- robustness --------------------------------------------------------------------------

from hypothesis import given, settings
from hypothesis import strategies as st  # noqa: E402

_ZONE = []


def small_zone():
    if not _ZONE:
        _ZONE.append(coredns.zone(make_state(web=2)))
    return _ZONE[0]


VALID = DNSRecord.question(f"web.default.svc.{D}", "SRV").pack()


@st.composite
def mutated_queries(draw):
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[:draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.binary(max_size=700), mutated_queries()), st.sampled_from(["udp", "tcp"]))
def test_any_bytes_get_a_well_formed_answer_or_none(data, transport):
    out = coredns.answer(small_zone(), data, transport)
    if out is not None:
        reply = DNSRecord.parse(out)
        assert reply.header.qr and reply.header.id == int.from_bytes(data[:2], "big")
        assert transport == "tcp" or len(out) <= 4096


def test_the_servers_memo_returns_what_answer_returns_under_the_askers_id(z):
    server = coredns.DnsServer("t")
    server.zone = z
    for qid in (1, 2, 0xBEEF):
        q = DNSRecord.question(f"Web.default.svc.{D}")
        q.header.id = qid
        assert server._answer(q.pack(), "udp") == coredns.answer(z, q.pack(), "udp")
    assert len(server.memo) == 1
    assert server._answer(b"\x00\x01garbage", "udp") == coredns.answer(z, b"\x00\x01garbage", "udp")
