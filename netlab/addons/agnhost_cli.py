#!/usr/bin/python3 -IS
"""agnhost, the program of Kubernetes' e2e test image: the subcommands its network tests run
in pods (connect, serve-hostname, porter, pause), parsed as cobra and pflag parse them, with
the messages and exit codes test cases check for.

    agnhost connect HOST:PORT [--timeout=1s] [--protocol=tcp|udp|sctp]
        exit 0: connected (UDP: an answer came back). Otherwise exit 1 and one line on stderr,
        prefixed as upstream's connect.go prefixes it: UNKNOWN, TIMEOUT, DNS, REFUSED, OTHER.
    agnhost serve-hostname [--tcp] [--udp] [--http=true|false] [--close] [--port 9376]
        the hostname, raw over TCP (written, then the connection closed), as a datagram back
        over UDP, or over HTTP for any path; --http cannot be given with --tcp or --udp.
    agnhost porter [--json-response]
        for SERVE_PORT_N / SERVE_TCP_PORT_N: HTTP on N answering the variable's value;
        SERVE_UDP_PORT_N: a datagram back; SERVE_TLS_PORT_N: HTTPS (CERT_FILE, KEY_FILE).
    agnhost pause
        prints "Paused" and waits: SIGINT ends it with 1, SIGTERM with 2.

It imports nothing but the standard library, so it runs on its own (`python3 -I -S
agnhost_cli.py ...`) with the system interpreter, as a container's user: that is how a pod's
`/agnhost` and `agnhost` run (netlab.addons.agnhost registers it with the runtime). The lab's
agnhost process serves the same sockets for pods' containers with the servers below.

Go's words are kept where a test reads them: pflag's "invalid argument ... flag" errors,
time.ParseDuration's, the net package's "dial tcp ADDR: connect: ..." and "lookup NAME on
SERVER: no such host". DNS failures other than "no such host" are worded approximately (the
resolver here is the C library's, not Go's).
"""

import errno
import os
import signal
import socket
import sys
import time
from collections import namedtuple

# The servers import asyncio, ssl, http and json where they run: `connect`, the probe every
# policy check execs, starts without them (about 30 ms to exit instead of 100).

DEFAULT_SERVE_HOSTNAME_PORT = 9376
# Go's net/http: a request head may be up to DefaultMaxHeaderBytes (1 MiB) plus the 4096 bytes
# of slack its reader allows; a longer one gets 431.
MAX_REQUEST = (1 << 20) + 4096
TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
             b"Connection: close\r\n\r\n431 Request Header Fields Too Large")
IDLE_SECONDS = 30
TEXT = "text/plain; charset=utf-8"


# --- Go's parsing of flag values (strconv, time) ------------------------------------------

def go_quote(s):
    """strconv.Quote, for the strings a command line holds."""
    import json
    return json.dumps(s, ensure_ascii=False)


def parse_bool(s):
    """strconv.ParseBool."""
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"strconv.ParseBool: parsing {go_quote(s)}: invalid syntax")


def parse_int(s):
    """strconv.ParseInt(s, 0, 64): a sign, then 0x, 0o, 0b or a leading 0 (octal) chooses the
    base; underscores may separate digits."""
    syntax = ValueError(f"strconv.ParseInt: parsing {go_quote(s)}: invalid syntax")
    body = s[1:] if s[:1] in "+-" else s
    base, digits = 10, body
    if len(body) > 1 and body[0] == "0":
        prefix = body[1].lower()
        base, digits = {"x": (16, body[2:]), "o": (8, body[2:]), "b": (2, body[2:])}.get(prefix, (8, body[1:]))
        if prefix in "xob":
            digits = digits.removeprefix("_")
    if not digits or digits.startswith("_") or digits.endswith("_") or "__" in digits:
        raise syntax
    try:
        value = int(digits.replace("_", ""), base)
    except ValueError:
        raise syntax from None
    value = -value if s.startswith("-") else value
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(s)}: value out of range")
    return value


