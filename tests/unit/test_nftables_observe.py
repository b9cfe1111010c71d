"""netlab trace and netlab graph in kube-proxy's nftables mode, without a lab: what
`nft monitor trace` and `nft list table ip kube-proxy` print (nft 1.0.6, captured once from a
real lab, byte for byte) read into the rules a flow matched and the Services' endpoints; the
trace's own table; `netlab nft` refusing a node it does not know and a lab in iptables mode."""

import base64
import hashlib
from types import SimpleNamespace

import pytest

from netlab import cli
from netlab.api.objects import ClusterState, Node
from netlab.api.spec import ClusterConfig, ServiceManifest, ServicePort
from netlab.errors import NetlabError
from netlab.observe import graph, trace


def hashed(prefix, base):
    """kube-proxy's hashedName, as the reference gives it: the first 8 characters of the
    base32 of sha256(base), "-", base."""
    return prefix + base64.b32encode(hashlib.sha256(base.encode()).digest()).decode()[:8] + "-" + base


# Lab nx1 (nodes nx1-control-plane and nx1-worker; Service web 10.96.7.255, ports http
# 80 -> 8080 and udp 8081; web pods 10.244.0.3 and 10.244.1.3), node nx1-worker, while the
# pod 10.244.1.3 made an HTTP request to 10.96.7.255:80 from port 49834 (answered by
# 10.244.0.3) and then a scapy SYN from port 12305 (answered by itself, through the
# hairpin). The trace's table was netlab-trace-25406. Lines end with a space where nft's do.
TCP_TWO_CONNECTIONS = """\
trace id a392a92f ip netlab-trace-25406 prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11351 ip length 60 tcp sport 49834 tcp dport 80 tcp flags == syn tcp window 64860 
trace id a392a92f ip netlab-trace-25406 prerouting rule ip daddr 10.96.7.255 tcp dport 80 meta nftrace set 1 (verdict continue)
trace id a392a92f ip netlab-trace-25406 prerouting policy accept 
trace id a392a92f ip kube-proxy filter-prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11351 ip length 60 tcp sport 49834 tcp dport 80 tcp flags == syn tcp window 64860 
trace id a392a92f ip kube-proxy filter-prerouting rule ct state new jump firewall-check (verdict jump firewall-check)
trace id a392a92f ip kube-proxy filter-prerouting policy accept 
trace id a392a92f ip kube-proxy nat-prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11351 ip length 60 tcp sport 49834 tcp dport 80 tcp flags == syn tcp window 64860 
trace id a392a92f ip kube-proxy nat-prerouting rule jump services (verdict jump services)
trace id a392a92f ip kube-proxy services rule ip daddr . meta l4proto . th dport vmap @service-ips (verdict goto service-SUSTUHLJ-default/web/tcp/http)
trace id a392a92f ip kube-proxy service-SUSTUHLJ-default/web/tcp/http rule numgen random mod 2 vmap { 0 : goto endpoint-E7CNK33K-default/web/tcp/http__10.244.0.3/8080, 1 : goto endpoint-QYTGA46O-default/web/tcp/http__10.244.1.3/8080 } (verdict goto endpoint-E7CNK33K-default/web/tcp/http__10.244.0.3/8080)
trace id a392a92f ip kube-proxy endpoint-E7CNK33K-default/web/tcp/http__10.244.0.3/8080 rule meta l4proto tcp dnat to 10.244.0.3:8080 (verdict accept)
trace id f3d7a05e ip kube-proxy filter-forward packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11351 ip length 60 tcp sport 49834 tcp dport 8080 tcp flags == syn tcp window 64860 
trace id f3d7a05e ip kube-proxy filter-forward rule ct state new jump service-endpoints-check (verdict jump service-endpoints-check)
trace id f3d7a05e ip kube-proxy filter-forward rule ct state new jump cluster-ips-check (verdict jump cluster-ips-check)
trace id f3d7a05e ip kube-proxy filter-forward policy accept 
trace id f3d7a05e ip filter FORWARD packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11351 ip length 60 tcp sport 49834 tcp dport 8080 tcp flags == syn tcp window 64860 
trace id f3d7a05e ip filter FORWARD rule  counter packets 114 bytes 8220 jump FLANNEL-FWD (verdict jump FLANNEL-FWD)
trace id f3d7a05e ip filter FLANNEL-FWD rule ip saddr 10.244.0.0/16  counter packets 114 bytes 8220 accept (verdict accept)
trace id f3d7a05e ip nat POSTROUTING packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11351 ip length 60 tcp sport 49834 tcp dport 8080 tcp flags == syn tcp window 64860 
trace id f3d7a05e ip nat POSTROUTING rule  counter packets 31 bytes 1827 jump FLANNEL-POSTRTG (verdict jump FLANNEL-POSTRTG)
trace id f3d7a05e ip nat FLANNEL-POSTRTG rule ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16  counter packets 3 bytes 180 return (verdict return)
trace id f3d7a05e ip nat POSTROUTING policy accept 
trace id f3d7a05e ip kube-proxy nat-postrouting packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11351 ip length 60 tcp sport 49834 tcp dport 8080 tcp flags == syn tcp window 64860 
trace id f3d7a05e ip kube-proxy nat-postrouting rule jump masquerading (verdict jump masquerading)
trace id f3d7a05e ip kube-proxy masquerading rule meta mark & 0x00004000 == 0x00000000 return (verdict return)
trace id f3d7a05e ip kube-proxy nat-postrouting policy accept 
trace id 9f57d015 ip netlab-trace-25406 prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11352 ip length 52 tcp sport 49834 tcp dport 80 tcp flags == ack tcp window 64 
trace id 9f57d015 ip netlab-trace-25406 prerouting rule ip daddr 10.96.7.255 tcp dport 80 meta nftrace set 1 (verdict continue)
trace id 9f57d015 ip netlab-trace-25406 prerouting policy accept 
trace id 9f57d015 ip kube-proxy filter-prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11352 ip length 52 tcp sport 49834 tcp dport 80 tcp flags == ack tcp window 64 
trace id 9f57d015 ip kube-proxy filter-prerouting policy accept 
trace id 21694896 ip kube-proxy filter-forward packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11352 ip length 52 tcp sport 49834 tcp dport 8080 tcp flags == ack tcp window 64 
trace id 21694896 ip kube-proxy filter-forward policy accept 
trace id 21694896 ip filter FORWARD packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11352 ip length 52 tcp sport 49834 tcp dport 8080 tcp flags == ack tcp window 64 
trace id 21694896 ip filter FORWARD rule  counter packets 114 bytes 8220 jump FLANNEL-FWD (verdict jump FLANNEL-FWD)
trace id 21694896 ip filter FLANNEL-FWD rule ip saddr 10.244.0.0/16  counter packets 114 bytes 8220 accept (verdict accept)
trace id a392a92f ip netlab-trace-25406 prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11353 ip length 116 tcp sport 49834 tcp dport 80 tcp flags == 0x18 tcp window 64 
trace id a392a92f ip netlab-trace-25406 prerouting rule ip daddr 10.96.7.255 tcp dport 80 meta nftrace set 1 (verdict continue)
trace id a392a92f ip netlab-trace-25406 prerouting policy accept 
trace id a392a92f ip kube-proxy filter-prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11353 ip length 116 tcp sport 49834 tcp dport 80 tcp flags == 0x18 tcp window 64 
trace id a392a92f ip kube-proxy filter-prerouting policy accept 
trace id f3d7a05e ip kube-proxy filter-forward packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11353 ip length 116 tcp sport 49834 tcp dport 8080 tcp flags == 0x18 tcp window 64 
trace id f3d7a05e ip kube-proxy filter-forward policy accept 
trace id f3d7a05e ip filter FORWARD packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11353 ip length 116 tcp sport 49834 tcp dport 8080 tcp flags == 0x18 tcp window 64 
trace id f3d7a05e ip filter FORWARD rule  counter packets 114 bytes 8220 jump FLANNEL-FWD (verdict jump FLANNEL-FWD)
trace id f3d7a05e ip filter FLANNEL-FWD rule ip saddr 10.244.0.0/16  counter packets 114 bytes 8220 accept (verdict accept)
trace id 80c45e47 ip netlab-trace-25406 prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11354 ip length 52 tcp sport 49834 tcp dport 80 tcp flags == ack tcp window 64 
trace id 80c45e47 ip netlab-trace-25406 prerouting rule ip daddr 10.96.7.255 tcp dport 80 meta nftrace set 1 (verdict continue)
trace id 80c45e47 ip netlab-trace-25406 prerouting policy accept 
trace id 80c45e47 ip kube-proxy filter-prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11354 ip length 52 tcp sport 49834 tcp dport 80 tcp flags == ack tcp window 64 
trace id 80c45e47 ip kube-proxy filter-prerouting policy accept 
trace id f301ed93 ip kube-proxy filter-forward packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11354 ip length 52 tcp sport 49834 tcp dport 8080 tcp flags == ack tcp window 64 
trace id f301ed93 ip kube-proxy filter-forward policy accept 
trace id f301ed93 ip filter FORWARD packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11354 ip length 52 tcp sport 49834 tcp dport 8080 tcp flags == ack tcp window 64 
trace id f301ed93 ip filter FORWARD rule  counter packets 114 bytes 8220 jump FLANNEL-FWD (verdict jump FLANNEL-FWD)
trace id f301ed93 ip filter FLANNEL-FWD rule ip saddr 10.244.0.0/16  counter packets 114 bytes 8220 accept (verdict accept)
trace id a392a92f ip netlab-trace-25406 prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11355 ip length 52 tcp sport 49834 tcp dport 80 tcp flags == 0x11 tcp window 64 
trace id a392a92f ip netlab-trace-25406 prerouting rule ip daddr 10.96.7.255 tcp dport 80 meta nftrace set 1 (verdict continue)
trace id a392a92f ip netlab-trace-25406 prerouting policy accept 
trace id a392a92f ip kube-proxy filter-prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11355 ip length 52 tcp sport 49834 tcp dport 80 tcp flags == 0x11 tcp window 64 
trace id a392a92f ip kube-proxy filter-prerouting policy accept 
trace id f3d7a05e ip kube-proxy filter-forward packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11355 ip length 52 tcp sport 49834 tcp dport 8080 tcp flags == 0x11 tcp window 64 
trace id f3d7a05e ip kube-proxy filter-forward policy accept 
trace id f3d7a05e ip filter FORWARD packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11355 ip length 52 tcp sport 49834 tcp dport 8080 tcp flags == 0x11 tcp window 64 
trace id f3d7a05e ip filter FORWARD rule  counter packets 114 bytes 8220 jump FLANNEL-FWD (verdict jump FLANNEL-FWD)
trace id f3d7a05e ip filter FLANNEL-FWD rule ip saddr 10.244.0.0/16  counter packets 114 bytes 8220 accept (verdict accept)
trace id 95076e34 ip netlab-trace-25406 prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 1 ip length 40 tcp sport 12305 tcp dport 80 tcp flags == syn tcp window 8192 
trace id 95076e34 ip netlab-trace-25406 prerouting rule ip daddr 10.96.7.255 tcp dport 80 meta nftrace set 1 (verdict continue)
trace id 95076e34 ip netlab-trace-25406 prerouting policy accept 
trace id 95076e34 ip kube-proxy filter-prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 1 ip length 40 tcp sport 12305 tcp dport 80 tcp flags == syn tcp window 8192 
trace id 95076e34 ip kube-proxy filter-prerouting rule ct state new jump firewall-check (verdict jump firewall-check)
trace id 95076e34 ip kube-proxy filter-prerouting policy accept 
trace id 95076e34 ip kube-proxy nat-prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 1 ip length 40 tcp sport 12305 tcp dport 80 tcp flags == syn tcp window 8192 
trace id 95076e34 ip kube-proxy nat-prerouting rule jump services (verdict jump services)
trace id 95076e34 ip kube-proxy services rule ip daddr . meta l4proto . th dport vmap @service-ips (verdict goto service-SUSTUHLJ-default/web/tcp/http)
trace id 95076e34 ip kube-proxy service-SUSTUHLJ-default/web/tcp/http rule numgen random mod 2 vmap { 0 : goto endpoint-E7CNK33K-default/web/tcp/http__10.244.0.3/8080, 1 : goto endpoint-QYTGA46O-default/web/tcp/http__10.244.1.3/8080 } (verdict goto endpoint-QYTGA46O-default/web/tcp/http__10.244.1.3/8080)
trace id 95076e34 ip kube-proxy endpoint-QYTGA46O-default/web/tcp/http__10.244.1.3/8080 rule ip saddr 10.244.1.3 jump mark-for-masquerade (verdict jump mark-for-masquerade)
trace id 95076e34 ip kube-proxy mark-for-masquerade rule meta mark set meta mark | 0x00004000 (verdict continue)
trace id 95076e34 ip kube-proxy endpoint-QYTGA46O-default/web/tcp/http__10.244.1.3/8080 rule meta l4proto tcp dnat to 10.244.1.3:8080 (verdict accept)
trace id 95076e34 ip kube-proxy filter-forward packet: iif "cni0" oif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr b6:6d:b0:2f:05:28 ip saddr 10.244.1.3 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 1 ip length 40 tcp sport 12305 tcp dport 8080 tcp flags == syn tcp window 8192 
trace id 95076e34 ip kube-proxy filter-forward rule ct state new jump service-endpoints-check (verdict jump service-endpoints-check)
trace id 95076e34 ip kube-proxy filter-forward rule ct state new jump cluster-ips-check (verdict jump cluster-ips-check)
trace id 95076e34 ip kube-proxy filter-forward policy accept meta mark 0x00004000 
trace id 95076e34 ip filter FORWARD packet: iif "cni0" oif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr b6:6d:b0:2f:05:28 ip saddr 10.244.1.3 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 1 ip length 40 tcp sport 12305 tcp dport 8080 tcp flags == syn tcp window 8192 
trace id 95076e34 ip filter FORWARD rule  counter packets 114 bytes 8220 jump FLANNEL-FWD (verdict jump FLANNEL-FWD)
trace id 95076e34 ip filter FLANNEL-FWD rule ip saddr 10.244.0.0/16  counter packets 114 bytes 8220 accept (verdict accept)
trace id 95076e34 ip nat POSTROUTING packet: oif "cni0" @ll,0,112 0xb66db02f0528b66db02f05280800 ip saddr 10.244.1.3 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 1 ip length 40 tcp sport 12305 tcp dport 8080 tcp flags == syn tcp window 8192 
trace id 95076e34 ip nat POSTROUTING rule  counter packets 31 bytes 1827 jump FLANNEL-POSTRTG (verdict jump FLANNEL-POSTRTG)
trace id 95076e34 ip nat FLANNEL-POSTRTG rule meta mark & 0x00004000 == 0x00004000  counter packets 9 bytes 540 return (verdict return)
trace id 95076e34 ip nat POSTROUTING policy accept meta mark 0x00004000 
trace id 95076e34 ip kube-proxy nat-postrouting packet: oif "cni0" @ll,0,112 0xb66db02f0528b66db02f05280800 ip saddr 10.244.1.3 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 1 ip length 40 tcp sport 12305 tcp dport 8080 tcp flags == syn tcp window 8192 
trace id 95076e34 ip kube-proxy nat-postrouting rule jump masquerading (verdict jump masquerading)
trace id 95076e34 ip kube-proxy masquerading rule meta mark set meta mark ^ 0x00004000 (verdict continue)
trace id 95076e34 ip kube-proxy masquerading rule masquerade fully-random (verdict accept)
trace id 85c10fee ip netlab-trace-25406 prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 0 ip length 40 tcp sport 12305 tcp dport 80 tcp flags == rst tcp window 0 
trace id 85c10fee ip netlab-trace-25406 prerouting rule ip daddr 10.96.7.255 tcp dport 80 meta nftrace set 1 (verdict continue)
trace id 85c10fee ip netlab-trace-25406 prerouting policy accept 
trace id 85c10fee ip kube-proxy filter-prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 0 ip length 40 tcp sport 12305 tcp dport 80 tcp flags == rst tcp window 0 
trace id 85c10fee ip kube-proxy filter-prerouting policy accept 
trace id 85c10fee ip kube-proxy filter-forward packet: iif "cni0" oif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr b6:6d:b0:2f:05:28 ip saddr 10.244.1.3 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 0 ip length 40 tcp sport 12305 tcp dport 8080 tcp flags == rst tcp window 0 
trace id 85c10fee ip kube-proxy filter-forward policy accept 
trace id 85c10fee ip filter FORWARD packet: iif "cni0" oif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr b6:6d:b0:2f:05:28 ip saddr 10.244.1.3 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 0 ip length 40 tcp sport 12305 tcp dport 8080 tcp flags == rst tcp window 0 
trace id 85c10fee ip filter FORWARD rule  counter packets 114 bytes 8220 jump FLANNEL-FWD (verdict jump FLANNEL-FWD)
trace id 85c10fee ip filter FLANNEL-FWD rule ip saddr 10.244.0.0/16  counter packets 114 bytes 8220 accept (verdict accept)
"""

