"""``sodec bench``: latency per stage, the one-step vs N-step speed-up, and peak memory.

Every stage runs ``warmup`` times untimed, then ``runs`` times; tables give the median (min, max) in ms,
with device synchronisation on GPU.  The multi-step baseline is the same model run as an N-step DDIM chain
from ŷ_t (N UNet evaluations instead of one); the ideal speed-up implied by the stage times is
(T₁ + (N−1)·T_UNet) / T₁, where T₁ is the whole one-step decode.  Peak memory is measured in fresh child
processes (peak resident set, ``ru_maxrss``) that load the model and run one encode or one decode.
"""

from __future__ import annotations

import io
import multiprocessing
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sodec.models.sodec import SodecModel


@dataclass
class StageTimes:
    rows: dict[str, list[float]] = field(default_factory=dict)

    def time(self, name: str, fn: Callable, runs: int, warmup: int, device: torch.device):
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        for _ in range(warmup):
            result = fn()
        sync()
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            result = fn()
            sync()
            times.append((time.perf_counter() - t) * 1000)
        self.rows[name] = times
        return result

    def median(self, name: str) -> float:
        return statistics.median(self.rows[name])

    def table(self) -> list[str]:
        lines = ["| stage | median ms | min ms | max ms |", "|---|---:|---:|---:|"]
        for name, t in self.rows.items():
            lines.append(f"| {name} | {statistics.median(t):.1f} | {min(t):.1f} | {max(t):.1f} |")
        return lines


def build_model(model: str, rate: int | None, preset: str | None, device: str, dtype: str) -> SodecModel:
    """The model to time: a bundled name or folder, or a preset's graph with random weights (speed does not
    depend on weight values)."""
    if dtype != "float32" and not device.startswith("cuda"):
        raise SystemExit(f"sodec bench: {dtype} only on GPU (bf16 is ~300x slower than fp32 on CPUs without it)")
    if preset is not None:
        from sodec.models import preset_config

        torch.manual_seed(0)
        net = SodecModel(preset_config(preset), random_bases=True).eval()
        net.update()
        net.merge_lora()
        net = net.to(device)
    else:
        from sodec import api

        net = api.load_model(model, rate, device)
    net.set_synthesis_dtype(getattr(torch, dtype))
    return net


def ddim_chain(net: SodecModel, y_t: torch.Tensor, tokens: torch.Tensor, steps: int) -> torch.Tensor:
    """The multi-step baseline: ``steps`` DDIM steps from ŷ_t at t = 999 down to x₀ (η = 0)."""
    from diffusers import DDIMScheduler

    d = net.config.diffusion
    sched = DDIMScheduler(
        num_train_timesteps=d.num_train_timesteps, beta_start=d.beta_start, beta_end=d.beta_end,
        beta_schedule="scaled_linear", timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False,
        prediction_type=d.prediction_type,
    )  # fmt: skip
    sched.set_timesteps(steps)
    x = y_t
    for t in sched.timesteps:
        eps = net.denoiser.epsilon(x, tokens, int(t))
        x = sched.step(eps, t, x).prev_sample
    return x


def bench_image(height: int, width: int) -> torch.Tensor:
    """The bundled photo, scaled to cover ``height`` x ``width`` and centre-cropped: ``(1,3,H,W)`` in [0,1]."""
    import numpy as np
    from PIL import Image

    from sodec.api import example_image

    with Image.open(example_image()) as im:
        scale = max(width / im.width, height / im.height)
        im = im.convert("RGB").resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        left, top = (im.width - width) // 2, (im.height - height) // 2
        im = im.crop((left, top, left + width, top + height))
    return torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255


