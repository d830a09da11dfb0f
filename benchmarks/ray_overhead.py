"""Images per second of a folder compress/decompress: ``--jobs N`` (local processes) against ``--ray`` (a local
Ray cluster of the same N CPUs, one worker per CPU), with the bundled nano model.

    python benchmarks/ray_overhead.py --data data/nano/val --workers 2 --rounds 2

Each configuration runs as a fresh ``sodec`` process, as a user would start it, so its wall time includes
what the user waits for: starting torch, the workers (and, for Ray, the cluster), loading the model once per
worker, and coding.  The rounds interleave the configurations (jobs, ray, jobs, ray, ...) so that a machine
whose speed drifts treats both alike; the table gives the median per configuration and the ratio of the
medians.  Prints a Markdown table (docs/benchmarks.md, "Many machines").
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(args: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "sodec.cli", *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"sodec {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/nano/val"), help="folder of photos")
    p.add_argument("--limit", type=int, default=8, help="first N photos (default 8)")
    p.add_argument("--workers", type=int, default=2, help="--jobs N and N Ray CPUs (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per configuration (default 2)")
    p.add_argument("--model", default="nano")
    p.add_argument("--rate", type=int, default=0)
    p.add_argument("--decoder", default="auto", help="decoder of the decompress runs (default auto)")
    p.add_argument("--address", default=None,
                   help="Ray address to join (e.g. auto, after `ray start --head --num-cpus N`); default: each "
                   "--ray run starts its own local cluster, and its wall time includes that start")
    args = p.parse_args()

    photos = sorted(f for f in args.data.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.limit]
    if not photos:
        raise SystemExit(f"{args.data}: no photos")
    tmp = Path(tempfile.mkdtemp(prefix="sodec-ray-bench-"))
    src = tmp / "in"
    src.mkdir()
    for f in photos:
        shutil.copy(f, src / f.name)
    pixels = 0
    from PIL import Image

    for f in photos:
        with Image.open(f) as im:
            pixels += im.width * im.height
    # `--ray` with no address starts a local cluster of this machine's CPUs; --jobs N sizes its worker pool.
    ray = ["--ray"] + ([args.address] if args.address else [])
    modes = {
        f"--jobs {args.workers}": ["--jobs", str(args.workers)],
        f"{' '.join(ray)} --jobs {args.workers}": [*ray, "--jobs", str(args.workers)],
    }
    times: dict[str, dict[str, list[float]]] = {m: {"compress": [], "decompress": []} for m in modes}
    model = ["--model", args.model, "--rate", str(args.rate)]
    for r in range(args.rounds):
        for name, extra in modes.items():
            out = tmp / f"round{r}-{extra[0].strip('-')}"
            times[name]["compress"].append(_run(["compress", str(src), "-o", str(out / "c"), *model, "-q", *extra]))
            times[name]["decompress"].append(_run(["decompress", str(out / "c"), "-o", str(out / "d"), "--decoder",
                                                   args.decoder, "-q", *extra]))
            print(f"round {r + 1}: {name}: compress {times[name]['compress'][-1]:.1f} s, decompress "
                  f"{times[name]['decompress'][-1]:.1f} s", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)

    n = len(photos)
    cpu = platform.processor() or platform.machine()
    print(f"{n} photos ({pixels / n / 1e6:.2f} Mpixel on average) from {args.data}, model {args.model} rate "
          f"{args.rate}, decoder {args.decoder}; {os.cpu_count()} CPUs ({cpu}); median of {args.rounds} "
          "interleaved rounds; wall time of the whole command (start-up, model loads and coding)\n")
    print("| run | compress s | compress images/s | decompress s | decompress images/s |")
    print("|---|---:|---:|---:|---:|")
    med = {m: {k: statistics.median(v) for k, v in t.items()} for m, t in times.items()}
    for m, t in med.items():
        print(f"| `sodec compress/decompress DIR -o OUT {m}` | {t['compress']:.1f} "
              f"| {n / t['compress']:.2f} | {t['decompress']:.1f} | {n / t['decompress']:.2f} |")
    jobs, ray = list(med.values())
    start = "joining a running cluster" if args.address else "including the start of a local cluster"
    print(f"\nRay / jobs wall time ({start}): compress {ray['compress'] / jobs['compress']:.2f}×, decompress "
          f"{ray['decompress'] / jobs['decompress']:.2f}× (Ray − jobs: {ray['compress'] - jobs['compress']:+.1f} s "
          f"and {ray['decompress'] - jobs['decompress']:+.1f} s)")

if __name__ == "__main__":
    main()