# The same lab, node nx1-worker, the whole of what its monitor printed during a UDP trace from
# 10.244.1.3 port 45747 to 10.96.7.255:8081 (answered by 10.244.0.3) in table netlab-trace-25713,
# the marker datagram from 127.0.0.1:58070 included, and what followed it.
UDP_WITH_MARKER = """\
trace id b1c5490b ip netlab-trace-25713 prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11088 ip length 36 udp sport 45747 udp dport 8081 udp length 16 @th,64,64 0x686f73746e616d65 
trace id b1c5490b ip netlab-trace-25713 prerouting rule ip daddr 10.96.7.255 udp dport 8081 meta nftrace set 1 (verdict continue)
trace id b1c5490b ip netlab-trace-25713 prerouting policy accept 
trace id b1c5490b ip kube-proxy filter-prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11088 ip length 36 udp sport 45747 udp dport 8081 udp length 16 @th,64,64 0x686f73746e616d65 
trace id b1c5490b ip kube-proxy filter-prerouting rule ct state new jump firewall-check (verdict jump firewall-check)
trace id b1c5490b ip kube-proxy filter-prerouting policy accept 
trace id b1c5490b ip kube-proxy nat-prerouting packet: iif "cni0" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.96.7.255 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 11088 ip length 36 udp sport 45747 udp dport 8081 udp length 16 @th,64,64 0x686f73746e616d65 
trace id b1c5490b ip kube-proxy nat-prerouting rule jump services (verdict jump services)
trace id b1c5490b ip kube-proxy services rule ip daddr . meta l4proto . th dport vmap @service-ips (verdict goto service-OSWNS3JV-default/web/udp/udp)
trace id b1c5490b ip kube-proxy service-OSWNS3JV-default/web/udp/udp rule numgen random mod 2 vmap { 0 : goto endpoint-VGWATVB4-default/web/udp/udp__10.244.0.3/8081, 1 : goto endpoint-KV7T7A6B-default/web/udp/udp__10.244.1.3/8081 } (verdict goto endpoint-VGWATVB4-default/web/udp/udp__10.244.0.3/8081)
trace id b1c5490b ip kube-proxy endpoint-VGWATVB4-default/web/udp/udp__10.244.0.3/8081 rule meta l4proto udp dnat to 10.244.0.3:8081 (verdict accept)
trace id be58db2c ip kube-proxy filter-forward packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11088 ip length 36 udp sport 45747 udp dport 8081 udp length 16 @th,64,64 0x686f73746e616d65 
trace id be58db2c ip kube-proxy filter-forward rule ct state new jump service-endpoints-check (verdict jump service-endpoints-check)
trace id be58db2c ip kube-proxy filter-forward rule ct state new jump cluster-ips-check (verdict jump cluster-ips-check)
trace id be58db2c ip kube-proxy filter-forward policy accept 
trace id be58db2c ip filter FORWARD packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11088 ip length 36 udp sport 45747 udp dport 8081 udp length 16 @th,64,64 0x686f73746e616d65 
trace id be58db2c ip filter FORWARD rule  counter packets 127 bytes 9063 jump FLANNEL-FWD (verdict jump FLANNEL-FWD)
trace id be58db2c ip filter FLANNEL-FWD rule ip saddr 10.244.0.0/16  counter packets 127 bytes 9063 accept (verdict accept)
trace id be58db2c ip nat POSTROUTING packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11088 ip length 36 udp sport 45747 udp dport 8081 udp length 16 @th,64,64 0x686f73746e616d65 
trace id be58db2c ip nat POSTROUTING rule  counter packets 35 bytes 2083 jump FLANNEL-POSTRTG (verdict jump FLANNEL-POSTRTG)
trace id be58db2c ip nat FLANNEL-POSTRTG rule ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16  counter packets 4 bytes 240 return (verdict return)
trace id be58db2c ip nat POSTROUTING policy accept 
trace id be58db2c ip kube-proxy nat-postrouting packet: iif "cni0" oif "flannel.1" ether saddr b6:6d:b0:2f:05:28 ether daddr 1e:dd:58:40:3a:b2 ip saddr 10.244.1.3 ip daddr 10.244.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 11088 ip length 36 udp sport 45747 udp dport 8081 udp length 16 @th,64,64 0x686f73746e616d65 
trace id be58db2c ip kube-proxy nat-postrouting rule jump masquerading (verdict jump masquerading)
trace id be58db2c ip kube-proxy masquerading rule meta mark & 0x00004000 == 0x00000000 return (verdict return)
trace id be58db2c ip kube-proxy nat-postrouting policy accept 
trace id a6b06580 ip netlab-trace-25713 done packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27787 ip length 46 udp sport 58070 udp dport 9 udp length 26 @th,64,96 0x6e65746c6162207472616365 
trace id a6b06580 ip netlab-trace-25713 done rule ip saddr 127.0.0.1 ip daddr 127.0.0.1 udp sport 58070 udp dport 9 meta nftrace set 1 (verdict continue)
trace id a6b06580 ip netlab-trace-25713 done policy accept 
trace id a6b06580 ip netlab-trace-25713 output packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27787 ip length 46 udp sport 58070 udp dport 9 udp length 26 @th,64,96 0x6e65746c6162207472616365 
trace id a6b06580 ip netlab-trace-25713 output policy accept 
trace id a6b06580 ip kube-proxy filter-output packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27787 ip length 46 udp sport 58070 udp dport 9 udp length 26 @th,64,96 0x6e65746c6162207472616365 
trace id a6b06580 ip kube-proxy filter-output rule ct state new jump service-endpoints-check (verdict jump service-endpoints-check)
trace id a6b06580 ip kube-proxy filter-output rule ct state new jump firewall-check (verdict jump firewall-check)
trace id a6b06580 ip kube-proxy filter-output policy accept 
trace id a6b06580 ip kube-proxy nat-output packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27787 ip length 46 udp sport 58070 udp dport 9 udp length 26 @th,64,96 0x6e65746c6162207472616365 
trace id a6b06580 ip kube-proxy nat-output rule jump services (verdict jump services)
trace id a6b06580 ip kube-proxy nat-output policy accept 
trace id a6b06580 ip kube-proxy filter-output-post-dnat packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27787 ip length 46 udp sport 58070 udp dport 9 udp length 26 @th,64,96 0x6e65746c6162207472616365 
trace id a6b06580 ip kube-proxy filter-output-post-dnat rule ct state new jump cluster-ips-check (verdict jump cluster-ips-check)
trace id a6b06580 ip kube-proxy filter-output-post-dnat policy accept 
trace id a6b06580 ip nat POSTROUTING packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27787 ip length 46 udp sport 58070 udp dport 9 udp length 26 @th,64,96 0x6e65746c6162207472616365 
trace id a6b06580 ip nat POSTROUTING rule  counter packets 35 bytes 2083 jump FLANNEL-POSTRTG (verdict jump FLANNEL-POSTRTG)
trace id a6b06580 ip nat POSTROUTING policy accept 
trace id a6b06580 ip kube-proxy nat-postrouting packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27787 ip length 46 udp sport 58070 udp dport 9 udp length 26 @th,64,96 0x6e65746c6162207472616365 
trace id a6b06580 ip kube-proxy nat-postrouting rule jump masquerading (verdict jump masquerading)
trace id a6b06580 ip kube-proxy masquerading rule meta mark & 0x00004000 == 0x00000000 return (verdict return)
trace id a6b06580 ip kube-proxy nat-postrouting policy accept 
trace id 92ab11a9 ip netlab-trace-25713 prerouting packet: iif "lo" @ll,0,112 0x800 ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27787 ip length 46 udp sport 58070 udp dport 9 udp length 26 @th,64,96 0x6e65746c6162207472616365 
trace id 92ab11a9 ip netlab-trace-25713 prerouting policy accept 
trace id 92ab11a9 ip kube-proxy filter-prerouting packet: iif "lo" @ll,0,112 0x800 ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27787 ip length 46 udp sport 58070 udp dport 9 udp length 26 @th,64,96 0x6e65746c6162207472616365 
trace id 92ab11a9 ip kube-proxy filter-prerouting rule ct state new jump firewall-check (verdict jump firewall-check)
trace id 92ab11a9 ip kube-proxy filter-prerouting policy accept 
trace id 92ab11a9 ip kube-proxy filter-input packet: iif "lo" @ll,0,112 0x800 ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27787 ip length 46 udp sport 58070 udp dport 9 udp length 26 @th,64,96 0x6e65746c6162207472616365 
trace id 92ab11a9 ip kube-proxy filter-input rule ct state new jump nodeport-endpoints-check (verdict jump nodeport-endpoints-check)
trace id 92ab11a9 ip kube-proxy filter-input rule ct state new jump service-endpoints-check (verdict jump service-endpoints-check)
trace id 92ab11a9 ip kube-proxy filter-input policy accept 
"""

