"""The FGM's ablations (issue: ablations): each guidance source builds, trains and round-trips a model folder."""

from __future__ import annotations

import pytest
import torch

from sodec.models import SodecModel, preset_config


def tiny_model(guidance: str) -> SodecModel:
    torch.manual_seed(0)
    config = preset_config("tiny")
    config.diffusion.guidance = guidance
    return SodecModel(config, random_bases=True)


@pytest.mark.parametrize("guidance", ["fgm", "none", "hyperprior", "prompt"])
def test_each_guidance_source_gives_tokens_and_gradients(guidance):
    model = tiny_model(guidance).train()
    x = torch.rand(2, 3, 64, 64)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    out["x_hat"].mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n.startswith("projector.") and p.requires_grad}
    if guidance == "none":
        assert grads == {}  # null tokens: nothing to learn
    else:
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_token_sources_depend_on_what_they_should():
    x = torch.rand(1, 3, 64, 64)
    for guidance, depends in (("fgm", True), ("hyperprior", True), ("prompt", False), ("none", False)):
        model = tiny_model(guidance).eval()
        w = torch.randn(1, model.config.diffusion.side_channels, 4, 4)
        a = model._guidance_tokens(x, w)
        b = model._guidance_tokens(1 - x, -w)
        assert a.shape == (1, 77, model.config.diffusion.cross_attention_dim)
        assert (not torch.equal(a, b)) == depends, guidance


def test_an_ablation_model_folder_round_trips(tmp_path, tiny_sodec_dir):
    from sodec.models.config import SodecConfig

    config = SodecConfig.from_dict({**preset_config("tiny").to_dict(), "name": "tiny-prompt"})
    config.diffusion.guidance = "prompt"
    config.diffusion.base = str(tiny_sodec_dir / "base")
    model = SodecModel(config).eval()
    model.update()
    model.save_pretrained(tmp_path / "rate-0")
    loaded = SodecModel.from_pretrained(tmp_path / "rate-0")
    assert loaded.config.diffusion.guidance == "prompt"
    assert torch.equal(loaded.projector.tokens, model.projector.tokens)  # the learned prompt is stored
    assert loaded.content_hash() == model.content_hash()
    assert loaded.decompress(model.compress(torch.rand(1, 3, 64, 64)), 64, 64).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="diffusion.guidance"):
        SodecConfig.from_dict({**preset_config("tiny").to_dict(), "diffusion": {"guidance": "text"}})
