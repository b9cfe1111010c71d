"""A dual-stack lab's LoadBalancers in both modes: a PreferDualStack LoadBalancer Service gets
an address of each family (status.loadBalancer.ingress lists both, IPv4 first), and the
external client reaches the Service over IPv6 through the cloud's balancer (which answers on
its IPv6 address and proxies to the nodes' IPv6 NodePorts) or through MetalLB (the speaker
answers NDP for the VIP, kube-proxy's IPv6 proxier captures it); ingress-nginx's controller,
its Service PreferDualStack, answers Ingress requests over IPv6 (nginx `listen [::]:80`)."""

import pytest

from netlab.observe import probes

from .conftest import wait_for

LAB = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: dlb
nodes:
  - role: control-plane
  - role: worker
networking:
  ipFamily: dual
---
apiVersion: netlab.io/v1alpha1
kind: Lab
loadBalancer: {{mode: {mode}}}
ingress: {{enabled: true, service: LoadBalancer, ipFamilyPolicy: PreferDualStack}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: netexec, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: [netexec],
                    ports: [{{name: http, containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-lb}}
spec:
  type: LoadBalancer
  ipFamilyPolicy: PreferDualStack
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web}}
spec:
  ingressClassName: nginx
  rules:
    - host: web.example
      http:
        paths: [{{path: /hostname, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]
"""


def curl(lab, url, *args, timeout=3):
    return lab.exec("external", ["curl", "-gsS", "-m", str(timeout), *args, url], capture_output=True, text=True)


@pytest.fixture(params=["cloud", "metallb"])
def lab(request, make_lab, tmp_path):
    f = tmp_path / f"dual-lb-{request.param}.yaml"
    f.write_text(LAB.format(mode=request.param))
    return make_lab(f)


def test_a_dual_stack_load_balancer_answers_on_both_families_and_so_does_ingress(lab):
    state = lab.state()
    mode = "VIP" if state.cluster.lb_mode == "metallb" else "Proxy"
    web = {p.name for p in state.pods if p.owner == "Deployment/web"}
    services = {s["metadata"]["name"]: s for s in lab.get("services", all_namespaces=True)}
    ingress = {}
    for name in ("web-lb", "ingress-nginx-controller"):
        got = services[name]["status"]["loadBalancer"]["ingress"]
        assert [i["ipMode"] for i in got] == [mode, mode], got
        v4, v6 = got[0]["ip"], got[1]["ip"]
        # The default pools: kind users' 172.18.255.200-250, and the IPv6 twins of its addresses
        # in Docker's ULA /64 (Docker numbers a host's two addresses alike).
        assert v4 in {"172.18.255.200", "172.18.255.201"}, got
        assert v6 == {"172.18.255.200": "fc00:f853:ccd:e793::ffc8",
                      "172.18.255.201": "fc00:f853:ccd:e793::ffc9"}[v4], got
        ingress[name] = v6
    assert ingress["web-lb"] != ingress["ingress-nginx-controller"]
    v6 = ingress["web-lb"]
    seen = set()
    wait_for(lambda: curl(lab, f"http://[{v6}]/hostname").stdout in web, timeout=20,
             what=f"the web pods over http://[{v6}]/ from the external client")
    for _ in range(40):
        seen.add(curl(lab, f"http://[{v6}]/hostname").stdout)
    assert seen == web
    client = curl(lab, f"http://[{v6}]/clientip").stdout
    assert client.startswith("[fc00:f853:ccd:e793::") or client.startswith("[fd00:10:244:"), client
    ing6 = ingress["ingress-nginx-controller"]
    wait_for(lambda: curl(lab, f"http://[{ing6}]/hostname", "-H", "Host: web.example").stdout in web, timeout=30,
             what=f"the Ingress over http://[{ing6}]/hostname")
    missing = curl(lab, f"http://[{ing6}]/nothing", "-H", "Host: web.example", "-o", "/dev/null", "-w", "%{http_code}")
    assert missing.stdout == "404"                  # nginx's default backend, over IPv6 as over IPv4
    # The probe's IPv6 load-balancer and ingress checks run, no longer skipped, and pass.
    checks = probes.suite(lab, ["load-balancers", "ingress"])
    six = [c for c in checks if c.name.endswith(" [IPv6]")]
    assert f"default/web-lb:80 at {v6} from external [IPv6]" in [c.name for c in six], [c.name for c in six]
    assert any(c.area == "ingress" for c in six), [c.name for c in six]
    assert [c.name for c in six if c.skipped and c.name.startswith("default/web-lb")] == []
    assert [c.name for c in six if c.skipped and c.area == "ingress"] == []
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
