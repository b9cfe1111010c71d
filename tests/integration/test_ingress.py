"""Ingress through ingress-nginx's real nginx, from outside the cluster
(topologies/ingress.yaml: web.example.com → web; api.example.com: /hostname → api, /echo → web)."""

import subprocess
import textwrap
import time

from netlab.addons import ingress_nginx
from netlab.node.kubelet import alive

from .conftest import TOPOLOGIES
from .conftest import wait_for as eventually


def node_port(lab):
    svc = lab.state().service("ingress-nginx", "ingress-nginx-controller")
    return next(p.node_port for p in svc.ports if p.name == "http")


def get(lab, ip, port, host, path):
    out = lab.exec("external", ["curl", "-s", "-m", "3", "-H", f"Host: {host}", "-w", "\n%{http_code}",
                                f"http://{ip}:{port}{path}"], capture_output=True, text=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body

def pods(lab, app):
    return {p.name for p in lab.state().pods if p.owner == f"Deployment/{app}"}


def nginx_master(lab):
    pod = next(p for p in lab.state().pods if p.namespace == "ingress-nginx")
    return next(r for r in pod.pids if r["container"] == "controller")


def test_hosts_and_paths_route_on_every_nodes_node_port(make_lab):
    lab = make_lab(TOPOLOGIES / "ingress.yaml")
    port = node_port(lab)
    out = subprocess.run(["ps", "-o", "args=", "-p", str(nginx_master(lab)["pid"])], capture_output=True, text=True)
    assert out.stdout.startswith("nginx: master process nginx -c")   # Debian's nginx, in the controller pod
    for node in lab.state().nodes:
        assert get(lab, node.ip, port, "web.example.com", "/hostname") in {(200, p) for p in pods(lab, "web")}
        assert get(lab, node.ip, port, "api.example.com", "/hostname") in {(200, p) for p in pods(lab, "api")}
    ip = lab.state().nodes[0].ip
    assert get(lab, ip, port, "api.example.com", "/echo?msg=exact") == (200, "exact")        # Exact
    assert get(lab, ip, port, "api.example.com", "/echo/more") == (404, "default backend - 404\n")
    assert get(lab, ip, port, "api.example.com", "/hostname/more") == (404, "404 page not found")  # agnhost's
    assert get(lab, ip, port, "api.example.com", "/hostnames") == (404, "default backend - 404\n")  # not a segment
    assert get(lab, ip, port, "nobody.example.com", "/") == (404, "default backend - 404\n")
    seen = {get(lab, ip, port, "api.example.com", "/hostname")[1] for _ in range(40)}
    assert seen == pods(lab, "api")                           # the upstreams are the pods themselves


def test_an_ingress_change_takes_effect_without_a_restart(make_lab, tmp_path):
    lab = make_lab(TOPOLOGIES / "ingress.yaml")
    port, ip = node_port(lab), lab.state().nodes[1].ip
    master = nginx_master(lab)
    more = tmp_path / "more.yaml"
    more.write_text(textwrap.dedent("""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: more}
        spec:
          rules:
            - host: new.example.com
              http:
                paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}]
    """))
    assert get(lab, ip, port, "new.example.com", "/hostname") == (404, "default backend - 404\n")
    lab.apply([more])
    eventually(lambda: get(lab, ip, port, "new.example.com", "/hostname")[1] in pods(lab, "api"))
    lab.scale("default", "api", 4)                            # endpoints change: the upstream follows
    eventually(lambda: {get(lab, ip, port, "new.example.com", "/hostname")[1] for _ in range(40)} == pods(lab, "api"))
    lab.delete("ingress", "default", "more")
    eventually(lambda: get(lab, ip, port, "new.example.com", "/hostname") == (404, "default backend - 404\n"))
    assert nginx_master(lab) == master and alive(master)      # reloaded, never restarted


def test_the_ingress_behind_a_load_balancer(make_lab, tmp_path):
    f = tmp_path / "ingress-lb.yaml"
    f.write_text((TOPOLOGIES / "ingress.yaml").read_text().replace("service: NodePort}", "service: LoadBalancer}"))
    lab = make_lab(f)
    svc = lab.state().service(ingress_nginx.NAMESPACE, "ingress-nginx-controller")
    assert svc.type == "LoadBalancer" and svc.load_balancer_ip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and get(lab, svc.load_balancer_ip, 80, "web.example.com", "/hostname")[0] != 200:
        time.sleep(0.2)
    assert get(lab, svc.load_balancer_ip, 80, "web.example.com", "/hostname")[1] in pods(lab, "web")
    ingress = lab.get("ingresses")[0]
    assert ingress["status"]["loadBalancer"]["ingress"] == [{"ip": svc.load_balancer_ip}]


def test_the_ingress_probe_passes_only_on_the_backends_own_answer(make_lab, tmp_path):
    from netlab.observe import probes
    lab = make_lab(TOPOLOGIES / "ingress.yaml")
    missing = tmp_path / "missing.yaml"
    missing.write_text(textwrap.dedent("""
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: missing}
        spec:
          rules:
            - host: missing.example.com
              http:
                paths: [{path: /hostname, pathType: Exact, backend: {service: {name: nowhere, port: {number: 80}}}}]
    """))
    lab.apply([missing])
    eventually(lambda: get(lab, lab.state().nodes[0].ip, node_port(lab), "missing.example.com", "/hostname")[0] == 503)
    checks = {c.name: c for c in probes.suite(lab, ["ingress"])}
    bad = checks["missing.example.com/hostname (Exact) -> nowhere"]
    assert not bad.ok and bad.expected == "Service default/nowhere does not exist" and bad.observed.startswith("HTTP 503")
    good = checks["api.example.com/hostname (Prefix) -> api"]
    assert good.ok and good.observed.split()[:2] == ["HTTP", "200"] and good.observed.split()[2] in pods(lab, "api")
