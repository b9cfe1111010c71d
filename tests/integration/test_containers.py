"""A container's command runs as a container runtime runs it, not as root on the host: uid
65534, the runtime's default capability set as its bounding set and only NET_BIND_SERVICE and
NET_RAW in effect, no_new_privs, a PID namespace of its own; the lab's state is root's alone.
Checked from inside, by the command itself (topologies/two-nodes.yaml and one pod "box")."""

import json
import os
import signal
import stat
import textwrap

import pytest

from netlab import Lab, names
from netlab.api.etcd import all_labs
from netlab.kernel import netns as ns
from netlab.kernel.processes import alive, start_time
from netlab.node import kubelet

from .conftest import TOPOLOGIES, leftovers, renamed, unique_name
from .conftest import wait_for as eventually

# What the command reports before it serves HTTP on port 80 from / (its working directory).
REPORT = textwrap.dedent("""
    import json, os, socket, subprocess, sys
    def run(*argv):
        p = subprocess.run(argv, capture_output=True, text=True)
        return [p.returncode, p.stdout, p.stderr]
    state_root = sys.argv[1]
    report = {"id": run("id", "-u")[1].strip() + " " + run("id", "-g")[1].strip() + " " + run("id", "-G")[1].strip(),
              "status": run("cat", "/proc/self/status")[1], "ps": run("ps", "-eo", "pid=,user=,args=")[1],
              "cwd": os.getcwd(), "home": os.environ.get("HOME"), "hostname": socket.gethostname(),
              "denied": {path: run(*argv) for path, argv in (
                  (state_root, ["ls", state_root]),
                  ("state.json", ["cat", os.path.join(state_root, sys.argv[2], "state.json")]),
                  ("/root", ["ls", "/root"]))}}
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        report["raw socket"] = "opened"
    except OSError as e:
        report["raw socket"] = e.strerror
    print("REPORT " + json.dumps(report), flush=True)
    os.execvp("python3", ["python3", "-m", "http.server", "80"])
""")

# A command that handles SIGTERM, one that does not (sleep: as PID 1 it would ignore it).
GRACEFUL = ("import signal, sys; "
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(print('TERM received', flush=True))); signal.pause()")

