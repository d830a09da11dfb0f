"""Large images in tiles: analysis (encoder) with an exact halo, synthesis (decoder) in blended tiles.

**Decoding.**  Tiles are cut from ŷ (1/16) on a grid aligned to 4 latent pixels, so that each tile's ẑ (1/64)
is an exact slice too.  Each tile is synthesised on its own; neighbouring tiles overlap by ``overlap`` latent
pixels and are cross-faded there with linear ramps (weights sum to one everywhere).  Peak memory is one
tile's activations plus the output canvas and its weight map.

**Encoding.**  E is local (convolutions and ChannelNorm, which normalises each pixel over its channels), so
:func:`analyze_tiled` computes y in non-overlapping output tiles, each from its image region grown by a halo
of ``halo`` latent pixels (16·halo image pixels, more than E's receptive-field radius): the result equals the
one-piece y up to float rounding.  The file format does not change: the streams code y, however computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

SCALE = 16  # image pixels per ŷ pixel
ALIGN = 4  # ŷ pixels per ẑ pixel


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering ``length`` with tiles of ``tile`` overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(s - s % ALIGN for s in starts))


def _window(size: int, ramp: int, fade_in: bool, fade_out: bool) -> Tensor:
    """1-D tile weights: linear ramps of ``ramp`` pixels at the edges shared with a neighbour, 1 elsewhere."""
    w = torch.ones(size)
    up = (torch.arange(ramp, dtype=torch.float32) + 0.5) / ramp
    if fade_in:
        w[:ramp] = torch.minimum(w[:ramp], up)
    if fade_out:
        w[size - ramp :] = torch.minimum(w[size - ramp :], up.flip(0))
    return w


def synthesize_tiled(
    synthesize: Callable[[Tensor, Tensor], Tensor], y_hat: Tensor, z_hat: Tensor, tile: int, overlap: int
) -> Tensor:
    """Run ``synthesize(ŷ_tile, ẑ_tile) → image tile`` over overlapping tiles and blend the results.

    ŷ ``(1,C,h,w)``, ẑ ``(1,N,h/4,w/4)``; ``tile`` and ``overlap`` in ŷ pixels, multiples of 4, with
    ``0 < overlap < tile``.  Returns ``(1,3,16h,16w)``: Σ tile·weight / Σ weight.
    """
    if tile % ALIGN or overlap % ALIGN or not 0 < overlap < tile:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {ALIGN}, 0 < overlap < tile")
    h, w = y_hat.shape[-2:]
    rows, cols = _starts(h, tile, overlap), _starts(w, tile, overlap)
    if len(rows) == 1 and len(cols) == 1:
        return synthesize(y_hat, z_hat)
    out = total = None
    ramp = overlap * SCALE
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            th, tw = min(tile, h - r), min(tile, w - c)
            zr, zc = slice(r // ALIGN, (r + th) // ALIGN), slice(c // ALIGN, (c + tw) // ALIGN)
            piece = synthesize(y_hat[..., r : r + th, c : c + tw], z_hat[..., zr, zc])
            if out is None:
                out = piece.new_zeros(1, piece.shape[1], h * SCALE, w * SCALE)
                total = piece.new_zeros(1, 1, h * SCALE, w * SCALE)
            wy = _window(th * SCALE, ramp, i > 0, i < len(rows) - 1)
            wx = _window(tw * SCALE, ramp, j > 0, j < len(cols) - 1)
            weight = (wy[:, None] * wx[None, :]).to(piece)
            region = (..., slice(r * SCALE, (r + th) * SCALE), slice(c * SCALE, (c + tw) * SCALE))
            out[region] += piece * weight
            total[region] += weight
    return out.div_(total)


def analyze_tiled(analysis: Callable[[Tensor], Tensor], x: Tensor, latent_hw: tuple[int, int], tile: int,
                  halo: int) -> Tensor:  # fmt: skip
    """E over an image in tiles: ``x`` ``(1,3,H,W)`` (uint8, or float in [0, 1]) → y ``(1,C,h,w)``.

    ``latent_hw`` = (h, w) of the padded image (16h ≥ H, 16w ≥ W); the padding is replicate padding on the
    right and bottom, as :func:`sodec.models.sodec.pad_to_multiple` does, made here by clamped indexing so
    that neither a padded nor a float copy of the whole image is ever made.  Output tiles are ``tile`` ŷ
    pixels; each is computed from its region plus ``halo`` ŷ pixels of context on every side that has some
    (none beyond the padded image's border, where E pads by reflection exactly as it does in one piece).
    """
    if tile < 1 or halo < 0:
        raise ValueError(f"tile ({tile}) must be positive and halo ({halo}) non-negative")
    height, width = x.shape[-2:]
    h, w = latent_hw
    out = None
    for r in range(0, h, tile):
        for c in range(0, w, tile):
            th, tw = min(tile, h - r), min(tile, w - c)
            r0, r1 = max(0, r - halo), min(h, r + th + halo)
            c0, c1 = max(0, c - halo), min(w, c + tw + halo)
            rows = torch.arange(r0 * SCALE, r1 * SCALE, device=x.device).clamp_(max=height - 1)
            cols = torch.arange(c0 * SCALE, c1 * SCALE, device=x.device).clamp_(max=width - 1)
            piece = x.index_select(2, rows).index_select(3, cols)
            if not piece.is_floating_point():
                piece = piece.float().div(255)
            y = analysis(piece)
            if out is None:
                out = y.new_empty(1, y.shape[1], h, w)
            out[..., r : r + th, c : c + tw] = y[..., r - r0 : r - r0 + th, c - c0 : c - c0 + tw]
            del piece, y
    return out


def tile_borders(length: int, tile: int, overlap: int) -> list[int]:
    """Where the decoder's tiles begin and end along one latent axis (ŷ pixels), image borders excluded.

    These are the lines a seam could follow: each tile's content is computed without context beyond them.
    """
    starts = _starts(length, tile, overlap)
    edges = {s for s in starts[1:]} | {min(length, s + tile) for s in starts[:-1]}
    return sorted(e for e in edges if 0 < e < length)


def border_band_mask(height: int, width: int, tile: int, overlap: int, band: int = 8) -> np.ndarray:
    """``(height, width)`` bool: image pixels within ``band`` pixels of a decoder tile border (:func:`tile_borders`).

    ``height`` × ``width`` is the image size; the tile grid is the one :func:`synthesize_tiled` uses for it
    (ŷ of the image padded to a multiple of 64).
    """
    mask = np.zeros((height, width), dtype=bool)
    h, w = -(-height // 64) * 4, -(-width // 64) * 4
    for e in tile_borders(h, tile, overlap):
        mask[max(0, e * SCALE - band) : e * SCALE + band, :] = True
    for e in tile_borders(w, tile, overlap):
        mask[:, max(0, e * SCALE - band) : e * SCALE + band] = True
    return mask


def _psnr(squared_error_sum: float, n_values: int) -> float:
    if n_values == 0:
        return float("nan")
    return float("inf") if squared_error_sum == 0 else 10 * math.log10(255.0**2 * n_values / squared_error_sum)


def seam_psnr(original: np.ndarray, decoded: np.ndarray, tile: int, overlap: int, band: int = 8) -> dict[str, float]:
    """PSNR (dB, 8-bit) of the whole image, of the band along the decoder's tile borders, and of the rest.

    ``original``, ``decoded``: ``(H, W, 3)`` uint8 arrays.  ``border`` well below ``interior`` would be a
    visible seam; ``border`` is NaN when the image was decoded in one piece (no tile borders).
    """
    original, decoded = np.asarray(original), np.asarray(decoded)
    if original.shape != decoded.shape:
        raise ValueError(f"shapes differ: {original.shape} and {decoded.shape}")
    channels = original.shape[2] if original.ndim == 3 else 1
    diff = original.astype(np.int16) - decoded.astype(np.int16)
    se = np.square(diff, dtype=np.int32)
    del diff
    if se.ndim == 3:
        se = se.sum(axis=2, dtype=np.int64)
    mask = border_band_mask(original.shape[0], original.shape[1], tile, overlap, band)
    total, in_band = int(se.sum()), int(se[mask].sum())
    n, n_band = mask.size, int(mask.sum())
    return {
        "psnr": _psnr(total, n * channels),
        "border": _psnr(in_band, n_band * channels),
        "interior": _psnr(total - in_band, (n - n_band) * channels),
        "border_fraction": n_band / n,
    }
