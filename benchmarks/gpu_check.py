"""One-command GPU check: what a machine with one GPU tells us about the paper-scale codec, in at most 9 minutes.

    python benchmarks/gpu_check.py --out gpu-check                 # one GPU, ≤ 9 minutes (--budget 540)
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-check  # the same code at tiny widths on CPU, ≈ 1-2 min

Phases, each in a child process with its own time box; each writes ``OUT/<phase>.json`` and ``OUT/<phase>.md`` as
soon as a measurement is done, and the parent rewrites ``OUT/gpu-check.json`` / ``OUT/gpu-check.md`` after every
phase, so a later failure or time-out never loses earlier results:

``decode``  the paper graph (HiFiC widths, SD 2.1-base UNet + VAE, ViT-H/14) at 512², random weights (speed does
            not depend on their values), in fp16 and bf16: decode time per stage with CUDA synchronisation and
            warm-up (``sodec bench``'s code), against the paper's 228 ms on an RTX A6000, and the one-step vs
            50-step DDIM ratio; peak GPU memory.
``train``   20 optimizer steps of each paper stage (1 rd, 2 warmup, 3 anneal, 4 adversarial) at 256² x 8 through the
            real loop (``sodec.train.loop.train``: accelerate, the config's precision, frozen bases cast to it),
            random weights, with and without ``model.gradient_checkpointing``: step time and peak GPU memory.
            Photos: a synthetic folder decoded in memory (the timing is the model's, not the data loader's);
            LPIPS-VGG: the converted weights if ``$SODEC_WEIGHTS`` has them, else random ones (same cost).
``nano``    ``sodec train NANO_CONFIG --out RUN --time-limit CHUNK`` repeatedly for the time that remains; every
            chunk ends with a checkpoint in RUN (default OUT/nano/<config name>), so the run goes on afterwards,
            anywhere: ``sodec train NANO_CONFIG --out RUN`` (on a CPU too).

``--dry-run`` runs all of it on the CPU at tiny widths (the ``tiny`` preset, 64² crops, 3 steps, float32, a
generated tiny nano-style config), to check the script without a GPU (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER_DECODE_MS = 228.0  # SODEC at 512x512 on an RTX A6000 (paper, Fig. 1)
PAPER_STAGES = {  # stage → config (stage 3: rate point 0; the others differ only in λ)
    "warmup": "configs/paper/stage2-warmup.yaml",
    "anneal": "configs/paper/stage3-anneal-rate0.yaml",
    "rd": "configs/paper/stage1-rd.yaml",
    "adversarial": "configs/paper/stage4-adversarial.yaml",
}
NETWORK_STAGES = ("fidelity decoder Da", "Hs + Ts", "backbone F + Fp", "UNet (one step)", "VAE decoder Dm")

GPU = dict(device="cuda", preset="paper", size=512, dtypes=["float16", "bfloat16"], runs=5, warmup=2, ddim=50,
           crop=256, batch=8, steps=20, photos=24, photo_side=320, boxes={"decode": 150, "train": 240}, lpips="vgg",
           chunk=150, min_chunk=30, startup=30, max_chunks=100, budget=540)  # fmt: skip
DRY = dict(device="cpu", preset="tiny", size=64, dtypes=["float32"], runs=2, warmup=1, ddim=3,
           crop=64, batch=2, steps=2, photos=6, photo_side=96, boxes={"decode": 180, "train": 300}, lpips="alex",
           chunk=3, min_chunk=1, startup=15, max_chunks=2, budget=600)  # fmt: skip


def run_group(cmd: list[str], timeout: float, log: Path) -> int | None:
    """Run ``cmd`` in its own process group, output to ``log``; at ``timeout`` the whole group (the command and
    its children: DataLoader workers, ``sodec train``) is terminated.  Returns the exit code, None on time-out."""
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            return proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            return None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class PhaseLog:
    """A phase's results: rewritten to ``OUT/<name>.json`` and ``.md`` after every record."""

    def __init__(self, out: Path, name: str, header: list[str]) -> None:
        self.out, self.name, self.header = out, name, header
        self.records: list[dict] = []
        self.lines: list[str] = []
        self.flush()

    def add(self, record: dict, lines: list[str] = ()) -> None:
        self.records.append(record)
        self.lines += list(lines)
        self.flush()

    def flush(self) -> None:
        results = {"phase": self.name, "records": self.records}
        write_atomic(self.out / f"{self.name}.json", json.dumps(results, indent=1))
        write_atomic(self.out / f"{self.name}.md", "\n".join([*self.header, *self.lines]) + "\n")


