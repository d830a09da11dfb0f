"""Learning curves: a run's validation metrics against the wall-clock hours it trained.

    python scripts/plot_curves.py RUN [RUN ...] --out docs/img/curves-stage1.png [--metrics psnr,bpp_estimate]
        [--label NAME=RUN ...] [--title TEXT]

Reads each run folder's ``log.csv`` (its ``seconds`` column restarts at 0 when a run is resumed; the pieces are
added up) and ``val.csv`` (the ``mean`` rows), and plots every requested validation column against the hours
spent up to that step, one panel per metric, one line per run.  Also prints the table it plots, so the
numbers can be quoted without reading them off the picture.  Logs written before a column was renamed are read
under the new name (``bpp`` -> ``bpp_estimate``: ``sodec.train.loop.RENAMED_COLUMNS``), and so is a metric
asked for by its old name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sodec.train.loop import RENAMED_COLUMNS, read_csv_log


def hours_at_steps(log_csv: Path) -> dict[int, float]:
    """Cumulative wall-clock hours at each logged step (resumed pieces added up)."""
    out, offset, last = {}, 0.0, 0.0
    for row in read_csv_log(log_csv):
        seconds = float(row["seconds"])
        if seconds < last:  # a resumed invocation: its clock restarted
            offset += last
        last = seconds
        out[int(row["step"])] = (offset + seconds) / 3600
    return out


def validation_means(val_csv: Path) -> list[dict[str, float]]:
    """The ``mean`` rows of a run's ``val.csv``, as numbers."""
    return [{k: float(v) for k, v in r.items() if k != "image" and v} for r in read_csv_log(val_csv)
            if r["image"] == "mean"]  # fmt: skip


def curve(run: Path) -> list[dict[str, float]]:
    """The validation means of a run, each with ``hours`` (from the nearest logged step at or before it)."""
    hours = hours_at_steps(run / "log.csv")
    steps = sorted(hours)
    rows = []
    for r in validation_means(run / "val.csv"):
        before = [s for s in steps if s <= r["step"]]
        rows.append({**r, "hours": hours[before[-1]] if before else 0.0})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--label", action="append", default=[], metavar="NAME=RUN", help="a run with a legend name")
    ap.add_argument("--metrics", default="psnr,bpp_estimate")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    runs = [(str(r), r) for r in args.runs] + [(s.partition("=")[0], Path(s.partition("=")[2])) for s in args.label]
    metrics = [RENAMED_COLUMNS.get(m.strip(), m.strip()) for m in args.metrics.split(",") if m.strip()]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
    for name, run in runs:
        rows = curve(run)
        print(f"# {name}\nstep  hours  " + "  ".join(metrics))
        for r in rows:
            values = "  ".join(f"{r.get(m, float('nan')):.4g}" for m in metrics)
            print(f"{int(r['step']):5d}  {r['hours']:.2f}  {values}")
        for ax, m in zip(axes[0], metrics):
            pts = [(r["hours"], r[m]) for r in rows if m in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name)
    for ax, m in zip(axes[0], metrics):
        ax.set_xlabel("hours of training (wall clock)")
        ax.set_title(m)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
