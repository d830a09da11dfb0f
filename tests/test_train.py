"""The training recipe on the tiny preset: every stage runs and learns, λ moves the rate, resuming is exact."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from safetensors.torch import load_file

from sodec.models import SodecModel
from sodec.train.checkpoint import list_checkpoints
from sodec.train.config import ConfigError, LossSection, from_dict, load_config
from sodec.train.data import RandomCrops, StreamSampler
from sodec.train.loop import CsvLog, read_csv_log, train
from sodec.train.losses import lmbda_at
from sodec.train.stages import build_stage


@pytest.fixture(scope="module")
def one_photo(tmp_path_factory, photo_rgb) -> Path:
    """A folder with one 64x64 photo: with 64-pixel crops and no flips every batch is the same."""
    folder = tmp_path_factory.mktemp("data") / "one"
    folder.mkdir()
    Image.fromarray(photo_rgb[16:80, 32:96]).save(folder / "a.png")
    return folder


def tiny(stage: str, out: Path, photos: Path, steps: int = 25, **sections) -> dict:
    d = {
        "stage": stage,
        "out": str(out),
        "steps": steps,
        "log_every": 1,
        "checkpoint_every": 1000,
        "model": {"preset": "tiny", "random_bases": False},
        "data": {"train": str(photos), "val": str(photos), "crop": 64, "batch_size": 2, "flip": False},
        "optim": {"lr": 2e-3, "grad_clip": 1.0},
        "loss": {"mse": 0.075 * 2**-5},
        "val": {"every": 0, "images": 1, "size": [64, 64]},
    }
    for key, value in sections.items():
        d[key] = {**d.get(key, {}), **value} if isinstance(value, dict) else value
    return d


def losses(run: Path, column: str = "loss") -> list[float]:
    with (run / "log.csv").open() as f:
        return [float(r[column]) for r in csv.DictReader(f)]


def falls(values: list[float], k: int = 5) -> bool:
    return np.mean(values[-k:]) < np.mean(values[:k])


@pytest.fixture(scope="module")
def chain(tmp_path_factory, one_photo) -> dict[str, Path]:
    """Every stage in order, each started from the previous stage's export, as the nano configs do."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    torch.manual_seed(0)
    runs["prior-vae"] = train(from_dict(tiny("prior-vae", root / "vae", one_photo, val={"every": 25})), False)
    runs["prior-unet"] = train(
        from_dict(tiny("prior-unet", root / "unet", one_photo, model={"init": str(runs["prior-vae"]),
                                                                     "random_bases": True})),
        False,
    )  # fmt: skip
    base = str(runs["prior-unet"] / "final")
    runs["rd"] = train(from_dict(tiny("rd", root / "rd", one_photo, loss={"lmbda": 0.5})), False)
    for stage, prev, loss in (
        ("warmup", "rd", {"alignment": 0.002}),
        ("anneal", "warmup", {"lmbda": 0.1, "lmbda_end": 1.0, "alignment": 0.002}),
        ("adversarial", "anneal", {"lmbda": 1.0, "adversarial": 0.15}),
    ):
        model = {"base": base, "init": str(runs[prev])}
        runs[stage] = train(from_dict(tiny(stage, root / stage, one_photo, model=model, loss=loss)), False)
    return runs


@pytest.mark.parametrize("stage", ["prior-vae", "prior-unet", "rd", "warmup", "anneal", "adversarial"])
def test_every_stage_learns_and_exports(chain, stage):
    run = chain[stage]
    assert falls(losses(run)), losses(run)
    final = run / "final"
    if stage == "prior-vae":
        assert (final / "vae" / "config.json").is_file()
    elif stage == "prior-unet":
        assert {p.name for p in final.iterdir()} >= {"unet", "vae", "guidance.safetensors", "projector.safetensors"}
    else:  # a model folder that codes and decodes
        model = SodecModel.from_pretrained(final)
        assert model.has_diffusion == (stage != "rd")
        x = torch.rand(1, 3, 64, 64)
        streams = model.compress(x)
        assert model.decompress(streams, 64, 64).shape == (1, 3, 64, 64)


