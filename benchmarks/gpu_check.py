"""One-command GPU check: what a machine with one GPU tells us about the paper-scale codec, in at most 9 minutes.

    python benchmarks/gpu_check.py --pack-nano-data runs/nano-data.tar   # once, where data/nano exists (≈ 40 MiB)
    python benchmarks/gpu_check.py --out gpu-check --nano-data runs/nano-data.tar   # one GPU, ≤ 9 min (--budget 540)
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-check  # the same code paths at tiny widths on a CPU

Phases, each in a child process with its own time box; each writes ``OUT/<phase>.json`` and ``OUT/<phase>.md`` as
soon as a measurement is done, and the parent rewrites ``OUT/gpu-check.json`` / ``OUT/gpu-check.md`` after every
phase, so a later failure or time-out never loses earlier results.  Each phase ends ``ok``, ``failed: reason``
or ``skipped: reason`` in that table; the exit code is 1 if any phase failed.

``decode``  the paper graph (HiFiC widths, SD 2.1-base UNet + VAE, ViT-H/14) at 512², random weights (speed does
            not depend on their values), built on the GPU through ``sodec.models.placement.build_on`` (every tensor
            checked to be there), in fp16 and bf16: compress, then decode time per stage with CUDA synchronisation
            and warm-up (``sodec bench``'s code), against the paper's 228 ms on an RTX A6000, and the one-step vs
            50-step DDIM ratio; peak GPU memory.
``train``   20 optimizer steps of each paper stage (1 rd, 2 warmup, 3 anneal, 4 adversarial) at 256² x 8 through the
            real loop (``sodec.train.loop.train``: accelerate, the config's precision, frozen bases cast to it,
            photos streamed by DataLoader workers), random weights, with and without
            ``model.gradient_checkpointing``: step time and peak GPU memory.  Photos: a synthetic folder;
            LPIPS-VGG: the converted weights if ``$SODEC_WEIGHTS`` has them, else random ones (same cost).
``nano``    ``sodec train NANO_CONFIG --out RUN --time-limit CHUNK`` repeatedly for the time that remains; by
            default v3's stage 1 (``configs/nano/stage1-rd-gdn.yaml``) from scratch; ``--nano-config`` and
            ``--nano-resume`` name the campaign's next stage and the committed run it resumes (its checkpoints are
            copied into RUN first), on the photos of ``--nano-data`` (data/nano is git-ignored and 415 MB:
            ``--pack-nano-data`` packs its train/dev photos small enough to carry).  Every chunk ends
            with a checkpoint in RUN (default OUT/nano/<config name>), so the run goes on afterwards, anywhere.
            Without photos the phase is skipped, and says why.

``--dry-run`` runs the same code paths on the CPU at tiny widths (the ``tiny`` preset, 64² crops, 2 steps): float16
and bfloat16 decoding (every base in half weights), every paper stage in its config's precision (bf16 autocast,
frozen bases cast to bf16), streaming with a worker process, and the nano phase from a generated packed photo
file, then resumed from a copied run folder (tests/test_gpu_check.py).
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

# v3's stage 1 (docs/decisions.md, "nano stage 1 transforms"): needs nothing but the photos.  The campaign's next
# stage, resumed from its committed run, is named with --nano-config / --nano-resume (artifacts/nano/README.md).
DEFAULT_NANO_CONFIG = "configs/nano/stage1-rd-gdn.yaml"

GPU = dict(device="cuda", preset="paper", size=512, dtypes=["float16", "bfloat16"], runs=5, warmup=2, ddim=50,
           crop=256, batch=8, steps=20, photos=24, photo_side=320, workers=4, boxes={"decode": 150, "train": 240},
           lpips="vgg", chunk=150, min_chunk=30, startup=30, max_chunks=100, budget=540)  # fmt: skip
# The dry run takes the GPU's code paths on the CPU: half precision (float16 and bfloat16 decode; bf16 autocast and
# bf16 frozen bases in training), streamed photos with a worker process, every stage, and the nano phase
# from a packed photo file and the committed checkpoint, at tiny crops.
DRY = dict(device="cpu", preset="tiny", size=64, dtypes=["float32", "float16", "bfloat16"], runs=1, warmup=0, ddim=2,
           crop=64, batch=2, steps=2, photos=6, photo_side=96, workers=1, boxes={"decode": 240, "train": 600},
           lpips="alex", chunk=3, min_chunk=1, startup=20, max_chunks=2, budget=1200,
           nano_set=["data.crop=64", "data.batch_size=1", "data.workers=0", "val.every=0"])  # fmt: skip


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
        self.status: str | None = None  # "failed: reason" / "skipped: reason", read by the parent
        self.flush()

    def add(self, record: dict, lines: list[str] = ()) -> None:
        self.records.append(record)
        self.lines += list(lines)
        self.flush()

    def fail(self, reason: str) -> int:
        """Mark the phase failed (the first reason is kept); returns the child's exit code, 1."""
        if not (self.status or "").startswith("failed"):
            self.status = f"failed: {reason}"
        self.lines += ["", f"**{self.status}**"]
        self.flush()
        return 1

    def skip(self, reason: str) -> int:
        self.status = f"skipped: {reason}"
        self.lines += [f"**{self.status}**"]
        self.flush()
        return 0

    def flush(self) -> None:
        results = {"phase": self.name, "status": self.status, "records": self.records}
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
def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


