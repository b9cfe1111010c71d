"""NetworkPolicy (networking.k8s.io/v1) and labelled Namespaces as the lab file, `netlab apply`
and the API read them: defaulted and validated as kube-apiserver does.

The expected defaults and messages are kube-apiserver's own: pkg/apis/networking/v1/defaults.go
(SetDefaults_NetworkPolicy, SetDefaults_NetworkPolicyPort), pkg/apis/networking/validation
(ValidateNetworkPolicyPort, ValidateNetworkPolicyPeer, ValidateIPBlock, ValidateNetworkPolicySpec),
apimachinery's meta/v1/validation (ValidateLabelSelectorRequirement) and field.Error's text
("<type>: <value>: <detail>"); the Table columns are printers.go's printNetworkPolicy.
"""

import json
import random
import textwrap
from types import SimpleNamespace

import pytest
import yaml

from netlab.api import apiserver, etcd, printers, spec
from netlab.api.spec import IPBlock, LabelSelector, PolicyPeer, PolicyPort, PolicyRule
from netlab.control_plane import registry, writes
from netlab.controllers import cluster
from netlab.errors import NetlabError, SpecError

HEAD = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
"""


def policy(body):
    """The one NetworkPolicy of a manifest whose spec is `body` (YAML)."""
    doc = yaml.safe_load(HEAD + "spec:\n" + textwrap.indent(textwrap.dedent(body), "  "))
    return spec.build([("np.yaml", 0, doc)]).network_policies[0]


def refused(body):
    doc = yaml.safe_load(HEAD + "spec:\n" + textwrap.indent(textwrap.dedent(body), "  "))
    with pytest.raises(SpecError) as e:
        spec.build([("np.yaml", 0, doc)])
    return e.value


# --- defaulting: SetDefaults_NetworkPolicy and SetDefaults_NetworkPolicyPort ----------------------

def test_policy_types_default_to_ingress_when_no_egress_rule_is_given():
    assert policy("podSelector: {}").policy_types == ("Ingress",)
    assert policy("ingress: [{}]").policy_types == ("Ingress",)


def test_policy_types_default_to_ingress_and_egress_when_egress_rules_are_given():
    assert policy("egress: [{}]").policy_types == ("Ingress", "Egress")


def test_an_empty_egress_list_adds_no_egress_type_as_the_defaulting_reads_its_length():
    # `len(obj.Spec.Egress) != 0`: egress: [] is no egress rule, so the policy stays Ingress only.
    assert policy("egress: []").policy_types == ("Ingress",)


def test_given_policy_types_are_kept_as_they_are():
    p = policy("policyTypes: [Egress]\ningress: [{}]")
    assert p.policy_types == ("Egress",)
    assert p.ingress == (PolicyRule(),)


def test_a_missing_spec_or_pod_selector_selects_every_pod_and_denies_all_ingress():
    doc = yaml.safe_load(HEAD)
    p = spec.build([("np.yaml", 0, doc)]).network_policies[0]
    assert (p.namespace, p.name, p.pod_selector, p.policy_types, p.ingress, p.egress) == \
        ("x", "p", LabelSelector(), ("Ingress",), (), ())
    assert p.pod_selector.matches({"any": "pod"})


def test_a_port_without_protocol_is_tcp_and_a_rule_without_ports_or_peers_is_everything():
    p = policy("""
        ingress:
          - ports: [{port: 80}, {protocol: UDP, port: 53}, {port: serve-81-tcp}, {port: 8000, endPort: 8080}, {}]
          - {}
        """)
    assert p.ingress == (PolicyRule((), (PolicyPort("TCP", 80), PolicyPort("UDP", 53),
                                         PolicyPort("TCP", "serve-81-tcp"), PolicyPort("TCP", 8000, 8080),
                                         PolicyPort("TCP"))), PolicyRule())


def test_sctp_is_a_protocol_the_api_takes():
    assert policy("ingress: [{ports: [{protocol: SCTP, port: 80}]}]").ingress[0].ports == (PolicyPort("SCTP", 80),)


# --- peers and selectors ----------------------------------------------------------------------------

def test_peers_by_pod_selector_namespace_selector_both_and_ip_block():
    p = policy("""
        podSelector: {matchLabels: {pod: a}}
        ingress:
          - from:
              - podSelector: {matchLabels: {pod: b}}
              - namespaceSelector: {matchLabels: {ns: y}}
              - podSelector: {}
                namespaceSelector: {}
              - ipBlock: {cidr: 10.244.0.0/16, except: [10.244.1.0/24]}
        """)
    assert p.pod_selector == LabelSelector({"pod": "a"})
    assert p.ingress[0].peers == (
        PolicyPeer(pod_selector=LabelSelector({"pod": "b"})),
        PolicyPeer(namespace_selector=LabelSelector({"ns": "y"})),
        PolicyPeer(pod_selector=LabelSelector(), namespace_selector=LabelSelector()),
        PolicyPeer(ip_block=IPBlock("10.244.0.0/16", ("10.244.1.0/24",))))


def test_match_expressions_with_every_operator_select_as_kubernetes_selects():
    p = policy("""
        podSelector:
          matchExpressions:
            - {key: pod, operator: In, values: [a, b]}
            - {key: tier, operator: NotIn, values: [db]}
            - {key: app, operator: Exists}
            - {key: canary, operator: DoesNotExist}
        """)
    s = p.pod_selector
    assert s.match_expressions == (("pod", "In", ("a", "b")), ("tier", "NotIn", ("db",)), ("app", "Exists", ()),
                                   ("canary", "DoesNotExist", ()))
    assert s.matches({"pod": "a", "app": "web"})
    assert s.matches({"pod": "b", "app": "web", "tier": "front"})
    assert not s.matches({"pod": "c", "app": "web"})                     # In
    assert not s.matches({"pod": "a", "app": "web", "tier": "db"})       # NotIn
    assert not s.matches({"pod": "a"})                                   # Exists
    assert not s.matches({"pod": "a", "app": "web", "canary": "yes"})    # DoesNotExist


def test_an_ip_block_with_host_bits_or_leading_zeros_is_the_network_it_names():
    # The API's legacy (non-strict) CIDR parsing takes both; ipset and the kernel read the network.
    p = policy("egress: [{to: [{ipBlock: {cidr: 10.0.0.7/24, except: [010.000.000.128/25]}}]}]")
    assert p.egress[0].peers[0].ip_block == IPBlock("10.0.0.0/24", ("10.0.0.128/25",))


# --- every invalid policy: the API's field and message ---------------------------------------------

INVALID = {
    "endPort without port": (
        "ingress: [{ports: [{endPort: 90}]}]",
        "spec.ingress[0].ports[0].endPort", "Invalid value: 90: may not be specified when `port` is not specified"),
    "endPort below port": (
        "ingress: [{ports: [{port: 80, endPort: 79}]}]",
        "spec.ingress[0].ports[0].endPort", "Invalid value: 79: must be greater than or equal to `port`"),
    "a named port with endPort": (
        "egress: [{ports: [{port: http, endPort: 90}]}]",
        "spec.egress[0].ports[0].endPort", "Invalid value: 90: may not be specified when `port` is non-numeric"),
    "ipBlock with a podSelector": (
        "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]",
        "spec.ingress[0].from[0]", "Forbidden: may not specify both ipBlock and another peer"),
    "ipBlock with a namespaceSelector": (
        "egress: [{to: [{podSelector: {}}, {ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}]}]",
        "spec.egress[0].to[1]", "Forbidden: may not specify both ipBlock and another peer"),
    "an empty peer": (
        "egress: [{to: [{}]}]",
        "spec.egress[0].to[0]", "Required value: must specify a peer"),
    "a bad CIDR": (
        "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]",
        "spec.ingress[0].from[0].ipBlock.cidr",
        'Invalid value: "10.0.0.0/33": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)'),
    "a CIDR without a prefix length": (
        "ingress: [{from: [{ipBlock: {cidr: 10.1.2.3}}]}]",
        "spec.ingress[0].from[0].ipBlock.cidr",
        'Invalid value: "10.1.2.3": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)'),
    "a bad except": (
        "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/x]}}]}]",
        "spec.ingress[0].from[0].ipBlock.except[0]",
        'Invalid value: "10.1.0.0/x": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)'),
    "an except outside the cidr": (
        "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]}]",
        "spec.ingress[0].from[0].ipBlock.except[0]",
        'Invalid value: "192.168.0.0/16": must be a strict subset of `cidr`'),
    "an except equal to the cidr": (
        "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]}]",
        "spec.ingress[0].from[0].ipBlock.except[0]", 'Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`'),
    "an ipBlock without cidr": (
        "ingress: [{from: [{ipBlock: {except: [10.0.0.0/9]}}]}]",
        "spec.ingress[0].from[0].ipBlock.cidr", "Required value"),
    "an unknown protocol": (
        "ingress: [{ports: [{protocol: ICMP, port: 80}]}]",
        "spec.ingress[0].ports[0].protocol", 'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'),
    "a lowercase protocol": (
        "egress: [{ports: [{protocol: tcp}]}]",
        "spec.egress[0].ports[0].protocol", 'Unsupported value: "tcp": supported values: "TCP", "UDP", "SCTP"'),
    "port 0": (
        "ingress: [{ports: [{port: 0}]}]",
        "spec.ingress[0].ports[0].port", "Invalid value: 0: must be between 1 and 65535, inclusive"),
    "an endPort above 65535": (
        "ingress: [{ports: [{port: 80, endPort: 65536}]}]",
        "spec.ingress[0].ports[0].endPort", "Invalid value: 65536: must be between 1 and 65535, inclusive"),
    "a port name with capitals": (
        "ingress: [{ports: [{port: HTTP}]}]",
        "spec.ingress[0].ports[0].port",
        'Invalid value: "HTTP": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)'),
    "a port number as a string": (
        'ingress: [{ports: [{port: "80"}]}]',
        "spec.ingress[0].ports[0].port", 'Invalid value: "80": must contain at least one letter (a-z)'),
    "a port name over 15 characters": (
        "ingress: [{ports: [{port: serve-80-tcp-abcd}]}]",
        "spec.ingress[0].ports[0].port", 'Invalid value: "serve-80-tcp-abcd": must be no more than 15 characters'),
    "In without values": (
        "podSelector: {matchExpressions: [{key: pod, operator: In}]}",
        "spec.podSelector.matchExpressions[0].values",
        "Required value: must be specified when `operator` is 'In' or 'NotIn'"),
    "Exists with values": (
        "ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: Exists, values: [y]}]}}]}]",
        "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
        "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
    "an unknown operator": (
        "podSelector: {matchExpressions: [{key: pod, operator: Equals, values: [a]}]}",
        "spec.podSelector.matchExpressions[0].operator", 'Invalid value: "Equals": not a valid selector operator'),
    "a bad label value in an expression": (
        "podSelector: {matchExpressions: [{key: pod, operator: In, values: [a b]}]}",
        "spec.podSelector.matchExpressions[0].values[0]",
        "Invalid value: \"a b\": a valid label must be an empty string or consist of alphanumeric characters, '-', "
        "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
        "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
    "a bad label key": (
        "podSelector: {matchLabels: {-pod: a}}",
        "spec.podSelector.matchLabels",
        "Invalid value: \"-pod\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
        "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
        "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
    "an unknown policy type": (
        "policyTypes: [Ingress, Both]",
        "spec.policyTypes[1]", 'Unsupported value: "Both": supported values: "Ingress", "Egress"'),
    "three policy types": (
        "policyTypes: [Ingress, Egress, Ingress]",
        "spec.policyTypes",
        'Invalid value: []networking.PolicyType{"Ingress", "Egress", "Ingress"}: may not specify more than two '
        'policyTypes'),
}


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_an_invalid_policy_is_refused_with_the_apis_field_and_message(case):
    body, field, message = INVALID[case]
    e = refused(body)
    assert (e.file, e.obj, e.field, e.message) == ("np.yaml", "NetworkPolicy x/p", field, message)


def test_the_api_checks_ports_before_peers_and_protocol_before_port():
    # ValidateNetworkPolicyPort: the protocol first; a rule's ports before its peers.
    e = refused("ingress: [{from: [{}], ports: [{protocol: ICMP, port: 0}]}]")
    assert e.field == "spec.ingress[0].ports[0].protocol"


def test_a_lab_file_error_names_the_file_the_policy_and_the_field(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: t\n---\n" + HEAD
                 + "spec: {ingress: [{ports: [{port: 80, endPort: 79}]}]}\n")
    with pytest.raises(SpecError) as e:
        spec.load(f)
    assert str(e.value) == (f"{f}: NetworkPolicy x/p: spec.ingress[0].ports[0].endPort: Invalid value: 79: "
                            "must be greater than or equal to `port`")


def test_a_duplicate_policy_is_refused_like_any_duplicate_object():
    doc = yaml.safe_load(HEAD)
    with pytest.raises(SpecError) as e:
        spec.build([("a.yaml", 0, doc), ("b.yaml", 1, doc)])
    assert (e.value.obj, e.value.field, e.value.message) == ("NetworkPolicy x/p", "metadata.name",
                                                             "duplicate name: already defined in a.yaml")


def test_a_policy_of_another_api_version_is_refused():
    doc = yaml.safe_load(HEAD.replace("networking.k8s.io/v1", "extensions/v1beta1"))
    with pytest.raises(SpecError) as e:
        spec.build([("np.yaml", 0, doc)])
    assert (e.value.field, e.value.message) == ("apiVersion", "'extensions/v1beta1' must be networking.k8s.io/v1")


# --- the API's 422 ------------------------------------------------------------------------------------

def _api_error(body):
    target = SimpleNamespace(resource=registry.find("networking.k8s.io", "v1", "networkpolicies"))
    return writes.invalid(target, "NetworkPolicy", "p", refused(body))


def test_the_api_answers_an_invalid_policy_with_422_and_the_cause_of_its_type():
    e = _api_error("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]")
    assert e.code == 422 and e.reason == "Invalid"
    assert e.message == ('NetworkPolicy.networking.k8s.io "p" is invalid: spec.ingress[0].from[0]: Forbidden: may not '
                         'specify both ipBlock and another peer')
    assert e.details == {"name": "p", "group": "networking.k8s.io", "kind": "NetworkPolicy", "causes": [
        {"reason": "FieldValueForbidden", "message": "Forbidden: may not specify both ipBlock and another peer",
         "field": "spec.ingress[0].from[0]"}]}


@pytest.mark.parametrize("body, reason", [
    ("ingress: [{ports: [{protocol: ICMP}]}]", "FieldValueNotSupported"),
    ("ingress: [{ports: [{port: 80, endPort: 79}]}]", "FieldValueInvalid"),
    ("ingress: [{from: [{}]}]", "FieldValueRequired"),
])
def test_each_field_error_type_is_its_cause_reason(body, reason):
    assert _api_error(body).details["causes"][0]["reason"] == reason


# --- the API's object and its Table -----------------------------------------------------------------

def state_with(*docs):
    lab_spec = spec.build([("f.yaml", i, yaml.safe_load(d)) for i, d in enumerate(docs)],
                          cluster=spec.ClusterConfig(name="t", roles=("control-plane", "worker")), nodes=None)
    return cluster.new_state(lab_spec, random.Random(1))


def test_the_served_policy_shows_the_api_servers_defaults():
    s = state_with(HEAD + "spec: {podSelector: {matchLabels: {pod: a}}, egress: [{ports: [{port: 53}]}], "
                          "ingress: [{}, {from: [{ipBlock: {cidr: 10.0.0.0/8}}]}]}")
    obj = apiserver.networkpolicy_object(s, s.network_policies[0])
    assert obj["spec"] == {"podSelector": {"matchLabels": {"pod": "a"}},
                           "ingress": [{}, {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
                           "egress": [{"ports": [{"protocol": "TCP", "port": 53}]}],
                           "policyTypes": ["Ingress", "Egress"]}
    assert (obj["apiVersion"], obj["kind"], obj["metadata"]["namespace"]) == \
        ("networking.k8s.io/v1", "NetworkPolicy", "x")


@pytest.mark.parametrize("selector, shown", [
    ("{}", "<none>"),
    ("{matchLabels: {pod: a, app: web}}", "app=web,pod=a"),
    ("{matchExpressions: [{key: pod, operator: NotIn, values: [b, a]}, {key: app, operator: Exists}]}",
     "app,pod notin (a,b)"),
])
def test_the_table_prints_name_pod_selector_and_age_as_kube_apiserver(selector, shown):
    s = state_with(HEAD + f"spec: {{podSelector: {selector}}}")
    table = printers.table("networkpolicies", [apiserver.networkpolicy_object(s, s.network_policies[0])])
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Pod-Selector", "Age"]
    assert table["rows"][0]["cells"][:2] == ["p", shown]


def test_the_state_keeps_a_policy_across_a_save_and_a_load():
    s = state_with(HEAD + """
