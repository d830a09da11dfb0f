"""Outputs of ``sodec eval``: ``results.csv``, JSON-safe values, ``rd.png``, crops at matched bpp, ``report.md``."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from sodec.eval.analysis import curves
from sodec.eval.coding import EvalState
from sodec.eval.metrics import METRICS

# SODEC on Kodak, read off the paper's Fig. 4 (DESIGN.md): bpp → MS-SSIM / LPIPS-VGG / DISTS.
PAPER_KODAK = {
    "bpp": [0.020, 0.032, 0.054, 0.069],
    "ms_ssim": [0.795, 0.828, 0.862, 0.890],
    "lpips_vgg": [0.351, 0.319, 0.272, 0.231],
    "dists": [0.133, 0.124, 0.103, 0.091],
}
CROP = 256
COLORS = {"sodec-diffusion": "#d62728", "sodec-fidelity": "#ff7f0e", "heic": "#1f77b4", "avif": "#9467bd",
          "webp": "#2ca02c", "jpeg": "#8c564b", "jxl": "#17becf", "j2k": "#7f7f7f"}




def jsonable(v):
    """``v`` with numpy scalars, paths and non-finite floats made JSON-safe (recursively)."""
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no inf/nan (e.g. PSNR of identical images): written as null
    if isinstance(v, Path):
        return str(v)
    return v


CSV_FIELDS = ["image", "width", "height", "codec", "family", "rate", "target_bpp", "bytes", "bpp", "status",
              "floor_bpp", "knob", "knob_value", "n_encodes", "encode_s", "decode_s"]


def write_csv(path: Path, records: list[dict], metric_cols: list[str]) -> None:
    fields = CSV_FIELDS + metric_cols + ["fid_patches", "file", "recon"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: ("" if r.get(k) is None else (repr(r[k]) if isinstance(r[k], float) else r[k]))
                        for k in fields})


def metric_label(m: str) -> str:
    arrow = "↑" if METRICS[m].higher_is_better else "↓"
    labels = {"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "delta_e": "ΔE2000", "lpips_vgg": "LPIPS-VGG",
              "lpips_alex": "LPIPS-Alex", "dists": "DISTS", "fid256": "FID-256", "kid256": "KID-256"}
    return labels.get(m, m) + f" {arrow}"


def plot(path: Path, summary: list[dict], metrics: Sequence[str], log_bpp: bool, paper: bool, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(metrics)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.5 * rows), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        for codec, (bpps, vals) in curves(summary, m).items():
            sodec = codec.startswith("sodec")
            ax.plot(bpps, vals, label=codec, color=COLORS.get(codec, "#333333"), lw=2.4 if sodec else 1.4,
                    marker="o" if sodec else ".", ms=7 if sodec else 7)
        if paper and m in PAPER_KODAK:
            ax.plot(PAPER_KODAK["bpp"], PAPER_KODAK[m], ls="--", color="k", marker="x", lw=1,
                    label="SODEC paper (Kodak, Fig. 4)")
        ax.set_title(metric_label(m))
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


def crops(state: EvalState) -> list[dict]:
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
                        "file": path.relative_to(cfg.out).as_posix(), "tiles": [t[0] for t in tiles]})
    return out


def fmt(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v > 0 else "nan"
        return f"{v:.{digits}f}"
    return str(v)


def report_markdown(state: EvalState, result: dict, plotted: list[str]) -> str:
    """The text of ``report.md``: protocol, codecs, metrics, tables, BD-rates, plot and crops."""
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
    if meta.get("ray"):  # stage times are then summed over the workers, which ran side by side
        ray = meta["ray"]
        L.append(f"- **Ray**: {ray['workers']} worker(s) on a cluster of {ray['cluster_cpus']:g} CPUs and "
                 f"{ray['cluster_gpus']:g} GPUs (address `{ray['address']}`); per-image loading, reference "
                 f"FID features, coding and metrics on the workers ({st['workers']:.1f} worker-seconds in all, "
                 "the coding and metric times above included)")
    L.append(f"- **Data**: `{cfg.data}` — {len(state.images)} image(s)"
             + (f", {len(state.skipped_images)} skipped" if state.skipped_images else "")
             + (f", {len(state.failed_images)} failed" if state.failed_images else ""))
    L.append(f"- **Preprocessing**: {meta['preprocess_description']}")
    L.append("- **Rate**: bpp = 8 × file bytes / (W × H) of the reference, for every codec (real files under "
             "`files/`); the table's bpp is the mean over images.\n")
    L.append("| image | size |\n|---|---|")
    L.extend(f"| {im.name} | {im.width}×{im.height} |" for im in state.images)
    if state.skipped_images:
        L.append("\nSkipped: " + "; ".join(state.skipped_images))
    if state.failed_images:
        L.append("\nFailed (not in any table): " + "; ".join(state.failed_images))

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
    L.append("| codec | rate | n | bpp | " + " | ".join(metric_label(m) for m in cols)
             + " | below floor | enc s | dec s |")
    L.append("|---|---|---|---|" + "---|" * len(cols) + "---|---|---|")
    for s in result["summary"]:
        vals = []
        for m in cols:
            v = fmt(s.get(m), 2 if m in ("psnr", "fid256") else 4)
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
        q = f"{fmt(b['quality_low'])} – {fmt(b['quality_high'])}" if b["quality_low"] is not None else "–"
        r = f"{fmt(b['bpp_low'])} – {fmt(b['bpp_high'])}" if b["bpp_low"] is not None else "–"
        L.append(f"| {b['metric']} | {b['codec']} | {fmt(b['bd_rate'], 2)} | {q} | {fmt(b['bd_quality'])} | "
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

