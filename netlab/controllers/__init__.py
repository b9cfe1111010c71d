"""kube-controller-manager, the scheduler and kubeadm: pure functions from cluster state to
cluster state.

- `cluster`: node registration and the node IPAM controller, the Deployment and ReplicaSet
  controllers, Service allocation (ClusterIP, NodePort, load-balancer addresses);
- `scheduler`: kube-scheduler's placement, node labels and taints;
- `ipam`: the allocators (node podCIDRs, host-local, ClusterIPs, NodePorts);
- `endpoints`: the Endpoints controller;
- `deployment`: pod-template-hash and pod names;
- `kubeadm`: what `kubeadm init` installs (the CoreDNS addon, the cluster DNS address) and
  ingress-nginx's deploy.yaml as kind's ingress guide applies it.

Nothing here touches the kernel.
"""
