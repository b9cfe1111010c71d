"""kube-proxy's chain-name hashing, against the check values in shared/REFERENCE.md."""

import pytest

from netlab import kube_proxy


@pytest.mark.parametrize("ns, name, port, proto, chain", [
    ("ns1", "svc1", "p80", "TCP", "KUBE-SVC-XPGD46QRK7WJZT7O"),
    ("ns1", "svc1", None, "TCP", "KUBE-SVC-AQI2S6QIMU7PVVRP"),
    ("kube-system", "kube-dns", "dns", "UDP", "KUBE-SVC-TCOU7JCQXEZGVUNU"),
    ("default", "kubernetes", "https", "TCP", "KUBE-SVC-NPX46M4PTMTKRN6Y"),
])
def test_service_chain(ns, name, port, proto, chain):
    assert kube_proxy.service_chain("KUBE-SVC-", kube_proxy.port_key(ns, name, port, proto)) == chain


def test_endpoint_chain():
    key = kube_proxy.port_key("ns1", "svc1", "p80", "TCP")
    assert kube_proxy.endpoint_chain(key, "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