# `nft list table ip kube-proxy` in node nx2-worker of topologies/services.yaml run in nftables
# mode (lab nx2): web pods 10.244.1.3, 10.244.1.4, 10.244.2.3, 10.244.2.4, client 10.244.2.2,
# CoreDNS 10.244.0.2 and 10.244.1.2, the API server at 172.18.0.2:6443.
SERVICES_LISTING = """\
table ip kube-proxy {
	comment "rules for kube-proxy"
	set cluster-ips {
		type ipv4_addr
		comment "Active ClusterIPs"
		elements = { 10.96.0.1, 10.96.0.10,
			     10.96.82.199, 10.102.75.75,
			     10.104.78.64, 10.106.197.246,
			     10.108.158.126, 10.110.77.72,
			     10.110.190.167 }
	}

	set nodeport-ips {
		type ipv4_addr
		comment "IPs that accept NodePort traffic"
		elements = { 172.18.0.3 }
	}

	map firewall-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		comment "destinations that are subject to LoadBalancerSourceRanges"
	}

	map no-endpoint-nodeports {
		type inet_proto . inet_service : verdict
		comment "vmap to drop or reject packets to service nodeports with no endpoints"
	}

	map no-endpoint-services {
		type ipv4_addr . inet_proto . inet_service : verdict
		comment "vmap to drop or reject packets to services with no endpoints"
		elements = { 10.110.190.167 . tcp . 80 comment "default/nobody:http" : goto reject-chain }
	}

	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"
		elements = { 10.110.77.72 . tcp . 9000 : goto service-ZQUUEST7-default/dual/tcp/tcp,
			     10.110.77.72 . udp . 9000 : goto service-I2ZHBJM2-default/dual/udp/udp,
			     10.96.0.10 . tcp . 53 : goto service-NWBZK7IH-kube-system/kube-dns/tcp/dns-tcp,
			     10.96.0.10 . udp . 53 : goto service-FY5PMXPG-kube-system/kube-dns/udp/dns,
			     10.104.78.64 . tcp . 80 : goto service-MW3VTDQO-default/web-local/tcp/http,
			     10.102.75.75 . tcp . 80 : goto service-GCGJYZ2R-default/web-nodeport/tcp/http,
			     10.108.158.126 . tcp . 80 : goto service-SUSTUHLJ-default/web/tcp/http,
			     10.96.82.199 . tcp . 80 : goto service-EDE2N7RF-default/sticky/tcp/,
			     10.106.197.246 . tcp . 80 : goto service-YAA25XAE-default/client/tcp/http,
			     10.102.75.75 . udp . 8081 : goto service-2AGC4V3D-default/web-nodeport/udp/udp,
			     10.108.158.126 . udp . 8081 : goto service-OSWNS3JV-default/web/udp/udp,
			     10.96.0.1 . tcp . 443 : goto service-2QRHZV4L-default/kubernetes/tcp/https,
			     10.96.0.10 . tcp . 9153 : goto service-AS2KJYAD-kube-system/kube-dns/tcp/metrics }
	}

	map service-nodeports {
		type inet_proto . inet_service : verdict
		comment "NodePort traffic"
		elements = { tcp . 30080 : goto external-GCGJYZ2R-default/web-nodeport/tcp/http,
			     udp . 30081 : goto external-2AGC4V3D-default/web-nodeport/udp/udp,
			     tcp . 30082 : goto external-MW3VTDQO-default/web-local/tcp/http }
	}

	set affinity-TASAMBLQ-default/sticky/tcp/__10.244.1.3/8080 {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 10m
	}

	set affinity-LET675FS-default/sticky/tcp/__10.244.1.4/8080 {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 10m
	}

	set affinity-HS4YTFEE-default/sticky/tcp/__10.244.2.3/8080 {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 10m
	}

	set affinity-PHJEG6PV-default/sticky/tcp/__10.244.2.4/8080 {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 10m
	}

	chain filter-prerouting {
		type filter hook prerouting priority dstnat - 10; policy accept;
		ct state new jump firewall-check
	}

	chain filter-input {
		type filter hook input priority -110; policy accept;
		ct state new jump nodeport-endpoints-check
		ct state new jump service-endpoints-check
	}

	chain filter-forward {
		type filter hook forward priority -110; policy accept;
		ct state new jump service-endpoints-check
		ct state new jump cluster-ips-check
	}

	chain filter-output {
		type filter hook output priority -110; policy accept;
		ct state new jump service-endpoints-check
		ct state new jump firewall-check
	}

	chain filter-output-post-dnat {
		type filter hook output priority -90; policy accept;
		ct state new jump cluster-ips-check
	}

	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}

	chain nat-output {
		type nat hook output priority -100; policy accept;
		jump services
	}

	chain nat-postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		jump masquerading
	}

	chain cluster-ips-check {
		ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
		ip daddr 10.96.0.0/12 drop comment "Drop traffic to unallocated ClusterIPs"
	}

	chain firewall-check {
		ip daddr . meta l4proto . th dport vmap @firewall-ips
	}

	chain mark-for-masquerade {
		meta mark set meta mark | 0x00004000
	}

	chain masquerading {
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}

	chain nodeport-endpoints-check {
		ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
	}

	chain reject-chain {
		comment "helper for @no-endpoint-services / @no-endpoint-nodeports"
		reject
	}

	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
		ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
	}

	chain service-endpoints-check {
		ip daddr . meta l4proto . th dport vmap @no-endpoint-services
	}

	chain service-YAA25XAE-default/client/tcp/http {
		ip daddr 10.106.197.246 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 1 vmap { 0 : goto endpoint-3XXD3XIC-default/client/tcp/http__10.244.2.2/8080 }
	}

	chain endpoint-3XXD3XIC-default/client/tcp/http__10.244.2.2/8080 {
		ip saddr 10.244.2.2 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.2.2:8080
	}

	chain service-ZQUUEST7-default/dual/tcp/tcp {
		ip daddr 10.110.77.72 tcp dport 9000 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 4 vmap { 0 : goto endpoint-MXL7PYYH-default/dual/tcp/tcp__10.244.1.3/8080, 1 : goto endpoint-2MYXQYRK-default/dual/tcp/tcp__10.244.1.4/8080, 2 : goto endpoint-OKLYUQ5P-default/dual/tcp/tcp__10.244.2.3/8080, 3 : goto endpoint-YWFFKFSQ-default/dual/tcp/tcp__10.244.2.4/8080 }
	}

	chain endpoint-MXL7PYYH-default/dual/tcp/tcp__10.244.1.3/8080 {
		ip saddr 10.244.1.3 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.1.3:8080
	}

	chain endpoint-2MYXQYRK-default/dual/tcp/tcp__10.244.1.4/8080 {
		ip saddr 10.244.1.4 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.1.4:8080
	}

	chain endpoint-OKLYUQ5P-default/dual/tcp/tcp__10.244.2.3/8080 {
		ip saddr 10.244.2.3 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.2.3:8080
	}

	chain endpoint-YWFFKFSQ-default/dual/tcp/tcp__10.244.2.4/8080 {
		ip saddr 10.244.2.4 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.2.4:8080
	}

	chain service-I2ZHBJM2-default/dual/udp/udp {
		ip daddr 10.110.77.72 udp dport 9000 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 4 vmap { 0 : goto endpoint-4TPD37RW-default/dual/udp/udp__10.244.1.3/8081, 1 : goto endpoint-C5TV3JC2-default/dual/udp/udp__10.244.1.4/8081, 2 : goto endpoint-BC36P6HD-default/dual/udp/udp__10.244.2.3/8081, 3 : goto endpoint-MEB4LO4K-default/dual/udp/udp__10.244.2.4/8081 }
	}

	chain endpoint-4TPD37RW-default/dual/udp/udp__10.244.1.3/8081 {
		ip saddr 10.244.1.3 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.1.3:8081
	}

	chain endpoint-C5TV3JC2-default/dual/udp/udp__10.244.1.4/8081 {
		ip saddr 10.244.1.4 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.1.4:8081
	}

	chain endpoint-BC36P6HD-default/dual/udp/udp__10.244.2.3/8081 {
		ip saddr 10.244.2.3 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.2.3:8081
	}

	chain endpoint-MEB4LO4K-default/dual/udp/udp__10.244.2.4/8081 {
		ip saddr 10.244.2.4 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.2.4:8081
	}

	chain service-2QRHZV4L-default/kubernetes/tcp/https {
		ip daddr 10.96.0.1 tcp dport 443 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 1 vmap { 0 : goto endpoint-KJBNWEXB-default/kubernetes/tcp/https__172.18.0.2/6443 }
	}

	chain endpoint-KJBNWEXB-default/kubernetes/tcp/https__172.18.0.2/6443 {
		ip saddr 172.18.0.2 jump mark-for-masquerade
		meta l4proto tcp dnat to 172.18.0.2:6443
	}

	chain service-EDE2N7RF-default/sticky/tcp/ {
		ip daddr 10.96.82.199 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		ip saddr @affinity-TASAMBLQ-default/sticky/tcp/__10.244.1.3/8080 goto endpoint-TASAMBLQ-default/sticky/tcp/__10.244.1.3/8080
		ip saddr @affinity-LET675FS-default/sticky/tcp/__10.244.1.4/8080 goto endpoint-LET675FS-default/sticky/tcp/__10.244.1.4/8080
		ip saddr @affinity-HS4YTFEE-default/sticky/tcp/__10.244.2.3/8080 goto endpoint-HS4YTFEE-default/sticky/tcp/__10.244.2.3/8080
		ip saddr @affinity-PHJEG6PV-default/sticky/tcp/__10.244.2.4/8080 goto endpoint-PHJEG6PV-default/sticky/tcp/__10.244.2.4/8080
		numgen random mod 4 vmap { 0 : goto endpoint-TASAMBLQ-default/sticky/tcp/__10.244.1.3/8080, 1 : goto endpoint-LET675FS-default/sticky/tcp/__10.244.1.4/8080, 2 : goto endpoint-HS4YTFEE-default/sticky/tcp/__10.244.2.3/8080, 3 : goto endpoint-PHJEG6PV-default/sticky/tcp/__10.244.2.4/8080 }
	}

	chain endpoint-TASAMBLQ-default/sticky/tcp/__10.244.1.3/8080 {
		ip saddr 10.244.1.3 jump mark-for-masquerade
		update @affinity-TASAMBLQ-default/sticky/tcp/__10.244.1.3/8080 { ip saddr }
		meta l4proto tcp dnat to 10.244.1.3:8080
	}

	chain endpoint-LET675FS-default/sticky/tcp/__10.244.1.4/8080 {
		ip saddr 10.244.1.4 jump mark-for-masquerade
		update @affinity-LET675FS-default/sticky/tcp/__10.244.1.4/8080 { ip saddr }
		meta l4proto tcp dnat to 10.244.1.4:8080
	}

	chain endpoint-HS4YTFEE-default/sticky/tcp/__10.244.2.3/8080 {
		ip saddr 10.244.2.3 jump mark-for-masquerade
		update @affinity-HS4YTFEE-default/sticky/tcp/__10.244.2.3/8080 { ip saddr }
		meta l4proto tcp dnat to 10.244.2.3:8080
	}

	chain endpoint-PHJEG6PV-default/sticky/tcp/__10.244.2.4/8080 {
		ip saddr 10.244.2.4 jump mark-for-masquerade
		update @affinity-PHJEG6PV-default/sticky/tcp/__10.244.2.4/8080 { ip saddr }
		meta l4proto tcp dnat to 10.244.2.4:8080
	}

	chain service-MW3VTDQO-default/web-local/tcp/http {
		ip daddr 10.104.78.64 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 4 vmap { 0 : goto endpoint-VMBH5UT4-default/web-local/tcp/http__10.244.1.3/8080, 1 : goto endpoint-27QSLQ6V-default/web-local/tcp/http__10.244.1.4/8080, 2 : goto endpoint-5VCNRPYB-default/web-local/tcp/http__10.244.2.3/8080, 3 : goto endpoint-TWGJLWTR-default/web-local/tcp/http__10.244.2.4/8080 }
	}

	chain local-MW3VTDQO-default/web-local/tcp/http {
		numgen random mod 2 vmap { 0 : goto endpoint-VMBH5UT4-default/web-local/tcp/http__10.244.1.3/8080, 1 : goto endpoint-27QSLQ6V-default/web-local/tcp/http__10.244.1.4/8080 }
	}

	chain external-MW3VTDQO-default/web-local/tcp/http {
		ip saddr 10.244.0.0/16 goto service-MW3VTDQO-default/web-local/tcp/http comment "short-circuit pod traffic"
		fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
		fib saddr type local goto service-MW3VTDQO-default/web-local/tcp/http comment "short-circuit local traffic"
		goto local-MW3VTDQO-default/web-local/tcp/http
	}

	chain endpoint-VMBH5UT4-default/web-local/tcp/http__10.244.1.3/8080 {
		ip saddr 10.244.1.3 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.1.3:8080
	}

	chain endpoint-27QSLQ6V-default/web-local/tcp/http__10.244.1.4/8080 {
		ip saddr 10.244.1.4 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.1.4:8080
	}

	chain endpoint-5VCNRPYB-default/web-local/tcp/http__10.244.2.3/8080 {
		ip saddr 10.244.2.3 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.2.3:8080
	}

	chain endpoint-TWGJLWTR-default/web-local/tcp/http__10.244.2.4/8080 {
		ip saddr 10.244.2.4 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.2.4:8080
	}

	chain service-GCGJYZ2R-default/web-nodeport/tcp/http {
		ip daddr 10.102.75.75 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 4 vmap { 0 : goto endpoint-XVR2GYT7-default/web-nodeport/tcp/http__10.244.1.3/8080, 1 : goto endpoint-MZSUG6LY-default/web-nodeport/tcp/http__10.244.1.4/8080, 2 : goto endpoint-QZ5Y2OYP-default/web-nodeport/tcp/http__10.244.2.3/8080, 3 : goto endpoint-4SQSUYA7-default/web-nodeport/tcp/http__10.244.2.4/8080 }
	}

	chain external-GCGJYZ2R-default/web-nodeport/tcp/http {
		jump mark-for-masquerade
		goto service-GCGJYZ2R-default/web-nodeport/tcp/http
	}

	chain endpoint-XVR2GYT7-default/web-nodeport/tcp/http__10.244.1.3/8080 {
		ip saddr 10.244.1.3 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.1.3:8080
	}

	chain endpoint-MZSUG6LY-default/web-nodeport/tcp/http__10.244.1.4/8080 {
		ip saddr 10.244.1.4 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.1.4:8080
	}

	chain endpoint-QZ5Y2OYP-default/web-nodeport/tcp/http__10.244.2.3/8080 {
		ip saddr 10.244.2.3 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.2.3:8080
	}

	chain endpoint-4SQSUYA7-default/web-nodeport/tcp/http__10.244.2.4/8080 {
		ip saddr 10.244.2.4 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.2.4:8080
	}

	chain service-2AGC4V3D-default/web-nodeport/udp/udp {
		ip daddr 10.102.75.75 udp dport 8081 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 4 vmap { 0 : goto endpoint-JN5OCXHJ-default/web-nodeport/udp/udp__10.244.1.3/8081, 1 : goto endpoint-OTW34WYV-default/web-nodeport/udp/udp__10.244.1.4/8081, 2 : goto endpoint-QYACNFMK-default/web-nodeport/udp/udp__10.244.2.3/8081, 3 : goto endpoint-LKEXF2KR-default/web-nodeport/udp/udp__10.244.2.4/8081 }
	}

	chain external-2AGC4V3D-default/web-nodeport/udp/udp {
		jump mark-for-masquerade
		goto service-2AGC4V3D-default/web-nodeport/udp/udp
	}

	chain endpoint-JN5OCXHJ-default/web-nodeport/udp/udp__10.244.1.3/8081 {
		ip saddr 10.244.1.3 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.1.3:8081
	}

	chain endpoint-OTW34WYV-default/web-nodeport/udp/udp__10.244.1.4/8081 {
		ip saddr 10.244.1.4 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.1.4:8081
	}

	chain endpoint-QYACNFMK-default/web-nodeport/udp/udp__10.244.2.3/8081 {
		ip saddr 10.244.2.3 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.2.3:8081
	}

	chain endpoint-LKEXF2KR-default/web-nodeport/udp/udp__10.244.2.4/8081 {
		ip saddr 10.244.2.4 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.2.4:8081
	}

	chain service-SUSTUHLJ-default/web/tcp/http {
		ip daddr 10.108.158.126 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 4 vmap { 0 : goto endpoint-QYTGA46O-default/web/tcp/http__10.244.1.3/8080, 1 : goto endpoint-S6J4REDL-default/web/tcp/http__10.244.1.4/8080, 2 : goto endpoint-AHN7CUJY-default/web/tcp/http__10.244.2.3/8080, 3 : goto endpoint-JHLVF6GI-default/web/tcp/http__10.244.2.4/8080 }
	}

	chain endpoint-QYTGA46O-default/web/tcp/http__10.244.1.3/8080 {
		ip saddr 10.244.1.3 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.1.3:8080
	}

	chain endpoint-S6J4REDL-default/web/tcp/http__10.244.1.4/8080 {
		ip saddr 10.244.1.4 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.1.4:8080
	}

	chain endpoint-AHN7CUJY-default/web/tcp/http__10.244.2.3/8080 {
		ip saddr 10.244.2.3 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.2.3:8080
	}

	chain endpoint-JHLVF6GI-default/web/tcp/http__10.244.2.4/8080 {
		ip saddr 10.244.2.4 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.2.4:8080
	}

	chain service-OSWNS3JV-default/web/udp/udp {
		ip daddr 10.108.158.126 udp dport 8081 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 4 vmap { 0 : goto endpoint-KV7T7A6B-default/web/udp/udp__10.244.1.3/8081, 1 : goto endpoint-DVJSP5RN-default/web/udp/udp__10.244.1.4/8081, 2 : goto endpoint-ZDEV26P3-default/web/udp/udp__10.244.2.3/8081, 3 : goto endpoint-WH2NSXQZ-default/web/udp/udp__10.244.2.4/8081 }
	}

	chain endpoint-KV7T7A6B-default/web/udp/udp__10.244.1.3/8081 {
		ip saddr 10.244.1.3 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.1.3:8081
	}

	chain endpoint-DVJSP5RN-default/web/udp/udp__10.244.1.4/8081 {
		ip saddr 10.244.1.4 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.1.4:8081
	}

	chain endpoint-ZDEV26P3-default/web/udp/udp__10.244.2.3/8081 {
		ip saddr 10.244.2.3 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.2.3:8081
	}

	chain endpoint-WH2NSXQZ-default/web/udp/udp__10.244.2.4/8081 {
		ip saddr 10.244.2.4 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.2.4:8081
	}

	chain service-FY5PMXPG-kube-system/kube-dns/udp/dns {
		ip daddr 10.96.0.10 udp dport 53 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 2 vmap { 0 : goto endpoint-2GKX576Q-kube-system/kube-dns/udp/dns__10.244.0.2/53, 1 : goto endpoint-TF6S6XX7-kube-system/kube-dns/udp/dns__10.244.1.2/53 }
	}

	chain endpoint-2GKX576Q-kube-system/kube-dns/udp/dns__10.244.0.2/53 {
		ip saddr 10.244.0.2 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.0.2:53
	}

	chain endpoint-TF6S6XX7-kube-system/kube-dns/udp/dns__10.244.1.2/53 {
		ip saddr 10.244.1.2 jump mark-for-masquerade
		meta l4proto udp dnat to 10.244.1.2:53
	}

	chain service-NWBZK7IH-kube-system/kube-dns/tcp/dns-tcp {
		ip daddr 10.96.0.10 tcp dport 53 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 2 vmap { 0 : goto endpoint-BFW5VCWB-kube-system/kube-dns/tcp/dns-tcp__10.244.0.2/53, 1 : goto endpoint-EBH46Y7A-kube-system/kube-dns/tcp/dns-tcp__10.244.1.2/53 }
	}

	chain endpoint-BFW5VCWB-kube-system/kube-dns/tcp/dns-tcp__10.244.0.2/53 {
		ip saddr 10.244.0.2 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.0.2:53
	}

	chain endpoint-EBH46Y7A-kube-system/kube-dns/tcp/dns-tcp__10.244.1.2/53 {
		ip saddr 10.244.1.2 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.1.2:53
	}

	chain service-AS2KJYAD-kube-system/kube-dns/tcp/metrics {
		ip daddr 10.96.0.10 tcp dport 9153 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 2 vmap { 0 : goto endpoint-SUJXBOPR-kube-system/kube-dns/tcp/metrics__10.244.0.2/9153, 1 : goto endpoint-F3VHULCM-kube-system/kube-dns/tcp/metrics__10.244.1.2/9153 }
	}

	chain endpoint-SUJXBOPR-kube-system/kube-dns/tcp/metrics__10.244.0.2/9153 {
		ip saddr 10.244.0.2 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.0.2:9153
	}

	chain endpoint-F3VHULCM-kube-system/kube-dns/tcp/metrics__10.244.1.2/9153 {
		ip saddr 10.244.1.2 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.1.2:9153
	}
}
"""


