#!/usr/bin/env python3
"""Queries per second of netlab's CoreDNS stand-in under dnsperf, against dnsmasq serving the
same records in the same run.

    sudo .venv/bin/python bench/dns.py [--seconds 10]

A services lab comes up; dnsmasq starts in one coredns pod's namespace on port 5353 with every
A, SRV and TXT record of netlab's zone (its host-records give the PTRs); dnsperf runs in the
client pod against that pod's port 53 (netlab) and 5353 (dnsmasq), one after the other, with
the same query file: the names of the zone, every type it answers, and names that do not exist.
"""

import argparse
import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netlab import Lab  # noqa: E402
from netlab.addons import coredns  # noqa: E402
from netlab.kernel import netns as ns  # noqa: E402


def lab_file(directory):
    name = f"dnsb{secrets.token_hex(2)}"
    text = (ROOT / "topologies" / "services.yaml").read_text().replace("name: svc\n", f"name: {name}\n")
    path = Path(directory) / "lab.yaml"
    path.write_text(text)
    return path


def dnsmasq_options(zone):
    """dnsmasq's spelling of the zone's A, SRV and TXT records; everything else under the
    cluster domain is answered locally (NXDOMAIN), never forwarded."""
    opts = [f"--local=/{coredns.DOMAIN[:-1]}/", "--no-resolv", "--no-hosts", "--conf-file=/dev/null"]
    for name, records in zone.records.items():
        for r in records:
            if r.type == "A":
                opts.append(f"--host-record={name[:-1]},{r.data}")
            elif r.type == "SRV":
                prio, weight, port, target = r.data
                opts.append(f"--srv-host={name[:-1]},{target[:-1]},{port},{prio},{weight}")
            elif r.type == "TXT":
                opts.append(f"--txt-record={name[:-1]},{r.data}")
    return opts


def queries(zone):
    """Every name of the zone with the type it holds, PTRs included, plus missing names."""
    out = []
    for name, records in sorted(zone.records.items()):
        for rtype in sorted({r.type for r in records} & {"A", "SRV", "TXT", "PTR"}):
            out.append(f"{name} {rtype}")
    out += [f"missing{i}.default.svc.{coredns.DOMAIN} A" for i in range(len(out) // 4)]
    return out


def dnsperf(lab, server, port, query_file, seconds):
    out = lab.exec("client", ["dnsperf", "-s", server, "-p", str(port), "-d", str(query_file),
                              "-l", str(seconds), "-q", "64"], capture_output=True, text=True)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", out.stdout)
    codes = re.search(r"Response codes:\s+(.*)", out.stdout)
    if not qps:
        raise SystemExit(f"dnsperf failed: {out.stdout}{out.stderr}")
    return float(qps.group(1)), int(lost.group(1)) if lost else 0, codes.group(1) if codes else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab.up(lab_file(tmp))
        dnsmasq = None
        try:
            state = lab.state()
            pod = next(p for p in state.pods if p.namespace == "kube-system")
            zone = coredns.zone(state, state.cluster.dns_ttl)
            query_file = Path(tmp) / "queries.txt"
            query_file.write_text("\n".join(queries(zone)) + "\n")
            dnsmasq = subprocess.Popen(["ip", "netns", "exec", pod.netns, "dnsmasq", "--keep-in-foreground",
                                        "--port=5353", f"--listen-address={pod.ip}", "--bind-interfaces",
                                        "--user=root", "--pid-file=", *dnsmasq_options(zone)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            ns.run(pod.netns, ["sh", "-c", "sleep 0.5"])
            for name, port in (("netlab coredns", 53), ("dnsmasq", 5353)):
                answer = lab.exec("client", ["dig", "+short", "-p", str(port), f"@{pod.ip}",
                                             f"web.default.svc.{coredns.DOMAIN}"], capture_output=True, text=True)
                assert answer.stdout.strip() == state.service("default", "web").cluster_ip, (name, answer)
            ours, ours_lost, ours_codes = dnsperf(lab, pod.ip, 53, query_file, args.seconds)
            theirs, theirs_lost, theirs_codes = dnsperf(lab, pod.ip, 5353, query_file, args.seconds)
        finally:
            if dnsmasq is not None:
                dnsmasq.terminate()
                dnsmasq.wait(timeout=5)
            lab.down()
    print(f"{'server':<16} {'queries/s':>10} {'lost':>6}  response codes")
    print(f"{'netlab coredns':<16} {ours:>10.0f} {ours_lost:>6}  {ours_codes}")
    print(f"{'dnsmasq':<16} {theirs:>10.0f} {theirs_lost:>6}  {theirs_codes}")
    print(f"\nratio netlab / dnsmasq: {ours / theirs:.2f}  "
          f"(dnsperf -q 64 for {args.seconds} s each, from a pod to a coredns pod's address, same query file)")


if __name__ == "__main__":
    main()
