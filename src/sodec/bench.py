"""``sodec bench``: encode/decode latency per stage and peak memory, each phase in a fresh process.

Every stage is run ``warmup`` times untimed, then ``runs`` times; the table gives the median (and min/max)
in milliseconds.  Peak memory is the child process's peak resident set (``ru_maxrss``), with the resident
size after loading the model alongside, so the phase's own share can be read off.
"""

from __future__ import annotations

import io
import multiprocessing
import platform
import resource
import statistics
import time
from pathlib import Path

import torch


def _timed(fn, runs: int, warmup: int) -> tuple[list[float], object]:
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return times, result


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _phase(phase: str, model_name: str, rate: int | None, image: str, runs: int, warmup: int, threads: int | None):
    """Run one phase in this (child) process; return {stage: [ms...]} and memory figures."""
    if threads:
        torch.set_num_threads(threads)
    from sodec import api, container
    from sodec.imageio import from_rgb_array, load_image
    from sodec.models.compression import LatentStreams
    from sodec.models.sodec import pad_to_multiple

    model = api.load_model(model_name, rate)
    rgb, mode = load_image(image)
    data = api.compress_image(model, rgb)
    rss_loaded = _rss_mb()
    x = api._to_tensor(rgb, torch.device("cpu"))
    stages: dict[str, list[float]] = {}
    with torch.no_grad():
        if phase == "encode":
            stages["read image"], _ = _timed(lambda: load_image(image), runs, warmup)
            xp = pad_to_multiple(x, model.config.downsampling)
            stages["analysis E + Ha"], _ = _timed(
                lambda: model.compression.hyper_analysis(model.compression.encoder(xp)), runs, warmup
            )
            stages["total (compress_image)"], _ = _timed(lambda: api.compress_image(model, rgb), runs, warmup)
        else:
            f = container.unpack(data)
            h = f.header
            streams = LatentStreams(f.z_stream, f.y_stream, h.latent_check)
            m = model.config.downsampling
            hw = (-(-h.height // m) * m // 16, -(-h.width // m) * m // 16)
            stages["entropy decoding (ẑ, P, ŷ)"], (y_hat, _) = _timed(
                lambda: model.compression.decompress(streams, hw), runs, warmup
            )
            stages["fidelity decoder Da"], x_hat = _timed(lambda: model.fidelity(y_hat), runs, warmup)
            img = from_rgb_array(api._to_uint8(x_hat[..., : h.height, : h.width].clamp(0, 1)), mode)
            stages["PNG write"], _ = _timed(lambda: img.save(io.BytesIO(), format="PNG"), runs, warmup)
            stages["total (decompress_bytes)"], _ = _timed(lambda: api.decompress_bytes(data, model), runs, warmup)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "stages": stages,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": peak,
        "bytes": len(data),
        "size": rgb.shape[:2],
        "threads": torch.get_num_threads(),
    }


def run(model: str, rate: int | None, image: str | None, runs: int, warmup: int, threads: int | None) -> str:
    """Benchmark encode and decode in two fresh processes; return the Markdown table."""
    from sodec.api import example_image

    image = str(image or example_image())
    ctx = multiprocessing.get_context("spawn")
    lines = []
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        results = {p: pool.apply(_phase, (p, model, rate, image, runs, warmup, threads)) for p in ("encode", "decode")}
    enc = results["encode"]
    h, w = enc["size"]
    lines.append(
        f"model {model} rate {rate or 0} · image {Path(image).name} {w}x{h} · {enc['bytes']} bytes "
        f"({enc['bytes'] * 8 / (w * h):.4f} bpp) · torch {torch.__version__} · {enc['threads']} threads · "
        f"{platform.processor() or platform.machine()} · median of {runs} runs after {warmup} warm-up"
    )
    lines.append("")
    lines.append("| phase | stage | median ms | min ms | max ms |")
    lines.append("|---|---|---:|---:|---:|")
    for phase, res in results.items():
        for stage, t in res["stages"].items():
            lines.append(f"| {phase} | {stage} | {statistics.median(t):.1f} | {min(t):.1f} | {max(t):.1f} |")
    lines.append("")
    lines.append("| phase | RSS after loading (MiB) | peak RSS (MiB) |")
    lines.append("|---|---:|---:|")
    for phase, res in results.items():
        lines.append(f"| {phase} | {res['rss_loaded_mb']:.0f} | {res['peak_rss_mb']:.0f} |")
    return "\n".join(lines)