WEB_HTTP = hashed("service-", "default/web/tcp/http")
TO_CONTROL_PLANE = hashed("endpoint-", "default/web/tcp/http__10.244.0.3/8080")
TO_ITSELF = hashed("endpoint-", "default/web/tcp/http__10.244.1.3/8080")
NUMGEN = f"numgen random mod 2 vmap {{ 0 : goto {TO_CONTROL_PLANE}, 1 : goto {TO_ITSELF} }}"


def test_the_monitor_reports_each_rule_a_packet_matched_with_the_packet_as_it_was_there():
    events = trace.parse_monitor(TCP_TWO_CONNECTIONS)
    kube_proxy = [e for e in events if e["table"] == "ip kube-proxy"]
    first = kube_proxy[:9]
    assert [(e["chain"], e["rule"], e["verdict"]) for e in first] == [
        ("filter-prerouting", "ct state new jump firewall-check", "jump firewall-check"),
        ("nat-prerouting", "jump services", "jump services"),
        ("services", "ip daddr . meta l4proto . th dport vmap @service-ips", f"goto {WEB_HTTP}"),
        (WEB_HTTP, NUMGEN, f"goto {TO_CONTROL_PLANE}"),
        (TO_CONTROL_PLANE, "meta l4proto tcp dnat to 10.244.0.3:8080", "accept"),
        ("filter-forward", "ct state new jump service-endpoints-check", "jump service-endpoints-check"),
        ("filter-forward", "ct state new jump cluster-ips-check", "jump cluster-ips-check"),
        ("nat-postrouting", "jump masquerading", "jump masquerading"),
        ("masquerading", "meta mark & 0x00004000 == 0x00000000 return", "return"),
    ]
    # Before the DNAT the packet goes to the ClusterIP; from the forward hook on, to the pod.
    assert first[2]["packet"] == {"src": "10.244.1.3", "dst": "10.96.7.255", "proto": "tcp", "sport": 49834, "dport": 80}
    assert first[5]["packet"] == {"src": "10.244.1.3", "dst": "10.244.0.3", "proto": "tcp", "sport": 49834, "dport": 8080}
    # iptables-nft's chains (flannel's) are reported too, with their counters in the text.
    assert ("ip filter", "FLANNEL-FWD", "ip saddr 10.244.0.0/16  counter packets 114 bytes 8220 accept", "accept") in [
        (e["table"], e["chain"], e["rule"], e["verdict"]) for e in events]
    # The trace's own rule is reported as what it is; policies are not rules.
    assert {e["table"] for e in events} == {"ip kube-proxy", "ip filter", "ip nat", "ip netlab-trace-25406"}