_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(s):
    """time.ParseDuration, in nanoseconds: a signed sequence of decimal numbers, each with an
    optional fraction and a unit (ns, us, µs, ms, s, m, h); "0" alone needs no unit."""
    invalid = ValueError(f"time: invalid duration {go_quote(s)}")
    rest, negative = s, False
    if rest[:1] in ("-", "+"):
        negative, rest = rest[0] == "-", rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise invalid
    total = 0
    while rest:
        if not (rest[0] == "." or rest[0].isascii() and rest[0].isdigit()):
            raise invalid
        i = 0
        while i < len(rest) and rest[i].isascii() and rest[i].isdigit():
            i += 1
        whole, rest = rest[:i], rest[i:]
        fraction = ""
        if rest[:1] == ".":
            rest = rest[1:]
            i = 0
            while i < len(rest) and rest[i].isascii() and rest[i].isdigit():
                i += 1
            fraction, rest = rest[:i], rest[i:]
        if not whole and not fraction:
            raise invalid
        i = 0
        while i < len(rest) and not (rest[i] == "." or rest[i].isascii() and rest[i].isdigit()):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {go_quote(s)}")
        unit, rest = rest[:i], rest[i:]
        if unit not in _UNITS:
            raise ValueError(f"time: unknown unit {go_quote(unit)} in duration {go_quote(s)}")
        scale = _UNITS[unit]
        value = int(whole or "0") * scale + (int(fraction) * scale // 10 ** len(fraction) if fraction else 0)
        total += value
        if total > (1 << 63) - (0 if negative else 1):
            raise invalid
    return -total if negative else total


# --- cobra and pflag ----------------------------------------------------------------------

Flag = namedtuple("Flag", "name kind default usage shorthand", defaults=("",))   # kind: bool, int, duration, string
# exact_args: cobra.ExactArgs(n); max_args: cobra.MaximumNArgs(n)
Command = namedtuple("Command", "use short long flags exact_args max_args", defaults=((), None, None))


# The help texts are netlab's words; the flags, their defaults and the arguments are agnhost's.
CONNECT = Command(
    "connect [host:port]", "Open one TCP, UDP or SCTP connection and report how it went",
    "Opens one connection to HOST:PORT (UDP and SCTP: sends the data and waits for an answer).\n"
    "Exit 0 when it worked; otherwise exit 1 and one line on stderr whose first word says why:\n"
    "UNKNOWN (bad arguments), TIMEOUT, DNS (the name or port did not resolve), REFUSED, OTHER.",
    (Flag("timeout", "duration", 0, "give up after this long (0: wait as long as the kernel does)"),
     Flag("protocol", "string", "tcp", "tcp, udp or sctp"),
     Flag("udp-data", "string", "hostname", "what a UDP probe sends"),
     Flag("sctp-data", "string", "hostname", "what an SCTP probe sends")),
    exact_args=1)
SERVE_HOSTNAME = Command(
    "serve-hostname", "Answer with this host's name",
    "Answers with the hostname: raw over TCP (then closes), back over UDP, or over HTTP on any path.",
    (Flag("tcp", "bool", False, "answer raw TCP connections"),
     Flag("udp", "bool", False, "answer UDP datagrams"),
     Flag("http", "bool", True, "answer HTTP requests (not with --tcp or --udp)"),
     Flag("close", "bool", False, "close the HTTP connection after every answer"),
     Flag("port", "int", DEFAULT_SERVE_HOSTNAME_PORT, "the port to listen on")),
    max_args=0)
PORTER = Command(
    "porter", "Answer on the ports the environment names",
    "For every SERVE_PORT_N, SERVE_TCP_PORT_N, SERVE_UDP_PORT_N, SERVE_TLS_PORT_N or SERVE_SCTP_PORT_N\n"
    "variable, listens on port N and answers with the variable's value.",
    (Flag("json-response", "bool", False, "answer HTTP with JSON holding the request's method and the value"),),
    max_args=0)
PAUSE = Command("pause", "Wait until a signal", "Prints Paused and waits for SIGINT (exit 1) or SIGTERM (exit 2).",
                max_args=0)
COMMANDS = {"connect": CONNECT, "serve-hostname": SERVE_HOSTNAME, "porter": PORTER, "pause": PAUSE}

# The rest of agnhost 2.53's subcommands: netlab knows their names but does not run them here
# (netexec runs in the lab's agnhost process, for containers of the agnhost image).
UPSTREAM_ONLY = ("audit-proxy", "crd-conversion-webhook", "dns-server-list", "dns-suffix", "entrypoint-tester",
                 "etc-hosts", "fake-gitserver", "grpc-health-checking", "guestbook", "inclusterclient", "liveness",
                 "logs-generator", "mounttest", "net", "netexec", "nettest", "no-snat-test", "no-snat-test-proxy",
                 "port-forward-tester", "resource-consumer-controller", "stress", "tcp-reset", "test-webserver",
                 "webhook", "test-service-account-issuer-discovery")

# The root command's persistent flags that the logging library (klog) adds; accepted, unused.
GLOBAL_FLAGS = (Flag("v", "int", 0, "log verbosity (accepted, unused)", shorthand="v"),
                Flag("vmodule", "string", "", "per-file log verbosity (accepted, unused)"),
                Flag("log-flush-frequency", "duration", 5_000_000_000, "log flush interval (accepted, unused)"))
HELP = Flag("help", "bool", False, "this help", shorthand="h")


class UsageError(Exception):
    """cobra's refusal of a command line. A flag error has the usage printed before it (as
    k8s.io/component-base/cli.Run prints it); either way `Error: MESSAGE` and exit 1."""

    def __init__(self, message, command=None, usage=False):
        super().__init__(message)
        self.command, self.usage = command, usage


class HelpRequested(Exception):
    def __init__(self, command=None):
        super().__init__(command)
        self.command = command


Invocation = namedtuple("Invocation", "command options args")


def _normalized(name):
    return name.replace("_", "-")       # cliflag.WordSepNormalizeFunc


def _set(flag, value, options):
    try:
        if flag.kind == "bool":
            parsed = parse_bool(value)
        elif flag.kind == "int":
            parsed = parse_int(value)
        elif flag.kind == "duration":
            parsed = parse_duration(value)
        else:
            parsed = value
    except ValueError as e:
        shown = f"-{flag.shorthand}, --{flag.name}" if flag.shorthand else f"--{flag.name}"
        raise UsageError(f"invalid argument {go_quote(value)} for {go_quote(shown)} flag: {e}", usage=True) from None
    options[flag.name] = parsed


def _parse_flags(argv, flags):
    """pflag's parseArgs, flags interspersed with arguments: `--name=value`, `--name value`,
    a bare `--name` for a bool, `-x` shorthands, `--` ends the flags."""
    by_name = {f.name: f for f in flags}
    by_short = {f.shorthand: f for f in flags if f.shorthand}
    options, positional = {f.name: f.default for f in flags}, []
    args = list(argv)
    while args:
        s = args.pop(0)
        if len(s) < 2 or s[0] != "-":
            positional.append(s)
        elif s == "--":
            positional += args
            break
        elif s[1] == "-":
            name, eq, value = s[2:].partition("=")
            if not name or name[0] in "-=":
                raise UsageError(f"bad flag syntax: {s}", usage=True)
            flag = by_name.get(_normalized(name))
            if flag is None:
                raise UsageError(f"unknown flag: --{name}", usage=True)
            if not eq:
                if flag.kind == "bool":
                    value = "true"
                elif args:
                    value = args.pop(0)
                else:
                    raise UsageError(f"flag needs an argument: {s}", usage=True)
            _set(flag, value, options)
        else:
            shorthands = s[1:]
            while shorthands:
                c = shorthands[0]
                flag = by_short.get(c)
                if flag is None:
                    raise UsageError(f"unknown shorthand flag: '{c}' in -{shorthands}", usage=True)
                if len(shorthands) > 2 and shorthands[1] == "=":
                    value, rest = shorthands[2:], ""
                elif flag.kind == "bool":
                    value, rest = "true", shorthands[1:]
                elif len(shorthands) > 1:
                    value, rest = shorthands[1:], ""
                elif args:
                    value, rest = args.pop(0), ""
                else:
                    raise UsageError(f"flag needs an argument: '{c}' in -{shorthands}", usage=True)
                _set(flag, value, options)
                shorthands = rest
    return options, positional


def _levenshtein(a, b):
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _unknown_command(name):
    """cobra's legacyArgs error, with its suggestions (distance 2, or a prefix)."""
    known = sorted([*COMMANDS, *UPSTREAM_ONLY, "completion", "help"])
    near = [c for c in known if _levenshtein(name.lower(), c.lower()) <= 2 or c.lower().startswith(name.lower())]
    hint = "\n\nDid you mean this?\n" + "".join(f"\t{c}\n" for c in near) if near else ""
    return UsageError(f'unknown command "{name}" for "app"{hint}')


def parse(argv):
    """The command line after `agnhost`: (the subcommand, its flags' values, its arguments).
    Raises UsageError as cobra refuses it, HelpRequested for -h/--help/help."""
    everything = (*GLOBAL_FLAGS, HELP)
    # cobra finds the subcommand first: the first word that is neither a flag nor a flag's value.
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
        word = argv[i].lstrip("-")
        flag = next((f for f in everything if _normalized(word) in (f.name, f.shorthand)), None)
        i += 2 if flag is not None and flag.kind != "bool" else 1      # `--v 2`: the value is not the command
    if i >= len(argv) or argv[i] == "--":
        _parse_flags(argv, everything)          # the root's own flags must parse; then its help
        raise HelpRequested(None)
    name = argv[i]
    if name == "help":
        raise HelpRequested(argv[i + 1] if i + 1 < len(argv) and argv[i + 1] in COMMANDS else None)
    if name not in COMMANDS:
        if name in UPSTREAM_ONLY:
            raise UsageError(f"netlab does not run agnhost {name} as a command (it runs {', '.join(COMMANDS)})")
        raise _unknown_command(name)
    command = COMMANDS[name]
    try:
        options, positional = _parse_flags(argv[:i] + argv[i + 1:], (*command.flags, *everything))
    except UsageError as e:
        e.command = name
        raise
    if options.pop("help"):
        raise HelpRequested(name)
    for f in GLOBAL_FLAGS:
        options.pop(f.name)
    if command.exact_args is not None and len(positional) != command.exact_args:
        raise UsageError(f"accepts {command.exact_args} arg(s), received {len(positional)}", name)
    if command.max_args is not None and len(positional) > command.max_args:
        raise UsageError(f"accepts at most {command.max_args} arg(s), received {len(positional)}", name)
    return Invocation(name, options, positional)


def usage(name):
    """cobra's usage text of a subcommand (or of the root)."""
    if name is None:
        width = max(len(c) for c in COMMANDS)
        lines = ["Usage:", "  app [command]", "", "Available Commands:"]
        lines += [f"  {c:<{width}}  {COMMANDS[c].short}" for c in COMMANDS]
        return "\n".join(lines + ["", 'Use "app [command] --help" for more information about a command.'])
    command = COMMANDS[name]
    flags = [*command.flags, HELP]

    def line(f):
        short = f"-{f.shorthand}, " if f.shorthand else "    "
        kind = "" if f.kind == "bool" else f" {f.kind}"
        return f"  {short}--{f.name}{kind}"
    rows = [(line(f), f) for f in flags]
    globals_ = [(line(f), f) for f in GLOBAL_FLAGS]
    width = max(len(r) for r, _ in rows + globals_)
    out = ["Usage:", f"  app {command.use} [flags]", "", "Flags:"]
    for text, f in rows:
        default = "" if f.default in (False, 0, "") or f.name == "help" else f" (default {_shown(f)})"
        out.append(f"{text:<{width}}   {f.usage}{default}")
    out += ["", "Global Flags:"] + [f"{t:<{width}}   {f.usage}" for t, f in globals_]
    return "\n".join(out)


def _shown(flag):
    if flag.kind == "string":
        return go_quote(flag.default)
    if flag.kind == "duration":
        return f"{flag.default // 1_000_000_000}s"
    return str(flag.default).lower()


# --- Go's words for network errors --------------------------------------------------------

def go_errno(code):
    """syscall.Errno's text: the C library's, in Go's lower case."""
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


def join_host_port(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(hostport):
    """net.SplitHostPort; a ValueError holds Go's AddrError text."""
    def fail(why):
        return ValueError(f"address {hostport}: {why}")
    i = hostport.rfind(":")
    if i < 0:
        raise fail("missing port in address")
    j = k = 0
    if hostport[0] == "[":
        end = hostport.find("]")
        if end < 0:
            raise fail("missing ']' in address")
        if end + 1 == len(hostport):
            raise fail("missing port in address")
        if end + 1 != i:
            raise fail("too many colons in address" if hostport[end + 1] == ":" else "missing port in address")
        host, j, k = hostport[1:end], 1, end + 1
    else:
        host = hostport[:i]
        if ":" in host:
            raise fail("too many colons in address")
    if "[" in hostport[j:]:
        raise fail("unexpected '[' in address")
    if "]" in hostport[k:]:
        raise fail("unexpected ']' in address")
    return host, hostport[i + 1:]


def lookup_port(network, service):
    """net.LookupPort: a number (in 0-65535), or a service name from /etc/services."""
    digits = service[1:] if service[:1] in "+-" else service
    if service == "" or digits.isascii() and digits.isdigit():
        port = int(service or "0")
    else:
        try:
            port = socket.getservbyname(service.lower(), network)
        except OSError:
            raise ValueError(f"lookup {network}/{service}: unknown port") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"address {service}: invalid port")
    return port


def _nameserver():
    """The server a lookup names in its error: the first of /etc/resolv.conf (Go's default:
    127.0.0.1:53)."""
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    return join_host_port(words[1], 53)
    except OSError:
        pass
    return "127.0.0.1:53"


def resolve(network, dest):
    """net.Resolve{TCP,UDP}Addr: [(family, ip, port)], IPv4 first; a ValueError holds Go's
    words. An IP literal is not looked up."""
    host, service = split_host_port(dest)
    port = lookup_port(network, service)
    if host == "":
        return [(socket.AF_INET, "0.0.0.0", port)]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.partition("%")[0])
            return [(family, host, port)]
        except OSError:
            pass
    kind = socket.SOCK_STREAM if network == "tcp" else socket.SOCK_DGRAM
    try:
        found = socket.getaddrinfo(host, port, socket.AF_UNSPEC, kind)
    except socket.gaierror as e:
        if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            why = "no such host"
        elif e.errno == socket.EAI_AGAIN:
            why = "i/o timeout"
        else:
            why = "server misbehaving"
        raise ValueError(f"lookup {host} on {_nameserver()}: {why}") from None
    out = []
    for family, _, _, _, sockaddr in sorted(found, key=lambda a: a[0] != socket.AF_INET):
        if (family, sockaddr[0], port) not in out:
            out.append((family, sockaddr[0], port))
    return out


