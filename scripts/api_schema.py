"""Write netlab/control_plane/schema.json: the fields of every type the API server takes in a
request (Pod, Deployment, Service, Ingress, Namespace, Node, Scale and what they hold), read
from the Kubernetes OpenAPI as the Python `kubernetes` client's generated models carry it
(openapi_types and attribute_map). kube-apiserver's strict field validation checks a request
against these; netlab's does too. Run it again when the client (and so the API) moves on:

    .venv/bin/python scripts/api_schema.py
"""

import json
import re
from pathlib import Path

from kubernetes import __version__ as client_version
from kubernetes.client import models

ROOTS = ("V1Pod", "V1Deployment", "V1Service", "V1Ingress", "V1NetworkPolicy", "V1Namespace", "V1Node", "V1Scale")
OUT = Path(__file__).resolve().parent.parent / "netlab" / "control_plane" / "schema.json"


def _named(type_string):
    """The model names a type string refers to: 'List[V1Container]' -> ['V1Container']."""
    return [t for t in re.findall(r"[A-Za-z0-9]+", type_string) if hasattr(models, t) and t[0] == "V"]


def main():
    types, todo = {}, list(ROOTS)
    while todo:
        name = todo.pop()
        if name in types:
            continue
        model = getattr(models, name)
        fields = {model.attribute_map[attr]: t for attr, t in model.openapi_types.items()}
        types[name] = fields
        for t in fields.values():
            todo += _named(t)
    OUT.write_text(json.dumps({"source": f"kubernetes Python client {client_version} (its OpenAPI models)",
                               "roots": {r: r for r in ROOTS}, "types": dict(sorted(types.items()))},
                              indent=0, sort_keys=True) + "\n")
    print(f"{OUT}: {len(types)} types")


if __name__ == "__main__":
    main()
