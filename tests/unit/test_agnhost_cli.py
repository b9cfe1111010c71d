"""agnhost's command line (netlab.addons.agnhost_cli) as Kubernetes' e2e tests run it, and what
the runtime runs for the e2e model's containers (netlab.addons.agnhost).

Expected values are upstream's: cobra's and pflag's errors, Go's time.ParseDuration and
strconv, net.SplitHostPort's and LookupPort's errors, connect.go's prefixes (UNKNOWN, TIMEOUT,
DNS, REFUSED, OTHER) and exit code 1, serve_hostname.go's flags and defaults (--http true,
--port 9376) and porter.go's SERVE_*_PORT_ variables. Nothing here sends a packet: what needs
one is in tests/integration/test_agnhost_subcommands.py.
"""

import errno
import random
import textwrap

import pytest

from netlab.addons import agnhost
from netlab.addons import agnhost_cli as cli
from netlab.api import spec
from netlab.controllers import cluster
from netlab.node import kubelet, runtime

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def last_line(text):
    return text.rstrip("\n").rsplit("\n", 1)[-1]


# --- Go's values --------------------------------------------------------------------------

@pytest.mark.parametrize("text, nanoseconds", [
    ("1s", 10**9), ("0", 0), ("5s", 5 * 10**9), ("300ms", 300 * 10**6), ("-1.5h", -5400 * 10**9),
    ("2h45m", (2 * 3600 + 45 * 60) * 10**9), ("1.5s", 1_500_000_000), (".5s", 500_000_000), ("1m30s", 90 * 10**9),
    ("10us", 10_000), ("10µs", 10_000), ("7ns", 7), ("+3s", 3 * 10**9), ("1h2m3.5s", 3723_500_000_000),
])
def test_durations_parse_as_time_parse_duration(text, nanoseconds):
    assert cli.parse_duration(text) == nanoseconds


@pytest.mark.parametrize("text, message", [
    ("1", 'time: missing unit in duration "1"'),
    ("abc", 'time: invalid duration "abc"'),
    ("", 'time: invalid duration ""'),
    ("1x", 'time: unknown unit "x" in duration "1x"'),
    ("1.s.", 'time: invalid duration "1.s."'),
    ("-", 'time: invalid duration "-"'),
])
def test_bad_durations_get_time_parse_durations_words(text, message):
    with pytest.raises(ValueError) as e:
        cli.parse_duration(text)
    assert str(e.value) == message


@pytest.mark.parametrize("text, value", [("80", 80), ("0x50", 80), ("0o120", 80), ("0120", 80), ("0b1010000", 80),
                                         ("1_000", 1000), ("-7", -7), ("0", 0)])
def test_ints_parse_as_strconv_parse_int_base_0(text, value):
    assert cli.parse_int(text) == value


@pytest.mark.parametrize("text, message", [
    ("08", 'strconv.ParseInt: parsing "08": invalid syntax'),
    ("eighty", 'strconv.ParseInt: parsing "eighty": invalid syntax'),
    ("1__0", 'strconv.ParseInt: parsing "1__0": invalid syntax'),
    ("9223372036854775808", 'strconv.ParseInt: parsing "9223372036854775808": value out of range'),
])
def test_bad_ints_get_strconvs_words(text, message):
    with pytest.raises(ValueError) as e:
        cli.parse_int(text)
    assert str(e.value) == message


def test_bools_parse_as_strconv_parse_bool():
    assert [cli.parse_bool(s) for s in ("1", "t", "T", "TRUE", "true", "True")] == [True] * 6
    assert [cli.parse_bool(s) for s in ("0", "f", "F", "FALSE", "false", "False")] == [False] * 6
    with pytest.raises(ValueError, match=r'^strconv.ParseBool: parsing "yes": invalid syntax$'):
        cli.parse_bool("yes")


# --- parsing as cobra and pflag parse ------------------------------------------------------

def test_serve_hostname_defaults_are_upstreams():
    got = cli.parse(["serve-hostname"])
    assert (got.command, got.options, got.args) == (
        "serve-hostname", {"tcp": False, "udp": False, "http": True, "close": False, "port": 9376}, [])


@pytest.mark.parametrize("argv, options", [
    (["serve-hostname", "--tcp", "--http=false", "--port", "80"], dict(tcp=True, udp=False, http=False, port=80)),
    (["serve-hostname", "--udp", "--http=false", "--port", "81"], dict(tcp=False, udp=True, http=False, port=81)),
    (["serve-hostname", "--port=8080", "--close"], dict(tcp=False, udp=False, http=True, close=True, port=8080)),
    (["serve-hostname", "--tcp=false", "--http=0", "--udp=T"], dict(tcp=False, udp=True, http=False, port=9376)),
])
def test_the_e2e_models_flags_parse_as_pflag_parses_them(argv, options):
    got = cli.parse(argv).options
    assert {k: got[k] for k in options} == options


