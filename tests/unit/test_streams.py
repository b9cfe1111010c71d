"""pods/exec, pods/log and pods/portforward as the real clients see them: kubectl 1.32, the Python
kubernetes client, and raw WebSocket frames checked against the wire format of kubelet's
remotecommand/websocket.go, the API server's stream translator and kuberuntime's log reader.
Host commands (sh, cat, stty) stand in for a pod's; no lab is built. The port-forward tests make
one network namespace of their own (root) and remove it."""

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from netlab.control_plane import streams
from netlab.kernel import netns as ns

SH_3 = ["sh", "-c", "echo out; echo err >&2; exit 3"]
KUBECTL = shutil.which("kubectl")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def argv_of(request):
    return request.query.getall("command")


def flag(request, name, default="false"):
    return request.query.get(name, default).lower() in ("1", "true")


async def exec_handler(request):
    command = argv_of(request)
    return await streams.exec_pod(request, command, command=command, stdin=flag(request, "stdin"),
                                  stdout=flag(request, "stdout", "true"), stderr=flag(request, "stderr"),
                                  tty=flag(request, "tty"))


def app_with(*routes):
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app


async def started(app):
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def exec_url(command, **flags):
    q = [("command", c) for c in command] + [(k, "true" if v else "false") for k, v in flags.items()]
    return "/exec?" + urllib.parse.urlencode(q)


async def session(ws, send=(), base64_codec=False):
    """Send `send` (raw frames), then read until the server closes: (frames in order, the bytes
    per channel)."""
    for frame in send:
        await (ws.send_str(frame) if isinstance(frame, str) else ws.send_bytes(frame))
    frames, per = [], {}
    async for msg in ws:
        assert msg.type == (WSMsgType.TEXT if base64_codec else WSMsgType.BINARY)
        data = msg.data
        if base64_codec:
            ch, payload = int(data[0]), base64.b64decode(data[1:])
        else:
            ch, payload = data[0], data[1:]
        frames.append((ch, payload))
        per[ch] = per.get(ch, b"") + payload
    return frames, per


def exit_status(n, message):
    return {"metadata": {}, "status": "Failure", "message": f"command terminated with non-zero exit code: {message}",
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(n)}]}}


# --- exec over WebSocket ------------------------------------------------------------------------

