"""Large images: the tiled encoder (exact halo), the tiled integer P, and the seam measure of the benchmark."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sodec import api, container
from sodec.models.compression import LatentStreams
from sodec.models.sodec import pad_to_multiple
from sodec.models.tiling import analyze_tiled, border_band_mask, seam_psnr, tile_borders


@pytest.fixture(scope="module")
def big_rgb(photo_rgb) -> np.ndarray:
    """A 200 x 300 photo (not a multiple of 64: the padding is exercised): ŷ is 16 x 20."""
    return np.tile(photo_rgb, (3, 3, 1))[:200, :300].copy()


def _x(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def test_tiled_analysis_equals_the_one_piece_analysis(tiny_model, big_rgb):
    model = tiny_model
    x = _x(big_rgb)
    latent_hw = model.latent_size(*big_rgb.shape[:2])
    with torch.no_grad():
        whole = model.compression.encoder(pad_to_multiple(x.float().div(255), 64))
        for tile, halo in [(4, 4), (8, 3), (6, 4)]:
            tiled = analyze_tiled(model.compression.encoder, x, latent_hw, tile, halo)
            assert tiled.shape == whole.shape
            assert (tiled - whole).abs().max() < 1e-5, (tile, halo)
        # Without enough context the tile borders show: the halo is what makes it exact.
        no_halo = analyze_tiled(model.compression.encoder, x, latent_hw, 4, 0)
        assert (no_halo - whole).abs().max() > 1e-3


def test_tiled_encoding_decodes_exactly(tiny_model, big_rgb):
    """Any tiling gives streams that decode exactly (the latent check passes) to the same image size."""
    untiled = api.compress_image(tiny_model, big_rgb, tile=64)
    tiled = api.compress_image(tiny_model, big_rgb, tile=8)
    for data in (untiled, tiled):
        image, header = api.decompress_bytes(data, tiny_model, tile=8)
        assert image.size == (300, 200) and (header.width, header.height) == (300, 200)
    # The halo makes y equal up to float rounding, so the files are (here) the same bytes.
    assert tiled == untiled


def test_uint8_and_float_inputs_code_the_same(tiny_model, photo_rgb):
    """Small images keep the one-piece path: a uint8 tensor is converted exactly as before."""
    x = _x(photo_rgb)
    assert tiny_model.compress(x) == tiny_model.compress(x.float().div(255))
    assert tiny_model.compress(x, tile=None) == tiny_model.compress(x)


def test_tiled_integer_p_is_identical(tiny_model):
    p = tiny_model.compression.entropy_parameters
    torch.manual_seed(0)
    z = torch.round(torch.randn(1, p.layers[0].in_channels, 13, 22) * 3)
    scales, means = p.exact(z, tile=64)  # one piece
    for tile, halo in [(4, 2), (5, 3), (8, 2)]:
        s, m = p.exact(z, tile=tile, halo=halo)
        assert torch.equal(s, scales) and torch.equal(m, means), (tile, halo)


def test_tiled_decode_of_a_tiled_encode(tiny_model, big_rgb):
    data = api.compress_image(tiny_model, big_rgb, tile=8)
    f = container.unpack(data)
    streams = LatentStreams(f.z_stream, f.y_stream, f.header.latent_check)
    whole = tiny_model.decompress(streams, 200, 300, tile=64)
    tiled = tiny_model.decompress(streams, 200, 300, tile=8, overlap=4)
    assert tiled.shape == whole.shape == (1, 3, 200, 300)
    assert (tiled - whole).abs().mean() < 0.05


def test_tile_borders_and_band_mask():
    # ŷ of 136 (2160 px padded to 2176) in tiles of 64 overlapping by 8: tiles 0-64, 56-120, 72-136.
    assert tile_borders(136, 64, 8) == [56, 64, 72, 120]
    assert tile_borders(64, 64, 8) == []  # one tile: no border
    mask = border_band_mask(2160, 1000, 64, 8, band=8)
    rows = np.flatnonzero(mask.any(axis=1)).tolist()
    assert rows == [r for e in (56, 64, 72, 120) for r in range(e * 16 - 8, e * 16 + 8)]
    assert not mask.all(axis=0).any()  # 1000 px wide: ŷ 64 wide, no vertical border
    assert not border_band_mask(1000, 1000, 64, 8).any()


def test_seam_psnr_on_a_synthetic_seam():
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (2160, 700, 3), dtype=np.uint8)  # borders at ŷ rows 56, 64, 72, 120
    decoded = original.copy()
    decoded[56 * 16 - 8 : 56 * 16 + 8] ^= 4  # an error of 4 levels exactly on the band of the first border
    r = seam_psnr(original, decoded, 64, 8)
    band_pixels = int(border_band_mask(2160, 700, 64, 8).sum())
    mse_band = 16 * 16 * 700 / band_pixels  # the damaged rows are 16 of the band's rows
    assert r["border"] == pytest.approx(10 * math.log10(255**2 / mse_band))
    assert r["interior"] == math.inf and r["border"] < r["psnr"] < math.inf
    assert r["border_fraction"] == pytest.approx(band_pixels / (2160 * 700))
    clean = seam_psnr(original, original, 64, 8)
    assert clean["border"] == clean["interior"] == math.inf
    assert math.isnan(seam_psnr(original[:900], original[:900], 64, 8)["border"])  # one tile: no border