# --- connect ------------------------------------------------------------------------------

def tcp_failure(exc, addr):
    """connect.go's line and code for a failed TCP dial to `addr` (ip:port)."""
    if isinstance(exc, TimeoutError) or getattr(exc, "errno", None) in (errno.ETIMEDOUT, errno.EAGAIN):
        return 1, "TIMEOUT"
    if getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return 1, "REFUSED"
    return 1, f"OTHER: dial tcp {addr}: connect: {go_errno(exc.errno) if exc.errno else exc}"


def udp_failure(exc, op, local, remote):
    """connect.go's parseUDPErrorAndExit for a failed read or write."""
    where = f"{op} udp {local}->{remote}"
    if isinstance(exc, TimeoutError):
        return 1, f"TIMEOUT: {where}: i/o timeout"
    text = f"{where}: {op}: {go_errno(exc.errno)}" if getattr(exc, "errno", None) else f"{where}: {exc}"
    if exc.errno == errno.ECONNREFUSED:
        return 1, f"REFUSED: {text}"
    return 1, f"UNKNOWN: {text}"


def connect_tcp(dest, timeout):
    """(exit code, stderr line or None): net.DialTimeout as connect.go reads its error.
    `timeout` in nanoseconds; 0 waits as long as the kernel does; below 0 has passed already."""
    try:
        split_host_port(dest)
    except ValueError as e:
        return 1, f"UNKNOWN: {e}"
    try:
        addrs = resolve("tcp", dest)
    except ValueError as e:
        return 1, f"DNS: {e}"
    deadline = time.monotonic() + timeout / 1e9 if timeout else None
    first = None
    for family, ip, port in addrs:
        addr = join_host_port(ip, port)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return (1, "TIMEOUT") if first is None else first
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.settimeout(left)
            s.connect((ip, port))
            return 0, None
        except OSError as e:
            first = first or tcp_failure(e, addr)
        finally:
            s.close()
    return first