def test_stage_vae_validation_writes_samples(chain):
    run = chain["prior-vae"]
    assert (run / "samples" / "step-0000025" / "a-x_hat.png").is_file()
    assert "psnr" in (run / "val.csv").read_text().splitlines()[0]


def test_a_wider_latent_starts_from_the_trained_prior(tmp_path, chain, one_photo):
    """Stage 0a widens the trained VAE's latent; stage 0b warm-starts the UNet and projector from the old base."""
    wide = {"overrides": {"diffusion": {"vae": {"latent_channels": 8}}}}
    vae = train(from_dict(tiny("prior-vae", tmp_path / "vae8", one_photo, steps=1,
                               model={**wide, "init": str(chain["prior-vae"])})), False)  # fmt: skip
    old_base = chain["prior-unet"] / "final"
    model = {**wide, "init": [str(old_base), str(vae)], "random_bases": True}
    unet = build_stage(from_dict(tiny("prior-unet", tmp_path / "unet8", one_photo, model=model)))
    assert unet.vae.config.latent_channels == 8 and unet.unet.config.in_channels == 8
    old = load_file(str(old_base / "unet" / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(unet.unet.conv_in.weight[:, :4], old["conv_in.weight"].float())
    assert not unet.unet.conv_in.weight[:, 4:].any()
    projector = load_file(str(old_base / "projector.safetensors"))
    assert all(torch.equal(v.float(), unet.projector.state_dict()[k]) for k, v in projector.items())


def test_a_deeper_dm_trains_on_the_frozen_encoders_latents(tmp_path, chain, one_photo):
    """Stage 0a with more resnets per block and ``train_vae_encoder: false``: the encoder, quant_conv and the
    scaling factor stay the init's (so a UNet trained on its latents still fits), the new resnets start as
    identities and Dm trains."""
    deep = {"overrides": {"diffusion": {"vae": {"layers_per_block": 2}}}, "init": str(chain["prior-vae"]),
            "train_vae_encoder": False}  # fmt: skip
    run = train(from_dict(tiny("prior-vae", tmp_path / "deep", one_photo, steps=3, model=deep)), False)
    old_folder, new_folder = chain["prior-vae"] / "final" / "vae", run / "final" / "vae"
    old = load_file(str(old_folder / "diffusion_pytorch_model.safetensors"))
    new = load_file(str(new_folder / "diffusion_pytorch_model.safetensors"))
    frozen = [k for k in old if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(old[k].float(), new[k].float()) for k in frozen)
    assert not new["encoder.down_blocks.0.resnets.1.conv2.weight"].any()  # a frozen identity
    assert new["decoder.up_blocks.0.resnets.2.conv2.weight"].any()  # an identity that trained
    assert any(not torch.equal(old[k].float(), new[k].float()) for k in old if k.startswith("decoder."))
    config = [json.loads((f / "config.json").read_text()) for f in (old_folder, new_folder)]
    assert config[1]["layers_per_block"] == 2 and config[1]["scaling_factor"] == config[0]["scaling_factor"]
    with pytest.raises(ConfigError, match="applies to stage prior-vae"):
        from_dict(tiny("prior-unet", tmp_path / "x", one_photo, model={"train_vae_encoder": False}))


def test_warmup_keeps_the_compression_module_frozen(chain):
    before = load_file(str(chain["rd"] / "final" / "model.safetensors"))
    after = load_file(str(chain["warmup"] / "final" / "model.safetensors"))
    encoder = [k for k in before if k.startswith("compression.encoder.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    fidelity = [k for k in before if k.startswith("fidelity.")]
    assert any(not torch.equal(before[k], after[k]) for k in fidelity)  # Da trains in stage 2


def test_train_base_trains_unet_and_dm_and_exports_the_base_it_decodes_with(tmp_path, chain, one_photo):
    """nano's ``model.train_base``: the UNet and the VAE decoder train; final/base holds them (LoRA folded in)."""
    old_base = chain["prior-unet"] / "final"
    model = {"base": str(old_base), "init": str(chain["rd"]), "train_base": True}
    run = train(from_dict(tiny("warmup", tmp_path / "warmup", one_photo, model=model, loss={"alignment": 0.002})),
                False)  # fmt: skip
    assert falls(losses(run))
    final = run / "final"

    def weights(base: Path, part: str) -> dict[str, torch.Tensor]:
        return load_file(str(base / part / "diffusion_pytorch_model.safetensors"))

    old_unet, new_unet = weights(old_base, "unet"), weights(final / "base", "unet")
    assert set(old_unet) == set(new_unet)  # a plain UNet: no adapter tensors in the base
    assert sum(not torch.equal(old_unet[k], new_unet[k]) for k in old_unet) > len(old_unet) // 2
    old_vae, new_vae = weights(old_base, "vae"), weights(final / "base", "vae")
    assert all(torch.equal(old_vae[k], new_vae[k].to(old_vae[k].dtype)) for k in old_vae if k.startswith("encoder."))
    assert any(not torch.equal(old_vae[k], new_vae[k]) for k in old_vae if k.startswith("decoder."))
    # the model folder names its own base and loads with it (the base hash is checked at load)
    exported = SodecModel.from_pretrained(final)
    assert exported.config.diffusion.base == "./base"
    assert SodecModel.from_pretrained(chain["warmup"] / "final").content_hash() != exported.content_hash()
    # the next stage adds its LoRA on the trained base
    anneal = train(from_dict(tiny("anneal", tmp_path / "anneal", one_photo, steps=5,
                                  model={"base": str(final / "base"), "init": str(run)}, loss={"lmbda": 0.1})),
                   False)  # fmt: skip
    model = SodecModel.from_pretrained(anneal / "final")
    assert model.config.diffusion.base == str(final / "base")
    assert model.decompress(model.compress(torch.rand(1, 3, 64, 64)), 64, 64).shape == (1, 3, 64, 64)


def test_anneal_raises_lambda_along_the_schedule(chain):
    with (chain["anneal"] / "log.csv").open() as f:
        lmbdas = [float(r["lmbda"]) for r in csv.DictReader(f)]
    assert lmbdas[0] == pytest.approx(0.1) and lmbdas == sorted(lmbdas) and lmbdas[-1] > 0.8


def test_a_higher_rate_weight_gives_a_lower_rate(tmp_path, one_photo):
    bpp = {}
    for lmbda in (0.0, 20.0):
        torch.manual_seed(0)
        run = train(from_dict(tiny("rd", tmp_path / str(lmbda), one_photo, steps=40, loss={"lmbda": lmbda})), False)
        bpp[lmbda] = np.mean(losses(run, "bpp_estimate")[-5:])
    assert bpp[20.0] < 0.7 * bpp[0.0], bpp


def test_the_logged_rate_is_named_an_estimate(tmp_path, one_photo):
    """The training log's rate comes from likelihoods, not from a file's bytes: its columns say so."""
    run = train(from_dict(tiny("rd", tmp_path / "rd", one_photo, steps=2, val={"every": 2})), False)
    for name in ("log.csv", "val.csv"):
        with (run / name).open() as f:
            header = next(csv.reader(f))
        assert "bpp_estimate" in header and "bpp" not in header, (name, header)


def test_logs_with_the_old_bpp_column_still_read_and_resume(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss,bpp,seconds\n10,1.5,0.25,3.0\n")  # written before the rename
    CsvLog(log).write({"step": 20, "loss": 1.25, "bpp_estimate": 0.125, "seconds": 6.0})  # a resumed run
    assert log.read_text().splitlines() == ["step,loss,bpp,seconds", "10,1.5,0.25,3.0", "20,1.25,0.125,6"]
    assert [r["bpp_estimate"] for r in read_csv_log(log)] == ["0.25", "0.125"]

    import importlib.util

    spec = importlib.util.spec_from_file_location("plot_curves", Path(__file__).parents[1] / "scripts/plot_curves.py")
    plot_curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_curves)
    (tmp_path / "val.csv").write_text("step,image,bpp,psnr\n20,a.png,0.5,20\n20,mean,0.25,21.5\n")
    rows = plot_curves.curve(tmp_path)
    assert rows == [{"step": 20.0, "bpp_estimate": 0.25, "psnr": 21.5, "hours": pytest.approx(6.0 / 3600)}]
    out = tmp_path / "curves.png"
    assert plot_curves.main([str(tmp_path), "--metrics", "bpp,psnr", "--out", str(out)]) == 0  # old name asked for
    assert out.stat().st_size > 0


def test_prior_lr_scale_speeds_up_only_the_factorized_density(tmp_path, one_photo):
    def weights(name: str, lr: float, scale: float) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        optim = {"lr": lr, "prior_lr_scale": scale}
        d = tiny("rd", tmp_path / name, one_photo, steps=8, loss={"lmbda": 5.0}, optim=optim)
        return load_file(str(train(from_dict(d), False) / "final" / "model.safetensors"))

    start, plain, scaled = weights("start", 0.0, 1.0), weights("plain", 1e-3, 1.0), weights("scaled", 1e-3, 20.0)

    def moved(w: dict[str, torch.Tensor], prefix: str) -> float:
        keys = [k for k in w if k.startswith(prefix) and w[k].is_floating_point() and "quantiles" not in k]
        assert keys
        return float(sum((w[k] - start[k]).abs().sum() for k in keys) / sum(start[k].numel() for k in keys))

    density = "compression.entropy_bottleneck.matrices"
    assert moved(scaled, density) > 8 * moved(plain, density) > 0
    encoder = "compression.encoder."
    assert 0.5 < moved(scaled, encoder) / moved(plain, encoder) < 2


def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path, chain, one_photo):
    model = {"base": str(chain["prior-unet"] / "final"), "init": str(chain["warmup"])}
    loss = {"lmbda": 0.1, "lmbda_end": 1.0, "alignment": 0.002, "adversarial": 0.15}
    common = dict(steps=6, model=model, loss=loss, checkpoint_every=2, optim={"prior_lr_scale": 5.0})
    train(from_dict(tiny("adversarial", tmp_path / "whole", one_photo, **common)), False)
    half = tiny("adversarial", tmp_path / "split", one_photo, **common)
    train(from_dict(half), False, stop_at=3)  # interrupted after step 3 (checkpoints at 2 and 3)
    assert [p.name for p in list_checkpoints(tmp_path / "split" / "checkpoints")] == ["step-0000002", "step-0000003"]
    assert not (tmp_path / "split" / "final").exists()
    train(from_dict(half), False)
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "step-0000006" / "state.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-0000006" / "state.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("disc/") or "/disc." in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [[row[:-1] for row in csv.reader((tmp_path / run / "log.csv").open())] for run in ("whole", "split")]
    assert logs[0] == logs[1] and len(logs[0]) == 7  # header + 6 steps, same losses; only "seconds" differ


def test_lambda_schedules():
    exp = LossSection(lmbda=1.0, lmbda_end=16.0, lmbda_shape="exp", lmbda_start_step=10, lmbda_steps=100)
    assert lmbda_at(exp, 0, 200) == 1.0 and lmbda_at(exp, 60, 200) == pytest.approx(4.0)
    assert lmbda_at(exp, 110, 200) == pytest.approx(16.0) and lmbda_at(exp, 500, 200) == pytest.approx(16.0)
    step = LossSection(lmbda=1.0, lmbda_end=8.0, lmbda_shape="step", lmbda_levels=4, lmbda_steps=100)
    assert [lmbda_at(step, s, 100) for s in (0, 30, 60, 99)] == pytest.approx([1.0, 2.0, 4.0, 8.0])
    assert lmbda_at(LossSection(lmbda=2.0), 50, 100) == 2.0


def test_crops_are_a_pure_function_of_their_position(tmp_path, photo_rgb):
    Image.fromarray(photo_rgb).save(tmp_path / "big.png")  # 128x96
    Image.fromarray(photo_rgb[:40, :40]).save(tmp_path / "small.png")  # would need upscaling: left out
    data = RandomCrops(tmp_path, crop=64, min_scale=0.5, seed=3)
    assert len(data.photos) == 1
    assert torch.equal(data[17], RandomCrops(tmp_path, crop=64, min_scale=0.5, seed=3)[17])
    assert not torch.equal(data[17], data[18]) and data[5].shape == (3, 64, 64)
    sampler = iter(StreamSampler(start=10, rank=1, world=4))
    assert [next(sampler) for _ in range(3)] == [11, 15, 19]


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: rd\nout: x\nsteps: 1\nloss: {lmbda: 1, lambda: 2}\n")
    r = run_cli("train", str(bad))
    assert r.returncode == 2 and r.stderr.strip() == "sodec: error: unknown config keys: ['loss.lambda']"
    with pytest.raises(ConfigError, match="unknown stage"):
        from_dict({"stage": "stage9", "out": "x", "steps": 1})
    with pytest.raises(ConfigError, match="train_base applies to stages warmup"):
        from_dict({"stage": "rd", "out": "x", "steps": 1, "model": {"train_base": True}})


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-4`` as a string; json.dumps writes 5e-05 like that (the ablation runner)."""
    path = tmp_path / "c.yaml"
    path.write_text("stage: rd\nout: x\nsteps: 1\noptim: {lr: 1e-4}\n")
    config = load_config(path, ["optim.lr_end=5e-05", "loss.target_bpp=2e-2"])
    assert (config.optim.lr, config.optim.lr_end, config.loss.target_bpp) == (1e-4, 5e-5, 0.02)
    with pytest.raises(ConfigError, match=r"optim.lr must be a number \(got 'fast'\)"):
        load_config(path, ["optim.lr=fast"])


def test_shipped_configs_validate():
    configs = [
        p
        for p in sorted(Path(__file__).parents[1].glob("configs/**/*.yaml"))
        if not p.name.startswith(("_", "ablation-"))
    ]
    assert len(configs) >= 10
    for path in configs:
        load_config(path)


def test_ms_ssim_term(one_photo):
    config = from_dict(tiny("rd", Path("unused"), one_photo, data={"crop": 192}, loss={"ms_ssim": 1.0}))
    from sodec.train.stages import build_stage

    stage = build_stage(config)
    x = torch.rand(1, 3, 192, 192)
    x_hat = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).requires_grad_()
    term = stage.distortion(x, x_hat)["ms_ssim"]
    term.backward()
    assert 0 < term.item() < 1 and x_hat.grad.abs().sum() > 0
    assert stage.distortion(x, x)["ms_ssim"].item() == pytest.approx(0, abs=1e-5)
    with pytest.raises(ConfigError, match="crop > 160"):
        from_dict(tiny("rd", Path("unused"), one_photo, loss={"ms_ssim": 1.0}))


def test_lowpass_term_sees_a_colour_cast_but_not_texture_within_its_blocks():
    from sodec.train.stages import Stage

    stage = Stage(from_dict({"stage": "rd", "out": "x", "steps": 1, "data": {"crop": 64},
                             "loss": {"mse": 0.0, "lowpass_mse": 1.0, "lowpass_size": 8}}))  # fmt: skip
    x = torch.rand(1, 3, 64, 64)
    blocks = x.unfold(2, 8, 8).unfold(3, 8, 8)  # (1, 3, 8, 8, 8, 8): each 8x8 block's pixels
    shuffled = blocks.flip(-1).flip(-2).permute(0, 1, 2, 4, 3, 5).reshape(1, 3, 64, 64)  # same block means
    assert stage.distortion(x, shuffled)["lowpass"] < 1e-6 < float(((shuffled - x) ** 2).mean())
    cast = stage.distortion(x, x + 4 / 255)["lowpass"]  # +4 levels everywhere: MSE of the means is 16
    assert float(cast) == pytest.approx(16.0, rel=1e-3)
    with pytest.raises(ConfigError, match="lowpass_size must divide"):
        from_dict(
            {
                "stage": "rd",
                "out": "x",
                "steps": 1,
                "data": {"crop": 64},
                "loss": {"lowpass_mse": 1.0, "lowpass_size": 24},
            }
        )
