"""Prediction type: a base whose scheduler says ``v_prediction`` (SD 2.1 768-v) trains and decodes with the v
formula; a model never runs on a base that predicts something else than it was trained for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sodec.errors import ModelError
from sodec.models import SodecModel, preset_config
from sodec.models.bases import SCHEDULER_CONFIG, base_prediction_type, load_bases, save_bases
from sodec.models.diffusion import OneStepDenoiser, alphas_cumprod
from sodec.train.config import from_dict
from sodec.train.stages import _model_config

ALPHA_BAR = alphas_cumprod()[999].item()


def write_scheduler(base: Path, prediction_type: str) -> None:
    (base / "scheduler").mkdir(exist_ok=True)
    config = {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "prediction_type": prediction_type}
    (base / SCHEDULER_CONFIG).write_text(json.dumps(config))


@pytest.fixture(scope="module")
def v_base(tmp_path_factory) -> Path:
    """A tiny base folder (random UNet, VAE, ViT) whose scheduler config says v_prediction."""
    base = tmp_path_factory.mktemp("bases") / "v-base"
    torch.manual_seed(0)
    save_bases(load_bases(preset_config("tiny").diffusion, random=True), base)
    write_scheduler(base, "v_prediction")
    return base


def test_the_base_says_what_its_unet_predicts(v_base, tmp_path):
    assert base_prediction_type(v_base) == "v_prediction"
    assert base_prediction_type(tmp_path) is None  # no scheduler config: the model's own field decides
    write_scheduler(tmp_path, "flow")
    with pytest.raises(ModelError, match="predicts 'flow'"):
        base_prediction_type(tmp_path)


def test_an_epsilon_model_on_a_v_base_is_refused_at_load(v_base):
    config = preset_config("tiny")
    config.diffusion.base = str(v_base)  # prediction_type: the default, epsilon
    with pytest.raises(ModelError, match=r"predicts 'v_prediction'.*prediction_type is 'epsilon'.*garbage"):
        SodecModel(config)


def test_training_reads_the_prediction_type_from_the_base(v_base):
    config = from_dict({"stage": "warmup", "out": "unused", "steps": 1, "data": {"train": "unused"},
                        "model": {"preset": "tiny", "base": str(v_base)}})  # fmt: skip
    model_config = _model_config(config)
    assert model_config.diffusion.prediction_type == "v_prediction"
    model = SodecModel(model_config)
    assert model.denoiser.prediction_type == "v_prediction"


def test_v_prediction_one_step_formula():
    y_t, v = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    denoiser = OneStepDenoiser(torch.nn.Identity(), ALPHA_BAR, prediction_type="v_prediction")
    denoiser.epsilon = lambda y, tokens, timestep=None: v
    a, b = ALPHA_BAR**0.5, (1 - ALPHA_BAR) ** 0.5
    assert torch.allclose(denoiser(y_t, None), a * y_t - b * v, atol=1e-6)
    # consistent with diffusers' scheduler: x₀ of the v-parameterisation
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type="v_prediction", clip_sample=False)  # fmt: skip
    sched.set_timesteps(1000)
    x0 = sched.step(v, 999, y_t).pred_original_sample
    assert torch.allclose(denoiser(y_t, None), x0, atol=1e-5)
    with pytest.raises(ValueError, match="unknown prediction type"):
        OneStepDenoiser(torch.nn.Identity(), ALPHA_BAR, prediction_type="flow")


def test_a_v_model_saves_loads_and_decodes_and_its_base_is_checked(v_base, tmp_path):
    config = preset_config("tiny", name="tiny-v")
    config.diffusion.base = str(v_base)
    config.diffusion.prediction_type = "v_prediction"
    torch.manual_seed(0)
    model = SodecModel(config).eval()
    model.update()
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["diffusion"]["prediction_type"] == "v_prediction"
    loaded = SodecModel.from_pretrained(tmp_path / "m")
    x = torch.rand(1, 3, 64, 64)
    assert loaded.decompress(loaded.compress(x), 64, 64).shape == (1, 3, 64, 64)
    write_scheduler(v_base, "epsilon")  # the base changed under the model: refused, not decoded
    try:
        with pytest.raises(ModelError, match="predicts 'epsilon'"):
            SodecModel.from_pretrained(tmp_path / "m")
    finally:
        write_scheduler(v_base, "v_prediction")
