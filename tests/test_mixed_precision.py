"""Mixed precision: ẑ0 = (ŷ_t − √(1−ᾱ)·ε)/√ᾱ multiplies rounding errors by 1/√ᾱ ≈ 14.6 at t = 999, so it is
computed in float32 under autocast, as are the rate terms.  CPU bf16 autocast stands in for a GPU's."""

from __future__ import annotations

import torch

from sodec.models import SodecModel, preset_config
from sodec.models.diffusion import OneStepDenoiser, alphas_cumprod
from sodec.train.config import from_dict
from sodec.train.stages import build_stage

ALPHA_BAR = alphas_cumprod()[999].item()


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()


def test_amplification_at_t999():
    assert 14.5 < ALPHA_BAR**-0.5 < 14.7


def test_the_formula_runs_in_float32_under_autocast():
    """Same UNet output (bf16, as autocast gives it): the float32 formula is exact to float32 rounding; the same
    formula in bf16 is off by ~1e-2 where ŷ_t and √(1−ᾱ)·ε cancel (a denoiser that works)."""
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g)
    a, b = ALPHA_BAR**0.5, (1 - ALPHA_BAR) ** 0.5
    y_t = (a * z0 + b * eps).bfloat16()  # what Ts gives under autocast
    out = eps.bfloat16()  # what the UNet gives under autocast
    denoiser = OneStepDenoiser(torch.nn.Identity(), ALPHA_BAR)
    denoiser.epsilon = lambda y, tokens, timestep=None: out
    exact = (y_t.double() - b * out.double()) / a  # x₀ of exactly these ŷ_t and ε
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_0 = denoiser(y_t, None)
    assert y_0.dtype == torch.float32
    naive = (y_t - denoiser.sqrt_one_minus_alpha_bar * out) / denoiser.sqrt_alpha_bar  # bf16 arithmetic
    assert naive.dtype == torch.bfloat16
    assert rel_rms(y_0, exact) < 1e-6
    assert rel_rms(naive, exact) > 1e-3


def test_bf16_autocast_gives_z0_within_tolerance_of_float32():
    """Tiny preset, random weights, the whole decoder side under bf16 autocast: ẑ0 comes back in float32 and
    within 5 % (relative RMS) of the float32 ẑ0 — the UNet's own bf16 error (≈ 2 % here), amplified by the
    formula but no longer rounded again by it.  The rate terms are computed in float32 (next test)."""
    torch.manual_seed(0)
    model = SodecModel(preset_config("tiny"), random_bases=True).eval()
    x = torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        latents = model.compression(x)
        ref = model.synthesize(latents["y_hat"], latents["z_hat"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.synthesize(latents["y_hat"], latents["z_hat"])
    assert ref["y_0"].dtype == mixed["y_0"].dtype == torch.float32
    assert rel_rms(mixed["y_0"], ref["y_0"]) < 0.05
    assert torch.isfinite(mixed["x_hat"]).all()


def test_rate_terms_are_float32_and_unchanged_under_autocast():
    config = from_dict({
        "stage": "anneal", "out": "unused", "steps": 1,
        "model": {"preset": "tiny", "random_bases": True}, "data": {"train": "unused", "crop": 64},
        "loss": {"lmbda": 1.0},
    })  # fmt: skip
    torch.manual_seed(0)
    stage = build_stage(config).train()
    x = torch.rand(2, 3, 64, 64)
    torch.manual_seed(1)
    plain = stage(x, 1.0)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = stage(x, 1.0)
    assert mixed["bpp_estimate"].dtype == mixed["rate"].dtype == torch.float32
    assert torch.equal(mixed["bpp_estimate"], plain["bpp_estimate"]) and torch.equal(mixed["rate"], plain["rate"])
