"""What kind does to the user's kubeconfig: `kind create cluster` adds and selects the cluster's
entries, `kind delete cluster` removes them, `kind get kubeconfig` prints them; here for the
context netlab-<lab> (kind's is kind-<name>).

kind's rules, as sigs.k8s.io/kind pkg/cluster/internal/kubeconfig has them: the files are those
of $KUBECONFIG (split on ':', empty and repeated entries dropped) or else $HOME/.kube/config; it
merges into the first of them that exists, or the last one when none does (kubectl's rule for
new stanzas), and removes from every one of them. The cluster, the user and the context share one
name; an entry of that name is replaced where it stands, otherwise appended; current-context is
set on create, and on delete unset only when it names the cluster (kind's Config type omits an
empty current-context, so the key goes). A file is locked as client-go locks it: <file>.lock
created with O_EXCL (kind retries five times, 100 ms apart) and removed afterwards.

Unlike kind, which rewrites the whole file through its own types, every key, entry and
preference netlab does not own is written back as it was read, in its order; the file is
replaced atomically and keeps its mode and owner (0600 and a 0700 directory when netlab creates
them).
"""

import base64
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from netlab.errors import NetlabError

ENV = "KUBECONFIG"
LOCK_ATTEMPTS = 5                   # kind's lockFileRetryAttemps
LOCK_RETRY = 0.1                    # seconds between attempts, as kind
LISTS = ("clusters", "users", "contexts")


def context_name(lab):
    return f"netlab-{lab}"


def _paths():
    """The kubeconfig files kubectl and kind consider, in order."""
    seen = []
    for p in os.environ.get(ENV, "").split(os.pathsep):
        if p and p not in seen:
            seen.append(p)
    if seen:
        return [Path(p) for p in seen]
    return [Path(os.environ.get("HOME") or Path.home()) / ".kube" / "config"]


def path():
    """The file `kind create cluster` writes: the only candidate, else the first of $KUBECONFIG
    that exists, else its last entry."""
    candidates = _paths()
    if len(candidates) == 1:
        return candidates[0]
    for p in candidates:
        if p.is_file():
            return p
    return candidates[-1]


# --- the documents --------------------------------------------------------------------------

def _b64(pem):
    return base64.b64encode(pem.encode() if isinstance(pem, str) else bytes(pem)).decode()


def _entries(lab, server, ca_pem, cert_pem, key_pem):
    name = context_name(lab)
    return {
        "clusters": {"cluster": {"certificate-authority-data": _b64(ca_pem), "server": server}, "name": name},
        "users": {"name": name, "user": {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}},
        "contexts": {"context": {"cluster": name, "user": name}, "name": name},
    }


def _document(lab, server, ca_pem, cert_pem, key_pem):
    e = _entries(lab, server, ca_pem, cert_pem, key_pem)
    # kind's layout: sigs.k8s.io/yaml sorts the keys
    return {"apiVersion": "v1", "clusters": [e["clusters"]], "contexts": [e["contexts"]],
            "current-context": context_name(lab), "kind": "Config", "preferences": {}, "users": [e["users"]]}


