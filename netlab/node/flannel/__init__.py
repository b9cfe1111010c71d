"""flanneld with the kube subnet manager: `flanneld` holds the daemon's rules, files and
annotations and its vxlan backend (flannel.1). Other backends land beside it."""
