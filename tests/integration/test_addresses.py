"""A small LAN shared by nodes and a load balancer: the default pool lies inside it, a node
added later takes an address of its own (not the balancer's), and both answer from outside."""


from netlab.addons import cloud
from netlab.observe import probes

from .conftest import wait_for

LAB = """
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: small
nodes:
  - role: control-plane
  - role: worker
---
apiVersion: netlab.io/v1alpha1
kind: Lab
lan: {cidr: 10.10.0.0/27}
loadBalancer: {mode: cloud}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: netexec
          image: registry.k8s.io/e2e-test-images/agnhost:2.53
          ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""

def test_a_node_added_to_a_small_lan_and_the_balancer_both_answer(make_lab, tmp_path):
    topology = tmp_path / "small.yaml"
    topology.write_text(LAB)
    lab = make_lab(topology)
    svc = lab.state().service("default", "web-lb")
    # .1 the gateway, .2-.3 the nodes, .30 the external client: the pool starts above the nodes.
    assert svc.load_balancer_ip == "10.10.0.4"
    node = lab.add_node("extra")
    assert node.ip == "10.10.0.5"                                # not the balancer's .4
    state = lab.state()
    backends = {p.name for p in state.pods if p.owner == "Deployment/web"}
    everyone = sorted(n.name for n in state.nodes)
    wait_for(lambda: cloud.read_health(lab.name).get(svc.key) == everyone)   # the balancer checks the new node too
    with lab.prober() as prober:
        direct = prober.http("external", node.ip, svc.ports[0].node_port)    # the new node's kube-proxy
        assert direct["ok"] and direct["body"] in backends, direct
        ping = prober.ping("external", node.ip)
        assert ping["ok"], ping
    checks = probes.suite(lab, ["load-balancers"])
    assert [c.name for c in checks] == ["default/web-lb:80 at 10.10.0.4 from external"]
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
