"""The container runtime's image table: which program runs a container of which image.

An add-on registers the images it stands in for (CoreDNS's, ingress-nginx's controller,
agnhost's) and the lab-wide processes it runs. An image decides for the containers it matches:
a lab process serves them, or the runtime starts a process (`argv`, or the image's ENTRYPOINT
with the container's args). A container no image claims runs its command, or, without one,
agnhost netexec, served by the agnhost lab process. An image claims a container with a command
only when the command is the image's own program (agnhost's `/agnhost serve-hostname ...`).

Programs an image ships that netlab stands in for (`/agnhost`) are registered too: a command
that names one, in a container or by exec, runs what stands in for it, and nothing is written
to the host's own root filesystem.

The runtime itself names no add-on (containerd asks its snapshotters and shims the same way):
importing `netlab.addons` fills the table.
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
    entrypoint: tuple = ()             # its ENTRYPOINT: a container without a command runs it with its args


@dataclass(frozen=True)
class LabProcess:
    """A lab-wide process, started as `python -m MODULE LAB` when `wanted(state)`."""
    name: str
    module: str
    wanted: Callable = lambda state: True


IMAGES: list[Image] = []
PROCESSES: dict[str, LabProcess] = {}
PROGRAMS: dict[str, tuple] = {}        # a program an image ships -> the host's argv that stands in for it


def register_image(image):
    if all(i.name != image.name for i in IMAGES):
        IMAGES.append(image)


def register_process(process):
    PROCESSES.setdefault(process.name, process)


def register_program(path, argv):
    PROGRAMS.setdefault(path, tuple(argv))


def image_of(container):
    """The registered image that decides what a container runs, or None: then its command
    runs, or without one agnhost's netexec. Each image's `matches` sees the whole container,
    command included."""
    return next((i for i in IMAGES if i.matches(container)), None)


def program_argv(argv):
    """argv as the host runs it: a program an add-on stands in for (`/agnhost connect ...`)
    becomes the command that stands in for it, with the same arguments; any other is itself."""
    argv = list(argv)
    stand_in = PROGRAMS.get(argv[0]) if argv else None
    return [*stand_in, *argv[1:]] if stand_in else argv
