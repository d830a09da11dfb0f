"""Bjøntegaard deltas between two rate-distortion curves, for any quality metric.

BD-rate (Bjøntegaard, VCEG-M33, with piecewise cubic interpolation as in VCEG-AL22 / CompressAI): on each
curve, log-rate is interpolated as a function of quality with a monotone piecewise cubic Hermite
interpolant (``scipy.interpolate.PchipInterpolator``); both are integrated over the quality interval where the
curves overlap; the mean log-rate difference ``d`` gives ``BD-rate = (exp(d) - 1) · 100 %`` — the average
rate change of the test codec at equal quality (negative: the test codec needs fewer bits).

BD-quality is the dual: quality as a function of log-rate, averaged over the overlapping log-rate interval
(BD-PSNR for PSNR); it is returned in the metric's own units, ``test − anchor`` (so for a lower-is-better
metric such as LPIPS a negative value means the test codec is better).

Lower-is-better metrics (LPIPS, DISTS, FID, ...) are handled by negating the quality before interpolating,
so that quality always increases with rate; the reported overlap range is in the metric's own units.

Two points per curve are enough (the interpolant is then a straight line); the classic method used four.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BDResult:
    """A Bjøntegaard delta and the interval it was averaged over (``None`` with a reason if undefined)."""

    value: float | None  # BD-rate in %, or BD-quality in metric units
    low: float | None  # overlapping interval (quality for BD-rate, bpp for BD-quality)
    high: float | None
    reason: str | None = None


def _curve(rates: Sequence[float], quality: Sequence[float], higher_is_better: bool) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError("rates and quality values must be 1-D sequences of the same length")
    keep = np.isfinite(r) & np.isfinite(q)
    r, q = r[keep], q[keep]
    if np.any(r <= 0):
        raise ValueError("rates must be > 0 (the method works on log-rate)")
    return np.log(r), (q if higher_is_better else -q)


def _sorted_strict(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Sort by ``x``; drop exact duplicate points (e.g. two targets below a codec's floor give the same file)."""
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    keep = np.ones(len(x), bool)
    keep[1:] = (np.diff(x) != 0) | (np.diff(y) != 0)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return x, y, f"a curve has {len(x)} usable point(s); BD needs at least 2 per curve"
    if np.any(np.diff(x) <= 0):
        return x, y, f"a curve has two points with the same {what} and different values; the interpolant needs " \
            f"distinct {what} values"
    return x, y, None


def _mean_difference(xa: np.ndarray, ya: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> tuple[float, float, float]:
    from scipy.interpolate import PchipInterpolator

    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    pa, pt = PchipInterpolator(xa, ya), PchipInterpolator(xt, yt)
    area_a = pa.integrate(lo, hi)
    area_t = pt.integrate(lo, hi)
    return float((area_t - area_a) / (hi - lo)), float(lo), float(hi)


def bd_rate(anchor_rates: Sequence[float], anchor_quality: Sequence[float], test_rates: Sequence[float],
            test_quality: Sequence[float], higher_is_better: bool = True) -> BDResult:
    """Average rate difference of ``test`` vs ``anchor`` at equal quality, in percent.

    ``low``/``high``: the overlapping quality interval, in the metric's own units.
    """
    la, qa = _curve(anchor_rates, anchor_quality, higher_is_better)
    lt, qt = _curve(test_rates, test_quality, higher_is_better)
    qa, la, why_a = _sorted_strict(qa, la, "quality")
    qt, lt, why_t = _sorted_strict(qt, lt, "quality")
    if why_a or why_t:
        return BDResult(None, None, None, why_a or why_t)
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not hi > lo:
        return BDResult(None, None, None, "the curves' quality ranges do not overlap")
    d, lo, hi = _mean_difference(qa, la, qt, lt)
    if not higher_is_better:
        lo, hi = -hi, -lo
    return BDResult((math.exp(d) - 1) * 100, lo, hi)


def bd_quality(anchor_rates: Sequence[float], anchor_quality: Sequence[float], test_rates: Sequence[float],
               test_quality: Sequence[float]) -> BDResult:
    """Average quality difference ``test − anchor`` at equal rate, in the metric's units (BD-PSNR for PSNR).

    The sign is the metric's: for a lower-is-better metric a negative value means the test codec is better.

    ``low``/``high``: the overlapping rate interval, in bpp.
    """
    la, qa = _curve(anchor_rates, anchor_quality, True)
    lt, qt = _curve(test_rates, test_quality, True)
    la, qa, why_a = _sorted_strict(la, qa, "rate")
    lt, qt, why_t = _sorted_strict(lt, qt, "rate")
    if why_a or why_t:
        return BDResult(None, None, None, why_a or why_t)
    lo, hi = max(la[0], lt[0]), min(la[-1], lt[-1])
    if not hi > lo:
        return BDResult(None, None, None, "the curves' rate ranges do not overlap")
    d, lo, hi = _mean_difference(la, qa, lt, qt)
    return BDResult(d, math.exp(lo), math.exp(hi))