spec:
  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}
  ingress: [{from: [{podSelector: {}, namespaceSelector: {matchLabels: {ns: y}}}, {ipBlock: {cidr: 10.0.0.0/8,
           except: [10.1.0.0/16]}}], ports: [{port: serve-80-tcp, protocol: UDP}, {port: 80, endPort: 81}]}]
  egress: [{}]
""")
    assert etcd.from_json(json.loads(json.dumps(etcd.to_json(s)))).network_policies == s.network_policies
    assert any(k == "/registry/networkpolicies/x/p" for k, _ in etcd._records(s))


# --- apply, delete, namespaces and pod labels ---------------------------------------------------------

def test_apply_creates_then_replaces_a_policy_keeping_its_creation_and_delete_removes_it():
    s = state_with()
    first = spec.build([("f.yaml", 0, yaml.safe_load(HEAD))])
    cluster.apply(s, first, now="2025-01-01T00:00:00Z")
    changed = spec.build([("f.yaml", 0, yaml.safe_load(HEAD + "spec: {ingress: [{}]}"))])
    cluster.apply(s, changed, now="2025-01-02T00:00:00Z")
    assert [(p.key, p.ingress, p.created) for p in s.network_policies] == [("x/p", (PolicyRule(),),
                                                                            "2025-01-01T00:00:00Z")]
    cluster.delete(s, "networkpolicy", "x", "p")
    assert s.network_policies == []
    with pytest.raises(NetlabError, match='networkpolicies.networking.k8s.io "p" not found in namespace x'):
        cluster.delete(s, "networkpolicy", "x", "p")


def test_a_namespace_document_gives_the_namespace_its_labels_but_never_its_metadata_name():
    s = state_with("apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {team: b, "
                   "kubernetes.io/metadata.name: other}}")
    assert s.namespaces["y"]["labels"] == {"team": "b"}
    assert apiserver.namespace_labels("y", s.namespaces["y"]["labels"]) == {"team": "b",
                                                                              "kubernetes.io/metadata.name": "y"}


def test_a_namespace_document_with_a_bad_label_names_it():
    with pytest.raises(SpecError) as e:
        spec.build([("ns.yaml", 0, yaml.safe_load("apiVersion: v1\nkind: Namespace\nmetadata: {name: y, "
                                                  "labels: {team: a b}}"))])
    assert (e.value.obj, e.value.field) == ("Namespace y", "metadata.labels")
    assert e.value.message.startswith('Invalid value: "a b": a valid label must be an empty string')


WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c}]}
"""


