"""benchmarks/gpu_check.py: the dry run takes the GPU's code paths on the CPU, and every phase says what happened.

The dry run decodes in float32, float16 and bfloat16, trains every paper stage in its config's precision with the
frozen bases cast, streams its photos through a worker process, and runs the nano
phase the way a GPU does: from a packed photo file, in chunks that each resume the last, and again from a copied
run folder (``--nano-resume``, as a lease resumes a committed run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "benchmarks" / "gpu_check.py")


def gpu_check(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "check"
    r = gpu_check("--dry-run", "--out", str(out), "--budget", "2400", timeout=2700)
    summary = json.loads((out / "gpu-check.json").read_text())
    status = {name: p["status"] for name, p in summary["phases"].items()}
    assert r.returncode == 0 and status == {"decode": "ok", "train": "ok", "nano": "ok"}, (status, r.stderr[-2000:])
    decode = json.loads((out / "decode.json").read_text())["records"]
    assert [d["dtype"] for d in decode] == ["float32", "float16", "bfloat16"]
    assert all(d["total_ms"] > 0 and "DDIM" in d["ddim"] for d in decode), decode
    train = json.loads((out / "train.json").read_text())["records"]
    runs = [(t["stage"], t["precision"], t["gradient_checkpointing"]) for t in train]
    precisions = (("warmup", "bf16"), ("anneal", "bf16"), ("rd", "no"), ("adversarial", "bf16"))
    assert runs == [(st, p, c) for st, p in precisions for c in (False, True)]
    assert all("error" not in t and t["step_s"] >= 0 for t in train), train
    nano = json.loads((out / "nano.json").read_text())["records"]
    assert [c["exit"] for c in nano] == [0, 0]
    steps = [int(c["checkpoint"].split("-")[1]) for c in nano]
    assert 0 < steps[0] < steps[1]  # from scratch, then the second chunk resumed the first's checkpoint
    report = (out / "gpu-check.md").read_text()
    assert "paper's 228 ms" in report and "| warmup | bf16 | yes |" in report

    # a lease resumes a committed run: its checkpoints are copied into the new run folder, which goes on from them
    again = tmp_path / "again"
    r = gpu_check("--dry-run", "--out", str(again), "--phases", "nano", "--nano-data", str(out / "dry-nano-data.tar"),
                  "--nano-resume", str(out / "nano" / "stage1-rd-gdn"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    resumed = json.loads((again / "nano.json").read_text())["records"]
    assert int(resumed[0]["checkpoint"].split("-")[1]) > steps[1]
    assert f"resumed from `{out / 'nano' / 'stage1-rd-gdn'}` (step-{steps[1]:07d})" in (again / "nano.md").read_text()


def test_a_failing_phase_says_failed_and_a_phase_without_photos_says_skipped(tmp_path):
    out = tmp_path / "check"
    r = gpu_check("--dry-run", "--out", str(out), "--phases", "decode,nano", "--fail-phase", "decode",
                  "--nano-data", "none", "--nano-set", f"data.train={tmp_path / 'missing'}")  # fmt: skip
    assert r.returncode == 1, r.stderr[-2000:]
    status = {name: p["status"] for name, p in json.loads((out / "gpu-check.json").read_text())["phases"].items()}
    assert status["decode"].startswith("failed: exit 1: RuntimeError: --fail-phase decode"), status
    assert status["nano"].startswith(f"skipped: no training photos at {tmp_path / 'missing'}"), status
    report = (out / "gpu-check.md").read_text()
    assert "| decode | failed: exit 1" in report and "| nano | skipped: no training photos" in report


def test_packed_nano_photos_are_small_and_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    for split, sizes in (("train", [(1500, 300), (200, 100)]), ("dev", [(64, 64)])):
        (tmp_path / "src" / split).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "src" / split / f"{i}.png")
    packs = [tmp_path / "a.tar", tmp_path / "b.tar"]
    for pack in packs:
        r = gpu_check("--pack-nano-data", str(pack), "--nano-source", str(tmp_path / "src"))
        assert r.returncode == 0 and "3 photos" in r.stderr, r.stderr
    assert packs[0].read_bytes() == packs[1].read_bytes()
    with tarfile.open(packs[0]) as tar:
        names = tar.getnames()
        big = Image.open(tar.extractfile("train/0.jpg"))
        assert names == ["train/0.jpg", "train/1.jpg", "dev/0.jpg"] and big.size == (1024, 205)
    webp = tmp_path / "c.tar"  # smaller, to fit a lease beside a checkpoint
    r = gpu_check("--pack-nano-data", str(webp), "--nano-source", str(tmp_path / "src"), "--pack-format", "webp",
                  "--pack-quality", "70")  # fmt: skip
    assert r.returncode == 0, r.stderr
    with tarfile.open(webp) as tar:
        assert tar.getnames() == ["train/0.webp", "train/1.webp", "dev/0.webp"]
        assert Image.open(tar.extractfile("train/0.webp")).size == (1024, 205)
