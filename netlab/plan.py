"""The whole lab's desired kernel state, composed from each component's planner.

Order matters for creation: the LAN first (it creates every node's eth0), the external
client, then nodes (each creates its pods' veth pairs), then pods.
"""

from netlab import names
from netlab.addons import cloud
from netlab.controllers import cluster
from netlab.node import cni, underlay
from netlab.node.flannel import flanneld as flannel
from netlab.node.netpol import kube_router
from netlab.node.proxy import iptables as kube_proxy
from netlab.node.proxy import nftables as kube_proxy_nft
from netlab.observe import faults
from netlab.values.desired import NetnsPlan, merge

NODE_SYSCTLS = (
    ("net/ipv4/ip_forward", "1"),
    # kubeadm's prerequisite: bridged pod traffic goes through iptables, so a same-node
    # ClusterIP reply crossing cni0 is un-NATed by conntrack.
    ("net/bridge/bridge-nf-call-iptables", "1"),
    ("net/bridge/bridge-nf-call-ip6tables", "1"),
)
# A dual-stack node: kind sets both in its nodes (IPv6 on, the node routes IPv6 as it routes
# IPv4). With forwarding on the kernel takes no router advertisements (accept_ra 1).
NODE_SYSCTLS6 = (
    ("net/ipv6/conf/all/disable_ipv6", "0"),
    ("net/ipv6/conf/all/forwarding", "1"),
)


def node_plan(state, node, rules=True, netpol=None):
    """`rules` False leaves kube-proxy's and kube-router's chains out; `netpol`: kube-router's
    inputs and compiled policies (kube_router.read), when the caller plans several nodes."""
    kubelet = NetnsPlan(node.netns, sysctls=NODE_SYSCTLS + (NODE_SYSCTLS6 if state.cluster.ipv6 else ()),
                        owner="kubelet")
    veths = NetnsPlan(node.netns, links=tuple(cni.host_veth(state, p) for p in state.pods_on(node.name)), owner="cni")
    # kube-router, then kube-proxy, then kube-router's ACCEPT, then flannel: the order their
    # rules take in the built-in chains (kube-router keeps its jump at position 1, kube-proxy
    # inserts its jumps at the top, k3s's kube-router puts its ACCEPT after the last KUBE-
    # rule, flanneld appends).
    proxy = kube_proxy_nft if kube_proxy_nft.uses_nftables(state.cluster) else kube_proxy
    policy = (kube_router.node_plan(state, node, *(netpol or kube_router.read(state))),) if rules else ()
    accept = (kube_router.accept_plan(node, state.cluster),) if rules else ()
    return merge(node.netns, underlay.uplink(state, node.netns, node.ip), kubelet, cni.node_plan(state, node),
                 *policy, proxy.node_plan(state, node, rules), *accept, flannel.node_plan(state, node), veths)


def lab_plans(state, lb_health=None, node_rules=True, netpol=None):
    """lb_health: the cloud's last health checks ({service: [nodes]}); None: every node.
    node_rules=False leaves kube-proxy's and kube-router's tables out of the node plans (a
    partial sync plans only what changed); `netpol`: kube_router.read(state), if made already."""
    netpol = (netpol or kube_router.read(state)) if node_rules else None
    lbs = cluster.balancers(state)
    plans = [underlay.lan_plan(state, [(names.lb_lan_port(s.key), names.lb_netns(state.lab, s.key)) for s in lbs]),
             underlay.external_plan(state)]
    plans += [cloud.lb_plan(state, s, cloud.healthy_nodes(state, s, lb_health or {})) for s in lbs]
    plans += [node_plan(state, n, node_rules, netpol) for n in state.nodes]
    plans += [cni.pod_plan(state, p) for p in state.scheduled_pods()]     # a Pending pod has no sandbox
    return faults.adjust(state, plans)


def describe(plans):
    """A readable dump of plans, for `netlab up --dry-run`."""
    from netlab.values.iptables import restore_text
    from netlab.values.nftables import script
    out = []
    for p in plans:
        out.append(f"# netns {p.netns}")
        for l in p.links:
            out.append(f"link {l.ifname} {l.kind}" + "".join(
                f" {k} {v}" for k, v in (("mtu", l.mtu), ("master", l.master), ("address", l.address)) if v)
                + (" hairpin on" if l.hairpin else "")
                + (f" peer {l.peer.ifname}@{l.peer.netns}" if l.peer else "")
                + (f" id {l.vxlan.vni} local {l.vxlan.local} dev {l.vxlan.dev} dstport {l.vxlan.port}"
                   f" {'learning' if l.vxlan.learning else 'nolearning'}" if l.vxlan else ""))
        for l in p.links:
            if l.wireguard:                     # as `wg set` takes it; peers come as each node's flanneld makes its key
                w = l.wireguard
                out.append(f"wg set {l.ifname} private-key {w.private_key_file} listen-port {w.listen_port}"
                           + "".join(f" peer {x.public_key} endpoint {x.endpoint} allowed-ips {','.join(x.allowed_ips)}"
                                     for x in w.peers))
        out += [f"addr {a}" for a in p.addrs]
        out += [f"neigh {n}" for n in p.neighs]
        out += [f"fdb {f}" for f in p.fdb]
        out += [f"route {r}" for r in p.routes]
        out += [f"sysctl {k.replace('/', '.')}={v}" for k, v in p.sysctls]
        if p.iptables:
            out.append(restore_text(p.iptables).rstrip())
        if p.ip6tables:
            out += ["# ip6tables-restore"] + [restore_text(p.ip6tables).rstrip()]
        for table in p.nftables.values():
            out += script(table)
        out.append("")
    return "\n".join(out)
