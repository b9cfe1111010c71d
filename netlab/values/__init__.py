"""The plain values planners return and appliers consume: a namespace's links, addresses,
routes, neighbours and FDB entries (`desired`), and iptables tables as iptables-save prints
them (`iptables`). They import nothing, so the planners above and the kernel layer below
can both use them.
"""