def test_a_flows_hops_are_its_own_packets_in_the_order_first_met():
    http = trace.nft_hops("nx1-worker", trace.parse_monitor(TCP_TWO_CONNECTIONS), 49834)
    assert [(h["chain"], h["verdict"], h["packets"]) for h in http] == [
        ("filter-prerouting", "jump firewall-check", 1),
        ("nat-prerouting", "jump services", 1),
        ("services", f"goto {WEB_HTTP}", 1),
        (WEB_HTTP, f"goto {TO_CONTROL_PLANE}", 1),
        (TO_CONTROL_PLANE, "accept", 1),
        ("filter-forward", "jump service-endpoints-check", 1),
        ("filter-forward", "jump cluster-ips-check", 1),
        ("nat-postrouting", "jump masquerading", 1),
        ("masquerading", "return", 1),
    ]
    assert all(h["node"] == "nx1-worker" and h["table"] == "ip kube-proxy" for h in http)
    # The SYN from port 12305 chose the pod itself: hairpin, so it is marked and masqueraded.
    syn = trace.nft_hops("nx1-worker", trace.parse_monitor(TCP_TWO_CONNECTIONS), 12305)
    assert [(h["chain"], h["rule"], h["verdict"]) for h in syn][3:] == [
        (WEB_HTTP, NUMGEN, f"goto {TO_ITSELF}"),
        (TO_ITSELF, "ip saddr 10.244.1.3 jump mark-for-masquerade", "jump mark-for-masquerade"),
        ("mark-for-masquerade", "meta mark set meta mark | 0x00004000", "continue"),
        (TO_ITSELF, "meta l4proto tcp dnat to 10.244.1.3:8080", "accept"),
        ("filter-forward", "ct state new jump service-endpoints-check", "jump service-endpoints-check"),
        ("filter-forward", "ct state new jump cluster-ips-check", "jump cluster-ips-check"),
        ("nat-postrouting", "jump masquerading", "jump masquerading"),
        ("masquerading", "meta mark set meta mark ^ 0x00004000", "continue"),
        ("masquerading", "masquerade fully-random", "accept"),
    ]
    # Without a source port (an ICMP echo, a refused connection) every traced packet counts:
    # both connections went through `services` once each.
    both = trace.nft_hops("nx1-worker", trace.parse_monitor(TCP_TWO_CONNECTIONS), None)
    assert next(h for h in both if h["chain"] == "services")["packets"] == 2
    assert {h["verdict"] for h in both if h["chain"] == WEB_HTTP} == {f"goto {TO_CONTROL_PLANE}", f"goto {TO_ITSELF}"}


