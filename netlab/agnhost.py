"""The container every pod runs unless its manifest gives a command: Kubernetes' agnhost netexec.

Kubernetes' own network tests use `agnhost netexec`. Over HTTP, `GET /hostname` answers the
pod's name, `GET /clientip` the client's ip:port as the pod saw it, `GET /echo?msg=X` X; over
UDP the datagrams `hostname`, `clientip` and `echo X` get the same answers. With no
containerPort declared, netexec's defaults apply: HTTP on 8080, UDP on 8081.

One process serves every pod of a lab: it opens each pod's sockets inside the pod's network
namespace (a socket keeps the namespace it was opened in) and serves them all from one
asyncio loop, so hundreds of pods cost one interpreter. On SIGHUP it re-reads the lab's
state and opens or closes sockets to match (level-triggered), then writes the state's
generation to `agnhost.served` so a command can wait for it.
"""

import asyncio
import os
import signal
import socket
import sys
import time
from urllib.parse import parse_qs, urlsplit

from netlab import names
from netlab.etcd import Store
from netlab.kernel import netns as ns

DEFAULT_PORTS = ((8080, "TCP"), (8081, "UDP"))
MAX_REQUEST = 8192
POLL_SECONDS = 0.2


def served_ports(pod):
    """(port, protocol) pairs agnhost serves for a pod: its containers without a command."""
    ports, any_agnhost = [], False
    for c in pod.template.containers:
        if c.command:
            continue
        any_agnhost = True
        ports += [(p.container_port, p.protocol) for p in c.ports]
    if any_agnhost and not any(p.ports for p in pod.template.containers):
        return list(DEFAULT_PORTS)
    return sorted(set(ports))


def udp_answer(pod_name, data, peer):
    text = data.decode(errors="replace").strip()
    if text == "hostname":
        return pod_name
    if text == "clientip":
        return f"{peer[0]}:{peer[1]}"
    if text.startswith("echo "):
        return text[5:]
    return None


def http_answer(pod_name, target, peer):
    """(status, body) for one request target, as netexec answers it."""
    url = urlsplit(target)
    if url.path == "/hostname":
        return 200, pod_name
    if url.path == "/clientip":
        return 200, f"{peer[0]}:{peer[1]}"
    if url.path == "/echo":
        return 200, parse_qs(url.query).get("msg", [""])[0]
    if url.path in ("/healthz", "/healthy"):
        return 200, "ok"
    if url.path == "/":
        return 200, f"NOW: {time.strftime('%Y-%m-%d %H:%M:%S')}"
    return 404, "404 page not found"


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, pod_name):
        self.pod_name = pod_name

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        answer = udp_answer(self.pod_name, data, addr)
        if answer is not None:
            self.transport.sendto(answer.encode(), addr)


async def _serve_http(pod_name, reader, writer):
    peer = writer.get_extra_info("peername")
    try:
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            if len(head) > MAX_REQUEST:
                break
            request_line = head.split(b"\r\n", 1)[0].decode(errors="replace").split()
            if len(request_line) != 3:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                break
            status, body = http_answer(pod_name, request_line[1], peer)
            close = b"connection: close" in head.lower() or request_line[2] == "HTTP/1.0"
            data = body.encode()
            reason = "OK" if status == 200 else "Not Found"
            headers = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain; charset=utf-8",
                       f"Content-Length: {len(data)}"] + (["Connection: close"] if close else [])
            writer.write(("\r\n".join(headers) + "\r\n\r\n").encode() + data)
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


def _open_sockets(pod):
    """Listening sockets for one pod, opened inside its network namespace."""
    socks = []
    with ns.entered(pod.netns):
        for port, proto in served_ports(pod):
            kind = socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM
            s = socket.socket(socket.AF_INET, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            if proto == "TCP":
                s.listen(128)
            s.setblocking(False)
            socks.append((proto, s))
    return socks


class Server:
    def __init__(self, lab):
        self.store = Store(lab)
        self.running = {}      # pod key -> (netns, [servers or transports])
        self.reload_requested = asyncio.Event()

    async def reconcile(self):
        state_mtime = os.stat(self.store.path).st_mtime_ns
        state = self.store.load()
        loop = asyncio.get_running_loop()
        wanted = {p.key: p for p in state.pods if served_ports(p) and ns.exists(p.netns)}
        for key in list(self.running):
            if key not in wanted or self.running[key][0] != wanted[key].netns:
                for s in self.running.pop(key)[1]:
                    s.close()
        for key, pod in wanted.items():
            if key in self.running:
                continue
            handles = []
            try:
                for proto, s in _open_sockets(pod):
                    if proto == "TCP":
                        handles.append(await asyncio.start_server(
                            lambda r, w, n=pod.name: _serve_http(n, r, w), sock=s, limit=MAX_REQUEST))
                    else:
                        transport, _ = await loop.create_datagram_endpoint(lambda n=pod.name: _Udp(n), sock=s)
                        handles.append(transport)
            except OSError as e:
                print(f"agnhost: pod {key}: {e}", file=sys.stderr, flush=True)
            self.running[key] = (pod.netns, handles)
        marker = self.store.dir / "agnhost.served"
        marker.write_text(str(state_mtime))

    async def run(self):
        """Reconcile at start, on SIGHUP, and whenever state.json changes; exit with the lab."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: (stop.set(), self.reload_requested.set()))
        seen = None
        while not stop.is_set():
            try:
                mtime = os.stat(self.store.path).st_mtime_ns
            except FileNotFoundError:
                break                                   # the lab is gone: so are we
            if mtime != seen or self.reload_requested.is_set():
                self.reload_requested.clear()
                seen = mtime
                await self.reconcile()
            try:
                await asyncio.wait_for(self.reload_requested.wait(), timeout=POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
        for _, handles in self.running.values():
            for h in handles:
                h.close()


def main():
    lab = sys.argv[1]
    if not names.DNS1123_LABEL.match(lab):
        sys.exit(f"agnhost: bad lab name {lab!r}")
    asyncio.run(Server(lab).run())


if __name__ == "__main__":
    main()
