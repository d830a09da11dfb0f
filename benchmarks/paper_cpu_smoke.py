"""Paper widths on the CPU: one training step of every paper stage, then one compress + decompress.

    PYTHONPATH=src python benchmarks/paper_cpu_smoke.py --out /tmp/paper-smoke [--crop 128] [--preset tiny]

Builds the ``paper`` preset at full width with random weights (SD-2.1-base-shaped UNet and VAE, ViT-H/14-shaped
guidance, HiFiC-width compression module) from the paper configs (configs/paper/stage{1..4}*.yaml) at batch 1
on small crops: it catches the shape, dtype and width bugs that the tiny preset cannot.  Each stage runs in
its own child process, so its peak RSS is that stage's own (``ru_maxrss``); the parent watches each child's
RSS and stops one that passes ``--max-rss-gib`` (the table then says it does not fit).  ``--preset tiny``
runs the same code at test widths (seconds; tests/test_paper_smoke.py without ``--paper``).

Prints a Markdown table: stage, first and last step seconds, build seconds, peak RSS, status.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import synthetic_photos  # noqa: E402  (the benchmarks folder is not a package)

STAGES = {  # paper stage → config (stage 3 at rate point 0; the other rate points differ only in λ)
    "rd": "configs/paper/stage1-rd.yaml",
    "warmup": "configs/paper/stage2-warmup.yaml",
    "anneal": "configs/paper/stage3-anneal-rate0.yaml",
    "adversarial": "configs/paper/stage4-adversarial.yaml",
}
CODEC = "compress+decompress"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def random_lpips(out: Path, net: str) -> str:
    """LPIPS backbone: the converted one if this machine has it, else random weights (timing and shapes only)."""
    import torch
    from safetensors.torch import save_file

    from sodec.eval.lpips import backbone_path

    if backbone_path(net).is_file():
        return "converted"
    folder = out / "lpips-random"
    if not backbone_path(net, folder).is_file():
        import lpips

        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
        state = {}
        for i, conv in enumerate(convs):
            state[f"conv{i}.weight"], state[f"conv{i}.bias"] = conv.weight.detach(), conv.bias.detach()
        folder.mkdir(parents=True, exist_ok=True)
        save_file(state, str(backbone_path(net, folder)))
    os.environ["SODEC_WEIGHTS"] = str(folder)
    return "random"


# ------------------------------------------------------------------------------------------------ children
def child_stage(args) -> dict:
    """One paper stage, ``args.steps`` steps at batch 1 on ``args.crop``² crops, float32, nothing saved."""
    import csv

    import torch

    from sodec.train.config import load_config
    from sodec.train.loop import train

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    overrides = [
        f"model.preset={args.preset}", "model.random_bases=true", "model.init=null",
        f"data.train={out / 'photos'}", "data.val=null", "data.streaming=false", "data.workers=0",
        f"data.crop={args.crop}", "data.batch_size=1", "data.max_side=null", 'precision="no"',
        f"steps={args.steps}", "log_every=1", "checkpoint_every=1000000000", "val.every=0",
        f"loss.lpips_net={args.lpips}",
    ]  # fmt: skip
    if args.stage == "adversarial":
        overrides.append("loss.adversarial_start=0")  # the discriminator and its step from the first step
    config = load_config(REPO / STAGES[args.stage], overrides)
    config.out = str(out / "train" / args.stage)
    t = time.time()
    train(config, progress=False, save=False)
    wall = time.time() - t
    with (Path(config.out) / "log.csv").open() as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    steps = [b - a for a, b in zip([0.0, *seconds], seconds)]
    return {"first_step_s": steps[0], "last_step_s": steps[-1], "build_s": wall - seconds[-1]}


def child_codec(args) -> dict:
    """Build the preset's model with random weights, compress one ``crop``² image and decode it (diffusion)."""
    import torch

    from sodec.models import SodecModel, preset_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t = time.time()
    net = SodecModel(preset_config(args.preset), random_bases=True).eval()
    net.update()
    net.merge_lora()
    build = time.time() - t
    x = torch.rand(1, 3, args.crop, args.crop)
    t = time.time()
    streams = net.compress(x)
    compress = time.time() - t
    t = time.time()
    x_hat = net.decompress(streams, args.crop, args.crop)
    decompress = time.time() - t
    if x_hat.shape != x.shape or not torch.isfinite(x_hat).all():
        raise RuntimeError(f"decoded {tuple(x_hat.shape)} (finite: {bool(torch.isfinite(x_hat).all())})")
    n_bytes = len(streams.z_stream) + len(streams.y_stream)
    return {"first_step_s": compress, "last_step_s": decompress, "build_s": build, "bytes": n_bytes}