class _Printed:
    """A monitor whose output is already there."""

    def __init__(self, text):
        self._text = text

    def text(self):
        return self._text


def test_what_a_monitor_printed_is_read_up_to_the_marker():
    tracing = trace._Tracing("netlab-trace-25713", {"nx1-worker": _Printed(UDP_WITH_MARKER)},
                             {"nx1-worker": SimpleNamespace(sendto=lambda *a: None)})
    text = tracing.reported(timeout=0.1)["nx1-worker"]
    lines = UDP_WITH_MARKER.splitlines(keepends=True)
    assert text == "".join(lines[:26])                     # everything before the marker's first line
    assert "done" not in text and "udp sport 58070" not in text
    hops = trace.nft_hops("nx1-worker", trace.parse_monitor(text), 45747)
    udp = hashed("service-", "default/web/udp/udp")
    assert [(h["chain"], h["verdict"]) for h in hops][2:5] == [
        ("services", f"goto {udp}"),
        (udp, f"goto {hashed('endpoint-', 'default/web/udp/udp__10.244.0.3/8081')}"),
        (hashed("endpoint-", "default/web/udp/udp__10.244.0.3/8081"), "accept")]
    # Nothing of the marker's own way through kube-proxy's output chains is the flow's.
    assert not any(h["chain"].startswith(("filter-output", "nat-output")) for h in hops)


