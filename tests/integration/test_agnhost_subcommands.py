"""The pods of Kubernetes' NetworkPolicy e2e suite, pasted as they are (test/e2e/network/netpol:
model.go's containers, kubemanager's probe), in a real lab.

A pod of the model runs one agnhost container per port and protocol, `serve-hostname --tcp|--udp
--http=false --port P`; the probe is `/agnhost connect HOST:PORT --timeout=1s --protocol=P` run
by `kubectl exec` in another pod. Expected values are agnhost's: serve_hostname.go writes the
hostname and closes (TCP) or sends it back (UDP); connect.go exits 0 when it connected (UDP:
when an answer came), else 1 with "REFUSED", "TIMEOUT" or "REFUSED: read udp L->R: read:
connection refused" on stderr; porter answers each SERVE_*_PORT_N's value.
"""

import datetime
import ipaddress
import os
import re
import subprocess
import textwrap

import pytest

from netlab import names
from netlab.node import kubelet

from .conftest import lab_for_module, wait_for

KUBECTL = "/usr/bin/kubectl"
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"


def model_container(port, protocol, form):
    """model.go's Container.Spec(); `form` "command" as upstream writes it, "args" as the
    image's ENTRYPOINT (/agnhost) takes it."""
    words = ["serve-hostname", f"--{protocol.lower()}", "--http=false", "--port", str(port)]
    run = f"command: {['/agnhost', *words]}" if form == "command" else f"args: {words}"
    return (f"    - name: cont-{port}-{protocol.lower()}\n      image: {AGNHOST}\n      {run}\n"
            f"      ports: [{{containerPort: {port}, name: serve-{port}-{protocol.lower()}, protocol: {protocol}}}]\n")


def model_pod(name, node, extra=""):
    containers = "".join(model_container(port, proto, "command" if port == 80 else "args")
                         for port in (80, 81) for proto in ("TCP", "UDP"))
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: {name}, namespace: x, labels: {{pod: {name}}}}}
        spec:
          nodeName: {node}
          tolerations: [{{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}}]
          terminationGracePeriodSeconds: 0
          containers:
        """) + containers + extra


LAB = "\n---\n".join([
    "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: agn\n"
    "nodes: [{role: control-plane}, {role: worker}]\n",
    model_pod("a", "agn-worker"),
    model_pod("b", "agn-control-plane",
              f"    - name: cont-http\n      image: {AGNHOST}\n      args: [serve-hostname, --close]\n"
              f"      ports: [{{containerPort: 9376}}]\n"),
    textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: c, namespace: x, labels: {{pod: c}}}}
        spec:
          nodeName: agn-worker
          containers: [{{name: both, image: {AGNHOST}, command: [/agnhost, serve-hostname, --tcp]}}]
        """),
    textwrap.dedent("""\
        apiVersion: v1
        kind: Service
        metadata: {name: s-x-a, namespace: x}
        spec:
          selector: {pod: a}
          ports:
            - {name: service-port-tcp-80, protocol: TCP, port: 80}
            - {name: service-port-udp-80, protocol: UDP, port: 80}
            - {name: service-port-tcp-81, protocol: TCP, port: 81}
            - {name: service-port-udp-81, protocol: UDP, port: 81}
        """),
])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    labfile = tmp_path_factory.mktemp("agnhost-lab") / "agn.yaml"
    labfile.write_text(LAB)
    with lab_for_module(labfile, tmp_path_factory) as lab:
        yield lab


@pytest.fixture(scope="module")
def pods(lab):
    state = lab.state()
    return {p.name: p for p in state.pods if p.namespace == "x"}


