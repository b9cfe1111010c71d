"""Names as long as the API allows (issue 23): a Pod name is a DNS-1123 subdomain of up to 253
characters, not a 63-character label. A pod's netns is named <lab>-<namespace>.<pod> (a file
name: up to 255 bytes) and its veth end is hashed, so a 200-character pod comes up and answers."""

import textwrap

from netlab import names
from netlab.kernel import netns as ns

from .conftest import TOPOLOGIES

LONG_POD = ("long-" + "a" * 60 + ".") + ("b" * 62 + ".") + "c" * 71                    # 200 characters, dots in it
LONG_DEPLOYMENT = "d" * 150


def test_a_pod_with_a_200_character_name_comes_up_and_answers(make_lab, tmp_path):
    assert len(LONG_POD) == 200
    manifests = tmp_path / "long.yaml"
    manifests.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: {LONG_POD}, labels: {{app: long}}}}
        spec:
          containers: [{{name: netexec, ports: [{{containerPort: 8080}}]}}]
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {LONG_DEPLOYMENT}}}
        spec:
          replicas: 1
          selector: {{matchLabels: {{app: longer}}}}
          template:
            metadata: {{labels: {{app: longer}}}}
            spec: {{containers: [{{name: netexec, ports: [{{containerPort: 8080}}]}}]}}
        """))
    lab = make_lab(TOPOLOGIES / "two-nodes.yaml", [manifests])
    state = lab.state()
    long_pod = state.pod("default", LONG_POD)
    replica = next(p for p in state.pods if p.owner == f"Deployment/{LONG_DEPLOYMENT}")
    a = state.pod("default", "a")                       # on the control plane: across the overlay from the worker

    assert long_pod.node == f"{lab.name}-worker"        # the control plane is tainted: the worker it is
    assert long_pod.netns == f"{lab.name}-default.{LONG_POD}" and ns.exists(long_pod.netns)
    assert (names.NETNS_ETC / long_pod.netns / "resolv.conf").is_file()     # where ip netns exec finds it
    assert len(long_pod.host_veth) <= names.IFNAMSIZ
    assert replica.name.startswith(LONG_DEPLOYMENT[:58]) and len(replica.name) == 63 and ns.exists(replica.netns)

    for target in (long_pod, replica):
        ping = lab.exec("default/a", ["ping", "-c", "2", "-i", "0.2", "-W", "2", target.ip], capture_output=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    back = lab.exec(f"default/{LONG_POD}", ["ping", "-c", "2", "-i", "0.2", "-W", "2", a.ip], capture_output=True)
    assert back.returncode == 0, back.stdout + back.stderr
    seen = lab.exec("default/a", ["curl", "-s", "--max-time", "5", f"http://{long_pod.ip}:8080/clientip"],
                    capture_output=True, text=True)
    assert seen.stdout.rsplit(":", 1)[0] == a.ip                 # netexec in the long-named pod saw pod a itself
