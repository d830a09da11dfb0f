"""Training-crop augmentation (data.rotate / brightness / contrast / saturation / hue, data.min_scale): off by default
and then bit-identical to the crops before it existed; deterministic in (seed, position); no black corners; values
in range; the scale and angle ranges respected; a resumed augmented run is bit-identical."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from sodec.errors import SodecError
from sodec.train.augment import Augment, _grow, draw_window, jitter_colour
from sodec.train.config import from_dict
from sodec.train.data import RandomCrops, StreamingCrops
from sodec.train.loop import train

AUG = Augment(rotate=10, brightness=0.1, contrast=0.1, saturation=0.1, hue=5)


def _old_crop(photo: torch.Tensor, i: int, seed: int, crop: int, min_scale: float, flip: bool) -> torch.Tensor:
    """The crop RandomCrops drew before augmentation existed (copied from that version), for one photo."""
    rng = random.Random(f"{seed}/item/{i}")
    h, w = photo.shape[1:]
    largest = min(h, w) / crop
    inv_scale = rng.uniform(1.0, min(1.0 / min_scale, largest))
    size = min(round(crop * inv_scale), h, w)
    top, left = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
    x = photo[:, top : top + size, left : left + size].float().div_(255)
    if size != crop:
        x = F.interpolate(x[None], size=(crop, crop), mode="bilinear", antialias=True)[0].clamp_(0, 1)
    if flip and rng.random() < 0.5:
        x = x.flip(-1)
    return x


def test_defaults_off_give_the_crops_of_before(tmp_path, photo_rgb):
    Image.fromarray(photo_rgb).save(tmp_path / "one.png")  # one photo: every item is drawn from it
    data = RandomCrops(tmp_path, 64, min_scale=0.5, seed=4)
    photo = data.photos[0]
    assert all(torch.equal(data[i], _old_crop(photo, i, 4, 64, 0.5, True)) for i in range(20))
    assert from_dict({"stage": "rd", "out": "x", "steps": 1, "data": {}}).data.augment() is None  # off unless asked for


def test_augmented_crops_are_deterministic_and_differ_from_plain_ones(tmp_path, photo_rgb):
    Image.fromarray(photo_rgb).save(tmp_path / "one.png")
    aug = RandomCrops(tmp_path, 64, min_scale=0.5, seed=4, augment=AUG)
    again = RandomCrops(tmp_path, 64, min_scale=0.5, seed=4, augment=AUG)
    plain = RandomCrops(tmp_path, 64, min_scale=0.5, seed=4)
    assert all(torch.equal(aug[i], again[i]) for i in range(10))
    assert all(not torch.equal(aug[i], plain[i]) for i in range(10))
    assert not torch.equal(aug[3], aug[4])
    assert not torch.equal(aug[3], RandomCrops(tmp_path, 64, min_scale=0.5, seed=5, augment=AUG)[3])
    stream = StreamingCrops(tmp_path, 64, min_scale=0.5, seed=4, augment=AUG)
    assert all(torch.equal(aug[i], stream[i]) for i in range(10))  # the same crop, whichever loader


@pytest.mark.parametrize("size", [(200, 300), (66, 90), (64, 64)])
def test_rotated_crops_have_no_black_corners(tmp_path, size):
    h, w = size
    Image.new("RGB", (w, h), (153, 153, 153)).save(tmp_path / "grey.png")  # 0.6 everywhere
    data = RandomCrops(tmp_path, 64, min_scale=0.5, seed=1, flip=False, augment=Augment(rotate=45))
    for i in range(40):
        x = data[i]
        assert x.shape == (3, 64, 64)
        assert torch.allclose(x, torch.full_like(x, 0.6), atol=1e-4), f"item {i}: min {x.min():.3f}"


def test_rotation_angles_and_scales_stay_in_range():
    rng = random.Random(0)
    angles = []
    for _ in range(2000):
        h, w = rng.randrange(64, 700), rng.randrange(64, 700)
        win = draw_window(rng, h, w, 64, 1 / 3, rotate=8)
        angles.append(win.angle)
        assert abs(win.angle) <= 8
        assert 64 <= win.size <= round(64 * 3) and win.size <= min(h, w)  # scale in [1/3, 1], never upscaled
        assert win.outer <= min(h, w) and 0 <= win.top <= h - win.outer and 0 <= win.left <= w - win.outer
        if win.angle:
            assert win.outer >= win.size * (_grow(win.angle, 64) - 2 / 64) - 1e-9  # the rotated square fits
    assert max(angles) > 7 and min(angles) < -7  # the whole range is used
    sizes = [draw_window(rng, 1000, 1000, 64, 1 / 3).size for _ in range(2000)]
    assert min(sizes) < 70 and max(sizes) > 185  # from 1 down to 1/3 of the photo's scale


def test_colour_jitter_keeps_values_in_range_and_greys_grey():
    rng = random.Random(2)
    x = torch.rand(3, 64, 64)
    x[:, :8] = 1.0  # saturated highlights
    big = Augment(brightness=0.5, contrast=0.5, saturation=0.5, hue=90)
    for _ in range(20):
        y = jitter_colour(x.clone(), rng, big)
        assert y.min() >= 0 and y.max() <= 1 and not torch.equal(y, x)
    grey = torch.full((3, 16, 16), 0.4)
    y = jitter_colour(grey, rng, Augment(saturation=0.3, hue=45))
    assert torch.allclose(y[0], y[1], atol=1e-5) and torch.allclose(y[1], y[2], atol=1e-5)
    small = jitter_colour(x.clone(), random.Random(3), Augment(brightness=0.05))
    assert (small - x).abs().max() <= 0.05 + 1e-6  # a mild jitter stays mild


def test_bad_augmentation_settings_are_config_errors():
    for bad in ({"rotate": -1}, {"rotate": 60}, {"brightness": 1.0}, {"hue": 200}, {"min_scale": 0}):
        with pytest.raises(SodecError, match="data\\."):
            from_dict({"stage": "rd", "out": "x", "steps": 1, "data": bad})
    on = from_dict({"stage": "rd", "out": "x", "steps": 1, "data": {"rotate": 5, "hue": 3}}).data.augment()
    assert on == Augment(rotate=5, hue=3)


def test_a_resumed_augmented_run_matches_an_uninterrupted_one(tmp_path, photo_rgb):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        Image.fromarray(np.roll(photo_rgb, 17 * k, axis=1)).save(photos / f"p{k}.png")

    def config(run: str) -> dict:
        return {
            "stage": "rd", "out": str(tmp_path / run), "steps": 4, "log_every": 1, "checkpoint_every": 2,
            "model": {"preset": "tiny"}, "val": {"every": 0}, "loss": {"lmbda": 0.5},
            "data": {"train": str(photos), "val": None, "crop": 64, "batch_size": 2, "min_scale": 0.6,
                     "rotate": 10, "brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 5},
        }  # fmt: skip

    torch.manual_seed(0)
    train(from_dict(config("whole")), False)
    torch.manual_seed(0)
    train(from_dict(config("split")), False, stop_at=2)
    train(from_dict(config("split")), False)
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "step-0000004" / "state.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-0000004" / "state.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
