"""Every preset builds; the paper-scale graph is checked on the meta device (no weights, no memory)."""

from __future__ import annotations

import pytest
import torch

from sodec.errors import ModelError
from sodec.models import PRESETS, SodecModel, preset_config


@pytest.fixture(scope="module")
def paper_on_meta() -> SodecModel:
    with torch.device("meta"):
        return SodecModel(preset_config("paper"), random_bases=True)


def test_paper_parameter_counts(paper_on_meta):
    m = paper_on_meta
    count = lambda module: sum(p.numel() for n, p in module.named_parameters() if "lora_" not in n)  # noqa: E731
    assert count(m.denoiser.unet) == pytest.approx(865.9e6, rel=1e-3)  # SD 2.1-base UNet
    assert count(m.latent_decoder.vae.decoder) == pytest.approx(49.5e6, rel=1e-2)
    assert count(m.guidance) == pytest.approx(630e6, rel=0.02)  # ViT-H/14 image tower
    lora = sum(p.numel() for n, p in m.denoiser.unet.named_parameters() if "lora_" in n)
    assert 10e6 < lora < 60e6  # rank 16 on attention projections and resnet convs
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"compression", "fidelity", "hyper_synthesis", "transform", "projector", "denoiser"}


@pytest.mark.parametrize("size", [(512, 512), (512, 768)])
def test_paper_scale_shapes_on_meta(paper_on_meta, size):
    h, w = size
    model, comp = paper_on_meta, paper_on_meta.compression
    with torch.device("meta"), torch.no_grad():
        y = comp.encoder(torch.empty(1, 3, h, w))
        z = comp.hyper_analysis(y)
        scales, means = comp.entropy_parameters(z)
        out = model.synthesize(y, z)
    assert y.shape == (1, 220, h // 16, w // 16)
    assert z.shape == (1, 320, h // 64, w // 64)
    assert scales.shape == means.shape == y.shape
    assert out["x_f"].shape == out["x_hat"].shape == (1, 3, h, w)
    assert out["y_t"].shape == out["y_0"].shape == (1, 4, h // 8, w // 8)
    tokens = model.projector(model.guidance(out["x_f"]))
    # where SD 2.1's text embedding would go: CLS + ViT-H/14's 16x16 patch grid, rows holding the image only
    # (the "grid" guidance layout: 512x768 is letterboxed to 149x224, 11 of the 16 rows)
    assert tokens.shape == (1, {(512, 512): 1 + 16 * 16, (512, 768): 1 + 11 * 16}[size], 1024)
    # HiFiC widths: 7x7 conv to 60, then 60 -> 120 -> 240 -> 480 -> 960, then 3x3 conv to C = 220.
    convs = [m for m in comp.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [60, 120, 240, 480, 960, 220]
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in model.fidelity.modules()) == 4


def test_missing_paper_base_names_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty Hugging Face cache
    with pytest.raises(ModelError, match="stabilityai/stable-diffusion-2-1-base.*huggingface-cli download"):
        SodecModel(preset_config("paper"))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build(name):
    config = preset_config(name)
    assert config.name == name
    with torch.device("meta"):
        n_params = sum(p.numel() for p in SodecModel(config, random_bases=True).parameters())
    assert (name == "paper") == (n_params > 1e9)


def test_unknown_preset_and_config_keys():
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
    from sodec.models import SodecConfig

    with pytest.raises(ValueError, match="unknown config keys"):
        SodecConfig.from_dict({"latent_channel": 3})
    with pytest.raises(ValueError, match="diffusion.lora_rnak"):
        SodecConfig.from_dict({"diffusion": {"lora_rnak": 3}})


def test_a_diffusion_override_changes_only_the_fields_it_names():
    config = preset_config("tiny", diffusion={"vae": {"latent_channels": 8}, "lora_rank": 3})
    tiny = preset_config("tiny")
    assert config.diffusion.vae == {**tiny.diffusion.vae, "latent_channels": 8}
    assert config.diffusion.lora_rank == 3 and config.diffusion.unet == tiny.diffusion.unet
    assert preset_config("tiny", diffusion=None).diffusion is None
    # the UNet follows the latent: a wider VAE latent is one field, and the whole graph runs with it
    model = SodecModel(config, random_bases=True)
    assert model.denoiser.unet.config.in_channels == model.denoiser.unet.config.out_channels == 8
    model.eval().update()
    x = torch.rand(1, 3, 64, 64)
    assert model.decompress(model.compress(x), 64, 64).shape == (1, 3, 64, 64)
