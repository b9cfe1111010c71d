"""Dual-stack Services as the API server defaults, validates and allocates them
(pkg/registry/core/service/storage/alloc.go initIPFamilyFields and allocClusterIPs,
pkg/apis/core/validation ValidateService and ValidateServiceUpdate), their EndpointSlices per
address type (pkg/controller/endpointslice, getAddressTypesForService / getEndpointAddresses),
the legacy Endpoints of the primary family (pkg/controller/endpoint,
podToEndpointAddressForService), and kubectl's CLUSTER-IP column (printService: clusterIPs[0]).

Expected values are upstream's: the defaulting rules and the field errors' exact text."""

import ipaddress
import random
import textwrap

import pytest
import yaml

from netlab.api import apiserver
from netlab.api import printers as kubectl
from netlab.api import spec
from netlab.controllers import cluster, ipam
from netlab.errors import SpecError

SINGLE = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: t
nodes: [{role: control-plane}, {role: worker}]
"""
DUAL = SINGLE + "networking: {ipFamily: dual}\n"

POD = """apiVersion: v1
kind: Pod
metadata: {name: p, labels: {app: a}}
spec: {containers: [{name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: [netexec]}]}
"""
V4_NET, V6_NET = ipaddress.ip_network("10.96.0.0/12"), ipaddress.ip_network("fd00:10:96::/112")


def svc(body, name="s", selector="{app: a}", ports="[{port: 80}]"):
    spec_text = textwrap.dedent(body)
    if selector:
        spec_text += f"\nselector: {selector}"
    if ports:
        spec_text += f"\nports: {ports}"
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n"
            + textwrap.indent(spec_text.strip() or "{}", "  ") + "\n")


def state_of(tmp_path, lab, *docs, seed=1):
    f = tmp_path / "lab.yaml"
    f.write_text(lab + "".join("---\n" + d for d in (POD, *docs)))
    return cluster.new_state(spec.load(f), random.Random(seed))


def error_of(tmp_path, lab, *docs):
    with pytest.raises(SpecError) as e:
        state_of(tmp_path, lab, *docs)
    return e.value


def shown(state, name="s"):
    """The Service's dual-stack fields as the API serves them."""
    s = apiserver.service_object(state, state.service("default", name))["spec"]
    return s.get("ipFamilyPolicy"), s.get("ipFamilies"), s.get("clusterIPs"), s.get("clusterIP")


def family(ip):
    return "IPv6" if ":" in ip else "IPv4"


# --- allocation: initIPFamilyFields + allocClusterIPs -------------------------------------

POLICY = {None: "", "SingleStack": "ipFamilyPolicy: SingleStack\n", "PreferDualStack": "ipFamilyPolicy: PreferDualStack\n",
          "RequireDualStack": "ipFamilyPolicy: RequireDualStack\n"}


def families_yaml(families):
    return f"ipFamilies: [{', '.join(families)}]\n" if families else ""


# (cluster, policy asked, ipFamilies asked) -> (policy, ipFamilies) the API server gives, or the
# field error (field, message) it refuses the Service with.
MULTI_FAMILIES = ("spec.ipFamilyPolicy", 'Invalid value: "SingleStack": must be \'RequireDualStack\' or '
                  "'PreferDualStack' when multiple IP families are specified")
NOT_DUAL = ("spec.ipFamilyPolicy", 'Invalid value: "RequireDualStack": this cluster is not configured for dual-stack '
            "services")
