"""The full SODEC model at tiny width: diffusion-path round trips, model folders, LoRA merge."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from sodec import api, container
from sodec.cli import main
from sodec.errors import ModelError
from sodec.models import SodecModel


def test_model_folder_stores_only_what_sodec_trains(tiny_sodec_dir):
    from safetensors import safe_open

    with safe_open(str(tiny_sodec_dir / "rate-0" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"compression", "fidelity", "hyper_synthesis", "transform", "projector", "denoiser"}
    assert all("lora_" in k for k in keys if k.startswith("denoiser."))
    assert not any(k.startswith(("guidance.", "latent_decoder.")) for k in keys)


def test_loaded_model_merges_lora_and_keeps_its_hash(tiny_sodec_dir, photo_rgb):
    merged = SodecModel.from_pretrained(tiny_sodec_dir / "rate-0")
    separate = SodecModel.from_pretrained(tiny_sodec_dir / "rate-0", merge_lora=False)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert merged.content_hash() == separate.content_hash()
    data = api.compress_image(separate, photo_rgb)
    assert api.compress_image(merged, photo_rgb) == data
    a = np.asarray(api.decompress_bytes(data, merged)[0]).astype(int)
    b = np.asarray(api.decompress_bytes(data, separate)[0]).astype(int)
    assert np.abs(a - b).max() <= 1  # merging only reorders float sums


def test_diffusion_and_fidelity_decoders_differ(tiny_sodec_dir, photo_rgb):
    model = api.load_model(tiny_sodec_dir)
    data = api.compress_image(model, photo_rgb)
    f = container.unpack(data)
    from sodec.models.compression import LatentStreams

    streams = LatentStreams(f.z_stream, f.y_stream, f.header.latent_check)
    diffusion = model.decompress(streams, 96, 128)
    fidelity = model.decompress(streams, 96, 128, decoder="fidelity")
    assert diffusion.shape == fidelity.shape == (1, 3, 96, 128)
    assert not torch.allclose(diffusion, fidelity)


def test_frozen_bases_are_part_of_the_identity(tiny_sodec_dir, tmp_path):
    """A file made with one base must not decode with another base: the base is hashed into the model id."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_sodec_dir, tmp_path / "fam")
    vae_file = tmp_path / "fam" / "base" / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(vae_file))
    key = sorted(state)[0]
    state[key] = state[key] + 1e-3
    save_file(state, str(vae_file))
    with pytest.raises(ModelError, match="not the ones this model was trained on"):
        SodecModel.from_pretrained(tmp_path / "fam" / "rate-0")
    # Without the recorded base hash the model loads, but its identity (and so its files) changes.
    config = json.loads((tmp_path / "fam" / "rate-0" / "config.json").read_text())
    del config["diffusion"]["base_hash"]
    (tmp_path / "fam" / "rate-0" / "config.json").write_text(json.dumps(config))
    a = SodecModel.from_pretrained(tiny_sodec_dir / "rate-0").content_hash()
    b = SodecModel.from_pretrained(tmp_path / "fam" / "rate-0").content_hash()
    assert a != b


def test_missing_base_is_a_clear_error(tiny_sodec_dir, tmp_path):
    import shutil

    shutil.copytree(tiny_sodec_dir / "rate-0", tmp_path / "rate-0")
    with pytest.raises(ModelError, match="diffusion base"):
        SodecModel.from_pretrained(tmp_path / "rate-0")


def test_training_forward_reaches_every_trainable_module():
    from sodec.models import preset_config

    torch.manual_seed(0)
    model = SodecModel(preset_config("tiny"), random_bases=True).train()
    out = model(torch.rand(1, 3, 64, 64))
    assert out["x_hat"].shape == out["x_f"].shape == (1, 3, 64, 64)
    loss = out["x_hat"].square().mean() + out["x_f"].square().mean()
    loss = loss + sum(-torch.log2(v).mean() for v in out["likelihoods"].values())
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad and "lora_A" not in name and "quantiles" not in name:
            assert p.grad is not None, name
    assert not any(p.requires_grad for p in model.guidance.parameters())
    assert not any(p.requires_grad for p in model.latent_decoder.parameters())


