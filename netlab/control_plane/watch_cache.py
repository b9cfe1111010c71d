"""kube-apiserver's watch cache (the cacher): the API objects of the lab's state, kept
rendered in memory, and the changes between revisions, kept for watches.

The store (netlab.api.etcd) gives every key a mod revision and the state a revision, as etcd
does. The cache follows the state file: when it changes, it renders every object again and
compares with what it had, and each difference becomes a watch event at the state's
revision. An object's resourceVersion is its key's mod revision (what a write's precondition
is checked against); an object the store does not keep (a ReplicaSet, a DaemonSet, an
Event) gets the revision at which the cache saw it change. Changes a watcher asks for from a
revision older than the cache's history are gone (410), as the real cache answers.
"""

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from types import SimpleNamespace

from netlab.api.apiserver import object_uid
from netlab.api.etcd import REGISTRY, Store

HISTORY = 5000           # events kept for watches (the real cache sizes itself; 100 per resource at least)


@dataclass(frozen=True)
class Change:
    revision: int
    plural: str
    type: str            # ADDED MODIFIED DELETED
    old: dict | None
    new: dict | None


def _strip(obj):
    meta = obj.get("metadata", {})
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}


_KEYS = dict(REGISTRY)


def storage_key(resource, obj):
    """The etcd key of an object of a stored resource (None for one the store does not keep)."""
    meta = obj["metadata"]
    if resource.plural == "namespaces":
        return f"/registry/namespaces/{meta['name']}"
    if resource.stored is None:
        return None
    return _KEYS[resource.stored](SimpleNamespace(name=meta["name"], namespace=meta.get("namespace", "")))


class WatchCache:
    def __init__(self, lab, resources, render):
        """render(state) -> {plural: [object]} for every resource of `resources`."""
        self.lab = lab
        self.store = Store(lab)
        self.resources = {r.plural: r for r in resources}
        self.render = render
        self.objects = {r.plural: {} for r in resources}     # plural -> {(namespace, name): object}
        self.revision = 0
        self.oldest = None          # the revision from which the history is complete
        self.history = deque()
        self.state = None
        self.mtime = None
        self.lock = threading.Lock()
        self.loop = None
        self.changed = None

    def attach(self, loop):
        self.loop = loop
        self.changed = asyncio.Event()

    def refresh(self, force=False):
        """Load the state if its file changed; returns True when it did. Thread-safe."""
        with self.lock:
            mtime = self.store.path.stat().st_mtime_ns
            if mtime == self.mtime and not force:
                return False
            state = self.store.load()
            rendered = self.render(state)
            revision = max(state.revision, self.revision)
            changes = []
            for plural, objs in rendered.items():
                resource = self.resources[plural]
                old_all = self.objects[plural]
                new_all = {}
                for obj in objs:
                    meta = obj["metadata"]
                    k = (meta.get("namespace", ""), meta["name"])
                    key = storage_key(resource, obj)
                    meta.setdefault("uid", object_uid(self.lab, plural, k[0], k[1], meta.get("creationTimestamp")))
                    old = old_all.get(k)
                    if key is not None and key in state.revisions:
                        rv = state.revisions[key][0]
                    elif old is not None and _strip(old) == _strip(obj):
                        rv = int(old["metadata"]["resourceVersion"])
                    else:
                        rv = revision
                    meta["resourceVersion"] = str(rv)
                    new_all[k] = obj
                    if old is None:
                        changes.append(Change(revision, plural, "ADDED", None, obj))
                    elif _strip(old) != _strip(obj):
                        changes.append(Change(revision, plural, "MODIFIED", old, obj))
                for k, old in old_all.items():
                    if k not in new_all:
                        changes.append(Change(revision, plural, "DELETED", old, old))
                self.objects[plural] = new_all
            if changes and self.mtime is not None and revision == self.revision:
                revision += 1            # a change the store's revision does not show (a pod's process ended)
                changes = [Change(revision, c.plural, c.type, c.old, c.new) for c in changes]
            self.state, self.mtime = state, mtime
            first = self.oldest is None
            self.revision = revision
            if first:
                self.oldest = revision
            else:
                self.history.extend(changes)
                while len(self.history) > HISTORY:
                    self.oldest = self.history.popleft().revision
            if self.loop is not None and changes and not first:
                self.loop.call_soon_threadsafe(self._wake)
            return True

    def _wake(self):
        self.changed.set()
        self.changed = asyncio.Event()

    def list(self, plural):
        return list(self.objects[plural].values())

    def get(self, plural, namespace, name):
        return self.objects[plural].get((namespace or "", name))

    def since(self, plural, revision):
        """The changes of a resource after `revision`; None when the history no longer has them."""
        if revision < self.oldest:
            return None
        return [c for c in self.history if c.revision > revision and c.plural == plural]

    async def wait(self, timeout):
        """Until the next change, or `timeout` seconds."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass
