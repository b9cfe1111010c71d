"""The lab file read as strictly as kind and the API server read theirs (issue 23): kind's
Cluster fields only, each key once, UTF-8, usable address ranges, the names and ports the API
allows and the cluster can run. Each refusal is one sentence naming file, object and field."""

import json
import textwrap

import pytest

from netlab.api import spec
from netlab.errors import SpecError

CLUSTER = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: t
nodes: [{role: control-plane}, {role: worker}]
"""
LAB = "---\napiVersion: netlab.io/v1alpha1\nkind: Lab\n"
POD = """\
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
"""


def write(tmp_path, text, name="lab.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return f


def refused(tmp_path, text, name="lab.yaml"):
    """(file, the one sentence spec.load gives for it)."""
    f = write(tmp_path, text, name)
    with pytest.raises(SpecError) as e:
        spec.load(f)
    assert "\n" not in str(e.value)
    return f, str(e.value)


# --- 1. kind's Cluster: its fields and no others --------------------------------------------

def test_a_misspelt_networking_field_is_refused_not_defaulted(tmp_path):
    f, e = refused(tmp_path, CLUSTER + "networking: {podSubnt: 10.1.0.0/16}\n")
    assert e == (f"{f}: Cluster: networking.podSubnt: unknown field, not in kind's v1alpha4 Cluster (did you mean "
                 f"podSubnet? known here: apiServerAddress, apiServerPort, disableDefaultCNI, dnsSearch, ipFamily, "
                 f"kubeProxyMode, podSubnet, serviceSubnet)")


def test_an_unknown_node_field_is_refused(tmp_path):
    f, e = refused(tmp_path, CLUSTER.replace("{role: worker}", "{role: worker, bogusField: 1}"))
    assert e == (f"{f}: Cluster: nodes[1].bogusField: unknown field, not in kind's v1alpha4 Cluster (known here: "
                 f"extraMounts, extraPortMappings, image, kubeadmConfigPatches, kubeadmConfigPatchesJSON6902, "
                 f"labels, role)")


@pytest.mark.parametrize("snippet, field, hint", [
    ("nodez: []", "nodez", "did you mean nodes? "),
    ("featureGate: {X: true}", "featureGate", "did you mean featureGates? "),
    ("nodes: [{role: worker, extraMounts: [{hostPath: /a, containerpath: /b}]}]",
     "nodes[0].extraMounts[0].containerpath", "did you mean containerPath? "),
    ("kubeadmConfigPatchesJSON6902: [{group: g, version: v, kind: k, patch: p, name: n}]",
     "kubeadmConfigPatchesJSON6902[0].name", ""),
    ("metadata: {name: t}", "metadata", ""),
])
def test_unknown_fields_anywhere_in_the_cluster_are_named(tmp_path, snippet, field, hint):
    text = CLUSTER.replace("nodes: [{role: control-plane}, {role: worker}]\n", "") + snippet + "\n"
    if not snippet.startswith("nodes"):
        text += "nodes: [{role: control-plane}]\n"
    f, e = refused(tmp_path, text)
    assert e.startswith(f"{f}: Cluster: {field}: unknown field, not in kind's v1alpha4 Cluster ({hint}known here: ")


KIND_EVERYTHING = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: full
featureGates: {InPlacePodVerticalScaling: true}
runtimeConfig: {"api/alpha": "false"}
kubeadmConfigPatches:
  - |
    kind: ClusterConfiguration
    apiServer: {extraArgs: {v: "4"}}
kubeadmConfigPatchesJSON6902:
  - {group: kubeadm.k8s.io, version: v1beta3, kind: ClusterConfiguration, patch: "- op: add"}
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
containerdConfigPatchesJSON6902: ["- op: add"]
networking:
  ipFamily: ipv4
  apiServerAddress: 127.0.0.1
  apiServerPort: 6443
  podSubnet: 10.240.0.0/16
  serviceSubnet: 10.100.0.0/16
  disableDefaultCNI: true
  kubeProxyMode: iptables
  dnsSearch: [example.com]
nodes:
  - role: control-plane
    image: kindest/node:v1.31.0
    labels: {ingress-ready: "true"}
    extraPortMappings:
      - {containerPort: 80, hostPort: 8080, listenAddress: 0.0.0.0, protocol: TCP}
    extraMounts:
      - {hostPath: /tmp, containerPath: /data, readOnly: true, selinuxRelabel: false, propagation: None}
    kubeadmConfigPatches: ["kind: InitConfiguration"]
    kubeadmConfigPatchesJSON6902: [{group: kubeadm.k8s.io, version: v1beta3, kind: InitConfiguration, patch: x}]
  - role: worker
"""


