"""A node's built-in chains are shared: a rule a person adds to INPUT or nat OUTPUT outlives
every netlab command, as it outlives kube-proxy's, flanneld's and kube-router's syncs on a
real node, which only ensure their own jumps (kube-router keeps its at position 1, kube-proxy
inserts its at the top, flanneld appends its own)."""

import subprocess

import pytest

from .conftest import TOPOLOGIES

WEB = """
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: netexec, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""

# kube-proxy's and flanneld's jumps from the built-in chains, as `iptables -S` shows them on
# a real node (kube-proxy v1.29+, flannel v0.2x).
KUBE_INPUT = [
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" '
    '-j KUBE-PROXY-FIREWALL',
    '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" '
    '-j KUBE-EXTERNAL-SERVICES',
    "-A INPUT -j KUBE-FIREWALL",
]
# kube-router's netpol jump (its uuid hashes the chain and the rule), kept at position 1.
KUBE_ROUTER_INPUT = '-A INPUT -m comment --comment "kube-router netpol - 4IA2OSFRMVNDXBVV" -j KUBE-ROUTER-INPUT'
# k3s's kube-router accepts what complies right after the last KUBE- rule (kube-proxy's jumps).
KUBE_ROUTER_ACCEPT = ('-A INPUT -m comment --comment "KUBE-ROUTER rule to explicitly ACCEPT traffic that comply to '
                      'network policies" -m mark --mark 0x20000/0x20000 -j ACCEPT')
KUBE_NAT_OUTPUT = '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
NAT_POSTROUTING = ['-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
                   '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG']

# A person's own rules: one inserted at the top of INPUT, one appended to INPUT, one
# appended to nat OUTPUT and one to nat POSTROUTING (after flanneld's jump).
PERSON_TOP = "-A INPUT -s 192.0.2.7/32 -j ACCEPT"
PERSON_INPUT = "-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT"
PERSON_OUTPUT = "-A OUTPUT -d 203.0.113.9/32 -j RETURN"
PERSON_POSTROUTING = "-A POSTROUTING -s 198.51.100.0/24 -j RETURN"

# The applier a Lab document chooses, and the iptables a person uses to see its tables.
APPLIERS = {"iptables-restore": "iptables", "python-iptables": "iptables-legacy"}


def lab_file(tmp_path, applier):
    f = tmp_path / f"builtin-{applier}.yaml"
    f.write_text((TOPOLOGIES / "two-nodes.yaml").read_text() + WEB
                 + f"---\napiVersion: netlab.io/v1alpha1\nkind: Lab\niptables: {{applier: {applier}}}\n")
    return f


def person(netns, binary, *args):
    """What a person types on the node: `ip netns exec NODE iptables ...`."""
    subprocess.run(["ip", "netns", "exec", netns, binary, *args], check=True, capture_output=True, text=True)


def rules(lab, node, table, chain):
    return [l for l in lab.iptables(node, table).splitlines() if l.startswith(f"-A {chain} ")]


@pytest.mark.parametrize("applier", sorted(APPLIERS))
def test_a_persons_rules_in_built_in_chains_outlive_netlabs_commands(make_lab, tmp_path, applier):
    lab = make_lab(lab_file(tmp_path, applier))
    binary = APPLIERS[applier]
    node = lab.state().nodes[0]
    assert lab.state().cluster.iptables_applier == applier
    person(node.netns, binary, "-I", "INPUT", "1", "-s", "192.0.2.7/32", "-j", "ACCEPT")
    person(node.netns, binary, "-A", "INPUT", "-p", "tcp", "-m", "tcp", "--dport", "2222", "-j", "ACCEPT")
    person(node.netns, binary, "-t", "nat", "-A", "OUTPUT", "-d", "203.0.113.9/32", "-j", "RETURN")
    person(node.netns, binary, "-t", "nat", "-A", "POSTROUTING", "-s", "198.51.100.0/24", "-j", "RETURN")
    as_a_person_left_them = {
        ("filter", "INPUT"): [PERSON_TOP, KUBE_ROUTER_INPUT, *KUBE_INPUT, KUBE_ROUTER_ACCEPT, PERSON_INPUT],
        ("nat", "OUTPUT"): [KUBE_NAT_OUTPUT, PERSON_OUTPUT],
        ("nat", "POSTROUTING"): [*NAT_POSTROUTING, PERSON_POSTROUTING],
    }

    def chains():
        return {(t, c): rules(lab, node.name, t, c) for t, c in as_a_person_left_them}

    assert chains() == as_a_person_left_them
    lab.scale("default", "web", 2)                      # a partial kube-proxy sync
    assert chains() == as_a_person_left_them
    # A full resync reads every table back: only kube-router's jump moves, back to position 1
    # above the person's rule (its ensureRuleAtPosition), in one write; the rest is left as is.
    changes = lab.reconcile()
    assert changes.iptables_writes == 1, changes.chains
    as_a_person_left_them[("filter", "INPUT")] = [KUBE_ROUTER_INPUT, PERSON_TOP, *KUBE_INPUT, KUBE_ROUTER_ACCEPT,
                                                  PERSON_INPUT]
    assert chains() == as_a_person_left_them
    assert lab.reconcile().iptables_writes == 0          # nothing of ours differs now: no write

    # Ours broken by hand: kube-proxy's jump comes back at the top (where -I puts it, above
    # the person's inserted rule), flanneld's is appended (after the person's); theirs stay.
    person(node.netns, binary, "-D", "INPUT", "-j", "KUBE-FIREWALL")
    person(node.netns, binary, "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq",
           "-j", "FLANNEL-POSTRTG")
    person(node.netns, binary, "-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment",
           "kubernetes service portals", "-j", "KUBE-SERVICES")
    assert lab.reconcile().iptables_writes == 1
    assert chains() == {
        ("filter", "INPUT"): [KUBE_ROUTER_INPUT, *KUBE_INPUT, PERSON_TOP, KUBE_ROUTER_ACCEPT, PERSON_INPUT],
        ("nat", "OUTPUT"): [KUBE_NAT_OUTPUT, PERSON_OUTPUT],
        ("nat", "POSTROUTING"): [NAT_POSTROUTING[0], PERSON_POSTROUTING, NAT_POSTROUTING[1]],
    }
    assert lab.reconcile().iptables_writes == 0
