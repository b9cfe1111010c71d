"""Kubernetes' e2e test image, agnhost, as pods run it: netexec (every container without a
command), serve-hostname, porter and pause served by one lab process; its other subcommands,
and `/agnhost` run by exec, are the `agnhost` program (netlab.addons.agnhost_cli).

Kubernetes' own network tests use `agnhost netexec`. Over HTTP, `GET /hostname` answers the
pod's name, `GET /clientip` the client's ip:port as the pod saw it, `GET /echo?msg=X` X; over
UDP the datagrams `hostname`, `clientip` and `echo X` get the same answers. With no
containerPort declared, netexec's defaults apply: HTTP on 8080, UDP on 8081. netexec's own
flags are not read: it serves the container's ports.

The NetworkPolicy suite's pods (test/e2e/network/netpol/model.go) run
`/agnhost serve-hostname --tcp|--udp --http=false --port P` in one container per port and
protocol, and porter for SCTP; their probe is `/agnhost connect HOST:PORT --timeout=1s
--protocol=...` by `kubectl exec`. A container's command or args decide what is served, on
the ports its flags name (a containerPort only declares one), as agnhost itself decides:
  - `command: [/agnhost, SUBCOMMAND, ...]` (or `agnhost`), whatever the image;
  - a container of the agnhost image without a command: its args after the image's
    ENTRYPOINT /agnhost; with no args, netexec (netlab's default; the image's CMD is pause);
  - a container without a command of an image no add-on registered: netexec.
The lab serves what parses and what it can open (no SCTP); anything else runs as the
container's own process, the `agnhost` program, which fails as agnhost fails (a bad flag,
--http with --tcp): the container exits, as it would on a node. porter serves its container's
`env` (SERVE_PORT_N, SERVE_UDP_PORT_N, SERVE_TLS_PORT_N); a container the object model gives
no `env` serves nothing, as porter with no such variable does.

One process serves every pod of a lab (kubelet.PodServer): hundreds of pods cost one
interpreter.
"""

import asyncio
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from netlab.addons import agnhost_cli
from netlab.node import runtime
from netlab.node.kubelet import PodServer, pod_hostname, serve_pods

DEFAULT_PORTS = ((8080, "TCP"), (8081, "UDP"))
PROGRAMS = ("/agnhost", "agnhost")          # the image's ENTRYPOINT, and the name on a PATH
ENTRYPOINT = ("/agnhost",)
LAB_SERVED = ("netexec", "serve-hostname", "porter", "pause")
# The agnhost program as the host runs it: the system's python3 (on the container's PATH, as
# the container's user finds it) with nothing but its standard library; the module must be
# readable by that user, as netlab's source is outside /root. Imported rather than run as a
# script, whose source would be compiled on every run (29 ms to start and exit, not 41).
_HERE = str(Path(agnhost_cli.__file__).resolve().parent)
PROGRAM_ARGV = ("python3", "-I", "-S", "-c",
                f"import sys; sys.path.insert(0, {_HERE!r}); from agnhost_cli import main; sys.exit(main())")


def is_agnhost_image(image):
    """registry.k8s.io/e2e-test-images/agnhost:2.53 (or any registry's, any tag or digest)."""
    name = image.partition("@")[0]
    path, _, tag = name.rpartition(":")
    if "/" in tag:                         # a registry's port, not a tag
        path = name
    return (path or name).rsplit("/", 1)[-1] == "agnhost"


def agnhost_argv(container):
    """The agnhost command line (its subcommand first) a container runs, or None when it runs
    another program. Without a command, an agnhost container runs its args (netexec if none)."""
    if container.command:
        return [*container.command[1:], *container.args] if container.command[0] in PROGRAMS else None
    if is_agnhost_image(container.image):
        return list(container.args) or ["netexec"]
    return None


def container_env(container):
    """A container's environment as (name, value) pairs, in order (none when the lab's object
    model carries no `env`)."""
    out = []
    for e in getattr(container, "env", ()) or ():
        name, value = (e.name, e.value) if hasattr(e, "name") else e
        out.append((name, value or ""))
    return out


def _servable(listeners):
    return all(1 <= x.port <= 65535 and x.protocol in ("TCP", "UDP") for x in listeners)


def _plan(container, hostname="-"):
    """(subcommand, [Listener]) the lab serves for a container, or None: it runs as a process
    (another program, or what the lab does not serve). netexec's listeners are its ports."""
    argv = agnhost_argv(container)
    if not argv:
        return None
    if argv[0] == "netexec":
        return "netexec", [agnhost_cli.Listener(p.protocol, p.container_port, "netexec") for p in container.ports]
    if argv[0] not in LAB_SERVED:
        return None
    try:
        invocation = agnhost_cli.parse(argv)
    except (agnhost_cli.UsageError, agnhost_cli.HelpRequested):
        return None
    if invocation.command == "pause":
        return "pause", []
    if invocation.command == "serve-hostname":
        try:
            listeners = agnhost_cli.serve_hostname_listeners(invocation.options, hostname)
        except agnhost_cli.Fatal:
            return None
    else:
        listeners, unparsed = agnhost_cli.porter_listeners(container_env(container),
                                                           invocation.options["json-response"])
        if unparsed:
            return None
    return (invocation.command, listeners) if _servable(listeners) else None


def lab_serves(container):
    """The runtime's question: does the agnhost lab process serve this container?"""
    return _plan(container) is not None


