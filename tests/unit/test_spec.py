"""Lab file validation: defaults as kind has them, and every error names file, object, field."""

import textwrap

import pytest

from netlab.api import spec
from netlab.errors import SpecError


def write(tmp_path, text, name="lab.yaml"):
    f = tmp_path / name
    f.write_text(textwrap.dedent(text))
    return f


CLUSTER = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: t
nodes: [{role: control-plane}, {role: worker}, {role: worker}]
"""


def test_kind_defaults_without_a_file():
    s = spec.load(None)
    assert s.cluster.name == "kind"
    assert s.cluster.node_names == ["kind-control-plane"]
    assert (s.cluster.pod_subnet, s.cluster.service_subnet) == ("10.244.0.0/16", "10.96.0.0/12")
    assert (s.cluster.lan_cidr, s.cluster.underlay_mtu) == ("172.18.0.0/16", 1500)


def test_nodes_are_named_as_kind_names_them(tmp_path):
    s = spec.load(write(tmp_path, CLUSTER))
    assert s.cluster.node_names == ["t-control-plane", "t-worker", "t-worker2"]


def test_manifest_fields_that_do_not_matter_are_ignored(tmp_path):
    f = write(tmp_path, CLUSTER + textwrap.dedent("""
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: p, annotations: {x: y}}
    spec:
      restartPolicy: Always
      containers:
        - name: c
          image: nginx
          resources: {limits: {cpu: 1}}
          ports: [{containerPort: 80, name: http}]
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: cm}
    data: {a: b}
    """))
    s = spec.load(f)
    assert s.pods[0].template.containers[0].ports == (spec.ContainerPort(80, "TCP", "http"),)


def test_extra_manifests_from_a_folder(tmp_path):
    lab = write(tmp_path, CLUSTER)
    d = tmp_path / "m"
    d.mkdir()
    write(d, "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c}]}\n", "a.yaml")
    write(d, "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {containers: [{name: c}]}\n", "b.yml")
    assert [p.name for p in spec.load(lab, [d]).pods] == ["a", "b"]


def error_of(tmp_path, text):
    f = write(tmp_path, text)
    with pytest.raises(SpecError) as e:
        spec.load(f)
    return f, e.value


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    f, e = error_of(tmp_path, "kind: Cluster\nnodes: [\n")
    assert e.file == f and "line" in e.obj and "invalid YAML" in e.message


def test_unknown_node_is_refused(tmp_path):
    f, e = error_of(tmp_path, CLUSTER + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                    "spec: {nodeName: ghost, containers: [{name: c}]}\n")
    assert (e.obj, e.field) == ("Pod default/p", "spec.nodeName")
    assert "ghost" in str(e) and str(f) in str(e)


def test_overlapping_cidrs_are_refused(tmp_path):
    _, e = error_of(tmp_path, CLUSTER + "networking: {podSubnet: 10.96.0.0/16}\n")
    assert e.field == "networking.serviceSubnet" and "overlaps" in e.message
    _, e = error_of(tmp_path, CLUSTER + "---\napiVersion: netlab.io/v1alpha1\nkind: Lab\nlan: {cidr: 10.244.5.0/24}\n")
    assert (e.obj, e.field) == ("Lab", "lan.cidr")


def test_duplicate_names_are_refused(tmp_path):
    pod = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\n"
    _, e = error_of(tmp_path, CLUSTER + pod + pod)
    assert (e.obj, e.field) == ("Pod default/p", "metadata.name") and "duplicate" in e.message


def test_invalid_manifest_field_is_named(tmp_path):
    _, e = error_of(tmp_path, CLUSTER + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                    "spec: {containers: [{name: c, ports: [{containerPort: 70000}]}]}\n")
    assert e.field == "spec.containers[0].ports[0].containerPort" and "must be between" in e.message


@pytest.mark.parametrize("snippet, field", [
    ("networking: {kubeProxyMode: ipvs}", "networking.kubeProxyMode"),
    ("networking: {podSubnet: 10.244.0.0/25}", "networking.podSubnet"),
    ("networking: {podSubnet: not-a-cidr}", "networking.podSubnet"),
])
def test_cluster_fields(tmp_path, snippet, field):
    _, e = error_of(tmp_path, CLUSTER + snippet + "\n")
    assert e.field == field


def test_bad_role_and_name(tmp_path):
    _, e = error_of(tmp_path, "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes: [{role: master}]\n")
    assert e.field == "nodes[0].role"
    _, e = error_of(tmp_path, "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: Bad_Name\n")
    assert e.field == "name"


def test_deployment_selector_must_match_template(tmp_path):
    _, e = error_of(tmp_path, CLUSTER + """---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: y}}
    spec: {containers: [{name: c}]}
""")
    assert (e.obj, e.field) == ("Deployment default/d", "spec.template.metadata.labels")


def test_unknown_field_in_netlab_document(tmp_path):
    _, e = error_of(tmp_path, CLUSTER + "---\napiVersion: netlab.io/v1alpha1\nkind: Lab\nlan: {mtuu: 1500}\n")
    assert e.field == "lan.mtuu"


def test_unsupported_kind(tmp_path):
    _, e = error_of(tmp_path, CLUSTER + "---\napiVersion: v1\nkind: Gadget\nmetadata: {name: g}\n")
    assert e.field == "kind" and "Gadget" in e.message


def test_iptables_applier_is_chosen_in_the_lab_document(tmp_path):
    lab = CLUSTER + "---\napiVersion: netlab.io/v1alpha1\nkind: Lab\niptables: {applier: python-iptables}\n"
    assert spec.load(write(tmp_path, lab)).cluster.iptables_applier == "python-iptables"
    assert spec.load(None).cluster.iptables_applier == "iptables-restore"
    _, e = error_of(tmp_path, lab.replace("python-iptables", "nft"))
    assert e.field == "iptables.applier" and "iptables-restore" in e.message