def test_every_field_of_kinds_cluster_is_taken(tmp_path):
    """Every field of kind's v1alpha4 Cluster (types.go) is accepted; those netlab has no use
    for are ignored, the ones it models are read."""
    c = spec.load(write(tmp_path, KIND_EVERYTHING)).cluster
    assert c.node_names == ["full-control-plane", "full-worker"]
    assert (c.pod_subnet, c.service_subnet) == ("10.240.0.0/16", "10.100.0.0/16")


@pytest.mark.parametrize("snippet, field, message", [
    ("featureGates: {X: enabled}", "featureGates.X", "must be true or false, not 'enabled'"),
    ("networking: {apiServerPort: high}", "networking.apiServerPort", "must be an integer, not 'high'"),
    ("networking: {disableDefaultCNI: 1}", "networking.disableDefaultCNI", "must be true or false, not 1"),
    ("kubeadmConfigPatches: [{kind: InitConfiguration}]", "kubeadmConfigPatches[0]", "must be a string, not a mapping"),
    ("nodes: {role: worker}", "nodes", "must be a list"),
])
def test_the_shape_of_ignored_fields_is_checked_as_kind_checks_it(tmp_path, snippet, field, message):
    f, e = refused(tmp_path, CLUSTER.replace("nodes: [{role: control-plane}, {role: worker}]\n", "") + snippet + "\n")
    assert e == f"{f}: Cluster: {field}: {message}"


# --- 1. each key once, in every document ------------------------------------------------------

def test_a_duplicate_cluster_name_is_refused_with_both_lines(tmp_path):
    f, e = refused(tmp_path, CLUSTER + "name: u\n")
    assert e == (f"{f}: Cluster: name: duplicate key 'name' at line 5 (first at line 3): a mapping holds a key "
                 f"once, as kind's and the API server's strict decoding require")


@pytest.mark.parametrize("text, obj, field, lines", [
    (CLUSTER + "networking:\n  podSubnet: 10.1.0.0/16\n  podSubnet: 10.2.0.0/16\n",
     "Cluster", "networking.podSubnet", (7, 6)),
    (CLUSTER + LAB + "lan: {cidr: 10.10.0.0/24, cidr: 10.20.0.0/24}\n", "Lab", "lan.cidr", (8, 8)),
    (CLUSTER + POD + "    - name: c\n      ports:\n        - {containerPort: 80, containerPort: 81}\n",
     "Pod default/p", "spec.containers[0].ports[0].containerPort", (13, 13)),
    (CLUSTER + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  selector: {app: a}\n"
     "  selector: {app: b}\n  ports: [{port: 80}]\n", "Service default/s", "spec.selector", (11, 10)),
])
def test_a_duplicate_key_is_refused_in_every_document(tmp_path, text, obj, field, lines):
    f, e = refused(tmp_path, text)
    key = field.rsplit(".", 1)[-1]
    assert e == (f"{f}: {obj}: {field}: duplicate key {key!r} at line {lines[0]} (first at line {lines[1]}): "
                 f"a mapping holds a key once, as kind's and the API server's strict decoding require")


