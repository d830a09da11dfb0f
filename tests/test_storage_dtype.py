"""Half-precision storage of model folders and bases (the nano size budget), and converter-named backbones."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sodec.models import SodecModel, preset_config
from sodec.models.bases import load_bases, save_bases
from sodec.models.guidance import GuidanceBackbone
from sodec.train.config import from_dict
from sodec.train.stages import SodecStage


def _fresh_tiny_model(tiny_sodec_dir, seed: int) -> SodecModel:
    """A tiny model with random weights (not the fixture's), its coder tables derived, bases from the fixture."""
    config = SodecModel.from_pretrained(tiny_sodec_dir / "rate-0", merge_lora=False).config
    config.diffusion.base = str(tiny_sodec_dir / "base")
    torch.manual_seed(seed)
    model = SodecModel(config).eval()
    model.update()
    return model


def test_float16_storage_round_trips_to_the_same_model(tmp_path, tiny_sodec_dir):
    model = _fresh_tiny_model(tiny_sodec_dir, seed=1)
    x = torch.rand(1, 3, 64, 64)
    model.save_pretrained(tmp_path / "half", dtype=torch.float16)
    with safe_open(str(tmp_path / "half" / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    parameters = {n for n, p in model.named_parameters()} & set(dtypes)
    assert parameters and all(dtypes[k] == "F16" for k in parameters)
    assert {dtypes[k] for k in set(dtypes) - parameters} >= {"I16", "I32"}  # the coder's tables stay exact
    loaded = SodecModel.from_pretrained(tmp_path / "half", merge_lora=False)
    assert loaded.content_hash() == model.content_hash()
    streams = model.compress(x)  # the saving model was rounded to what it stored
    assert streams.y_stream == loaded.compress(x).y_stream
    assert torch.equal(loaded.decompress(streams, 64, 64), model.decompress(streams, 64, 64))
    size = (tmp_path / "half" / "model.safetensors").stat().st_size
    model.save_pretrained(tmp_path / "full")
    saved = sum(p.numel() * 2 for n, p in model.named_parameters() if n in parameters)  # 2 bytes per weight
    assert abs((tmp_path / "full" / "model.safetensors").stat().st_size - size - saved) < 1024


def test_float16_bases_load_as_float32(tmp_path):
    torch.manual_seed(0)
    config = preset_config("tiny").diffusion
    bases = load_bases(config, random=True)
    save_bases(bases, tmp_path / "base", dtype=torch.float16)
    config.base = str(tmp_path / "base")
    loaded = load_bases(config).unet.state_dict()
    original = bases.unet.state_dict()
    assert all(v.dtype == torch.float32 and torch.equal(v, original[k].half().float()) for k, v in loaded.items())
    save_bases(bases, tmp_path / "no-guidance", guidance=False)
    assert not (tmp_path / "no-guidance" / "guidance.safetensors").exists()


def test_a_converter_named_backbone_is_built_from_its_package():
    backbone = GuidanceBackbone.from_timm("efficientnet_lite0", weights="efficientnet-lite0")
    from sodec.convert import efficientnet_lite0_state_dict

    reference = efficientnet_lite0_state_dict()
    state = backbone.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in reference.items())


def test_stored_form_keeps_p_as_integers_and_the_cdfs_unpadded(tmp_path, tiny_sodec_dir):
    model = _fresh_tiny_model(tiny_sodec_dir, seed=2)
    config = model.config
    before = model.trainable_state_dict()
    model.save_pretrained(tmp_path / "m")
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    assert not any(k.startswith("compression.entropy_parameters.layers.") for k in stored)
    for coder in ("entropy_bottleneck", "gaussian_conditional"):
        cdf, lengths = (stored[f"compression.{coder}.{n}"] for n in ("_quantized_cdf", "_cdf_length"))
        assert cdf.dim() == 1 and cdf.numel() == int(lengths.sum())
    assert cdf.numel() < before["compression.gaussian_conditional._quantized_cdf"].numel() / 2  # 64 scales

    loaded = SodecModel.from_pretrained(tmp_path / "m", merge_lora=False)
    after = model.trainable_state_dict()  # the saving model's P was set to its integer copy
    assert all(torch.equal(v, after[k]) for k, v in loaded.trainable_state_dict().items())
    assert all(torch.equal(before[k], after[k]) for k in before if "entropy_parameters.layers." not in k)
    p = loaded.compression.entropy_parameters
    z = torch.randn(1, config.hyper_channels, 3, 5).round()
    exact_scales, _ = p.exact(z)
    float_scales, _ = p(z)  # the rebuilt float path differs from the integer one only by fixed-point rounding
    assert (float_scales - exact_scales).abs().max() < 0.05

    legacy = tmp_path / "legacy"  # folders written before the stored form: float P and padded tables
    legacy.mkdir()
    save_file(model.trainable_state_dict(), str(legacy / "model.safetensors"))
    (legacy / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    assert SodecModel.from_pretrained(legacy, merge_lora=False).content_hash() == model.content_hash()

    stage = SodecStage(from_dict({"stage": "rd", "out": str(tmp_path / "run"), "steps": 1,
                                  "model": {"preset": "tiny", "init": str(tmp_path / "m")}}))  # fmt: skip
    initialised = stage.model.compression.entropy_parameters.state_dict()
    assert all(torch.equal(initialised[k], v) for k, v in p.state_dict().items() if k.startswith("layers."))
