"""kube-apiserver's watch cache (the cacher): the API objects of the lab's state, kept
rendered in memory, and the changes between revisions, kept for watches.

The store (netlab.api.etcd) gives every key a mod revision and the state a revision, as etcd
does. The cache follows the state file and the events file: when either changes, it renders
every object again and compares with what it had, and each difference becomes a watch event
at the next revision (the state's, or one of the cache's own when only the rendering moved:
a pod's process ended, a Deployment's pods became ready, an event was recorded). An
object's resourceVersion is the revision of the change that last changed it, so the events
of a watch only go forward; a write's precondition is checked against it. Changes a
watcher asks for from a revision older than the cache's history are gone (410), as the
real cache answers.

Every refresh builds a new Snapshot and swaps it in whole: a request reads one snapshot, so
its revision, objects and history always agree.
"""

import asyncio
import threading
from dataclasses import dataclass
from types import SimpleNamespace

from netlab.api.apiserver import object_uid
from netlab.api.etcd import REGISTRY, Store
from netlab.api.events import FILE as EVENTS_FILE

HISTORY = 5000           # events kept for watches (the real cache sizes itself; 100 per resource at least)


@dataclass(frozen=True)
class Change:
    revision: int
    plural: str
    type: str            # ADDED MODIFIED DELETED
    old: dict | None
    new: dict | None


@dataclass(frozen=True)
class Snapshot:
    revision: int
    objects: dict        # plural -> {(namespace, name): object}
    history: tuple       # Change, oldest first
    oldest: int          # the revision from which the history is complete
    state: object = None

    def list(self, plural):
        return list(self.objects[plural].values())

    def get(self, plural, namespace, name):
        return self.objects[plural].get((namespace or "", name))

    def since(self, plural, revision):
        """The changes of a resource after `revision`; None when the history no longer has them."""
        if revision < self.oldest:
            return None
        return [c for c in self.history if c.revision > revision and c.plural == plural]


def _strip(obj):
    meta = obj.get("metadata", {})
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}


def _at(obj, revision):
    """A copy of an object stamped with another resourceVersion (a DELETED event's)."""
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(revision)}}


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
        self.snapshot = Snapshot(0, {r.plural: {} for r in resources}, (), 0)
        self.seen = None             # the files' signatures the snapshot was made from
        self.lock = threading.Lock()
        self.loop = None
        self.waiters = []

    @property
    def mtime(self):
        return self.seen[0][0] if self.seen else None

    def attach(self, loop):
        self.loop = loop

    def _signature(self):
        """What tells a new state or new events: each file's mtime, inode and size."""
        out = []
        for path in (self.store.path, self.store.dir / EVENTS_FILE):
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_ino, st.st_size))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def refresh(self):
        """Load the state if a file changed; returns True when it did. Thread-safe."""
        with self.lock:
            seen = self._signature()
            if seen == self.seen:
                return False
            state = self.store.load()
            rendered = self.render(state)
            old = self.snapshot
            first = self.seen is None
            revision = max(state.revision, old.revision)
            bumped = revision + 1 if revision == old.revision and not first else revision
            changes, objects = [], {}
            for plural, objs in rendered.items():
                objects[plural] = self._stamp(plural, objs, old.objects[plural], state, bumped, changes, first)
            if changes and not first:
                revision = bumped      # a change the store's revision does not show gets one of its own
            history = old.history
            oldest = revision if first else old.oldest
            if not first and changes:
                history = old.history + tuple(changes)
                if len(history) > HISTORY:
                    oldest = history[len(history) - HISTORY - 1].revision
                    history = history[-HISTORY:]
            self.snapshot = Snapshot(revision, objects, history, oldest, state)
            self.seen = seen
            if self.loop is not None and changes and not first:
                self.loop.call_soon_threadsafe(self._wake)
            return True

    def _stamp(self, plural, objs, old_all, state, revision, changes, first):
        """Each object with its resourceVersion: the revision of the change that last changed it
        (at the first load, its key's mod revision), so a watch's events only go forward."""
        resource = self.resources[plural]
        new_all = {}
        for obj in objs:
            meta = obj["metadata"]
            k = (meta.get("namespace", ""), meta["name"])
            meta.setdefault("uid", object_uid(self.lab, plural, k[0], k[1], meta.get("creationTimestamp")))
            old = old_all.get(k)
            key = storage_key(resource, obj)
            same = old is not None and _strip(old) == _strip(obj)
            if same:
                rv = int(old["metadata"]["resourceVersion"])
            elif first:
                rv = state.revisions.get(key, [0])[0] if key is not None else 0
                rv = rv or revision
            else:
                rv = revision
            meta["resourceVersion"] = str(rv)
            new_all[k] = obj
            if old is None:
                changes.append(Change(revision, plural, "ADDED", None, obj))
            elif not same:
                changes.append(Change(revision, plural, "MODIFIED", old, obj))
        for k, old in old_all.items():
            if k not in new_all:
                changes.append(Change(revision, plural, "DELETED", old, _at(old, revision)))
        return new_all

    def _wake(self):
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def wait(self, since, timeout):
        """Until the cache is past `since`, or `timeout` seconds."""
        if self.snapshot.revision > since:
            return
        future = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            pass