def test_a_duplicate_key_in_a_json_manifest_given_with_f(tmp_path):
    lab = write(tmp_path, CLUSTER)
    m = write(tmp_path, '{"apiVersion": "v1", "kind": "Pod",\n "metadata": {"name": "p"},\n'
                        ' "spec": {"containers": [{"name": "c"}]},\n "spec": {"containers": []}}\n', "pod.json")
    with pytest.raises(SpecError) as e:
        spec.load(lab, [m])
    assert str(e.value) == (f"{m}: Pod default/p: spec: duplicate key 'spec' at line 4 (first at line 3): "
                            f"a mapping holds a key once, as kind's and the API server's strict decoding require")


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    """`<<: *base` may repeat what it merges (YAML's merge rule): that is not a duplicate key."""
    text = CLUSTER + POD.replace("metadata: {name: p}", "metadata: {name: p, labels: &base {app: a, tier: x}}") + \
        "    - name: c\n      env:\n        - &e {name: A, value: '1'}\n        - <<: *e\n          value: '2'\n" + \
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: q\n  labels:\n    <<: {app: a, tier: x}\n    tier: y\n" + \
        "spec: {containers: [{name: c}]}\n"
    pods = spec.load(write(tmp_path, text)).pods
    assert [(p.name, p.template.labels) for p in pods] == [("p", {"app": "a", "tier": "x"}),
                                                          ("q", {"app": "a", "tier": "y"})]


# --- 2. a lab file names its cluster ------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_lab_file_says_it_is_empty(tmp_path, text):
    f, e = refused(tmp_path, text)
    assert e == (f"{f}: the lab file is empty: it needs a kind Cluster document (kind: Cluster, "
                 f"apiVersion: kind.x-k8s.io/v1alpha4)")


def test_a_manifest_only_file_as_the_lab_file_suggests_f(tmp_path):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    f, e = refused(tmp_path, json.dumps(pod), "pod.json")
    assert e == (f"{f}: holds manifests (Pod) but no kind Cluster document: to add them to the default lab run "
                 f"`netlab up -f {f}`, or put a kind Cluster document (kind: Cluster, apiVersion: "
                 f"kind.x-k8s.io/v1alpha4) first")
    f, e = refused(tmp_path, POD + "    - name: c\n" + LAB + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                   "spec: {ports: [{port: 80}]}\n")
    assert e.startswith(f"{f}: holds manifests (Pod, Service) but no kind Cluster document: ")


def test_a_lab_document_alone_is_not_a_cluster(tmp_path):
    f, e = refused(tmp_path, LAB.lstrip("-\n") + "lan: {cidr: 10.10.0.0/24}\n")
    assert e == (f"{f}: has a Lab document but no kind Cluster document (kind: Cluster, apiVersion: "
                 f"kind.x-k8s.io/v1alpha4) naming the cluster and its nodes")


def test_no_lab_file_and_manifests_with_f_still_work(tmp_path):
    """`spec.load(None)` is kind's default cluster; the manifest-only file is fine with -f."""
    pod = write(tmp_path, json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                      "spec": {"containers": [{"name": "c"}]}}), "pod.json")
    s = spec.load(None, [pod])
    assert (s.cluster.name, [p.name for p in s.pods]) == ("kind", ["p"])
    s = spec.load(write(tmp_path, CLUSTER), [pod])
    assert (s.cluster.name, [p.name for p in s.pods]) == ("t", ["p"])


# --- 3. one sentence for a file that is not text, or a range no lab can use -----------------

