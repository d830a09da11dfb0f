"""Guidance token layouts: ``sequence`` (nano's, unchanged) and ``grid`` (the paper preset's: CLS kept, the
patch grid of the image's content, aspect kept by letterboxing, optional 2-D pooling)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sodec.models import SodecModel, preset_config
from sodec.models.guidance import GuidanceBackbone, GuidanceProjector

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2)  # a 4x4 patch grid + CLS


def backbone(layout: str = "sequence", grid: int | None = None) -> GuidanceBackbone:
    torch.manual_seed(0)
    return GuidanceBackbone.from_timm("vit_tiny_patch16_224", random_weights=True, layout=layout, grid=grid,
                                      **TINY_VIT)  # fmt: skip


def test_presets_choose_their_layout():
    assert preset_config("nano").diffusion.guidance_layout == "sequence"
    assert preset_config("tiny").diffusion.guidance_layout == "sequence"
    paper = preset_config("paper").diffusion
    assert (paper.guidance_layout, paper.guidance_grid) == ("grid", None)
    with pytest.raises(ValueError, match="guidance_layout"):
        preset_config("tiny").diffusion.__class__(guidance_layout="raster")


def test_sequence_layout_is_the_squashed_image_resampled_in_raster_order():
    f = backbone()
    image = torch.rand(2, 3, 40, 72)
    x = F.interpolate(image, size=(32, 32), mode="bilinear", antialias=True)
    assert torch.equal(f(image), f.model.forward_features((x - f.mean) / f.std))
    fp = GuidanceProjector(24, 16)
    assert fp(f(image)).shape == (2, 77, 16)


def test_grid_layout_of_a_square_image_is_the_whole_token_set_cls_first():
    seq, grid = backbone(), backbone("grid")
    image = torch.rand(2, 3, 64, 64)
    tokens = grid(image)
    assert tokens.shape == (2, 1 + 4 * 4, 24)
    assert torch.equal(tokens, seq(image))  # a square image: nothing padded, nothing dropped
    assert GuidanceProjector(24, 16, n_tokens=None)(tokens).shape == (2, 17, 16)  # no resampling


def test_grid_layout_keeps_the_aspect_and_drops_padding_tokens():
    f = backbone("grid")
    wide = torch.rand(1, 3, 64, 128)  # letterboxed to 16x32 in the 32x32 input: 2 of the 4 patch rows
    tokens = f(wide)
    assert tokens.shape == (1, 1 + 2 * 4, 24)
    tall = torch.rand(1, 3, 128, 64)
    assert f(tall).shape == (1, 1 + 4 * 2, 24)
    # the CLS token is the backbone's, of the letterboxed input (padding = the normalisation mean)
    x = F.interpolate(wide, size=(16, 32), mode="bilinear", antialias=True)
    x = F.pad((x - f.mean) / f.std, (0, 0, 0, 16))
    assert torch.allclose(tokens[:, 0], f.model.forward_features(x)[:, 0])
    # patch tokens row by row: the first patch row of the grid comes first
    assert torch.allclose(tokens[:, 1:5], f.model.forward_features(x)[:, 1:5])


def test_grid_pooling_keeps_the_aspect():
    f = backbone("grid", grid=2)
    assert f(torch.rand(1, 3, 64, 64)).shape == (1, 1 + 2 * 2, 24)
    assert f(torch.rand(1, 3, 64, 128)).shape == (1, 1 + 1 * 2, 24)
    full = backbone("grid")(torch.rand(1, 3, 64, 64))
    assert backbone("grid", grid=4)(torch.rand(1, 3, 64, 64)).shape == full.shape  # at most 4: nothing pooled


def test_grid_layout_for_a_cnn_backbone():
    torch.manual_seed(0)
    f = GuidanceBackbone.from_timm("efficientnet_lite0", random_weights=True, layout="grid")
    assert f.num_prefix_tokens == 0
    assert f(torch.rand(1, 3, 64, 128)).shape == (1, 4 * 7, 1280)  # 7x7 map, 112 of 224 rows: 4 rows


def test_sodec_model_with_the_grid_layout_trains_through_it():
    config = preset_config("tiny")
    config.diffusion.guidance_layout = "grid"
    torch.manual_seed(0)
    model = SodecModel(config, random_bases=True)
    assert model.projector.n_tokens is None
    out = model(torch.rand(2, 3, 64, 128))
    assert out["x_hat"].shape == (2, 3, 64, 128)
    out["x_hat"].mean().backward()
    assert model.projector.mlp[1].weight.grad.abs().sum() > 0
    assert model.fidelity.tail[-1].weight.grad.abs().sum() > 0  # Da learns through F (guidance)