NO_V6 = lambda i: (f"spec.ipFamilies[{i}]", 'Invalid value: "IPv6": not configured on this cluster')  # noqa: E731
ALLOCATION = [
    # an IPv4 cluster
    ("single", None, (), ("SingleStack", ["IPv4"])),
    ("single", "SingleStack", (), ("SingleStack", ["IPv4"])),
    ("single", "PreferDualStack", (), ("PreferDualStack", ["IPv4"])),
    ("single", "RequireDualStack", (), NOT_DUAL),
    ("single", None, ("IPv4",), ("SingleStack", ["IPv4"])),
    ("single", "PreferDualStack", ("IPv4",), ("PreferDualStack", ["IPv4"])),
    ("single", None, ("IPv6",), NO_V6(0)),
    ("single", "SingleStack", ("IPv6",), NO_V6(0)),
    ("single", "PreferDualStack", ("IPv6",), NO_V6(0)),
    ("single", None, ("IPv4", "IPv6"), MULTI_FAMILIES),
    ("single", "SingleStack", ("IPv6", "IPv4"), MULTI_FAMILIES),
    ("single", "PreferDualStack", ("IPv4", "IPv6"), NO_V6(1)),
    ("single", "PreferDualStack", ("IPv6", "IPv4"), NO_V6(0)),
    ("single", "RequireDualStack", ("IPv4", "IPv6"), NOT_DUAL),
    # a dual-stack cluster, IPv4 first
    ("dual", None, (), ("SingleStack", ["IPv4"])),
    ("dual", "SingleStack", (), ("SingleStack", ["IPv4"])),
    ("dual", "PreferDualStack", (), ("PreferDualStack", ["IPv4", "IPv6"])),
    ("dual", "RequireDualStack", (), ("RequireDualStack", ["IPv4", "IPv6"])),
    ("dual", None, ("IPv4",), ("SingleStack", ["IPv4"])),
    ("dual", None, ("IPv6",), ("SingleStack", ["IPv6"])),
    ("dual", "SingleStack", ("IPv6",), ("SingleStack", ["IPv6"])),
    ("dual", "PreferDualStack", ("IPv6",), ("PreferDualStack", ["IPv6", "IPv4"])),
    ("dual", "RequireDualStack", ("IPv6",), ("RequireDualStack", ["IPv6", "IPv4"])),
    ("dual", "PreferDualStack", ("IPv4",), ("PreferDualStack", ["IPv4", "IPv6"])),
    ("dual", None, ("IPv4", "IPv6"), MULTI_FAMILIES),
    ("dual", "SingleStack", ("IPv6", "IPv4"), MULTI_FAMILIES),
    ("dual", "PreferDualStack", ("IPv4", "IPv6"), ("PreferDualStack", ["IPv4", "IPv6"])),
    ("dual", "PreferDualStack", ("IPv6", "IPv4"), ("PreferDualStack", ["IPv6", "IPv4"])),
    ("dual", "RequireDualStack", ("IPv4", "IPv6"), ("RequireDualStack", ["IPv4", "IPv6"])),
    ("dual", "RequireDualStack", ("IPv6", "IPv4"), ("RequireDualStack", ["IPv6", "IPv4"])),
]


@pytest.mark.parametrize("headless", [False, True], ids=["clusterip", "headless-with-selector"])
@pytest.mark.parametrize("lab, policy, families, expected", ALLOCATION)
def test_allocation_of_every_policy_and_family_order(tmp_path, lab, policy, families, expected, headless):
    body = POLICY[policy] + families_yaml(families) + ("clusterIP: None\n" if headless else "")
    lab_text = DUAL if lab == "dual" else SINGLE
    if isinstance(expected[1], str):                   # a field error
        e = error_of(tmp_path, lab_text, svc(body))
        assert (e.obj, e.field, e.message) == ("Service default/s", *expected)
        return
    state = state_of(tmp_path, lab_text, svc(body))
    got_policy, got_families, ips, primary = shown(state)
    assert (got_policy, got_families) == expected
    if headless:
        assert (ips, primary) == (["None"], "None")
        return
    assert [family(ip) for ip in ips] == expected[1] and primary == ips[0]
    for ip in ips:                                     # each from its family's service range
        assert ipaddress.ip_address(ip) in (V6_NET if family(ip) == "IPv6" else V4_NET)
    record = state.service("default", "s")
    assert record.cluster_ip == primary and [record.cluster_ip_of(f) for f in expected[1]] == ips


def test_an_ipv4_clusters_services_keep_their_record_and_json(tmp_path):
    """Where the manifest asks for no family, an IPv4 cluster's Service is stored as before and
    served as before: ipFamilies [IPv4], SingleStack, clusterIPs [clusterIP]."""
    state = state_of(tmp_path, SINGLE, svc(""), svc("clusterIP: None", name="hl"),
                     svc("ipFamilies: [IPv4]\nipFamilyPolicy: SingleStack", name="asked"))
    for name in ("s", "hl", "asked"):
        s = state.service("default", name)
        assert (s.ip_family_policy, s.ip_families, s.cluster_ips) == (None, (), ())
        assert shown(state, name)[:3] == ("SingleStack", ["IPv4"], [s.cluster_ip])
    for key in ("default/kubernetes", "kube-system/kube-dns"):
        s = state.service(*key.split("/"))
        assert (s.ip_family_policy, s.ip_families, s.cluster_ips) == (None, (), ())


