"""Device placement without a GPU: models built for the ``meta`` device must have every tensor there.

On the CPU, ``with torch.device("cuda")`` cannot be tried, but ``meta`` shows the same failure: compressai's entropy
models ignore the default device, so a bare ``torch.device`` context leaves their tensors behind (the first test
shows it), and :func:`sodec.models.placement.build_on` — the one place where the GPU check and the training loop
build models — must leave none.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sodec.models import SodecModel, preset_config
from sodec.models.placement import PlacementError, build_on, check_placement, misplaced
from sodec.train.config import from_dict
from sodec.train.discriminators import build_discriminator
from sodec.train.stages import build_stage


def tiny_stage_config(stage: str, tmp_path) -> dict:
    return {
        "stage": stage, "out": str(tmp_path / "run"), "steps": 1,
        "model": {"preset": "tiny", "random_bases": True},
        "data": {"train": str(tmp_path), "val": None, "crop": 64, "batch_size": 1},
        "loss": {"lpips": 1.0, "lpips_net": "alex"}, "val": {"every": 0},
    }  # fmt: skip


def test_a_bare_device_context_leaves_the_entropy_models_behind():
    with torch.device("meta"):
        net = SodecModel(preset_config("tiny"), random_bases=True)
    left = misplaced(net, "meta")
    assert any("entropy_bottleneck._quantized_cdf" in n for n in left), left
    assert any("gaussian_conditional.scale_table" in n for n in left), left
    with pytest.raises(PlacementError, match="entropy_bottleneck"):
        check_placement(net, "meta")


def test_build_on_places_the_whole_tiny_model():
    net = build_on("meta", lambda: SodecModel(preset_config("tiny"), random_bases=True))
    tensors = [*net.parameters(), *net.buffers()]
    assert len(tensors) > 100 and all(t.device.type == "meta" for t in tensors)


@pytest.mark.parametrize("stage", ["rd", "adversarial"])
def test_build_on_places_a_training_stage_and_its_discriminators(stage, tmp_path):
    """What the loop builds: the stage (LPIPS, the frozen bases) and each kind of discriminator."""
    config = from_dict(tiny_stage_config(stage, tmp_path))
    built = build_on("meta", lambda: build_stage(config))
    assert misplaced(built, "meta") == []
    if stage == "adversarial":
        for kind in ("patch", "projected"):  # projected: a fixed random mixing drawn from a CPU generator
            disc = build_on("meta", lambda k=kind: build_discriminator(k, built.cond_channels, random_weights=True))
            assert misplaced(disc, "meta") == [] and any(p.requires_grad for p in disc.parameters())


def test_a_tensor_that_to_cannot_move_is_named():
    class Cached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.table = torch.zeros(3, device="cpu")  # a plain attribute: Module.to leaves it

    with pytest.raises(PlacementError, match=r"table \(cpu, a plain attribute\)"):
        build_on("meta", Cached)


def test_the_training_loop_builds_through_build_on(tmp_path, monkeypatch):
    import sodec.train.loop as loop

    calls = []

    class Built(Exception):
        pass

    def spy(device, factory, init_on_device=True):
        calls.append((torch.device(device).type, init_on_device))
        raise Built

    monkeypatch.setattr(loop, "build_on", spy)
    with pytest.raises(Built):
        loop.train(from_dict(tiny_stage_config("rd", tmp_path)), progress=False, save=False)
    assert calls == [("cpu", True)]  # random bases: constructors run with the device as the default
