"""CoreDNS's kubernetes plugin in a dual-stack cluster, on the wire (dnslib): AAAA records from
IPv6 ClusterIPs and IPv6 EndpointSlices, NODATA for the family a Service lacks, ip6.arpa PTRs,
IPv6 endpoint and pod names (shared/reference/dual-stack.md, CoreDNS; coredns/coredns
plugin/kubernetes: findServices, findPods, endpointHostname, serviceRecordForIP, and
plugin/backend_lookup.go for A/AAAA/SRV). The state is built directly: Services with their
clusterIPs and ipFamilies, the v1 Endpoints (the primary family) and both families' slices."""

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from netlab.addons import coredns
from netlab.api.objects import SERVICE_NAME_LABEL, Address, Endpoints, EndpointSlice, Port, SliceEndpoint, Subset
from netlab.api.spec import ClusterConfig, LabSpec, ServiceManifest, ServicePort
from netlab.controllers import cluster

D = "cluster.local."
HTTP = (Port("http", 8080, "TCP"),)
SOA = [f"ns.dns.{D}", f"hostmaster.{D}", "7", "7200", "1800", "86400", "30"]


def svc(name, cluster_ip, cluster_ips, families, policy="SingleStack", port=80, target=80, selector=None):
    return ServiceManifest("default", name, cluster_ip=cluster_ip, cluster_ips=cluster_ips, ip_families=families,
                           ip_family_policy=policy, selector=selector,
                           ports=(ServicePort(port, "TCP", "http", target),))


def slice6(service, name, *endpoints):
    return EndpointSlice("default", name, {SERVICE_NAME_LABEL: service}, address_type="IPv6",
                         endpoints=endpoints, ports=HTTP)


def dual_state():
    c = ClusterConfig(name="d", roles=("control-plane", "worker", "worker"), ip_family="dual",
                      pod_subnet6="fd00:10:244::/56", service_subnet6="fd00:10:96::/112",
                      lan_cidr6="fc00:f853:ccd:e793::/64", dns_replicas=0)
    s = cluster.new_state(LabSpec(c))
    s.services += [
        svc("web", "10.96.100.1", ("10.96.100.1", "fd00:10:96::64"), ("IPv4", "IPv6"), "PreferDualStack"),
        svc("v4only", "10.96.100.2", ("10.96.100.2",), ("IPv4",)),
        svc("v6only", "fd00:10:96::c8", ("fd00:10:96::c8",), ("IPv6",)),
        svc("web-headless", "None", ("None",), ("IPv4", "IPv6"), "PreferDualStack", 80, 8080, {"app": "web"}),
        svc("h6", "None", ("None",), ("IPv6",), "SingleStack", 80, 8080, {"app": "h6"}),
        svc("ends", "None", ("None",), ("IPv6",), "RequireDualStack", 80, 8080),      # no selector: a slice by hand
    ]
    s.endpoints += [
        Endpoints("default", "web-headless", (Subset(
            addresses=(Address("10.244.1.5", "d-worker", "alpha", "u1", "alpha"),
                       Address("10.244.2.7", "d-worker2", "web-b", "u2")),
            not_ready=(Address("10.244.2.9", "d-worker2", "web-c", "u3"),), ports=HTTP),)),
        # the endpoints controller writes an IPv6-only Service's v1 Endpoints in IPv6
        Endpoints("default", "h6", (Subset(addresses=(Address("fd00:10:244:1::20", "d-worker", "h", "u4"),),
                                           ports=HTTP),)),
    ]
    s.endpoint_slices += [
        slice6("web-headless", "web-headless-v6",
               SliceEndpoint(("fd00:10:244:1::5",), ready=True, pod="alpha", hostname="alpha"),
               SliceEndpoint(("fd00:10:244:2::7",), ready=None, pod="web-b"),         # unset: ready
               SliceEndpoint(("fd00:10:244:2::9",), ready=False, pod="web-c")),
        slice6("h6", "h6-v6", SliceEndpoint(("fd00:10:244:1::20",), ready=True, pod="h")),
        slice6("ends", "ends-1", SliceEndpoint(("fd00:10:244:3::",), ready=True)),
    ]
    return s


@pytest.fixture(scope="module")
def z():
    return coredns.zone(dual_state(), 30, serial=7)


def ask(z, name, qtype="A"):
    return DNSRecord.parse(coredns.answer(z, DNSRecord.question(name, qtype).pack(), "udp"))


