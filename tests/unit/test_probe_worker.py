"""The probe worker answers every call, whatever the peer sent."""


def test_the_probe_workers_status_line_parser_takes_whatever_a_server_sends():
    from netlab.observe.probe_worker import status_of
    assert status_of(b"HTTP/1.1 200 OK\r\nContent-Length: 2") == 200
    assert status_of(b"HTTP/1.0 404 Not Found") == 404
    for head in (b"HTTP/1.1", b"HTTP/1.1 OK", b"HTTP/1.1 20x Odd", b"garbage", b"", b"HTTP/1.1 2000 x"):
        assert status_of(head) == 0