def build_decode_model(s: dict):
    """The preset's graph with random weights, built through ``build_on``: the whole model on the device, checked
    (compressai's entropy models ignore a ``torch.device`` context).  Returns the model and where it was built."""
    import torch

    from sodec.models import SodecModel, preset_config
    from sodec.models.placement import build_on

    def factory() -> SodecModel:
        torch.manual_seed(0)
        net = SodecModel(preset_config(s["preset"]), random_bases=True).eval()
        net.compression.cpu()  # the coder's tables derived on the CPU, as an exported model's are
        net.update()
        net.merge_lora()
        return net

    try:  # random init of 1.6 B parameters is far faster on the GPU
        return build_on(s["device"], factory), "device"
    except Exception as e:
        if "out of memory" in str(e).lower():
            raise
        print(f"building on {s['device']} failed ({error_text(e)}); building on the CPU, then moving", flush=True)
        return build_on(s["device"], factory, init_on_device=False), "cpu"


def phase_decode(args, s: dict) -> int:
    import torch

    from sodec import bench

    size = s["size"]
    log = PhaseLog(args.out, "decode", [f"## Decode: preset {s['preset']} at {size}x{size}, random weights", ""])
    t = time.time()
    try:
        net, built_on = build_decode_model(s)
    except Exception as e:
        return log.fail(f"building the model: {error_text(e)}")
    built = time.time() - t
    for dtype in s["dtypes"]:
        t = time.time()
        try:  # the compress call (inside time_decode) too: a device mix-up fails here, recorded
            net.set_synthesis_dtype(getattr(torch, dtype))
            if s["device"] == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            lines = bench.time_decode(net, size, size, s["runs"], s["warmup"], s["ddim"])
        except Exception as e:
            log.add({"dtype": dtype, "error": error_text(e)}, [f"### {dtype}", "", f"failed: {error_text(e)}", ""])
            log.fail(f"{dtype}: {error_text(e)}")
            continue
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
    return 1 if log.status else 0


def train_runs(args, s: dict) -> list[tuple[str, str | None, bool]]:
    """(stage, precision override, gradient checkpointing) of the train phase: each stage in its config's precision
    (bf16 autocast works on a CPU too) with and without checkpointing.  No fp16 run in the dry run: accelerate's
    fp16 autocast is a no-op on a CPU (a Linear under it returns float32), so fp16-cast bases would meet float32
    activations there and nowhere on a GPU; the decode phase runs every base in float16 instead."""
    return [(st, None, ckpt) for st in args.stages.split(",") if st for ckpt in (False, True)]


