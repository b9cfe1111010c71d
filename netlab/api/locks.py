"""Serialize the commands on a lab: kube-apiserver's optimistic concurrency, simplified to a
lock per lab that outlives the lab's own directory.

The lock is a file in STATE_ROOT/.locks, flocked. `down` (or a refused `up`) unlinks it
while holding it, so a command that was waiting on it wakes up holding a file nobody else
will ever open: it sees that the path now names another file (or none) and locks again.
"""

import fcntl
import os
from contextlib import contextmanager

from netlab import names


def _lock_dir():
    d = names.STATE_ROOT / ".locks"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


@contextmanager
def held(lab, still_needed):
    """Hold lab's lock; on release the lock file goes too unless `still_needed()` (the lab
    still has a record)."""
    path = _lock_dir() / lab
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)                               # unlinked while we waited: lock the new one
    try:
        yield
    finally:
        try:
            if not still_needed():
                path.unlink(missing_ok=True)       # while held: a waiter sees it and locks anew
        finally:
            os.close(fd)


@contextmanager
def creating():
    """Held while a lab's record is created, so the check that no other lab shares its
    prefix and the new record are one step (the lock directory itself is flocked)."""
    fd = os.open(_lock_dir(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