# ------------------------------------------------------------------------------------------------ parent
def rss_gib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def run_child(args, stage: str) -> dict:
    """Run one stage in a child process; stop it past ``--max-rss-gib`` or ``--timeout``."""
    result = Path(args.out) / f"{stage.replace('+', '-')}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", stage, "--result", str(result)]
    cmd += ["--out", str(args.out), "--crop", str(args.crop), "--preset", args.preset, "--steps", str(args.steps)]
    cmd += ["--lpips", args.lpips, "--threads", str(args.threads)]
    log = (Path(args.out) / f"{stage.replace('+', '-')}.log").open("w")
    t, seen, why = time.time(), 0.0, None
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    while proc.poll() is None:
        seen = max(seen, rss_gib(proc.pid))
        if seen > args.max_rss_gib:
            why = f"does not fit: RSS passed {args.max_rss_gib:g} GiB"
        elif time.time() - t > args.timeout:
            why = f"timed out after {args.timeout:g} s"
        if why:
            proc.kill()
            proc.wait()
            break
        time.sleep(0.5)
    log.close()
    if why is None and result.is_file():
        return {"stage": stage, "status": "ok", **json.loads(result.read_text())}
    if why is None:
        tail = (Path(args.out) / f"{stage.replace('+', '-')}.log").read_text().strip().splitlines()[-1:]
        why = f"failed (exit {proc.returncode}): {tail[0][:200] if tail else ''}"
    return {"stage": stage, "status": why, "peak_rss_gib": seen}


def table(rows: list[dict]) -> list[str]:
    lines = ["| stage | first step s | last step s | build s | peak RSS GiB | status |"]
    lines.append("|---|---:|---:|---:|---:|---|")
    for r in rows:
        cells = [format(r[k], ".1f") if r.get(k) is not None else "–" for k in
                 ("first_step_s", "last_step_s", "build_s")]  # fmt: skip
        lines.append(f"| {r['stage']} | {' | '.join(cells)} | {r.get('peak_rss_gib', 0):.2f} | {r['status']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (photos, logs, per-stage results)")
    parser.add_argument("--preset", default="paper", help="paper (full width) or tiny (the same code, seconds)")
    parser.add_argument("--crop", type=int, default=128, help="training crop and coded image side (multiple of 64)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per stage (the last is timed warm)")
    parser.add_argument("--stages", default=",".join([*STAGES, CODEC]), help="comma-separated subset")
    parser.add_argument("--lpips", default="vgg", help="LPIPS backbone of the losses (the paper: vgg)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-rss-gib", type=float, default=17.0, help="stop a stage past this RSS")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per stage")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        random_lpips(args.out, args.lpips)
        args.stage = args.child
        record = child_codec(args) if args.child == CODEC else child_stage(args)
        record["peak_rss_gib"] = peak_rss_gib()
        args.result.write_text(json.dumps(record))
        return 0
    synthetic_photos(args.out / "photos", 2, max(256, args.crop * 2))
    note = random_lpips(args.out, args.lpips)  # once here: the children find it
    rows = []
    for stage in [s for s in args.stages.split(",") if s]:
        if stage not in STAGES and stage != CODEC:
            parser.error(f"unknown stage {stage!r} (choose from {', '.join([*STAGES, CODEC])})")
        rows.append(run_child(args, stage))
        print(f"{stage}: {rows[-1]['status']}", flush=True)
    print(f"\npreset {args.preset}, random weights, batch 1, {args.crop}² crops, float32, {args.steps} steps per "
          f"stage, {args.threads} threads, LPIPS-{args.lpips} ({note} weights); {CODEC}: first = compress s, "
          "last = decompress s (one-step diffusion)\n")  # fmt: skip
    print("\n".join(table(rows)))
    (args.out / "table.md").write_text("\n".join(table(rows)) + "\n")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
