"""The paper preset at full width on the CPU (benchmarks/paper_cpu_smoke.py): `pytest --paper` only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMOKE = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_cpu_smoke.py"


@pytest.mark.paper
def test_every_paper_stage_steps_and_codes_at_full_width(tmp_path):
    """One step of stages 1-4 at batch 1 on 128² crops, then compress + decompress: all fit in 17 GiB."""
    r = subprocess.run([sys.executable, str(SMOKE), "--out", str(tmp_path), "--steps", "1", "--timeout", "2400"],
                       capture_output=True, text=True, env=dict(os.environ), timeout=4 * 3600)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("rd", "warmup", "anneal", "adversarial", "compress-decompress"):
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["peak_rss_gib"] < 17
