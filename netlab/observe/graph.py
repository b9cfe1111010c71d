"""A diagram of the live lab, drawn from what the kernel holds, through Graphviz.

Every box and line is read back from the namespaces: the LAN bridge and its ports, each
node's eth0, cni0 and flannel.1 with their addresses, every pod's eth0 and the cni0 it hangs
from, the VXLAN tunnels flannel.1's FDB entries point at, and each Service's cluster IP with
the endpoints kube-proxy DNATs it to, read from a node: in iptables mode its KUBE-SEP
chains (the nat table), in nftables mode its endpoint- chains (the `ip kube-proxy` table).
The lab's state only says which namespace is which, and which mode kube-proxy runs in.
In a dual-stack lab every box shows both families' addresses (IPv4 first, link-local ones
left out), flannel-v6.1 and its tunnels beside flannel.1's, and each Service's IPv6 ClusterIP
with its IPv6 endpoints, read from ip6tables (or the `ip6 kube-proxy` table).
"""

import re
import shutil
import subprocess

from netlab import names
from netlab.errors import EnvironmentProblem, NetlabError
from netlab.kernel import iptables
from netlab.kernel import netns as ns
from netlab.kernel import nft, wireguard
from netlab.node.flannel import flanneld
from netlab.node.flannel import wireguard as flannel_wg
from netlab.values.nftables import parse_listing

FORMATS = ("dot", "svg", "png")


def _links(netns):
    """name -> {"addrs": [...], "master": name or None, "state": up/down} read by netlink."""
    from pyroute2 import IPRoute
    with ns.entered(netns):
        ipr = IPRoute()
    with ipr:
        by_index = {l["index"]: l for l in ipr.get_links()}
        out = {}
        for l in by_index.values():
            name = l.get_attr("IFLA_IFNAME")
            master = by_index.get(l.get_attr("IFLA_MASTER"))
            out[name] = {"addrs": [], "master": master.get_attr("IFLA_IFNAME") if master else None,
                         "state": l.get_attr("IFLA_OPERSTATE")}
        for family in (2, 10):                       # AF_INET, then AF_INET6 (none but link-local in IPv4 labs)
            for a in ipr.get_addr(family=family):
                address = a.get_attr("IFA_ADDRESS")
                if family == 10 and (address.startswith("fe80:") or address == "::1"):
                    continue
                name = by_index[a["index"]].get_attr("IFLA_IFNAME")
                out[name]["addrs"].append(f"{address}/{a['prefixlen']}")
        fdb = [(f.get_attr("NDA_LLADDR"), f.get_attr("NDA_DST"), by_index[f["ifindex"]].get_attr("IFLA_IFNAME"))
               for f in ipr.get_neighbours(family=7)
               if f.get_attr("NDA_DST") and by_index.get(f["ifindex"]) is not None
               and by_index[f["ifindex"]].get_attr("IFLA_IFNAME").startswith("flannel")]
    return out, fdb


def _id(*parts):
    return '"' + ":".join(parts).replace('"', "") + '"'


def _label(name, info):
    addrs = ", ".join(a for a in info["addrs"] if not a.startswith("127."))
    down = "" if info["state"] in ("UP", "UNKNOWN") else f" ({info['state'].lower()})"
    return f"{name}{down}" + (f"\\n{addrs}" if addrs else "")


def services_from_rules(nat_save):
    """{(service, cluster IP): [endpoint ip:port]} from an `iptables-save -t nat` text."""
    svc_chain, chain_eps, sep_target = {}, {}, {}
    for line in nat_save.splitlines():
        m = re.match(r'-A KUBE-SERVICES -d (\S+)/(?:32|128) .*--comment "(\S+) cluster IP".* -j (KUBE-SV[CL]-\S+)', line)
        if m:
            svc_chain[(m.group(2), m.group(1))] = m.group(3)
        m = re.match(r"-A (KUBE-SV[CL]-\S+) .*-j (KUBE-SEP-\S+)$", line)
        if m:
            chain_eps.setdefault(m.group(1), []).append(m.group(2))
        m = re.match(r"-A (KUBE-SEP-\S+) .*--to-destination (\S+)", line)
        if m:
            sep_target[m.group(1)] = m.group(2)
    return {key: sorted({sep_target[s] for s in chain_eps.get(chain, []) if s in sep_target})
            for key, chain in svc_chain.items()}


