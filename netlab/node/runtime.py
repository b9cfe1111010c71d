"""The container runtime's image table: which program runs a container of which image.

A container with a command runs that command. Otherwise the image decides: an add-on
registers the images it stands in for (CoreDNS's, ingress-nginx's controller) and the
lab-wide processes it runs; a container of an image nobody registered runs agnhost netexec,
served by the agnhost lab process. The runtime itself names no add-on (containerd asks its
snapshotters and shims the same way): importing `netlab.addons` fills the table.
"""

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Image:
    """A container image an add-on stands in for."""
    name: str
    matches: Callable                  # container -> bool
    server: str | None = None          # the lab process that serves its containers' sockets
    argv: Callable | None = None       # or (state, pod) -> the process the runtime starts for it
    dns_policy: str = "ClusterFirst"   # "Default": the pod uses the node's resolver, not the cluster's


@dataclass(frozen=True)
class LabProcess:
    """A lab-wide process, started as `python -m MODULE LAB` when `wanted(state)`."""
    name: str
    module: str
    wanted: Callable = lambda state: True


IMAGES: list[Image] = []
PROCESSES: dict[str, LabProcess] = {}


def register_image(image):
    if all(i.name != image.name for i in IMAGES):
        IMAGES.append(image)


def register_process(process):
    PROCESSES.setdefault(process.name, process)


def image_of(container):
    """The registered image a container without a command runs, or None (agnhost's netexec)."""
    if container.command:
        return None
    return next((i for i in IMAGES if i.matches(container)), None)
