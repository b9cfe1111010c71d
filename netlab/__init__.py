"""netlab: a Kubernetes cluster's network built from real Linux kernel objects."""

from netlab.errors import NetlabError, SpecError

__all__ = ["Lab", "NetlabError", "SpecError"]


def __getattr__(name):
    # Lab pulls in the kernel layer; importing it lazily keeps `import netlab` cheap and root-free.
    if name == "Lab":
        from netlab.lab import Lab
        return Lab
    raise AttributeError(name)
