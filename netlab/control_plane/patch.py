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
            source = _pointer(o.get("from", ""))
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
    if isinstance(order, list):
        ranks = {json.dumps(o.get(key) if isinstance(o, dict) else o): i for i, o in enumerate(order)}
        out.sort(key=lambda x: ranks.get(json.dumps(x.get(key)), len(ranks)))
    return out


# --- server-side apply's field ownership -------------------------------------------------

def leaf_paths(value, prefix="", name=None):
    """{".spec.replicas": 3, '.spec.template.spec.containers[name="web"].image': ..., ...}: the
    fields an object sets. A list whose items carry its merge key is associative (an item per
    key, as structured-merge-diff keys containers by name); any other list is one field."""
    out = {}
    if isinstance(value, dict) and value:
        for k, v in value.items():
            out.update(leaf_paths(v, f"{prefix}.{k}", k))
    elif isinstance(value, list) and value and name and all(isinstance(x, dict) for x in value):
        key = _merge_key(name, prefix)
        if key is None or not all(key in x for x in value):
            out[prefix] = value
            return out
        for item in value:
            out.update(leaf_paths(item, f"{prefix}[{key}={json.dumps(item[key])}]"))
    else:
        out[prefix] = value
    return out


def fields_v1(paths):
    """managedFields' FieldsV1 of a set of leaf paths: {"f:spec": {"f:replicas": {}}, ...}."""
    import re
    root = {}
    for path in paths:
        node = root
        for field, key, item in re.findall(r'\.([^.\[]+)|\[([^=\]]+)=((?:"[^"]*")|[^\]]+)\]', path):
            name = f"f:{field}" if field else "k:" + json.dumps({key: json.loads(item)}, separators=(",", ":"))
            node = node.setdefault(name, {})
    return root


# Fields a request never owns: the server's own.
SERVER_FIELDS = (".metadata.resourceVersion", ".metadata.uid", ".metadata.creationTimestamp", ".metadata.generation",
                 ".metadata.managedFields", ".metadata.selfLink", ".status", ".apiVersion", ".kind",
                 ".metadata.name", ".metadata.namespace")


def owned_fields(obj):
    return {p: v for p, v in leaf_paths(obj).items() if not p.startswith(SERVER_FIELDS)}


def owners_of(managers, path):
    """The managers of one field ({path: [manager, ...]}; an older record kept one)."""
    owners = managers.get(path, [])
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
    write owns the fields it changed, alone."""
    live_fields = leaf_paths(live) if live else {}
    out = {p: owners_of(managers, p) for p in managers}
    if apply:
        for path in list(out):
            if path not in fields and manager in out[path]:
                out[path] = [o for o in out[path] if o != manager]
    for path, value in fields.items():
        if path in live_fields and live_fields[path] == value and apply:
            out[path] = out.get(path, []) + ([manager] if manager not in out.get(path, []) else [])
        else:
            out[path] = [manager]
    return {p: o for p, o in out.items() if o}
