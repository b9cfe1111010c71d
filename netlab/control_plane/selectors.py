"""Label and field selectors as apimachinery parses them (labels.Parse, fields.ParseSelector).

A bad selector is a SelectorError, answered as the API answers it: 400 BadRequest.
"""

import re


class SelectorError(ValueError):
    pass


_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _split(text):
    """Requirements separated by commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def _check_key(key, text):
    if not _KEY.match(key) or len(key.rpartition("/")[2]) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in {text!r}")


def _check_value(value, text):
    if not _VALUE.match(value) or len(value) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label value {value!r} in {text!r}")


def parse_labels(text):
    """A predicate on a labels dict; an empty selector selects everything."""
    if not text or not text.strip():
        return lambda labels: True
    requirements = []
    for part in _split(text):
        m = re.match(r"^(\S+)\s+(in|notin)\s*\((.*)\)$", part)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            _check_key(key, text)
            for v in values:
                _check_value(v, text)
            requirements.append((key, op, values))
            continue
        m = re.match(r"^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$", part)
        if m:
            key, op, value = m.groups()
            _check_key(key, text)
            _check_value(value, text)
            requirements.append((key, "!=" if op == "!=" else "=", {value}))
            continue
        negate = part.startswith("!")
        key = part[1:].strip() if negate else part
        if not key:
            raise SelectorError(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        _check_key(key, text)
        requirements.append((key, "!" if negate else "exists", set()))
    return lambda labels: all(_holds(labels, r) for r in requirements)


def _holds(labels, requirement):
    key, op, values = requirement
    if op == "exists":
        return key in labels
    if op == "!":
        return key not in labels
    if op in ("=", "in"):
        return key in labels and labels[key] in values
    return key not in labels or labels[key] not in values      # != and notin


def parse_fields(text, supported):
    """[(field, op, value)] of a field selector; `supported`: the fields this resource takes
    (the API answers any other with 400, naming it)."""
    if not text or not text.strip():
        return []
    out = []
    for part in _split(text):
        m = re.match(r"^([^=!\s]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = m.groups()
        if field not in supported:
            raise SelectorError(f'field label not supported: {field}')
        out.append((field, "!=" if op == "!=" else "=", value))
    return out


def field_value(obj, path):
    """The value of a dotted field path (metadata.name, spec.nodeName) in an object, "" if absent."""
    v = obj
    for part in path.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return "" if v is None else str(v)


def fields_match(obj, requirements):
    return all((field_value(obj, f) == v) == (op == "=") for f, op, v in requirements)
