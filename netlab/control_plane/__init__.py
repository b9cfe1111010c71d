"""The control plane's lab processes: kube-apiserver."""
