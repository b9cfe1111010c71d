"""Root integration tests: real labs, with unique names, removed by a fixture whatever happens."""

import os
import secrets
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from netlab import Lab
from netlab.api.etcd import all_labs
from netlab.kernel import netns as ns

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hardening"))
from common import renamed, root_snapshot  # noqa: E402,F401  (one definition each, shared with the scripts)

TOPOLOGIES = ROOT / "topologies"

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    """Mark this folder's tests `root`, and skip them when not root (unit tests still run)."""
    for item in items:
        if HERE in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.root)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="builds network namespaces: run as root"))


def wait_for(condition, timeout=15.0, every=0.02, what="the condition"):
    """Poll `condition` until it gives a true value, and return that value; fail after
    `timeout` seconds. The one way the root tests wait: on a condition, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(every)
    return value


def unique_name(prefix="t"):
    return f"{prefix}{secrets.token_hex(3)}"


def leftovers(name):
    return [n for n in ns.list_names() if n.startswith(name + "-")]


@pytest.fixture
def make_lab(tmp_path):
    made = []

    def make(topology, manifests=()):
        name = unique_name()
        made.append(name)
        return Lab.up(renamed(topology, name, tmp_path), manifests)

    yield make
    for name in made:
        if name in all_labs() or leftovers(name):
            Lab.cleanup(name)
        assert leftovers(name) == [], f"lab {name} left namespaces behind"


@contextmanager
def lab_for_module(topology, tmp_path_factory):
    """A lab shared by a module's tests; the host's own namespace must be the same after it."""
    before = root_snapshot()
    name = unique_name()
    lab = Lab.up(renamed(topology, name, tmp_path_factory.mktemp(name)))
    try:
        yield lab
    finally:
        if name in all_labs():
            lab.down()
        assert leftovers(name) == []
        assert root_snapshot() == before
