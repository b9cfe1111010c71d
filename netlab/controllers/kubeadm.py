"""What `kubeadm init` installs beside the control plane: the cluster DNS address kubelet is
given, and the CoreDNS addon (the coredns Deployment and the kube-system/kube-dns Service);
and, when the lab asks for an ingress controller, the objects of ingress-nginx's deploy.yaml
as kind's ingress guide applies it.

Plain manifests: the add-ons that serve them (netlab.addons) read the images and labels
from here.
"""

import ipaddress

from netlab.api.spec import (Container, ContainerPort, DeploymentManifest, PodTemplate, ServiceManifest, ServicePort,
                             Toleration)

DOMAIN = "cluster.local."                # kubelet's --cluster-domain, with the DNS root
COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.12.0"
COREDNS_LABELS = {"k8s-app": "kube-dns"}
COREDNS_METRICS_PORT = 9153

INGRESS_IMAGE = "registry.k8s.io/ingress-nginx/controller:v1.12.1"
INGRESS_NAMESPACE = "ingress-nginx"
INGRESS_LABELS = {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}


def dns_ip(cluster):
    """kubeadm's clusterDNS: the tenth address of the (primary) service range."""
    return str(ipaddress.ip_network(cluster.service_subnets[0]).network_address + 10)


def coredns_addon(cluster):
    """The coredns Deployment and the kube-dns Service, as `kubeadm init` creates them."""
    ports = (ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp"),
             ContainerPort(COREDNS_METRICS_PORT, "TCP", "metrics"))
    template = PodTemplate(
        labels=dict(COREDNS_LABELS),
        containers=(Container("coredns", COREDNS_IMAGE, (), ("-conf", "/etc/coredns/Corefile"), ports),),
        node_selector={"kubernetes.io/os": "linux"},
        tolerations=(Toleration("CriticalAddonsOnly", "Exists"),
                     Toleration("node-role.kubernetes.io/control-plane", "Exists", None, "NoSchedule")))
    deployment = DeploymentManifest("kube-system", "coredns", cluster.dns_replicas, dict(COREDNS_LABELS), template)
    service = ServiceManifest(
        "kube-system", "kube-dns",
        {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
        cluster_ip=dns_ip(cluster), selector=dict(COREDNS_LABELS),
        ports=(ServicePort(53, "UDP", "dns", 53), ServicePort(53, "TCP", "dns-tcp", 53),
               ServicePort(COREDNS_METRICS_PORT, "TCP", "metrics", COREDNS_METRICS_PORT)))
    return deployment, service


def ingress_addon(cluster):
    """ingress-nginx's controller Deployment and its Service (NodePort or LoadBalancer)."""
    template = PodTemplate(labels=dict(INGRESS_LABELS), containers=(Container(
        "controller", INGRESS_IMAGE, (), ("/nginx-ingress-controller",),
        (ContainerPort(80, "TCP", "http"), ContainerPort(443, "TCP", "https"))),),
        node_selector={"kubernetes.io/os": "linux"})
    deployment = DeploymentManifest(INGRESS_NAMESPACE, "ingress-nginx-controller", 1, dict(INGRESS_LABELS), template)
    service = ServiceManifest(INGRESS_NAMESPACE, "ingress-nginx-controller", dict(INGRESS_LABELS), type=cluster.ingress,
                              selector=dict(INGRESS_LABELS), external_traffic_policy="Cluster",
                              ports=(ServicePort(80, "TCP", "http", "http"), ServicePort(443, "TCP", "https", "https")),
                              ip_family_policy=cluster.ingress_ip_family_policy or None)
    return deployment, service
