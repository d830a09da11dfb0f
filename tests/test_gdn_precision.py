"""GDN (``transforms: gdn``) under float16 and bfloat16: the normalisation is computed in float32.

compressai's GDN squares its input, which overflows float16 beyond |x| = 256; sodec's GDN32 promotes to float32
for that step (docs/decisions.md, "GDN under half precision").  Checked on the CPU: half weights (the decoder's
``set_synthesis_dtype`` on a GPU) and autocast (mixed-precision training).
"""

from __future__ import annotations

import pytest
import torch

from sodec._compressai import GDN
from sodec.models import SodecModel, preset_config
from sodec.models.layers import GDN32

HALF = [torch.float16, torch.bfloat16]


def trained_like(layer: GDN, seed: int = 0) -> GDN:
    """Non-trivial β and γ (off-diagonal couplings, β ≠ 1), as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.beta.copy_(layer.beta_reparam.init(0.5 + torch.rand(layer.beta.shape, generator=g)))
        gamma = 0.1 * torch.eye(layer.gamma.shape[0]) + 0.01 * torch.rand(layer.gamma.shape, generator=g)
        layer.gamma.copy_(layer.gamma_reparam.init(gamma))
    return layer


@pytest.mark.parametrize("inverse", [False, True])
def test_compressai_gdn_overflows_in_float16_and_gdn32_does_not(inverse):
    g = torch.Generator().manual_seed(1)
    # |x| in [260, 300]: x² past float16's 65504, while GDN's and IGDN's outputs still fit in float16
    x = (260 + 40 * torch.rand(1, 8, 6, 6, generator=g)) * torch.randint(0, 2, (1, 8, 6, 6), generator=g).mul(2).sub(1)
    reference = trained_like(GDN(8, inverse=inverse))(x)
    theirs = trained_like(GDN(8, inverse=inverse)).half()(x.half())
    # the failure GDN32 exists for: x² overflows to inf, so IGDN (x·√norm) gives inf/NaN and GDN (x/√norm) zeros
    assert not torch.isfinite(theirs).all() if inverse else (theirs == 0).float().mean() > 0.5
    ours = trained_like(GDN32(8, inverse=inverse)).half()(x.half())
    assert ours.dtype == torch.float16 and torch.isfinite(ours).all()
    torch.testing.assert_close(ours.float(), reference, rtol=2e-3, atol=1e-2 * reference.abs().max().item())


def test_gdn32_in_float32_is_compressai_bit_for_bit():
    x = torch.randn(2, 8, 5, 7, generator=torch.Generator().manual_seed(2)) * 3
    for inverse in (False, True):
        assert torch.equal(trained_like(GDN32(8, inverse=inverse))(x), trained_like(GDN(8, inverse=inverse))(x))


@pytest.fixture(scope="module")
def gdn_model() -> SodecModel:
    torch.manual_seed(0)
    model = SodecModel(preset_config("tiny", transforms="gdn", gdn_channels=16, diffusion=None)).eval()
    for m in model.modules():
        if isinstance(m, GDN):
            trained_like(m)
    return model


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("scale", [10.0, 30.0])  # ŷ of the trained nano GDN model peaks near 10
def test_tiny_gdn_decoder_in_half_weights_stays_finite_and_close(gdn_model, dtype, scale):
    """Da with half weights (what ``set_synthesis_dtype`` does on a GPU) against float32."""
    y = torch.randn(1, gdn_model.config.latent_channels, 4, 4, generator=torch.Generator().manual_seed(3)) * scale
    with torch.no_grad():
        reference = gdn_model.fidelity(y)
        half = SodecModel(gdn_model.config).eval()
        half.load_state_dict(gdn_model.state_dict())
        half.set_synthesis_dtype(dtype)
        out = half.fidelity(y.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    tol = 0.02 if dtype == torch.float16 else 0.08  # bfloat16 keeps 8 bits of mantissa
    assert (out.float() - reference).abs().max() <= tol * reference.abs().max()


@pytest.mark.parametrize("dtype", HALF)
def test_tiny_gdn_encoder_and_decoder_under_autocast(gdn_model, dtype):
    """Mixed-precision training: E and Da under CPU autocast, forward and backward finite."""
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 200  # large inputs: large activations
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        y = gdn_model.compression.encoder(x)
        x_f = gdn_model.fidelity(y * 40)
    assert torch.isfinite(y).all() and torch.isfinite(x_f).all()
    x_f.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()
    with torch.no_grad():
        reference = gdn_model.fidelity(gdn_model.compression.encoder(x) * 40)
    assert (x_f.float() - reference).abs().max() <= 0.1 * reference.abs().max()