# kube-proxy's nftables chain names: "<prefix><8 base32 characters>-<ns>/<name>/<protocol>/<port name>".
_SERVICE_CHAIN = re.compile(r"goto ((?:service|local)-[A-Z2-7]{8}-([^/]+)/([^/]+)/[^/]+/([^/]*))")
_ENDPOINT_CHAIN = re.compile(r"goto (endpoint-[^\s,}]+)")


def services_from_table(listing):
    """{(service, cluster IP): [endpoint ip:port]} from `nft list table ip kube-proxy`: a
    ClusterIP's element of the service-ips map goes to its service- (or local-) chain, whose
    rules go to endpoint- chains, each of which DNATs to one endpoint. The service is named
    as kube-proxy's iptables comments name it: "<ns>/<name>:<port name>"."""
    table = parse_listing(listing)
    cluster_ips = {key for key, _ in table.elements.get("cluster-ips", {})}
    out = {}
    for (key, _), value in table.elements.get("service-ips", {}).items():
        ip, m = key.split(" . ")[0], _SERVICE_CHAIN.fullmatch(value or "")
        if ip not in cluster_ips or not m:
            continue                                        # an external or load balancer IP
        svc = f"{m[2]}/{m[3]}" + (f":{m[4]}" if m[4] else "")
        endpoints = {c for rule in table.chains.get(m[1], (None, None, []))[2] for c in _ENDPOINT_CHAIN.findall(rule)}
        out[(svc, ip)] = sorted({d[1] for c in endpoints for rule in table.chains.get(c, (None, None, []))[2]
                                 if (d := re.search(r"\bdnat to (\S+)", rule))})
    return out


def services(state):
    """{(service, cluster IP): [endpoint ip:port]}, from the first node's kube-proxy rules (of
    both families in a dual-stack lab)."""
    node = state.nodes[0]
    out = {}
    for family in state.cluster.families:
        if state.cluster.kube_proxy_mode == "nftables":
            table = nft.list_table(node.netns, "ip6" if family == "IPv6" else "ip", "kube-proxy")
            out.update(services_from_table(table or ""))
        else:
            out.update(services_from_rules(iptables.save(node.netns, state.cluster.iptables_applier, "-t", "nat",
                                                         family=family)))
    return out


def _endpoint(ep):
    """An endpoint ip:port as kube-proxy's rules write it, split: [fd00::5]:80 too."""
    host, _, port = ep.rpartition(":")
    return host.strip("[]"), port


