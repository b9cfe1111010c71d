"""Conntrack entries, read and deleted through netfilter's netlink (pyroute2), per node."""

import socket

from netlab.kernel import netns as ns


def delete_flows(netns, flows, family="IPv4"):
    """Delete UDP entries whose original destination matches (ip or any, port) and whose
    reply comes from `endpoint`: what kube-proxy clears when an endpoint goes away (each
    family's proxier its own family's table). Returns how many were deleted."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.exceptions import NetlinkError
    wanted = {(dst, port, endpoint) for dst, port, endpoint in flows}
    deleted = 0
    # pyroute2 opens its netlink socket on first use, not in the constructor: all of it
    # happens inside the namespace, or the host's own table would be read.
    af = socket.AF_INET6 if family == "IPv6" else socket.AF_INET
    with ns.entered(netns), Conntrack(nfgen_family=af) as ct:
        for entry in list(ct.dump_entries()):
            orig, reply = entry.tuple_orig, entry.tuple_reply
            if orig.proto != socket.IPPROTO_UDP:
                continue
            if (orig.daddr, orig.dport, reply.saddr) in wanted or (None, orig.dport, reply.saddr) in wanted:
                try:
                    ct.delete(entry)
                    deleted += 1
                except NetlinkError:
                    pass                      # gone meanwhile
    return deleted
