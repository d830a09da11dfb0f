"""Ablation runner: every variant of the shipped nano ablation configs trains a few steps on the tiny preset,
is evaluated from real files, and lands in the table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from sodec.api import example_image
from sodec.train.ablate import load_ablation, run_ablation, variant_configs
from sodec.train.config import from_dict
from sodec.train.loop import train

CONFIGS = Path(__file__).parents[1] / "configs" / "nano"


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory, tiny_sodec_dir) -> dict[str, Path]:
    """192x192 photos (MS-SSIM needs > 160 px), tiny stage-1/stage-3 configs, and a tiny stage-2 export."""
    root = tmp_path_factory.mktemp("ablate")
    photos = root / "photos"
    photos.mkdir()
    with Image.open(example_image()) as im:
        im.convert("RGB").crop((200, 100, 392, 292)).save(photos / "a.png")
    common = {
        "model": {"preset": "tiny", "base": str(tiny_sodec_dir / "base")},
        "data": {"train": str(photos), "val": None, "crop": 64, "batch_size": 2},
        "optim": {"lr": 1e-3},
        "checkpoint_every": 1000,
        "log_every": 1,
        "val": {"every": 0},
    }
    stage1 = {**common, "stage": "rd", "out": str(root / "stage1"), "steps": 2, "loss": {"lmbda": 0.5}}
    stage3 = {**common, "stage": "anneal", "out": "unused", "steps": 2,
              "loss": {"lmbda": 0.5, "lmbda_end": 2.0, "alignment": 0.002}}  # fmt: skip
    paths = {"photos": photos, "stage1": root / "stage1.yaml", "stage3": root / "stage3.yaml"}
    paths["stage1"].write_text(yaml.safe_dump(stage1))
    paths["stage3"].write_text(yaml.safe_dump(stage3))
    torch.manual_seed(0)
    train(from_dict(stage1), False)
    stage2 = {**common, "stage": "warmup", "out": str(root / "stage2"), "steps": 2}
    stage2["model"] = {**common["model"], "init": str(root / "stage1")}
    paths["stage2"] = train(from_dict(stage2), False)
    paths["root"] = root
    return paths


def tiny_ablation(name: str, setup: dict[str, Path]):
    """The shipped nano ablation config, pointed at the tiny configs, photos and stage-2 export."""
    ablation = load_ablation(CONFIGS / f"ablation-{name}.yaml")
    ablation.train = str(setup["stage3"])
    ablation.out = str(setup["root"] / f"ablation-{name}")
    ablation.steps = 2
    ablation.set = {"model.init": str(setup["stage2"])}
    ablation.eval = {"data": str(setup["photos"]), "metrics": ["psnr", "ms_ssim"]}
    for spec in ablation.variants.values():
        for phase in spec if isinstance(spec, list) else [spec]:
            if "train" in phase:  # nano's stage-1 config: the tiny one
                phase["train"] = str(setup["stage1"])
            for key in ("loss.lmbda", "loss.lmbda_end"):
                if phase.get(key):
                    phase[key] = phase[key] / 10  # tiny photos: keep the rate term in proportion
    return ablation


@pytest.mark.parametrize("name", ["guidance", "schedule", "alignment"])
def test_every_variant_trains_evaluates_and_is_tabulated(tiny_setup, name):
    ablation = tiny_ablation(name, tiny_setup)
    rows = run_ablation(ablation, progress=False)
    assert [r["variant"] for r in rows] == list(ablation.variants)
    out = Path(ablation.out)
    for row in rows:
        results = json.loads((out / row["variant"] / "eval" / "results.json").read_text())
        files = [r for r in results["records"] if r["family"] == "sodec"]
        assert len(files) == 1 and row["bpp"] == pytest.approx(files[0]["bytes"] * 8 / (192 * 192))
        assert 0 < row["ms_ssim"] <= 1 and row["psnr"] > 0
    table = (out / "ablation.md").read_text()
    assert all(f"| {v} |" in table for v in ablation.variants)
    with (out / "ablation.csv").open() as f:
        assert [r["variant"] for r in csv.DictReader(f)] == list(ablation.variants)


def test_variants_switch_what_they_say(tiny_setup):
    guidance = tiny_ablation("guidance", tiny_setup)
    assert [variant_configs(guidance, v)[0].model.guidance for v in guidance.variants] == [
        None, "none", "hyperprior", "prompt"
    ]  # fmt: skip
    schedule = tiny_ablation("schedule", tiny_setup)
    frozen = variant_configs(schedule, "frozen-compression")
    assert [c.stage for c in frozen] == ["rd", "anneal"] and frozen[1].model.freeze_compression
    assert frozen[1].model.init == [str(tiny_setup["stage2"]), frozen[0].out]  # decoder side kept, E/Ha/P replaced
    assert sum(c.steps for c in frozen) == schedule.steps
    joint = variant_configs(schedule, "joint-at-target")[0]
    assert joint.loss.lmbda_end is None


def test_frozen_compression_keeps_the_target_rate_encoder(tiny_setup):
    from safetensors.torch import load_file

    schedule = tiny_ablation("schedule", tiny_setup)
    run_ablation(schedule, ["frozen-compression"], progress=False)
    phase1, phase2 = (load_file(str(Path(c.out) / "final" / "model.safetensors"))
                      for c in variant_configs(schedule, "frozen-compression"))  # fmt: skip
    keys = [k for k in phase1 if k.startswith("compression.encoder.")]
    assert keys and all(torch.equal(phase1[k], phase2[k]) for k in keys)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("ablation-*.yaml")), ids=lambda p: p.stem)
def test_shipped_ablation_configs_build_every_variant(path):
    ablation = load_ablation(path)
    for variant in ablation.variants:
        configs = variant_configs(ablation, variant)
        assert sum(c.steps for c in configs) == ablation.steps
        for c in configs:  # overrides pass through json.dumps (5e-05) and YAML: numbers must stay numbers
            numbers = (c.optim.lr, c.optim.lr_end or 0, c.loss.lmbda, c.loss.lmbda_end or 0, c.loss.mse)
            assert all(isinstance(v, (int, float)) for v in numbers)


def test_paired_differences_are_photo_by_photo():
    from sodec.train.ablate import _paired

    ref = {"a": {"bpp": 0.10, "ms_ssim": 0.80}, "b": {"bpp": 0.20, "ms_ssim": 0.60}, "c": {"bpp": 0.3}}
    var = {"a": {"bpp": 0.12, "ms_ssim": 0.90}, "b": {"bpp": 0.16, "ms_ssim": 0.60}, "c": {"bpp": 0.3}}
    paired = _paired(var, ref)
    # bpp differences +0.02, -0.04, 0: mean -0.00667, sd 0.0306, se 0.0176; MS-SSIM only where both exist
    assert paired["bpp"] == pytest.approx([-0.02 / 3, 0.030551 / 3**0.5], abs=1e-5)
    assert paired["ms_ssim"] == pytest.approx([0.05, 0.05])
    assert paired["dists"] is None
