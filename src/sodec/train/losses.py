"""Loss terms of the recipe, the λ schedule, and the conditional PatchGAN discriminator.

Conventions (HiFiC's): MSE and L1 on the 0..255 scale, rate in bits per pixel, LPIPS on [0,1] images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN (HiFiC's D): image ``(B,3,H,W)`` + condition ``(B,C,h,w)`` → logits ``(B,1,H/16,W/16)``.

    The condition (the coded latent ŷ, detached) is reduced to 12 channels and upsampled to the image size.
    """

    def __init__(self, cond_channels: int, width: int = 64, cond_width: int = 12) -> None:
        super().__init__()
        self.cond = nn.Sequential(nn.Conv2d(cond_channels, cond_width, 3, padding=1), nn.LeakyReLU(0.2))
        layers, c_in = [], 3 + cond_width
        for i, c in enumerate((width, 2 * width, 4 * width, 8 * width)):
            conv = nn.Conv2d(c_in, c, 4, stride=2, padding=1)
            layers += [nn.utils.parametrizations.spectral_norm(conv) if i else conv, nn.LeakyReLU(0.2)]
            c_in = c
        layers.append(nn.Conv2d(c_in, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor, cond: Tensor) -> Tensor:
        c = F.interpolate(self.cond(cond), size=image.shape[-2:], mode="nearest")
        return self.net(torch.cat([image * 2 - 1, c], dim=1))


def generator_loss(logits_fake: Tensor) -> Tensor:
    """Non-saturating G loss: −log D(x̂)."""
    return F.softplus(-logits_fake).mean()


def discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """−log D(x) − log(1 − D(x̂))."""
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()
