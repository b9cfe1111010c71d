import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Every lab a test brings up exports its context as kind does: into a kubeconfig of the test
# session's own, never the user's ~/.kube/config. `down` must leave it holding nothing of a lab.
_KUBECONFIG = Path(tempfile.mkdtemp(prefix="netlab-tests-")) / "kubeconfig"
os.environ["KUBECONFIG"] = str(_KUBECONFIG)


def pytest_sessionfinish(session, exitstatus):
    import yaml
    if _KUBECONFIG.exists():
        doc = yaml.safe_load(_KUBECONFIG.read_text()) or {}
        left = [c["name"] for c in doc.get("contexts") or [] if str(c.get("name", "")).startswith("netlab-")]
        if left:
            print(f"\nkubeconfig entries left behind by the tests: {left}", file=sys.stderr)
            session.exitstatus = 1
        _KUBECONFIG.unlink()
    _KUBECONFIG.parent.rmdir()
