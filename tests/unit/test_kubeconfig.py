"""What kind does to the user's kubeconfig, on files under tmp_path (HOME and KUBECONFIG are
redirected for every test: the real ~/.kube/config is never read or written)."""

import os
import shutil
import stat
import subprocess

import pytest
import yaml

from netlab.api import kubeconfig
from netlab.errors import NetlabError

SERVER = "https://127.0.0.1:40123"
CA, CERT, KEY = b"-----BEGIN CERTIFICATE-----\nCA\n", b"-----BEGIN CERTIFICATE-----\nADMIN\n", b"KEY"

# a user's file: a kind cluster, a cloud cluster with an exec plugin, preferences and extensions
# netlab knows nothing of, a timestamp-like string, and a comment
EXISTING = """\
apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- cluster:
    certificate-authority-data: a2luZA==
    server: https://127.0.0.1:35001
  name: kind-kind
- cluster:
    server: https://203.0.113.10
    insecure-skip-tls-verify: true
    extensions:
    - name: client.authentication.k8s.io/exec
      extension: {audience: prod}
  name: prod
contexts:
- context: {cluster: kind-kind, user: kind-kind}
  name: kind-kind
- context:
    cluster: prod
    user: prod-admin
    namespace: payments      # the prod context's namespace
  name: prod
current-context: kind-kind
users:
- name: kind-kind
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
- name: prod-admin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: gke-gcloud-auth-plugin
      provideClusterInfo: true
      env:
      - {name: SINCE, value: 2024-01-02T03:04:05Z}
extensions:
- name: something-else
  extension: {x: 1}
"""


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return tmp_path / "home"


class KubectlYAML(yaml.SafeLoader):
    """YAML 1.1 as kubectl's yaml.v2 reads a kubeconfig, whose timestamps stay strings (PyYAML's
    would be datetimes)."""


KubectlYAML.yaml_implicit_resolvers = {
    c: [(t, r) for t, r in rs if t != "tag:yaml.org,2002:timestamp"]
    for c, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def as_kubectl_reads(text):
    return yaml.load(text, Loader=KubectlYAML)


def parsed(path):
    return as_kubectl_reads(path.read_text())


def names(doc, key):
    return [e["name"] for e in doc.get(key) or []]


def merge(file, lab="web", server=SERVER):
    return kubeconfig.merge(lab, server, CA, CERT, KEY, file=file)


# --- which file ------------------------------------------------------------------------------

def test_without_kubeconfig_it_is_the_homes(home):
    assert kubeconfig.path() == home / ".kube" / "config"


def test_kubeconfig_a_b_picks_a_that_exists(tmp_path, monkeypatch):
    (tmp_path / "a").write_text("")
    (tmp_path / "b").write_text("")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/a:{tmp_path}/b")
    assert kubeconfig.path() == tmp_path / "a"


def test_kubeconfig_picks_the_first_that_exists_else_the_last(tmp_path, monkeypatch):
    # kind's pathForMerge: the first file of the list that exists; when none does, the last one
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/a:{tmp_path}/b")
    assert kubeconfig.path() == tmp_path / "b"
    (tmp_path / "b").write_text("")
    assert kubeconfig.path() == tmp_path / "b"
    monkeypatch.setenv("KUBECONFIG", f"::{tmp_path}/a::{tmp_path}/a:")    # empty and repeated entries dropped
    assert kubeconfig.path() == tmp_path / "a"


def test_context_name_is_netlab_lab():
    assert kubeconfig.context_name("web") == "netlab-web"


# --- render -----------------------------------------------------------------------------------

def test_render_is_kinds_kubeconfig():
    # the layout `kind get kubeconfig` prints (kind's write_test), with this lab's names
    assert kubeconfig.render("web", SERVER, b"CA", b"CERT", b"KEY") == """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:40123
  name: netlab-web
contexts:
- context:
    cluster: netlab-web
    user: netlab-web
  name: netlab-web
current-context: netlab-web
kind: Config
preferences: {}
users:
- name: netlab-web
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"""


# --- merge ------------------------------------------------------------------------------------

def test_merge_creates_the_file_and_its_directory_roots_alone(home):
    f = kubeconfig.merge("web", SERVER, CA, CERT, KEY)
    assert f == home / ".kube" / "config"
    assert parsed(f) == yaml.safe_load(kubeconfig.render("web", SERVER, CA, CERT, KEY))
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f.parent).st_mode) == 0o700
    assert sorted(os.listdir(f.parent)) == ["config"]            # the lock and the temporary file are gone


