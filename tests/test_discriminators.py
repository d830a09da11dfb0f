"""The adversarial terms: the projected discriminator, the losses, DiffAugment and the adaptive weight."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sodec.errors import ModelError
from sodec.train.checkpoint import list_checkpoints
from sodec.train.config import ConfigError, from_dict
from sodec.train.discriminators import (
    ProjectedDiscriminator,
    adaptive_weight,
    build_discriminator,
    diffaugment,
    discriminator_loss,
    generator_loss,
    parse_diffaugment,
)
from sodec.train.loop import train


@pytest.fixture(scope="module")
def projected() -> ProjectedDiscriminator:
    torch.manual_seed(0)
    return ProjectedDiscriminator(cond_channels=8, backbone_weights=None)


def test_projected_discriminator_scores_every_position_of_four_scales(projected):
    image, cond = torch.rand(2, 3, 64, 96), torch.rand(2, 8, 4, 6)
    logits = projected(image, cond)
    positions = sum((64 // s) * (96 // s) for s in (4, 8, 16, 32))
    assert logits.shape == (2, positions)
    with pytest.raises(ModelError, match="divisible by 32"):
        projected(torch.rand(1, 3, 48, 64), torch.rand(1, 8, 3, 4))


def test_only_the_heads_train_and_the_image_gets_gradients(projected):
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    projected.zero_grad()
    projected(image, torch.rand(1, 8, 4, 4)).mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0  # G learns through D's frozen features
    trained = {n for n, p in projected.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("heads.", "cond.")) for n in trained)
    assert all(p.grad is None for n, p in projected.named_parameters() if n.startswith(("stages.", "channel_mix.")))
    assert all(p.grad is not None for n, p in projected.named_parameters() if n in trained)


def test_a_reloaded_projected_discriminator_scores_the_same(projected):
    """Checkpoints hold only the heads: the fixed random mixing is rebuilt from the seed (and Lite0's weights)."""
    state = projected.checkpoint_state()
    assert state and all(k.startswith(("heads.", "cond.")) for k in state)
    other = ProjectedDiscriminator(cond_channels=8, backbone_weights=None)
    other.stages.load_state_dict(projected.stages.state_dict())  # random backbones differ; real ones are Lite0's
    other.load_state_dict(state, strict=False)
    image, cond = torch.rand(1, 3, 64, 64), torch.rand(1, 8, 4, 4)
    projected.eval(), other.eval()
    assert torch.equal(projected(image, cond), other(image, cond))
    projected.train()


def test_build_discriminator_by_name():
    assert type(build_discriminator("patch", 8)).__name__ == "PatchDiscriminator"
    with pytest.raises(ModelError, match="needs a condition"):
        build_discriminator("patch", None)
    with pytest.raises(ModelError, match="unknown discriminator"):
        build_discriminator("stylegan", 8)


def test_adversarial_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx((0 + 0.5) / 2 + (0 + 1.5) / 2)
    assert generator_loss(fake, "hinge").item() == pytest.approx(0.75)
    ns = discriminator_loss(real, fake)
    assert ns.item() == pytest.approx(
        torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean()
    )
    assert generator_loss(torch.tensor([10.0])).item() < 1e-4  # a convinced D gives G nothing to gain


def test_diffaugment_is_seeded_differentiable_and_applies_each_op():
    x = torch.rand(4, 3, 32, 48, requires_grad=True)
    ops = parse_diffaugment("color, translation,cutout")
    torch.manual_seed(1)
    a = diffaugment(x, ops)
    torch.manual_seed(1)
    assert torch.equal(a, diffaugment(x, ops))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    ones = torch.ones(8, 3, 32, 48)
    cut = diffaugment(ones, ("cutout",))
    assert torch.all((cut == 0).float().mean(dim=(1, 2, 3)) == 0.25)  # a half-by-half square, inside the image
    moved = diffaugment(ones, ("translation",))
    zeros = (moved[:, 0] == 0).float()
    assert torch.all(zeros.sum(dim=(1, 2)) <= 32 * 48 - (32 - 4) * (48 - 6))  # at most 1/8 of each side
    assert torch.all(moved[:, :, 12:20, 18:30] == 1)  # the centre always stays (shifts are whole pixels)
    colour = diffaugment(ones * 0.5, ("color",))
    assert not torch.equal(colour, ones * 0.5)
    assert parse_diffaugment("") == ()
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        parse_diffaugment("color,mixup")


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    w = torch.ones(3, requires_grad=True)
    assert adaptive_weight(6 * w.sum(), 2 * w.sum(), w).item() == pytest.approx(3.0, rel=1e-3)
    assert adaptive_weight(6 * w.sum(), 0 * w.sum(), w).item() == 1e4  # clamped, not infinite


def test_config_checks_the_adversarial_fields():
    base = {"stage": "anneal", "out": "x", "steps": 1}
    for field, value in (("discriminator", "stylegan"), ("adversarial_loss", "wasserstein"), ("diffaugment", "x")):
        with pytest.raises(ConfigError, match=f"loss.{field}"):
            from_dict({**base, "loss": {field: value}})


def test_projected_hinge_adaptive_diffaugment_resumes_exactly(tmp_path, photo_rgb):
    """Stage 0a with the full adversarial set-up: D trains, G's weight adapts, and a resumed run is identical."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(photo_rgb[:64, :64]).save(photos / "a.png")
    config = {
        "stage": "prior-vae", "steps": 4, "log_every": 1, "checkpoint_every": 2,
        "model": {"preset": "tiny", "random_bases": True},
        "data": {"train": str(photos), "val": None, "crop": 64, "batch_size": 2},
        "loss": {"l1": 0.01, "adversarial": 0.5, "adversarial_start": 1, "discriminator": "projected",
                 "adversarial_loss": "hinge", "adversarial_adaptive": True, "diffaugment": "color,translation,cutout"},
        "val": {"every": 0},
    }  # fmt: skip
    train(from_dict({**config, "out": str(tmp_path / "whole")}), False)
    split = from_dict({**config, "out": str(tmp_path / "split")})
    train(split, False, stop_at=3)
    train(split, False)
    a = load_file(str(list_checkpoints(tmp_path / "whole" / "checkpoints")[-1] / "state.safetensors"))
    b = load_file(str(list_checkpoints(tmp_path / "split" / "checkpoints")[-1] / "state.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    disc = [k for k in a if k.startswith("model/disc.")]
    assert disc and all(k.startswith(("model/disc.heads.", "model/disc.cond.")) for k in disc)  # no backbone stored
    with (tmp_path / "whole" / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["adv_weight"] == "" and float(rows[-1]["adv_weight"]) > 0 and float(rows[-1]["d_loss"]) > 0


def test_adaptive_weight_needs_a_trained_output_layer(tmp_path):
    config = {
        "stage": "warmup", "out": str(Path(tmp_path) / "run"), "steps": 1,
        "model": {"preset": "tiny", "random_bases": True},
        "data": {"train": str(tmp_path), "val": None, "crop": 64},
        "loss": {"adversarial": 0.1, "adversarial_adaptive": True},
    }  # fmt: skip
    with pytest.raises(ConfigError, match="adversarial_adaptive"):
        train(from_dict(config), False)