def _png(x: torch.Tensor) -> bytes:
    """The PNG ``sodec decompress`` would write (same zlib level)."""
    from PIL import Image

    from sodec.api import _to_uint8
    from sodec.imageio import PNG_COMPRESS_LEVEL

    buf = io.BytesIO()
    Image.fromarray(_to_uint8(x.float().clamp(0, 1))).save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def time_decode(net: SodecModel, height: int, width: int, runs: int, warmup: int, steps: int) -> list[str]:
    """Per-stage decode table and, for diffusion models, the one-step vs ``steps``-step comparison."""
    device = next(net.fidelity.parameters()).device
    x = bench_image(height, width).to(device)
    s = StageTimes()
    with torch.no_grad():
        streams = net.compress(x)
        hw = net.latent_size(height, width)
        y_hat, z_hat = s.time(
            "entropy decoding (ẑ, P, ŷ)", lambda: net.compression.decompress(streams, hw), runs, warmup, device
        )
        dtype = net.fidelity.tail[-1].weight.dtype  # the synthesis precision (fp16/bf16 on a GPU)
        y_hat, z_hat = y_hat.to(device, dtype), z_hat.to(device, dtype)
        x_f = s.time("fidelity decoder Da", lambda: net.fidelity(y_hat), runs, warmup, device)
        if net.has_diffusion:
            y_t = s.time("Hs + Ts", lambda: net.transform(y_hat, net.hyper_synthesis(z_hat)), runs, warmup, device)
            tokens = s.time(
                "backbone F + Fp", lambda: net.projector(net.guidance(x_f.clamp(0, 1))), runs, warmup, device
            )
            y_0 = s.time("UNet (one step)", lambda: net.denoiser(y_t, tokens), runs, warmup, device)
            x_hat = s.time("VAE decoder Dm", lambda: net.latent_decoder(y_0), runs, warmup, device)
        else:
            x_hat = x_f
        s.time("PNG write", lambda: _png(x_hat[..., :height, :width]), runs, warmup, device)
        one = lambda: _png(net.decompress(streams, height, width))  # noqa: E731
        s.time("total decode (one step)", one, runs, warmup, device)
        lines = s.table()
        if net.has_diffusion and steps > 1:

            def multi():
                yh, zh = net.compression.decompress(streams, hw)
                yh, zh = yh.to(device, dtype), zh.to(device, dtype)
                xf = net.fidelity(yh)
                yt = net.transform(yh, net.hyper_synthesis(zh))
                y0 = ddim_chain(net, yt, net.projector(net.guidance(xf.clamp(0, 1))), steps)
                return _png(net.latent_decoder(y0)[..., :height, :width])

            # The three figures of the ratio are taken interleaved, round by round, so that drift of the
            # machine's speed during the run does not land on one of them only.
            r = StageTimes()
            multi_name = f"total decode ({steps}-step DDIM)"
            for _ in range(max(2, runs // 2)):
                r.time("total decode (one step)", one, 1, 0, device)
                r.time("UNet (one step)", lambda: net.denoiser(y_t, tokens), 1, 0, device)
                r.time(multi_name, multi, 1, 0, device)
                for name, t in r.rows.items():
                    s.rows.setdefault(f"{name}, interleaved", []).extend(t)
            t1 = s.median("total decode (one step), interleaved")
            tn = s.median(f"{multi_name}, interleaved")
            ideal = (t1 + (steps - 1) * s.median("UNet (one step), interleaved")) / t1
            lines = s.table()
            lines += ["", f"one-step vs {steps}-step DDIM: measured speed-up {tn / t1:.2f}x, ideal {ideal:.2f}x "
                      f"(measured/ideal = {tn / t1 / ideal:.3f})"]  # fmt: skip
    return lines


def time_encode(net: SodecModel, height: int, width: int, runs: int, warmup: int) -> list[str]:
    from sodec.models.sodec import pad_to_multiple

    device = next(net.fidelity.parameters()).device
    x = bench_image(height, width).to(device)
    s = StageTimes()
    with torch.no_grad():
        xp = pad_to_multiple(x, net.config.downsampling)
        s.time(
            "analysis E + Ha", lambda: net.compression.hyper_analysis(net.compression.encoder(xp)), runs, warmup, device
        )
        s.time("total encode", lambda: net.compress(x), runs, warmup, device)
    return s.table()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _memory_child(phase: str, args: tuple, height: int, width: int, threads: int | None) -> tuple[float, float]:
    if threads:
        torch.set_num_threads(threads)
    net = build_model(*args)
    x = bench_image(height, width)
    with torch.no_grad():
        streams = net.compress(x)
        loaded = _rss_mb()
        if phase == "decode":
            net.decompress(streams, height, width)
    return loaded, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(
    model: str = "nano", rate: int | None = None, preset: str | None = None, size: tuple[int, int] = (512, 768),
    runs: int = 5, warmup: int = 1, steps: int = 50, device: str = "cpu", dtype: str = "float32",
    threads: int | None = None, memory: bool = True,
) -> str:  # fmt: skip
    """Run the benchmark and return a Markdown report."""
    if threads:
        torch.set_num_threads(threads)
    height, width = size
    args = (model, rate, preset, device, dtype)
    net = build_model(*args)
    name = f"preset {preset} (random weights)" if preset else f"model {model} rate {rate or 0}"
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine()
    lines = [
        f"{name} · {width}x{height} · device {device} ({gpu}) · {dtype} · torch {torch.__version__} · "
        f"{torch.get_num_threads()} threads · median of {runs} runs after {warmup} warm-up",
        "",
        "**decode**",
        "",
        *time_decode(net, height, width, runs, warmup, steps),
        "",
        "**encode**",
        "",
        *time_encode(net, height, width, runs, warmup),
    ]
    if memory:
        del net
        ctx = multiprocessing.get_context("spawn")
        lines += ["", "| phase (fresh process) | RSS after load + encode (MiB) | peak RSS (MiB) |", "|---|---:|---:|"]
        for phase in ("encode", "decode"):
            with ctx.Pool(1) as pool:
                loaded, peak = pool.apply(_memory_child, (phase, args, height, width, threads))
            lines.append(f"| {phase} | {loaded:.0f} | {peak:.0f} |")
    return "\n".join(lines)
