"""kube-controller-manager's timed part, a lab process: what happens at a moment rather than at
a command. A fault injected `--for` a while (`netlab fault loss worker 20 --for 30`) records
when it ends; this process clears it then, through the same Lab.clear_faults a command calls,
and exits once no fault is waiting to end.

    python -m netlab.control_plane.kube_controller_manager LAB
"""

import os
import sys
import time

from netlab import names
from netlab.api.etcd import Store
from netlab.errors import LabNotFound, NetlabError
from netlab.lab import Lab
from netlab.node.kubelet import announce

NAME = "kube_controller_manager"
TICK = 0.1


def run(lab):
    """Until no fault has an end (or the lab is gone): clear each fault whose end has come, and
    say which state it has seen (<name>.served), as every lab process does for the commands."""
    store = Store(lab)
    seen, ends = None, []
    while True:
        try:
            mtime = os.stat(store.path).st_mtime_ns
            if mtime != seen:
                seen, ends = mtime, [(f["until"], f) for f in store.load().faults if f.get("until")]
                (store.dir / f"{NAME}.served").write_text(str(mtime))
        except (FileNotFoundError, LabNotFound):
            return
        if not ends:
            return
        now = time.time()
        for _, fault in sorted((e for e in ends if e[0] <= now), key=lambda e: e[0]):
            try:
                Lab(lab).clear_faults([fault["kind"], *fault["targets"]])
            except NetlabError as e:                 # cleared meanwhile by someone else
                print(f"{NAME}: {e}", file=sys.stderr, flush=True)
            seen = None
        time.sleep(TICK)


if __name__ == "__main__":
    if not names.DNS1123_LABEL.match(sys.argv[1]):
        sys.exit(f"{NAME}: bad lab name {sys.argv[1]!r}")
    announce(sys.argv[1], NAME)
    run(sys.argv[1])
