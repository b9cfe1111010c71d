"""What the hardening scripts share: a renamed copy of a topology, and what a lab leaves."""

import os
import re
import subprocess
import tempfile
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netlab import names  # noqa: E402
from netlab.kernel import netns as ns  # noqa: E402


def renamed(topology, name, directory):
    """A copy of a lab file (a path, or a name under topologies/) with the cluster renamed."""
    text = (ROOT / "topologies" / topology).read_text()   # an absolute path stays itself
    old = re.search(r"^name: (\S+)$", text, re.M).group(1)
    path = Path(directory) / f"{name}.yaml"
    path.write_text(re.sub(rf"\b{re.escape(old)}-", f"{name}-", text.replace(f"name: {old}", f"name: {name}")))
    return path


def in_mode(labfile, mode):
    """A copy of a (renamed) lab file whose kube-proxy runs in `mode` (kind's kubeProxyMode)."""
    text = Path(labfile).read_text()
    cluster, sep, rest = text.partition("\n---")
    if "kubeProxyMode:" in cluster:
        cluster = re.sub(r"kubeProxyMode: \S+", f"kubeProxyMode: {mode}", cluster)
    else:
        cluster = re.sub(r"^(name: \S+)$", rf"\1\nnetworking: {{kubeProxyMode: {mode}}}", cluster, count=1, flags=re.M)
    path = Path(labfile).with_name(f"{Path(labfile).stem}-{mode}.yaml")
    path.write_text(cluster + sep + rest)
    return path


def leftovers(lab):
    """Everything of a lab that could outlive it: namespaces, resolver files, state, processes."""
    found = [f"netns {n}" for n in ns.list_names() if n.startswith(lab + "-")]
    found += [f"scratch netns {n}" for n in ns.list_names() if n.startswith(("netlab.preflight.", "netlab.netem."))
              and not Path(f"/proc/{n.rsplit('.', 1)[1]}").exists()]
    if names.NETNS_ETC.is_dir():
        found += [f"/etc/netns/{p.name}" for p in names.NETNS_ETC.iterdir() if p.name.startswith(lab + "-")]
    if names.state_dir(lab).exists():
        found.append(f"state {names.state_dir(lab)}")
    found += [f"kubeconfig context {c}" for c in kubeconfig_contexts() if c == f"netlab-{lab}"]
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    found += [f"process {line.strip()}" for line in ps.splitlines()
              if re.search(rf"netlab\.[\w.]+ {re.escape(lab)}$", line.strip()) or f"/var/lib/netlab/{lab}/" in line]
    return found


def isolate_kubeconfig():
    """A kubeconfig of the script's own: its labs export their contexts there, as kind does,
    never into the user's ~/.kube/config. Returns its path."""
    import atexit
    import shutil
    path = Path(tempfile.mkdtemp(prefix="netlab-hardening-")) / "kubeconfig"
    os.environ["KUBECONFIG"] = str(path)
    atexit.register(shutil.rmtree, path.parent, True)
    return path


def kubeconfig_contexts():
    """The context names in $KUBECONFIG's file (or ~/.kube/config)."""
    import yaml
    path = Path(os.environ.get("KUBECONFIG", "").split(":")[0] or Path.home() / ".kube" / "config")
    if not path.is_file():
        return []
    doc = yaml.safe_load(path.read_text()) or {}
    return [c.get("name") for c in doc.get("contexts") or []]


def root_snapshot():
    """The host's own network namespace, as far as netlab could ever touch it."""
    cmds = [["ip", "-br", "link"], ["ip", "-br", "addr"], ["ip", "route", "show", "table", "all"], ["ip", "rule"],
            ["ip", "neigh", "show", "nud", "permanent"], ["iptables-save"], ["iptables-legacy-save"],
            ["nft", "list", "ruleset"],
            # The IPv6 side, which a dual-stack lab must leave alone as well.
            ["ip6tables-save"], ["ip", "-6", "route", "show", "table", "all"],
            ["ip", "-6", "neigh", "show", "nud", "permanent"],
            ["sysctl", "net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet",
             "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
             "net.ipv6.conf.all.forwarding"]]
    out = {}
    for c in cmds:
        text = subprocess.run(c, capture_output=True, text=True).stdout
        out[" ".join(c)] = "\n".join(l for l in text.splitlines() if not l.startswith("#"))
    return out


def fds(pid):
    try:
        return len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return None


def rss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
