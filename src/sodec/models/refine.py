"""Encode-time latent refinement (``sodec compress --effort N``): a better ŷ, ẑ for the same decoder.

The encoder E is amortised: its y is good on average, not the best latent for *this* image.  Following Campos
et al. 2019 and Yang et al. 2020 ("Improving Inference for Neural Image Compression"), effort N > 0 starts
from y = E(x), z = Ha(y) and runs Adam on (y, z) against the model's own rate-distortion objective

    L(y, z) = (bits(ẑ) + bits(ŷ | ẑ)) / pixels + λ · MSE(x, Da(ŷ)),

with rounding made differentiable by the straight-through estimator (forward: the coder's rounding; backward:
identity).  The result is coded by the unchanged exact path (:meth:`CompressionModule.compress_latent` with
``z`` given: means and scales from the integer P on the final ẑ), so files keep their format and decode with
the unchanged decoder.  A refined latent is kept only if its *measured* objective (the coded stream bytes and
Da's MSE of the ŷ the decoder will see) is no worse than the ordinary encode's; otherwise the ordinary streams
are returned, byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sodec.models.compression import LatentStreams

MAX_EFFORT = 3
# Adam iterations per effort level.  One iteration is a forward and backward pass of Da at full resolution:
# 0.78 CPU-s at 768x512 for nano on one EPYC thread (docs/benchmarks.md "Encode effort"), so the literature's
# hundreds of iterations are out of reach; level 2 is ~12 CPU-s there.
EFFORT_ITERATIONS = {0: 0, 1: 5, 2: 15, 3: 50}
# Above this many pixels effort > 0 falls back to the ordinary encode (with a warning): the refinement runs on
# the whole latent, untiled, and Da's backward pass holds every full-resolution activation.
MAX_EFFORT_PIXELS = 2_200_000  # 1920x1080 (2.07 MP) fits
# λ per rate point (distortion = MSE of [0, 1] RGB): rate 0's tuned on training photos so that the refined file
# is no larger than the ordinary one and of higher quality; the others doubled per rate point, not yet tuned
# (rate 2 came out 0.8 % larger on the validation photos: docs/decisions.md).  Other rate points use the nearest.
LAMBDAS = {0: 15.0, 1: 30.0, 2: 60.0, 3: 120.0}
LEARNING_RATE = 0.08


@dataclass(frozen=True)
class RefineSettings:
    iterations: int
    lmbda: float
    lr: float = LEARNING_RATE


def settings_for(effort: int, rate_point: int) -> RefineSettings:
    """The refinement an effort level runs for a model's rate point."""
    nearest = min(LAMBDAS, key=lambda r: abs(r - rate_point))
    return RefineSettings(EFFORT_ITERATIONS[effort], LAMBDAS[nearest])


def _ste_round(v: Tensor, offset: Tensor) -> Tensor:
    """round(v − offset) + offset forward (the coder's quantiser), identity backward."""
    return v + (torch.round(v - offset) + offset - v).detach()