def test_merge_keeps_everything_else_and_makes_the_lab_current(tmp_path):
    f = tmp_path / "config"
    f.write_text(EXISTING)
    os.chmod(f, 0o600)
    before = as_kubectl_reads(EXISTING)
    merge(f)
    after = parsed(f)
    ca_data = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkNBCg=="         # base64 of CA, CERT and KEY
    cert_data = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkFETUlOCg=="
    ours = {"clusters": {"name": "netlab-web", "cluster": {"certificate-authority-data": ca_data, "server": SERVER}},
            "users": {"name": "netlab-web", "user": {"client-certificate-data": cert_data, "client-key-data": "S0VZ"}},
            "contexts": {"name": "netlab-web", "context": {"cluster": "netlab-web", "user": "netlab-web"}}}
    for key in ("clusters", "users", "contexts"):
        assert after[key] == before[key] + [ours[key]]
    assert after["current-context"] == "netlab-web"
    assert {k: v for k, v in after.items() if k not in ours and k != "current-context"} == \
        {k: v for k, v in before.items() if k not in ours and k != "current-context"}
    # a timestamp-like string is written back as the same string (PyYAML alone would write a datetime)
    assert after["users"][1]["user"]["exec"]["env"][0]["value"] == "2024-01-02T03:04:05Z"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600


def test_merge_replaces_the_labs_older_entries_where_they_stand(tmp_path):
    f = tmp_path / "config"
    f.write_text(EXISTING)
    merge(f, server="https://127.0.0.1:1111")
    kubeconfig.merge("other", SERVER, CA, CERT, KEY, file=f)
    merge(f, server="https://127.0.0.1:2222")
    doc = parsed(f)
    for key in ("clusters", "users", "contexts"):
        assert names(doc, key)[-2:] == ["netlab-web", "netlab-other"]
    assert [c["cluster"]["server"] for c in doc["clusters"] if c["name"] == "netlab-web"] == ["https://127.0.0.1:2222"]
    assert doc["current-context"] == "netlab-web"


def test_merge_into_a_file_of_only_entries_adds_kinds_header(tmp_path):
    f = tmp_path / "config"
    f.write_text("clusters:\n- name: x\n  cluster: {server: https://192.0.2.1}\n")
    merge(f)
    doc = parsed(f)
    assert (doc["apiVersion"], doc["kind"], doc["preferences"]) == ("v1", "Config", {})
    assert names(doc, "clusters") == ["x", "netlab-web"]


def test_merge_keeps_a_files_mode_and_writes_through_a_symlink(tmp_path):
    real = tmp_path / "real-config"
    real.write_text(EXISTING)
    os.chmod(real, 0o640)
    link = tmp_path / "config"
    link.symlink_to(real)
    merge(link)
    assert link.is_symlink()
    assert names(parsed(real), "contexts")[-1] == "netlab-web"
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640


