"""kube-apiserver's streaming subresources: pods/exec, pods/log and pods/portforward.

On a real cluster the API server hands these to the kubelet, which hands exec and port-forward
to the container runtime's streaming server (containerd's copy of
k8s.io/kubelet/pkg/cri/streaming); kube-apiserver itself only translates the newest protocols
(staging/src/k8s.io/apiserver/pkg/util/proxy: streamtranslator.go for exec over WebSocket v5,
streamtunnel.go for SPDY tunnelled in WebSocket). Here the three hops are one: the handlers below
answer what the client sees at the end of that chain, protocol by protocol.

exec (WebSocket; kubelet remotecommand/websocket.go, apimachinery wsstream/conn.go): every binary
message starts with its channel, 0 stdin, 1 stdout, 2 stderr, 3 the final status, 4 resize
({"Width":…,"Height":…}); the base64 protocols send text messages, the channel as an ASCII digit
and the data base64-encoded. v5 adds [255, channel]: the client closed that channel (stdin EOF).
The process runs in its own session, under a pseudo-terminal when tty, and whatever it left
running is killed when the stream ends (a real runtime leaves an exec's children running in the
container; a lab must leave nothing behind).

logs (kubelet kuberuntime/logs/logs.go ReadLogs): the container's log file as text/plain, with
tailLines, limitBytes (counting the timestamp prefixes too) and follow until the container stops.

port-forward: the WebSocket tunnel kubectl ≥1.31 speaks (SPDY/3.1 frames carried in binary
messages, one data and one error stream per forwarded connection, as kubelet
portforward/httpstream.go serves them) and the v4.channel.k8s.io WebSocket protocol
(portforward/websocket.go: a data and an error channel per port, each opened by the port in two
little-endian bytes). Connections go to localhost:<port> inside the pod's network namespace, as
containerd dials them.
"""

import asyncio
import base64
import binascii
import errno
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import struct
import termios
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import WSMsgType, web

from netlab.control_plane.status import status_body
from netlab.kernel import netns as ns
from netlab.node import runtime

# --- Status, as the API server encodes it ------------------------------------------------------

def go_json(obj):
    """json.Marshal's bytes: compact, UTF-8, and <, >, & escaped as Go escapes them for HTML."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text.encode()


def status_response(code, message, reason=None, details=None):
    """An HTTP error answered with a metav1.Status (the apiserver's JSON serializer ends it with a
    newline, as json.Encoder does)."""
    return web.Response(status=code, body=go_json(status_body(code, message, reason, details)) + b"\n",
                        content_type="application/json")


def _status(status, message=None, reason=None, details=None, code=None):
    """A metav1.Status as StatusError.Status() holds it: no kind or apiVersion, empty fields left out."""
    out = {"metadata": {}, "status": status}
    for key, value in (("message", message), ("reason", reason), ("details", details), ("code", code)):
        if value:
            out[key] = value
    return out


def _internal_error(message):
    """apierrors.NewInternalError."""
    return _status("Failure", f"Internal error occurred: {message}", "InternalError",
                   {"causes": [{"message": message}]}, 500)


def _exit_status(code, message):
    """The NonZeroExitCode status of kubelet's ServeExec and the translator's codeExitToStatusError."""
    return _status("Failure", f"command terminated with non-zero exit code: {message}", "NonZeroExitCode",
                   {"causes": [{"reason": "ExitCode", "message": str(code)}]})


# --- WebSocket requests and channels ------------------------------------------------------------

def is_websocket_request(request):
    """wsstream.IsWebSocketRequest: `Upgrade: websocket` and an upgrade token in Connection."""
    connection = [t.strip().lower() for t in request.headers.get("Connection", "").split(",")]
    return request.headers.get("Upgrade", "").lower() == "websocket" and "upgrade" in connection


def offered_protocols(request):
    return [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]


V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
# kubelet's createWebSocketStreams, in the order a client may ask for them; "" is a client that
# asks for none (channel.k8s.io's framing). v5 only the API server's translator speaks.
KUBELET_EXEC_PROTOCOLS = (V1, V1_BASE64, V4, V4_BASE64)
STREAM_CLOSE = 255      # remotecommand.StreamClose: [255, channel] in v5
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)


def _negotiate(request, protocols, preferred=None):
    """The subprotocol as golang.org/x/net/websocket's handshake picks it: the client's first that
    the server supports, "" when the client offers none; None when nothing matches (403).
    `preferred`: a protocol that wins whenever offered (the apiserver routes any request that
    offers v5 to its translator, whatever the order)."""
    offered = offered_protocols(request)
    if preferred is not None and preferred in offered:
        return preferred
    if not offered:
        return ""
    return next((p for p in offered if p in protocols), None)


async def _upgrade(request, protocol):
    ws = web.WebSocketResponse(protocols=(protocol,) if protocol else (), autoping=True)
    await ws.prepare(request)
    return ws


class Channels:
    """wsstream.Conn's framing over an aiohttp WebSocketResponse."""

    def __init__(self, ws, protocol):
        self.ws = ws
        self.base64 = "base64" in protocol
        self.close_signal = protocol == V5

    async def send(self, channel, data):
        if self.base64:
            await self.ws.send_str(chr(ord("0") + channel) + base64.b64encode(data).decode())
        else:
            await self.ws.send_bytes(bytes([channel]) + data)

    def decode(self, msg):
        """(channel, data, closed) of a received message, or None to skip it (empty, or base64 that
        does not decode: wsstream logs it and reads on)."""
        data = msg.data.encode() if isinstance(msg.data, str) else msg.data
        if not data:
            return None
        if self.close_signal and data[0] == STREAM_CLOSE:
            return (data[1], b"", True) if len(data) == 2 else None
        channel, data = data[0], data[1:]
        if self.base64:
            channel -= ord("0")
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                return None
        return channel, data, False


