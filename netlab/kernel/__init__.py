"""The only layer that talks to the kernel: `netns` (the one place that enters a namespace),
`netlink` (pyroute2), `iptables_restore` and `python_iptables` (the two iptables appliers),
`conntrack`, and `processes` (the processes a lab starts, by pid and start time)."""