def test_connect_takes_its_flags_before_or_after_the_address():
    for argv in (["connect", "10.0.0.1:80", "--timeout=1s", "--protocol=udp"],
                 ["connect", "--timeout", "1s", "--protocol", "udp", "10.0.0.1:80"],
                 ["--v=2", "connect", "--protocol=udp", "10.0.0.1:80", "--timeout=1s"]):
        got = cli.parse(argv)
        assert (got.args, got.options) == (["10.0.0.1:80"], {"timeout": 10**9, "protocol": "udp",
                                                               "udp-data": "hostname", "sctp-data": "hostname"})


@pytest.mark.parametrize("argv, error", [
    (["connect"], "Error: accepts 1 arg(s), received 0"),
    (["connect", "a:1", "b:2"], "Error: accepts 1 arg(s), received 2"),
    (["serve-hostname", "--tcp", "false"], "Error: accepts at most 0 arg(s), received 1"),
    (["connect", "a:1", "--timeout=1"], 'Error: invalid argument "1" for "--timeout" flag: '
                                        'time: missing unit in duration "1"'),
    (["serve-hostname", "--port=http"], 'Error: invalid argument "http" for "--port" flag: '
                                        'strconv.ParseInt: parsing "http": invalid syntax'),
    (["serve-hostname", "--http=no"], 'Error: invalid argument "no" for "--http" flag: '
                                      'strconv.ParseBool: parsing "no": invalid syntax'),
    (["connect", "a:1", "--bogus"], "Error: unknown flag: --bogus"),
    (["connect", "-timeout=1s", "a:1"], "Error: unknown shorthand flag: 't' in -timeout=1s"),
    (["connect", "a:1", "--timeout"], "Error: flag needs an argument: --timeout"),
])
def test_a_refused_command_line_is_cobras_error_and_exit_1(capsys, argv, error):
    code, out, err = run(capsys, *argv)
    assert (code, out, last_line(err)) == (1, "", error)


def test_a_flag_error_prints_the_usage_first_an_argument_error_does_not(capsys):
    _, _, flag_err = run(capsys, "connect", "a:1", "--bogus")
    _, _, args_err = run(capsys, "connect")
    assert flag_err.startswith("Usage:\n  app connect [host:port] [flags]\n")
    assert args_err == "Error: accepts 1 arg(s), received 0\n"


def test_an_unknown_subcommand_gets_cobras_suggestion(capsys):
    code, _, err = run(capsys, "conect", "a:1")
    assert (code, err) == (1, 'Error: unknown command "conect" for "app"\n\nDid you mean this?\n\tconnect\n\n')


def test_help_is_exit_0_on_stdout(capsys):
    code, out, err = run(capsys, "connect", "--help")
    assert (code, err) == (0, "")
    assert "Usage:\n  app connect [host:port] [flags]\n" in out
    assert [line.split()[0] for line in out.split("Flags:\n")[1].split("\n\n")[0].splitlines()] == [
        "--timeout", "--protocol", "--udp-data", "--sctp-data", "-h,"]


# --- connect: its prefixes and exit codes ---------------------------------------------------

@pytest.mark.parametrize("argv, stderr", [
    (["10.0.0.1"], "UNKNOWN: address 10.0.0.1: missing port in address\n"),
    (["10.0.0.1:80:81"], "UNKNOWN: address 10.0.0.1:80:81: too many colons in address\n"),
    (["[fd00::1:80"], "UNKNOWN: address [fd00::1:80: missing ']' in address\n"),
    (["10.0.0.1:99999"], "DNS: address 99999: invalid port\n"),
    (["10.0.0.1:-1"], "DNS: address -1: invalid port\n"),
    (["10.0.0.1:no-such-service"], "DNS: lookup tcp/no-such-service: unknown port\n"),
    (["10.0.0.1", "--protocol=udp"], "DNS: address 10.0.0.1: missing port in address\n"),
    (["10.0.0.1:no-such-service", "--protocol=udp"], "DNS: lookup udp/no-such-service: unknown port\n"),
    (["10.0.0.1:80", "--protocol=icmp"], "Unsupported protocol\nicmp"),
])
def test_connect_refuses_what_it_cannot_dial_before_sending_anything(capsys, argv, stderr):
    code, out, err = run(capsys, "connect", *argv, "--timeout=1s")
    assert (code, out, err) == (1, "", stderr)