def test_a_pod_relabelled_out_of_its_replicasets_selector_is_released_and_replaced():
    s = state_with(WEB)
    web = [p for p in s.pods if p.owner == "Deployment/web"]
    pod = web[0]
    cluster.relabel_pod(s, pod, {**pod.labels, "app": "moved"}, random.Random(2))
    assert pod.labels["app"] == "moved" and pod.owner is None and pod in s.pods and pod.node is not None
    owned = [p for p in s.pods if p.owner == "Deployment/web"]
    assert len(owned) == 2 and pod not in owned


def test_a_pod_given_one_more_label_stays_its_replicasets():
    s = state_with(WEB)
    pod = next(p for p in s.pods if p.owner == "Deployment/web")
    cluster.relabel_pod(s, pod, {**pod.labels, "role": "db"}, random.Random(2))
    assert pod.labels["role"] == "db" and pod.owner == "Deployment/web"
    assert len([p for p in s.pods if p.owner == "Deployment/web"]) == 2


@pytest.mark.parametrize("body, field, near", [
    ("podSelektor: {matchLabels: {app: web}}", "spec.podSelektor", "podSelector"),
    ("ingress: [{form: [{podSelector: {}}]}]", "spec.ingress[0].form", "from"),
    ("egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, excepts: [10.1.0.0/16]}}]}]", "spec.egress[0].to[0].ipBlock.excepts",
     "except"),
    ("ingress: [{ports: [{port: 80, end_port: 90}]}]", "spec.ingress[0].ports[0].end_port", "endPort"),
    ("ingress: [{ports: [{port: 80, x: 1}]}]", "spec.ingress[0].ports[0].x", None),
])
def test_a_misspelt_field_of_a_policy_is_refused_not_ignored(body, field, near):
    # kubectl apply's field validation is Strict: the API server refuses what the v1 types lack.
    e = refused(body)
    assert e.field == field and e.message.startswith("unknown field, not in networking.k8s.io/v1 NetworkPolicy (")
    assert (f"did you mean {near}?" in e.message) if near else ("did you mean" not in e.message)
