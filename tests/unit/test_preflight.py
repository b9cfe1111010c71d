"""Preflight's file-descriptor check, run in a child whose RLIMIT_NOFILE is set first, so the
limits of the test process itself are never changed; and what nftables mode needs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netlab.errors import EnvironmentProblem
from netlab.observe import preflight

ROOT = Path(__file__).resolve().parents[2]

# The child lowers its limits, calls ensure_fd_limit, then opens `opens` files to see that
# the limit really lets them open; it prints what happened as one JSON line.
CHILD = """
import json, os, resource, sys
from netlab.errors import EnvironmentProblem
from netlab.observe import preflight
soft, hard, sockets, opens = map(int, sys.argv[1:])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
out = {}
try:
    out["returned"] = preflight.ensure_fd_limit(sockets)
except EnvironmentProblem as e:
    out["error"] = str(e)
out["limits"] = list(resource.getrlimit(resource.RLIMIT_NOFILE))
fds = []
try:
    for _ in range(opens):
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    out["open_errno"] = e.errno
out["opened"] = len(fds)
print(json.dumps(out))
"""


def run_child(soft, hard, sockets, opens=0):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(soft), str(hard), str(sockets), str(opens)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_big_lab_raises_the_soft_limit_to_the_hard_one_and_its_files_then_open():
    # 1325 listening sockets need 1325+128 = 1453 files.
    got = run_child(1024, 4096, 1325, opens=1453)
    assert got == {"returned": 4096, "limits": [4096, 4096], "opened": 1453}


def test_without_the_raise_the_same_files_hit_emfile():
    # The control: the same opens under the untouched limit fail with EMFILE (24).
    got = run_child(1024, 4096, 0, opens=1453)
    assert got["limits"] == [1024, 4096] and got["open_errno"] == 24 and got["opened"] < 1024


def test_a_limit_that_is_enough_is_left_alone():
    got = run_child(2048, 4096, 500)                       # 500+128 = 628 files
    assert (got["returned"], got["limits"]) == (2048, [2048, 4096])


def test_a_hard_limit_too_low_is_one_sentence_naming_the_need_and_the_limit():
    got = run_child(512, 1024, 1325)
    assert got["error"] == ("this lab needs about 1453 open files (its pods listen on 1325 sockets); the limit is 1024 "
                            "(ulimit -Hn); raise it, e.g. `ulimit -n 1453` in the shell that runs netlab, "
                            "or nofile in /etc/security/limits.conf")
    assert got["limits"] == [512, 1024]                    # nothing was changed


@pytest.mark.parametrize("release, refused", [("5.12.19-generic", True), ("5.13.0", False), ("6.18.44-fc-v857", False),
                                              ("4.19.0-27-amd64", True)])
def test_nftables_mode_needs_kernel_5_13_as_kube_proxy_checks(monkeypatch, release, refused):
    monkeypatch.delenv(preflight.NFTABLES_SKIP, raising=False)
    monkeypatch.setattr(preflight.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    if not refused:
        preflight.check_nftables(release)
        return
    with pytest.raises(EnvironmentProblem) as e:
        preflight.check_nftables(release)
    assert str(e.value) == (f"kube-proxy's nftables mode needs kernel 5.13 or later (this is {release}); use "
                            f"kubeProxyMode: iptables, or set {preflight.NFTABLES_SKIP}=1 to try anyway")
    monkeypatch.setenv(preflight.NFTABLES_SKIP, "1")
    preflight.check_nftables(release)


def test_nftables_mode_needs_nft(monkeypatch):
    monkeypatch.setattr(preflight.shutil, "which", lambda tool: None)
    with pytest.raises(EnvironmentProblem, match="nft is not installed"):
        preflight.check_nftables("6.1.0")