def connect_udp(dest, timeout, data):
    """A datagram of `data` and a newline, then the first answer, as connect.go waits for it."""
    try:
        family, ip, port = resolve("udp", dest)[0]
    except ValueError as e:
        return 1, f"DNS: {e}"
    remote = join_host_port(ip, port)
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        try:
            s.connect((ip, port))
        except OSError as e:
            return 1, f"OTHER: dial udp {remote}: connect: {go_errno(e.errno) if e.errno else e}"
        local = join_host_port(*s.getsockname()[:2])
        if timeout > 0:                                 # connect.go sets a deadline only then
            s.settimeout(timeout / 1e9)
        try:
            s.send(f"{data}\n".encode())
        except OSError as e:
            return udp_failure(e, "write", local, remote)
        try:
            answer = s.recv(1024)
        except OSError as e:
            return udp_failure(e, "read", local, remote)
        if not answer:
            return 1, "OTHER: No data received from the server. Cannot guarantee the server received the request."
        return 0, None
    finally:
        s.close()


def connect_sctp(dest, timeout, data):
    """connect.go's SCTP: dial, write, read in a goroutine, raced against time.After(timeout).
    A timeout of 0 fires at once, so without --timeout it reports TIMEOUT."""
    try:
        host, port = split_host_port(dest)
    except ValueError as e:
        return 1, f"DNS: {e}"
    if not (port.isascii() and port.isdigit()):
        return 1, f"DNS: strconv.Atoi: parsing {go_quote(port)}: invalid syntax"
    port, family = int(port), socket.AF_INET6 if ":" in host else socket.AF_INET
    if timeout <= 0:
        return 1, "TIMEOUT"
    result = []

    def attempt():
        try:
            with socket.socket(family, socket.SOCK_STREAM, getattr(socket, "IPPROTO_SCTP", 132)) as s:
                s.connect((host, port))
                s.send(f"{data}\n".encode())
                s.recv(1024)
            result.append((0, None))
        except OSError as e:
            result.append((1, f"OTHER: {go_errno(e.errno) if e.errno else e}"))
    import threading
    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout / 1e9)
    return result[0] if result else (1, "TIMEOUT")


