"""LoadBalancer Services from outside the cluster: the cloud's load balancers (one per
Service, health-checking the nodes) and MetalLB's layer 2 (topologies/loadbalancer.yaml)."""

import subprocess
import sys

from netlab import names
from netlab.addons import cloud
from netlab.controllers import ipam
from netlab.kernel import netns as ns

from .conftest import TOPOLOGIES, wait_for


def web_pods(lab):
    return {p.name for p in lab.state().pods if p.owner == "Deployment/web"}


def curl(lab, url, timeout=3):
    return lab.exec("external", ["curl", "-sS", "-m", str(timeout), url], capture_output=True, text=True)


def health(lab, svc):
    return cloud.read_health(lab.name).get(f"default/{svc}")


def metallb_file(tmp_path):
    f = tmp_path / "metallb.yaml"
    f.write_text((TOPOLOGIES / "loadbalancer.yaml").read_text().replace("mode: cloud}", "mode: metallb}"))
    return f


def test_a_cloud_load_balancer_per_service_reaches_every_backend(make_lab):
    lab = make_lab(TOPOLOGIES / "loadbalancer.yaml")
    state = lab.state()
    svc = state.service("default", "web-lb")
    assert svc.load_balancer_ip == "172.18.255.200"
    lbs = [n for n in ns.list_names() if n.startswith(f"{lab.name}-lb-")]
    assert len(lbs) == 2                                        # one machine per LoadBalancer Service
    wait_for(lambda: health(lab, "web-lb") == sorted(n.name for n in state.nodes))
    seen = {curl(lab, "http://172.18.255.200/hostname").stdout for _ in range(60)}
    assert seen == web_pods(lab)
    seen = curl(lab, "http://172.18.255.200/clientip").stdout.split(":")[0]
    assert seen != ipam.lan_external_ip(state.cluster.lan_cidr)  # ipMode Proxy: the client's address is not kept
    out = next(s for s in lab.get("services") if s["metadata"]["name"] == "web-lb")
    assert out["status"]["loadBalancer"]["ingress"] == [{"ip": "172.18.255.200", "ipMode": "Proxy"}]
    status = subprocess.run([sys.executable, "-m", "netlab.cli", "status"], capture_output=True, text=True).stdout
    row = next(line.split() for line in status.splitlines() if line.startswith(lab.name + " "))
    header = status.splitlines()[0].split()
    assert row[header.index("LOAD-BALANCERS")] == "2"