def test_headless_without_selector_defaults_to_require_dual_stack(tmp_path):
    state = state_of(tmp_path, DUAL, svc("clusterIP: None", selector=None, ports=None),
                     svc("clusterIP: None\nipFamilies: [IPv6]", name="six", selector=None, ports=None),
                     svc("clusterIP: None\nipFamilyPolicy: SingleStack", name="one", selector=None, ports=None))
    assert shown(state) == ("RequireDualStack", ["IPv4", "IPv6"], ["None"], "None")
    assert shown(state, "six") == ("RequireDualStack", ["IPv6", "IPv4"], ["None"], "None")
    assert shown(state, "one") == ("SingleStack", ["IPv4"], ["None"], "None")


def test_headless_without_selector_defaults_to_require_dual_stack_on_an_ipv4_cluster_too(tmp_path):
    """The documented default (concepts/services-networking/dual-stack: "For Headless Services
    without selectors ... defaults to RequireDualStack"), whatever the cluster's families."""
    state = state_of(tmp_path, SINGLE, svc("clusterIP: None", selector=None, ports=None))
    assert shown(state) == ("RequireDualStack", ["IPv4", "IPv6"], ["None"], "None")


def test_headless_without_selector_may_name_both_families_on_an_ipv4_cluster(tmp_path):
    """initIPFamilyFields' special case comes before its family checks: RequireDualStack and
    ipFamilies [IPv6] are allowed there, even on a single-stack cluster."""
    state = state_of(tmp_path, SINGLE, svc("clusterIP: None\nipFamilies: [IPv6]", selector=None, ports=None))
    assert shown(state)[:2] == ("RequireDualStack", ["IPv6", "IPv4"])
    m = spec.ServiceManifest("default", "x", cluster_ip="None")
    assert cluster.init_ip_families(state.cluster, m) == ("RequireDualStack", ("IPv4", "IPv6"), ("None",))


def test_external_name_gets_no_families(tmp_path):
    state = state_of(tmp_path, DUAL, "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\n"
                     "spec: {type: ExternalName, externalName: example.org}\n")
    s = state.service("default", "ext")
    assert (s.cluster_ip, s.ip_family_policy, s.ip_families, s.cluster_ips) == (None, None, (), ())
    out = apiserver.service_object(state, s)["spec"]
    assert not {"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"} & set(out)


def test_asked_cluster_ips_are_kept_and_their_families_inferred(tmp_path):
    state = state_of(tmp_path, DUAL, svc("ipFamilyPolicy: RequireDualStack\nclusterIPs: [fd00:10:96::50, 10.96.0.50]"))
    assert shown(state) == ("RequireDualStack", ["IPv6", "IPv4"], ["fd00:10:96::50", "10.96.0.50"], "fd00:10:96::50")


def test_kube_dns_and_kubernetes_stay_single_stack_ipv4_on_a_dual_cluster(tmp_path):
    state = state_of(tmp_path, DUAL)
    dns = apiserver.service_object(state, state.service("kube-system", "kube-dns"))["spec"]
    api = apiserver.service_object(state, state.service("default", "kubernetes"))["spec"]
    assert (dns["clusterIP"], dns["clusterIPs"], dns["ipFamilies"], dns["ipFamilyPolicy"]) == (
        "10.96.0.10", ["10.96.0.10"], ["IPv4"], "SingleStack")
    assert (api["clusterIP"], api["clusterIPs"], api["ipFamilies"], api["ipFamilyPolicy"]) == (
        "10.96.0.1", ["10.96.0.1"], ["IPv4"], "SingleStack")


def test_the_ipv6_allocator_hands_out_the_last_address_and_never_the_network():
    """ipallocator.New: an IPv6 range keeps only its network address; IPv4 its broadcast too."""
    net = "fd00:10:96::/126"                          # ::1, ::2, ::3 usable
    got = {ipam.allocate_service_ip(net, set(), random.Random(i)) for i in range(40)}
    assert got == {"fd00:10:96::1", "fd00:10:96::2", "fd00:10:96::3"}
    got4 = {ipam.allocate_service_ip("10.96.0.0/30", set(), random.Random(i)) for i in range(40)}
    assert got4 == {"10.96.0.1", "10.96.0.2"}


# --- validation messages -------------------------------------------------------------------

