"""kube-apiserver's pure parts, no lab: content negotiation of aggregated discovery, the field
paths of server-side apply, the three patch formats, the write path's field and metadata
validation, and the watch cache's snapshots and revisions over a real store.

Expected values are the real components': client-go's discovery Accept header, RFC 6902's own
examples and evanphx/json-patch's messages, apimachinery's strategicpatch test cases,
structured-merge-diff's field paths, and the decoders' and ObjectMeta validation's answers.
"""

import copy

import pytest

from netlab import names
from netlab.api.etcd import Store
from netlab.api.objects import ClusterState
from netlab.api.spec import ClusterConfig
from netlab.control_plane import kube_apiserver, patch, registry, writes
from netlab.control_plane.status import ApiError
from netlab.control_plane.watch_cache import WatchCache

# --- aggregated discovery: the version the client asked for ----------------------------------

# client-go's discovery client (discovery_client.go): AcceptV2, AcceptV2Beta1, AcceptV1, in that order.
V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"


@pytest.mark.parametrize("accept, version", [
    (V2BETA1, "v2beta1"),                                            # a client of 1.26-1.29 asks for v2beta1 only
    ("application/json; g=apidiscovery.k8s.io; v=v2beta1; as=APIGroupDiscoveryList", "v2beta1"),
    (f"{V2},{V2BETA1},application/json", "v2"),                      # kubectl 1.30's Accept
    (f"{V2BETA1},{V2},application/json", "v2beta1"),                 # the first the client lists
    ("application/json", None),                                      # legacy discovery
    ("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList,application/json", None),
], ids=["v2beta1", "v2beta1 with spaces", "kubectl 1.30", "v2beta1 first", "plain JSON", "an unknown version"])
def test_discovery_answers_the_version_the_accept_header_asks_for(accept, version):
    assert kube_apiserver.discovery_version(accept) == version


# --- server-side apply's field paths ---------------------------------------------------------

ODD_KEYS = {"a[b=c]": "x", "app.kubernetes.io/name": "web", "example.com/x.y": "z"}


def test_label_keys_with_dots_slashes_and_brackets_are_one_field_each():
    """structured-merge-diff names a map's key as one path element whatever it holds: a label
    `a[b=c]` (a valid annotation key shape too) must neither be parsed as a list item nor split at
    its dots, and must never raise (such a key used to fail every request of the server)."""
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": dict(ODD_KEYS),
                                                           "annotations": {"a[b=c]": "1"}}}
    owned = patch.owned_fields(obj)
    assert set(owned) == {("f:metadata", "f:labels", f"f:{k}") for k in ODD_KEYS} | \
        {("f:metadata", "f:annotations", "f:a[b=c]")}
    labels = patch.fields_v1(owned)["f:metadata"]["f:labels"]
    # (the real FieldsV1 may also hold "." for the map itself)
    assert {k: v for k, v in labels.items() if k != "."} == {f"f:{k}": {} for k in ODD_KEYS}
    assert sorted(patch.shown(p) for p in owned if p[1] == "f:labels") == [
        ".metadata.labels.a[b=c]", ".metadata.labels.app.kubernetes.io/name", ".metadata.labels.example.com/x.y"]


