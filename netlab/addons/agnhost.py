"""The container every pod runs unless its manifest gives a command: Kubernetes' agnhost netexec.

Kubernetes' own network tests use `agnhost netexec`. Over HTTP, `GET /hostname` answers the
pod's name, `GET /clientip` the client's ip:port as the pod saw it, `GET /echo?msg=X` X; over
UDP the datagrams `hostname`, `clientip` and `echo X` get the same answers. With no
containerPort declared, netexec's defaults apply: HTTP on 8080, UDP on 8081.

It is the runtime's default: a container of an image no add-on registered (netlab.node.runtime)
runs it. One process serves every pod of a lab (kubelet.PodServer): hundreds of pods cost one
interpreter.
"""

import asyncio
import sys
import time
from urllib.parse import parse_qs, urlsplit

from netlab.node import runtime
from netlab.node.kubelet import PodServer, serve_pods

DEFAULT_PORTS = ((8080, "TCP"), (8081, "UDP"))
# Go's net/http, which netexec serves with: a request head may be up to DefaultMaxHeaderBytes
# (1 MiB) plus the 4096 bytes of slack its reader allows; a longer one gets 431.
MAX_REQUEST = (1 << 20) + 4096
TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
             b"Connection: close\r\n\r\n431 Request Header Fields Too Large")


def served_ports(pod):
    """(port, protocol) pairs agnhost serves for a pod: its containers without a command
    whose image no add-on registered."""
    ports, any_agnhost = [], False
    for c in pod.template.containers:
        if c.command or runtime.image_of(c) is not None:
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
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            except asyncio.LimitOverrunError:
                head = None
            if head is None or len(head) > MAX_REQUEST:
                writer.write(TOO_LARGE)
                await writer.drain()
                await _close_write_and_wait(reader, writer)
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


runtime.register_process(runtime.LabProcess("agnhost", __name__))


async def _close_write_and_wait(reader, writer, seconds=0.5):
    """Go's closeWriteAndWait: half-close, then read what the client still sends for a while,
    so closing with unread data does not reset the connection before it reads the answer."""
    writer.write_eof()
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except (TimeoutError, ConnectionError):
        pass


class Server(PodServer):
    name = "agnhost"

    def ports(self, pod):
        return served_ports(pod)

    async def serve(self, pod, proto, port, sock):
        if proto == "TCP":
            return await asyncio.start_server(lambda r, w, n=pod.name: _serve_http(n, r, w), sock=sock,
                                              limit=MAX_REQUEST)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda n=pod.name: _Udp(n), sock=sock)
        return transport


if __name__ == "__main__":
    serve_pods(Server, sys.argv[1])