def synthetic_photos(folder: Path, count: int, side: int) -> Path:
    """Smooth random colour fields with grain, as JPEGs (the timing phases need pixels, not photographs)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(small).resize((side, side), Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, (side, side, 3))
        Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=92)
    return folder


def lpips_weights(out: Path, net: str) -> str:
    """LPIPS backbone for the training phases: the converted one if present, else random (timing only)."""
    from sodec.eval.lpips import backbone_path

    if backbone_path(net).is_file():
        return f"converted ({backbone_path(net)})"
    import lpips
    import torch
    from safetensors.torch import save_file

    folder = out / "lpips-random"
    folder.mkdir(parents=True, exist_ok=True)
    if not backbone_path(net, folder).is_file():
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
        state = {}
        for i, conv in enumerate(convs):
            state[f"conv{i}.weight"] = conv.weight.detach().contiguous()
            state[f"conv{i}.bias"] = conv.bias.detach().contiguous()
        save_file(state, str(backbone_path(net, folder)))
    os.environ["SODEC_WEIGHTS"] = str(folder)
    return "random weights (timing only: no converted weights on this machine)"


def parse_table(lines: list[str]) -> dict[str, float]:
    """Median ms per stage from ``sodec bench``'s Markdown table."""
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("stage", "---"):
            try:
                rows[cells[0]] = float(cells[1])
            except ValueError:
                pass
    return rows


# ------------------------------------------------------------------------------------------------ phases
def phase_decode(args, s: dict) -> None:
    import torch

    from sodec import bench

    size = s["size"]
    log = PhaseLog(args.out, "decode", [f"## Decode: preset {s['preset']} at {size}x{size}, random weights", ""])
    t = time.time()
    try:  # `sodec bench --preset` builds on the CPU; random init of 1.6 B parameters is far faster on the GPU
        from sodec.models import SodecModel, preset_config

        torch.manual_seed(0)
        with torch.device(s["device"]):
            net = SodecModel(preset_config(s["preset"]), random_bases=True).eval()
        net.update()
        net.merge_lora()
        built_on = "device"
    except Exception as e:
        print(f"building on {s['device']} failed ({type(e).__name__}: {e}); building on the CPU", flush=True)
        net, built_on = bench.build_model("nano", None, s["preset"], s["device"], s["dtypes"][0]), "cpu"
    built = time.time() - t
    for dtype in s["dtypes"]:
        net.set_synthesis_dtype(getattr(torch, dtype))
        if s["device"] == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.time()
        lines = bench.time_decode(net, size, size, s["runs"], s["warmup"], s["ddim"])
        medians = parse_table(lines)
        ratio = next((line for line in lines if line.startswith("one-step vs")), "")
        total = medians.get("total decode (one step)")
        network = sum(medians.get(k, 0.0) for k in NETWORK_STAGES)
        record = {
            "dtype": dtype, "median_ms": medians, "total_ms": total, "network_ms": network,
            "paper_ms": PAPER_DECODE_MS, "ddim": ratio, "build_s": round(built, 1), "built_on": built_on,
            "wall_s": round(time.time() - t, 1),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if s["device"] == "cuda" else None,
        }  # fmt: skip
        summary = (f"total one-step decode {total:.1f} ms (networks {network:.1f} ms) vs the paper's "
                   f"{PAPER_DECODE_MS:.0f} ms (RTX A6000)") if total else "no total"  # fmt: skip
        if record["peak_gib"] is not None:
            summary += f"; peak GPU memory {record['peak_gib']:.2f} GiB"
        log.add(record, [f"### {dtype}", "", *lines, "", summary, ""])


