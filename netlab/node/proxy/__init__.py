"""kube-proxy, as Kubernetes' pkg/proxy: one module per mode behind the same inputs
(`iptables`: KUBE-SERVICES and its chains), and `healthcheck`, the node's :10256/healthz and
the healthCheckNodePort servers."""