def data(reply, qtype, section="rr"):
    return sorted(str(r.rdata) for r in getattr(reply, section) if r.rtype == getattr(QTYPE, qtype))


def assert_nodata(r):
    """BackendError(RcodeSuccess): NOERROR, no answer, the zone's SOA in the authority section."""
    assert r.header.rcode == RCODE.NOERROR and r.rr == [] and r.header.aa
    (soa,) = r.auth
    assert soa.rtype == QTYPE.SOA and str(soa.rname) == D and str(soa.rdata).split() == SOA


# --- ClusterIP Services ------------------------------------------------------------------

def test_a_prefer_dual_stack_service_has_an_a_and_an_aaaa(z):
    aaaa = ask(z, f"web.default.svc.{D}", "AAAA")
    assert aaaa.header.rcode == RCODE.NOERROR and aaaa.header.aa
    assert [(str(r.rname), r.rtype, r.ttl, str(r.rdata)) for r in aaaa.rr] == [
        (f"web.default.svc.{D}", QTYPE.AAAA, 30, "fd00:10:96::64")]
    assert aaaa.auth == []
    assert data(ask(z, f"web.default.svc.{D}", "A"), "A") == ["10.96.100.1"]


def test_the_family_a_single_stack_service_lacks_is_nodata_with_the_soa(z):
    assert_nodata(ask(z, f"v4only.default.svc.{D}", "AAAA"))
    assert_nodata(ask(z, f"v6only.default.svc.{D}", "A"))
    assert data(ask(z, f"v4only.default.svc.{D}", "A"), "A") == ["10.96.100.2"]
    assert data(ask(z, f"v6only.default.svc.{D}", "AAAA"), "AAAA") == ["fd00:10:96::c8"]


def test_a_dual_stack_services_srv_is_one_record_weighing_half_with_both_addresses(z):
    # findServices: one entry per ClusterIP; SRV: weight floor(100/2), one record per target and port
    r = ask(z, f"_http._tcp.web.default.svc.{D}", "SRV")
    assert data(r, "SRV") == [f"0 50 80 web.default.svc.{D}"]
    assert [(str(a.rname), QTYPE.get(a.rtype), str(a.rdata)) for a in r.ar] == [
        (f"web.default.svc.{D}", "A", "10.96.100.1"), (f"web.default.svc.{D}", "AAAA", "fd00:10:96::64")]


def test_ip6_arpa_ptr_of_an_ipv6_cluster_ip(z):
    r = ask(z, "4.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.", "PTR")
    assert r.header.rcode == RCODE.NOERROR and data(r, "PTR") == [f"web.default.svc.{D}"] and r.rr[0].ttl == 30
    assert data(ask(z, "1.100.96.10.in-addr.arpa.", "PTR"), "PTR") == [f"web.default.svc.{D}"]
    single = "8.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa."
    assert data(ask(z, single, "PTR"), "PTR") == [f"v6only.default.svc.{D}"]


def test_an_unknown_ip6_arpa_name_falls_through_to_a_servfail(z):
    # `fallthrough in-addr.arpa ip6.arpa` then `forward .`, which a sealed lab cannot reach
    unknown = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa."
    assert ask(z, unknown, "PTR").header.rcode == RCODE.SERVFAIL


# --- headless Services -------------------------------------------------------------------

def test_headless_aaaa_is_every_ready_ipv6_endpoint(z):
    r = ask(z, f"web-headless.default.svc.{D}", "AAAA")
    assert r.header.rcode == RCODE.NOERROR and data(r, "AAAA") == ["fd00:10:244:1::5", "fd00:10:244:2::7"]
    assert all(rr.ttl == 30 for rr in r.rr)
    assert data(ask(z, f"web-headless.default.svc.{D}", "A"), "A") == ["10.244.1.5", "10.244.2.7"]


def test_an_ipv6_only_headless_service_answers_aaaa_only(z):
    assert data(ask(z, f"h6.default.svc.{D}", "AAAA"), "AAAA") == ["fd00:10:244:1::20"]
    assert_nodata(ask(z, f"h6.default.svc.{D}", "A"))