def test_a_monitor_that_never_reports_the_marker_is_an_error_naming_the_node():
    tracing = trace._Tracing("netlab-trace-1", {"nx1-worker": _Printed(UDP_WITH_MARKER)},
                             {"nx1-worker": SimpleNamespace(sendto=lambda *a: None)})
    with pytest.raises(NetlabError, match=r"^trace: nft monitor trace in nx1-worker did not report the trace's end "
                                          r"within 0.05 s$"):
        tracing.reported(timeout=0.05)


def test_the_trace_table_marks_the_flow_before_every_other_chain_and_the_marker_in_a_chain_of_its_own():
    assert trace.trace_table("netlab-trace-7", ["ip daddr 10.96.7.255 tcp dport 80"], 40000) == [
        "add table ip netlab-trace-7",
        "add chain ip netlab-trace-7 prerouting { type filter hook prerouting priority -350; policy accept; }",
        "add chain ip netlab-trace-7 output { type filter hook output priority -350; policy accept; }",
        "add chain ip netlab-trace-7 done { type filter hook output priority -351; policy accept; }",
        "add rule ip netlab-trace-7 prerouting ip daddr 10.96.7.255 tcp dport 80 meta nftrace set 1",
        "add rule ip netlab-trace-7 output ip daddr 10.96.7.255 tcp dport 80 meta nftrace set 1",
        "add rule ip netlab-trace-7 done ip saddr 127.0.0.1 ip daddr 127.0.0.1 udp sport 40000 udp dport 9 "
        "meta nftrace set 1",
    ]
    # The raw table (-300), conntrack (-200) and kube-proxy's first chains (-110, dstnat -100)
    # all come after the trace's: the packet is marked before any of them sees it.
    assert trace.TRACE_PRIORITY < -300


