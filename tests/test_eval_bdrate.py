"""Bjøntegaard deltas: cases whose answer is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sodec.eval.bdrate import bd_quality, bd_rate

RATES = [0.02, 0.03, 0.05, 0.07]
MS_SSIM = [0.795, 0.828, 0.862, 0.890]  # the paper's SODEC Kodak points (DESIGN.md)
LPIPS = [0.351, 0.319, 0.272, 0.231]


def test_rates_scaled_by_080_at_equal_quality_is_minus_20_percent():
    r = bd_rate(RATES, MS_SSIM, [0.8 * x for x in RATES], MS_SSIM)
    assert r.value == pytest.approx(-20.0, abs=1e-9)
    assert (r.low, r.high) == pytest.approx((0.795, 0.890))
    worse = bd_rate(RATES, MS_SSIM, [1.25 * x for x in RATES], MS_SSIM)
    assert worse.value == pytest.approx(25.0, abs=1e-9)


def test_lower_is_better_metrics_are_negated_and_report_their_own_range():
    r = bd_rate(RATES, LPIPS, [0.8 * x for x in RATES], LPIPS, higher_is_better=False)
    assert r.value == pytest.approx(-20.0, abs=1e-9)
    assert (r.low, r.high) == pytest.approx((0.231, 0.351))
    # treating LPIPS as higher-is-better would pair the curves backwards: the interpolant is still defined
    # (a function of quality) but the flag is what makes "equal quality" mean equal LPIPS
    assert bd_rate(RATES, LPIPS, [0.8 * x for x in RATES], LPIPS, higher_is_better=True).value == pytest.approx(-20)


def test_two_point_curves_integrated_by_hand():
    # Two points per curve: PCHIP is the straight line through them.  In (quality q, ln rate):
    # anchor ln r = q on [0, 1]; test ln r = 2q - 1 on [0.5, 2].  Overlap [0.5, 1]; mean of (2q - 1) - q = q - 1
    # over it is 0.75 - 1 = -0.25, so BD-rate = e^-0.25 - 1 = -22.1199 %.
    r = bd_rate([1, math.e], [0, 1], [1, math.e**3], [0.5, 2])
    assert r.value == pytest.approx((math.exp(-0.25) - 1) * 100, abs=1e-9)
    assert r.value == pytest.approx(-22.119921692859513, abs=1e-9)
    assert (r.low, r.high) == (0.5, 1.0)


def test_curves_on_lines_are_interpolated_exactly_over_the_overlap_only():
    # anchor ln r = q at q = 0, 1, 2; test ln r = 0.5 q + 0.2 at q = -1 .. 3 (wider, cropped to [0, 2]).
    q_a = np.array([0.0, 1.0, 2.0])
    q_t = np.array([-1.0, 0.0, 1.5, 3.0])
    r = bd_rate(np.exp(q_a), q_a, np.exp(0.5 * q_t + 0.2), q_t)
    # mean over [0, 2] of (0.5q + 0.2) - q = 0.2 - 0.5·mean(q) = 0.2 - 0.5 = -0.3
    assert r.value == pytest.approx((math.exp(-0.3) - 1) * 100, abs=1e-9)
    assert (r.low, r.high) == (0.0, 2.0)


def test_bd_quality_is_bd_psnr_for_a_shifted_curve():
    psnr = [24.0, 25.5, 27.0, 28.0]
    q = bd_quality(RATES, psnr, RATES, [p + 0.5 for p in psnr])
    assert q.value == pytest.approx(0.5, abs=1e-12)
    assert (q.low, q.high) == pytest.approx((0.02, 0.07))
    # quality linear in log2(rate) with slope 2: scaling rates by 0.8 gains 2·log2(1.25) at equal rate
    psnr_lin = [30 + 2 * math.log2(r / 0.02) for r in RATES]
    q = bd_quality(RATES, psnr_lin, [0.8 * r for r in RATES], psnr_lin)
    assert q.value == pytest.approx(2 * math.log2(1.25), abs=1e-9)
    assert (q.low, q.high) == pytest.approx((0.02, 0.8 * 0.07))
    # in the metric's own sign: for LPIPS a negative BD-quality is the better codec
    assert bd_quality(RATES, LPIPS, RATES, [v - 0.01 for v in LPIPS]).value == pytest.approx(-0.01)


def test_agrees_with_the_classic_cubic_polynomial_fit_on_smooth_curves():
    """VCEG-M33's original method fits a cubic polynomial; on smooth data both interpolants agree closely."""
    rates = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    anchor = 30 + 4 * np.log(rates) - 0.2 * np.log(rates) ** 2
    test_rates = rates * 0.85
    test = 30.3 + 4 * np.log(test_rates) - 0.2 * np.log(test_rates) ** 2

    def classic(ra, qa, rt, qt):
        pa, pt = np.polyfit(qa, np.log(ra), 3), np.polyfit(qt, np.log(rt), 3)
        lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
        ia, it = np.polyint(pa), np.polyint(pt)
        d = ((np.polyval(it, hi) - np.polyval(it, lo)) - (np.polyval(ia, hi) - np.polyval(ia, lo))) / (hi - lo)
        return (math.exp(d) - 1) * 100

    ours = bd_rate(rates, anchor, test_rates, test).value
    assert -10 < ours < -3  # +0.3 dB at slopes of ~3-5 dB per e-fold of rate: about -7 %
    assert ours == pytest.approx(classic(rates, anchor, test_rates, test), abs=0.3)


def test_undefined_cases_give_a_reason():
    one = bd_rate([0.1], [30], [0.1, 0.2], [30, 31])
    assert one.value is None and "at least 2" in one.reason
    apart = bd_rate([0.1, 0.2], [20, 21], [0.1, 0.2], [30, 31])
    assert apart.value is None and "do not overlap" in apart.reason
    dup = bd_rate([0.1, 0.2], [30, 30], [0.1, 0.2], [30, 31])
    assert dup.value is None and "same quality" in dup.reason
    # the same point twice (two targets below a codec's floor: one file) counts once
    same = bd_rate([0.1, 0.1, 0.2], [30, 30, 31], [0.08, 0.16], [30, 31])
    assert same.value == pytest.approx(-20.0)
    assert bd_quality([0.1], [30], [0.1, 0.2], [30, 31]).reason
    assert bd_quality([0.1, 0.2], [30, 31], [0.3, 0.4], [30, 31]).value is None
    # non-finite points (a metric that failed on one rate) are dropped, not propagated
    ok = bd_rate([0.1, 0.2, 0.4], [30, 31, float("nan")], [0.08, 0.16], [30, 31])
    assert ok.value == pytest.approx(-20.0)
    with pytest.raises(ValueError, match="> 0"):
        bd_rate([0, 0.1], [1, 2], [0.1, 0.2], [1, 2])
