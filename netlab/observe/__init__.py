"""Looking at a lab and breaking it on purpose: `probes` (the probe matrix, with scapy
workers in `probe_worker`), `trace` (one flow's rules and hops), `graph` (the diagram from
kernel state), `faults` (node-down, link-down, partition) and `preflight` (what the machine
must offer before a lab is built)."""