async def _messages(ws):
    """The client's data messages until it closes or the connection fails."""
    while True:
        msg = await ws.receive()
        if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
            yield msg
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return


async def _finish(ws, reader=None):
    """Stop reading the client, send the close frame and wait (aiohttp: up to its timeout) for the
    client's: client-go ends its readers on the normal closure, and only then returns the status."""
    if reader is not None:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    await ws.close()


# --- exec ---------------------------------------------------------------------------------------

def _start_error(command):
    """runc's words for a command it cannot exec (libcontainer's standard_init_linux / exec
    lookup), or None when it can."""
    name = command[0]
    if name in runtime.PROGRAMS:                 # what the image ships (/agnhost): its stand-in runs
        return None
    if "/" in name:
        try:
            st = os.stat(name)
        except FileNotFoundError:
            return f'exec: "{name}": stat {name}: no such file or directory'
        except OSError as e:
            return f'exec: "{name}": stat {name}: {os.strerror(e.errno).lower()}'
        if stat.S_ISDIR(st.st_mode) or not os.access(name, os.X_OK):
            return f'exec: "{name}": permission denied'
        return None
    if shutil.which(name) is None:
        return f'exec: "{name}": executable file not found in $PATH'
    return None


def _containerd_start_failure(reason):
    """What kubelet's ServeExec writes when containerd cannot start the exec: the error of
    streamRuntime.Exec ("failed to exec in container: ...", the runtime's words around runc's)
    wrapped by "error executing command in container: " in an InternalError."""
    exec_id = secrets.token_hex(32)
    return (f'error executing command in container: failed to exec in container: failed to start exec '
            f'"{exec_id}": OCI runtime exec failed: exec failed: unable to start container process: {reason}: unknown')


def _exit_code(returncode):
    """containerd's exit status: 128 + the signal for a process a signal ended."""
    return 128 - returncode if returncode < 0 else returncode


def _go_list(argv):
    """fmt's %v of a []string: [a b c]."""
    return "[" + " ".join(argv) + "]"


class _Pipes:
    """A command with pipes for the streams the client asked for (the rest /dev/null, as runc
    gives a process whose stream is not attached)."""

    def __init__(self, stdin, stdout, stderr):
        self.want = (stdin, stdout, stderr)

    async def start(self, argv):
        pipe = lambda wanted: asyncio.subprocess.PIPE if wanted else asyncio.subprocess.DEVNULL  # noqa: E731
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=pipe(self.want[0]), stdout=pipe(self.want[1]), stderr=pipe(self.want[2]),
            start_new_session=True)
        return self.proc

    def outputs(self):
        return [(ch, stream.read) for ch, stream in ((STDOUT, self.proc.stdout), (STDERR, self.proc.stderr))
                if stream is not None]

    async def write(self, data):
        if self.proc.stdin is None or self.proc.stdin.is_closing():
            return
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close_stdin(self):
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def resize(self, width, height):
        pass        # kubelet applies resizes only to a terminal

    def close(self):
        pass