def dot(lab):
    """The Graphviz source of the live lab."""
    state = lab.state()
    out = ["digraph netlab {", "  graph [rankdir=LR, fontname=Helvetica, label=" + _id(f"lab {state.lab}") + "];",
           "  node [shape=box, style=rounded, fontname=Helvetica, fontsize=10];", "  edge [fontname=Helvetica, fontsize=9];"]
    lan_links, _ = _links(state.lan_netns())
    out.append(f"  {_id('lan', names.LAN_BRIDGE)} [label={_id(_label('LAN ' + names.LAN_BRIDGE, lan_links[names.LAN_BRIDGE]))}, shape=box3d];")
    pod_by_ip = {}
    tunnels = []
    for node in state.nodes:
        links, fdb = _links(node.netns)
        out.append(f"  subgraph {_id('cluster', node.name)} {{ label={_id(node.name)};")
        for dev in (names.UPLINK, names.CNI_BRIDGE, flanneld.device(state.cluster), flanneld.device6(state.cluster)):
            if dev in links:
                out.append(f"    {_id(node.name, dev)} [label={_id(_label(dev, links[dev]))}];")
        for pod in state.pods_on(node.name):
            if not ns.exists(pod.netns):
                continue
            pod_links, _ = _links(pod.netns)
            info = pod_links.get(names.POD_IFNAME, {"addrs": [], "state": "DOWN"})
            out.append(f"    {_id(pod.netns)} [label={_id(_label(pod.namespace + '/' + pod.name, info))}, shape=ellipse];")
            if links.get(pod.host_veth, {}).get("master") == names.CNI_BRIDGE:
                out.append(f"    {_id(pod.netns)} -> {_id(node.name, names.CNI_BRIDGE)} [label={_id(pod.host_veth)}, dir=none];")
            for a in info["addrs"]:
                pod_by_ip[a.split("/")[0]] = pod.netns
        out.append("  }")
        port = names.lan_port(state.lab, node.name)
        if lan_links.get(port, {}).get("master") == names.LAN_BRIDGE:
            style = "" if lan_links[port]["state"] == "UP" else ", style=dashed, color=red"
            out.append(f"  {_id(node.name, names.UPLINK)} -> {_id('lan', names.LAN_BRIDGE)} [label={_id(port)}, dir=none{style}];")
        tunnels += [(node.name, dst, dev) for _, dst, dev in fdb] + _wireguard_peers(state, node)
    by_ip = {ip: n.name for n in state.nodes for ip in n.ips}
    for src, dst, dev in tunnels:
        if dst in by_ip and src < by_ip[dst]:
            what = f"wireguard udp/{port}" if (port := _wireguard_port(state, dev)) else \
                f"vxlan vni {flanneld.vni(state.cluster)}"
            out.append(f"  {_id(src, dev)} -> {_id(by_ip[dst], dev)} "
                       f"[label={_id(what + (' (IPv6)' if ':' in dst else ''))}, dir=both, style=dotted, "
                       f"color=blue];")
    ext_links, _ = _links(state.external_netns())
    out.append(f"  {_id('external')} [label={_id(_label('external client', ext_links[names.UPLINK]))}, shape=house];")
    out.append(f"  {_id('external')} -> {_id('lan', names.LAN_BRIDGE)} [dir=none];")
    for n in ns.list_names():
        if n.startswith(f"{state.lab}-lb-"):
            lb_links, _ = _links(n)
            out.append(f"  {_id(n)} [label={_id(_label('load balancer', lb_links[names.UPLINK]))}, shape=cds];")
            out.append(f"  {_id(n)} -> {_id('lan', names.LAN_BRIDGE)} [dir=none];")
    by_service = {}
    for (svc, ip), endpoints in sorted(services(state).items()):
        by_service.setdefault(svc, []).append((ip, endpoints))
    for svc, families in by_service.items():          # one box a Service, its ClusterIPs IPv4 first
        ips = (chr(92) + "n").join(ip for ip, _ in sorted(families, key=lambda f: ":" in f[0]))
        out.append(f"  {_id('svc', svc)} [label={_id(svc + chr(92) + 'n' + ips)}, shape=hexagon, color=darkgreen];")
        for _, endpoints in families:
            for ep in endpoints:
                host, port = _endpoint(ep)
                target = pod_by_ip.get(host)
                if target:
                    out.append(f"  {_id('svc', svc)} -> {_id(target)} [label={_id(port)}, color=darkgreen];")
    out.append("}")
    return "\n".join(out) + "\n"


def render(lab, path):
    """Write the diagram; the format follows the file's suffix (.dot, .svg, .png)."""
    fmt = str(path).rsplit(".", 1)[-1].lower()
    if fmt not in FORMATS:
        raise NetlabError(f"{path}: the diagram can be written as {', '.join('.' + f for f in FORMATS)}")
    source = dot(lab)
    if fmt == "dot":
        with open(path, "w") as f:
            f.write(source)
        return
    if shutil.which("dot") is None:
        raise EnvironmentProblem("Graphviz's dot is not installed: run `make setup`")
    out = subprocess.run(["dot", f"-T{fmt}", "-o", str(path)], input=source, text=True, capture_output=True)
    if out.returncode != 0:
        raise NetlabError(f"dot failed: {out.stderr.strip()}")


def _wireguard_peers(state, node):
    """(node, peer's endpoint address, device) of each peer of the node's WireGuard devices, as `wg show` lists them."""
    c = state.cluster
    if c.flannel_backend != "wireguard":
        return []
    sockets = flannel_wg.socket_dir(state.lab, node.name) if state.wireguard == wireguard.USERSPACE else None
    out = []
    for dev, _ in flannel_wg.devices(c):
        have = wireguard.dump(node.netns, dev, sockets) or {"peers": {}}
        out += [(node.name, endpoint.rsplit(":", 1)[0].strip("[]"), dev) for _, endpoint, _, _ in have["peers"].values()
                if endpoint]
    return out


def _wireguard_port(state, dev):
    c = state.cluster
    if c.flannel_backend != "wireguard":
        return None
    return flannel_wg.port_of(c, "IPv6" if dev == flannel_wg.DEVICE6 else "IPv4")