# Docker's and containerd's default capability set (linux/capability.h bit numbers): CHOWN 0,
# DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7, SETPCAP 8, NET_BIND_SERVICE 10,
# NET_RAW 13, SYS_CHROOT 18, MKNOD 27, AUDIT_WRITE 29, SETFCAP 31: the CapBnd of every Docker
# container, 00000000a80425fb.
DOCKER_DEFAULT_SET = "00000000a80425fb"
NET_BIND_SERVICE_AND_NET_RAW = "0000000000002400"         # bits 10 and 13


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    name = unique_name()
    d = tmp_path_factory.mktemp(name)
    manifests = d / "box.yaml"
    manifests.write_text(textwrap.dedent(f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: box, labels: {{app: box}}}}
        spec:
          nodeName: {name}-worker
          containers:
            - name: c
              command: [python3, -c, {json.dumps(REPORT)}, {json.dumps(str(names.STATE_ROOT))}, {name}]
            - name: graceful
              command: [python3, -c, {json.dumps(GRACEFUL)}]
            - name: sleeper
              command: [sleep, infinity]
    """))
    lab = Lab.up(renamed("two-nodes.yaml", name, d), [manifests])
    try:
        yield lab
    finally:
        if name in all_labs() or leftovers(name):
            Lab.cleanup(name)
        assert leftovers(name) == []

def log_of(lab, container):
    return names.state_dir(lab.name) / "logs" / f"default_box_{container}.log"


@pytest.fixture(scope="module")
def report(lab):
    def read():
        lines = [line for line in log_of(lab, "c").read_text().splitlines() if line.startswith("REPORT ")]
        return json.loads(lines[0][len("REPORT "):]) if lines else None
    return eventually(read, what="the container's report")


def status(report):
    return dict(line.split(":\t", 1) for line in report["status"].splitlines() if ":\t" in line)


def test_the_command_runs_as_nobody_with_no_groups(report):
    assert report["id"] == "65534 65534 65534"
    assert (report["cwd"], report["home"]) == ("/", "/")


def test_its_hostname_is_the_pods_name_as_kubelet_gives_it(lab, report):
    assert report["hostname"] == "box"
    out = lab.exec("box", ["hostname"], capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (0, "box\n")
    assert lab.exec("box", ["cat", "/etc/hostname"], capture_output=True).returncode == 0   # the host's files stay


def test_its_environment_is_a_containers_not_netlabs(lab):
    """As it was given at exec (/proc/PID/environ); containerd's default PATH."""
    rec = next(r for r in lab.state().pod("default", "box").pids if r["container"] == "sleeper")
    env = open(f"/proc/{rec['pid']}/environ").read().split("\0")
    assert sorted(e for e in env if e) == ["HOME=/",
                                           "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def test_its_capabilities_are_bounded_by_the_runtimes_default_set(report):
    s = status(report)
    assert s["CapBnd"] == DOCKER_DEFAULT_SET
    assert (s["CapEff"], s["CapPrm"], s["CapInh"], s["CapAmb"]) == (NET_BIND_SERVICE_AND_NET_RAW,) * 4
    assert s["NoNewPrivs"] == "1"
    assert s["Uid"].split() == ["65534"] * 4 and s["Groups"].strip() == ""
    assert report["raw socket"] == "opened"                       # NET_RAW: what ping needs


def test_it_sees_only_its_own_processes(report):
    ps = [line.split(None, 2) for line in report["ps"].splitlines()]
    assert {user for _, user, _ in ps} == {"nobody"}
    by_pid = {int(pid): args for pid, _, args in ps}
    assert by_pid[1].startswith("python3 -I -S -c import os; exec(os.environ.pop('NETLAB_CONTAINER_INIT'))")
    assert by_pid[2].startswith("python3 -c")                     # the command, the init's child
    assert len(by_pid) == 3 and any(args.startswith("ps -eo") for args in by_pid.values())


def test_it_cannot_read_the_labs_state_or_roots_home(report):
    for path, (code, _, err) in report["denied"].items():
        assert code != 0 and "Permission denied" in err, path


def test_the_state_is_root_only(lab):
    assert stat.S_IMODE(names.STATE_ROOT.stat().st_mode) == 0o700
    assert stat.S_IMODE(names.state_dir(lab.name).stat().st_mode) == 0o700
    assert stat.S_IMODE(lab.store.path.stat().st_mode) == 0o600


def test_it_serves_port_80_to_another_pod(lab, report):
    box = lab.state().pod("default", "box")
    # In the pod's netns an unprivileged process may bind below 1024 only with NET_BIND_SERVICE.
    sysctl = lab.exec("default/box", ["sysctl", "-n", "net.ipv4.ip_unprivileged_port_start"],
                      capture_output=True, text=True)
    assert sysctl.stdout.strip() == "1024"

    def get():
        r = lab.exec("default/a", ["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}",
                                   f"http://{box.ip}:80/"], capture_output=True, text=True)
        return r.stdout == "200"
    eventually(get, what="an HTTP answer from the container on port 80")


def test_the_recorded_process_is_the_command_and_leads_its_group(lab):
    box = lab.state().pod("default", "box")
    recs = {r["container"]: r for r in box.pids}
    for container, rec in recs.items():
        assert alive(rec) and os.getpgid(rec["pid"]) == rec["pid"], container
        assert rec["pid"] in ns.pids_inside(box.netns)
    args = open(f"/proc/{recs['sleeper']['pid']}/cmdline").read().split("\0")
    assert args[:2] == ["sleep", "infinity"]


def _container_of(rec):
    """Records of the command, its init and unshare (its parent, and its parent's parent)."""
    def parent(pid):
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    init = parent(rec["pid"])
    return [{"pid": p, "start": start_time(p)} for p in (rec["pid"], init, parent(init))]


@pytest.mark.parametrize("container", ["graceful", "sleeper"])
def test_sigterm_to_the_recorded_group_ends_the_whole_container(lab, container):
    """What `netlab down` sends first: a command without a handler (sleep) ends too, and so do
    its init and unshare, without a SIGKILL."""
    rec = next(r for r in lab.state().pod("default", "box").pids if r["container"] == container)
    procs = _container_of(rec)
    assert [open(f"/proc/{r['pid']}/cmdline").read().split("\0")[0] for r in procs] == [
        "python3" if container == "graceful" else "sleep", "python3", "unshare"]
    os.killpg(rec["pid"], signal.SIGTERM)
    eventually(lambda: not any(alive(r) for r in procs), what=f"the end of container {container}")
    if container == "graceful":
        assert "TERM received" in log_of(lab, container).read_text()


def test_a_container_stopped_as_it_starts_ends_on_sigterm(lab):
    """The record exists before the command has exec'd (the init has just forked it): a
    SIGTERM then must not be lost in the init's code and leave sleep to a SIGKILL."""
    state = lab.state()
    for _ in range(30):                  # the window is narrow: try it often
        rec, = kubelet.start_commands(state, state.pod("default", "box"), only={"sleeper"})
        procs = _container_of(rec)
        os.killpg(rec["pid"], signal.SIGTERM) if os.getpgid(rec["pid"]) == rec["pid"] \
            else os.kill(rec["pid"], signal.SIGTERM)                     # as processes.stop does
        eventually(lambda: not any(alive(r) for r in procs), timeout=5, what="the end of a container stopped at once")


def test_down_ends_every_process_of_the_pod(lab):
    box = lab.state().pod("default", "box")
    inside = [{"pid": p, "start": start_time(p)} for p in ns.pids_inside(box.netns)]
    assert inside
    lab.down()
    assert not any(alive(r) for r in inside)
    assert not (names.NETNS_ETC / box.netns).exists()


def test_ingress_nginx_runs_as_the_container_user(make_lab):
    """The real controller runs nginx as www-data with NET_BIND_SERVICE; here as uid 65534, its
    master and its worker, listening on port 80 of its pod, with no `user` in nginx.conf."""
    lab = make_lab(TOPOLOGIES / "ingress.yaml")
    pod = next(p for p in lab.state().pods if p.namespace == "ingress-nginx")
    master = next(r for r in pod.pids if r["container"] == "controller")["pid"]
    workers = [int(p) for p in open(f"/proc/{master}/task/{master}/children").read().split()]
    assert workers
    for pid in [master, *workers]:
        s = dict(line.split(":\t", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":\t" in line)
        assert s["Uid"].split() == ["65534"] * 4 and s["CapEff"] == NET_BIND_SERVICE_AND_NET_RAW, pid
    listening = lab.exec(f"ingress-nginx/{pod.name}", ["ss", "-Hltn", "sport = :80"], capture_output=True, text=True)
    assert "0.0.0.0:80" in listening.stdout
    conf = lab.exec(f"ingress-nginx/{pod.name}", ["cat", "/etc/nginx/nginx.conf"], capture_output=True, text=True)
    assert conf.stdout.startswith("# Generated by netlab's ingress-nginx")    # the real controller's path
    assert not [line for line in conf.stdout.splitlines() if line.strip().startswith("user ")]
    assert not (names.state_dir(lab.name) / "ingress-nginx").exists()
