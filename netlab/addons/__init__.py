"""The cluster's add-ons and the images they stand in for: agnhost netexec (every container
without a command), CoreDNS, ingress-nginx's controller, MetalLB's speaker and the cloud
provider's load balancers (cloud-provider-kind).

Each add-on registers what it serves with the container runtime (`netlab.node.runtime`);
importing this package registers them all. The runtime never names one.
"""

from netlab.addons import agnhost, cloud, coredns, ingress_nginx, metallb  # noqa: F401  (they register)
