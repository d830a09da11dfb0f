"""Decoding large images in overlapping latent tiles, blended so that no seam shows.

Tiles are cut from ŷ (1/16) on a grid aligned to 4 latent pixels, so that each tile's ẑ (1/64) is an exact
slice too.  Each tile is synthesised on its own; neighbouring tiles overlap by ``overlap`` latent pixels and
are cross-faded there with linear ramps (weights sum to one everywhere).  Peak memory is one tile's
activations plus the output canvas and its weight map.
"""

from __future__ import annotations

from collections.abc import Callable

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
    return out / total
