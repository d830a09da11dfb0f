"""Ablations: train each variant of a design choice with the same budget and seed, evaluate, tabulate.

An ablation config (``configs/nano/ablation-*.yaml``) names a training config every variant runs, the
overrides all variants share, and per variant the overrides that switch the alternative on — or a list of
phases (each phase's run starts from the previous one's export; the steps are split evenly), for variants
that need two steps such as "compression module trained at the target rate, then frozen"::

    name: guidance
    train: configs/nano/stage3-anneal-rate2.yaml
    out: runs/nano/ablation-guidance
    steps: 1000                       # each variant's budget
    set: {model.init: runs/nano/stage2}
    variants:
      fgm: {}
      none: {model.guidance: none}
    eval: {data: data/nano/val, preprocess: center-crop:768x512, metrics: [ms_ssim, lpips_vgg, dists]}
    paper: {fgm: {bpp: 0.042, ms_ssim: 0.848, lpips_vgg: 0.335}}   # optional: the paper's row, for the table

``sodec ablate CONFIG`` runs what is missing (training resumes; a finished evaluation is reused) and writes
``OUT/ablation.json``, ``OUT/ablation.csv`` and ``OUT/ablation.md``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sodec.train.config import ConfigError, load_config

TABLE_METRICS = ("bpp", "ms_ssim", "lpips_vgg", "dists", "psnr")


@dataclass
class AblationConfig:
    name: str
    train: str
    out: str
    steps: int
    variants: dict[str, dict[str, Any] | list[dict[str, Any]]]
    set: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: str = ""


def load_ablation(path: str | os.PathLike) -> AblationConfig:
    try:
        d = yaml.safe_load(Path(path).read_text()) or {}
        config = AblationConfig(**d)
    except (OSError, yaml.YAMLError, TypeError) as e:
        raise ConfigError(f"cannot read ablation config {path}: {str(e).splitlines()[0]}") from None
    if not config.variants:
        raise ConfigError(f"{path}: no variants")
    return config


def _overrides(d: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in d.items()]


def variant_configs(ablation: AblationConfig, variant: str) -> list:
    """The training configs of one variant's phases, in order (each phase starts from the previous export)."""
    spec = ablation.variants[variant]
    phases = spec if isinstance(spec, list) else [spec]
    configs, previous = [], None
    for i, phase in enumerate(phases):
        out = Path(ablation.out) / variant / (f"phase{i + 1}" if len(phases) > 1 else "train")
        steps = ablation.steps // len(phases) + (ablation.steps % len(phases) if i == len(phases) - 1 else 0)
        items = {**ablation.set, **phase}
        if previous is not None:  # start from the shared init, then the previous phase's export on top
            shared = items.get("model.init")
            items["model.init"] = [*([shared] if isinstance(shared, str) else shared or []), str(previous)]
        config = load_config(phase.get("train", ablation.train), _overrides(
            {k: v for k, v in items.items() if k != "train"} | {"out": str(out), "steps": steps}
        ))  # fmt: skip
        configs.append(config)
        previous = out
    return configs


def run_ablation(ablation: AblationConfig, variants: list[str] | None = None, progress: bool = True) -> list[dict]:
    """Train and evaluate every variant (what is done already is reused); returns the table rows."""
    from sodec.eval import metrics as eval_metrics
    from sodec.eval import run as eval_run
    from sodec.train.loop import train

    out = Path(ablation.out)
    rows, per_image = [], {}
    for variant in variants or list(ablation.variants):
        configs = variant_configs(ablation, variant)
        for config in configs:
            if not (Path(config.out) / "final" / "model.safetensors").is_file():
                train(config, progress=progress)
        eval_dir = out / variant / "eval"
        result_file = eval_dir / "results.json"
        if not result_file.is_file():
            e = ablation.eval
            eval_run.run(eval_run.EvalConfig(
                data=Path(e.get("data", "data/nano/val")), out=eval_dir, model=str(Path(configs[-1].out) / "final"),
                baselines=(), preprocess=e.get("preprocess", "none"),
                metrics=eval_metrics.parse_metrics(e.get("metrics", "psnr,ms_ssim,lpips_vgg,dists")),
                limit=e.get("limit"), decoder=e.get("decoder", "auto"), crops=0, force=True, quiet=not progress,
            ))  # fmt: skip
        result = json.loads(result_file.read_text())
        sodec_rows = [s for s in result["summary"] if s["family"] == "sodec"]
        row = {"variant": variant, **{m: sodec_rows[0].get(m) for m in TABLE_METRICS}}
        row["n_images"] = sodec_rows[0]["n_images"]
        per_image[variant] = {r["image"]: r for r in result["records"] if r["family"] == "sodec"}
        row["paired"] = _paired(per_image[variant], per_image[rows[0]["variant"]]) if rows else None
        rows.append(row)
    write_tables(ablation, rows)
    return rows


def _paired(records: dict[str, dict], reference: dict[str, dict]) -> dict[str, list[float] | None]:
    """Per metric: [mean, standard error] over the photos of (variant − reference), photo by photo."""
    paired = {}
    for m in TABLE_METRICS:
        d = [records[i][m] - reference[i][m] for i in reference
             if i in records and isinstance(records[i].get(m), float) and isinstance(reference[i].get(m), float)]
        paired[m] = None if len(d) < 2 else [statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d))]
    return paired


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def write_tables(ablation: AblationConfig, rows: list[dict]) -> None:
    out = Path(ablation.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"name": ablation.name, "steps": ablation.steps, "rows": rows,
                                                   "paper": ablation.paper}, indent=1))  # fmt: skip
    with (out / "ablation.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["variant", "n_images", *TABLE_METRICS], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [
        f"# Ablation: {ablation.name}",
        "",
        f"Each variant: {ablation.steps} steps of `{ablation.train}` with the same seed; evaluated on "
        f"`{ablation.eval.get('data', 'data/nano/val')}` ({rows[0]['n_images'] if rows else 0} images, "
        f"preprocess {ablation.eval.get('preprocess', 'none')}); bpp from the real files.",
        "",
        "| variant | bpp | MS-SSIM ↑ | LPIPS-VGG ↓ | DISTS ↓ | PSNR ↑ | paper (bpp / MS-SSIM / LPIPS) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = ablation.paper.get(r["variant"], {})
        paper = " / ".join(_fmt(p.get(k)) for k in ("bpp", "ms_ssim", "lpips_vgg")) if p else "–"
        lines.append(f"| {r['variant']} | " + " | ".join(_fmt(r[m]) for m in ("bpp", "ms_ssim", "lpips_vgg",
                                                                               "dists", "psnr")) + f" | {paper} |")
    if len(rows) > 1:
        ref = rows[0]["variant"]
        lines += ["", f"Difference from `{ref}`, photo by photo (mean ± standard error over the photos; a difference "
                  "within about two standard errors is not told apart from photo-to-photo noise):", "",
                  "| variant | Δ bpp | Δ MS-SSIM | Δ LPIPS-VGG | Δ DISTS | Δ PSNR |", "|---|---|---|---|---|---|"]
        for r in rows[1:]:
            cells = [f"{p[0]:+.4f} ± {p[1]:.4f}" if (p := r["paired"][m]) else "–"
                     for m in ("bpp", "ms_ssim", "lpips_vgg", "dists", "psnr")]
            lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")  # fmt: skip
    if ablation.notes:
        lines += ["", ablation.notes.strip()]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
