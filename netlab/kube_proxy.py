"""kube-proxy, iptables mode. So far: its chain names (the rules come with the Services work).

kube-proxy names per-service chains by hashing: the first 16 characters of the base32
(standard alphabet) of sha256("<namespace>/<name>[:<portName>]<protocol lowercase>"), and
per-endpoint chains by the same over that string followed by "<ip>:<port>".
"""

import base64
import hashlib


def port_key(namespace, name, port_name, protocol):
    return f"{namespace}/{name}" + (f":{port_name}" if port_name else "") + protocol.lower()


def _hash(text):
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def service_chain(prefix, key):
    """KUBE-SVC-, KUBE-SVL-, KUBE-EXT- or KUBE-FW- + the service port's hash."""
    return f"{prefix}{_hash(key)}"


def endpoint_chain(key, endpoint):
    """KUBE-SEP- + the hash of the service port and the endpoint "ip:port"."""
    return f"KUBE-SEP-{_hash(key + endpoint)}"