def test_an_unhealthy_node_is_skipped_and_comes_back(make_lab):
    lab = make_lab(TOPOLOGIES / "loadbalancer.yaml")
    state = lab.state()
    everyone = sorted(n.name for n in state.nodes)
    wait_for(lambda: health(lab, "web-lb") == everyone)
    # The control plane runs no web pod: cut off, it could only lose the load balancer's own
    # traffic (pods on a cut-off node would also lose what other nodes send them, as on a
    # real cluster until the node is declared NotReady).
    victim = state.node(f"{lab.name}-control-plane")
    assert not [p for p in state.pods_on(victim.name) if p.owner == "Deployment/web"]
    port = victim.name[len(lab.name) + 1:]                      # its port on the LAN switch
    lan = state.lan_netns()
    assert ns.run(lan, ["ip", "link", "set", port, "down"]).returncode == 0
    wait_for(lambda: health(lab, "web-lb") == [n for n in everyone if n != victim.name])
    svc = state.service("default", "web-lb")
    rules = ns.run(names.lb_netns(lab.name, svc.key), ["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert victim.ip not in rules
    answers = [curl(lab, "http://172.18.255.200/hostname", timeout=2) for _ in range(20)]
    assert all(a.returncode == 0 for a in answers)              # nothing is sent to the isolated node
    assert ns.run(lan, ["ip", "link", "set", port, "up"]).returncode == 0
    wait_for(lambda: health(lab, "web-lb") == everyone)
    rules = ns.run(names.lb_netns(lab.name, svc.key), ["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert victim.ip in rules


def test_local_policy_is_checked_through_the_health_check_node_port(make_lab):
    lab = make_lab(TOPOLOGIES / "loadbalancer.yaml")
    state = lab.state()
    svc = state.service("default", "web-local-lb")
    with_pods = sorted({p.node for p in state.pods if p.owner == "Deployment/web"})
    assert svc.health_check_node_port
    wait_for(lambda: health(lab, "web-local-lb") == with_pods)
    for node in state.nodes:
        code = lab.exec("external", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                     f"http://{node.ip}:{svc.health_check_node_port}/"], capture_output=True, text=True)
        assert code.stdout == ("200" if node.name in with_pods else "503")
    assert curl(lab, "http://172.18.255.201:8000/hostname").stdout in web_pods(lab)


def test_metallb_announces_from_one_node_and_keeps_the_client_address_under_local(make_lab, tmp_path):
    lab = make_lab(metallb_file(tmp_path))
    state = lab.state()
    outside = ipam.lan_external_ip(state.cluster.lan_cidr)
    local = state.service("default", "web-local-lb")
    assert local.load_balancer_ip_mode == "VIP"
    assert not [n for n in ns.list_names() if n.startswith(f"{lab.name}-lb-")]     # no cloud machines
    seen = curl(lab, f"http://{local.load_balancer_ip}:8000/clientip").stdout.split(":")[0]
    assert seen == outside
    neigh = lab.exec("external", ["ip", "neigh", "show", local.load_balancer_ip], capture_output=True, text=True).stdout
    macs = {n.name: lab.exec(n.name, ["cat", "/sys/class/net/eth0/address"], capture_output=True, text=True).stdout.strip()
            for n in state.nodes}
    announcer = next(name for name, mac in macs.items() if mac in neigh)
    assert announcer in {p.node for p in state.pods if p.owner == "Deployment/web"}
    assert {curl(lab, "http://172.18.255.200/hostname").stdout for _ in range(60)} == web_pods(lab)


def test_source_ranges_let_only_the_listed_clients_in(make_lab, tmp_path):
    lab = make_lab(metallb_file(tmp_path))
    ranged = tmp_path / "ranged.yaml"

    def apply(cidr):
        ranged.write_text(f"""
apiVersion: v1
kind: Service
metadata: {{name: ranged}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  loadBalancerSourceRanges: [{cidr}]
  ports: [{{name: http, port: 80, targetPort: http}}]
""")
        lab.apply([ranged])
        return lab.state().service("default", "ranged").load_balancer_ip

    ip = apply("10.0.0.0/8")                                  # the external client is not in it
    assert curl(lab, f"http://{ip}/hostname", timeout=2).returncode == 28     # dropped by KUBE-PROXY-FIREWALL
    assert apply("172.18.0.0/16") == ip
    assert curl(lab, f"http://{ip}/hostname").stdout in web_pods(lab)


# --- deleting a LoadBalancer Service ------------------------------------------------------
# kube-proxy's names for the Services' ports, written out: base32(sha256("ns/name:port" +
# protocol))[:16].
WEB_LB = "JR7PZPMGEHYLHTEW"          # default/web-lb:http, TCP
RANGED = "5UJU44SDGJGNVZKF"          # default/ranged:http, TCP


def neighbour(lab, ip):
    out = lab.exec("external", ["ip", "neigh", "show", ip], capture_output=True, text=True)
    assert out.returncode == 0
    return out.stdout


def assert_unanswered(lab, ip, port=80):
    """Asked afresh (the client's ARP entry flushed), nobody on the LAN answers for `ip`."""
    assert lab.exec("external", ["ip", "neigh", "flush", "to", ip]).returncode == 0
    out = curl(lab, f"http://{ip}:{port}/hostname", timeout=2)
    assert out.returncode in (7, 28) and out.stdout == ""    # no route to host, or no answer at all
    seen = neighbour(lab, ip)
    assert "INCOMPLETE" in seen or "FAILED" in seen, seen     # ARP asked, and no MAC came back


def rules_of(lab, node):
    return {t: lab.iptables(node.name, t) for t in ("nat", "filter")}


def test_deleting_a_cloud_load_balancer_service_removes_its_machine_rules_and_health(make_lab):
    lab = make_lab(TOPOLOGIES / "loadbalancer.yaml")
    state = lab.state()
    svc = state.service("default", "web-lb")
    node_port = svc.ports[0].node_port
    mine, other = names.lb_netns(lab.name, svc.key), names.lb_netns(lab.name, "default/web-local-lb")
    assert {mine, other} <= set(ns.list_names())
    wait_for(lambda: health(lab, "web-lb") == sorted(n.name for n in state.nodes))
    assert curl(lab, "http://172.18.255.200/hostname").stdout in web_pods(lab)
    assert "lladdr" in neighbour(lab, "172.18.255.200")
    for node in state.nodes:
        assert f'"default/web-lb:http" -m tcp --dport {node_port} -j KUBE-EXT-{WEB_LB}' in rules_of(lab, node)["nat"]

    lab.delete("service", "default", "web-lb")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    assert other in netns and mine not in netns
    assert_unanswered(lab, "172.18.255.200")
    for node in state.nodes:
        rules = rules_of(lab, node)
        assert '"default/web-local-lb:http' in rules["nat"] and '"default/web-local-lb:http' in rules["filter"]
        for text in rules.values():
            assert WEB_LB not in text and "default/web-lb:" not in text and f"--dport {node_port} " not in text
    wait_for(lambda: "default/web-lb" not in cloud.read_health(lab.name))
    assert "default/web-local-lb" in cloud.read_health(lab.name)
    assert curl(lab, "http://172.18.255.201:8000/hostname").stdout in web_pods(lab)     # the other one still works


def test_deleting_a_metallb_service_removes_its_firewall_external_chains_and_node_port(make_lab, tmp_path):
    lab = make_lab(metallb_file(tmp_path))
    ranged = tmp_path / "ranged.yaml"
    ranged.write_text("""
apiVersion: v1
kind: Service
metadata: {name: ranged}
spec:
  type: LoadBalancer
  selector: {app: web}
  loadBalancerSourceRanges: [172.18.0.0/16]
  ports: [{name: http, port: 80, targetPort: http}]
""")
    lab.apply([ranged])
    state = lab.state()
    svc = state.service("default", "ranged")
    ip, node_port = svc.load_balancer_ip, svc.ports[0].node_port
    assert curl(lab, f"http://{ip}/hostname").stdout in web_pods(lab)
    for node in state.nodes:
        rules = rules_of(lab, node)
        assert f":KUBE-FW-{RANGED} " in rules["nat"] and f":KUBE-EXT-{RANGED} " in rules["nat"]
        assert f"-d {ip}/32 -p tcp -m comment --comment \"default/ranged:http loadbalancer IP\" -m tcp --dport 80 " \
               f"-j KUBE-FW-{RANGED}" in rules["nat"]
        assert f"traffic not accepted by KUBE-FW-{RANGED}" in rules["filter"]

    lab.delete("service", "default", "ranged")
    for node in state.nodes:
        rules = rules_of(lab, node)
        assert '"default/web-lb:http loadbalancer IP"' in rules["nat"]             # the others' rules stay
        for text in rules.values():
            assert RANGED not in text and "default/ranged:" not in text
            assert f"--dport {node_port} " not in text and f"{ip}/32" not in text
    assert_unanswered(lab, ip)                                   # no speaker answers ARP for it any more
    assert curl(lab, "http://172.18.255.200/hostname").stdout in web_pods(lab)