@pytest.mark.parametrize("error, line", [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "REFUSED"),
    (TimeoutError("timed out"), "TIMEOUT"),                                   # the --timeout deadline
    (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), "TIMEOUT"),       # the kernel's SYN retries
    (OSError(errno.EHOSTUNREACH, "No route to host"), "OTHER: dial tcp 10.244.1.7:80: connect: no route to host"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"),
     "OTHER: dial tcp 10.244.1.7:80: connect: network is unreachable"),
    (PermissionError(errno.EPERM, "Operation not permitted"),
     "OTHER: dial tcp 10.244.1.7:80: connect: operation not permitted"),
])
def test_a_failed_tcp_dial_is_named_as_connect_go_names_it(error, line):
    assert cli.tcp_failure(error, "10.244.1.7:80") == (1, line)


@pytest.mark.parametrize("error, op, line", [
    (TimeoutError("timed out"), "read", "TIMEOUT: read udp 10.244.0.3:40000->10.244.1.7:81: i/o timeout"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "read",
     "REFUSED: read udp 10.244.0.3:40000->10.244.1.7:81: read: connection refused"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "write",
     "REFUSED: write udp 10.244.0.3:40000->10.244.1.7:81: write: connection refused"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), "read",
     "UNKNOWN: read udp 10.244.0.3:40000->10.244.1.7:81: read: no route to host"),
])
def test_a_failed_udp_exchange_is_named_as_connect_go_names_it(error, op, line):
    assert cli.udp_failure(error, op, "10.244.0.3:40000", "10.244.1.7:81") == (1, line)


# --- what serve-hostname and porter serve ---------------------------------------------------

def test_serve_hostname_serves_tcp_udp_or_http_on_its_port():
    parse = lambda *a: cli.serve_hostname_listeners(cli.parse(["serve-hostname", *a]).options, "a")  # noqa: E731
    assert parse("--tcp", "--http=false", "--port", "80") == [cli.Listener("TCP", 80, "raw", "a")]
    assert parse("--udp", "--http=false", "--port", "81") == [cli.Listener("UDP", 81, "datagram", "a")]
    assert parse("--tcp", "--udp", "--http=false") == [cli.Listener("TCP", 9376, "raw", "a"),
                                                      cli.Listener("UDP", 9376, "datagram", "a")]
    assert parse() == [cli.Listener("TCP", 9376, "http", "a")]
    assert parse("--close") == [cli.Listener("TCP", 9376, "http", "a", close=True)]


def test_serve_hostname_refuses_http_with_tcp_as_upstream_does():
    with pytest.raises(cli.Fatal, match="^Can't serve TCP/UDP mode and HTTP mode at the same time$"):
        cli.serve_hostname_listeners(cli.parse(["serve-hostname", "--tcp"]).options, "a")


def test_porter_serves_each_serve_port_variable():
    environ = [("PATH", "/bin"), ("SERVE_PORT_9001", "foo"), ("SERVE_TCP_PORT_9002", "bar"),
               ("SERVE_UDP_PORT_9003", "baz"), ("SERVE_TLS_PORT_9443", "tls"), ("SERVE_SCTP_PORT_9004", "sctp"),
               ("SERVE_PORT_http", "named"), ("SERVE_UDP_PORT_x", "bad")]
    listeners, failed = cli.porter_listeners(environ)
    assert listeners == [cli.Listener("TCP", 9001, "http", "foo"), cli.Listener("TCP", 9002, "http", "bar"),
                         cli.Listener("UDP", 9003, "datagram", "baz"), cli.Listener("TCP", 9443, "https", "tls"),
                         cli.Listener("SCTP", 9004, "raw", "sctp"), cli.Listener("TCP", 80, "http", "named")]
    assert failed == [("SERVE_UDP_PORT_x", "lookup udp/x: unknown port")]


def test_porter_answers_any_request_with_the_value_or_its_json():
    plain = cli.http_answer(cli.Listener("TCP", 9001, "http", "foo"))
    assert plain("GET", "/anything?x=1", ("10.0.0.1", 5)) == (200, {}, b"foo")
    as_json = cli.http_answer(cli.Listener("TCP", 9001, "http", "a<b", json=True))
    assert as_json("POST", "/", ("10.0.0.1", 5)) == (200, {"Content-Type": "application/json"},
                                                     b'{"Method":"POST","Body":"a\\u003cb"}')


# --- the e2e model's containers in the lab ---------------------------------------------------

