"""Fuzz benchmark: N damaged `.sodec` files (default 10,000) through the decoder; prints a table.

Same property and mutations as tests/test_fuzz.py: every case must decode to the declared size or raise a
documented SodecError, leave no file behind and finish within the per-case deadline.

    python benchmarks/fuzz.py [--cases 10000]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_fuzz import check_one, damaged_files  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10_000)
    args = ap.parse_args()
    outcomes: collections.Counter[str] = collections.Counter()
    slowest = [0.0]
    folder = Path(tempfile.mkdtemp(prefix="sodec-fuzz-"))

    @settings(max_examples=args.cases, deadline=2000, database=None, suppress_health_check=list(HealthCheck))
    @given(data=damaged_files())
    def run(data: bytes) -> None:
        for p in folder.iterdir():
            p.unlink()
        t = time.perf_counter()
        outcomes[check_one(data, folder)] += 1
        slowest[0] = max(slowest[0], time.perf_counter() - t)

    t0 = time.perf_counter()
    run()
    total = sum(outcomes.values())
    print(f"{total} cases in {time.perf_counter() - t0:.0f} s, slowest case {slowest[0] * 1000:.0f} ms, "
          f"files left behind: {sum(1 for p in folder.iterdir() if p.name != 'in.sodec')}")  # fmt: skip
    print()
    print("| outcome | cases |")
    print("|---|---:|")
    for name, n in outcomes.most_common():
        print(f"| {name} | {n} |")


if __name__ == "__main__":
    main()