def test_a_lab_file_that_is_not_utf8(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_bytes(CLUSTER.encode() + b"# caf\xe9\n")
    with pytest.raises(SpecError) as e:
        spec.load(f)
    assert str(e.value) == (f"{f}: not UTF-8 text (byte 0xe9 at offset {len(CLUSTER) + 5}): lab files and "
                            f"manifests are YAML or JSON in UTF-8")


def test_a_manifest_given_with_f_that_is_not_utf8(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_bytes(b"\xff\xfek\x00i\x00n\x00d\x00")                  # UTF-16, as some editors save
    with pytest.raises(SpecError) as e:
        spec.load(write(tmp_path, CLUSTER), [m])
    assert str(e.value) == (f"{m}: not UTF-8 text (byte 0xff at offset 0): lab files and manifests are YAML or "
                            f"JSON in UTF-8")


def test_a_character_yaml_forbids_is_one_sentence(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_bytes(CLUSTER.encode() + b"\x00")
    with pytest.raises(SpecError) as e:
        spec.load(f)
    assert str(e.value) == f"{f}: offset {len(CLUSTER)}: invalid YAML: character #x0000 is not allowed in YAML"


@pytest.mark.parametrize("snippet, obj, field, message", [
    (LAB + "lan: {cidr: 127.0.0.0/8}", "Lab", "lan.cidr",
     "127.0.0.0/8 is IPv4's loopback range (a packet to it never leaves the sender)"),
    ("networking: {podSubnet: 127.0.0.0/16}", "Cluster", "networking.podSubnet",
     "127.0.0.0/16 lies in 127.0.0.0/8, IPv4's loopback range (a packet to it never leaves the sender)"),
    ("networking: {serviceSubnet: 224.0.0.0/12}", "Cluster", "networking.serviceSubnet",
     "224.0.0.0/12 lies in 224.0.0.0/4, IPv4's multicast range (it names groups, not hosts)"),
    (LAB + "lan: {cidr: 224.0.0.0/24}", "Lab", "lan.cidr",
     "224.0.0.0/24 lies in 224.0.0.0/4, IPv4's multicast range (it names groups, not hosts)"),
    (LAB + "lan: {cidr: 169.254.0.0/24}", "Lab", "lan.cidr",
     "169.254.0.0/24 lies in 169.254.0.0/16, IPv4's link-local range (routers never forward it)"),
    ("networking: {podSubnet: 0.0.0.0/16}", "Cluster", "networking.podSubnet",
     '0.0.0.0/16 lies in 0.0.0.0/8, IPv4\'s "this network" range, which no host may hold'),
    ("networking: {serviceSubnet: 240.0.0.0/12}", "Cluster", "networking.serviceSubnet",
     "240.0.0.0/12 lies in 240.0.0.0/4, IPv4's reserved range (and the broadcast address)"),
    ("networking: {podSubnet: 96.0.0.0/3}", "Cluster", "networking.podSubnet",
     "96.0.0.0/3 overlaps 127.0.0.0/8, IPv4's loopback range (a packet to it never leaves the sender)"),
])
def test_ranges_no_lab_can_number_from_are_refused(tmp_path, snippet, obj, field, message):
    f, e = refused(tmp_path, CLUSTER + snippet + "\n")
    assert e == f"{f}: {obj}: {field}: {message}: the lab's addresses must be ordinary unicast ones"


def test_a_source_range_may_still_be_anything(tmp_path):
    """loadBalancerSourceRanges filter sources; 0.0.0.0/0 there is everyone, not an address plan."""
    s = spec.load(write(tmp_path, CLUSTER + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n"
                        "  type: LoadBalancer\n  loadBalancerSourceRanges: [0.0.0.0/0]\n  ports: [{port: 80}]\n"))
    assert s.services[0].load_balancer_source_ranges == ("0.0.0.0/0",)


@pytest.mark.parametrize("snippet, field, message", [
    # kind's validateSubnets and ipFamily messages
    ("networking: {podSubnet: '10.244.0.0/16,fd00:10:244::/56'}", "networking.podSubnet",
     "'10.244.0.0/16,fd00:10:244::/56': only one CIDR allowed for single-stack networking (ipFamily: ipv4; "
     "ipFamily: dual takes a pair)"),
    ("networking: {podSubnet: 'fd00:10:244::/56'}", "networking.podSubnet",
     "'fd00:10:244::/56': expected IPv4 CIDR for IPv4 family"),
    ("networking: {ipFamily: both}", "networking.ipFamily", "invalid ipFamily: both (kind takes ipv4, ipv6, dual)"),
    ("networking: {ipFamily: dual, podSubnet: '10.244.0.0/16,10.245.0.0/16'}", "networking.podSubnet",
     "'10.244.0.0/16,10.245.0.0/16': expected one (IPv4 or IPv6) CIDR or two CIDRs from each family for "
     "dual-stack networking"),
    ("networking: {ipFamily: dual, serviceSubnet: '10.96.0.0/16,fd00:10:96::/112,fd00:10:97::/112'}",
     "networking.serviceSubnet", "'10.96.0.0/16,fd00:10:96::/112,fd00:10:97::/112': expected one (IPv4 or IPv6) "
     "CIDR or two CIDRs from each family for dual-stack networking"),
    ("networking: {ipFamily: dual, podSubnet: 'fd00:10:244::/56,10.244.0.0/16'}", "networking.podSubnet",
     "'fd00:10:244::/56,10.244.0.0/16': netlab's dual-stack labs are IPv4-primary: give the IPv4 CIDR first (an "
     "IPv6 primary: ipFamily: ipv6)"),
    ("networking: {ipFamily: dual, podSubnet: '10.244.0.0/16'}", "networking.podSubnet",
     "'10.244.0.0/16': netlab's dual-stack lab takes a CIDR of each family, IPv4 first (kind accepts one, and its "
     "cluster then has that family alone: use ipFamily: ipv4 or ipv6 for that)"),
    ("networking: {ipFamily: dual, podSubnet: '10.244.0.0/16,fd00:11::/40'}", "networking.podSubnet",
     "fd00:11::/40 is too large: kube-controller-manager allows at most 16 bits between the cluster CIDR's "
     "mask and a node's /64"),
    ("networking: {ipFamily: dual, serviceSubnet: '10.96.0.0/16,fd00:10:96::/64'}", "networking.serviceSubnet",
     "fd00:10:96::/64 is too large; for 128-bit addresses, the mask must be >= 108 (kube-apiserver)"),
    ("networking: {ipFamily: dual, serviceSubnet: '10.96.0.0/16,fd00:10:244::/112'}", "networking.serviceSubnet",
     "fd00:10:244::/112 overlaps podSubnet fd00:10:244::/56"),
    ("networking: {ipFamily: dual, podSubnet: '10.244.0.0/16,fe80::/56'}", "networking.podSubnet",
     "fe80::/56 lies in fe80::/10, IPv6's link-local range (routers never forward it): the lab's addresses must "
     "be ordinary unicast ones"),
    # an IPv6 lab takes one IPv6 CIDR of each
    ("networking: {ipFamily: ipv6, podSubnet: '10.244.0.0/16'}", "networking.podSubnet",
     "'10.244.0.0/16': expected IPv6 CIDR for IPv6 family"),
    ("networking: {ipFamily: ipv6, serviceSubnet: 'fd00:10:96::/112,10.96.0.0/16'}", "networking.serviceSubnet",
     "'fd00:10:96::/112,10.96.0.0/16': only one CIDR allowed for single-stack networking (ipFamily: ipv6; "
     "ipFamily: dual takes a pair)"),
    ("networking: {ipFamily: ipv6, serviceSubnet: 'fd00:10:96::/100'}", "networking.serviceSubnet",
     "fd00:10:96::/100 is too large; for 128-bit addresses, the mask must be >= 108 (kube-apiserver)"),
    ("networking: {ipFamily: ipv6, podSubnet: 'fd00:10:244::/65'}", "networking.podSubnet",
     "fd00:10:244::/65 is too small: each node takes a /64"),
])
def test_ip_families_and_subnets_are_checked_as_kind_checks_them(tmp_path, snippet, field, message):
    f, e = refused(tmp_path, CLUSTER + snippet + "\n")
    assert e == f"{f}: Cluster: {field}: {message}"


def test_dual_takes_kinds_default_pairs_and_the_lans_ula():
    s = spec.build([("t.yaml", 0, {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4",
                                   "networking": {"ipFamily": "dual"}})])
    c = s.cluster
    assert (c.ip_family, c.dual, c.families) == ("dual", True, ("IPv4", "IPv6"))
    assert c.pod_subnets == ("10.244.0.0/16", "fd00:10:244::/56")
    assert c.service_subnets == ("10.96.0.0/12", "fd00:10:96::/112")
    assert c.lan_cidr6 == "fc00:f853:ccd:e793::/64"
    single = spec.build([("t.yaml", 0, {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4"})]).cluster
    assert (single.ipv4, single.ipv6, single.primary) == (True, False, "IPv4")
    assert (single.dual, single.families, single.pod_subnets, single.lan_cidr6) == (False, ("IPv4",),
                                                                                   ("10.244.0.0/16",), "")


def test_ipv6_takes_kinds_ipv6_defaults_and_keeps_the_lans_ipv4_range():
    """kind's ipv6 defaults: podSubnet fd00:10:244::/56, serviceSubnet fd00:10:96::/112; its
    node network is Docker's, with an IPv4 range beside the ULA one."""
    c = spec.build([("t.yaml", 0, {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4",
                                   "networking": {"ipFamily": "ipv6"}})]).cluster
    assert (c.ip_family, c.ipv4, c.ipv6, c.dual, c.families, c.primary) == (
        "ipv6", False, True, False, ("IPv6",), "IPv6")
    assert (c.pod_subnet, c.service_subnet) == ("", "")
    assert (c.pod_subnets, c.service_subnets) == (("fd00:10:244::/56",), ("fd00:10:96::/112",))
    assert (c.lan_cidr, c.lan_cidr6) == ("172.18.0.0/16", "fc00:f853:ccd:e793::/64")


# --- 4. the cluster's own Services --------------------------------------------------------------

@pytest.mark.parametrize("namespace, name, owner", [
    ("default", "kubernetes", "the API server"),
    ("kube-system", "kube-dns", "kubeadm's CoreDNS addon"),
])
def test_the_clusters_own_services_cannot_be_defined(tmp_path, namespace, name, owner):
    f, e = refused(tmp_path, CLUSTER + f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: "
                   f"{namespace}}}\nspec: {{ports: [{{port: 443}}]}}\n")
    assert e == (f"{f}: Service {namespace}/{name}: metadata.name: the Service {namespace}/{name} is managed by "
                 f"{owner}; a lab file cannot define it (give yours another name)")


def test_the_same_names_in_other_namespaces_are_anyones(tmp_path):
    s = spec.load(write(tmp_path, CLUSTER + "---\napiVersion: v1\nkind: Service\nmetadata: {name: kube-dns}\n"
                        "spec: {ports: [{port: 53}]}\n---\napiVersion: v1\nkind: Service\n"
                        "metadata: {name: kubernetes, namespace: kube-system}\nspec: {ports: [{port: 443}]}\n"))
    assert [s_.key for s_ in s.services] == ["default/kube-dns", "kube-system/kubernetes"]


def test_the_clusters_own_services_cannot_be_applied_either(tmp_path):
    running = spec.load(write(tmp_path, CLUSTER)).cluster
    m = write(tmp_path, "apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes}\nspec: {ports: [{port: 443}]}\n",
              "svc.yaml")
    with pytest.raises(SpecError) as e:
        spec.load(None, [m], cluster=running, nodes=running.node_names)
    assert str(e.value).startswith(f"{m}: Service default/kubernetes: metadata.name: the Service default/kubernetes "
                                   f"is managed by the API server")


# --- 5. names as long as the API allows them ------------------------------------------------

def pod(name, namespace="default"):
    return (f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec: {{containers: [{{name: c}}]}}\n")


def deployment(name):
    return (f"---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
            f"  selector: {{matchLabels: {{app: a}}}}\n  template:\n    metadata: {{labels: {{app: a}}}}\n"
            f"    spec: {{containers: [{{name: c}}]}}\n")


def test_pod_names_are_dns_subdomains_of_up_to_253_characters(tmp_path):
    """The API's limit for a Pod (and a Deployment) is a DNS-1123 subdomain, 253 characters
    with dots; the namespace's 63 is a label's. Lab `t`: t-default.<253> is 263 bytes, so the
    longest that fits a netns name in this lab is 245."""
    long = ("a" * 60 + ".") * 3 + "b" * 62                                  # 245 characters, dots included
    s = spec.load(write(tmp_path, CLUSTER + pod(long) + pod("x" * 200, "n" * 40) + deployment("d" * 200)))
    assert [len(p.name) for p in s.pods] == [245, 200] and len(s.deployments[0].name) == 200


def test_a_pod_name_past_253_characters_is_refused(tmp_path):
    f, e = refused(tmp_path, CLUSTER + pod("a" * 254))
    assert e == (f"{f}: Pod: metadata.name: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'... (254 characters) is longer than "
                 f"253 characters")


def test_a_pod_whose_netns_name_would_pass_the_kernels_limit_is_refused(tmp_path):
    f, e = refused(tmp_path, CLUSTER + pod("a" * 250))
    assert e == (f"{f}: Pod default/{'a' * 250}: metadata.name: too long for this lab: the pod's network namespace, "
                 f"t-default.<pod name>, would take 260 bytes, over the kernel's 255-byte limit on a file name "
                 f"(/run/netns/<name>)")
    # A Deployment's replicas are named from a base cut to 58 characters, as the API server's
    # name generator cuts it: any Deployment name fits.
    f = tmp_path / "long-deployment.yaml"
    f.write_text(CLUSTER + deployment("d" * 230))
    from netlab.controllers import cluster
    pods = [p.name for p in cluster.new_state(spec.load(f)).pods if p.owner == f"Deployment/{'d' * 230}"]
    assert pods and all(len(n) == 63 and n.startswith("d" * 58) for n in pods)


@pytest.mark.parametrize("text, obj, field", [
    (pod("p", "n" * 64), "Pod", "metadata.namespace"),
    ("---\napiVersion: v1\nkind: Service\nmetadata: {name: " + "s" * 64 + "}\nspec: {ports: [{port: 80}]}\n",
     "Service", "metadata.name"),
])
def test_namespaces_and_services_stay_labels_of_63(tmp_path, text, obj, field):
    f, e = refused(tmp_path, CLUSTER + text)
    assert e.startswith(f"{f}: {obj}: {field}: ") and e.endswith("(64 characters) is longer than 63 characters")


# --- 6. and 7. ports a node could not give ------------------------------------------------------

def test_two_containers_on_one_port_are_refused(tmp_path):
    f, e = refused(tmp_path, CLUSTER + POD + "    - {name: web, ports: [{containerPort: 8080}]}\n"
                   "    - {name: sidecar, ports: [{containerPort: 9090}, {containerPort: 8080}]}\n")
    assert e == (f"{f}: Pod default/p: spec.containers[1].ports[1].containerPort: 8080 is already the containerPort "
                 f"of container web in this pod (on a node the second would fail to bind)")


def test_two_containers_on_one_udp_port_in_a_deployment_are_refused(tmp_path):
    text = deployment("d").replace("{containers: [{name: c}]}",
                                   "{containers: [{name: a, ports: [{containerPort: 53, protocol: UDP}]}, "
                                   "{name: b, ports: [{containerPort: 53, protocol: UDP}]}]}")
    f, e = refused(tmp_path, CLUSTER + text)
    assert e == (f"{f}: Deployment default/d: spec.template.spec.containers[1].ports[0].containerPort: 53/UDP is "
                 f"already the containerPort of container a in this pod (on a node the second would fail to bind)")


def test_one_port_number_for_tcp_and_udp_in_two_containers_is_fine(tmp_path):
    s = spec.load(write(tmp_path, CLUSTER + POD + "    - {name: a, ports: [{containerPort: 53}]}\n"
                        "    - {name: b, ports: [{containerPort: 53, protocol: UDP}]}\n"))
    assert [c.ports for c in s.pods[0].template.containers] == [(spec.ContainerPort(53, "TCP"),),
                                                               (spec.ContainerPort(53, "UDP"),)]


def test_a_host_port_is_refused(tmp_path):
    f, e = refused(tmp_path, CLUSTER + POD + "    - {name: web, ports: [{containerPort: 8080, hostPort: 80}]}\n")
    assert e == (f"{f}: Pod default/p: spec.containers[0].ports[0].hostPort: 80: netlab's CNI chain (bridge, "
                 f"host-local) has no portmap plugin, so nothing would forward the node's port to the pod; reach it "
                 f"through a NodePort Service instead")


def test_host_port_zero_is_unset(tmp_path):
    """The API reads hostPort 0 as no hostPort (Go's zero value, omitempty)."""
    s = spec.load(write(tmp_path, CLUSTER + POD + "    - {name: web, ports: [{containerPort: 8080, hostPort: 0}]}\n"))
    assert s.pods[0].template.containers[0].ports == (spec.ContainerPort(8080, "TCP"),)


# --- 8. an Ingress host is a DNS name ------------------------------------------------------------

def ingress(host):
    return textwrap.dedent(f"""\
        ---
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {{name: i}}
        spec:
          rules:
            - host: "{host}"
              http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}]}}
        """)


@pytest.mark.parametrize("host", ["1.2.3.4", "010.0.0.1", "255.255.255.255"])
def test_an_ip_address_is_not_an_ingress_host(tmp_path, host):
    f, e = refused(tmp_path, CLUSTER + ingress(host))
    assert e == f"{f}: Ingress default/i: spec.rules[0].host: {host!r} must be a DNS name, not an IP address"


@pytest.mark.parametrize("host", ["*.example.com", "foo.bar.com", "1.2.3.4.nip.io", "256.1.1.1"])
def test_dns_names_and_wildcards_stay_valid_ingress_hosts(tmp_path, host):
    assert spec.load(write(tmp_path, CLUSTER + ingress(host))).ingresses[0].rules[0].host == host


# --- kube-proxy's mode --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_kind_kube_proxy_modes_netlab_runs(tmp_path, mode):
    s = spec.load(write(tmp_path, CLUSTER + f"networking: {{kubeProxyMode: {mode}}}\n"))
    assert s.cluster.kube_proxy_mode == mode


def test_kube_proxy_mode_defaults_to_iptables_as_kind_does(tmp_path):
    assert spec.load(write(tmp_path, CLUSTER)).cluster.kube_proxy_mode == "iptables"


@pytest.mark.parametrize("mode, message", [
    ("none", "'none': netlab runs kube-proxy on every node; use iptables or nftables"),
    ("userspace", "invalid kubeProxyMode: 'userspace' (kind takes iptables, nftables, ipvs or none)"),
])
def test_kube_proxy_modes_netlab_does_not_run_are_refused(tmp_path, mode, message):
    f, e = refused(tmp_path, CLUSTER + f"networking: {{kubeProxyMode: {mode}}}\n")
    assert e == f"{f}: Cluster: networking.kubeProxyMode: {message}"


def test_ipvs_is_refused_with_the_kernels_reason(tmp_path, monkeypatch):
    import os.path
    for has_ipvs, why in ((False, "this kernel has no IPVS (/proc/net/ip_vs is missing)"),
                          (True, "netlab models kube-proxy's iptables and nftables modes; IPVS mode is out of its scope")):
        real = os.path.exists
        monkeypatch.setattr(os.path, "exists", lambda p, real=real, has=has_ipvs: has if p == "/proc/net/ip_vs" else real(p))
        f, e = refused(tmp_path, CLUSTER + "networking: {kubeProxyMode: ipvs}\n")
        assert e == f"{f}: Cluster: networking.kubeProxyMode: 'ipvs': {why}; use iptables or nftables"


def test_a_dual_stack_lan_must_leave_flannel_v6_an_ipv6_mtu(tmp_path):
    f, e = refused(tmp_path, CLUSTER + "networking: {ipFamily: dual}\n---\napiVersion: netlab.io/v1alpha1\nkind: Lab\n"
                   "lan: {mtu: 1349}\n")
    assert e == (f"{f}: Lab: lan.mtu: 1349 is too small for a dual-stack lab: flannel-v6.1 takes 70 bytes of it (the "
                 f"kernel's IPv6 VXLAN overhead), and IPv6 needs 1280 (lan.mtu >= 1350)")