def connect(dest, timeout=0, protocol="tcp", udp_data="hostname", sctp_data="hostname"):
    """(exit code, what connect.go writes to stderr)."""
    if protocol in ("", "tcp"):
        code, line = connect_tcp(dest, timeout)
    elif protocol == "udp":
        code, line = connect_udp(dest, timeout, udp_data)
    elif protocol == "sctp":
        code, line = connect_sctp(dest, timeout, sctp_data)
    else:
        return 1, f"Unsupported protocol\n{protocol}"       # fmt.Fprint's two strings, no newline after
    return code, (f"{line}\n" if line else "")


# --- what serve-hostname and porter serve -------------------------------------------------

# One socket a subcommand serves and what it answers there. protocol: TCP, UDP or SCTP; kind:
# "raw" (the text, then close), "datagram" (the text back), "http" or "https"; close: HTTP's
# Connection: close on every answer (serve-hostname --close); json: porter --json-response.
Listener = namedtuple("Listener", "protocol port kind text close json", defaults=("", False, False))


class Fatal(Exception):
    """log.Fatalf: the subcommand ends with this message and exit 1."""


def serve_hostname_listeners(options, hostname):
    """serve_hostname.go's sockets for its flags."""
    if options["http"] and (options["tcp"] or options["udp"]):
        raise Fatal("Can't serve TCP/UDP mode and HTTP mode at the same time")
    port = options["port"]
    if not 0 <= port <= 65535:
        if options["tcp"]:
            raise Fatal(f"Error from net.Listen(): listen tcp: address {port}: invalid port")
        if options["udp"]:
            raise Fatal(f"Error from net.ResolveUDPAddr(): address {port}: invalid port")
        raise Fatal(f"listen tcp: address {port}: invalid port")
    out = []
    if options["tcp"]:
        out.append(Listener("TCP", port, "raw", hostname))
    if options["udp"]:
        out.append(Listener("UDP", port, "datagram", hostname))
    if options["http"]:
        out.append(Listener("TCP", port, "http", hostname, close=options["close"]))
    return out