def connect(lab, source, target, protocol, program="agnhost", timeout="1s"):
    out = lab.exec(f"x/{source}", [program, "connect", target, f"--timeout={timeout}", f"--protocol={protocol}"],
                   capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.parametrize("program", ["agnhost", "/agnhost"])
@pytest.mark.parametrize("port", [80, 81])
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_connect_reaches_every_port_the_model_serves(lab, pods, program, port, protocol):
    assert connect(lab, "b", f"{pods['a'].ip}:{port}", protocol, program) == (0, "")


def test_connect_to_a_closed_port_is_refused_with_upstreams_words(lab, pods):
    a, b = pods["a"], pods["b"]
    assert connect(lab, "b", f"{a.ip}:82", "tcp") == (1, "REFUSED\n")
    code, err = connect(lab, "b", f"{a.ip}:82", "udp")
    assert code == 1
    assert re.fullmatch(rf"REFUSED: read udp {re.escape(b.ip)}:\d+->{re.escape(a.ip)}:82: read: connection refused\n",
                        err), err


def test_connect_times_out_where_nothing_answers(lab, pods):
    a, b = pods["a"], pods["b"]
    taken = {p.ip for p in lab.state().pods}
    # an address of a's node's pod range that no pod has: its ARP goes unanswered inside the lab
    silent = next(str(ip) for ip in ipaddress.ip_network(f"{a.ip}/24", strict=False).hosts()
                  if str(ip) not in taken and ip.packed[-1] > 200)
    assert connect(lab, "b", f"{silent}:80", "tcp") == (1, "TIMEOUT\n")
    code, err = connect(lab, "b", f"{silent}:80", "udp")
    assert code == 1
    assert re.fullmatch(rf"TIMEOUT: read udp {re.escape(b.ip)}:\d+->{re.escape(silent)}:80: i/o timeout\n", err), err


def test_connect_names_a_name_that_does_not_resolve(lab):
    assert connect(lab, "b", "s-x-nosuch.x.svc.cluster.local:80", "tcp") == (
        1, "DNS: lookup s-x-nosuch.x.svc.cluster.local on 10.96.0.10:53: no such host\n")


SERVE_HOSTNAME_CLIENT = textwrap.dedent("""
    import socket, sys
    ip, port = sys.argv[1], int(sys.argv[2])
    t = socket.create_connection((ip, port), timeout=5)
    data = b""
    while chunk := t.recv(100):          # serve_hostname.go writes the hostname, then closes
        data += chunk
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    u.sendto(b"anything at all", (ip, port))
    print(data.decode(), u.recv(100).decode())
""")


@pytest.mark.parametrize("port", [80, 81])
def test_serve_hostname_answers_the_pods_hostname_over_tcp_and_udp(lab, pods, port):
    out = lab.exec("x/b", ["python3", "-c", SERVE_HOSTNAME_CLIENT, pods["a"].ip, str(port)],
                   capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["a", "a"], out.stderr


def test_serve_hostname_over_http_answers_any_path_and_closes_with_close(lab, pods):
    out = lab.exec("x/a", ["curl", "-si", "-m", "5", f"http://{pods['b'].ip}:9376/any/path?x=1"],
                   capture_output=True, text=True, timeout=60)
    head, _, body = out.stdout.partition("\n\n")          # text mode: curl's CRLFs read as newlines
    assert head.split("\n")[0] == "HTTP/1.1 200 OK"
    assert "Connection: close" in head.split("\n")
    assert body == "b"


@pytest.mark.parametrize("port", [80, 81])
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_the_e2e_probe_reaches_the_pod_through_its_service(lab, pods, port, protocol):
    cluster_ip = lab.state().service("x", "s-x-a").cluster_ip
    assert connect(lab, "b", f"{cluster_ip}:{port}", protocol, "/agnhost") == (0, "")
    assert connect(lab, "b", f"s-x-a.x.svc.cluster.local:{port}", protocol) == (0, "")


@pytest.fixture
def kubectl(lab, tmp_path):
    config = tmp_path / "kubeconfig"
    config.write_text(lab.kubeconfig())
    config.chmod(0o600)

    def run(*args):
        return subprocess.run([KUBECTL, "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache"), *args],
                              capture_output=True, text=True, timeout=60)
    return run


def test_kubectl_exec_runs_upstreams_probe_as_it_is(kubectl, pods):
    a = pods["a"]
    ok = kubectl("exec", "-n", "x", "b", "-c", "cont-80-tcp", "--", "/agnhost", "connect", f"{a.ip}:80",
                 "--timeout=1s", "--protocol=tcp")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    refused = kubectl("exec", "-n", "x", "b", "-c", "cont-80-tcp", "--", "/agnhost", "connect", f"{a.ip}:82",
                      "--timeout=1s", "--protocol=tcp")
    assert refused.returncode == 1
    assert refused.stderr == "REFUSED\ncommand terminated with exit code 1\n"


def test_a_container_upstream_refuses_exits_with_its_message(lab, pods):
    c = pods["c"]
    log = names.state_dir(lab.name) / "logs" / "x_c_both.log"
    wait_for(lambda: not kubelet.pod_running(lab.state().pod("x", "c")), what="the container's exit")
    assert log.read_text().rstrip("\n").endswith(" Can't serve TCP/UDP mode and HTTP mode at the same time")
    assert connect(lab, "a", f"{c.ip}:9376", "tcp") == (1, "REFUSED\n")


def self_signed(directory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "porter")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return directory / "tls.crt", directory / "tls.key"


def test_porter_serves_each_variable_of_its_environment(lab, pods, tmp_path):
    b = pods["b"]
    cert, key = self_signed(tmp_path)
    env = {**os.environ, "SERVE_PORT_9000": "foo", "SERVE_UDP_PORT_9001": "bar", "SERVE_TLS_PORT_9443": "baz",
           "CERT_FILE": str(cert), "KEY_FILE": str(key)}
    porter = subprocess.Popen(kubelet.exec_argv(b, ["/agnhost", "porter"]), env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: connect(lab, "a", f"{b.ip}:9000", "tcp")[0] == 0 or porter.poll() is not None,
                 what="porter listening")
        assert porter.poll() is None, porter.stderr.read()
        in_a = lambda *argv: lab.exec("x/a", list(argv), capture_output=True, text=True, timeout=60)  # noqa: E731
        http = in_a("curl", "-s", "-m", "5", f"http://{b.ip}:9000/whatever")
        https = in_a("curl", "-sk", "-m", "5", f"https://{b.ip}:9443/")
        udp = in_a("python3", "-c", "import socket, sys; u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                   "u.settimeout(5); u.sendto(b'x', (sys.argv[1], 9001)); print(u.recv(100).decode())", b.ip)
        assert (http.stdout, https.stdout, udp.stdout) == ("foo", "baz", "bar\n")
    finally:
        porter.terminate()
        porter.wait(timeout=30)