def test_an_associative_list_item_is_one_key_step_shown_as_the_server_shows_it():
    d = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}
    path = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"web"}', "f:image")
    assert path in patch.owned_fields(d)
    assert patch.shown(path) == '.spec.template.spec.containers[name="web"].image'
    item = patch.fields_v1(patch.owned_fields(d))["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert {k: v for k, v in item.items() if k != "."} == {"f:image": {}, "f:name": {}}


# --- JSON patch (RFC 6902) -------------------------------------------------------------------

RFC6902 = {   # Appendix A: the document, the patch, the result
    "A.1 add an object member": ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}],
                                 {"baz": "qux", "foo": "bar"}),
    "A.2 add an array element": ({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}],
                                 {"foo": ["bar", "qux", "baz"]}),
    "A.3 remove an object member": ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    "A.4 remove an array element": ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}],
                                    {"foo": ["bar", "baz"]}),
    "A.5 replace a value": ({"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}],
                            {"baz": "boo", "foo": "bar"}),
    "A.6 move a value": ({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
                         [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
                         {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
    "A.7 move an array element": ({"foo": ["all", "grass", "cows", "eat"]},
                                  [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
                                  {"foo": ["all", "cows", "eat", "grass"]}),
    "A.8 test success": ({"baz": "qux", "foo": ["a", 2, "c"]},
                         [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
                         {"baz": "qux", "foo": ["a", 2, "c"]}),
    "A.16 add an array value": ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
                                {"foo": ["bar", ["abc", "def"]]}),
}


@pytest.mark.parametrize("case", list(RFC6902))
def test_json_patch_gives_rfc_6902s_results(case):
    doc, ops, result = RFC6902[case]
    before = copy.deepcopy(doc)
    assert patch.json_patch(doc, ops) == result
    assert doc == before                                   # the served object is patched as a copy


def test_a_failed_test_operation_is_422_and_names_the_path():
    """A.9; evanphx/json-patch: "testing value /baz failed", which kube-apiserver answers 422."""
    with pytest.raises(patch.PatchError) as e:
        patch.json_patch({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}])
    assert (e.value.code, str(e.value)) == (422, "testing value /baz failed")


def test_adding_below_a_missing_member_is_422():
    """A.12: the target's parent must exist."""
    with pytest.raises(patch.PatchError) as e:
        patch.json_patch({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}])
    assert e.value.code == 422


@pytest.mark.parametrize("ops", [
    [{"op": "move", "path": "/b"}],                       # no from
    [{"op": "copy", "path": "/b"}],
    [{"op": "add", "path": 5, "value": 1}],               # a path that is not a string
    [{"op": "remove", "path": ["a"]}],
    [{"op": "move", "from": None, "path": "/b"}],
], ids=["move without from", "copy without from", "numeric path", "list path", "null from"])
def test_a_malformed_operation_is_a_patch_error_never_another_exception(ops):
    """kube-apiserver answers each with a Status (400 or 422), never an internal error."""
    with pytest.raises(patch.PatchError) as e:
        patch.json_patch({"a": 1}, ops)
    assert e.value.code in (400, 422)


def test_a_path_that_is_not_a_string_is_400():
    """kube-apiserver decodes a JSON patch strictly into {op, path, from: string} first (the
    default fieldValidation, Warn, does): "error decoding patch", 400."""
    with pytest.raises(patch.PatchError) as e:
        patch.json_patch({"a": 1}, [{"op": "add", "path": 5, "value": 1}])
    assert e.value.code == 400


def test_a_move_without_from_is_422_as_the_real_server_answers():
    """kube-apiserver's jsonpatch.Apply fails ("missing from field") and its error is 422
    (handlers/patch.go applyJSPatch)."""
    with pytest.raises(patch.PatchError) as e:
        patch.json_patch({"a": 1}, [{"op": "move", "path": "/b"}])
    assert e.value.code == 422


# --- strategic merge patch -------------------------------------------------------------------

def pod_template(*containers):
    return {"spec": {"template": {"spec": {"containers": [dict(c) for c in containers]}}}}


WEB = {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}
SIDECAR = {"name": "sidecar", "image": "busybox:1.36"}


def test_containers_are_merged_by_name():
    live = pod_template(WEB, SIDECAR)
    patched = patch.strategic_merge_patch(live, pod_template({"name": "sidecar", "image": "busybox:1.37"}))
    assert patched == pod_template(WEB, {"name": "sidecar", "image": "busybox:1.37"})
    assert live == pod_template(WEB, SIDECAR)


def test_an_item_a_patch_adds_comes_first_without_set_element_order():
    """strategicpatch prepends the items a patch adds to a merged list (kubectl sends
    $setElementOrder when it wants another order); the live items keep theirs."""
    extra = {"name": "extra", "image": "busybox:1.36"}
    patched = patch.strategic_merge_patch(pod_template(WEB, SIDECAR), pod_template(extra, {"name": "web", "tty": True}))
    assert patched == pod_template(extra, {**WEB, "tty": True}, SIDECAR)
    ordered = patch.strategic_merge_patch(pod_template(WEB, SIDECAR), {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}, {"name": "extra"}],
        "containers": [extra]}}}})
    assert ordered == pod_template(WEB, SIDECAR, extra)


def test_patch_delete_removes_one_item_of_a_merged_list():
    """"delete map from merging list": the item named by its merge key goes, the rest stays."""
    patched = patch.strategic_merge_patch(pod_template(WEB, SIDECAR),
                                          pod_template({"name": "sidecar", "$patch": "delete"}))
    assert patched == pod_template(WEB)