MODEL = textwrap.dedent(f"""\
    kind: Cluster
    apiVersion: kind.x-k8s.io/v1alpha4
    name: m
    nodes: [{{role: control-plane}}, {{role: worker}}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: a, namespace: x, labels: {{pod: a}}}}
    spec:
      containers:
        - name: cont-80-tcp
          image: {AGNHOST}
          command: ["/agnhost", "serve-hostname", "--tcp", "--http=false", "--port", "80"]
          ports: [{{containerPort: 80, name: serve-80-tcp, protocol: TCP}}]
        - name: cont-80-udp
          image: {AGNHOST}
          command: ["/agnhost", "serve-hostname", "--udp", "--http=false", "--port", "80"]
          ports: [{{containerPort: 80, name: serve-80-udp, protocol: UDP}}]
        - name: cont-81-tcp
          image: {AGNHOST}
          args: ["serve-hostname", "--tcp", "--http=false", "--port", "81"]
          ports: [{{containerPort: 81, name: serve-81-tcp, protocol: TCP}}]
        - name: cont-81-udp
          image: {AGNHOST}
          args: ["serve-hostname", "--udp", "--http=false", "--port", "81"]
          ports: [{{containerPort: 81, name: serve-81-udp, protocol: UDP}}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: web}}
    spec:
      containers: [{{name: netexec, image: {AGNHOST}, args: [netexec, --http-port=8080]}}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: other}}
    spec:
      containers:
        - {{name: probe, image: {AGNHOST}, command: [/agnhost, connect, "10.0.0.1:80", --timeout=1s]}}
        - {{name: both, image: {AGNHOST}, args: [serve-hostname, --tcp]}}
        - {{name: paused, image: {AGNHOST}, args: [pause]}}
        - {{name: shell, image: busybox, command: [sh, -c, "sleep 1"]}}
        - {{name: nginx, image: nginx}}
    """)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL)
    state = cluster.new_state(spec.load(path), random.Random(1))
    return state, {p.name: p for p in state.pods}


def test_the_e2e_models_pod_is_served_by_the_lab_on_the_ports_its_args_name(model):
    state, pods = model
    a = pods["a"]
    assert {k: (x.kind, x.text) for k, (x, _) in agnhost.sockets(a).items()} == {
        (80, "TCP"): ("raw", "a"), (80, "UDP"): ("datagram", "a"), (81, "TCP"): ("raw", "a"),
        (81, "UDP"): ("datagram", "a")}
    assert [kubelet.container_argv(state, a, c) for c in a.template.containers] == [None] * 4   # no process
    assert agnhost.served_ports(a) == []              # nothing there answers netexec's /hostname


def test_netexec_is_still_every_other_containers_default(model):
    _, pods = model
    assert agnhost.served_ports(pods["web"]) == [(8080, "TCP"), (8081, "UDP")]   # no containerPort: its defaults
    # nginx's image is no add-on's: netexec, on its defaults as the pod declares no port
    assert agnhost.served_ports(pods["other"]) == [(8080, "TCP"), (8081, "UDP")]


def test_what_the_lab_does_not_serve_runs_as_the_agnhost_program(model):
    state, pods = model
    other = pods["other"]
    argv = {c.name: kubelet.container_argv(state, other, c) for c in other.template.containers}
    program = list(agnhost.PROGRAM_ARGV)
    assert argv == {"probe": [*program, "connect", "10.0.0.1:80", "--timeout=1s"],
                    "both": [*program, "serve-hostname", "--tcp"],      # upstream refuses it: the process says so
                    "paused": None,                                     # pause: nothing to serve, no process
                    "shell": ["sh", "-c", "sleep 1"], "nginx": None}


def test_exec_runs_the_agnhost_program_for_agnhost_and_slash_agnhost(model):
    _, pods = model
    for name in ("agnhost", "/agnhost"):
        argv = kubelet.exec_argv(pods["a"], [name, "connect", "10.0.0.1:80"])
        assert argv[argv.index("a") + 1:] == [*agnhost.PROGRAM_ARGV, "connect", "10.0.0.1:80"]
    assert kubelet.exec_argv(pods["a"], ["/bin/agnhost"])[-1] == "/bin/agnhost"   # only the image's paths
    assert runtime.program_argv(["curl", "-s"]) == ["curl", "-s"]


def test_image_names_of_agnhost():
    assert [agnhost.is_agnhost_image(i) for i in (
        AGNHOST, "k8s.gcr.io/e2e-test-images/agnhost:2.39", "gcr.io/kubernetes-e2e-test-images/agnhost:2.8",
        "localhost:5000/agnhost", "agnhost@sha256:" + "0" * 64, "registry.k8s.io/pause:3.9",
        "example.com/agnhost-fork:1")] == [True, True, True, True, True, False, False]
