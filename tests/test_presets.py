"""Every preset builds; the paper-scale graph is checked on the meta device (no weights, no memory)."""

from __future__ import annotations

import pytest
import torch

from sodec.models import PRESETS, SodecModel, preset_config


@pytest.mark.parametrize("size", [(512, 512), (512, 768)])
def test_paper_scale_shapes_on_meta(size):
    h, w = size
    with torch.device("meta"):
        model = SodecModel(preset_config("paper"))
        comp = model.compression
        y = comp.encoder(torch.empty(1, 3, h, w))
        z = comp.hyper_analysis(y)
        scales, means = comp.entropy_parameters(z)
        x_hat = model.fidelity(y)
    assert y.shape == (1, 220, h // 16, w // 16)
    assert z.shape == (1, 320, h // 64, w // 64)
    assert scales.shape == means.shape == y.shape
    assert x_hat.shape == (1, 3, h, w)
    # HiFiC widths: 7x7 conv to 60, then 60 -> 120 -> 240 -> 480 -> 960, then 3x3 conv to C = 220.
    convs = [m for m in comp.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [60, 120, 240, 480, 960, 220]
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in model.fidelity.modules()) == 4


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_differ_in_width(name):
    config = preset_config(name)
    assert config.name == name
    with torch.device("meta"):
        n_params = sum(p.numel() for p in SodecModel(config).parameters())
    assert n_params > 0
    assert (name == "paper") == (n_params > 50e6)


def test_unknown_preset_and_config_keys():
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
    from sodec.models import SodecConfig

    with pytest.raises(ValueError, match="unknown config keys"):
        SodecConfig.from_dict({"latent_channel": 3})
