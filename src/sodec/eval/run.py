"""``sodec eval``: compress a folder of images with SODEC and classical baselines, measure, plot and report.

Every point is a real file: SODEC's ``.sodec`` files and the baselines' encoded files are written under
``RUN_DIR/files/`` and their bpp is ``8·bytes / (W·H)`` of the (preprocessed) reference.  Reconstructions are
written as PNG under ``RUN_DIR/recon/`` and every metric is computed on them.  Outputs:

- ``results.json``: everything (run metadata, per-image rows, per-codec means, BD table, notes);
- ``results.csv``: one row per image × codec × rate point;
- ``rd.png``: one rate-distortion panel per metric;
- ``crops/``: side-by-side crops at matched bpp;
- ``report.md``: the tables, the plot and the crops, with the protocol stated.

The run is split by purpose: :mod:`~sodec.eval.settings` (the configuration), :mod:`~sodec.eval.coding` (each
image coded and measured: the step that ``--ray`` runs on a cluster), :mod:`~sodec.eval.analysis` (means,
curves, BD table) and :mod:`~sodec.eval.report` (the files).  This module drives them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time

from sodec import __version__
from sodec.console import describe
from sodec.errors import SodecError
from sodec.eval.analysis import bd_table, finite, summaries
from sodec.eval.coding import EvalImage, EvalState, ImageCoder, image_names, list_images, load_reference
from sodec.eval.metrics import METRICS, parse_metrics
from sodec.eval.report import crops, fmt, jsonable, plot, report_markdown, write_csv
from sodec.eval.settings import EvalConfig, Preprocess, parse_rates, parse_targets

__all__ = ["EvalConfig", "Preprocess", "command_line", "parse_rates", "parse_targets", "run", "summary_lines"]


def run(cfg: EvalConfig) -> dict:
    """Run the evaluation; returns the ``results.json`` object.

    With ``cfg.ray`` the per-image step (:meth:`~sodec.eval.coding.ImageCoder.code_file`) runs on a Ray
    cluster (:func:`sodec.distributed.eval_images`); everything else, and so every number, is the same.
    """
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
    if cfg.ray is not None:
        from sodec import distributed

        distributed.require_ray("sodec eval --ray")  # before anything loads or is written

    # Model and decoder errors surface before the slow metric networks load and before anything is written.
    # With Ray the driver needs the models only for their description (the workers code): read from their
    # configs, no network loaded (at paper scale each rate point's bases are ≈ 7 GB).
    coder = ImageCoder(cfg, describe_only=cfg.ray is not None)
    state = EvalState(cfg, None, sodec_info=coder.sodec_info, notes=list(coder.notes))
    codecs = coder.codecs
    cfg.out.mkdir(parents=True, exist_ok=True)
    suite = state.suite = coder.load_metrics()
    for name, reason in coder.unavailable.items():
        state.notes.append(f"baseline {name} unavailable: {reason}")
    paths = list_images(cfg.data, cfg.limit)
    ray_info = None
    if cfg.ray is None:
        _code_here(state, coder, paths, t_start)
    else:
        ray_info = _code_on_ray(state, pre, paths, t_start)
    t2 = time.perf_counter()

    summary = summaries(state)
    plotted = [m for m in metrics if m in suite.available and any(finite(s.get(m)) for s in summary)]
    bd = bd_table(summary, plotted, cfg.anchor)
    crop_sheets = crops(state) if cfg.crops > 0 else []
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
            **({"ray": ray_info} if ray_info else {}),
        },
        "images": [{"name": i.name, "source": str(i.source), "width": i.width, "height": i.height}
                   for i in state.images],
        "skipped_images": state.skipped_images,
        "failed_images": state.failed_images,
        "sodec": state.sodec_info,
        "baselines": {**{c.name: c.library for c in codecs}, **{k: f"unavailable: {v}" for k, v in
                                                               coder.unavailable.items()}},
        "baseline_settings": settings,
        "metrics": {m: {"available": m not in suite.unavailable, "reason": suite.unavailable.get(m),
                        "higher_is_better": METRICS[m].higher_is_better, "kind": METRICS[m].kind,
                        "implementation": METRICS[m].implementation} for m in metrics},
        "metric_skips": suite.skipped,
        "records": state.records,
        "summary": summary,
        "bd": bd,
        "crops": crop_sheets,
        "notes": state.notes,
    }
    if plotted:
        title = f"{cfg.data.name or cfg.data}: {len(state.images)} image(s), preprocess {cfg.preprocess}"
        plot(cfg.out / "rd.png", summary, plotted, cfg.log_bpp, cfg.paper_points, title)
    metric_cols = [m for m in metrics if METRICS[m].kind == "image" and m in suite.available]
    write_csv(cfg.out / "results.csv", state.records, metric_cols)
    result["meta"]["stage_s"]["analysis"] = time.perf_counter() - t2
    result["meta"]["wall_s"] = time.perf_counter() - t_start
    (cfg.out / "report.md").write_text(report_markdown(state, result, plotted))
    (cfg.out / "results.json").write_text(json.dumps(jsonable(result), indent=1, allow_nan=False))
    return result


def _progress(cfg: EvalConfig, total: int):
    if cfg.quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="image", file=sys.stderr, desc="sodec eval")


def _no_image_left(state: EvalState) -> None:
    if not state.images:
        raise SodecError("no usable image: " + "; ".join(state.failed_images + state.skipped_images))


def _code_here(state: EvalState, coder: ImageCoder, paths: list, t_start: float) -> None:
    """Load every image and its reference features, then code them one after the other, in this process.
    An image that fails is reported and the others go on."""
    for path, name in zip(paths, image_names(paths)):
        try:
            image = coder.load(path, name)
        except Exception as e:  # noqa: BLE001 - one image's failure, whatever it is
            state.failed_images.append(_failure(path, e))
            continue
        if isinstance(image, str):
            state.skipped_images.append(image)
        else:
            state.images.append(image)
    _no_image_left(state)
    if coder.suite.set_metrics:
        for image in state.images:
            state.ref_features[image.name], notes = coder.reference_features(image)
            state.notes.extend(notes)
    progress = _progress(state.cfg, len(state.images))
    state.coding_s["setup"] = time.perf_counter() - t_start
    for image in list(state.images):
        try:
            state.add(coder.code(image))
        except Exception as e:  # noqa: BLE001 - one image's failure, whatever it is
            state.failed_images.append(_failure(image.source, e))
            state.images = [i for i in state.images if i is not image]
            state.ref_features.pop(image.name, None)
        if progress:
            progress.update()
    if progress:
        progress.close()
    _no_image_left(state)


def _failure(path, error: Exception) -> str:
    reason = describe(error)
    return reason if str(path) in reason else f"{path}: {reason}"


def _code_on_ray(state: EvalState, pre: Preprocess, paths: list, t_start: float) -> dict:
    """Code every image on the Ray cluster, then collect the results in image order, as :func:`_code_here`."""
    from sodec import distributed

    cfg = state.cfg
    state.coding_s["setup"] = time.perf_counter() - t_start
    progress = _progress(cfg, len(paths))
    try:
        results, failures, info = distributed.eval_images(
            cfg, list(zip(paths, image_names(paths))), on_result=progress.update if progress else None
        )
    finally:
        if progress:
            progress.close()
    state.failed_images.extend(failures[k] for k in sorted(failures))
    used = []
    for r in results:
        if r is None:
            continue
        if r.skipped:
            state.skipped_images.append(r.skipped)
        else:
            used.append(r)
            state.images.append(EvalImage(r.name, r.source, None, r.width, r.height))
    _no_image_left(state)
    for r in used:
        if state.suite.set_metrics:
            state.ref_features[r.name] = r.ref_features
        state.notes.extend(r.feature_notes)
    state.coding_s["workers"] = 0.0
    for r in used:
        state.add(r)
        state.coding_s["workers"] += r.wall_s
    for image in state.images[: cfg.crops]:  # the crops need pixels, which stayed on the workers
        image.rgb = load_reference(image.source, pre)[0]
    return info


def summary_lines(result: dict) -> list[str]:
    """A short text table of the means, for the terminal."""
    metrics = [m for m, info in result["metrics"].items() if info["available"]]
    head = f"{'codec':18s} {'rate':12s} {'bpp':>8s} " + " ".join(f"{m:>10s}" for m in metrics)
    lines = [head]
    for s in result["summary"]:
        vals = " ".join(f"{fmt(s.get(m)):>10s}" for m in metrics)
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
    if cfg.ray is not None:  # the same numbers either way; said for the record of how the run was made
        parts += ["--ray", cfg.ray] + (["--jobs", str(cfg.workers)] if cfg.workers else [])
    return " ".join(shlex.quote(p) for p in parts)