def phase_train(args, s: dict) -> int:
    import torch
    from accelerate.state import AcceleratorState

    from sodec.train.config import load_config
    from sodec.train.loop import train

    photos = synthetic_photos(args.out / "photos", s["photos"], s["photo_side"])
    lpips_note = lpips_weights(args.out, s["lpips"])
    header = [
        f"## Training steps: {s['steps']} steps per paper stage at {s['crop']}² x {s['batch']}, random weights",
        "",
        f"preset {s['preset']}; LPIPS-{s['lpips']} backbone: {lpips_note}; photos streamed by {s['workers']} "
        f"DataLoader worker(s); frozen bases cast to the training precision; step time = mean over the steps after "
        f"the first {min(5, s['steps'] - 1)} (warm-up); peak = torch.cuda.max_memory_allocated / reserved",
        "",
        "| stage | precision | gradient checkpointing | step s | peak allocated GiB | peak reserved GiB | build s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    log = PhaseLog(args.out, "train", header)
    for stage, precision, checkpointing in train_runs(args, s):
        overrides = [
            f"model.preset={s['preset']}", "model.random_bases=true", "model.init=null",
            f"model.gradient_checkpointing={str(checkpointing).lower()}",
            f"data.train={photos}", "data.val=null", "data.streaming=true", f"data.workers={s['workers']}",
            f"data.crop={s['crop']}", f"data.batch_size={s['batch']}",
            f"steps={s['steps']}", "log_every=1", "checkpoint_every=1000000000", "val.every=0",
        ]  # fmt: skip
        if precision is not None:
            overrides.append(f"precision={precision}")
        if args.dry_run:  # LPIPS-Alex for VGG16's cost
            overrides.append(f"loss.lpips_net={s['lpips']}")
        try:
            config = load_config(REPO / PAPER_STAGES[stage], overrides)
        except Exception as e:  # an unknown stage, a config error: recorded, the next run goes on
            log.add({"stage": stage, "error": error_text(e)}, [f"| {stage} | – | – | – | – | – | – | {error_text(e)}"])
            log.fail(f"{stage}: {error_text(e)}")
            continue
        label = "ckpt" if checkpointing else "plain"
        config.out = str(args.out / "train" / f"{stage}-{config.precision}-{label}")
        record = {"stage": stage, "precision": config.precision, "gradient_checkpointing": checkpointing}
        # frozen bases in the training precision, as on a GPU (the loop does it on CUDA only by default)
        cast = True if config.precision in ("fp16", "bf16") else None
        for init_on_device in (None, False):  # default (random init on the device); on failure, on the CPU
            gc.collect()
            if s["device"] == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            AcceleratorState._reset_state(True)  # stages differ in precision
            t = time.time()
            try:
                train(config, progress=False, save=False, init_on_device=init_on_device, cast_bases=cast)
            except Exception as e:  # OOM, a bug: recorded, the next run goes on
                record["error"] = error_text(e)
                record["built_on"] = "device" if init_on_device is None else "cpu"
                if "out of memory" in str(e).lower():
                    break
                continue
            record.pop("error", None)
            record["built_on"] = "device" if init_on_device is None else "cpu"
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
            row += f" failed: {record['error']}"
            log.fail(f"{stage} ({record['precision']}, checkpointing {'on' if checkpointing else 'off'}): "
                     f"{record['error']}")  # fmt: skip
        log.add(record, [row])
    return 1 if log.status else 0


# ------------------------------------------------------------------------------------------------ nano photos
PACK_FORMATS = {"jpeg": ("JPEG", ".jpg", {}), "webp": ("WEBP", ".webp", {"method": 4})}


def pack_nano_data(source: Path, dest: Path, side: int = 1024, quality: int = 90, fmt: str = "jpeg") -> tuple[int, int]:
    """Pack ``source``'s ``train/`` and ``dev/`` photos into the tar ``dest``: each EXIF-oriented, downscaled
    (LANCZOS) so its longer side ≤ ``side`` (the nano configs' ``data.max_side``), as a JPEG or WebP
    (``fmt``) of ``quality``.  Deterministic: sorted names, fixed metadata, so the same photos give the same
    bytes.  Returns (photos, bytes)."""
    import io
    import tarfile

    from PIL import Image, ImageOps

    from sodec.train.data import list_photos

    pil_format, suffix, options = PACK_FORMATS[fmt]
    count = 0
    tmp = dest.with_name(f".{dest.name}.tmp")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for split in ("train", "dev"):
            folder = source / split
            if not folder.is_dir():
                raise SystemExit(f"gpu_check: no {folder} (build the set with `sodec data {source}`)")
            names = set()
            for path in sorted(list_photos(folder)):
                name = f"{split}/{path.relative_to(folder).with_suffix(suffix).as_posix()}"
                if name in names:
                    raise SystemExit(f"gpu_check: two photos pack to {name}")
                names.add(name)
                with Image.open(path) as im:
                    im = ImageOps.exif_transpose(im).convert("RGB")
                    if max(im.size) > side:
                        k = side / max(im.size)
                        im = im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.LANCZOS)
                    buf = io.BytesIO()
                    im.save(buf, pil_format, quality=quality, **options)
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = buf.tell(), 0, 0o644
                buf.seek(0)
                tar.addfile(info, buf)
                count += 1
    tmp.replace(dest)
    return count, dest.stat().st_size


