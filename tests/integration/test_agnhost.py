"""agnhost netexec as Kubernetes' e2e tests meet it: long requests are answered as Go's
net/http answers them (a head of up to 1 MiB; beyond it, 431)."""

import textwrap

import pytest

from .conftest import lab_for_module

REQUEST = textwrap.dedent("""
    import socket, sys
    size, ip = int(sys.argv[1]), sys.argv[2]
    s = socket.create_connection((ip, 8080), timeout=10)
    s.sendall(b"GET /echo?msg=" + b"x" * size + b" HTTP/1.1\\r\\nHost: b\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    print(head.split(b"\\r\\n")[0].decode(), len(body))
""")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_for_module("two-nodes.yaml", tmp_path_factory) as lab:
        yield lab


@pytest.mark.parametrize("size, answer", [(10_000, "HTTP/1.1 200 OK 10000"), (500_000, "HTTP/1.1 200 OK 500000"),
                                          (2_000_000, "HTTP/1.1 431 Request Header Fields Too Large 35")])
def test_a_long_request_line_is_answered_as_netexec_answers_it(lab, size, answer):
    b = lab.state().pod("default", "b")
    out = lab.exec("a", ["python3", "-c", REQUEST, str(size), b.ip], capture_output=True, text=True)
    assert out.stdout.strip() == answer, out.stderr
