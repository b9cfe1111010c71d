"""What runs on every node: kubelet and the container runtime, the CNI plugins, flanneld and
kube-proxy, each a planner (a pure function of cluster state) plus, where the real agent
keeps a process, that process.

- `kubelet`: pod files (resolv.conf, /etc/hosts), container processes, the lab's pod servers;
- `runtime`: the image table add-ons register with (which program serves which image);
- `cni`: the bridge and host-local plugins (cni0, veth pairs, a pod's eth0, its address);
- `underlay`: the machines' LAN, as kind's docker network joins its nodes;
- `flannel/`: flanneld and its backends;
- `proxy/`: kube-proxy, one package per mode (`iptables`), and its health servers.
"""