class _Terminal:
    """A command on a pseudo-terminal: stdout and stderr are both the terminal (channel 1), stdin
    goes to it, resizes set its window size. `setsid --ctty` makes it the session's controlling
    terminal, so SIGWINCH and ^C reach the foreground job as on a real console; TERM=xterm as
    containerd sets it for a tty exec."""

    def __init__(self, stdin, stdout):
        self.want_stdin, self.want_stdout = stdin, stdout
        self.master = None

    async def start(self, argv):
        self.master, slave = os.openpty()
        try:
            os.set_blocking(self.master, False)
            # setsid forks only when already a group leader; our child is not one, so the pid
            # we get is the command's own (setsid and every wrapper of argv exec in place).
            self.proc = await asyncio.create_subprocess_exec(
                "setsid", "--ctty", *argv, stdin=slave, stdout=slave, stderr=slave,
                env={**os.environ, "TERM": "xterm"})
        except BaseException:
            os.close(self.master)
            self.master = None
            raise
        finally:
            os.close(slave)
        return self.proc

    def outputs(self):
        return [(STDOUT, self._read)] if self.want_stdout else [(None, self._read)]

    async def _wait(self, add, remove):
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        add(self.master, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            remove(self.master)

    async def _read(self, n=65536):
        loop = asyncio.get_running_loop()
        while self.master is not None:
            try:
                return os.read(self.master, n)
            except BlockingIOError:
                await self._wait(loop.add_reader, loop.remove_reader)
            except OSError as e:
                if e.errno == errno.EIO:        # every slave fd is closed: the terminal hung up
                    return b""
                raise
        return b""

    async def write(self, data):
        loop = asyncio.get_running_loop()
        while data and self.master is not None:
            try:
                data = data[os.write(self.master, data):]
            except BlockingIOError:
                await self._wait(loop.add_writer, loop.remove_writer)
            except OSError:
                return

    def close_stdin(self):
        # A terminal has no half-close: end of input is the VEOF character (^D) at a line start.
        if self.master is not None:
            try:
                os.write(self.master, bytes([termios.tcgetattr(self.master)[6][termios.VEOF][0]]))
            except (OSError, termios.error, TypeError, IndexError):
                pass

    def resize(self, width, height):
        if self.master is not None:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def close(self):
        if self.master is not None:
            os.close(self.master)
            self.master = None


def _kill_group(proc):
    """SIGKILL to the session the command leads (its pid is its group's id). While the leader is
    unreaped its pid cannot be reused; after, the group id stays taken as long as a member lives,
    so the signal reaches only what we started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _resizes(buffer, data):
    """The TerminalSize values in `data` (a json.Decoder over the resize stream: values may span
    or share messages); returns (sizes, the undecoded rest)."""
    buffer += data.decode("utf-8", "replace")
    sizes, decoder = [], json.JSONDecoder()
    while True:
        text = buffer.lstrip()
        if not text:
            return sizes, ""
        try:
            value, end = decoder.raw_decode(text)
        except json.JSONDecodeError:
            return sizes, text
        buffer = text[end:]
        if isinstance(value, dict):
            w, h = value.get("Width", 0), value.get("Height", 0)
            if isinstance(w, int) and isinstance(h, int) and 0 <= w < 65536 and 0 <= h < 65536:
                sizes.append((w, h))


async def exec_pod(request, argv, *, stdin, stdout, stderr, tty, command=None):
    """pods/exec: run `argv` (the host command line that runs the user's command in the pod) and
    stream it over the WebSocket the client opened.

    `command`, when given, is the user's command inside that line: it is looked up first, as runc
    looks it up, so a missing one fails as on a real node (an InternalError status, no exit code)
    rather than with the wrapper's own exit; and the v4 exit status names it as containerd does.
    """
    if tty and stderr:
        stderr = False          # kubelet's NewOptions: "Access to exec with tty and stderr is not supported"
    if not (stdin or stdout or stderr):
        return web.Response(status=400, text="you must specify at least 1 of stdin, stdout, stderr\n")
    if not is_websocket_request(request):
        # UpgradeAwareHandler with UpgradeRequired: an SPDY upgrade (kubectl ≤1.29) ends here too,
        # as netlab speaks no SPDY exec.
        return status_response(400, "Upgrade request required")
    protocol = _negotiate(request, KUBELET_EXEC_PROTOCOLS, preferred=V5)
    if protocol is None:
        return web.Response(status=403)     # x/net/websocket: a failed subprotocol handshake
    ws = await _upgrade(request, protocol)
    channels = Channels(ws, protocol)
    # createWebSocketStreams: an empty message on the lowest writable channel says "connected".
    await channels.send(STDOUT if stdout else STDERR if stderr else ERROR, b"")

    shown = command if command is not None else argv
    status = await _run(request, ws, channels, argv, shown, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty,
                        start_error=_start_error(command) if command else None)
    if status is not None:
        if protocol in (V5, V4, V4_BASE64):
            payload = go_json(status)
        elif status["status"] != "Success":
            payload = status["message"].encode()    # v1WriteStatusFunc: the error's text, nothing on success
        else:
            payload = None
        if payload is not None:
            try:
                await channels.send(ERROR, payload)
            except ConnectionError:
                pass
        await _finish(ws)
    return ws


async def _run(request, ws, channels, argv, shown, *, stdin, stdout, stderr, tty, start_error):
    """Run the command for one exec stream; the status to send, or None when the client left."""
    v5 = channels.close_signal
    if start_error is not None:
        return _start_failed(v5, _containerd_start_failure(start_error))
    io = _Terminal(stdin, stdout) if tty else _Pipes(stdin, stdout, stderr)
    try:
        proc = await io.start(argv)
    except OSError as e:
        return _start_failed(v5, _containerd_start_failure(f'exec: "{argv[0]}": {os.strerror(e.errno).lower()}'))

    async def pump(channel, read):
        while data := await read(65536):
            if channel is not None:
                await channels.send(channel, data)

    async def client():
        resize_buffer = ""
        async for msg in _messages(ws):
            decoded = channels.decode(msg)
            if decoded is None:
                continue
            channel, data, closed = decoded
            if channel == STDIN and stdin:
                if closed:
                    io.close_stdin()
                else:
                    await io.write(data)
            elif channel == RESIZE and tty and not closed:
                sizes, resize_buffer = _resizes(resize_buffer, data)
                for width, height in sizes:
                    io.resize(width, height)

    pumps = [asyncio.ensure_future(pump(ch, read)) for ch, read in io.outputs()]
    reader = asyncio.ensure_future(client())
    done = asyncio.ensure_future(asyncio.gather(proc.wait(), *pumps))
    try:
        while True:
            # The command's end: it exited and its output is drained (what it left holding the
            # output keeps the stream open, as containerd waits for the exec's IO).
            finished, _ = await asyncio.wait({done, reader}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            if done in finished:
                break
            # A reader stuck writing to a stdin nobody reads would not see the client go: the
            # transport does.
            if reader in finished or request.transport is None or request.transport.is_closing():
                return None         # the client is gone: so is the command (finally)
        try:
            done.result()
        except ConnectionError:
            return None
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        code = _exit_code(proc.returncode)
        if code == 0:
            return _status("Success")
        if v5:   # the translator's CodeExitError comes from client-go's errorDecoderV4
            return _exit_status(code, f"command terminated with exit code {code}")
        return _exit_status(code, f"error executing command {_go_list(shown)}, exit code {code}")
    finally:
        for task in (*pumps, reader, done):
            task.cancel()
        _kill_group(proc)
        await proc.wait()
        await asyncio.gather(*pumps, reader, done, return_exceptions=True)
        io.close()


def _start_failed(v5, message):
    status = _internal_error(message)
    if v5:
        # The translator's SPDY executor turns the kubelet's status into a plain error (its
        # message), which the translator wraps in a second NewInternalError.
        status = _internal_error(status["message"])
    return status


# --- logs ---------------------------------------------------------------------------------------

LOG_POLL_SECONDS = 0.1      # kubelet wakes on fsnotify and checks the container every second


def _timestamp(t_ns):
    """types.RFC3339NanoFixed in UTC: 2006-01-02T15:04:05.000000000Z."""
    seconds, nanos = divmod(t_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


LOG_CHUNK = 65536


def _tail_offset(f, size, lines):
    """The offset of the last `lines` lines of the first `size` bytes, found from the end in blocks
    as kubelet's tail.FindTailLineStartIndex finds it. That one counts newlines, every CRI log
    line having one; a netlab log may end in a line still being written, which counts as a line."""
    if lines == 0:
        return size
    pos, wanted = size, lines + 1        # the newline that ends the file is not a line's start
    f.seek(max(size - 1, 0))
    if size == 0 or f.read(1) != b"\n":
        wanted -= 1
    while pos > 0:
        start = max(0, pos - LOG_CHUNK)
        f.seek(start)
        block = f.read(pos - start)
        for i in range(len(block) - 1, -1, -1):
            if block[i] == 10:
                wanted -= 1
                if wanted == 0:
                    return start + i + 1
        pos = start
    return 0


def _names_of(path):
    """(namespace, pod, container) of kubelet's <ns>_<pod>_<container>.log: none of the three
    may hold an underscore (DNS names)."""
    parts = Path(path).stem.split("_", 2)
    return tuple(parts) if len(parts) == 3 else ("", Path(path).stem, "")


class _LogWriter:
    """kubelet's logWriter: timestamps at line starts, and a byte budget that counts them."""

    def __init__(self, response, timestamps, limit):
        self.response, self.timestamps, self.remain = response, timestamps, limit
        self.at_line_start = True

    async def write(self, data, when):
        """Write `data`; False once the budget is spent."""
        if self.timestamps:
            out = bytearray()
            for line in data.splitlines(keepends=True):
                if self.at_line_start:
                    out += _timestamp(when).encode() + b" "
                out += line
                self.at_line_start = line.endswith(b"\n")
            data = bytes(out)
        if self.remain is not None:
            data = data[:self.remain]
            self.remain -= len(data)
        if data:
            await self.response.write(data)
        return self.remain is None or self.remain > 0


async def pod_logs(request, path, *, follow, tail_lines, limit_bytes, timestamps, previous, running):
    """pods/log of one container: its log file (netlab keeps a container's output as it wrote it,
    with no CRI timestamps or stream tags). `running()` says whether the container still runs;
    follow ends when it has stopped and the file is drained, or when the client goes.

    timestamps: the file holds none, so a line already in it when the request came gets the file's
    modification time (when it was last written: no later than the line itself), and a line that
    arrives while following gets the time netlab read it (within LOG_POLL_SECONDS of its writing).
    """
    namespace, pod, container = _names_of(path)
    causes = []
    if tail_lines is not None and tail_lines < 0:
        causes.append(("tailLines", tail_lines, "must be greater than or equal to 0"))
    if limit_bytes is not None and limit_bytes < 1:
        causes.append(("limitBytes", limit_bytes, "must be greater than 0"))
    if causes:     # ValidatePodLogOptions, refused by LogREST as an Invalid PodLogOptions
        text = ", ".join(f"{field}: Invalid value: {value}: {why}" for field, value, why in causes)
        return status_response(422, f'PodLogOptions "{pod}" is invalid: {"[" + text + "]" if len(causes) > 1 else text}',
                               details={"name": pod, "kind": "PodLogOptions", "causes": [
                                   {"reason": "FieldValueInvalid", "message": f"Invalid value: {value}: {why}",
                                    "field": field} for field, value, why in causes]})
    if previous:
        # kubelet's validateContainerLogStatus: netlab never restarts a container, so none has a
        # last terminated state; the 400 it answers, the API server passes on as a BadRequest.
        return status_response(400, f'previous terminated container "{container}" in pod "{pod}" not found')

    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    writer = _LogWriter(response, timestamps, limit_bytes)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        f = None
    try:
        if f is not None:
            st = os.fstat(f.fileno())
            f.seek(_tail_offset(f, st.st_size, tail_lines) if tail_lines is not None else 0)
            left = st.st_size - f.tell()       # what the file held when asked: stamped with its mtime
            while left > 0:
                data = f.read(min(left, LOG_CHUNK))
                if not data:
                    break
                left -= len(data)
                if not await writer.write(data, st.st_mtime_ns):
                    return await _end(response)
        while follow:
            if f is None:
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    pass
            data = f.read(LOG_CHUNK) if f is not None else b""
            if data:
                if not await writer.write(data, time.time_ns()):
                    break
                continue
            if not running():
                # Stopped: whatever it wrote before stopping is in the file now.
                if f is None:
                    try:
                        f = open(path, "rb")
                    except FileNotFoundError:
                        break
                while data := f.read(LOG_CHUNK):
                    if not await writer.write(data, time.time_ns()):
                        break
                break
            if request.transport is None or request.transport.is_closing():
                return response                 # the client went
            await asyncio.sleep(LOG_POLL_SECONDS)
        return await _end(response)
    except ConnectionError:
        return response
    finally:
        if f is not None:
            f.close()


async def _end(response):
    try:
        await response.write_eof()
    except ConnectionError:
        pass
    return response


# --- port-forward -------------------------------------------------------------------------------

FORWARD_GRACE_SECONDS = 1.0     # containerd's portForward: when one direction ends, the other gets a second
FORWARD_QUEUE = 64              # chunks from the client waiting for a pod that reads slowly (then the
                                # connection's reader waits, as spdystream's frame handler does)
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"                    # constants.WebsocketsSPDYTunnelingPrefix
PORTFORWARD_PROTOCOL = "portforward.k8s.io"        # kubelet's only SPDY port-forward protocol


async def _dial(netns, port):
    """A TCP connection to localhost:port inside the pod's namespace, as containerd's portForward
    dials it (tcp4, then tcp6); (reader, writer) or raises OSError with containerd's message."""
    errors = []
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with ns.entered(netns):                 # the socket keeps the namespace it was made in
            sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
        except OSError as e:
            sock.close()
            kind = "tcp4" if family == socket.AF_INET else "tcp6"
            shown = address if family == socket.AF_INET else f"[{address}]"
            errors.append(f"dial {kind} {shown}:{port}: connect: {os.strerror(e.errno).lower()}")
            continue
        return await asyncio.open_connection(sock=sock)
    raise OSError(f'failed to execute portforward in network namespace "{ns.path(netns)}": failed to connect '
                  f'to localhost:{port} inside namespace "{netns}", IPv4: {errors[0]} IPv6 {errors[1]} ')


def _forward_error(netns, port, err):
    """kubelet's message on the error stream: "error forwarding port P to pod <sandbox>, uid :"
    (the CRI streaming server knows the sandbox, not the pod's uid); netlab's sandbox is the netns."""
    return f"error forwarding port {port} to pod {netns}, uid : {err}"


async def port_forward(request, netns, ports):
    """pods/portforward over WebSocket: kubectl's SPDY tunnel (`SPDY/3.1+portforward.k8s.io`) or
    the v4 channel protocol (`ports` are the query's, used by the latter)."""
    if not is_websocket_request(request):
        return status_response(400, "Upgrade request required")
    offered = offered_protocols(request)
    tunnel = SPDY_TUNNEL_PREFIX + PORTFORWARD_PROTOCOL
    if tunnel in offered:
        ws = await _upgrade(request, tunnel)
        await _SpdyServer(ws, netns).run()
        return ws
    spdy = [p[len(SPDY_TUNNEL_PREFIX):] for p in offered if p.startswith(SPDY_TUNNEL_PREFIX)]
    if spdy:
        # streamtunnel.go passes the SPDY protocols on to kubelet, whose httpstream.Handshake
        # refuses them (http.Error: the text and a newline).
        return web.Response(status=403, text=f"unable to upgrade: unable to negotiate protocol: client supports "
                                             f"{_go_list(spdy)}, server accepts [{PORTFORWARD_PROTOCOL}]\n",
                            headers={"X-Accepted-Stream-Protocol-Versions": PORTFORWARD_PROTOCOL})
    if not ports:
        return web.Response(status=400, text='query parameter "port" is required\n')
    protocol = _negotiate(request, (V4, V4_BASE64))
    if protocol is None:
        return web.Response(status=403)
    ws = await _upgrade(request, protocol)
    await _ws_port_forward(ws, Channels(ws, protocol), netns, ports)
    return ws


async def _copy_both(reader, writer, send, incoming):
    """containerd's portForward copy: socket -> `send`, `incoming` queue -> socket; when either
    direction ends the other gets FORWARD_GRACE_SECONDS. Returns the first error, or None."""
    async def out():
        while data := await reader.read(65536):
            await send(data)

    async def into():
        while (data := await incoming.get()) is not None:
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    tasks = [asyncio.ensure_future(out()), asyncio.ensure_future(into())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.wait(pending, timeout=FORWARD_GRACE_SECONDS)
        first = next(iter(done))
        return None if first.cancelled() else first.exception()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()


def _abort(queue):
    """End a forwarded connection's input now (a reset, a lost connection): what is queued is dropped."""
    while True:
        try:
            queue.put_nowait(None)
            return
        except asyncio.QueueFull:
            queue.get_nowait()


def _discard(queue):
    """Nobody reads `queue` any more: empty it, so that the connection's reader, were it waiting to
    put into it, goes on (and puts nothing more: the caller has marked the stream done)."""
    while not queue.empty():
        queue.get_nowait()


def _ended():
    queue = asyncio.Queue()
    queue.put_nowait(None)
    return queue


async def _ws_port_forward(ws, channels, netns, ports):
    """kubelet portforward/websocket.go: for port i, channel 2i carries data both ways and 2i+1
    the server's errors; both start with the port, uint16 little endian. One connection per port,
    made at once; the session ends when every port's forwarding has."""
    queues = [asyncio.Queue(FORWARD_QUEUE) for _ in ports]
    for i, port in enumerate(ports):
        await channels.send(2 * i, struct.pack("<H", port))
        await channels.send(2 * i + 1, struct.pack("<H", port))

    async def forward(i, port):
        queue = queues[i]
        try:
            try:
                reader, writer = await _dial(netns, port)
            except OSError as e:
                await channels.send(2 * i + 1, _forward_error(netns, port, e).encode())
                return
            err = await _copy_both(reader, writer, lambda data: channels.send(2 * i, data), queue)
            if err is not None and not isinstance(err, ConnectionError):
                await channels.send(2 * i + 1, _forward_error(netns, port, err).encode())
        finally:
            queues[i] = None        # what the client still sends for this port is dropped
            _discard(queue)

    async def client():
        async for msg in _messages(ws):
            decoded = channels.decode(msg)
            if decoded is None or decoded[0] % 2 or decoded[0] // 2 >= len(ports) or not decoded[1]:
                continue
            queue = queues[decoded[0] // 2]
            if queue is not None:
                await queue.put(decoded[1])

    async def client_then_end():
        try:
            await client()
        finally:
            for q in queues:
                if q is not None:
                    _abort(q)

    reader = asyncio.ensure_future(client_then_end())
    forwards = asyncio.ensure_future(asyncio.gather(*(forward(i, p) for i, p in enumerate(ports)),
                                                    return_exceptions=True))
    try:
        await asyncio.wait({reader, forwards}, return_when=asyncio.FIRST_COMPLETED)
        if reader.done():           # the client is gone: the connections end (ends of input queued)
            await forwards
    finally:
        forwards.cancel()
        await asyncio.gather(forwards, return_exceptions=True)
        await _finish(ws, reader)


# SPDY/3 (draft 3, as moby/spdystream frames it): control frames 0x8003 <type> <flags> <len:24>,
# data frames <stream id:31> <flags> <len:24>; name/value header blocks compressed by one zlib
# stream per direction, primed with this dictionary (spdy/dictionary.go) and sync-flushed per block.
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_CANCEL = 1, 5

_DICTIONARY_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges age "
    "allow authorization cache-control connection content-base content-encoding content-language content-length "
    "content-location content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
    "proxy-authenticate proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status").split() + ["200 OK"] + (
    "version HTTP/1.1 url public set-cookie keep-alive origin").split()
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 "
    "Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 "
    "Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr "
    "May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,"
    "image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")


def _dictionary():
    """Each word with its 32-bit length, then the tail as it is."""
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICTIONARY_WORDS) + _DICTIONARY_TAIL.encode()


SPDY_DICTIONARY = _dictionary()


def spdy_header_block(headers):
    """An uncompressed name/value block: count, then each name and value with 32-bit lengths
    (several values of one name joined by NUL)."""
    out = struct.pack(">I", len(headers))
    for name, value in headers.items():
        out += struct.pack(">I", len(name)) + name.lower().encode() + struct.pack(">I", len(value)) + value.encode()
    return out


def parse_header_block(block):
    (count,), pos, headers = struct.unpack_from(">I", block), 4, {}
    for _ in range(count):
        (n,) = struct.unpack_from(">I", block, pos)
        name = block[pos + 4:pos + 4 + n].decode().lower()
        pos += 4 + n
        (n,) = struct.unpack_from(">I", block, pos)
        headers[name] = block[pos + 4:pos + 4 + n].decode()
        pos += 4 + n
    return headers


def control_frame(kind, flags, payload):
    return struct.pack(">HHI", 0x8003, kind, flags << 24 | len(payload)) + payload


def data_frame(stream_id, flags, data):
    return struct.pack(">II", stream_id & 0x7FFFFFFF, flags << 24 | len(data)) + data


class _SpdyServer:
    """The kubelet's SPDY port-forward server (spdystream's connection, portforward/httpstream.go),
    read from and written to the WebSocket tunnel as one byte stream (tunneling_connection.go:
    message boundaries mean nothing). The client opens an error and a data stream per forwarded
    connection, both with the headers streamType, port and requestID; each is accepted with an
    empty SYN_REPLY, and the pair is forwarded once both are there."""

    def __init__(self, ws, netns):
        self.ws, self.netns = ws, netns
        self.buffer = bytearray()
        self.inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)
        self.deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, SPDY_DICTIONARY)
        self.streams = {}       # stream id -> {"headers", "queue", "remote_closed", "local_closed"}
        self.pairs = {}         # request id -> {"data": id, "error": id}
        self.tasks = set()
        self.last_good = 0
        self.write_lock = asyncio.Lock()

    async def send(self, frame):
        async with self.write_lock:
            await self.ws.send_bytes(frame)

    async def reply(self, stream_id):
        block = self.deflate.compress(spdy_header_block({})) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        await self.send(control_frame(SYN_REPLY, 0, struct.pack(">I", stream_id) + block))

    async def send_data(self, stream_id, data, fin=False):
        stream = self.streams.get(stream_id)
        if stream is None or stream["local_closed"]:
            return
        for i in range(0, max(len(data), 1), 65536):
            chunk = data[i:i + 65536]
            last = i + 65536 >= len(data)
            await self.send(data_frame(stream_id, FLAG_FIN if fin and last else 0, chunk))
        if fin:
            stream["local_closed"] = True
            self._forget(stream_id)

    async def close_stream(self, stream_id):
        """stream.Close(): a FIN with no data."""
        await self.send_data(stream_id, b"", fin=True)

    def _forget(self, stream_id):
        s = self.streams.get(stream_id)
        if s is not None and s["local_closed"] and s["remote_closed"]:
            del self.streams[stream_id]

    def frames(self):
        """Complete frames from the buffer: (True, type, flags, payload) or (False, id, flags, data)."""
        while len(self.buffer) >= 8:
            first, word = struct.unpack_from(">II", self.buffer)
            length = word & 0xFFFFFF
            if len(self.buffer) < 8 + length:
                return
            payload = bytes(self.buffer[8:8 + length])
            del self.buffer[:8 + length]
            if first & 0x80000000:
                yield True, first & 0xFFFF, word >> 24, payload
            else:
                yield False, first & 0x7FFFFFFF, word >> 24, payload

    async def run(self):
        try:
            async for msg in _messages(self.ws):
                if msg.type != WSMsgType.BINARY:
                    break           # TunnelingConnection: "invalid message type received"
                self.buffer += msg.data
                for control, kind, flags, payload in self.frames():
                    if control:
                        await self.control(kind, flags, payload)
                    else:
                        await self.data(kind, flags, payload)
        except (ConnectionError, zlib.error, struct.error, UnicodeDecodeError):
            pass
        finally:
            for s in self.streams.values():     # the connection is gone: every stream's input ends
                _abort(s["queue"])
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            try:
                await self.send(control_frame(GOAWAY, 0, struct.pack(">II", self.last_good, 0)))
            except (ConnectionError, RuntimeError):
                pass
            await _finish(self.ws)

    async def data(self, stream_id, flags, payload):
        s = self.streams.get(stream_id)
        if s is None or s["remote_closed"]:
            return
        # Only a data stream that is being forwarded is read (kubelet never reads an error stream).
        if s["headers"].get("streamtype") == "data" and not s.get("done"):
            if payload:
                await s["queue"].put(payload)
            if flags & FLAG_FIN:
                await s["queue"].put(None)
        if flags & FLAG_FIN:
            s["remote_closed"] = True
            self._forget(stream_id)

    async def control(self, kind, flags, payload):
        if kind == SYN_STREAM:
            stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            headers = parse_header_block(self.inflate.decompress(payload[10:]))
            await self.open_stream(stream_id, flags, headers)
        elif kind == RST_STREAM:
            stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            s = self.streams.pop(stream_id, None)
            if s is not None:
                s["local_closed"] = s["remote_closed"] = True
                _abort(s["queue"])
        elif kind == PING:
            await self.send(control_frame(PING, 0, payload))    # the client's (odd) pings come back
        elif kind == GOAWAY:
            raise ConnectionError("go away")
        elif kind == HEADERS:
            self.inflate.decompress(payload[4:])                # keep the zlib stream in step
        # SETTINGS and WINDOW_UPDATE: spdystream keeps no flow-control window either.

    async def open_stream(self, stream_id, flags, headers):
        """httpStreamReceived's checks, then the reply; a refused stream is reset."""
        port, kind = headers.get("port", ""), headers.get("streamtype", "")
        if not port.isdigit() or not 0 < int(port) < 65536 or kind not in ("data", "error"):
            await self.send(control_frame(RST_STREAM, 0, struct.pack(">II", stream_id, RST_CANCEL)))
            return
        self.last_good = max(self.last_good, stream_id)
        self.streams[stream_id] = {"headers": headers, "queue": asyncio.Queue(FORWARD_QUEUE),
                                   "remote_closed": bool(flags & FLAG_FIN), "local_closed": False}
        if flags & FLAG_FIN:
            self.streams[stream_id]["queue"].put_nowait(None)
        await self.reply(stream_id)
        # Old clients send no requestID: kubelet pairs error stream N with data stream N+2.
        request_id = headers.get("requestid") or str(stream_id if kind == "error" else stream_id - 2)
        pair = self.pairs.setdefault(request_id, {})
        if kind in pair:
            await self.send_data(pair["error"] if "error" in pair else stream_id,
                                 f"error processing stream for request {request_id}: {kind} stream already "
                                 f"assigned".encode())
            return
        pair[kind] = stream_id
        if len(pair) == 2:
            del self.pairs[request_id]
            task = asyncio.ensure_future(self.forward(pair["data"], pair["error"], int(port)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def forward(self, data_id, error_id, port):
        """httpStreamHandler.portForward: copy between the data stream and the pod's port; an error
        goes to the error stream; both streams are closed at the end."""
        data = self.streams.get(data_id)
        try:
            try:
                reader, writer = await _dial(self.netns, port)
            except OSError as e:
                await self.send_data(error_id, _forward_error(self.netns, port, e).encode())
                return
            err = await _copy_both(reader, writer, lambda chunk: self.send_data(data_id, chunk),
                                   data["queue"] if data is not None else _ended())
            if err is not None and not isinstance(err, ConnectionError):
                await self.send_data(error_id, _forward_error(self.netns, port, err).encode())
        except ConnectionError:
            return
        finally:
            if data is not None:
                data["done"] = True
                _discard(data["queue"])
            for stream_id in (data_id, error_id):
                try:
                    await self.close_stream(stream_id)
                except (ConnectionError, RuntimeError):
                    pass