def rate_and_latents(compression, y: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """Estimated bits of (ẑ, ŷ|ẑ) from the model's entropy models, and ŷ; differentiable in y and z.

    ``y`` ``(1,C,h,w)``, ``z`` ``(1,N,h/4,w/4)`` → (scalar bits, ŷ ``(1,C,h,w)``).  Quantisation as the coder
    does it: ẑ = round(z − median) + median, ŷ = round(y − μ) + μ with μ, σ from the float P on ẑ.
    """
    eb, gc = compression.entropy_bottleneck, compression.gaussian_conditional
    medians = eb._get_medians().detach()  # (1, N, 1, 1)
    z_hat = _ste_round(z, medians.reshape(1, -1, 1, 1))
    # the bottleneck's density works on (N, 1, count) rows
    rows = z_hat.permute(1, 0, 2, 3).reshape(z_hat.shape[1], 1, -1)
    z_lik, _, _ = eb._likelihood(rows)
    z_lik = eb.likelihood_lower_bound(z_lik)
    scales, means = compression.entropy_parameters(z_hat)
    y_hat = _ste_round(y, means)
    y_lik = gc.likelihood_lower_bound(gc._likelihood(y_hat, scales, means))
    bits = -(torch.log2(z_lik).sum() + torch.log2(y_lik).sum())
    return bits, y_hat


def _mse(model, y_hat: Tensor, x: Tensor, height: int, width: int) -> Tensor:
    """MSE of Da(ŷ) against ``x`` ``(1,3,H,W)`` over the image (the replicate padding is not coded)."""
    x_f = model.fidelity(y_hat)
    return F.mse_loss(x_f[..., :height, :width], x[..., :height, :width])


def refine_latents(model, x: Tensor, height: int, width: int, settings: RefineSettings) -> tuple[Tensor, Tensor]:
    """Adam on (y, z) from (E(x), Ha(E(x))); returns the final (y, z) (unquantised, detached).

    ``x``: ``(1,3,H,W)`` float in [0,1], padded to the model's multiple; ``height``/``width``: the image's
    own size inside it.  The networks' weights are not touched (no gradient is kept for them).
    """
    comp = model.compression
    n_pixels = height * width
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            y0 = comp.encoder(x)
            z0 = comp.hyper_analysis(y0)
        y, z = y0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([y, z], lr=settings.lr)
        best, best_loss = (y0, z0), math.inf
        for _ in range(settings.iterations):
            opt.zero_grad(set_to_none=True)
            bits, y_hat = rate_and_latents(comp, y, z)
            loss = bits / n_pixels + settings.lmbda * _mse(model, y_hat, x, height, width)
            # the STE loss is that of the quantised latents: the best iterate so far is the one to code
            if loss.item() < best_loss:
                best_loss, best = loss.item(), (y.detach().clone(), z.detach().clone())
            loss.backward()
            opt.step()
        return best
    finally:
        for p in params:
            p.requires_grad_(True)


@torch.no_grad()
def measured_objective(model, streams: LatentStreams, y_hat: Tensor, x: Tensor, height: int, width: int,
                       lmbda: float) -> float:
    """The objective of coded streams: real bits (both streams) per pixel + λ · MSE(x, Da(ŷ)).

    ``y_hat``: ŷ ``(1,C,h,w)`` exactly as the decoder reconstructs it.  The header is the same size for any
    latent of one image, so it is left out.
    """
    bits = 8 * (len(streams.z_stream) + len(streams.y_stream))
    dtype = next(model.fidelity.parameters()).dtype
    mse = _mse(model, y_hat.to(x.device, dtype), x, height, width).item()
    return bits / (height * width) + lmbda * mse


@torch.no_grad()
def compress_refined(
    model, x: Tensor, effort: int, tile: int | None = 64, settings: RefineSettings | None = None
) -> tuple[LatentStreams, dict]:
    """Code ``x`` ``(1,3,H,W)`` (uint8 or float in [0,1]) at effort ``effort`` ≥ 1.

    ``settings``: instead of the effort level's (tuning, benchmarks/encode_effort.py).
    Returns the streams and a report: ``refined`` (whether the refined latent was kept), the two measured
    objectives, and the settings.  The ordinary encode is :meth:`EncodingMixin.compress` itself, so the
    fallback is byte-identical to effort 0.
    """
    from sodec.models.sodec import pad_to_multiple

    height, width = x.shape[-2:]
    settings = settings or settings_for(effort, model.config.rate_point)
    ordinary = model.compress(x, tile=tile)
    xf = x.float().div(255) if not x.is_floating_point() else x
    xf = pad_to_multiple(xf, model.config.downsampling)
    y_hat0, _ = model.compression.decompress(ordinary, model.latent_size(height, width))
    base = measured_objective(model, ordinary, y_hat0, xf, height, width, settings.lmbda)
    with torch.enable_grad():
        y, z = refine_latents(model, xf, height, width, settings)
    streams, y_hat, _ = model.compression.compress_latent(y, z)
    refined = measured_objective(model, streams, y_hat, xf, height, width, settings.lmbda)
    report = {"refined": refined <= base, "objective": refined, "ordinary_objective": base, "settings": settings}
    return (streams if refined <= base else ordinary), report