@pytest.mark.parametrize("lab, body, field, message", [
    (DUAL, "clusterIP: 10.96.0.50\nclusterIPs: [10.96.0.51]", "spec.clusterIPs",
     'Invalid value: []string{"10.96.0.51"}: first value must match `clusterIP`'),
    (DUAL, "clusterIPs: [None, 10.96.0.51]", "spec.clusterIPs",
     'Invalid value: []string{"None", "10.96.0.51"}: \'None\' must be the first and only value'),
    (DUAL, "ipFamilyPolicy: PreferDualStack\nclusterIPs: [10.96.0.50, fd00:10:96::50, 10.96.0.51]", "spec.clusterIPs",
     'Invalid value: []string{"10.96.0.50", "fd00:10:96::50", "10.96.0.51"}: may only hold up to 2 values'),
    (DUAL, "ipFamilyPolicy: PreferDualStack\nclusterIPs: [10.96.0.50, 10.96.0.51]", "spec.clusterIPs",
     'Invalid value: []string{"10.96.0.50", "10.96.0.51"}: may specify no more than one IP for each IP family'),
    (DUAL, "ipFamilyPolicy: PreferDualStack\nclusterIPs: [10.96.0.50, nonsense]", "spec.clusterIPs[1]",
     'Invalid value: "nonsense": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)'),
    (DUAL, "ipFamilies: [IPv4]\nclusterIP: fd00:10:96::50", "spec.clusterIPs[0]",
     'Invalid value: "fd00:10:96::50": expected an IPv4 value as indicated by `ipFamilies[0]`'),
    (DUAL, "ipFamilyPolicy: Sometimes", "spec.ipFamilyPolicy",
     'Unsupported value: "Sometimes": supported values: "PreferDualStack", "RequireDualStack", "SingleStack"'),
    (DUAL, "ipFamilies: [IPv5]", "spec.ipFamilies[0]", 'Unsupported value: "IPv5": supported values: "IPv4", "IPv6"'),
    (DUAL, "ipFamilyPolicy: PreferDualStack\nipFamilies: [IPv4, IPv4]", "spec.ipFamilies[1]",
     'Duplicate value: "IPv4"'),
    (DUAL, "ipFamilyPolicy: SingleStack\nclusterIPs: [10.96.0.50, fd00:10:96::50]", "spec.ipFamilyPolicy",
     'Invalid value: "SingleStack": must be \'RequireDualStack\' or \'PreferDualStack\' when multiple cluster IPs '
     'are specified'),
    (SINGLE, "ipFamilyPolicy: RequireDualStack", "spec.ipFamilyPolicy",
     'Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services'),
    (SINGLE, "ipFamilies: [IPv6]", "spec.ipFamilies[0]", 'Invalid value: "IPv6": not configured on this cluster'),
    (SINGLE, "clusterIP: fd00:10:96::50", "spec.clusterIPs[0]",
     'Invalid value: []string{"fd00:10:96::50"}: IPv6 is not configured on this cluster'),
    (DUAL, "clusterIP: fd00:10:97::50", "spec.clusterIP",
     "fd00:10:97::50 is not in the cluster's IPv6 serviceSubnet fd00:10:96::/112"),
])
def test_validation_messages_name_their_field(tmp_path, lab, body, field, message):
    e = error_of(tmp_path, lab, svc(body))
    assert (e.obj, e.field, e.message) == ("Service default/s", field, message)


