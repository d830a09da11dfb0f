"""``sodec eval``: compress a folder of images with SODEC and classical baselines, measure, plot and report.

Every point is a real file: SODEC's ``.sodec`` files and the baselines' encoded files are written under
``RUN_DIR/files/`` and their bpp is ``8·bytes / (W·H)`` of the (preprocessed) reference.  Reconstructions are
written as PNG under ``RUN_DIR/recon/`` and every metric is computed on them.  Outputs:

- ``results.json``: everything (run metadata, per-image rows, per-codec means, BD table, notes);
- ``results.csv``: one row per image × codec × rate point;
- ``rd.png``: one rate-distortion panel per metric;
- ``crops/``: side-by-side crops at matched bpp;
- ``report.md``: the tables, the plot and the crops, with the protocol stated.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sodec import __version__
from sodec.errors import SodecError
from sodec.eval import baselines as bl
from sodec.eval.bdrate import bd_quality, bd_rate
from sodec.eval.metrics import METRICS, MetricSuite, parse_metrics

# SODEC on Kodak, read off the paper's Fig. 4 (DESIGN.md): bpp → MS-SSIM / LPIPS-VGG / DISTS.
PAPER_KODAK = {
    "bpp": [0.020, 0.032, 0.054, 0.069],
    "ms_ssim": [0.795, 0.828, 0.862, 0.890],
    "lpips_vgg": [0.351, 0.319, 0.272, 0.231],
    "dists": [0.133, 0.124, 0.103, 0.091],
}
FILE_SUFFIX = {"jpeg": ".jpg", "webp": ".webp", "avif": ".avif", "heic": ".heic", "jxl": ".jxl", "j2k": ".j2k"}
CROP = 256
COLORS = {"sodec-diffusion": "#d62728", "sodec-fidelity": "#ff7f0e", "heic": "#1f77b4", "avif": "#9467bd",
          "webp": "#2ca02c", "jpeg": "#8c564b", "jxl": "#17becf", "j2k": "#7f7f7f"}


# ---------------------------------------------------------------------------------------------- settings


@dataclass
class EvalConfig:
    data: Path
    out: Path
    model: str | None = "nano"  # None: baselines only
    rates: list[int] | None = None  # None: every rate point of the model family
    decoder: str = "auto"  # auto · fidelity · both
    baselines: tuple[str, ...] = bl.BASELINES
    targets: list[float | str] | None = None  # floats and/or "match"; None: ["match"]
    preprocess: str = "none"
    metrics: tuple[str, ...] = ()
    limit: int | None = None
    anchor: str = "heic"
    log_bpp: bool = False
    crops: int = 4
    paper_points: bool = False
    device: str = "cpu"
    force: bool = False
    quiet: bool = False
    command: str = ""


def parse_rates(spec: str | None) -> list[int] | None:
    if spec is None or spec.strip() in ("", "all"):
        return None
    try:
        rates = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise SodecError(f"--rates: expected comma-separated integers, got {spec!r}") from None
    if not rates or any(r < 0 for r in rates):
        raise SodecError(f"--rates: expected rate points >= 0, got {spec!r}")
    return sorted(set(rates))


def parse_targets(spec: str | None) -> list[float | str] | None:
    """``"0.02,0.05"`` → [0.02, 0.05]; the word ``match`` stands for "each SODEC file's bpp, per image"."""
    if spec is None or not spec.strip():
        return None
    out: list[float | str] = []
    for s in spec.split(","):
        s = s.strip()
        if s == "match":
            out.append("match")
            continue
        try:
            v = float(s)
        except ValueError:
            raise SodecError(f"--targets: {s!r} is neither a bpp nor 'match'") from None
        if not (v > 0 and math.isfinite(v)):
            raise SodecError(f"--targets: bpp must be > 0, got {s}")
        out.append(v)
    return out


@dataclass(frozen=True)
class Preprocess:
    """How each dataset image is turned into the reference that every codec codes and is measured against."""

    kind: str  # none · center-crop · resize64 · crop64
    width: int = 0
    height: int = 0

    @classmethod
    def parse(cls, spec: str) -> Preprocess:
        spec = spec.strip()
        if spec in ("none", "resize64", "crop64"):
            return cls(spec)
        if spec.startswith("center-crop:"):
            try:
                w, h = (int(v) for v in spec.split(":", 1)[1].lower().split("x"))
            except ValueError:
                raise SodecError(f"--preprocess: expected center-crop:WxH, got {spec!r}") from None
            if w < 1 or h < 1:
                raise SodecError(f"--preprocess: crop size must be positive, got {spec!r}")
            return cls("center-crop", w, h)
        raise SodecError(f"--preprocess: expected none, center-crop:WxH, resize64 or crop64, got {spec!r}")

    def describe(self) -> str:
        return {
            "none": "none: each image is coded at its own size, after sodec's colour policy (RGB; gray replicated "
            "to RGB, alpha dropped; EXIF orientation applied)",
            "center-crop": f"center-crop:{self.width}x{self.height}: the central {self.width}x{self.height} "
            f"region of each image (images smaller than that in either side are skipped, not upscaled)",
            "resize64": "resize64: each side Lanczos-resized to the nearest multiple of 64 (at least 64)",
            "crop64": "crop64: each side centre-cropped down to a multiple of 64 (at least 64)",
        }[self.kind]

    def apply(self, rgb: np.ndarray) -> np.ndarray | None:
        """The reference image, or ``None`` if this image cannot be used (too small for the crop)."""
        h, w = rgb.shape[:2]
        if self.kind == "none":
            return rgb
        if self.kind == "center-crop":
            if w < self.width or h < self.height:
                return None
            top, left = (h - self.height) // 2, (w - self.width) // 2
            return np.ascontiguousarray(rgb[top : top + self.height, left : left + self.width])
        if self.kind == "resize64":
            size = (max(64, round(w / 64) * 64), max(64, round(h / 64) * 64))
            if size == (w, h):
                return rgb
            return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
        nw, nh = max(64, w // 64 * 64), max(64, h // 64 * 64)
        if nw > w or nh > h:
            return None
        top, left = (h - nh) // 2, (w - nw) // 2
        return np.ascontiguousarray(rgb[top : top + nh, left : left + nw])


# -------------------------------------------------------------------------------------------------- run


@dataclass
class _Image:
    name: str  # unique stem used for output files
    source: Path
    rgb: np.ndarray

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


@dataclass
class _State:
    cfg: EvalConfig
    suite: MetricSuite | None
    images: list[_Image] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ref_features: dict = field(default_factory=dict)  # image name -> Tensor
    fake_features: dict = field(default_factory=dict)  # (codec, rate) -> list[Tensor]
    sodec_info: dict = field(default_factory=dict)
    coding_s: dict = field(default_factory=lambda: {"sodec": 0.0, "baselines": 0.0, "metrics": 0.0})


def _list_images(folder: Path, limit: int | None) -> list[Path]:
    from sodec.imageio import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise SodecError(f"--data {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SodecError(f"--data {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files[:limit] if limit else files


def _load_images(state: _State, pre: Preprocess) -> None:
    from sodec.imageio import load_image

    used: set[str] = set()
    for path in _list_images(state.cfg.data, state.cfg.limit):
        rgb, _mode = load_image(path)
        ref = pre.apply(rgb)
        if ref is None:
            state.skipped_images.append(f"{path.name} ({rgb.shape[1]}x{rgb.shape[0]}): smaller than the crop")
            continue
        name = path.stem if path.stem not in used else f"{path.stem}_{path.suffix.lstrip('.')}"
        used.add(name)
        state.images.append(_Image(name, path, ref))
    if not state.images:
        raise SodecError("no usable image after preprocessing: " + "; ".join(state.skipped_images))


def _save_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, compress_level=1)


def _measure(state: _State, image: _Image, decoded: np.ndarray, row: dict) -> None:
    t0 = time.perf_counter()
    row.update(state.suite.per_image(image.rgb, decoded, label=image.name, ref_key=image.name))
    if state.suite.set_metrics:
        feats = state.suite.patch_features(decoded)
        state.fake_features.setdefault((row["codec"], row["rate"]), []).append(feats)
        row["fid_patches"] = int(feats.shape[0])
    state.coding_s["metrics"] += time.perf_counter() - t0


def _rel(state: _State, path: Path) -> str:
    return path.relative_to(state.cfg.out).as_posix()


def _sodec_models(cfg: EvalConfig) -> list:
    """``[(rate label, model)]`` for the requested rate points."""
    from sodec import api
    from sodec.models.config import CONFIG_NAME

    path = Path(cfg.model)
    family = path if path.is_dir() else api.bundled_models().get(cfg.model)
    if family is None:
        api.resolve_model_folder(cfg.model)  # raises the standard "neither a folder nor bundled" error
    if (family / CONFIG_NAME).is_file():
        model = api.load_model(family, None, cfg.device)
        if cfg.rates and cfg.rates != [model.config.rate_point]:
            raise SodecError(f"{family} is a single model (rate point {model.config.rate_point}); --rates "
                             f"{','.join(map(str, cfg.rates))} does not apply")
        return [(f"r{model.config.rate_point}", model)]
    available = sorted(int(p.name[5:]) for p in family.glob("rate-*") if p.name[5:].isdigit())
    rates = cfg.rates if cfg.rates is not None else available
    missing = [r for r in rates if r not in available]
    if missing:
        raise SodecError(f"model {cfg.model!r} has no rate point {','.join(map(str, missing))} (available: "
                         f"{','.join(map(str, available))})")
    return [(f"r{r}", api.load_model(cfg.model, r, cfg.device)) for r in rates]


def _decoders(state: _State, label: str, model) -> list[str]:
    cfg = state.cfg
    has_diffusion = model.has_diffusion
    if cfg.decoder == "both":
        decoders = ["diffusion", "fidelity"] if has_diffusion else ["fidelity"]
        if not has_diffusion:
            state.notes.append(f"sodec {model.config.name} {label}: the model has no diffusion decoder, so "
                               "--decoder both gives the fidelity decoder only")
    elif cfg.decoder == "auto":
        decoders = ["diffusion" if has_diffusion else "fidelity"]
    elif cfg.decoder == "diffusion" and not has_diffusion:
        raise SodecError(f"model {model.config.name!r} {label} has no diffusion decoder (use --decoder fidelity)")
    else:
        decoders = [cfg.decoder]
    state.sodec_info[label] = {
        "model": model.config.name,
        "rate_point": model.config.rate_point,
        "hash": model.content_hash()[:16],
        "decoders": decoders,
        "has_diffusion": has_diffusion,
    }
    return decoders


def _run_sodec(state: _State, image: _Image, models: list) -> None:
    from sodec import api

    cfg = state.cfg
    for label, model in models:
        t0 = time.perf_counter()
        data = api.compress_image(model, image.rgb)
        enc_s = time.perf_counter() - t0
        state.coding_s["sodec"] += enc_s  # once per file, however many decoders decode it
        file = cfg.out / "files" / f"sodec-{label}" / f"{image.name}.sodec"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
        n_bytes = file.stat().st_size
        for decoder in state.sodec_info[label]["decoders"]:
            t0 = time.perf_counter()
            pil, _header = api.decompress_bytes(data, model, cfg.device, decoder)
            dec_s = time.perf_counter() - t0
            state.coding_s["sodec"] += dec_s
            decoded = np.asarray(pil.convert("RGB"))
            codec = f"sodec-{decoder}"
            recon = cfg.out / "recon" / f"{codec}-{label}" / f"{image.name}.png"
            _save_png(recon, decoded)
            row = _row(image, codec, "sodec", label, n_bytes, file, recon, state)
            row.update(knob="rate_point", knob_value=model.config.rate_point, encode_s=enc_s, decode_s=dec_s)
            _measure(state, image, decoded, row)
            state.records.append(row)


def _row(image: _Image, codec: str, family: str, rate: str, n_bytes: int, file: Path, recon: Path,
         state: _State) -> dict:
    return {
        "image": image.name,
        "width": image.width,
        "height": image.height,
        "codec": codec,
        "family": family,
        "rate": rate,
        "target_bpp": None,
        "bytes": n_bytes,
        "bpp": 8 * n_bytes / (image.width * image.height),
        "status": "ok",
        "floor_bpp": None,
        "knob": None,
        "knob_value": None,
        "encode_s": None,
        "decode_s": None,
        "file": _rel(state, file),
        "recon": _rel(state, recon),
    }


def _baseline_targets(state: _State, image: _Image) -> list[tuple[str, float]]:
    """``[(rate label, target bpp)]`` for one image."""
    out = []
    targets = state.cfg.targets if state.cfg.targets is not None else ["match"]
    for t in targets:
        if t == "match":
            seen = set()
            for r in state.records:
                if r["family"] == "sodec" and r["image"] == image.name and r["rate"] not in seen:
                    seen.add(r["rate"])
                    out.append((f"match-{r['rate']}", r["bpp"]))
        else:
            out.append((f"{t:g}", float(t)))
    return out


def _run_baselines(state: _State, image: _Image, codecs: list[bl.Codec]) -> None:
    cfg = state.cfg
    for codec in codecs:
        for label, target in _baseline_targets(state, image):
            t0 = time.perf_counter()
            try:
                enc = bl.encode_at_bpp(codec, image.rgb, target)
            except Exception as e:  # a codec library failing on one image must not lose the run
                state.notes.append(f"{codec.name} on {image.name} at {target:.4f} bpp failed: "
                                   f"{e.__class__.__name__}: {e}")
                continue
            finally:
                state.coding_s["baselines"] += time.perf_counter() - t0
            file = cfg.out / "files" / f"{codec.name}-{label}" / f"{image.name}{FILE_SUFFIX[codec.name]}"
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(enc.data)
            recon = cfg.out / "recon" / f"{codec.name}-{label}" / f"{image.name}.png"
            _save_png(recon, enc.decoded)
            row = _row(image, codec.name, "baseline", label, file.stat().st_size, file, recon, state)
            row.update(target_bpp=target, status=enc.status, floor_bpp=enc.floor_bpp, knob=enc.knob,
                       knob_value=enc.value, encode_s=enc.encode_s, decode_s=enc.decode_s, n_encodes=enc.n_encodes)
            _measure(state, image, enc.decoded, row)
            state.records.append(row)


# ---------------------------------------------------------------------------------------------- analysis


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _summaries(state: _State) -> list[dict]:
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


def _curves(summary: list[dict], metric: str) -> dict[str, tuple[list[float], list[float]]]:
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for s in sorted(summary, key=lambda s: s["bpp"]):
        if _finite(s.get(metric)):
            bpps, vals = curves.setdefault(s["codec"], ([], []))
            bpps.append(s["bpp"])
            vals.append(s[metric])
    return curves


def _bd_table(state: _State, summary: list[dict], metrics: Sequence[str]) -> list[dict]:
    anchor = state.cfg.anchor
    rows = []
    for m in metrics:
        curves = _curves(summary, m)
        higher = METRICS[m].higher_is_better
        for codec, (bpps, vals) in curves.items():
            if codec == anchor:
                continue
            row = {"metric": m, "codec": codec, "anchor": anchor, "bd_rate": None, "quality_low": None,
                   "quality_high": None, "bd_quality": None, "bpp_low": None, "bpp_high": None, "reason": None}
            if not any(s["codec"] == anchor for s in summary):
                row["reason"] = f"anchor {anchor} was not evaluated (add it to --baselines or choose --anchor)"
            elif anchor not in curves:
                row["reason"] = f"anchor {anchor} has no {m} values in this run"
            else:
                a_bpp, a_val = curves[anchor]
                r = bd_rate(a_bpp, a_val, bpps, vals, higher_is_better=higher)
                q = bd_quality(a_bpp, a_val, bpps, vals)
                row.update(bd_rate=r.value, quality_low=r.low, quality_high=r.high, bd_quality=q.value,
                           bpp_low=q.low, bpp_high=q.high, reason=r.reason or q.reason)
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- outputs


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no inf/nan (e.g. PSNR of identical images): written as null
    if isinstance(v, Path):
        return str(v)
    return v


CSV_FIELDS = ["image", "width", "height", "codec", "family", "rate", "target_bpp", "bytes", "bpp", "status",
              "floor_bpp", "knob", "knob_value", "n_encodes", "encode_s", "decode_s"]


def _write_csv(path: Path, records: list[dict], metric_cols: list[str]) -> None:
    fields = CSV_FIELDS + metric_cols + ["fid_patches", "file", "recon"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: ("" if r.get(k) is None else (repr(r[k]) if isinstance(r[k], float) else r[k]))
                        for k in fields})


def _metric_label(m: str) -> str:
    arrow = "↑" if METRICS[m].higher_is_better else "↓"
    labels = {"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "delta_e": "ΔE2000", "lpips_vgg": "LPIPS-VGG",
              "lpips_alex": "LPIPS-Alex", "dists": "DISTS", "fid256": "FID-256", "kid256": "KID-256"}
    return labels.get(m, m) + f" {arrow}"


def _plot(path: Path, summary: list[dict], metrics: Sequence[str], log_bpp: bool, paper: bool, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(metrics)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.5 * rows), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        for codec, (bpps, vals) in _curves(summary, m).items():
            sodec = codec.startswith("sodec")
            ax.plot(bpps, vals, label=codec, color=COLORS.get(codec, "#333333"), lw=2.4 if sodec else 1.4,
                    marker="o" if sodec else ".", ms=7 if sodec else 7)
        if paper and m in PAPER_KODAK:
            ax.plot(PAPER_KODAK["bpp"], PAPER_KODAK[m], ls="--", color="k", marker="x", lw=1,
                    label="SODEC paper (Kodak, Fig. 4)")
        ax.set_title(_metric_label(m))
        ax.set_xlabel("bpp")
        if log_bpp:
            from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

            ax.set_xscale("log")
            lo, hi = ax.get_xlim()
            ticks = [t for t in (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5)
                     if lo <= t <= hi]
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=min(len(labels), 6),
               frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) > 6), 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _crop_box(rgb: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """The ``size``×``size`` window (32-px grid) with the most gradient energy: where codecs differ most."""
    h, w = rgb.shape[:2]
    cw, ch = min(size, w), min(size, h)
    g = rgb.astype(np.float32).mean(axis=2)
    energy = np.zeros_like(g)
    energy[:, 1:] += np.abs(np.diff(g, axis=1))
    energy[1:, :] += np.abs(np.diff(g, axis=0))
    ii = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, box = -1.0, (0, 0)
    for y in list(range(0, h - ch + 1, 32)) or [0]:
        for x in list(range(0, w - cw + 1, 32)) or [0]:
            e = ii[y + ch, x + cw] - ii[y, x + cw] - ii[y + ch, x] + ii[y, x]
            if e > best:
                best, box = e, (y, x)
    return box[1], box[0], box[1] + cw, box[0] + ch


def _crops(state: _State) -> list[dict]:
    """For the first ``--crops`` images and each SODEC point: original | SODEC | each baseline nearest in bpp."""
    from PIL import ImageDraw, ImageFont

    cfg = state.cfg
    font = ImageFont.load_default(size=14)
    out = []
    by_image: dict[str, list[dict]] = {}
    for r in state.records:
        by_image.setdefault(r["image"], []).append(r)
    for image in state.images[: cfg.crops]:
        rows = by_image.get(image.name, [])
        anchors = [r for r in rows if r["family"] == "sodec"]
        if not anchors:  # baselines only: line up each baseline's points of the lowest sodec-free target
            labels = sorted({r["rate"] for r in rows})
            anchors = [next(r for r in rows if r["rate"] == lab) for lab in labels[:1]]
        box = _crop_box(image.rgb, CROP)
        for a in anchors:
            tiles = [("original", image.rgb)]
            chosen = [a]
            for codec in dict.fromkeys(r["codec"] for r in rows if r["family"] == "baseline"):
                cands = [r for r in rows if r["codec"] == codec]
                chosen.append(min(cands, key=lambda r: abs(r["bpp"] - a["bpp"])))
            for r in chosen:
                with Image.open(cfg.out / r["recon"]) as im:
                    tiles.append((f"{r['codec']} {r['bpp']:.4f} bpp", np.asarray(im.convert("RGB"))))
            cw, ch = box[2] - box[0], box[3] - box[1]
            pad, text_h = 4, 20
            sheet = Image.new("RGB", (len(tiles) * (cw + pad) + pad, ch + text_h + 2 * pad), "white")
            draw = ImageDraw.Draw(sheet)
            for i, (label, rgb) in enumerate(tiles):
                x = pad + i * (cw + pad)
                sheet.paste(Image.fromarray(rgb).crop(box), (x, pad))
                draw.text((x + 2, pad + ch + 2), label, fill="black", font=font)
            path = cfg.out / "crops" / f"{image.name}_{a['codec']}-{a['rate']}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            sheet.save(path)
            out.append({"image": image.name, "anchor": f"{a['codec']} {a['rate']}", "box": list(box),
                        "file": _rel(state, path), "tiles": [t[0] for t in tiles]})
    return out


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v > 0 else "nan"
        return f"{v:.{digits}f}"
    return str(v)


def _report(state: _State, result: dict, plotted: list[str]) -> str:
    cfg = state.cfg
    meta = result["meta"]
    L: list[str] = []
    L.append(f"# sodec eval report — {cfg.data.name or cfg.data}\n")
    L.append(f"- **Command**: `{meta['command']}`")
    L.append(f"- **Date**: {meta['date']} · sodec {meta['sodec_version']} · Python {meta['python']} · torch "
             f"{meta['torch']} · {meta['machine']} ({meta['cpu_count']} CPUs, torch threads {meta['threads']}, "
             f"device {cfg.device})")
    st = meta["stage_s"]
    L.append(f"- **Wall time**: {meta['wall_s']:.1f} s — loading networks, images and reference FID features "
             f"{st['setup']:.1f} s; SODEC coding {st['sodec']:.1f} s; baseline coding with bisection "
             f"{st['baselines']:.1f} s; metrics {st['metrics']:.1f} s; FID/KID, plots and report "
             f"{st['analysis']:.1f} s")
    L.append(f"- **Data**: `{cfg.data}` — {len(state.images)} image(s)"
             + (f", {len(state.skipped_images)} skipped" if state.skipped_images else ""))
    L.append(f"- **Preprocessing**: {meta['preprocess_description']}")
    L.append("- **Rate**: bpp = 8 × file bytes / (W × H) of the reference, for every codec (real files under "
             "`files/`); the table's bpp is the mean over images.\n")
    L.append("| image | size |\n|---|---|")
    L.extend(f"| {im.name} | {im.width}×{im.height} |" for im in state.images)
    if state.skipped_images:
        L.append("\nSkipped: " + "; ".join(state.skipped_images))

    L.append("\n## Codecs\n")
    L.append("| codec | implementation | settings |\n|---|---|---|")
    for label, info in state.sodec_info.items():
        L.append(f"| sodec ({', '.join(info['decoders'])} decoder) {label} | model `{info['model']}` rate point "
                 f"{info['rate_point']}, hash {info['hash']} | diffusion decoder: "
                 f"{'yes' if info['has_diffusion'] else 'no'} |")
    for name, lib in result["baselines"].items():
        L.append(f"| {name} | {lib} | " + (result["baseline_settings"].get(name, "")) + " |")
    targets = cfg.targets if cfg.targets is not None else ["match"]
    L.append(f"\nBaseline targets: {', '.join('each SODEC file’s bpp, per image (match)' if t == 'match' else f'{t:g} bpp' for t in targets)}; "  # noqa: E501
             "each baseline takes the highest-quality setting whose file does not exceed the target "
             "(bisection on its quality knob); where the target is below the codec's floor its lowest setting "
             "is used and flagged.")

    L.append("\n## Metrics\n")
    L.append("| metric | better | status | implementation |\n|---|---|---|---|")
    for m, info in result["metrics"].items():
        status = "ok" if info["available"] else f"unavailable: {info['reason']}"
        L.append(f"| {m} | {'higher' if info['higher_is_better'] else 'lower'} | {status} | {info['implementation']} |")
    for m, per in state.suite.skipped.items():
        L.append(f"\n{m}: not computed for {len(per)} case(s): " + "; ".join(f"{k}: {v}" for k, v in per.items()))

    L.append("\n## Results (means over images)\n")
    cols = [m for m in plotted]
    L.append("| codec | rate | n | bpp | " + " | ".join(_metric_label(m) for m in cols)
             + " | below floor | enc s | dec s |")
    L.append("|---|---|---|---|" + "---|" * len(cols) + "---|---|---|")
    for s in result["summary"]:
        vals = []
        for m in cols:
            v = _fmt(s.get(m), 2 if m in ("psnr", "fid256") else 4)
            if m == "kid256" and s.get("kid256_std") is not None:
                v += f" ± {s['kid256_std']:.4f}"
            vals.append(v)
        L.append(f"| {s['codec']} | {s['rate']} | {s['n_images']} | {s['bpp']:.4f} | " + " | ".join(vals)
                 + f" | {s['n_below_floor']} | {s['encode_s']:.2f} | {s['decode_s']:.2f} |")
    if any(m in plotted for m in ("fid256", "kid256")):
        n = result["summary"][0].get("fid_patches")
        L.append(f"\nFID/KID: {n} reference patches of 256×256 per codec point (grid + grid shifted by 128). "
                 "FID on fewer than a few thousand patches is biased upwards and only comparable between codecs "
                 "on the same images; KID is unbiased.")

    floors = [r for r in state.records if r["status"] == "below_floor"]
    if floors:
        L.append("\n## Targets below a codec's floor\n")
        L.append("| codec | rate | image | target bpp | lowest reachable bpp |\n|---|---|---|---|---|")
        L.extend(f"| {r['codec']} | {r['rate']} | {r['image']} | {r['target_bpp']:.4f} | {r['floor_bpp']:.4f} |"
                 for r in floors)

    L.append(f"\n## BD-rate vs {cfg.anchor}\n")
    L.append("Piecewise cubic (PCHIP) Bjøntegaard delta on the mean points: log-rate interpolated over quality, "
             "integrated over the overlapping quality range (negative = fewer bits than the anchor at equal "
             "quality). BD-quality: quality difference at equal rate over the overlapping bpp range, in the "
             "metric's units.\n")
    L.append("| metric | codec | BD-rate % | quality overlap | BD-quality | bpp overlap | note |")
    L.append("|---|---|---|---|---|---|---|")
    rows = result["bd"]
    by_codec: dict[str, list[dict]] = {}
    for b in rows:
        by_codec.setdefault(b["codec"], []).append(b)
    collapsed = []
    for bs in by_codec.values():  # one line for a codec whose every metric fails for the same reason
        same = len({b["reason"] for b in bs}) == 1
        if len(bs) > 1 and same and all(b["reason"] and b["bd_rate"] is None for b in bs):
            collapsed.append({**bs[0], "metric": "all"})
        else:
            collapsed.extend(bs)
    for b in collapsed:
        q = f"{_fmt(b['quality_low'])} – {_fmt(b['quality_high'])}" if b["quality_low"] is not None else "–"
        r = f"{_fmt(b['bpp_low'])} – {_fmt(b['bpp_high'])}" if b["bpp_low"] is not None else "–"
        L.append(f"| {b['metric']} | {b['codec']} | {_fmt(b['bd_rate'], 2)} | {q} | {_fmt(b['bd_quality'])} | "
                 f"{r} | {b['reason'] or ''} |")
    if not result["bd"]:
        L.append("| – | – | – | – | – | – | no curve to compare |")

    L.append("\n## Rate–distortion\n")
    L.append("![rate-distortion curves](rd.png)\n")
    if result["crops"]:
        L.append("## Crops at matched bpp\n")
        L.append(f"{CROP}×{CROP} crops (the window with the most detail), original first, then each codec's "
                 "point nearest in bpp to the SODEC file of the same image.\n")
        for c in result["crops"]:
            L.append(f"**{c['image']}**, vs {c['anchor']}\n\n![{c['image']}]({c['file']})\n")
    if state.notes:
        L.append("## Notes\n")
        L.extend(f"- {n}" for n in state.notes)
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------------------------------------- entry


def run(cfg: EvalConfig) -> dict:
    """Run the evaluation; returns the ``results.json`` object."""
    import torch

    t_start = time.perf_counter()
    metrics = cfg.metrics or parse_metrics(None)
    if cfg.decoder not in ("auto", "fidelity", "both", "diffusion"):
        raise SodecError(f"--decoder must be auto, fidelity, diffusion or both, got {cfg.decoder!r}")
    pre = Preprocess.parse(cfg.preprocess)
    if cfg.model is None and (cfg.targets is None or "match" in cfg.targets):
        raise SodecError("without a SODEC model (--model none) give explicit --targets (bpp values)")
    if cfg.out.exists() and any(cfg.out.iterdir()) and not cfg.force:
        raise SodecError(f"{cfg.out} exists and is not empty (use --force to overwrite)")

    codecs, unavailable = [], {}
    for name in cfg.baselines:
        try:
            codecs.append(bl.get_codec(name))
        except bl.BaselineUnavailable as e:
            unavailable[name] = str(e)

    models = _sodec_models(cfg) if cfg.model is not None else []
    state = _State(cfg, None)
    for label, model in models:  # model and decoder errors surface before the slow metric networks load
        _decoders(state, label, model)
    cfg.out.mkdir(parents=True, exist_ok=True)
    suite = state.suite = MetricSuite(metrics, cfg.device)
    for name, reason in unavailable.items():
        state.notes.append(f"baseline {name} unavailable: {reason}")
    _load_images(state, pre)
    if suite.set_metrics:
        for image in state.images:
            state.ref_features[image.name] = suite.patch_features(image.rgb)
            if state.ref_features[image.name].shape[0] == 0:
                state.notes.append(f"{image.name} is smaller than 256 px: it adds no FID/KID patch")

    progress = None
    if not cfg.quiet:
        from tqdm import tqdm

        progress = tqdm(total=len(state.images), unit="image", file=sys.stderr, desc="sodec eval")
    state.coding_s["setup"] = time.perf_counter() - t_start
    for image in state.images:
        _run_sodec(state, image, models)
        _run_baselines(state, image, codecs)
        suite.forget()
        if progress:
            progress.update()
    if progress:
        progress.close()
    t2 = time.perf_counter()

    summary = _summaries(state)
    plotted = [m for m in metrics if m in suite.available and any(_finite(s.get(m)) for s in summary)]
    bd = _bd_table(state, summary, plotted)
    crops = _crops(state) if cfg.crops > 0 else []
    settings = {c.name: f"{c.description}; knob `{c.knob}` {c.lowest:g} (smallest) … {c.highest:g}"
                for c in codecs}
    result = {
        "meta": {
            "command": cfg.command or command_line(cfg),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "sodec_version": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": f"{platform.system()} {platform.machine()} {platform.processor()}".strip(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "device": cfg.device,
            "data": str(cfg.data),
            "preprocess": cfg.preprocess,
            "preprocess_description": pre.describe(),
            "model": cfg.model,
            "decoder": cfg.decoder,
            "anchor": cfg.anchor,
            "targets": cfg.targets if cfg.targets is not None else ["match"],
            "stage_s": dict(state.coding_s),
        },
        "images": [{"name": i.name, "source": str(i.source), "width": i.width, "height": i.height}
                   for i in state.images],
        "skipped_images": state.skipped_images,
        "sodec": state.sodec_info,
        "baselines": {**{c.name: c.library for c in codecs}, **{k: f"unavailable: {v}" for k, v in
                                                               unavailable.items()}},
        "baseline_settings": settings,
        "metrics": {m: {"available": m not in suite.unavailable, "reason": suite.unavailable.get(m),
                        "higher_is_better": METRICS[m].higher_is_better, "kind": METRICS[m].kind,
                        "implementation": METRICS[m].implementation} for m in metrics},
        "metric_skips": suite.skipped,
        "records": state.records,
        "summary": summary,
        "bd": bd,
        "crops": crops,
        "notes": state.notes,
    }
    if plotted:
        title = f"{cfg.data.name or cfg.data}: {len(state.images)} image(s), preprocess {cfg.preprocess}"
        _plot(cfg.out / "rd.png", summary, plotted, cfg.log_bpp, cfg.paper_points, title)
    metric_cols = [m for m in metrics if METRICS[m].kind == "image" and m in suite.available]
    _write_csv(cfg.out / "results.csv", state.records, metric_cols)
    result["meta"]["stage_s"]["analysis"] = time.perf_counter() - t2
    result["meta"]["wall_s"] = time.perf_counter() - t_start
    (cfg.out / "report.md").write_text(_report(state, result, plotted))
    (cfg.out / "results.json").write_text(json.dumps(_jsonable(result), indent=1, allow_nan=False))
    return result


def summary_lines(result: dict) -> list[str]:
    """A short text table of the means, for the terminal."""
    metrics = [m for m, info in result["metrics"].items() if info["available"]]
    head = f"{'codec':18s} {'rate':12s} {'bpp':>8s} " + " ".join(f"{m:>10s}" for m in metrics)
    lines = [head]
    for s in result["summary"]:
        vals = " ".join(f"{_fmt(s.get(m)):>10s}" for m in metrics)
        lines.append(f"{s['codec']:18s} {s['rate']:12s} {s['bpp']:8.4f} {vals}")
    return lines


def command_line(cfg: EvalConfig) -> str:
    """The ``sodec eval`` command that reproduces a run, every option spelled out."""
    targets = cfg.targets if cfg.targets is not None else ["match"]
    parts = ["sodec", "eval", "--data", str(cfg.data), "--out", str(cfg.out), "--model", cfg.model or "none"]
    if cfg.rates is not None:
        parts += ["--rates", ",".join(map(str, cfg.rates))]
    parts += ["--decoder", cfg.decoder, "--baselines", ",".join(cfg.baselines) or "none",
              "--targets", ",".join(t if t == "match" else f"{t:g}" for t in targets),
              "--preprocess", cfg.preprocess, "--metrics", ",".join(cfg.metrics or parse_metrics(None)),
              "--anchor", cfg.anchor, "--crops", str(cfg.crops), "--device", cfg.device]
    if cfg.limit:
        parts += ["--limit", str(cfg.limit)]
    if cfg.log_bpp:
        parts.append("--log-bpp")
    if cfg.paper_points:
        parts.append("--paper-points")
    return " ".join(shlex.quote(p) for p in parts)
