"""Tiled synthesis: covers every pixel once in weight, and matches the one-piece result where it must."""

from __future__ import annotations

import pytest
import torch

from sodec.models.tiling import _starts, synthesize_tiled


def test_tiles_cover_the_latent_with_aligned_origins():
    for length in (4, 20, 64, 65 * 4, 1000):
        starts = _starts(length, 64, 8)
        assert starts[0] == 0 and all(s % 4 == 0 for s in starts)
        assert min(length, starts[-1] + 64) == length  # the last tile reaches the end
        assert all(b - a <= 64 - 8 for a, b in zip(starts, starts[1:]))  # overlaps of at least 8


def _upsample(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A pixelwise 'decoder': any correct tiling reproduces it exactly (weights are normalised)."""
    return torch.nn.functional.interpolate(y[:, :3], scale_factor=16, mode="nearest")


@pytest.mark.parametrize("hw", [(8, 12), (40, 100), (68, 36)])
def test_blending_is_exact_for_a_local_decoder(hw):
    y = torch.randn(1, 3, *hw)
    z = torch.randn(1, 2, hw[0] // 4, hw[1] // 4)
    tiled = synthesize_tiled(_upsample, y, z, tile=16, overlap=4)
    assert torch.allclose(tiled, _upsample(y, z), atol=1e-6)


def test_small_latents_are_decoded_in_one_piece():
    calls = []

    def record(y, z):
        calls.append(y.shape)
        return _upsample(y, z)

    synthesize_tiled(record, torch.randn(1, 3, 16, 16), torch.randn(1, 2, 4, 4), tile=16, overlap=4)
    assert calls == [(1, 3, 16, 16)]


def test_tiled_model_decoding_matches_in_the_tile_interiors(tiny_sodec_dir, photo_rgb):
    """The full model in tiles: same size, close to the one-piece decode (different context only near seams)."""
    from sodec import api, container
    from sodec.models.compression import LatentStreams

    model = api.load_model(tiny_sodec_dir)
    rgb = torch.from_numpy(photo_rgb).repeat(3, 3, 1).numpy()  # 288 x 384
    f = container.unpack(api.compress_image(model, rgb))
    streams = LatentStreams(f.z_stream, f.y_stream, f.header.latent_check)
    whole = model.decompress(streams, 288, 384)
    tiled = model.decompress(streams, 288, 384, tile=12, overlap=4)
    assert tiled.shape == whole.shape == (1, 3, 288, 384)
    assert torch.isfinite(tiled).all()
    assert (tiled - whole).abs().mean() < 0.1


def test_bad_tile_arguments():
    with pytest.raises(ValueError):
        synthesize_tiled(_upsample, torch.randn(1, 3, 8, 8), torch.randn(1, 2, 2, 2), tile=6, overlap=2)


def test_cli_tile_option(tmp_path, tiny_sodec_dir, photo_rgb, capsys):
    import numpy as np
    from PIL import Image

    from sodec import api
    from sodec.cli import main

    Image.fromarray(np.tile(photo_rgb, (3, 3, 1))).save(tmp_path / "big.png")  # 288 x 384
    model = str(tiny_sodec_dir)
    assert main(["compress", str(tmp_path / "big.png"), "-o", str(tmp_path / "b.sodec"), "--model", model]) == 0
    assert main(["decompress", str(tmp_path / "b.sodec"), "-o", str(tmp_path / "t.png"), "--model", model,
                 "--tile", "8"]) == 0  # fmt: skip
    expected, _ = api.decompress_bytes((tmp_path / "b.sodec").read_bytes(), model, tile=8)
    with Image.open(tmp_path / "t.png") as im:
        assert np.array_equal(np.asarray(im), np.asarray(expected))
    capsys.readouterr()
    assert main(["decompress", str(tmp_path / "b.sodec"), "-o", str(tmp_path / "u.png"), "--model", model,
                 "--tile", "6"]) == 2  # fmt: skip
    assert "tile must be" in capsys.readouterr().err
