"""FGM: a frozen timm backbone read out as tokens, and the projector to the UNet's token shape."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from sodec.errors import ModelError
from sodec.models.guidance import GuidanceBackbone, GuidanceProjector

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2)


def test_vit_backbone_gives_patch_tokens_and_is_frozen():
    torch.manual_seed(0)
    f = GuidanceBackbone.from_timm("vit_tiny_patch16_224", random_weights=True, **TINY_VIT)
    tokens = f(torch.rand(2, 3, 100, 60))  # any input size: resized to the backbone's
    assert tokens.shape == (2, 1 + 16, 24) and f.token_dim == 24
    assert not any(p.requires_grad for p in f.parameters())
    f.train()
    assert not f.model.training


def test_cnn_backbone_gives_one_token_per_position():
    f = GuidanceBackbone.from_timm("efficientnet_lite0", random_weights=True)
    tokens = f(torch.rand(1, 3, 64, 96))
    assert tokens.shape == (1, 7 * 7, 1280)


def test_missing_backbone_weights_name_the_download(tmp_path):
    with pytest.raises(ModelError, match="vit_tiny_patch16_224"):
        GuidanceBackbone.from_timm("vit_tiny_patch16_224", weights=tmp_path / "none.safetensors", **TINY_VIT)


def test_backbone_weights_load_from_safetensors(tmp_path):
    torch.manual_seed(1)
    src = GuidanceBackbone.from_timm("vit_tiny_patch16_224", random_weights=True, **TINY_VIT)
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.manual_seed(2)
    dst = GuidanceBackbone.from_timm("vit_tiny_patch16_224", weights=tmp_path / "w.safetensors", **TINY_VIT)
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(src(x), dst(x))


@pytest.mark.parametrize("n_in", [17, 49, 257])
def test_projector_resamples_to_77_tokens(n_in):
    fp = GuidanceProjector(token_dim=24, cross_dim=16)
    out = fp(torch.randn(2, n_in, 24))
    assert out.shape == (2, 77, 16)
    out.sum().backward()
    assert all(p.grad is not None for p in fp.parameters())