def runs_program(container):
    """A container of the agnhost image, without a command, whose args the lab does not serve:
    the runtime runs its ENTRYPOINT /agnhost with them."""
    return not container.command and is_agnhost_image(container.image) and not lab_serves(container)


runtime.register_image(runtime.Image("agnhost", lab_serves, server="agnhost"))
runtime.register_image(runtime.Image("agnhost-program", runs_program, entrypoint=ENTRYPOINT))
for _program in PROGRAMS:
    runtime.register_program(_program, PROGRAM_ARGV)
runtime.register_process(runtime.LabProcess("agnhost", __name__))


def _subcommand(container):
    """What the agnhost process runs for a container: its subcommand, or None."""
    image = runtime.image_of(container)
    if image is None:
        return None if container.command else "netexec"      # the runtime's default
    return agnhost_argv(container)[0] if image.name == "agnhost" else None


def sockets(pod):
    """{(port, protocol): Listener}: every socket the agnhost process serves for a pod. Two
    containers on one port: the first has it (on a node the second would fail to bind)."""
    out, netexec = {}, False
    hostname = pod_hostname(pod)
    for c in pod.template.containers:
        what = _subcommand(c)
        if what is None:
            continue
        if what == "netexec":
            netexec = True
            listeners = [agnhost_cli.Listener(p.protocol, p.container_port, "netexec") for p in c.ports]
        else:
            listeners = _plan(c, hostname)[1]
        for x in listeners:
            out.setdefault((x.port, x.protocol), (x, c))
    if netexec and not any(c.ports for c in pod.template.containers):
        for port, proto in DEFAULT_PORTS:
            out.setdefault((port, proto), (agnhost_cli.Listener(proto, port, "netexec"), None))
    return {k: v for k, v in sorted(out.items())}


def served_ports(pod):
    """(port, protocol) pairs where agnhost netexec answers for a pod (what probes ask:
    /hostname, /clientip and the UDP datagrams)."""
    return [k for k, (x, _) in sockets(pod).items() if x.kind == "netexec"]


def _host_port(peer):
    """A client's address as Go's net.JoinHostPort prints it (RemoteAddr): [addr]:port for IPv6."""
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def udp_answer(pod_name, data, peer):
    text = data.decode(errors="replace").strip()
    if text == "hostname":
        return pod_name
    if text == "clientip":
        return _host_port(peer)
    if text.startswith("echo "):
        return text[5:]
    return None


def http_answer(pod_name, target, peer):
    """(status, body) for one request target, as netexec answers it."""
    url = urlsplit(target)
    if url.path == "/hostname":
        return 200, pod_name
    if url.path == "/clientip":
        return 200, _host_port(peer)
    if url.path == "/echo":
        return 200, parse_qs(url.query).get("msg", [""])[0]
    if url.path in ("/healthz", "/healthy"):
        return 200, "ok"
    if url.path == "/":
        return 200, f"NOW: {time.strftime('%Y-%m-%d %H:%M:%S')}"
    return 404, "404 page not found"


def _netexec_http(pod_name):
    def answer(method, target, peer):
        status, body = http_answer(pod_name, target, peer)
        # http.NotFound sets its type and nosniff; netexec's other handlers let net/http sniff
        headers = {} if status == 200 else {"Content-Type": agnhost_cli.TEXT, "X-Content-Type-Options": "nosniff"}
        return status, headers, body.encode()
    return answer


def _netexec_udp(pod_name):
    def answer(data, peer):
        text = udp_answer(pod_name, data, peer)
        return None if text is None else text.encode()
    return answer


def self_signed_context():
    """porter's TLS without CERT_FILE/KEY_FILE: upstream ships a certificate for 127.0.0.1 and
    ::1 (localhost.crt); the lab makes one of the same kind, once per process."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.IPAddress(ipaddress.ip_address("::1"))]), False)
            .sign(key, hashes.SHA256()))
    with tempfile.TemporaryDirectory() as d:          # ssl loads a chain from files only
        path = os.path.join(d, "localhost.pem")
        with open(path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(path)
    return context


class Server(PodServer):
    name = "agnhost"

    def __init__(self, lab):
        super().__init__(lab)
        self.tls = None

    def ports(self, pod):
        return list(sockets(pod))

    def _tls(self, container):
        env = dict(container_env(container)) if container is not None else {}
        if env.get("CERT_FILE") or env.get("KEY_FILE"):
            context, problem = agnhost_cli.tls_context(env)
            if context is None:
                raise OSError(f"porter: certFile={problem[0]!r}, keyFile={problem[1]!r}: {problem[2]}")
            return context
        if self.tls is None:
            self.tls = self_signed_context()
        return self.tls

    async def serve(self, pod, proto, port, sock):
        listener, container = sockets(pod)[(port, proto)]
        if listener.kind != "netexec":
            return await agnhost_cli.start(listener, sock, self._tls(container) if listener.kind == "https" else None)
        if proto == "TCP":
            answer = _netexec_http(pod.name)
            return await asyncio.start_server(lambda r, w: agnhost_cli.serve_http(answer, r, w), sock=sock,
                                              limit=agnhost_cli.MAX_REQUEST)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda n=pod.name: agnhost_cli.Datagrams(_netexec_udp(n)), sock=sock)
        return transport


if __name__ == "__main__":
    serve_pods(Server, sys.argv[1])