def _state(**cluster):
    nodes = [Node("l-control-plane", "control-plane", "172.18.0.2", "10.244.0.0/24", "", {}, []),
             Node("l-worker", "worker", "172.18.0.3", "10.244.1.0/24", "", {}, [])]
    lb = ServiceManifest("default", "web-lb", type="LoadBalancer", cluster_ip="10.96.40.1",
                         ports=(ServicePort(80, "TCP", "http", 8080, 31080),), load_balancer_ip="172.18.255.200",
                         load_balancer_ip_mode="Proxy")
    return ClusterState("l", ClusterConfig(name="l", **cluster), nodes=nodes, services=[lb])


def test_the_flow_is_matched_by_its_destination_and_a_cloud_balancers_by_the_node_ports_it_forwards_to():
    state = _state()
    assert trace.flow_matches(state, "10.96.7.255", 80, "tcp") == ["ip daddr 10.96.7.255 tcp dport 80"]
    assert trace.flow_matches(state, "10.244.1.3", None, "icmp") == ["ip daddr 10.244.1.3 ip protocol icmp"]
    assert trace.flow_matches(state, "172.18.255.200", 80, "tcp") == [
        "ip daddr 172.18.255.200 tcp dport 80", "ip daddr { 172.18.0.2, 172.18.0.3 } tcp dport 31080"]
    assert trace.flow_matches(state, "172.18.255.200", 80, "udp") == ["ip daddr 172.18.255.200 udp dport 80"]


def test_the_diagram_reads_each_cluster_ips_endpoints_from_the_nftables_table():
    web = [f"10.244.{ip}:8080" for ip in ("1.3", "1.4", "2.3", "2.4")]
    web_udp = [e.replace(":8080", ":8081") for e in web]
    assert graph.services_from_table(SERVICES_LISTING) == {
        ("default/client:http", "10.106.197.246"): ["10.244.2.2:8080"],
        ("default/dual:tcp", "10.110.77.72"): web,
        ("default/dual:udp", "10.110.77.72"): web_udp,
        ("default/kubernetes:https", "10.96.0.1"): ["172.18.0.2:6443"],
        ("default/sticky", "10.96.82.199"): web,                    # an unnamed port, with ClientIP affinity
        ("default/web-local:http", "10.104.78.64"): web,            # Local is for external traffic only
        ("default/web-nodeport:http", "10.102.75.75"): web,
        ("default/web-nodeport:udp", "10.102.75.75"): web_udp,
        ("default/web:http", "10.108.158.126"): web,
        ("default/web:udp", "10.108.158.126"): web_udp,
        ("kube-system/kube-dns:dns", "10.96.0.10"): ["10.244.0.2:53", "10.244.1.2:53"],
        ("kube-system/kube-dns:dns-tcp", "10.96.0.10"): ["10.244.0.2:53", "10.244.1.2:53"],
        ("kube-system/kube-dns:metrics", "10.96.0.10"): ["10.244.0.2:9153", "10.244.1.2:9153"],
    }                       # nobody (no endpoints), elsewhere (another proxy's) and the headless one: none


def _result(mode, rules):
    return {"source": "default/a", "src_ip": "10.244.1.3", "destination": "web:80", "dst_ip": "10.96.7.255",
            "port": 80, "protocol": "tcp", "kube_proxy_mode": mode, "answer": {"body": "web-1"}, "rules": rules,
            "conntrack": [], "hops": []}


def test_the_trace_prints_kube_proxys_nftables_rules_in_their_own_section():
    counted = {"node": "n1", "table": "filter", "chain": "FLANNEL-FWD", "rule": "-s 10.244.0.0/16 -j ACCEPT", "packets": 3}
    traced = {"node": "n1", "table": "ip kube-proxy", "chain": "services", "packets": 1,
              "rule": "ip daddr . meta l4proto . th dport vmap @service-ips", "verdict": f"goto {WEB_HTTP}"}
    lines = trace.render(_result("nftables", [counted, traced])).splitlines()
    at = lines.index("ip kube-proxy rules matched, in order (nft monitor trace):")
    assert lines[at - 2] == "  n1                       filter  +3   -A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT"
    assert lines[at + 1] == (f"  n1                       +1   services: ip daddr . meta l4proto . th dport vmap "
                             f"@service-ips  (verdict goto {WEB_HTTP})")
    # iptables mode: the counters alone, as before.
    text = trace.render(_result("iptables", [counted]))
    assert "nft monitor trace" not in text and "  n1                       filter  +3   -A FLANNEL-FWD" in text


def test_netlab_nft_refuses_an_unknown_node_and_a_lab_in_iptables_mode(monkeypatch, capsys):
    from netlab import lab as lab_module
    labs = {"ipt": _state(), "nft": _state(kube_proxy_mode="nftables")}
    monkeypatch.setattr(lab_module.Lab, "find", staticmethod(lambda name: lab_module.Lab(name)))
    monkeypatch.setattr(lab_module.Lab, "state", lambda self: labs[self.name])
    assert cli.main(["--lab", "nft", "nft", "nobody"]) == 1
    assert capsys.readouterr().err == "netlab: lab l: no node named 'nobody' (nodes: l-control-plane, l-worker)\n"
    assert cli.main(["--lab", "ipt", "nft", "worker"]) == 1
    assert capsys.readouterr().err == ("netlab: lab ipt runs kube-proxy in iptables mode, which writes no nftables "
                                       "table: its rules are iptables chains (netlab iptables worker)\n")
