"""Memory of the training data as the folder grows: in-memory ``RandomCrops`` vs ``StreamingCrops``.

For each folder size, a fresh child process imports sodec, builds the dataset on a folder of that many photos
(synthetic JPEGs of ``--side`` pixels, hard links into one pool), then draws ``--samples`` crops.  It reports
the time to build the dataset, the time per crop, and the memory the dataset costs: the child's peak resident
set (``ru_maxrss``) minus its resident set after the imports.  Prints a Markdown table.

    python benchmarks/streaming_memory.py [--sizes 1000,4000,16000] [--side 128] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(kind: str, folder: str, crop: int, samples: int) -> None:
    import torch

    from sodec.train.data import RandomCrops, StreamingCrops

    torch.set_num_threads(1)
    base = rss_mib()
    t = time.perf_counter()
    cls = StreamingCrops if kind == "streaming" else RandomCrops
    data = cls(folder, crop, min_scale=0.5, seed=0)
    built = time.perf_counter() - t
    after_build = rss_mib()
    t = time.perf_counter()
    for i in range(samples):
        data[i]
    per_item = (time.perf_counter() - t) / samples
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"build_s": built, "item_ms": per_item * 1000, "build_mib": after_build - base,
                      "peak_mib": peak - base}))  # fmt: skip


def make_pool(pool: Path, count: int, side: int) -> None:
    import numpy as np
    from PIL import Image

    pool.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = pool / f"{i:06d}.jpg"
        if not path.exists():
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            noise = rng.integers(0, 24, (side, side, 3), dtype=np.uint8)
            im = np.asarray(Image.fromarray(small).resize((side, side), Image.BILINEAR)) // 2 + noise
            Image.fromarray(im.astype(np.uint8)).save(path, quality=90)


def folder_of(pool: Path, work: Path, count: int) -> Path:
    folder = work / f"n{count}"
    if not folder.is_dir():
        folder.mkdir()
        for i in range(count):
            os.link(pool / f"{i:06d}.jpg", folder / f"{i:06d}.jpg")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,4000,16000", help="folder sizes (photos)")
    ap.add_argument("--side", type=int, default=128, help="photo side in pixels")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--samples", type=int, default=256, help="crops drawn after building the dataset")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary folder)")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.crop, args.samples)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        make_pool(work / "pool", max(sizes), args.side)
        print(f"pool of {max(sizes)} photos ({args.side}x{args.side} JPEG) in {time.perf_counter() - t:.0f} s",
              file=sys.stderr)  # fmt: skip
        rows = []
        for n in sizes:
            folder = folder_of(work / "pool", work, n)
            mib = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
            result = {}
            for kind in ("streaming", "in-memory"):
                cmd = [sys.executable, __file__, "--crop", str(args.crop), "--samples", str(args.samples),
                       "--child", kind, str(folder)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                result[kind] = json.loads(out.strip().splitlines()[-1])
                print(f"{n} photos, {kind}: {result[kind]}", file=sys.stderr)
            rows.append((n, mib, result))
    print(f"{platform.machine()} · python {platform.python_version()} · photos {args.side}x{args.side} JPEG · "
          f"crop {args.crop} · {args.samples} crops drawn per run, one process, no workers\n")  # fmt: skip
    print("| photos | folder MiB | streaming: build s | streaming: ms/crop | streaming: memory MiB "
          "| in-memory: build s | in-memory: ms/crop | in-memory: memory MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, mib, r in rows:
        s, m = r["streaming"], r["in-memory"]
        print(f"| {n} | {mib:.0f} | {s['build_s']:.2f} | {s['item_ms']:.2f} | {s['peak_mib']:.1f} "
              f"| {m['build_s']:.1f} | {m['item_ms']:.2f} | {m['peak_mib']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