PORTER_PREFIXES = (("SERVE_PORT_", "TCP", "http"), ("SERVE_TCP_PORT_", "TCP", "http"),
                   ("SERVE_UDP_PORT_", "UDP", "datagram"), ("SERVE_SCTP_PORT_", "SCTP", "raw"),
                   ("SERVE_TLS_PORT_", "TCP", "https"))


def porter_listeners(environ, json_response=False):
    """porter.go's sockets for an environment ((name, value) pairs, in order): ([Listener],
    [(the variable, why it serves nothing)]). A UDP or SCTP port that does not parse ends
    porter (log.Fatalf); an HTTP one only fails its own server."""
    out, failed = [], []
    for key, value in environ:
        prefix = next((p for p in PORTER_PREFIXES if key.startswith(p[0])), None)
        if prefix is None:
            continue
        name, protocol, kind = prefix
        raw = key[len(name):]
        try:
            port = lookup_port("udp" if protocol == "UDP" else "tcp", raw)
        except ValueError as e:
            failed.append((key, str(e)))
            continue
        out.append(Listener(protocol, port, kind, value, json=json_response and kind in ("http", "https")))
    return out, failed


def sniffed(data):
    """net/http's Content-Type for a body written without one (DetectContentType, for text)."""
    head = data[:512].lstrip(b"\t\n\x0c\r ").lower()
    return "text/html; charset=utf-8" if head.startswith((b"<!doctype html", b"<html")) else TEXT


def http_answer(listener):
    """The answer porter and serve-hostname give to any request: (method, target, peer) ->
    (status, the headers the handler sets, body)."""
    if listener.json:
        import json

        def answer(method, target, peer):
            text = json.dumps({"Method": method, "Body": listener.text}, ensure_ascii=False, separators=(",", ":"))
            # encoding/json's HTML-safe escapes
            for c in "<>&\u2028\u2029":
                text = text.replace(c, f"\\u{ord(c):04x}")
            return 200, {"Content-Type": "application/json"}, text.encode()
        return answer
    data = listener.text.encode()
    headers = {"Connection": "close"} if listener.close else {}     # serve-hostname --close sets it
    return lambda method, target, peer: (200, headers, data)