def test_exec_v5_streams_stdout_stderr_and_the_exit_status_as_the_translator_writes_it():
    async def go():
        client = await started(app_with(("GET", "/exec", exec_handler)))
        try:
            ws = await client.ws_connect(exec_url(SH_3, stdout=True, stderr=True),
                                         protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
            assert ws.protocol == "v5.channel.k8s.io"
            frames, per = await session(ws)
            return frames, per, ws.close_code
        finally:
            await client.close()
    frames, per, close_code = run(go())
    assert frames[0] == (1, b"")            # the empty "connected" message on stdout
    assert per[1] == b"out\n" and per[2] == b"err\n"
    # streamtranslator.go codeExitToStatusError over client-go's errorDecoderV4 CodeExitError.
    assert json.loads(per[3]) == exit_status(3, "command terminated with exit code 3")
    assert per[3].startswith(b'{"metadata":{},"status":"Failure","message":')     # json.Marshal's field order
    assert frames[-1][0] == 3 and close_code == 1000


def test_exec_v4_status_names_the_command_as_containerd_does_and_success_is_bare():
    async def go():
        client = await started(app_with(("GET", "/exec", exec_handler)))
        try:
            out = []
            for command in (SH_3, ["true"]):
                ws = await client.ws_connect(exec_url(command, stdout=True, stderr=True),
                                             protocols=("v4.channel.k8s.io", "v3.channel.k8s.io"))
                assert ws.protocol == "v4.channel.k8s.io"
                out.append((await session(ws))[1])
            return out
        finally:
            await client.close()
    failed, ok = run(go())
    assert json.loads(failed[3]) == exit_status(
        3, "error executing command [sh -c echo out; echo err >&2; exit 3], exit code 3")
    assert b"err \\u003e\\u00262" in failed[3]          # Go's json escapes > and &
    assert ok == {1: b"", 3: b'{"metadata":{},"status":"Success"}'}


def test_exec_stdin_reaches_cat_and_the_v5_close_frame_ends_it():
    async def go():
        client = await started(app_with(("GET", "/exec", exec_handler)))
        try:
            ws = await client.ws_connect(exec_url(["cat"], stdin=True, stdout=True, stderr=True),
                                         protocols=("v5.channel.k8s.io",))
            return await session(ws, send=[b"\x00hello ", b"\x00world\n", bytes([255, 0])])
        finally:
            await client.close()
    frames, per = run(go())
    assert per[1] == b"hello world\n"
    assert json.loads(per[3]) == {"metadata": {}, "status": "Success"}


def test_exec_base64_protocol_sends_text_frames_with_ascii_channels():
    async def go():
        client = await started(app_with(("GET", "/exec", exec_handler)))
        try:
            ws = await client.ws_connect(exec_url(["head", "-n", "1"], stdin=True, stdout=True),
                                         protocols=("v4.base64.channel.k8s.io",))
            assert ws.protocol == "v4.base64.channel.k8s.io"
            return await session(ws, send=["0" + base64.b64encode(b"one\ntwo\n").decode()], base64_codec=True)
        finally:
            await client.close()
    frames, per = run(go())
    assert frames[0] == (1, b"") and per[1] == b"one\n"
    assert json.loads(per[3]) == {"metadata": {}, "status": "Success"}


def test_exec_v1_channel_protocol_writes_only_the_error_text():
    async def go():
        client = await started(app_with(("GET", "/exec", exec_handler)))
        try:
            out = []
            for command in (SH_3, ["true"]):
                ws = await client.ws_connect(exec_url(command, stdout=True, stderr=True),
                                             protocols=("channel.k8s.io",))
                out.append((await session(ws))[1])
            return out
        finally:
            await client.close()
    failed, ok = run(go())
    assert failed[3] == (b"command terminated with non-zero exit code: error executing command "
                         b"[sh -c echo out; echo err >&2; exit 3], exit code 3")
    assert 3 not in ok                  # v1WriteStatusFunc writes nothing on success


def test_exec_tty_merges_output_applies_the_resize_and_sets_term():
    async def go():
        client = await started(app_with(("GET", "/exec", exec_handler)))
        try:
            command = ["sh", "-c", "read line; stty size; echo $TERM; echo to-stderr >&2"]
            ws = await client.ws_connect(exec_url(command, stdin=True, stdout=True, stderr=True, tty=True),
                                         protocols=("v5.channel.k8s.io",))
            # The resize is read before the line, so `stty size` runs after it took effect.
            return await session(ws, send=[b'\x04{"Width":120,"Height":40}', b"\x00go\n"])
        finally:
            await client.close()
    frames, per = run(go())
    # The line discipline echoes the input and turns \n into \r\n (ONLCR); stderr is the terminal.
    assert per[1] == b"go\r\n40 120\r\nxterm\r\nto-stderr\r\n"
    assert 2 not in per
    assert json.loads(per[3]) == {"metadata": {}, "status": "Success"}


def dead(pid):
    """Gone, or a zombie that is not ours: ended, waiting for the init it was reparented to (which
    may reap at its leisure)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X") and int(fields[1]) != os.getpid()


def wait_dead(pids, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(dead(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


def test_a_client_that_leaves_mid_command_leaves_no_process_behind():
    ended = []

    async def handler(request):
        try:
            return await exec_handler(request)
        finally:
            ended.append(True)

    async def go():
        client = await started(app_with(("GET", "/exec", handler)))
        try:
            for tty in (False, True):
                ws = await client.ws_connect(
                    exec_url(["sh", "-c", "sleep 1000 & echo $$ $!; wait"], stdin=True, stdout=True, tty=tty),
                    protocols=("v5.channel.k8s.io",))
                out = b""
                while not out.rstrip().count(b" ") or not out.endswith(b"\n"):
                    msg = await ws.receive()
                    out += msg.data[1:]
                pids = [int(p) for p in out.split()]
                assert all(os.path.exists(f"/proc/{p}") for p in pids)
                await ws.close()
                assert await asyncio.to_thread(wait_dead, pids), f"tty={tty}: {pids} still run"
                # The command was our child: reaped, not left a zombie (its child was the shell's).
                assert not os.path.exists(f"/proc/{pids[0]}")
                for _ in range(500):
                    if len(ended) == (2 if tty else 1):
                        break
                    await asyncio.sleep(0.01)
            return ended
        finally:
            await client.close()
    assert run(go()) == [True, True]


def test_a_missing_command_is_the_runtimes_internal_error_not_an_exit_code():
    async def go():
        client = await started(app_with(("GET", "/exec", exec_handler)))
        try:
            out = {}
            for protocol in ("v5.channel.k8s.io", "v4.channel.k8s.io"):
                ws = await client.ws_connect(exec_url(["no-such-netlab-command"], stdout=True),
                                             protocols=(protocol,))
                out[protocol] = json.loads((await session(ws))[1][3])
            return out
        finally:
            await client.close()
    out = run(go())
    runc = ('error executing command in container: failed to exec in container: failed to start exec "[0-9a-f]{64}": '
            'OCI runtime exec failed: exec failed: unable to start container process: exec: '
            '"no-such-netlab-command": executable file not found in \\$PATH: unknown')
    v4 = out["v4.channel.k8s.io"]
    assert v4["reason"] == "InternalError" and v4["code"] == 500
    assert re.fullmatch("Internal error occurred: " + runc, v4["message"])
    assert re.fullmatch(runc, v4["details"]["causes"][0]["message"])
    v5 = out["v5.channel.k8s.io"]       # the translator wraps the kubelet's error once more
    assert re.fullmatch("Internal error occurred: Internal error occurred: " + runc, v5["message"])


def test_exec_without_a_websocket_upgrade_is_the_apis_bad_request():
    async def go():
        client = await started(app_with(("GET", "/exec", exec_handler), ("POST", "/exec", exec_handler)))
        try:
            out = []
            for method, headers in (("GET", {}), ("POST", {"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                                                            "X-Stream-Protocol-Version": "v4.channel.k8s.io"})):
                r = await client.request(method, exec_url(["true"], stdout=True), headers=headers)
                out.append((r.status, r.headers["Content-Type"], await r.read()))
            r = await client.get(exec_url(["true"], stdout=False))
            out.append((r.status, None, await r.read()))
            return out
        finally:
            await client.close()
    plain, spdy, nothing = run(go())
    body = (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
            b'"message":"Upgrade request required","reason":"BadRequest","code":400}\n')
    assert plain == (400, "application/json", body) and spdy == plain
    assert nothing == (400, None, b"you must specify at least 1 of stdin, stdout, stderr\n")


def test_an_unknown_subprotocol_is_refused():
    async def go():
        client = await started(app_with(("GET", "/exec", exec_handler)))
        try:
            r = await client.get(exec_url(["true"], stdout=True), headers={
                "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                "Sec-WebSocket-Protocol": "v3.channel.k8s.io"})
            return r.status
        finally:
            await client.close()
    assert run(go()) == 403


def test_the_python_kubernetes_client_reads_output_and_exit_code():
    from kubernetes.client import Configuration
    from kubernetes.stream.ws_client import WSClient

    async def go():
        client = await started(app_with(("GET", "/exec", exec_handler)))
        try:
            url = f"ws://127.0.0.1:{client.port}" + exec_url(SH_3, stdout=True, stderr=True)

            def talk():
                c = WSClient(Configuration(), url, headers=None, capture_all=True)
                c.run_forever(timeout=20)
                return c.subprotocol, c.read_stdout(), c.read_stderr(), c.returncode
            return await asyncio.to_thread(talk)
        finally:
            await client.close()
    assert run(go()) == ("v5.channel.k8s.io", "out\n", "err\n", 3)


# --- the real kubectl against a minimal API ------------------------------------------------------

POD = {"kind": "Pod", "apiVersion": "v1",
       "metadata": {"name": "web", "namespace": "default", "uid": "5d7c0a0e-0000-4000-8000-000000000001",
                    "resourceVersion": "1"},
       "spec": {"containers": [{"name": "main", "image": "busybox"}], "nodeName": "worker"},
       "status": {"phase": "Running"}}


def fake_api(log_path=None, running=lambda: False, netns=None):
    """Just enough API for kubectl exec/logs/port-forward: discovery, the pod, its subresources."""
    async def api(request):
        return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]})

    async def apis(request):
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def v1(request):
        verbs = ["get", "list"]
        return web.json_response({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "verbs": verbs,
             "shortNames": ["po"]},
            {"name": "pods/exec", "singularName": "", "namespaced": True, "kind": "PodExecOptions", "verbs": ["create", "get"]},
            {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
            {"name": "pods/portforward", "singularName": "", "namespaced": True, "kind": "PodPortForwardOptions",
             "verbs": ["create", "get"]}]})

    async def pod(request):
        return web.json_response(POD)

    async def log(request):
        q = request.query
        number = lambda k: int(q[k]) if k in q else None  # noqa: E731
        return await streams.pod_logs(request, log_path, follow=flag(request, "follow"), tail_lines=number("tailLines"),
                                      limit_bytes=number("limitBytes"), timestamps=flag(request, "timestamps"),
                                      previous=flag(request, "previous"), running=running)

    async def portforward(request):
        ports = [int(p) for v in request.query.getall("ports", []) for p in v.split(",")]
        return await streams.port_forward(request, netns, ports)

    base = "/api/v1/namespaces/default/pods/web"
    return app_with(("GET", "/api", api), ("GET", "/apis", apis), ("GET", "/api/v1", v1), ("GET", base, pod),
                    ("GET", base + "/exec", exec_handler), ("POST", base + "/exec", exec_handler),
                    ("GET", base + "/log", log), ("GET", base + "/portforward", portforward),
                    ("POST", base + "/portforward", portforward))


def kubeconfig(tmp_path, port):
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "t", "user": {}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t", "namespace": "default"}}]}))
    return {**os.environ, "KUBECONFIG": str(path), "HOME": str(tmp_path)}


async def kubectl(env, *args, stdin=None):
    proc = await asyncio.create_subprocess_exec(KUBECTL, *args, env=env, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    return proc.returncode, out.decode(), err.decode()


needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="no kubectl on PATH")


@needs_kubectl
def test_kubectl_exec_prints_the_output_and_exits_with_the_commands_code(tmp_path):
    async def go():
        client = await started(fake_api())
        try:
            env = kubeconfig(tmp_path, client.port)
            failed = await kubectl(env, "exec", "web", "--", *SH_3)
            echoed = await kubectl(env, "exec", "-i", "web", "--", "cat", stdin=b"through stdin\n")
            return failed, echoed
        finally:
            await client.close()
    failed, echoed = run(go())
    assert without_kubectls_early_message_log(failed) == (3, "out\n", "err\ncommand terminated with exit code 3\n")
    assert without_kubectls_early_message_log(echoed) == (0, "through stdin\n", "")   # stdin EOF: v5's close frame


# The server's empty "connected" message on the lowest writable channel (wsstream's Conn.Open
# writes it, as a real API server does) may reach kubectl's read loop before kubectl has made
# its streams; this kubectl's client-go then logs that it discards it. A race inside kubectl,
# met under load: the line is left out, everything else must be exact.
UNKNOWN_STREAM = re.compile(r"^E\d{4} [\d:.]+ +\d+ websocket\.go:\d+\] Unknown stream id \d+, discarding message\n",
                            re.M)


def without_kubectls_early_message_log(result):
    code, out, err = result
    return code, out, UNKNOWN_STREAM.sub("", err)


@needs_kubectl
def test_kubectl_logs_plain_and_tail(tmp_path):
    log = tmp_path / "default_web_main.log"
    log.write_bytes(b"one\ntwo\nthree\n")

    async def go():
        client = await started(fake_api(log))
        try:
            env = kubeconfig(tmp_path, client.port)
            return (await kubectl(env, "logs", "web"), await kubectl(env, "logs", "web", "--tail=2"),
                    await kubectl(env, "logs", "web", "--previous"))
        finally:
            await client.close()
    plain, tail, previous = run(go())
    assert plain == (0, "one\ntwo\nthree\n", "")
    assert tail == (0, "two\nthree\n", "")
    assert previous == (1, "", 'Error from server (BadRequest): previous terminated container "main" in pod "web" '
                               'not found\n')


# --- logs ---------------------------------------------------------------------------------------

async def get_log(path, running=lambda: False, **query):
    async def handler(request):
        q = request.query
        number = lambda k: int(q[k]) if k in q else None  # noqa: E731
        return await streams.pod_logs(request, path, follow=flag(request, "follow"), tail_lines=number("tailLines"),
                                      limit_bytes=number("limitBytes"), timestamps=flag(request, "timestamps"),
                                      previous=flag(request, "previous"), running=running)
    client = await started(app_with(("GET", "/log", handler)))
    try:
        r = await client.get("/log", params={k: str(v).lower() if isinstance(v, bool) else str(v)
                                             for k, v in query.items()})
        return r.status, r.headers.get("Content-Type"), await r.read()
    finally:
        await client.close()


def test_logs_plain_tail_limit_and_a_missing_file(tmp_path):
    log = tmp_path / "default_web_main.log"
    log.write_bytes(b"a\nb\nc\n")
    assert run(get_log(log)) == (200, "text/plain", b"a\nb\nc\n")
    assert run(get_log(log, tailLines=2))[2] == b"b\nc\n"
    assert run(get_log(log, tailLines=0))[2] == b""
    assert run(get_log(log, tailLines=10))[2] == b"a\nb\nc\n"
    assert run(get_log(log, limitBytes=3))[2] == b"a\nb"            # cut mid-line, as kubelet's LimitWriter
    assert run(get_log(log, tailLines=2, limitBytes=3))[2] == b"b\nc"
    unterminated = tmp_path / "default_web_other.log"
    unterminated.write_bytes(b"a\nb\nc")
    assert run(get_log(unterminated, tailLines=2))[2] == b"b\nc"
    assert run(get_log(tmp_path / "default_web_none.log")) == (200, "text/plain", b"")


@pytest.mark.parametrize("chunk", [1, 2, 3, 65536])
def test_tail_finds_the_last_lines_from_the_end_across_read_blocks(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(streams, "LOG_CHUNK", chunk)
    for content in (b"", b"a", b"a\n", b"a\nb", b"a\nb\n", b"\n\n", b"ab\ncd\nef\n", b"ab\ncd\nef"):
        path = tmp_path / "x.log"
        path.write_bytes(content)
        lines = re.findall(rb"[^\n]*\n|[^\n]+$", content)
        for n in range(5):
            with open(path, "rb") as f:
                got = content[streams._tail_offset(f, len(content), n):]
            assert got == b"".join(lines[max(0, len(lines) - n):] if n else []), (content, n)


def test_logs_timestamps_are_rfc3339_nano_fixed_and_count_against_the_limit(tmp_path):
    log = tmp_path / "default_web_main.log"
    log.write_bytes(b"a\nb\n")
    os.utime(log, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    stamp = b"2023-11-14T22:13:20.123456789Z "      # the file's mtime: no line carries its own
    assert run(get_log(log, timestamps=True))[2] == stamp + b"a\n" + stamp + b"b\n"
    assert run(get_log(log, timestamps=True, limitBytes=36))[2] == stamp + b"a\n" + stamp[:3]


def test_logs_previous_and_bad_options_are_the_apis_errors(tmp_path):
    log = tmp_path / "default_web_main.log"
    status, ctype, body = run(get_log(log, previous=True))
    assert (status, ctype) == (400, "application/json")
    assert json.loads(body) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": 'previous terminated container "main" in pod "web" not found',
                                "reason": "BadRequest", "code": 400}
    status, _, body = run(get_log(log, tailLines=-1))
    assert status == 422
    assert json.loads(body)["message"] == ('PodLogOptions "web" is invalid: tailLines: Invalid value: -1: must be '
                                           'greater than or equal to 0')
    assert json.loads(body)["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "tailLines",
                                                      "message": "Invalid value: -1: must be greater than or equal to 0"}]


def test_follow_streams_appended_lines_and_ends_when_the_container_stops(tmp_path):
    log = tmp_path / "default_web_main.log"
    log.write_bytes(b"first\n")
    state = {"running": True}

    async def go():
        async def handler(request):
            return await streams.pod_logs(request, log, follow=True, tail_lines=None, limit_bytes=None,
                                          timestamps=False, previous=False, running=lambda: state["running"])
        client = await started(app_with(("GET", "/log", handler)))
        try:
            r = await client.get("/log")
            assert r.headers.get("Transfer-Encoding") == "chunked"
            got = [await r.content.readline()]
            with open(log, "ab") as f:
                f.write(b"second\n")
            got.append(await r.content.readline())
            with open(log, "ab") as f:
                f.write(b"last words\n")
            state["running"] = False           # stopped after writing: the rest still comes
            got.append(await r.content.read())
            return got
        finally:
            await client.close()
    assert run(go()) == [b"first\n", b"second\n", b"last words\n"]


def test_follow_ends_when_the_client_goes(tmp_path):
    log = tmp_path / "default_web_main.log"
    log.write_bytes(b"x\n")
    async def go():
        done = asyncio.Event()

        async def handler(request):
            try:
                return await streams.pod_logs(request, log, follow=True, tail_lines=None, limit_bytes=None,
                                              timestamps=False, previous=False, running=lambda: True)
            finally:
                done.set()
        client = await started(app_with(("GET", "/log", handler)))
        try:
            r = await client.get("/log")
            assert await r.content.readline() == b"x\n"
            r.close()
            await asyncio.wait_for(done.wait(), 10)
            return True
        finally:
            await client.close()
    assert run(go())


# --- port-forward -------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="port-forward dials inside a network namespace (root)")


@pytest.fixture
def pod_netns():
    """A namespace with lo up and TCP echo servers, served by threads: 8080 answers each read
    prefixed 'got: ', 8081 as it is."""
    name = f"nlt-pf-{uuid.uuid4().hex[:8]}"
    ns.create(name)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        listeners = []
        for port, prefix in ((8080, b"got: "), (8081, b"")):
            with ns.entered(name):
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(16)
            listeners.append((listener, prefix))

        def serve(listener, prefix):
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return

                def echo(c=conn):
                    with c:
                        while data := c.recv(65536):
                            c.sendall(prefix + data)
                threading.Thread(target=echo, daemon=True).start()
        threads = [threading.Thread(target=serve, args=lp, daemon=True) for lp in listeners]
        for t in threads:
            t.start()
        yield name
        for listener, _ in listeners:
            listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for t in threads:
            t.join(5)
    finally:
        ns.delete(name)
    assert name not in ns.list_names()


def test_the_spdy_dictionary_is_spdystreams():
    # sha256 of moby/spdystream spdy/dictionary.go's headerDictionary bytes (1423 of them).
    assert len(streams.SPDY_DICTIONARY) == 1423
    assert hashlib.sha256(streams.SPDY_DICTIONARY).hexdigest() == \
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


@needs_root
@needs_kubectl
def test_kubectl_port_forward_through_the_spdy_websocket_tunnel(tmp_path, pod_netns):
    async def go():
        client = await started(fake_api(netns=pod_netns))
        try:
            env = kubeconfig(tmp_path, client.port)
            proc = await asyncio.create_subprocess_exec(KUBECTL, "port-forward", "pod/web", ":8080", ":8081", ":9",
                                                        "--address", "127.0.0.1", env=env,
                                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                local = {}
                while len(local) < 3:
                    line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
                    m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", line)
                    assert m, line
                    local[int(m.group(2))] = int(m.group(1))
                answers = []
                for text in (b"hello", b"again"):       # two connections: two stream pairs
                    r, w = await asyncio.open_connection("127.0.0.1", local[8080])
                    w.write(text)
                    await w.drain()
                    answers.append(await asyncio.wait_for(r.readexactly(5 + len(text)), 10))
                    w.close()
                # 4 MiB both ways at once: the tunnel's frames and queues under load.
                bulk = os.urandom(4 << 20)
                r, w = await asyncio.open_connection("127.0.0.1", local[8081])

                async def push():
                    w.write(bulk)
                    await w.drain()
                pushing = asyncio.ensure_future(push())
                echoed = await asyncio.wait_for(r.readexactly(len(bulk)), 30)
                await pushing
                w.close()
                answers.append(echoed == bulk)
                # Nothing listens on 9 in the pod: kubelet's error reaches kubectl, which gives up.
                r, w = await asyncio.open_connection("127.0.0.1", local[9])
                w.write(b"x")
                await w.drain()
                await asyncio.wait_for(r.read(), 10)
                w.close()
                code = await asyncio.wait_for(proc.wait(), 20)
                err = (await proc.stderr.read()).decode()
                return answers, code, err
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        finally:
            await client.close()
    answers, code, err = run(go())
    assert answers == [b"got: hello", b"got: again", True]
    assert f"an error occurred forwarding {{}} -> 9: error forwarding port 9 to pod {pod_netns}, uid : " \
           f"failed to execute portforward in network namespace \"/run/netns/{pod_netns}\": failed to connect to " \
           f"localhost:9 inside namespace \"{pod_netns}\", IPv4: dial tcp4 127.0.0.1:9: connect: connection refused " \
           f"IPv6 dial tcp6 [::1]:9: connect: " in re.sub(r"forwarding \d+ -> 9", "forwarding {} -> 9", err.replace('\\"', '"')), err
    assert code == 1 and "lost connection to pod" in err


@needs_root
def test_python_client_port_forward_over_the_v4_channel_protocol(pod_netns):
    from kubernetes.client import Configuration
    from kubernetes.stream.ws_client import PortForward, create_websocket

    async def go():
        client = await started(fake_api(netns=pod_netns))
        try:
            url = f"ws://127.0.0.1:{client.port}/api/v1/namespaces/default/pods/web/portforward?ports=8080"

            def talk():
                ws = create_websocket(Configuration(), url, headers={"sec-websocket-protocol": "v4.channel.k8s.io"})
                pf = PortForward(ws, [8080])
                s = pf.socket(8080)
                s.settimeout(10)
                s.sendall(b"ping")
                got = b""
                while len(got) < 9:
                    got += s.recv(100)
                pf.close()
                return got
            return await asyncio.to_thread(talk)
        finally:
            await client.close()
    assert run(go()) == b"got: ping"


@needs_root
def test_v4_port_forward_frames_and_the_error_channel(pod_netns):
    async def go():
        client = await started(fake_api(netns=pod_netns))
        try:
            ws = await client.ws_connect("/api/v1/namespaces/default/pods/web/portforward?ports=8080,9",
                                         protocols=("v4.channel.k8s.io",))
            frames = [(await ws.receive()).data for _ in range(4)]
            error = (await ws.receive()).data            # nothing listens on 9
            await ws.send_bytes(b"\x00abc")
            answer = (await ws.receive()).data
            await ws.close()
            return frames, error, answer
        finally:
            await client.close()
    frames, error, answer = run(go())
    # Each channel opens with its port, uint16 little endian: 8080 = 0x1f90.
    assert frames == [b"\x00\x90\x1f", b"\x01\x90\x1f", b"\x02\x09\x00", b"\x03\x09\x00"]
    assert error.startswith(b"\x03error forwarding port 9 to pod ")
    assert answer == b"\x00got: abc"