def test_ipv6_endpoints_are_named_by_hostname_or_dashed_address(z):
    assert data(ask(z, f"fd00-10-244-2--7.web-headless.default.svc.{D}", "AAAA"), "AAAA") == ["fd00:10:244:2::7"]
    assert data(ask(z, f"alpha.web-headless.default.svc.{D}", "AAAA"), "AAAA") == ["fd00:10:244:1::5"]
    assert data(ask(z, f"alpha.web-headless.default.svc.{D}", "A"), "A") == ["10.244.1.5"]
    assert_nodata(ask(z, f"fd00-10-244-2--7.web-headless.default.svc.{D}", "A"))
    # not ready (ready: false): no name
    assert ask(z, f"fd00-10-244-2--9.web-headless.default.svc.{D}", "AAAA").header.rcode == RCODE.NXDOMAIN


def test_a_dashed_label_ending_in_a_dash_gets_a_zero(z):
    # endpointHostname: "fd00:10:244:3::" -> "fd00-10-244-3--" + "0"
    assert data(ask(z, f"fd00-10-244-3--0.ends.default.svc.{D}", "AAAA"), "AAAA") == ["fd00:10:244:3::"]
    assert ask(z, f"fd00-10-244-3--.ends.default.svc.{D}", "AAAA").header.rcode == RCODE.NXDOMAIN


def test_ip6_arpa_ptr_of_an_endpoint(z):
    r = ask(z, "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa.", "PTR")
    assert data(r, "PTR") == [f"fd00-10-244-2--7.web-headless.default.svc.{D}"]
    r = ask(z, "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa.", "PTR")
    assert data(r, "PTR") == [f"alpha.web-headless.default.svc.{D}"]


def test_headless_srv_spans_both_families(z):
    # entries: alpha and 10-244-2-7 (IPv4), alpha and fd00-10-244-2--7 (IPv6): weight 100/4;
    # alpha's two entries are one record, with an A and an AAAA in the additional section
    r = ask(z, f"_http._tcp.web-headless.default.svc.{D}", "SRV")
    h = f"web-headless.default.svc.{D}"
    assert data(r, "SRV") == [f"0 25 8080 10-244-2-7.{h}", f"0 25 8080 alpha.{h}", f"0 25 8080 fd00-10-244-2--7.{h}"]
    assert sorted((str(a.rname), QTYPE.get(a.rtype), str(a.rdata)) for a in r.ar) == [
        (f"10-244-2-7.{h}", "A", "10.244.2.7"), (f"alpha.{h}", "A", "10.244.1.5"),
        (f"alpha.{h}", "AAAA", "fd00:10:244:1::5"), (f"fd00-10-244-2--7.{h}", "AAAA", "fd00:10:244:2::7")]


# --- pods insecure -----------------------------------------------------------------------

def test_ipv6_pod_names_answer_aaaa(z):
    r = ask(z, f"fd00-10-244-1--5.default.pod.{D}", "AAAA")
    assert [(str(x.rname), x.ttl, str(x.rdata)) for x in r.rr] == [(f"fd00-10-244-1--5.default.pod.{D}", 30,
                                                                     "fd00:10:244:1::5")]
    assert_nodata(ask(z, f"fd00-10-244-1--5.default.pod.{D}", "A"))


def test_three_dashes_are_ipv4_unless_one_is_a_double_dash(z):
    assert data(ask(z, f"10-244-1-5.default.pod.{D}", "A"), "A") == ["10.244.1.5"]
    assert_nodata(ask(z, f"10-244-1-5.default.pod.{D}", "AAAA"))
    assert data(ask(z, f"1--2-3.default.pod.{D}", "AAAA"), "AAAA") == ["1::2:3"]       # "--": IPv6
    assert ask(z, f"a-b-c-d.default.pod.{D}", "A").header.rcode == RCODE.NXDOMAIN      # 3 dashes: IPv4, unparsable


def test_a_pod_label_that_is_no_address_is_nxdomain(z):
    for label in ("fd00-10-244-1-5", "fd00-10-244-1--5--1", "web"):
        r = ask(z, f"{label}.default.pod.{D}", "AAAA")
        assert r.header.rcode == RCODE.NXDOMAIN and r.rr == [] and len(r.auth) == 1


def test_pod_names_keep_the_askers_case(z):
    r = ask(z, f"FD00-10-244-1--5.Default.pod.{D}", "AAAA")
    assert data(r, "AAAA") == ["fd00:10:244:1::5"] and str(r.rr[0].rname) == f"FD00-10-244-1--5.Default.pod.{D}"