async def serve_raw(data, reader, writer):
    """serve-hostname --tcp: write the text and close, whatever the client sends."""
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class Datagrams:
    """An asyncio datagram protocol: every datagram answered, `answer(data, peer)` giving the
    bytes to send back, or None."""

    def __init__(self, answer):
        self.answer = answer

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        out = self.answer(data, addr)
        if out is not None:
            self.transport.sendto(out, addr)

    def error_received(self, exc):
        pass                               # an ICMP error for an earlier answer: nothing to do

    def connection_lost(self, exc):
        pass


async def close_write_and_wait(reader, writer, seconds=0.5):
    """Go's closeWriteAndWait: half-close, then read what the client still sends for a while,
    so closing with unread data does not reset the connection before it reads the answer."""
    import asyncio
    writer.write_eof()
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except (TimeoutError, ConnectionError):
        pass


def _header(head, name):
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode(errors="replace")
    return None


async def serve_http(answer, reader, writer):
    """An HTTP/1.1 connection as Go's net/http serves it: requests answered in turn, kept alive
    unless the client or the handler says otherwise; a head over MAX_REQUEST refused with 431.
    `answer(method, target, peer)` -> (status, the headers the handler sets, body). The
    response's headers in net/http's order: the handler's (sorted), Date, Content-Length, then
    what the server adds (a sniffed Content-Type, Connection: close)."""
    import asyncio
    import email.utils
    import http
    import ssl
    peer = writer.get_extra_info("peername")
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=IDLE_SECONDS)
            except asyncio.LimitOverrunError:
                head = None
            if head is None or len(head) > MAX_REQUEST:
                writer.write(TOO_LARGE)
                await writer.drain()
                await close_write_and_wait(reader, writer)
                break
            request_line = head.split(b"\r\n", 1)[0].decode(errors="replace").split()
            if len(request_line) != 3:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                break
            method, target, version = request_line
            length = _header(head, b"content-length")
            sized = length is not None and length.isdigit() and int(length) <= MAX_REQUEST
            if sized and int(length):
                await asyncio.wait_for(reader.readexactly(int(length)), timeout=IDLE_SECONDS)    # read, dropped
            status, headers, data = answer(method, target, peer)
            done = (headers.get("Connection") == "close" or b"connection: close" in head.lower()
                    or version == "HTTP/1.0" or (length is not None and not sized)
                    or "chunked" in (_header(head, b"transfer-encoding") or "").lower())
            lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}"]
            lines += [f"{k}: {v}" for k, v in sorted(headers.items())]
            lines += [f"Date: {email.utils.formatdate(usegmt=True)}", f"Content-Length: {len(data)}"]
            if "Content-Type" not in headers:
                lines.append(f"Content-Type: {sniffed(data)}")
            if done and "Connection" not in headers:
                lines.append("Connection: close")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if method == "HEAD" else data))
            await writer.drain()
            if done:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError,
            ssl.SSLError):
        pass
    finally:
        writer.close()


async def start(listener, sock, tls=None):
    """Serve one Listener on an open socket (bound; a TCP one listening); returns what closes it.
    `tls`: the SSLContext of an "https" listener."""
    import asyncio
    if listener.kind == "datagram":
        data = listener.text.encode()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: Datagrams(lambda _data, _peer: data), sock=sock)
        return transport
    if listener.kind == "raw":
        data = listener.text.encode()
        return await asyncio.start_server(lambda r, w: serve_raw(data, r, w), sock=sock)
    answer = http_answer(listener)
    return await asyncio.start_server(lambda r, w: serve_http(answer, r, w), sock=sock,
                                      limit=MAX_REQUEST, ssl=tls if listener.kind == "https" else None)


# --- running a subcommand -----------------------------------------------------------------

def log(message):
    """Go's log package: a timestamp, the message, to stderr."""
    print(time.strftime("%Y/%m/%d %H:%M:%S ") + message, file=sys.stderr, flush=True)


def _listen(listener):
    """A socket bound to every address (Go's ":PORT": IPv6 and IPv4 where the namespace has both)."""
    kind = {"TCP": socket.SOCK_STREAM, "UDP": socket.SOCK_DGRAM}.get(listener.protocol, socket.SOCK_STREAM)
    proto = getattr(socket, "IPPROTO_SCTP", 132) if listener.protocol == "SCTP" else 0
    try:
        s = socket.socket(socket.AF_INET6, kind, proto)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address = ("::", listener.port)
    except OSError:
        s = socket.socket(socket.AF_INET, kind, proto)
        address = ("0.0.0.0", listener.port)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(address)
        if kind == socket.SOCK_STREAM:
            s.listen(128)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def tls_context(environ):
    """porter's certificate: CERT_FILE and KEY_FILE, or localhost.crt and .key where it runs:
    (an SSLContext, None) or (None, (cert, key, Go's error text))."""
    import ssl
    cert = environ.get("CERT_FILE") or "localhost.crt"
    key = environ.get("KEY_FILE") or "localhost.key"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as e:
        missing = next((f for f in (cert, key) if not os.path.exists(f)), e.filename or cert)
        return None, (cert, key, f"open {missing}: {go_errno(e.errno)}")
    except (OSError, ssl.SSLError) as e:
        return None, (cert, key, str(e))
    return context, None


