"""Every kernel and file name netlab creates, in one place.

Scheme (a lab named L):
  network namespaces  L-lan            the LAN: bridge br0, one port per node and the client
                      L-external       a client host on the LAN (a laptop next to the cluster)
                      <node name>      kind names nodes L-control-plane, L-worker, L-worker2 ...
                      L-<ns>.<pod>     a pod; a Kubernetes namespace holds no dot, so this
                                       never collides with a node or another pod
  links inside a node mirror a real node: eth0, cni0, flannel.1, veth<8 hex>.
  links inside the LAN are named after the node without the lab prefix (worker2), so
  `bridge link` in L-lan reads like a switch's port list; at most 15 characters (IFNAMSIZ-1).
  state               /var/lib/netlab/L/  (state.json, lock, per-node files as on a node)
Every netns name starts with "L-", so a sweeper can find a crashed lab's leftovers.
"""

import hashlib
import os
import re
from pathlib import Path

IFNAMSIZ = 15
STATE_ROOT = Path(os.environ.get("NETLAB_STATE_DIR", "/var/lib/netlab"))
NETNS_ETC = Path("/etc/netns")

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# Interface names a real node has; netlab creates the same.
UPLINK = "eth0"          # a node's (and the external client's) port on the LAN
CNI_BRIDGE = "cni0"
POD_IFNAME = "eth0"
LAN_BRIDGE = "br0"


def flannel_device(vni):
    return f"flannel.{vni}"


def lan_netns(lab):
    return f"{lab}-lan"


def external_netns(lab):
    return f"{lab}-external"


def node_names(lab, roles):
    """Node names as kind gives them: <lab>-control-plane, <lab>-worker, <lab>-worker2, ..."""
    counts, names = {}, []
    for role in roles:
        counts[role] = counts.get(role, 0) + 1
        n = counts[role]
        names.append(f"{lab}-{role}" + (str(n) if n > 1 else ""))
    return names


def pod_netns(lab, namespace, pod):
    return f"{lab}-{namespace}.{pod}"


def is_pod_netns(lab, netns):
    """A pod's namespace: "<lab>-<namespace>.<pod>" (lab and node names hold no dot)."""
    return netns.startswith(lab + "-") and "." in netns[len(lab) + 1:]


def lan_port(lab, node):
    """The LAN-side end of a node's eth0: the node name without the lab prefix, if it fits."""
    short = node[len(lab) + 1:] if node.startswith(lab + "-") else node
    if len(short) <= IFNAMSIZ:
        return short
    return "n" + hashlib.sha256(node.encode()).hexdigest()[:IFNAMSIZ - 1]


def _lb_tag(service_key):
    return hashlib.sha256(service_key.encode()).hexdigest()[:8]


def lb_netns(lab, service_key):
    """A cloud load balancer's machine: one per LoadBalancer Service, tagged by its key."""
    return f"{lab}-lb-{_lb_tag(service_key)}"


def lb_lan_port(service_key):
    """The LAN-side end of a load balancer's uplink."""
    return f"lb{_lb_tag(service_key)}"


def veth_name(random_hex):
    """The host end of a pod's veth, as the CNI bridge plugin names it: veth + 8 hex."""
    return f"veth{random_hex[:8]}"


def state_dir(lab):
    return STATE_ROOT / lab


def node_dir(lab, node):
    """Files a real node keeps (host-local records, flannel's subnet.env), under the lab."""
    return state_dir(lab) / "nodes" / node


def belongs_to(lab, netns):
    return netns.startswith(lab + "-")


def check_lab(name):
    """A lab name reaches paths (/var/lib/netlab/<lab>) and every kernel name: it must be a
    DNS-1123 label of at most 32 characters, or nothing is done with it."""
    from netlab.errors import NetlabError
    if not isinstance(name, str) or not DNS1123_LABEL.match(name) or len(name) > 32:
        raise NetlabError(f"{name!r} is not a lab name (a DNS-1123 label of at most 32 characters)")
    return name
