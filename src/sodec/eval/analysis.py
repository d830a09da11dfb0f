"""Analysis of ``sodec eval`` results: means per codec and rate point, rate-distortion curves, BD table.

Pure functions of the collected rows (:class:`sodec.eval.coding.EvalState`): they give the same numbers
whether the images were coded in this process or on a Ray cluster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sodec.eval.bdrate import bd_quality, bd_rate
from sodec.eval.coding import EvalState
from sodec.eval.metrics import METRICS


def finite(v) -> bool:
    """A real number that is neither inf nor nan (``None`` and bools are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def summaries(state: EvalState) -> list[dict]:
    """Means per (codec, rate): bpp, every per-image metric, FID/KID over the group's patches."""
    import torch

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in state.records:
        groups.setdefault((r["codec"], r["rate"]), []).append(r)
    out = []
    image_metrics = list(state.suite.image)
    for (codec, rate), rows in groups.items():
        s = {
            "codec": codec,
            "family": rows[0]["family"],
            "rate": rate,
            "n_images": len(rows),
            "bytes": int(sum(r["bytes"] for r in rows)),
            "bpp": float(np.mean([r["bpp"] for r in rows])),
            "target_bpp": (float(np.mean([r["target_bpp"] for r in rows])) if rows[0]["target_bpp"] is not None
                           else None),
            "n_below_floor": sum(r["status"] == "below_floor" for r in rows),
            "encode_s": float(np.mean([r["encode_s"] for r in rows])),
            "decode_s": float(np.mean([r["decode_s"] for r in rows])),
        }
        for m in image_metrics:
            vals = [r[m] for r in rows if r.get(m) is not None]
            s[m] = float(np.mean(vals)) if vals else None
            s[m + "_n"] = len(vals)
        if state.suite.set_metrics:
            names = [r["image"] for r in rows]
            real = torch.cat([state.ref_features[n] for n in names])
            fake = torch.cat(state.fake_features[(codec, rate)])
            s["fid_patches"] = int(real.shape[0])
            s.update(state.suite.set_values(real, fake))
        out.append(s)
    out.sort(key=lambda s: (s["family"] != "sodec", s["codec"], s["bpp"]))
    return out


def curves(summary: list[dict], metric: str) -> dict[str, tuple[list[float], list[float]]]:
    """``{codec: (bpps, values)}`` of one metric, in increasing bpp, finite values only."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for s in sorted(summary, key=lambda s: s["bpp"]):
        if finite(s.get(metric)):
            bpps, vals = curves.setdefault(s["codec"], ([], []))
            bpps.append(s["bpp"])
            vals.append(s[metric])
    return curves


def bd_table(summary: list[dict], metrics: Sequence[str], anchor: str) -> list[dict]:
    """BD-rate and BD-quality of every codec against ``anchor``, per metric, with the reason where undefined."""
    rows = []
    for m in metrics:
        by_codec = curves(summary, m)
        higher = METRICS[m].higher_is_better
        for codec, (bpps, vals) in by_codec.items():
            if codec == anchor:
                continue
            row = {"metric": m, "codec": codec, "anchor": anchor, "bd_rate": None, "quality_low": None,
                   "quality_high": None, "bd_quality": None, "bpp_low": None, "bpp_high": None, "reason": None}
            if not any(s["codec"] == anchor for s in summary):
                row["reason"] = f"anchor {anchor} was not evaluated (add it to --baselines or choose --anchor)"
            elif anchor not in by_codec:
                row["reason"] = f"anchor {anchor} has no {m} values in this run"
            else:
                a_bpp, a_val = by_codec[anchor]
                r = bd_rate(a_bpp, a_val, bpps, vals, higher_is_better=higher)
                q = bd_quality(a_bpp, a_val, bpps, vals)
                row.update(bd_rate=r.value, quality_low=r.low, quality_high=r.high, bd_quality=q.value,
                           bpp_low=q.low, bpp_high=q.high, reason=r.reason or q.reason)
            rows.append(row)
    return rows

