"""The Kubernetes API's side of a lab, as kube-apiserver and etcd hold it.

- `spec`: the lab file (kind's Cluster document) and the manifests pasted into it, validated
  as the API server validates them;
- `objects`: the records the store persists (Node, Pod, Deployment, Service, Endpoints …);
- `etcd`: the store itself, one lab's state directory with its lock;
- `apiserver`: the objects in the API's own JSON shapes;
- `printers`: kubectl's tables for those objects;
- `events`: the Events a change leaves behind.
"""
