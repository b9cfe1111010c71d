"""The command line as a new user meets it: every argument explained, ingresses in the help,
--version, tcpdump's filter order, a closed pipe, singular and plural; and the probe's
area names and report, and trace's port check, without a lab."""

import argparse
import subprocess
import sys
from importlib.metadata import version
from types import SimpleNamespace

import pytest

from netlab import cli
from netlab.api.events import Changes
from netlab.api.spec import ClusterConfig
from netlab.errors import NetlabError
from netlab.observe import probes, trace


def _help(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_argument_of_every_command_says_what_it_is():
    parser = cli._parser()
    missing = [f"netlab {opt}" for a in parser._actions if not isinstance(a, argparse._SubParsersAction)
               and not a.help for opt in [a.option_strings[0] if a.option_strings else a.dest]]
    for name, sub in _subparsers(parser).items():
        missing += [f"netlab {name} {a.option_strings[0] if a.option_strings else a.dest}"
                    for a in sub._actions if not a.help]
    assert missing == []


def test_the_help_names_ingresses_where_kubectl_takes_them(capsys):
    flat = lambda text: " ".join(text.split())  # noqa: E731  (argparse wraps lines)
    top = flat(_help(capsys))
    assert ("get list configmaps, daemonsets, deployments, endpoints, endpointslices, events, ingressclasses, "
            "ingresses, namespaces, networkpolicies, nodes, pods, replicasets or services" in top)
    assert "apply create or update Pods, Deployments, Services and Ingresses" in top
    assert "delete delete pod/NAME, deployment/NAME, service/NAME, ingress/NAME" in top
    get = flat(_help(capsys, "get"))
    for kind, short in (("nodes", "node, no"), ("pods", "pod, po"), ("services", "service, svc"),
                        ("endpoints", "ep"), ("daemonsets", "daemonset, ds"), ("ingresses", "ingress, ing"),
                        ("replicasets", "replicaset, rs"), ("namespaces", "namespace, ns"),
                        ("configmaps", "configmap, cm"), ("events", "event, ev"),
                        ("endpointslices", "endpointslice"), ("ingressclasses", "ingressclass"),
                        ("networkpolicies", "networkpolicy, netpol")):
        assert f"{kind} ({short})" in get                 # kubectl api-resources' names and short names
    assert "Ingresses" in flat(_help(capsys, "apply"))
    assert "ingress/NAME" in flat(_help(capsys, "delete"))


def test_version_prints_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"netlab {version('netlab')}\n"


@pytest.mark.parametrize("argv, expected", [
    (["capture", "client", "-c", "3", "tcp", "port", "8080"], ["-c", "3", "tcp", "port", "8080"]),   # README's order
    (["capture", "client", "tcp", "port", "8080", "-c", "3"], ["-c", "3", "tcp", "port", "8080"]),
    (["capture", "client", "tcp", "-c", "3", "port", "8080"], ["-c", "3", "tcp", "port", "8080"]),
    (["capture", "client", "-i", "eth0", "-w", "x.pcap", "udp"], ["-w", "x.pcap", "udp"]),
])
def test_capture_takes_the_filter_before_or_after_the_options_as_tcpdump_does(argv, expected):
    # tcpdump [ -c count ] [ -i interface ] [ -w file ] [ expression ]: options, then the filter
    assert cli.capture_argv(False, cli.parse(argv)) == ["tcpdump", "-n", "-l", "-i", "eth0", *expected]


def test_capture_still_refuses_an_option_it_does_not_know(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse(["capture", "client", "tcp", "--bogus"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_command_quietly():
    """`netlab up --dry-run | head -1`: the reader is gone before netlab writes. A Unix tool
    dies of SIGPIPE: no message, and the shell sees 128 + 13."""
    p = subprocess.Popen([sys.executable, "-m", "netlab.cli", "up", "--dry-run"], cwd=cli.DEFAULT_LABFILE.parents[1],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                     # closed before the plan is printed
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141
    assert err == ""


@pytest.mark.parametrize("n, word, expected", [(0, "node", "0 nodes"), (1, "node", "1 node"), (2, "node", "2 nodes"),
                                               (1, "netlink write", "1 netlink write"), (3, "change", "3 changes")])
def test_counts_take_the_singular_for_one(n, word, expected):
    assert cli.plural(n, word) == expected


def test_reconcile_counts_in_english(monkeypatch, capsys):
    changes = Changes()
    changes.add("kube-proxy", [("lab-worker", "restored KUBE-SERVICES")])
    changes.netlink_writes, changes.iptables_writes = 1, 2
    import netlab.lab
    monkeypatch.setattr(netlab.lab.Lab, "find", classmethod(lambda cls, name=None: SimpleNamespace(
        reconcile=lambda: changes)))
    assert cli.main(["reconcile"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "reconcile: 1 change (1 netlink write, 2 iptables writes)"


def test_probe_areas_are_tokens_the_shell_takes_as_they_are():
    assert cli.PROBE_AREAS == probes.AREAS
    assert all(a.replace("-", "").isalpha() and a.islower() for a in probes.AREAS)
    assert set(probes.TITLES) == set(probes.AREAS)
    args = cli.parse(["probe", "--area", "pods-same-node", "--area", "load-balancers"])
    assert args.area == ["pods-same-node", "load-balancers"]


def test_an_old_area_name_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse(["probe", "--area", "pods, same node"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_a_skipped_check_is_neither_passed_nor_failed():
    c = probes.skip("dns", "kubernetes A", "10.96.0.1", "kube-system/kube-dns has no ready endpoint")
    assert (c.result, c.ok, c.skipped) == ("skipped", True, "kube-system/kube-dns has no ready endpoint")
    assert probes.Check("dns", "x", "a", "a", True).result == "pass"
    assert probes.Check("dns", "x", "a", "b", False).result == "fail"


def test_the_matrix_marks_skipped_cells_apart_from_failed_ones():
    checks = [probes.Check("pod-matrix", "default/a -> default/b", "reached", "reached", True),
              probes.Check("pod-matrix", "default/b -> default/a", "reached", "timed out", False),
              probes.skip("pod-matrix", "default/a -> kube-system/c", "reached", "no pod on n3 serves TCP (agnhost)"),
              probes.Check("pod-matrix", "default/b -> kube-system/c", "reached", "reached", True)]
    header, rows = probes.matrix(checks)
    assert header == ["from \\ to", "a", "b", "c"]
    assert rows == [["default/a", "·", "✓", "-"],
                    ["default/b", "✗", "·", "✓"],
                    ["kube-system/c", "✗", "✗", "·"]]


def test_an_unknown_area_is_refused_by_the_suite_too():
    with pytest.raises(NetlabError, match="no probe area 'pods, same node'"):
        probes.suite(None, ["pods, same node"])


STATE = SimpleNamespace(lab="x", nodes=[], services=[], pods=[], cluster=ClusterConfig())


@pytest.mark.parametrize("dst", ["10.96.0.1:99999", "10.96.0.1:0", "10.96.0.1:65536", "10.96.0.1:http", "10.96.0.1:"])
def test_trace_refuses_what_is_not_a_port(dst):
    with pytest.raises(NetlabError, match=r"^trace: .*(1-65535|no port)") as e:
        trace.resolve(STATE, dst)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("dst, port", [("10.96.0.1:1", 1), ("10.96.0.1:65535", 65535), ("10.96.0.1", None)])
def test_trace_takes_every_tcp_and_udp_port(dst, port):
    assert trace.resolve(STATE, dst) == ("10.96.0.1", port)


@pytest.mark.parametrize("protocol, answer, expected", [
    ("tcp", {"ok": True, "status": 200, "body": "web-1"}, True),
    ("tcp", {"ok": False, "status": 404, "body": "404 page not found"}, True),     # the server answered
    ("tcp", {"ok": False, "status": 0, "body": "", "local": "10.244.1.2:40000"}, True),   # not HTTP, but accepted
    ("tcp", {"ok": False, "error": "TimeoutError: timed out"}, False),
    ("tcp", {"ok": False, "error": "ConnectionRefusedError: [Errno 111] Connection refused"}, False),
    ("udp", {"ok": False, "error": "TimeoutError: timed out"}, False),
    ("icmp", {"ok": False, "timeout": True}, False),
    ("icmp", {"ok": True, "src": "10.244.1.2"}, True),
])
def test_trace_knows_a_flow_that_got_no_answer(protocol, answer, expected):
    assert trace.answered({"protocol": protocol, "answer": answer}) is expected
