"""The API server's PATCH: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge
patch (apimachinery's strategicpatch, with the merge keys of k8s.io/api's types) and the field
ownership server-side apply checks (structured-merge-diff's managed fields, on leaf paths).

Pure functions of JSON values. A patch that cannot apply is a PatchError: 422 or 400 as the
real server answers.
"""

import copy
import json


class PatchError(ValueError):
    def __init__(self, message, code=422):
        super().__init__(message)
        self.code = code


# --- RFC 7386 ----------------------------------------------------------------------------

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# --- RFC 6902 ----------------------------------------------------------------------------

def _pointer(path):
    if not isinstance(path, str):
        raise PatchError(f"invalid JSON pointer {json.dumps(path)}: must be a string", 400)
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}: must start with /", 400)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts, op):
    for p in parts:
        if isinstance(doc, dict) and p in doc:
            doc = doc[p]
        elif isinstance(doc, list) and p.isdigit() and int(p) < len(doc):
            doc = doc[int(p)]
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: /{'/'.join(parts)}")
    return doc


def _put(doc, parts, value, op, insert):
    parent = _walk(doc, parts[:-1], op)
    last = parts[-1]
    if isinstance(parent, dict):
        if not insert and last not in parent:
            raise PatchError(f"{op} operation does not apply: doc is missing key: /{'/'.join(parts)}")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and insert:
            parent.append(value)
            return
        if not last.isdigit() or int(last) > len(parent) - (0 if insert else 1):
            raise PatchError(f"{op} operation does not apply: index out of range: /{'/'.join(parts)}")
        if insert:
            parent.insert(int(last), value)
        else:
            parent[int(last)] = value
    else:
        raise PatchError(f"{op} operation does not apply: /{'/'.join(parts[:-1])} is not a container")


def _remove(doc, parts, op):
    parent = _walk(doc, parts[:-1], op)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError(f"{op} operation does not apply: doc is missing path: /{'/'.join(parts)}")


def json_patch(target, operations):
    if not isinstance(operations, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch", 400)
    doc = copy.deepcopy(target)
    for o in operations:
        if not isinstance(o, dict) or "op" not in o or "path" not in o:
            raise PatchError("each JSON patch operation needs op and path", 400)
        op, parts = o["op"], _pointer(o["path"])
        if op in ("add", "replace", "test") and "value" not in o:
            raise PatchError(f"{op} operation needs a value", 400)
        if not parts:
            if op in ("add", "replace"):
                doc = copy.deepcopy(o["value"])
                continue
            raise PatchError(f"{op} operation on the whole document is not allowed")
        if op == "add":
            _put(doc, parts, copy.deepcopy(o["value"]), op, insert=True)
        elif op == "replace":
            _put(doc, parts, copy.deepcopy(o["value"]), op, insert=False)
        elif op == "remove":
            _remove(doc, parts, op)
        elif op in ("move", "copy"):
            if not isinstance(o.get("from"), str):        # the json-patch library fails it when applied: 422
                raise PatchError(f"{op} operation does not apply: missing from path")
            source = _pointer(o["from"])
            if not source:
                raise PatchError(f"{op} operation from the whole document is not allowed")
            value = _remove(doc, source, op) if op == "move" else copy.deepcopy(_walk(doc, source, op))
            _put(doc, parts, value, op, insert=True)
        elif op == "test":
            if _walk(doc, parts, op) != o["value"]:
                raise PatchError(f"testing value /{'/'.join(parts)} failed")
        else:
            raise PatchError(f"Unexpected kind: {op}", 400)
    return doc


# --- strategic merge patch ---------------------------------------------------------------

# patchMergeKey of the list fields k8s.io/api declares one for (the rest are replaced whole).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
              "imagePullSecrets": "name", "env": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
              "ownerReferences": "uid", "conditions": "type", "hostAliases": "ip", "readinessGates": "conditionType"}
# Primitive lists whose patchStrategy is merge.
MERGED_PRIMITIVES = {"finalizers"}


def _merge_key(name, path):
    if name == "ports":
        return "containerPort" if "containers" in path or "initContainers" in path else "port"
    return MERGE_KEYS.get(name)


def strategic_merge_patch(target, patch, path=()):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if k.startswith("$setElementOrder/") or k.startswith("$deleteFromPrimitiveList/"):
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list):
            out[k] = _merge_list(out.get(k), v, k, path + (k,), patch.get(f"$deleteFromPrimitiveList/{k}"),
                                 patch.get(f"$setElementOrder/{k}"))
        else:
            merged = strategic_merge_patch(out.get(k), v, path + (k,))
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
    for k, v in patch.items():
        if k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            out[name] = [x for x in out.get(name, []) if x not in v]
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(current, patch, name, path, delete_primitives=None, order=None):
    key = _merge_key(name, path)
    current = current if isinstance(current, list) else []
    if key is None or not all(isinstance(x, dict) for x in patch):
        if name in MERGED_PRIMITIVES:
            return current + [x for x in patch if x not in current]
        return copy.deepcopy(patch)
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy({k: v for k, v in x.items() if k != "$patch"}) for x in patch
                if not (isinstance(x, dict) and x.get("$patch") == "replace" and len(x) == 1)]
    out = [copy.deepcopy(x) for x in current]
    for item in patch:
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        index = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
            continue
        if index is None:
            out.append(strategic_merge_patch({}, item, path))
        else:
            out[index] = strategic_merge_patch(out[index], item, path)
    if not isinstance(order, list):
        # No $setElementOrder: the items the live list did not have come first, in the patch's
        # order, then the live ones in theirs (strategicpatch prepends what a patch adds).
        live_keys = {json.dumps(x.get(key)) for x in current if isinstance(x, dict)}
        added = [x for x in out if json.dumps(x.get(key)) not in live_keys]
        return added + [x for x in out if json.dumps(x.get(key)) in live_keys]
    ranks = {json.dumps(o.get(key) if isinstance(o, dict) else o): i for i, o in enumerate(order)}
    out.sort(key=lambda x: ranks.get(json.dumps(x.get(key)), len(ranks)))
    return out


