"""The NetworkPolicy agent on every node, as k3s runs it beside flannel and kube-proxy:
`kube_router` is kube-router's network policy controller (its KUBE-ROUTER-*, KUBE-POD-FW-*,
KUBE-NWPLCY-* chains and KUBE-SRC-/KUBE-DST- ipsets). Another policy agent lands beside it."""
