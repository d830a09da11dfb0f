"""benchmarks/gpu_lease.sh --unpack: a lease's returned files rebuild the nano run folder exactly.

The lease side (wheels, gpu_check, the split) needs the GPU machine's layout; it ran on the CPU at dry-run widths
before its first lease (docs/decisions.md, "GPU lease").  What comes back is rebuilt here, and must be byte-exact.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_lease.sh"


def returned(tmp_path: Path, files: dict[str, bytes], weights: bytes | None) -> Path:
    """What a lease brings back: results.tar.gz (the run under nano/) and the weights in pieces."""
    src = tmp_path / "files_at"
    run = tmp_path / "lease" / "nano"
    for name, data in files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    src.mkdir()
    with tarfile.open(src / "results.tar.gz", "w:gz") as tar:
        tar.add(run, arcname="nano")
    if weights is not None:  # as `split -b` names them: aa, ab, ...
        piece = len(weights) // 3 + 1
        for i, suffix in enumerate(("aa", "ab", "ac")):
            (src / f"state.safetensors.part-{suffix}").write_bytes(weights[i * piece : (i + 1) * piece])
    return src


def unpack(src: Path, run: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--unpack", str(src), str(run)], capture_output=True, text=True)


def test_an_unfinished_run_gets_its_checkpoint_back_byte_for_byte(tmp_path):
    weights = os.urandom(200_001)
    state = b'{"step": 7}'
    src = returned(tmp_path, {"log.csv": b"step\n7\n", "checkpoints/step-0000007/state.json": state}, weights)
    run = tmp_path / "runs" / "stage1"
    r = unpack(src, run)
    assert r.returncode == 0, r.stderr
    assert (run / "checkpoints" / "step-0000007" / "state.safetensors").read_bytes() == weights
    assert (run / "checkpoints" / "step-0000007" / "state.json").read_bytes() == state
    assert (run / "log.csv").read_text() == "step\n7\n"


def test_a_completed_run_comes_back_as_its_final_folder(tmp_path):
    model = os.urandom(5000)
    src = returned(tmp_path, {"log.csv": b"step\n", "final/model.safetensors": model}, weights=None)
    r = unpack(src, tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "final" / "model.safetensors").read_bytes() == model
    assert "the run completed" in r.stdout


@pytest.mark.parametrize("broken", ["no archive", "no pieces"])
def test_missing_returned_files_fail(tmp_path, broken):
    src = returned(tmp_path, {"checkpoints/step-0000003/state.json": b"{}"}, weights=None)
    if broken == "no archive":
        (src / "results.tar.gz").unlink()
    r = unpack(src, tmp_path / "run")
    assert r.returncode != 0
    assert not list((tmp_path / "run").rglob("state.safetensors*"))  # nothing half-written