def test_retain_keys_clears_the_fields_it_does_not_list():
    """A Deployment's strategy is patchStrategy retainKeys: kubectl apply's switch to Recreate
    clears rollingUpdate ("retainKeys map adds a field and clear a field")."""
    live = {"spec": {"replicas": 2, "strategy": {"type": "RollingUpdate",
                                                 "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}}
    patched = patch.strategic_merge_patch(live, {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}})
    assert patched == {"spec": {"replicas": 2, "strategy": {"type": "Recreate"}}}


# --- server-side apply's owners --------------------------------------------------------------

LABEL_A, LABEL_B = ("f:metadata", "f:labels", "f:a"), ("f:metadata", "f:labels", "f:b")
REPLICAS = ("f:spec", "f:replicas")


def test_an_apply_releases_what_it_alone_owned_and_keeps_what_another_manager_co_owns():
    """structured-merge-diff: a field an applier's configuration no longer holds is no longer its
    own; with no owner left the field is removed from the object; one another manager owns too
    stays, owned by that manager."""
    live = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 3}}
    managers = {patch.key_of(LABEL_A): ["one|Apply"], patch.key_of(LABEL_B): ["one|Apply", "two|Apply"],
                patch.key_of(REPLICAS): ["one|Apply"]}
    after, released = patch.owned_after(managers, "one|Apply", {REPLICAS: 3}, live, apply=True)
    assert released == [LABEL_A]
    assert after == {patch.key_of(LABEL_B): ["two|Apply"], patch.key_of(REPLICAS): ["one|Apply"]}


def test_an_apply_of_the_value_another_manager_set_shares_the_field():
    live = {"spec": {"replicas": 3}}
    after, released = patch.owned_after({patch.key_of(REPLICAS): ["two|Apply"]}, "one|Apply", {REPLICAS: 3}, live,
                                        apply=True)
    assert released == []
    assert after == {patch.key_of(REPLICAS): ["two|Apply", "one|Apply"]}


# --- the write path's validation ---------------------------------------------------------------

def test_unknown_fields_are_found_at_any_depth_of_a_deployment():
    d = {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "labels": {"any-key": "x"}, "annotations": {"a/b": "c"}, "colour": "red"},
         "spec": {"replica": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "web", "image": "nginx"},
                                                       {"name": "b", "image": "x", "imagePullPolcy": "Always",
                                                        "ports": [{"containerPort": 80, "hostport": 1}]}],
                                        "nodeSelector": {"disk": "ssd"}}}}}
    # sigs.k8s.io/json's strict decoding names them by their paths, list items by index
    assert sorted(writes.unknown_fields(d, "V1Deployment")) == [
        "metadata.colour", "spec.replica", "spec.template.spec.containers[1].imagePullPolcy",
        "spec.template.spec.containers[1].ports[0].hostport"]


def test_unknown_fields_of_a_service_and_none_in_a_valid_one():
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "type": "NodePort",
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]}}
    assert writes.unknown_fields(svc, "V1Service") == []
    svc["spec"]["ports"][0]["nodeport"] = 30081
    svc["spec"]["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10, "timeout": 1}}
    assert sorted(writes.unknown_fields(svc, "V1Service")) == [
        "spec.ports[0].nodeport", "spec.sessionAffinityConfig.clientIP.timeout"]


DEPLOYMENTS = registry.find("apps", "v1", "deployments")


def test_a_label_key_that_is_not_a_qualified_name_is_422():
    with pytest.raises(ApiError) as e:
        writes.check_metadata(DEPLOYMENTS, {"name": "web", "labels": {"app": "web", "a[b=c]": "x"}})
    assert e.value.code == 422 and e.value.reason == "Invalid"
    assert e.value.message.startswith('Deployment "web" is invalid: metadata.labels: Invalid value: "a[b=c]": ')
    assert e.value.details["causes"][0]["field"] == "metadata.labels"


@pytest.mark.parametrize("meta", [
    {"name": "web", "annotations": {"replicas": 3}},
    {"name": "web", "annotations": {"x": None}},
    {"name": "web", "labels": {"app": ["web"]}},
    {"name": "web", "annotations": ["a"]},
], ids=["a number", "null", "a list label", "a list of annotations"])
def test_labels_and_annotations_that_are_not_maps_of_strings_are_400(meta):
    """ObjectMeta's labels and annotations are map[string]string: the decoder refuses anything
    else before validation runs, 400 BadRequest."""
    with pytest.raises(ApiError) as e:
        writes.check_metadata(DEPLOYMENTS, meta)
    assert e.value.code == 400


def test_qualified_label_keys_and_valid_values_pass():
    writes.check_metadata(DEPLOYMENTS, {"name": "web", "labels": {"app.kubernetes.io/name": "web", "tier": "",
                                                                  "example.com/x_y.z": "A-1.b_2"},
                                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                                        "note": "any text: [b=c], spaces, UTF-8 \u00e9"}})


# --- the watch cache: snapshots and revisions over a real store -------------------------------------

NAMESPACES = registry.find("", "v1", "namespaces")
CREATED = "2025-01-01T00:00:00Z"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(names, "STATE_ROOT", tmp_path / "netlab")
    return Store("lab1")


