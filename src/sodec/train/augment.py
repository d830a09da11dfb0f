"""Training-crop geometry and optional augmentation: multi-scale windows, flips, small rotations, colour jitter.

One function draws a crop (:func:`draw_window`) and one renders it (:func:`render_crop`), shared by
:class:`~sodec.train.data.RandomCrops` and :class:`~sodec.train.data.StreamingCrops`, so both give the same crop
of the same photo.  Every random number comes from the caller's ``random.Random`` (seeded by the seed and the
stream position), so a crop is a pure function of (seed, position).  With :class:`Augment` at its defaults (all
zero) the draws and the pixels are exactly those of the crops before augmentation existed.

* **Scale**: the window is ``crop / s`` pixels wide for ``s`` uniform in [``min_scale``, 1] and resized down to
  ``crop`` (antialiased) — the same as downscaling the photo by ``s`` before cropping; never upscaled (``s`` is
  limited so the window fits the photo).
* **Rotation** (``rotate`` > 0): an angle uniform in ±``rotate`` degrees; the window is chosen large enough that
  the rotated square lies inside the photo (no black corners): the angle is reduced for photos too small for it.
* **Colour** (``brightness``, ``contrast``, ``saturation``: relative amounts; ``hue``: degrees): factors uniform
  in 1 ± amount (hue: ± degrees, a rotation about the grey axis, which keeps greys grey), then clamped to [0, 1].
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: Rec. 601 luma weights (the grey a saturation change blends towards)
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augment:
    """Optional augmentation of the training crops (all off at 0)."""

    rotate: float = 0.0  # max |angle|, degrees
    brightness: float = 0.0  # multiply by a factor in [1 - b, 1 + b]
    contrast: float = 0.0  # scale deviations from the crop's mean luma by [1 - c, 1 + c]
    saturation: float = 0.0  # scale deviations from each pixel's luma by [1 - s, 1 + s]
    hue: float = 0.0  # rotate the hue by an angle in [-h, h] degrees

    def __post_init__(self) -> None:
        for name in ("rotate", "brightness", "contrast", "saturation", "hue"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 <= v):
                raise ValueError(f"data.{name} must be a number >= 0, got {v!r}")
        if self.rotate > 45 or self.hue > 180 or max(self.brightness, self.contrast, self.saturation) >= 1:
            raise ValueError("data.rotate must be <= 45 degrees, data.hue <= 180, brightness/contrast/saturation < 1")

    @property
    def colour(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation or self.hue)


@dataclass(frozen=True)
class Window:
    """A drawn crop: a ``size``-pixel square window at (``top``, ``left``) of the rotated frame's bounding square
    ``outer`` (= ``size`` without rotation), rotated by ``angle`` degrees."""

    size: int
    outer: int
    top: int
    left: int
    angle: float


def _grow(angle: float, crop: int) -> float:
    """Side of the square that holds a ``crop`` square rotated by ``angle``, over ``crop`` (+ one pixel each side)."""
    a = math.radians(abs(angle))
    return math.cos(a) + math.sin(a) + (2.0 / crop if angle else 0.0)


def draw_window(rng: random.Random, h: int, w: int, crop: int, min_scale: float, rotate: float = 0.0) -> Window:
    """Draw a crop window of an ``h`` x ``w`` photo (at least ``crop`` on its shorter side)."""
    angle = 0.0
    if rotate > 0:
        angle = rng.uniform(-rotate, rotate)
        side = min(h, w)
        while angle and crop * _grow(angle, crop) > side:  # too small for this angle: turn less
            angle = angle * 0.5 if abs(angle) > 0.25 else 0.0
    grow = _grow(angle, crop)
    largest = min(h, w) / (crop * grow)  # 1/s limit so the (rotated) window fits
    inv_scale = rng.uniform(1.0, max(1.0, min(1.0 / min_scale, largest)))
    size = min(round(crop * inv_scale), h, w)
    outer = size if not angle else min(math.ceil(size * grow), h, w)
    top, left = rng.randrange(h - outer + 1), rng.randrange(w - outer + 1)
    return Window(size, outer, top, left, angle)


def _rotate_centre(x: Tensor, angle: float, crop: int) -> Tensor:
    """The ``crop`` square at the centre of ``x`` (3,R,R), turned by ``angle`` degrees (bilinear)."""
    r = x.shape[-1]
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    # affine_grid maps output coordinates in [-1, 1] (of the crop) to input coordinates in [-1, 1] (of R)
    k = crop / r
    theta = torch.tensor([[c * k, -s * k, 0.0], [s * k, c * k, 0.0]], dtype=x.dtype)[None]
    grid = F.affine_grid(theta, [1, 3, crop, crop], align_corners=False)
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def render_crop(
    region: Tensor, win: Window, crop: int, rng: random.Random, flip: bool, aug: Augment | None = None
) -> Tensor:
    """The ``(3,crop,crop)`` float crop in [0, 1] from ``region`` (the window's ``outer`` square, uint8 or float).

    Draws from ``rng`` after :func:`draw_window`: the flip, then (only when ``aug.colour``) the colour factors.
    """
    x = region.float().div_(255) if region.dtype == torch.uint8 else region.float()
    if win.angle:
        target = max(crop + 2, round(win.outer * crop / win.size))  # the outer square at the crop's scale
        if target != win.outer:
            x = F.interpolate(x[None], size=(target, target), mode="bilinear", antialias=True)[0]
        x = _rotate_centre(x, win.angle, crop).clamp_(0, 1)
    elif win.size != crop:
        x = F.interpolate(x[None], size=(crop, crop), mode="bilinear", antialias=True)[0].clamp_(0, 1)
    if flip and rng.random() < 0.5:
        x = x.flip(-1)
    if aug is not None and aug.colour:
        x = jitter_colour(x, rng, aug)
    return x


def jitter_colour(x: Tensor, rng: random.Random, aug: Augment) -> Tensor:
    """Brightness, contrast, saturation and hue changes drawn from ``rng`` (four draws, always in this order).

    Applied in that order they compose into one affine map of the colour, ``A x + o`` (a single 3x3 matrix
    product over the pixels): brightness ``b x``; contrast ``c (x - m) + m`` about the mean luma ``m``;
    saturation ``g + s (x - g)`` about each pixel's luma ``g``; hue, a rotation about the grey axis.  Greys stay
    grey under the last two, so ``o`` is grey.
    """
    b = rng.uniform(1 - aug.brightness, 1 + aug.brightness)
    c = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
    s = rng.uniform(1 - aug.saturation, 1 + aug.saturation)
    h = math.radians(rng.uniform(-aug.hue, aug.hue))
    luma = torch.tensor(_LUMA, dtype=torch.float64)
    sat = s * torch.eye(3, dtype=torch.float64) + (1 - s) * torch.outer(torch.ones(3, dtype=torch.float64), luma)
    k = torch.full((3,), 1 / math.sqrt(3), dtype=torch.float64)  # rotation about the grey axis (Rodrigues)
    kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    rot = math.cos(h) * torch.eye(3, dtype=torch.float64) + math.sin(h) * kx + (1 - math.cos(h)) * torch.outer(k, k)
    a = (c * b) * (rot @ sat)
    mean_luma = float(x.mean(dim=(1, 2)).double() @ luma)
    offset = (1 - c) * b * mean_luma
    flat = x.reshape(3, -1)
    return (a.to(x.dtype) @ flat).add_(offset).clamp_(0, 1).reshape(x.shape)


def augmented_crop(
    read: Callable[[int, int, int], Tensor],
    h: int,
    w: int,
    crop: int,
    rng: random.Random,
    min_scale: float,
    flip: bool,
    aug: Augment | None = None,
) -> Tensor:
    """Draw a window of an ``h`` x ``w`` photo and render it; ``read(top, left, side)`` returns that square."""
    win = draw_window(rng, h, w, crop, min_scale, aug.rotate if aug is not None else 0.0)
    return render_crop(read(win.top, win.left, win.outer), win, crop, rng, flip, aug)