async def _serve_until_signal(listeners, failed, environ=None, ready=None):
    """Serve every listener until SIGTERM or SIGINT, and return that signal. A socket that
    cannot be opened goes to `failed(listener, Go's error text)`, which logs it or raises Fatal
    (log.Fatalf) as the subcommand does."""
    import asyncio
    handles = []
    try:
        for listener in listeners:
            try:
                sock = _listen(listener)
            except OSError as e:
                failed(listener, go_errno(e.errno) if e.errno else str(e))
                continue
            tls = None
            if listener.kind == "https":
                tls, problem = tls_context(environ or {})
                if tls is None:
                    sock.close()
                    cert, key, why = problem
                    log(f"tls server on port {go_quote(str(listener.port))} with certFile={go_quote(cert)}, "
                        f"keyFile={go_quote(key)} failed: {why}")
                    continue
            handles.append(await start(listener, sock, tls))
        if ready is not None:
            ready()
        stop = asyncio.get_running_loop().create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(s))
        return await stop
    finally:
        for h in handles:
            h.close()


def run_serve_hostname(options):
    import asyncio
    listeners = serve_hostname_listeners(options, socket.gethostname())

    def failed(listener, why):
        if listener.kind == "raw":
            raise Fatal(f"Error from net.Listen(): listen tcp :{listener.port}: bind: {why}")
        if listener.kind == "datagram":
            raise Fatal(f"Error from ListenUDP(): listen udp :{listener.port}: bind: {why}")
        raise Fatal(f"listen tcp :{listener.port}: bind: {why}")
    sig = asyncio.run(_serve_until_signal(listeners, failed, ready=lambda: log(f"Serving on port {options['port']}.")))
    # serve_hostname.go then sleeps 60 s "awaiting pod deletion"; here the runtime deletes it.
    log(f"Shutting down after receiving signal: {'terminated' if sig == signal.SIGTERM else 'interrupt'}.")
    log("Awaiting pod deletion.")
    return 0


def run_porter(options):
    import asyncio
    listeners, unparsed = porter_listeners(os.environ.items(), options["json-response"])
    for key, why in unparsed:
        protocol = next(p[1] for p in PORTER_PREFIXES if key.startswith(p[0]))
        if protocol == "UDP":
            raise Fatal(f"UDP: failed to resolve address: {why}")
        if protocol == "SCTP":
            raise Fatal(f"Sctp: failed to resolve address. error: {why}")
        log(f"server on port {go_quote(key.rpartition('_')[2])} failed: listen tcp: {why}")

    def failed(listener, why):
        if listener.protocol == "UDP":
            raise Fatal(f"UDP: failed to listen on port {listener.port}: "
                        f"listen udp 0.0.0.0:{listener.port}: bind: {why}")
        if listener.protocol == "SCTP":
            raise Fatal(f"Failed to listen SCTP. error: {why}")
        log(f"server on port {go_quote(str(listener.port))} failed: listen tcp 0.0.0.0:{listener.port}: bind: {why}")
    asyncio.run(_serve_until_signal(listeners, failed, dict(os.environ)))
    return 128 + signal.SIGTERM                  # porter has no handler: the signal ends it


def run_pause():
    print("Paused", flush=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sig = signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 1 if sig == signal.SIGINT else 2


def main(argv=None):
    """agnhost's entry point: the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        invocation = parse(argv)
    except HelpRequested as h:
        if h.command is not None:
            print(COMMANDS[h.command].long + "\n\n" + usage(h.command))
        else:
            print(usage(None))
        return 0
    except UsageError as e:
        if e.usage:
            print(usage(e.command) + "\n", file=sys.stderr)
        print(f"Error: {e}", file=sys.stderr, flush=True)
        return 1
    o = invocation.options
    try:
        if invocation.command == "connect":
            code, text = connect(invocation.args[0], o["timeout"], o["protocol"], o["udp-data"], o["sctp-data"])
            sys.stderr.write(text)
            sys.stderr.flush()
            return code
        if invocation.command == "serve-hostname":
            return run_serve_hostname(o)
        if invocation.command == "porter":
            return run_porter(o)
        return run_pause()
    except Fatal as e:
        log(str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