def unpack_nano_data(pack: Path, dest: Path) -> Path:
    """Unpack a ``--pack-nano-data`` tar into ``dest`` (``train/``, ``dev/``); returns ``dest``."""
    import shutil
    import tarfile

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(pack) as tar:
        tar.extractall(dest, filter="data")  # no absolute paths, links or devices
    return dest


def nano_plan(args, s: dict) -> tuple[Path, list[str], list[str]] | str:
    """The nano phase's config, overrides and notes, or the reason to skip it."""
    from sodec.train.config import load_config

    config_path = REPO / args.nano_config
    overrides = [*s.get("nano_set", []), *args.nano_set]
    notes = []
    if args.nano_data and args.nano_data != "none":
        root = unpack_nano_data(Path(args.nano_data).resolve(), args.out / "nano-data")
        overrides += [f"data.train={root / 'train'}", f"data.val={root / 'dev' if (root / 'dev').is_dir() else 'null'}"]
        notes.append(f"photos: `{args.nano_data}` unpacked into `{root}`")
    config = load_config(config_path, overrides)
    if not Path(config.data.train).is_dir():
        return (f"no training photos at {config.data.train} (git-ignored): pass --nano-data FILE, packed where "
                "data/nano exists with --pack-nano-data FILE")  # fmt: skip
    if config.data.val and not Path(config.data.val).is_dir():
        overrides.append("data.val=null")
        notes.append(f"no validation photos at {config.data.val}: validation off")
    init = config.model.init
    inits = init if isinstance(init, list) else [init] if init else []
    if missing := [p for p in inits if not Path(p).exists()]:
        return f"model.init {missing[0]} does not exist on this machine (a git-ignored run folder)"
    return config_path, overrides, notes


def phase_nano(args, s: dict) -> int:
    import shutil

    from sodec.train.checkpoint import list_checkpoints

    run = Path(args.nano_run) if args.nano_run else args.out / "nano" / Path(args.nano_config).stem
    log = PhaseLog(args.out, "nano", [f"## nano recipe: `{args.nano_config}` in `--time-limit` chunks", ""])
    plan = nano_plan(args, s)
    if isinstance(plan, str):
        return log.skip(plan)
    config, overrides, notes = plan
    resume = args.nano_resume
    if resume and not list_checkpoints(run / "checkpoints"):
        source = REPO / resume
        if not list_checkpoints(source / "checkpoints"):
            return log.fail(f"--nano-resume {resume}: no checkpoints/step-N in it")
        shutil.copytree(source, run, dirs_exist_ok=True)  # as artifacts/nano/README.md says
        notes.append(f"resumed from `{resume}` ({list_checkpoints(run / 'checkpoints')[-1].name})")
    again = " ".join(["sodec train", args.nano_config, "--out", str(run), *[f"--set {v}" for v in args.nano_set]])
    log.lines += [*[f"- {n}" for n in notes], "",
                  f"run folder `{run}`; continue it anywhere (a CPU too, with data/nano) with `{again}`", "",
                  "| chunk | time limit s | wall s | exit | newest checkpoint |",
                  "|---:|---:|---:|---:|---|"]  # fmt: skip
    log.flush()
    for chunk in range(1, s["max_chunks"] + 1):
        remaining = args.deadline - time.time()
        limit = min(s["chunk"], remaining - s["startup"] - 10)
        if limit < s["min_chunk"] or (run / "final").is_dir():
            if chunk == 1:
                return log.skip(f"no time left for a chunk ({remaining:.0f} s)")
            break
        cmd = [sys.executable, "-m", "sodec.cli", "train", str(config), "--out", str(run),
               "--time-limit", f"{limit:.0f}", "-q"]  # fmt: skip
        for item in overrides:
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
            return log.fail(f"chunk {chunk} exit {rc}: {tail[-1] if tail else 'no output'} (see {chunk_log.name})")
    return 0


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