def test_cli_round_trip_is_identical_across_processes_and_threads(tmp_path, photo_png, tiny_sodec_dir):
    model = str(tiny_sodec_dir)
    r = run_cli("--threads", "2", "compress", str(photo_png), "-o", str(tmp_path / "p.sodec"), "--model", model)
    assert r.returncode == 0, r.stderr
    digests = set()
    for threads in (1, 2):
        out = tmp_path / f"{threads}.png"
        r = run_cli(
            "--threads", str(threads), "decompress", str(tmp_path / "p.sodec"), "-o", str(out), "--model", model
        )
        assert r.returncode == 0, r.stderr
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1
    assert main(["decompress", str(tmp_path / "p.sodec"), "-o", str(tmp_path / "f.png"), "--model", model,
                 "--decoder", "fidelity"]) == 0  # fmt: skip
    with Image.open(tmp_path / "f.png") as f, Image.open(tmp_path / "1.png") as d:
        assert f.size == d.size == (128, 96)
        assert not np.array_equal(np.asarray(f), np.asarray(d))


def test_bench_reports_every_stage_and_the_speed_up():
    from sodec import bench

    report = bench.run(preset="tiny", size=(64, 128), runs=1, warmup=0, steps=3, memory=False)
    for stage in ("entropy decoding", "fidelity decoder Da", "Hs + Ts", "backbone F + Fp", "UNet (one step)",
                  "VAE decoder Dm", "PNG write", "total decode (one step)", "total decode (3-step DDIM)",
                  "analysis E + Ha", "total encode"):  # fmt: skip
        assert f"| {stage}" in report, stage
    assert "measured speed-up" in report and "ideal" in report


def test_bench_refuses_half_precision_on_cpu():
    from sodec import bench

    with pytest.raises(SystemExit, match="only on GPU"):
        bench.run(preset="tiny", dtype="bfloat16", memory=False)


def test_gdn_transforms_train_code_exactly_and_save(tmp_path, photo_rgb):
    """``transforms: gdn`` (Ballé 2018 E and Da): trains end to end, codes a file that decodes to the encoder's
    latent, and its folder loads back with the option; hific configs keep writing the old config.json keys."""
    from sodec.models import preset_config
    from sodec.models.compression import GDNAnalysis
    from sodec.models.fidelity import GDNFidelityDecoder

    assert "transforms" not in preset_config("tiny", diffusion=None).to_dict()
    torch.manual_seed(0)
    model = SodecModel(preset_config("tiny", diffusion=None, transforms="gdn", gdn_channels=16)).train()
    assert isinstance(model.compression.encoder, GDNAnalysis) and isinstance(model.fidelity, GDNFidelityDecoder)
    out = model(torch.rand(1, 3, 64, 64))
    assert out["x_f"].shape == (1, 3, 64, 64)
    (out["x_f"].square().mean() + sum(-torch.log2(v).mean() for v in out["likelihoods"].values())).backward()
    assert all(p.grad is not None for p in model.compression.encoder.parameters())
    model.eval().update()
    model.save_pretrained(tmp_path / "gdn")  # stores P in its exact (integer) form
    assert json.loads((tmp_path / "gdn" / "config.json").read_text())["transforms"] == "gdn"
    coder = SodecModel.from_pretrained(tmp_path / "gdn")
    data = api.compress_image(coder, photo_rgb)
    image, _ = api.decompress_bytes(data, coder)
    loaded = SodecModel.from_pretrained(tmp_path / "gdn")
    again, _ = api.decompress_bytes(data, loaded)
    assert np.array_equal(image, again) and api.compress_image(loaded, photo_rgb) == data
    with pytest.raises(ValueError, match="transforms must be hific or gdn"):
        preset_config("tiny", transforms="gdn2")
