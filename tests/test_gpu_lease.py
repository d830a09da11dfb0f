"""benchmarks/gpu_lease.sh: a lease's returned files are few and small, and rebuild the nano run folder exactly.

``--unpack`` is checked on hand-made returns (pieces, a completed run, missing files); the collect side with a
stand-in for gpu_check.py (the real one on a GPU machine ran before its first lease: docs/decisions.md, "GPU lease").
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


def test_an_archive_returned_in_pieces_is_joined(tmp_path):
    model = os.urandom(300_000)
    src = returned(tmp_path, {"final/model.safetensors": model}, weights=None)
    whole = (src / "results.tar.gz").read_bytes()  # as `split -b` leaves a large one: .part-aa, -ab
    (src / "results.tar.gz.part-aa").write_bytes(whole[: len(whole) // 2])
    (src / "results.tar.gz.part-ab").write_bytes(whole[len(whole) // 2 :])
    (src / "results.tar.gz").unlink()
    r = unpack(src, tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "final" / "model.safetensors").read_bytes() == model


@pytest.mark.parametrize("broken", ["no archive", "no pieces"])
def test_missing_returned_files_fail(tmp_path, broken):
    src = returned(tmp_path, {"checkpoints/step-0000003/state.json": b"{}"}, weights=None)
    if broken == "no archive":
        (src / "results.tar.gz").unlink()
    r = unpack(src, tmp_path / "run")
    assert r.returncode != 0
    assert not list((tmp_path / "run").rglob("state.safetensors*"))  # nothing half-written


FAKE_PYTHON = """#!/bin/bash
# Stands in for the GPU machine's python3: `gpu_check.py` leaves a nano run (weights of $FAKE_BYTES bytes, in
# final/ when $FAKE_FINAL is 1, else as a checkpoint); anything else (the machine facts) prints a line.
[ "$1" = benchmarks/gpu_check.py ] || { echo "python3 $*"; exit 0; }
while [ $# -gt 0 ]; do case $1 in --out) out=$2; shift;; --nano-run) run=$2; shift;; esac; shift; done
mkdir -p "$out" "$run/checkpoints/step-0000005"
echo "# GPU check" > "$out/gpu-check.md"; echo step > "$run/log.csv"
if [ "$FAKE_FINAL" = 1 ]; then
    mkdir -p "$run/final"; head -c "$FAKE_BYTES" /dev/urandom > "$run/final/model.safetensors"
else
    echo '{"step": 5}' > "$run/checkpoints/step-0000005/state.json"
    head -c "$FAKE_BYTES" /dev/urandom > "$run/checkpoints/step-0000005/state.safetensors"
fi
"""


@pytest.mark.parametrize("final", [False, True])
def test_a_lease_returns_few_small_files_that_rebuild_the_run(tmp_path, final):
    """The collect side with a stand-in gpu_check: ≤ 8 files of ≤ 16 MiB, and --unpack rebuilds the run exactly."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON)
    (bin_dir / "python3").chmod(0o755)
    out, work, repo = tmp_path / "out", tmp_path / "work", tmp_path / "repo"
    repo.mkdir()  # no .whl/ here: nothing to install
    size = 20 * 2**20 + 7  # larger than one returned file may be
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GPU_LEASE_WORK": str(work),
           "FAKE_FINAL": str(int(final)), "FAKE_BYTES": str(size)}  # fmt: skip
    r = subprocess.run(["bash", str(SCRIPT), str(out), "photos.tar"], cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size <= 16 * 2**20 for f in files), files
    assert "gpu-check.md" in files
    run = tmp_path / "run"
    assert unpack(out, run).returncode == 0
    weights = "final/model.safetensors" if final else "checkpoints/step-0000005/state.safetensors"
    assert (run / weights).read_bytes() == (work / "nano" / weights).read_bytes()