def phase_status(out: Path, name: str, rc: int | None, box: float) -> str:
    """``ok``, ``skipped: reason`` or ``failed: reason``, from the child's exit code and its own word."""
    try:
        own = json.loads((out / f"{name}.json").read_text()).get("status")
    except (OSError, ValueError):
        own = None
    if rc is None:
        return f"failed: stopped at its time box ({box:.0f} s); results so far kept"
    if own and (own.startswith("skipped") or rc != 0):
        return own
    if rc != 0:
        log = out / f"{name}.log"
        last = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
        return f"failed: exit {rc}: {last[0][:200] if last else 'no output'} (see {name}.log)"
    return "ok"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="One-command GPU check of the paper-scale codec (benchmarks/gpu_check.py)")
    ap.add_argument("--out", type=Path, help="results folder (created)")
    ap.add_argument("--dry-run", action="store_true", help="the same code at tiny widths on the CPU")
    ap.add_argument("--budget", type=float, help="seconds in all (default 540; dry run 600)")
    ap.add_argument("--phases", default="decode,train,nano", help="which phases, in order")
    ap.add_argument("--stages", default="warmup,anneal,rd,adversarial", help="paper stages of the train phase")
    ap.add_argument("--nano-config", default=DEFAULT_NANO_CONFIG, help="the nano phase's config")
    ap.add_argument("--nano-resume", help="a run folder (e.g. a committed one under artifacts/) whose checkpoints "
                    "the nano run starts from (default: from scratch)")  # fmt: skip
    ap.add_argument("--nano-data", help="a --pack-nano-data tar: the nano phase's photos (default, or 'none': the "
                    "config's; the dry run packs generated photos)")  # fmt: skip
    ap.add_argument("--pack-nano-data", type=Path, metavar="FILE", help="pack NANO_SOURCE's train/ and dev/ photos "
                    "(≤ 1024 px, JPEG or WebP) into FILE for --nano-data, then exit")  # fmt: skip
    ap.add_argument("--nano-source", type=Path, default=REPO / "data" / "nano", help="what --pack-nano-data packs")
    ap.add_argument("--pack-format", choices=sorted(PACK_FORMATS), default="jpeg", help="--pack-nano-data's format")
    ap.add_argument("--pack-quality", type=int, default=90, help="--pack-nano-data's quality (default 90; measured "
                    "sizes of data/nano: JPEG q90 45 MiB, q75 28 MiB; WebP q70 19 MiB)")  # fmt: skip
    ap.add_argument("--nano-run", help="the nano phase's run folder (default OUT/nano/<config name>)")
    ap.add_argument("--nano-set", action="append", default=[], metavar="KEY=VALUE", help="passed to sodec train")
    ap.add_argument("--fail-phase", help=argparse.SUPPRESS)  # tests: this phase raises at its start
    ap.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this (child) process
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    if args.pack_nano_data:
        count, size = pack_nano_data(args.nano_source, args.pack_nano_data, quality=args.pack_quality,
                                     fmt=args.pack_format)  # fmt: skip
        print(f"gpu_check: {count} photos in {args.pack_nano_data} ({size / 2**20:.1f} MiB)", file=sys.stderr)
        return 0
    if args.out is None:
        ap.error("--out is required")
    s = DRY if args.dry_run else GPU
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase:  # child
        if args.fail_phase == args.phase:
            raise RuntimeError(f"--fail-phase {args.phase}: a forced failure")
        return PHASES[args.phase](args, s)

    start = time.time()
    budget = args.budget or s["budget"]
    deadline = start + budget
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device (use --dry-run to check the script on a CPU)", file=sys.stderr)
            return 2
    if args.dry_run and args.nano_data is None and "nano" in args.phases.split(","):
        # the dry run's nano phase takes the same path as a GPU's: a packed file, unpacked, the committed checkpoint
        photos = synthetic_photos(args.out / "dry-nano-photos" / "train", s["photos"], s["photo_side"])
        synthetic_photos(photos.parent / "dev", 2, s["photo_side"])
        args.nano_data = str(args.out / "dry-nano-data.tar")
        pack_nano_data(photos.parent, Path(args.nano_data))
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
        for flag, value in (("--dry-run", args.dry_run), ("--nano-run", args.nano_run),
                            ("--nano-resume", args.nano_resume), ("--nano-data", args.nano_data),
                            ("--fail-phase", args.fail_phase)):  # fmt: skip
            if value:
                cmd += [flag] if value is True else [flag, value]
        for item in args.nano_set:
            cmd += ["--nano-set", item]
        t = time.time()
        print(f"gpu_check: {name} (at most {box:.0f} s)", file=sys.stderr, flush=True)
        rc = run_group(cmd, box, args.out / f"{name}.log")
        status = phase_status(args.out, name, rc, box)
        summary["phases"][name] = {"status": status, "seconds": round(time.time() - t, 1)}
        write_summary(args.out, summary)
        print(f"gpu_check: {name}: {status}", file=sys.stderr, flush=True)
    failed = [n for n, p in summary["phases"].items() if p["status"].startswith("failed")]
    print(f"gpu_check: results in {args.out}/gpu-check.md ({time.time() - start:.0f} s)"
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
