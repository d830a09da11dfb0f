"""benchmarks/gpu_check.py --dry-run: the GPU check's code at tiny widths on the CPU (one paper stage, to stay short).

A stage name that does not exist makes the train phase fail after its first stage: the results written before
the failure stay, and the next phase still runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "check"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out),
           "--stages", "warmup,nosuch", "--budget", "700"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=800, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "gpu-check.json").read_text())
    status = {name: p["status"] for name, p in summary["phases"].items()}
    assert status["decode"] == "ok" and status["nano"] == "ok" and status["train"].startswith("failed"), status
    decode = json.loads((out / "decode.json").read_text())["records"]
    assert decode[0]["dtype"] == "float32" and decode[0]["total_ms"] > 0 and "DDIM" in decode[0]["ddim"]
    train = json.loads((out / "train.json").read_text())["records"]  # written before the failing stage
    assert [(r["stage"], r["gradient_checkpointing"]) for r in train] == [("warmup", False), ("warmup", True)]
    assert all("error" not in r and r["step_s"] >= 0 for r in train), train
    nano = json.loads((out / "nano.json").read_text())["records"]
    assert [c["exit"] for c in nano] == [0, 0]
    steps = [int(c["checkpoint"].split("-")[1]) for c in nano]
    assert 0 < steps[0] < steps[1]  # the second chunk resumed the first one's checkpoint
    report = (out / "gpu-check.md").read_text()
    assert "paper's 228 ms" in report and "| warmup | no | yes |" in report and "sodec train" in report
