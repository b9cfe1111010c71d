"""The nginx configuration ingress-nginx's controller writes, from Ingress objects and
endpoints (shared/REFERENCE.md: one server per host, Exact and whole-segment Prefix paths,
longest prefix wins, pod endpoints as upstreams, a default backend answering 404)."""

import random
import textwrap

import pytest

from netlab.addons import ingress_nginx
from netlab.api import spec
from netlab.controllers import cluster
from netlab.errors import SpecError

CLUSTER = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: t
nodes: [{role: control-plane}, {role: worker}]
---
apiVersion: netlab.io/v1alpha1
kind: Lab
ingress: {enabled: true}
"""

APPS = """
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec: {selector: {app: none}, ports: [{port: 80}]}
"""


def state_for(tmp_path, ingress):
    f = tmp_path / "lab.yaml"
    f.write_text(CLUSTER + APPS + "---\n" + textwrap.dedent(ingress))
    return cluster.new_state(spec.load(f), random.Random(1))


def server(conf, host):
    """The lines of one server block."""
    block = conf.split(f"server_name {host};")[1]
    return [l.strip() for l in block.split("\n  }")[0].splitlines() if l.strip()]


ROUTES = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: routes}
spec:
  rules:
    - host: a.example.com
      http:
        paths:
          - {path: /app, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
          - {path: /app/admin/, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
          - {path: /exact, pathType: Exact, backend: {service: {name: empty, port: {number: 80}}}}
"""


def test_the_addon_is_a_controller_deployment_behind_a_node_port_service(tmp_path):
    s = state_for(tmp_path, ROUTES)
    svc = s.service("ingress-nginx", "ingress-nginx-controller")
    assert svc.type == "NodePort" and [p.port for p in svc.ports] == [80, 443]
    pods = [p for p in s.pods if p.namespace == "ingress-nginx"]
    assert len(pods) == 1 and ingress_nginx.runs_nginx(pods[0].template.containers[0])


def test_one_server_per_host_with_exact_and_whole_segment_prefix_locations(tmp_path):
    s = state_for(tmp_path, ROUTES)
    lines = server(ingress_nginx.config(s, tmp_path), "a.example.com")
    locations = [l for l in lines if l.startswith("location")]
    assert locations == ["location = /exact {", "location = /app {", "location /app/ {",
                         "location = /app/admin {", "location /app/admin/ {", "location / {"]
    # /app matches /app and /app/x but not /apple: nginx picks the longest of these prefixes.


def test_upstreams_are_the_pod_endpoints_and_none_means_503(tmp_path):
    s = state_for(tmp_path, ROUTES)
    conf = ingress_nginx.config(s, tmp_path)
    ips = sorted(f"{p.ip}:8080" for p in s.pods if p.owner == "Deployment/web")
    for name in ("default-web-80", "default-web-http"):
        block = conf.split(f"upstream {name} {{")[1].split("}")[0]
        assert sorted(l.strip()[len("server "):-1] for l in block.strip().splitlines()) == ips
    assert "upstream default-empty-80" not in conf
    exact = conf.split("location = /exact {")[1].split("}")[0]
    assert "return 503;" in exact


def test_unmatched_requests_get_the_default_backends_404(tmp_path):
    conf = ingress_nginx.config(state_for(tmp_path, ROUTES), tmp_path)
    default = server(conf, "_")
    assert "listen 80 default_server;\n    server_name _;" in conf
    assert 'return 404 "default backend - 404\\n";' in default
    assert 'return 404 "default backend - 404\\n";' in server(conf, "a.example.com")


def test_a_default_backend_and_host_less_rules_serve_the_default_server(tmp_path):
    conf = ingress_nginx.config(state_for(tmp_path, """
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: catchall}
        spec:
          defaultBackend: {service: {name: web, port: {number: 80}}}
          rules:
            - http:
                paths: [{path: /x, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}]
    """), tmp_path)
    default = server(conf, "_")
    assert "location = /x {" in default and "location / {" in default and "proxy_pass http://default-web-80;" in default


def test_other_ingress_classes_are_not_ours(tmp_path):
    conf = ingress_nginx.config(state_for(tmp_path, ROUTES.replace("spec:\n", "spec:\n  ingressClassName: traefik\n")),
                                tmp_path)
    assert "a.example.com" not in conf


@pytest.mark.parametrize("body, field", [
    ("rules: [{host: a.example.com, http: {paths: [{path: /a, backend: {service: {name: web, port: {number: 80}}}}]}}]",
     "spec.rules[0].http.paths[0].pathType"),
    ("rules: [{host: a.example.com, http: {paths: [{path: a, pathType: Exact, "
     "backend: {service: {name: web, port: {number: 80}}}}]}}]", "spec.rules[0].http.paths[0].path"),
    ("rules: [{host: 'a..b', http: {paths: [{path: /, pathType: Prefix, "
     "backend: {service: {name: web, port: {number: 80}}}}]}}]", "spec.rules[0].host"),
    ("rules: [{host: a.b, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {}}}}]}}]",
     "spec.rules[0].http.paths[0].backend.service.port"),
])
def test_invalid_ingresses_name_their_field(tmp_path, body, field):
    f = tmp_path / "lab.yaml"
    f.write_text(CLUSTER + f"---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i}}\nspec:\n  {body}\n")
    with pytest.raises(SpecError) as e:
        spec.load(f)
    assert (e.value.obj, e.value.field) == ("Ingress default/i", field)