@pytest.mark.parametrize("field", ["ipFamilyPolicy: SingleStack", "ipFamilies: [IPv4]", "clusterIPs: [10.96.0.50]"])
def test_external_name_may_not_set_the_dual_stack_fields(tmp_path, field):
    e = error_of(tmp_path, DUAL, "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                 f"spec: {{type: ExternalName, externalName: example.org, {field}}}\n")
    assert (e.field, e.message) == (f"spec.{field.split(':')[0]}", "Forbidden: may not be set for ExternalName services")


# --- updates: ValidateServiceUpdate and initIPFamilyFields with the old object ---------------

def apply(state, body, name="s"):
    """`kubectl apply` of the Service's new manifest (an update of the stored one)."""
    doc = yaml.safe_load(svc(body, name=name))
    lab = spec.build([("request", 0, doc)], cluster=state.cluster, nodes=[n.name for n in state.nodes])
    cluster.apply(state, lab, random.Random(7))
    return state.service("default", name)


def test_single_stack_to_prefer_dual_stack_adds_the_second_family_and_back(tmp_path):
    state = state_of(tmp_path, DUAL, svc(""))
    first = state.service("default", "s").cluster_ip
    s = apply(state, "ipFamilyPolicy: PreferDualStack")
    assert (s.ip_family_policy, s.ip_families, s.cluster_ips[0], s.cluster_ip) == (
        "PreferDualStack", ("IPv4", "IPv6"), first, first)
    assert ipaddress.ip_address(s.cluster_ips[1]) in V6_NET
    again = apply(state, "ipFamilyPolicy: PreferDualStack")           # an unchanged apply changes nothing
    assert again == s
    down = apply(state, "ipFamilyPolicy: SingleStack")                  # releases the secondary
    assert (down.ip_family_policy, down.ip_families, down.cluster_ips) == ("SingleStack", ("IPv4",), (first,))
    assert {x.address_type for x in state.slices_of(down)} == {"IPv4"}


def test_update_may_not_change_a_cluster_ip_or_the_primary_family(tmp_path):
    state = state_of(tmp_path, DUAL, svc("clusterIP: 10.96.0.50"))
    with pytest.raises(SpecError) as e:
        apply(state, "clusterIP: 10.96.0.51")
    assert (e.value.field, e.value.message) == ("spec.clusterIPs[0]",
                                                'Invalid value: []string{"10.96.0.51"}: may not change once set')
    with pytest.raises(SpecError) as e:
        apply(state, "clusterIP: 10.96.0.50\nipFamilies: [IPv6]")
    assert (e.value.field, e.value.message) == (
        "spec.clusterIPs[0]", 'Invalid value: "10.96.0.50": expected an IPv6 value as indicated by `ipFamilies[0]`')
    assert state.service("default", "s").cluster_ip == "10.96.0.50"                 # kept as it was


def test_update_releasing_the_secondary_needs_single_stack(tmp_path):
    state = state_of(tmp_path, DUAL, svc("ipFamilyPolicy: PreferDualStack\nclusterIPs: [10.96.0.50, fd00:10:96::50]"))
    with pytest.raises(SpecError) as e:
        apply(state, "ipFamilyPolicy: PreferDualStack\nclusterIPs: [10.96.0.50]")
    assert (e.value.field, e.value.message) == (
        "spec.ipFamilyPolicy", 'Invalid value: "PreferDualStack": must be \'SingleStack\' to release the secondary '
                               'cluster IP')
    with pytest.raises(SpecError) as e:
        apply(state, "ipFamilyPolicy: RequireDualStack\nclusterIPs: [10.96.0.50, fd00:10:96::51]")
    assert (e.value.field, e.value.message) == (
        "spec.clusterIPs[1]", 'Invalid value: []string{"10.96.0.50", "fd00:10:96::51"}: may not change once set')


# --- EndpointSlices per family, the legacy Endpoints of the primary one ---------------------

def test_one_set_of_slices_per_family_ipv6_slices_hold_the_pods_ip6(tmp_path):
    state = state_of(tmp_path, DUAL, svc("ipFamilyPolicy: PreferDualStack"),
                     svc("ipFamilies: [IPv6]", name="six"))
    pod = state.pod("default", "p")
    assert pod.ip6 and ipaddress.ip_address(pod.ip6) in ipaddress.ip_network("fd00:10:244::/56")
    both = state.slices_of(state.service("default", "s"))
    assert sorted((s.address_type, s.endpoints[0].addresses) for s in both) == [
        ("IPv4", (pod.ip,)), ("IPv6", (pod.ip6,))]
    for s in both:
        assert s.name.startswith("s-") and s.generate_name == "s-" and s.labels == {
            "kubernetes.io/service-name": "s", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    six = state.slices_of(state.service("default", "six"))
    assert [(s.address_type, s.endpoints[0].addresses) for s in six] == [("IPv6", (pod.ip6,))]
    out = apiserver.endpointslice_object(state, six[0])
    assert (out["addressType"], out["endpoints"][0]["addresses"]) == ("IPv6", [pod.ip6])
    ep = {e.name: e for e in state.endpoints}
    assert [a.ip for a in ep["s"].subsets[0].addresses + ep["s"].subsets[0].not_ready] == [pod.ip]
    assert [a.ip for a in ep["six"].subsets[0].addresses + ep["six"].subsets[0].not_ready] == [pod.ip6]


def test_a_family_without_endpoints_gets_its_placeholder_slice(tmp_path):
    state = state_of(tmp_path, DUAL, svc("ipFamilyPolicy: RequireDualStack", selector="{app: none}"))
    slices = state.slices_of(state.service("default", "s"))
    assert sorted((s.address_type, s.endpoints, s.ports) for s in slices) == [("IPv4", (), ()), ("IPv6", (), ())]


def test_an_ipv4_cluster_has_ipv4_slices_only(tmp_path):
    state = state_of(tmp_path, SINGLE, svc(""))
    assert {s.address_type for s in state.endpoint_slices} == {"IPv4"}


def test_kubectl_cluster_ip_column_is_the_primary(tmp_path):
    state = state_of(tmp_path, DUAL, svc("ipFamilyPolicy: PreferDualStack\nipFamilies: [IPv6, IPv4]"))
    row, _ = kubectl.print_service(apiserver.service_object(state, state.service("default", "s")))
    assert row[2] == state.service("default", "s").cluster_ips[0] and ":" in row[2]
