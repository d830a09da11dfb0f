"""The encoder alone (api.load_model(..., for_encoding=True)) and the cached base hashes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sodec import api
from sodec.errors import ModelError
from sodec.models import SodecModel, bases, preset_config
from sodec.models.encoder import SodecEncoder


def test_encoder_writes_the_full_models_bytes_and_identity_without_bases(tiny_sodec_dir, photo_rgb, monkeypatch):
    folder = tiny_sodec_dir / "rate-0"
    full = SodecModel.from_pretrained(folder)
    expected = api.compress_image(full, photo_rgb)

    def no_bases(*args, **kwargs):
        raise AssertionError("the encoder loaded a base")

    monkeypatch.setattr(bases, "load_bases", no_bases)
    monkeypatch.setattr(bases, "bases_hash", no_bases)
    enc = api.load_model(folder, for_encoding=True)
    assert isinstance(enc, SodecEncoder)
    assert not any(hasattr(enc, name) for name in ("denoiser", "latent_decoder", "guidance", "fidelity"))
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        recorded = f.metadata()["sha256"]
    assert enc.content_hash() == full.content_hash() == recorded
    assert api.compress_image(enc, photo_rgb) == expected
    assert api.compress_image(enc, photo_rgb, tile=8) == api.compress_image(full, photo_rgb, tile=8)  # tiled E
    with pytest.raises(ModelError, match="cannot decode"):
        api.decompress_bytes(expected, enc)


def test_encoder_identity_of_a_float16_folder(tmp_path, tiny_sodec_dir, photo_rgb):
    """Stored in float16, held in float32 by the full model: the encoder hashes what the full model holds."""
    full = SodecModel.from_pretrained(tiny_sodec_dir / "rate-0", merge_lora=False)
    shutil.copytree(tiny_sodec_dir / "base", tmp_path / "base")
    full.save_pretrained(tmp_path / "rate-0", dtype=torch.float16)
    reloaded = SodecModel.from_pretrained(tmp_path / "rate-0")
    enc = SodecEncoder.from_pretrained(tmp_path / "rate-0")
    assert enc.content_hash() == reloaded.content_hash()
    assert api.compress_image(enc, photo_rgb) == api.compress_image(reloaded, photo_rgb)


def test_cli_compress_needs_no_bases(tmp_path, tiny_sodec_dir, photo_png):
    """`sodec compress` (one file and --jobs 2) codes with a model folder whose bases are gone."""
    shutil.copytree(tiny_sodec_dir / "rate-0", tmp_path / "family" / "rate-0")
    expected = api.compress_image(api.load_model(tiny_sodec_dir, 0), photo_png)
    r = run_cli("compress", str(photo_png), "-o", str(tmp_path / "a.sodec"), "--model", str(tmp_path / "family"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.sodec").read_bytes() == expected
    (tmp_path / "in").mkdir()
    shutil.copy(photo_png, tmp_path / "in" / "p.png")
    r = run_cli("compress", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "family"),
                "--jobs", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "p.sodec").read_bytes() == expected


def test_base_hash_cached_and_a_swapped_base_refused(tmp_path, tiny_sodec_dir, monkeypatch):
    monkeypatch.setenv("SODEC_CACHE", str(tmp_path / "cache"))
    shutil.copytree(tiny_sodec_dir, tmp_path / "m")
    calls = []
    real = bases.bases_hash
    monkeypatch.setattr(bases, "bases_hash", lambda b: calls.append(1) or real(b))
    first = SodecModel.from_pretrained(tmp_path / "m" / "rate-0").content_hash()
    assert len(calls) == 1 and bases.hash_cache_path().is_file()
    assert SodecModel.from_pretrained(tmp_path / "m" / "rate-0").content_hash() == first
    assert len(calls) == 1  # the cache: no second hash of the bases
    vae = next((tmp_path / "m" / "base" / "vae").glob("*.safetensors"))
    state = load_file(str(vae))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = state[name] + 1  # same shapes, same size: another VAE
    save_file(state, str(vae))
    with pytest.raises(ModelError, match="not the ones this model was trained on"):
        SodecModel.from_pretrained(tmp_path / "m" / "rate-0")
    assert len(calls) == 2


def test_random_bases_are_hashed_on_first_need_as_built(monkeypatch):
    from sodec.models.diffusion import OneStepDenoiser

    config = preset_config("tiny")
    calls = []
    real = bases.bases_hash
    monkeypatch.setattr(bases, "bases_hash", lambda b: calls.append(1) or real(b))
    torch.manual_seed(0)
    net = SodecModel(config, random_bases=True)
    assert calls == []  # building hashes nothing
    with monkeypatch.context() as m:  # the same bases, without LoRA: hashed as they were built
        m.setattr(OneStepDenoiser, "add_lora", lambda self, *a, **k: None)
        torch.manual_seed(0)
        plain = SodecModel(config, random_bases=True)
    expected = real(plain._random_bases)
    net._hash_random_bases()
    assert net._bases_hash == expected and len(calls) == 1
    assert np.isfinite(len(net.content_hash()))