def test_merge_writes_the_first_existing_file_of_kubeconfig(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    b.write_text(EXISTING)
    monkeypatch.setenv("KUBECONFIG", f"{a}:{b}")
    assert kubeconfig.merge("web", SERVER, CA, CERT, KEY) == b
    assert not a.exists()
    assert parsed(b)["current-context"] == "netlab-web"


def test_a_held_lock_is_waited_for_then_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(kubeconfig, "LOCK_RETRY", 0)
    f = tmp_path / "config"
    f.write_text(EXISTING)
    (tmp_path / "config.lock").write_text("")                   # client-go's lock, held by another writer
    with pytest.raises(NetlabError, match=str(f)):
        merge(f)
    assert f.read_text() == EXISTING
    assert (tmp_path / "config.lock").exists()                  # not ours to remove


NOT_KUBECONFIGS = {
    "list": b"- a\n- b\n",
    "scalar": b"just some text\n",
    "clusters-mapping": b"clusters:\n  kind-kind: {server: x}\n",
    "entry-not-mapping": b"users:\n- kind-kind\n",
    "another-kind": b"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n",
    "bad-yaml": b"clusters: [unclosed\n",
    "not-utf8": b"\xff\xfe\x00c\x00l\x00",
}


@pytest.mark.parametrize("content", NOT_KUBECONFIGS.values(), ids=NOT_KUBECONFIGS.keys())
def test_a_file_that_is_not_a_kubeconfig_is_refused_unchanged(tmp_path, content):
    f = tmp_path / "config"
    f.write_bytes(content)
    with pytest.raises(NetlabError) as refused:
        merge(f)
    assert str(refused.value).startswith(f"{f} is not a kubeconfig: ")
    assert "\n" not in str(refused.value)
    with pytest.raises(NetlabError, match=str(f)):
        kubeconfig.remove("web", file=f)
    assert f.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["config"]


def test_an_empty_file_is_an_empty_kubeconfig(tmp_path):
    f = tmp_path / "config"
    f.write_text("# nothing yet\n")
    merge(f)
    assert parsed(f) == yaml.safe_load(kubeconfig.render("web", SERVER, CA, CERT, KEY))


# --- remove -----------------------------------------------------------------------------------

def test_remove_takes_exactly_the_three_entries_and_unsets_the_labs_context(tmp_path):
    f = tmp_path / "config"
    f.write_text(EXISTING)
    before = as_kubectl_reads(EXISTING)
    merge(f)
    assert kubeconfig.remove("web", file=f) is True
    after = parsed(f)
    # kind's Config omits an empty current-context: the key goes, as in kind's remove test
    assert "current-context" not in after
    assert after == {k: v for k, v in before.items() if k != "current-context"}


def test_remove_leaves_another_current_context(tmp_path):
    f = tmp_path / "config"
    f.write_text(EXISTING)
    merge(f)
    kubeconfig.merge("other", SERVER, CA, CERT, KEY, file=f)
    assert kubeconfig.remove("web", file=f) is True
    doc = parsed(f)
    assert doc["current-context"] == "netlab-other"
    for key in ("clusters", "users", "contexts"):
        assert "netlab-web" not in names(doc, key) and "netlab-other" in names(doc, key)


def test_remove_of_the_only_entries_leaves_kinds_empty_config(home):
    f = kubeconfig.merge("web", SERVER, CA, CERT, KEY)
    assert kubeconfig.remove("web") is True
    # kind's testRemoveKINDTrivial: what is left of a file that held only the cluster
    assert f.read_text() == "apiVersion: v1\nkind: Config\npreferences: {}\n"


def test_remove_without_entries_or_file_does_nothing(tmp_path, home):
    f = tmp_path / "config"
    f.write_text(EXISTING)
    st = os.stat(f)
    assert kubeconfig.remove("web", file=f) is False
    assert f.read_text() == EXISTING and os.stat(f).st_ino == st.st_ino
    assert kubeconfig.remove("web") is False
    assert not (home / ".kube").exists()


def test_remove_clears_every_file_of_kubeconfig(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    merge(a)
    merge(b)
    monkeypatch.setenv("KUBECONFIG", f"{a}:{b}")
    assert kubeconfig.remove("web") is True
    assert parsed(a) == parsed(b) == {"apiVersion": "v1", "kind": "Config", "preferences": {}}


# --- what the real kubectl reads ---------------------------------------------------------------

@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
def test_kubectl_reads_the_merged_file_and_sees_the_context_go(tmp_path):
    f = tmp_path / "config"
    f.write_text(EXISTING)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

    def kubectl(*args):
        return subprocess.run(["kubectl", "--kubeconfig", str(f), "config", *args], capture_output=True,
                              text=True, env=env, timeout=60)

    merge(f)
    assert kubectl("current-context").stdout == "netlab-web\n"
    assert kubectl("get-contexts", "-o", "name").stdout.split() == ["kind-kind", "netlab-web", "prod"]
    view = yaml.safe_load(kubectl("view", "--raw", "--minify").stdout)
    assert view["clusters"][0]["cluster"]["server"] == SERVER
    assert view["contexts"][0]["context"] == {"cluster": "netlab-web", "user": "netlab-web"}
    assert kubectl("view", "-o", "jsonpath={.users[?(@.name=='prod-admin')].user.exec.env[0].value}").stdout == \
        "2024-01-02T03:04:05Z"
    kubeconfig.remove("web", file=f)
    unset = kubectl("current-context")
    assert unset.returncode == 1 and "current-context is not set" in unset.stderr
    assert kubectl("get-contexts", "-o", "name").stdout.split() == ["kind-kind", "prod"]
