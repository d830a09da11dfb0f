"""Encode effort (``--effort N``): effort 0 is today's encode; N > 0 refines the latents, same format and decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_cli

from sodec import api, container
from sodec.errors import ModelError, SodecError
from sodec.models import refine
from sodec.models.encoder import SodecEncoder
from sodec.models.sodec import pad_to_multiple

FAST = refine.RefineSettings(iterations=12, lmbda=60.0, lr=0.05)


def _x(rgb: np.ndarray) -> torch.Tensor:
    return api._to_tensor(rgb, torch.device("cpu"))


def test_effort_0_is_byte_identical_to_the_default(tiny_model, tiny_model_dir, photo_rgb):
    data = api.compress_image(tiny_model, photo_rgb)
    assert api.compress_image(tiny_model, photo_rgb, effort=0) == data
    encoder = SodecEncoder.from_pretrained(tiny_model_dir / "rate-0")
    assert api.compress_image(encoder, photo_rgb, effort=0) == data


def test_refined_latents_decode_exactly_with_the_unchanged_decoder(tiny_model, photo_rgb):
    """Streams coded from a refined (y, z), z ≠ Ha(y): the decoder rebuilds the encoder's ŷ bit for bit."""
    h, w = photo_rgb.shape[:2]
    x = pad_to_multiple(_x(photo_rgb).float().div(255), tiny_model.config.downsampling)
    with torch.enable_grad():
        y, z = refine.refine_latents(tiny_model, x, h, w, FAST)
    assert not torch.equal(z, tiny_model.compression.hyper_analysis(y))  # z itself was refined
    streams, y_hat, z_hat = tiny_model.compression.compress_latent(y, z)
    y_dec, z_dec = tiny_model.compression.decompress(streams, tiny_model.latent_size(h, w))
    assert torch.equal(y_dec, y_hat) and torch.equal(z_dec, z_hat)


def test_effort_file_round_trip_header_and_size(tiny_model, photo_rgb, photo_png, tmp_path):
    h, w = photo_rgb.shape[:2]
    streams, _ = refine.compress_refined(tiny_model, _x(photo_rgb), 2)
    data = api.compress_image(tiny_model, photo_rgb, effort=2)
    file = container.unpack(data)
    assert (file.z_stream, file.y_stream) == (streams.z_stream, streams.y_stream)  # deterministic encode
    # decoding the file = the model's decode of those streams
    image, _ = api.decompress_bytes(data, tiny_model)
    expected = api._to_uint8(tiny_model.decompress(streams, h, w))
    assert np.array_equal(np.asarray(image), expected)
    # the header is the ordinary one: same fields, only the latent check may differ
    plain = container.unpack(api.compress_image(tiny_model, photo_rgb)).header
    for field in ("model_name", "model_hash", "rate_point", "width", "height", "color_mode"):
        assert getattr(file.header, field) == getattr(plain, field)
    # the reported size is the file's
    result = api.compress_file(photo_png, tmp_path / "a.sodec", tiny_model, effort=1)
    assert result.n_bytes == (tmp_path / "a.sodec").stat().st_size == len((tmp_path / "a.sodec").read_bytes())
    api.decompress_file(tmp_path / "a.sodec", tmp_path / "a.png", tiny_model)


def test_effort_needs_the_full_model(tiny_model_dir, photo_rgb):
    encoder = SodecEncoder.from_pretrained(tiny_model_dir / "rate-0")
    with pytest.raises(ModelError, match="effort > 0 .* load the full model"):
        api.compress_image(encoder, photo_rgb, effort=1)


@pytest.mark.parametrize("effort", [-1, 4, 1.5, True])
def test_bad_effort_values(tiny_model, photo_rgb, effort):
    with pytest.raises(SodecError, match="effort must be an integer from 0 to 3"):
        api.compress_image(tiny_model, photo_rgb, effort=effort)


def test_refinement_never_returns_a_worse_objective(tiny_model, photo_rgb, monkeypatch):
    x = _x(photo_rgb)
    h, w = photo_rgb.shape[:2]
    ordinary = tiny_model.compress(x)
    xf = pad_to_multiple(x.float().div(255), tiny_model.config.downsampling)
    y0, _ = tiny_model.compression.decompress(ordinary, tiny_model.latent_size(h, w))
    base = refine.measured_objective(tiny_model, ordinary, y0, xf, h, w, FAST.lmbda)
    streams, report = refine.compress_refined(tiny_model, x, 1, settings=FAST)
    y1, _ = tiny_model.compression.decompress(streams, tiny_model.latent_size(h, w))
    got = refine.measured_objective(tiny_model, streams, y1, xf, h, w, FAST.lmbda)
    assert report["ordinary_objective"] == pytest.approx(base)
    assert got <= base
    # a refinement that ends somewhere worse is refused: the ordinary streams, byte for byte
    monkeypatch.setattr(refine, "refine_latents", lambda model, xf, h, w, s: (y0 * 0 + 3.0, None))
    streams, report = refine.compress_refined(tiny_model, x, 1, settings=FAST)
    assert not report["refined"] and report["objective"] > report["ordinary_objective"]
    assert (streams.z_stream, streams.y_stream) == (ordinary.z_stream, ordinary.y_stream)


def test_effort_above_the_size_limit_falls_back_with_a_warning(tiny_model, photo_rgb, monkeypatch):
    monkeypatch.setattr(api, "MAX_EFFORT_PIXELS", 100)
    with pytest.warns(UserWarning, match="effort 2 not applied"):
        data = api.compress_image(tiny_model, photo_rgb, effort=2)
    assert data == api.compress_image(tiny_model, photo_rgb)


def test_effort_leaves_the_model_trainable(tiny_model, photo_rgb):
    before = {n: p.requires_grad for n, p in tiny_model.named_parameters()}
    api.compress_image(tiny_model, photo_rgb, effort=1)
    assert {n: p.requires_grad for n, p in tiny_model.named_parameters()} == before
    assert all(p.grad is None for p in tiny_model.parameters())


def test_cli_effort(tiny_model_dir, photo_png, tmp_path):
    for bad in ("7", "abc"):
        r = run_cli("compress", str(photo_png), "-o", str(tmp_path / "b.sodec"), "--model", str(tiny_model_dir),
                    "--effort", bad)
        assert r.returncode == 2
        assert r.stderr.strip().splitlines() == [f"sodec: error: --effort must be an integer from 0 to 3, got {bad!r}"]
        assert not (tmp_path / "b.sodec").exists()
    out = tmp_path / "c.sodec"
    r = run_cli("compress", str(photo_png), "-o", str(out), "--model", str(tiny_model_dir), "--effort", "1")
    assert r.returncode == 0, r.stderr
    assert f"{out.stat().st_size} bytes" in r.stdout
    r = run_cli("decompress", str(out), "-o", str(tmp_path / "c.png"), "--model", str(tiny_model_dir / "rate-0"))
    assert r.returncode == 0, r.stderr