def phase_train(args, s: dict) -> None:
    import torch
    from accelerate.state import AcceleratorState

    from sodec.train.config import load_config
    from sodec.train.loop import train

    photos = synthetic_photos(args.out / "photos", s["photos"], s["photo_side"])
    lpips_note = lpips_weights(args.out, s["lpips"])
    header = [
        f"## Training steps: {s['steps']} steps per paper stage at {s['crop']}² x {s['batch']}, random weights",
        "",
        f"preset {s['preset']}; LPIPS-{s['lpips']} backbone: {lpips_note}; step time = mean over the steps after the "
        f"first {min(5, s['steps'] - 1)} (warm-up); peak = torch.cuda.max_memory_allocated / reserved",
        "",
        "| stage | precision | gradient checkpointing | step s | peak allocated GiB | peak reserved GiB | build s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    log = PhaseLog(args.out, "train", header)
    stages = [st for st in args.stages.split(",") if st]
    for stage in stages:
        for checkpointing in (False, True):
            overrides = [
                f"model.preset={s['preset']}", "model.random_bases=true", "model.init=null",
                f"model.gradient_checkpointing={str(checkpointing).lower()}",
                f"data.train={photos}", "data.val=null", "data.streaming=false", "data.workers=0",
                f"data.crop={s['crop']}", f"data.batch_size={s['batch']}",
                f"steps={s['steps']}", "log_every=1", "checkpoint_every=1000000000", "val.every=0",
            ]  # fmt: skip
            if args.dry_run:  # float32 on the CPU; LPIPS-Alex for VGG16's cost
                overrides += ['precision="no"', f"loss.lpips_net={s['lpips']}"]  # quoted: a bare no is false
            config = load_config(REPO / PAPER_STAGES[stage], overrides)
            config.out = str(args.out / "train" / f"{stage}-{'ckpt' if checkpointing else 'plain'}")
            record = {"stage": stage, "precision": config.precision, "gradient_checkpointing": checkpointing}
            for on_device in (True, False):  # build on the GPU (fast random init); on failure, on the CPU
                gc.collect()
                if s["device"] == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                AcceleratorState._reset_state(True)  # stages differ in precision
                t = time.time()
                try:
                    if on_device:
                        with torch.device(s["device"]):
                            train(config, progress=False, save=False)
                    else:
                        train(config, progress=False, save=False)
                except Exception as e:  # OOM, a bug: recorded, the next run goes on
                    record["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                    record["built_on"] = "device" if on_device else "cpu"
                    if "out of memory" in str(e).lower():
                        break
                    continue
                record.pop("error", None)
                record["built_on"] = "device" if on_device else "cpu"
                record["wall_s"] = round(time.time() - t, 1)
                break
            run = Path(config.out)
            if "error" not in record:
                import csv

                with (run / "log.csv").open() as f:
                    seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
                k = min(5, len(seconds) - 1)
                record["step_s"] = (seconds[-1] - seconds[k - 1]) / (len(seconds) - k) if k > 0 else seconds[-1]
                record["build_s"] = round(record["wall_s"] - seconds[-1], 1)
            if s["device"] == "cuda":
                record["peak_alloc_gib"] = torch.cuda.max_memory_allocated() / 2**30
                record["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30

            cells = [
                format(record[key], fmt) if record.get(key) is not None else "–"
                for key, fmt in (("step_s", ".3f"), ("peak_alloc_gib", ".2f"), ("peak_reserved_gib", ".2f"),
                                 ("build_s", ".1f"))
            ]  # fmt: skip
            row = f"| {stage} | {record['precision']} | {'yes' if checkpointing else 'no'} | {' | '.join(cells)} |"
            if "error" in record:
                row += f" {record['error']}"
            log.add(record, [row])


def dry_nano_config(out: Path, photos: Path) -> Path:
    """A tiny stand-in for a nano config (dry run): stage rd of the tiny preset on the synthetic photos."""
    import yaml

    config = {
        "stage": "rd", "out": str(out / "nano" / "dry-nano"), "steps": 100000, "checkpoint_every": 5,
        "log_every": 5, "model": {"preset": "tiny"}, "loss": {"lmbda": 0.5},
        "data": {"train": str(photos), "val": None, "crop": 64, "batch_size": 2},
        "val": {"every": 0}, "notes": "gpu_check --dry-run stand-in for a nano config",
    }  # fmt: skip
    path = out / "dry-nano.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def phase_nano(args, s: dict) -> None:
    from sodec.train.checkpoint import list_checkpoints

    if args.dry_run:
        config = dry_nano_config(args.out, synthetic_photos(args.out / "photos", s["photos"], s["photo_side"]))
    else:
        config = Path(args.nano_config)
    run = Path(args.nano_run) if args.nano_run else args.out / "nano" / config.stem
    resume = " ".join(["sodec train", str(config), "--out", str(run), *[f"--set {v}" for v in args.nano_set]])
    header = [f"## nano recipe: `{config}` in `--time-limit` chunks", "",
              f"run folder `{run}`; continue it anywhere (a CPU too) with `{resume}`", "",
              "| chunk | time limit s | wall s | exit | newest checkpoint |", "|---:|---:|---:|---:|---|"]  # fmt: skip
    log = PhaseLog(args.out, "nano", header)
    for chunk in range(1, s["max_chunks"] + 1):
        remaining = args.deadline - time.time()
        limit = min(s["chunk"], remaining - s["startup"] - 10)
        if limit < s["min_chunk"] or (run / "final").is_dir():
            break
        cmd = [sys.executable, "-m", "sodec.cli", "train", str(config), "--out", str(run),
               "--time-limit", f"{limit:.0f}", "-q"]  # fmt: skip
        for item in args.nano_set:
            cmd += ["--set", item]
        t = time.time()
        chunk_log = args.out / f"nano-chunk-{chunk}.log"
        rc = run_group(cmd, remaining - 5, chunk_log)
        rc = "timeout" if rc is None else rc
        tail = chunk_log.read_text(errors="replace").strip().splitlines()[-3:]
        newest = list_checkpoints(run / "checkpoints")
        record = {"chunk": chunk, "time_limit_s": round(limit), "wall_s": round(time.time() - t, 1), "exit": rc,
                  "checkpoint": newest[-1].name if newest else None, "tail": tail}  # fmt: skip
        log.add(record, [f"| {chunk} | {limit:.0f} | {record['wall_s']} | {rc} | {record['checkpoint'] or '–'} |"])
        if rc != 0:
            break


PHASES = {"decode": phase_decode, "train": phase_train, "nano": phase_nano}


# ------------------------------------------------------------------------------------------------ driver
def environment(s: dict) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
           "cpus": os.cpu_count(), "device": s["device"], "dry_run": s["device"] == "cpu"}  # fmt: skip
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported())  # fmt: skip
    return env


def write_summary(out: Path, summary: dict) -> None:
    write_atomic(out / "gpu-check.json", json.dumps(summary, indent=1))
    env = summary["environment"]
    lines = ["# GPU check", "", "`" + " · ".join(f"{k} {v}" for k, v in env.items()) + "`", "",
             "| phase | status | seconds |", "|---|---|---:|"]  # fmt: skip
    for name, p in summary["phases"].items():
        lines.append(f"| {name} | {p['status']} | {p.get('seconds', '')} |")
    for name in summary["phases"]:
        md = out / f"{name}.md"
        if md.is_file():
            lines += ["", md.read_text().rstrip()]
    write_atomic(out / "gpu-check.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="One-command GPU check of the paper-scale codec (benchmarks/gpu_check.py)")
    ap.add_argument("--out", type=Path, required=True, help="results folder (created)")
    ap.add_argument("--dry-run", action="store_true", help="the same code at tiny widths on the CPU")
    ap.add_argument("--budget", type=float, help="seconds in all (default 540; dry run 600)")
    ap.add_argument("--phases", default="decode,train,nano", help="which phases, in order")
    ap.add_argument("--stages", default="warmup,anneal,rd,adversarial", help="paper stages of the train phase")
    ap.add_argument("--nano-config", default="configs/nano/stage2-warmup.yaml", help="the nano phase's config")
    ap.add_argument("--nano-run", help="the nano phase's run folder (default OUT/nano/<config name>)")
    ap.add_argument("--nano-set", action="append", default=[], metavar="KEY=VALUE", help="passed to sodec train")
    ap.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this (child) process
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    s = DRY if args.dry_run else GPU
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase:  # child
        sys.path.insert(0, str(REPO / "src"))
        PHASES[args.phase](args, s)
        return 0

    start = time.time()
    budget = args.budget or s["budget"]
    deadline = start + budget
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device (use --dry-run to check the script on a CPU)", file=sys.stderr)
            return 2
    summary = {"environment": environment(s), "budget_s": budget, "phases": {}}
    phases = [p for p in args.phases.split(",") if p]
    if unknown := [p for p in phases if p not in PHASES]:
        print(f"gpu_check: unknown phases {unknown} (choose from {', '.join(PHASES)})", file=sys.stderr)
        return 2
    for p in phases:
        summary["phases"][p] = {"status": "pending"}
    write_summary(args.out, summary)
    for i, name in enumerate(phases):
        later = len(phases) - i - 1
        left = deadline - time.time()
        box = s["boxes"].get(name, left)
        box = min(box, left - 60 * later) if later else left  # leave the later phases a minute each
        if box < 10:
            summary["phases"][name] = {"status": "skipped: no time left"}
            write_summary(args.out, summary)
            continue
        cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(args.out), "--phase", name,
               "--deadline", str(time.time() + box), "--stages", args.stages,
               "--nano-config", args.nano_config]  # fmt: skip
        if args.dry_run:
            cmd.append("--dry-run")
        if args.nano_run:
            cmd += ["--nano-run", args.nano_run]
        for item in args.nano_set:
            cmd += ["--nano-set", item]
        t = time.time()
        print(f"gpu_check: {name} (at most {box:.0f} s)", file=sys.stderr, flush=True)
        rc = run_group(cmd, box, args.out / f"{name}.log")
        if rc is None:
            status = f"stopped at its time box ({box:.0f} s); results so far kept"
        else:
            status = "ok" if rc == 0 else f"failed (exit {rc}; see {name}.log)"
        summary["phases"][name] = {"status": status, "seconds": round(time.time() - t, 1)}
        write_summary(args.out, summary)
    print(f"gpu_check: results in {args.out}/gpu-check.md ({time.time() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