# --- server-side apply's field ownership -------------------------------------------------
# A field is a path of steps, as structured-merge-diff's FieldsV1 names them: "f:<field>" for
# a field of a map, "k:<key as JSON>" for an item of an associative list (containers keyed by
# name). Paths are kept as JSON arrays of those steps: any key (a label named a[b]=c, an
# annotation with dots) stays one step.

def leaf_paths(value, prefix=(), name=None):
    """{("f:spec", "f:replicas"): 3, ...}: the fields an object sets. A list whose items carry
    its merge key is associative (an item per key); any other list is one field."""
    out = {}
    if isinstance(value, dict) and value:
        for k, v in value.items():
            out.update(leaf_paths(v, prefix + (f"f:{k}",), k))
    elif isinstance(value, list) and value and name and all(isinstance(x, dict) for x in value):
        key = _merge_key(name, [p[2:] for p in prefix])
        if key is None or not all(key in x for x in value):
            out[prefix] = value
            return out
        for item in value:
            out.update(leaf_paths(item, prefix + ("k:" + json.dumps({key: item[key]}, separators=(",", ":")),)))
    else:
        out[prefix] = value
    return out


def shown(path):
    """A path as the API's messages print it: .spec.template.spec.containers[name="web"].image"""
    out = ""
    for step in path:
        if step.startswith("f:"):
            out += "." + step[2:]
        else:
            (k, v), = json.loads(step[2:]).items()
            out += f"[{k}={json.dumps(v)}]"
    return out


def fields_v1(paths):
    """managedFields' FieldsV1 of a set of paths: {"f:spec": {"f:replicas": {}}, ...}."""
    root = {}
    for path in paths:
        node = root
        for step in path:
            node = node.setdefault(step, {})
    return root


# Fields a request never owns: the server's own.
SERVER_FIELDS = {("f:metadata", f"f:{f}") for f in ("resourceVersion", "uid", "creationTimestamp", "generation",
                                                     "managedFields", "selfLink", "name", "namespace")}


def owned_fields(obj):
    return {p: v for p, v in leaf_paths(obj).items()
            if p[:1] not in (("f:status",), ("f:apiVersion",), ("f:kind",)) and p[:2] not in SERVER_FIELDS}


def key_of(path):
    return json.dumps(list(path))


def owners_of(managers, path):
    """The managers of one field ({path key: [manager, ...]})."""
    owners = managers.get(key_of(path), [])
    return [owners] if isinstance(owners, str) else list(owners)


def conflicts(managers, manager, applied, live):
    """The fields an apply by `manager` would change that another manager owns:
    [(path, owner)]. A field applied with the value it has is shared, never a conflict."""
    live_fields = leaf_paths(live)
    out = []
    for path, value in owned_fields(applied).items():
        if path in live_fields and live_fields[path] != value:
            out += [(path, owner) for owner in owners_of(managers, path) if owner != manager]
    return out


def owned_after(managers, manager, fields, live, apply):
    """managedFields after a write by `manager` of `fields` ({path: value}): an apply owns what it
    sent (shared where the value is unchanged) and lets go of what it no longer sends; any other
    write owns the fields it changed, alone. Returns (managers, the paths the apply let go of
    that nobody else owns: server-side apply removes those fields)."""
    live_fields = leaf_paths(live) if live else {}
    out = {k: owners_of(managers, json.loads(k)) for k in managers}
    released = []
    if apply:
        for k in list(out):
            path = tuple(json.loads(k))
            if path not in fields and manager in out[k]:
                out[k] = [o for o in out[k] if o != manager]
                if not out[k]:
                    released.append(path)
    for path, value in fields.items():
        k = key_of(path)
        if apply and path in live_fields and live_fields[path] == value:
            out[k] = out.get(k, []) + ([manager] if manager not in out.get(k, []) else [])
        else:
            out[k] = [manager]
    return {k: o for k, o in out.items() if o}, released


def remove_path(obj, path):
    """Remove one field (a path of steps) from an object, if it is there."""
    node = obj
    for step in path[:-1]:
        node = _step(node, step)
        if node is None:
            return
    last = path[-1]
    if last.startswith("f:") and isinstance(node, dict):
        node.pop(last[2:], None)
    elif isinstance(node, list):
        (k, v), = json.loads(last[2:]).items()
        node[:] = [x for x in node if not (isinstance(x, dict) and x.get(k) == v)]


def _step(node, step):
    if step.startswith("f:"):
        return node.get(step[2:]) if isinstance(node, dict) else None
    (k, v), = json.loads(step[2:]).items()
    return next((x for x in node if isinstance(x, dict) and x.get(k) == v), None) if isinstance(node, list) else None


def overlay(body, rendered):
    """`rendered` over `body`: mappings merged, a list of mappings merged item by item when both
    hold the same number, anything else as rendered. What the API serves of a stored object:
    the fields its request wrote that netlab does not model, under the ones netlab computes."""
    if body is None:
        return rendered
    if isinstance(body, dict) and isinstance(rendered, dict):
        out = dict(body)
        for k, v in rendered.items():
            out[k] = overlay(body.get(k), v)
        return out
    if isinstance(body, list) and isinstance(rendered, list) and len(body) == len(rendered) and \
            all(isinstance(x, dict) for x in body + rendered):
        return [overlay(b, r) for b, r in zip(body, rendered)]
    return rendered