class _Loader(yaml.SafeLoader):
    """YAML as kubectl reads a kubeconfig (sigs.k8s.io/yaml over yaml.v2: YAML 1.1, so `on` is a
    boolean there too), except that timestamps stay the strings yaml.v2 keeps them as: PyYAML would
    make them datetimes and write them back in another form."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True                 # anchors of the file are written out expanded: the same values


def _dump(doc):
    return yaml.dump(doc, Dumper=_Dumper, default_flow_style=False, sort_keys=False, allow_unicode=True,
                     width=1 << 16)


def render(lab, server, ca_pem, cert_pem, key_pem):
    """A complete kubeconfig holding only this lab's cluster, user and context, made current, as
    `kind get kubeconfig` prints one."""
    return _dump(_document(lab, server, ca_pem, cert_pem, key_pem))


def _read(file):
    """The file's document (an empty one if the file is missing or empty), or NetlabError naming
    the file when it is not a kubeconfig."""
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise NetlabError(f"{file} is not a kubeconfig: it is not UTF-8 text") from None
    except OSError as e:
        raise NetlabError(f"{file} cannot be read: {e.strerror or e}") from e
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise NetlabError(f"{file} is not a kubeconfig: {problem}{at}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise NetlabError(f"{file} is not a kubeconfig: its top level is a {_kind(doc)}, not a mapping")
    if doc.get("kind") not in (None, "Config") or doc.get("apiVersion") not in (None, "v1"):
        raise NetlabError(f"{file} is not a kubeconfig: it is a {doc.get('apiVersion')} {doc.get('kind')}, "
                          f"not a v1 Config")
    for key in LISTS:
        entries = doc.get(key)
        if entries is not None and (not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries)):
            raise NetlabError(f"{file} is not a kubeconfig: {key} is not a list of mappings")
    if not isinstance(doc.get("current-context", ""), (str, type(None))):
        raise NetlabError(f"{file} is not a kubeconfig: current-context is not a string")
    return doc


def _kind(value):
    return {list: "list", str: "string"}.get(type(value), type(value).__name__)


def _write(file, doc):
    """Replace `file` with `doc` atomically, keeping the mode and owner of the file it replaces
    (through a symlink, as kind's os.WriteFile writes through one)."""
    target = Path(os.path.realpath(file))
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")    # O_EXCL, mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_dump(doc))
            f.flush()
            if st is not None:
                os.fchmod(f.fileno(), st.st_mode & 0o7777)
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(file):
    """client-go's lock: <file>.lock created with O_EXCL, removed after."""
    lock = Path(f"{file}.lock")
    for attempt in range(LOCK_ATTEMPTS):
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            break
        except FileExistsError:
            if attempt == LOCK_ATTEMPTS - 1:
                raise NetlabError(f"{file} is locked by {lock}: another kubectl or kind is writing it, "
                                  f"or one left the lock behind and it can be removed") from None
            time.sleep(LOCK_RETRY)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


# --- what `kind create cluster` and `kind delete cluster` do ---------------------------------------

def merge(lab, server, ca_pem, cert_pem, key_pem, file=None):
    """Add or replace the lab's cluster, user and context (netlab-<lab>) in `file` (default path())
    and make the context current; everything else in the file stays as it was. Returns the file.
    A file that is not a kubeconfig is refused with NetlabError and left unchanged."""
    file = Path(file) if file is not None else path()
    try:
        if not file.parent.is_dir():
            file.parent.mkdir(mode=0o700, parents=True)
        with _locked(file):
            existing = _read(file)
            if not existing:
                doc = _document(lab, server, ca_pem, cert_pem, key_pem)
            else:
                doc = dict(existing)
                name = context_name(lab)
                for key, entry in _entries(lab, server, ca_pem, cert_pem, key_pem).items():
                    entries = list(doc.get(key) or [])
                    if any(e.get("name") == name for e in entries):
                        doc[key] = [entry if e.get("name") == name else e for e in entries]
                    else:
                        doc[key] = entries + [entry]
                doc["current-context"] = name
                if not set(doc) - set(LISTS) - {"current-context"}:
                    # kind adds these only to a file that has no other field (kind issue 1242)
                    doc.update({"apiVersion": "v1", "kind": "Config", "preferences": {}})
            if doc != existing or not file.exists():
                _write(file, doc)
    except OSError as e:
        raise NetlabError(f"{file} cannot be written: {e.strerror or e}") from e
    return file


def remove(lab, file=None):
    """Remove the lab's cluster, user and context from `file`, or from every kubeconfig file
    (kind removes from each of $KUBECONFIG's); unset current-context where it was the lab's.
    Nothing else changes. Returns whether any file changed; a missing file is left missing.
    A file that is not a kubeconfig is refused with NetlabError, unchanged (kind's `delete cluster`
    reports that and deletes the cluster anyway: the caller decides)."""
    name = context_name(lab)
    changed = False
    for f in [Path(file)] if file is not None else _paths():
        if not f.is_file():
            continue
        try:
            with _locked(f):
                doc = dict(_read(f))
                before = dict(doc)
                for key in LISTS:
                    if doc.get(key):
                        kept = [e for e in doc[key] if e.get("name") != name]
                        if len(kept) != len(doc[key]):
                            if kept:
                                doc[key] = kept
                            else:
                                del doc[key]        # as kind writes it: an emptied list is omitted
                if doc.get("current-context") == name:
                    del doc["current-context"]
                if doc != before:
                    _write(f, doc)
                    changed = True
        except OSError as e:
            raise NetlabError(f"{f} cannot be written: {e.strerror or e}") from e
    return changed
