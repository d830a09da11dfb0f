"""Peak RSS of compressing one 768x512 photo: the full model vs the encoder alone (``for_encoding=True``).

    PYTHONPATH=src python benchmarks/compress_memory.py [--scale nano|paper|both] [--work DIR]

Each row is a fresh child process that loads the model and compresses the bundled photo (768x512); its own
``ru_maxrss`` is the figure.  ``nano``: the shipped model (rate 0).  ``paper``: the paper preset at full width
with random weights, saved once to ``--work`` (bases in float16, as SD 2.1 ships; ≈ 3.5 GB of disk, 15 GiB
RAM while it is built).  Rows: ``api full`` (``load_model(...)``: what ``sodec compress`` loaded before),
``api encoder`` (``load_model(..., for_encoding=True)``) and ``sodec compress`` (the CLI as it is now).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
t = time.time()
from sodec import api
kind, model, out = sys.argv[1:4]
if kind == "cli":
    from sodec.cli import main
    rc = main(["compress", str(api.example_image()), "-o", out, "--model", model, "--force", "--quiet"])
    assert rc == 0, rc
else:
    net = api.load_model(model, None, for_encoding=kind == "encoder")
    api.compress_file(api.example_image(), out, net, force=True)
print(json.dumps({"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "seconds": time.time() - t}))
"""


def paper_model(work: Path) -> Path:
    """The paper preset with random weights as a model folder (``rate-0``) beside its base folder."""
    folder = work / "paper" / "rate-0"
    if (folder / "model.safetensors").is_file():
        return folder
    import gc

    import torch

    from sodec.models import SodecModel, preset_config
    from sodec.models.bases import load_bases, save_bases

    torch.manual_seed(0)
    config = preset_config("paper")
    bases = load_bases(config.diffusion, random=True)
    save_bases(bases, work / "paper" / "base", dtype=torch.float16)
    del bases
    gc.collect()
    config.diffusion.base = "../base"
    model = SodecModel(config, folder=folder).eval()
    model.update()
    model.save_pretrained(folder, dtype=torch.float16)
    return folder


def measure(kind: str, model: Path | str, out: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, kind, str(model), str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["nano", "paper", "both"], default="nano")
    parser.add_argument("--work", type=Path, default=None, help="where the paper-scale model is saved (reused)")
    parser.add_argument("--build-paper-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build_paper_only:
        paper_model(args.work)
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="sodec-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    scales = ["nano", "paper"] if args.scale == "both" else [args.scale]
    rows = []
    for scale in scales:
        t = time.time()
        model = "nano"
        if scale == "paper":
            # Built in a child: a child forked from a parent holding the ≈ 10 GiB model starts with the
            # parent's RSS as its own ru_maxrss (Linux keeps the high-water mark across fork and exec).
            cmd = [sys.executable, __file__, "--work", str(work), "--build-paper-only"]
            subprocess.run(cmd, check=True)
            model = work / "paper" / "rate-0"
        if scale == "paper":
            print(f"paper model saved in {time.time() - t:.0f} s: {model}", flush=True)
        for kind, label in (("full", "api full (before)"), ("encoder", "api for_encoding"), ("cli", "sodec compress")):
            r = measure(kind, model, work / f"{scale}-{kind}.sodec")
            rows.append((scale, label, r))
            print(f"{scale} {label}: {r}", flush=True)
    print("\n| scale | load | peak RSS GiB | seconds |\n|---|---|---:|---:|")
    for scale, label, r in rows:
        if "error" in r:
            print(f"| {scale} | {label} | – | – | {r['error']}")
        else:
            print(f"| {scale} | {label} | {r['peak_rss_gib']:.2f} | {r['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
