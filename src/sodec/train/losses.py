"""Loss terms of the recipe and the λ schedule (the discriminators: ``sodec.train.discriminators``).

Conventions (HiFiC's): MSE and L1 on the 0..255 scale, rate in bits per pixel, LPIPS on [0,1] images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sodec.train.config import LossSection


def bits_per_pixel(likelihoods: dict[str, Tensor], n_pixels: int) -> Tensor:
    """R = (−Σ log₂ p(ŷ|ẑ) − Σ log₂ p(ẑ)) / pixels, from the entropy models' likelihoods."""
    return sum(-torch.log2(v).sum() for v in likelihoods.values()) / n_pixels


def mse255(x: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(x.float(), y.float()) * 255**2


def l1_255(x: Tensor, y: Tensor) -> Tensor:
    return F.l1_loss(x.float(), y.float()) * 255


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB of [0,1] images (batch mean MSE)."""
    return -10 * torch.log10(F.mse_loss(x.float().clamp(0, 1), y.float()).clamp_min(1e-10))


def lmbda_at(loss: LossSection, step: int, total_steps: int) -> float:
    """λ at ``step``: ``lmbda`` until ``lmbda_start_step``, then towards ``lmbda_end`` over ``lmbda_steps``."""
    if loss.lmbda_end is None:
        return loss.lmbda
    length = loss.lmbda_steps if loss.lmbda_steps is not None else max(1, total_steps - loss.lmbda_start_step)
    t = min(max((step - loss.lmbda_start_step) / max(length, 1), 0.0), 1.0)
    a, b = loss.lmbda, loss.lmbda_end
    if loss.lmbda_shape == "linear":
        return a + (b - a) * t
    if loss.lmbda_shape == "cosine":
        return a + (b - a) * (1 - math.cos(math.pi * t)) / 2
    if loss.lmbda_shape == "step":  # plateaus, geometric between the ends, the last one is the target
        levels = max(loss.lmbda_levels, 2)
        t = min(math.floor(t * levels), levels - 1) / (levels - 1)
    if a <= 0 or b <= 0:  # geometric needs positive ends; fall back to linear
        return a + (b - a) * t
    return a * (b / a) ** t


def rate_weight(loss: LossSection, lmbda: float, bpp: Tensor) -> float:
    """HiFiC's target-rate switching: a lower weight while the batch is already under ``target_bpp``."""
    if loss.target_bpp is not None and float(bpp.detach()) < loss.target_bpp:
        return lmbda * loss.target_factor
    return lmbda