class Namespaces:
    """A lab's state with namespaces only, saved by the real store, and a WatchCache over it
    whose rendering also shows a phase the record does not hold (as a pod's phase follows its
    process, not its record)."""

    def __init__(self, store):
        self.store = store
        self.state = ClusterState("lab1", ClusterConfig())
        self.phase = {}
        self.cache = WatchCache("lab1", [NAMESPACES], self.render)

    def render(self, state):
        return {"namespaces": [{"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": n, "labels": dict(r["labels"]), "creationTimestamp": r["created"]},
                                "status": {"phase": self.phase.get(n, "Active")}}
                               for n, r in sorted(state.namespaces.items())]}

    def save(self, **namespaces):
        """Set (a dict of labels) or remove (None) namespaces, and save."""
        for name, labels in namespaces.items():
            if labels is None:
                self.state.namespaces.pop(name)
            else:
                self.state.namespaces[name] = {"labels": labels, "created": CREATED}
        self.store.save(self.state)
        return self.state.revision


def rv(obj):
    return int(obj["metadata"]["resourceVersion"])


def test_each_refresh_makes_one_snapshot_whose_history_holds_the_changes(store):
    ns = Namespaces(store)
    ns.save(a={})
    assert ns.cache.refresh()
    first = ns.cache.snapshot
    assert first.revision == 1 and [o["metadata"]["name"] for o in first.list("namespaces")] == ["a"]
    assert first.since("namespaces", first.revision) == []

    r2 = ns.save(b={})
    assert ns.cache.refresh()
    second = ns.cache.snapshot
    assert second is not first and second.revision == r2 == 2
    assert [o["metadata"]["name"] for o in first.list("namespaces")] == ["a"]     # a snapshot never changes
    assert first.get("namespaces", "", "b") is None and first.revision == 1
    assert [(c.type, c.new["metadata"]["name"], c.revision) for c in second.since("namespaces", 1)] == \
        [("ADDED", "b", 2)]
    assert rv(second.get("namespaces", "", "b")) == 2 and rv(second.get("namespaces", "", "a")) == 1

    r3 = ns.save(a={"team": "x"})
    assert ns.cache.refresh()
    third = ns.cache.snapshot
    assert third.revision == r3 == 3
    [change] = third.since("namespaces", 2)
    assert (change.type, change.revision, rv(change.old), rv(change.new)) == ("MODIFIED", 3, 1, 3)
    assert change.old["metadata"]["labels"] == {} and change.new["metadata"]["labels"] == {"team": "x"}
    assert [(c.type, c.revision) for c in third.since("namespaces", 1)] == [("ADDED", 2), ("MODIFIED", 3)]
    assert [(c.type, c.revision) for c in second.since("namespaces", 1)] == [("ADDED", 2)]

    assert not ns.cache.refresh()                        # nothing changed: the same snapshot
    assert ns.cache.snapshot is third


def test_a_deleted_change_carries_the_last_object_at_the_deletions_revision(store):
    """The cacher's DELETED event: the object as it last was, its resourceVersion the revision
    of the deletion (what a watcher resumes from)."""
    ns = Namespaces(store)
    ns.save(a={}, b={"team": "y"})
    ns.cache.refresh()
    before = ns.cache.snapshot
    r = ns.save(b=None)
    ns.cache.refresh()
    after = ns.cache.snapshot
    [change] = after.since("namespaces", before.revision)
    assert (change.type, change.revision, after.revision) == ("DELETED", r, r)
    assert change.old == before.get("namespaces", "", "b")
    assert rv(change.new) == r > rv(change.old)
    assert {**change.new, "metadata": {**change.new["metadata"], "resourceVersion": None}} == \
        {**change.old, "metadata": {**change.old["metadata"], "resourceVersion": None}}
    assert after.get("namespaces", "", "b") is None


def test_a_rendering_that_changes_without_its_record_gets_a_new_higher_revision(store):
    """An object whose served form changed while its key was not written (a phase computed from
    a process) is a MODIFIED at a revision of its own, newer than every one before: a watcher
    resuming from the old resourceVersion must see it, and a list after it must not show the
    old resourceVersion with the new content."""
    ns = Namespaces(store)
    ns.save(a={})
    ns.cache.refresh()
    before = ns.cache.snapshot
    ns.phase["a"] = "Terminating"
    ns.store.save(ns.state)                              # the same record, written again: no new store revision
    assert ns.state.revision == before.revision
    assert ns.cache.refresh()
    after = ns.cache.snapshot
    a = after.get("namespaces", "", "a")
    assert a["status"]["phase"] == "Terminating"
    assert rv(a) > rv(before.get("namespaces", "", "a")) and rv(a) == after.revision > before.revision
    [change] = after.since("namespaces", before.revision)
    assert (change.type, change.revision, rv(change.new)) == ("MODIFIED", after.revision, after.revision)
