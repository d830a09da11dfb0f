"""Folder runs of ``sodec compress`` / ``sodec decompress``: parallel workers, resumable, a summary.

* ``jobs == 1`` codes the files in this process, one after the other; ``jobs > 1`` in that many worker
  processes, each loading the model once and running torch with ``threads // jobs`` threads (at least 1),
  so that N workers do not oversubscribe the cores.
* Resumable: in a folder run an output that already exists is skipped (counted, said so) unless ``force``.
  Outputs are written to a temporary file, synced and renamed (:func:`sodec.imageio.atomic_write`), so a file under
  its final name is complete; it is still checked to be what this run would write (a `.sodec` file that
  passes its CRC and names the same model and rate point; a PNG of the size the `.sodec` declares), and a
  foreign file under that name is a failure, never overwritten without ``force``.
* One bad file never stops the run: its error is reported and counted, and the others go on (a worker
  process that dies, for instance killed for memory, is replaced and the files it had are retried one at a
  time, so only the file that kills a worker fails).
* At the end, a summary: files done / skipped / failed, total `.sodec` bytes and mean bpp of the files done
  and skipped, and each failure with its one-line reason.  Exit code 2 if any file failed, else 0.
* Elsewhere: a ``runner`` (:func:`sodec.distributed.code_files`, ``--ray``) codes the files on a Ray cluster
  instead of local processes, with the same reporting; its workers check existing outputs themselves.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sodec.console import describe, warn_one_line
from sodec.container import bits_per_pixel
from sodec.errors import SodecError

EXIT_FAILED = 2
_FORCE = "(use --force to overwrite)"
DIED = "the worker process died (killed by a signal, for instance for lack of memory)"


@dataclass(frozen=True)
class Task:
    """What to do with each file (picklable: sent to the worker processes)."""

    kind: str  # "compress" or "decompress"
    model: str | None = None  # bundled name or folder; None (decompress): the model named in each file
    rate: int | None = None
    device: str = "cpu"
    force: bool = False
    decoder: str = "auto"
    tile: int = 64

    def run(self, source: Path, output: Path):
        """Code one file (raises on error); returns :class:`sodec.api.FileResult`."""
        from sodec import api

        if self.kind == "compress":
            model = api.load_model(self.model, self.rate, self.device)  # cached: loaded once per process
            return api.compress_file(source, output, model, force=self.force, tile=self.tile)
        return api.decompress_file(
            source, output, self.model, force=self.force, device=self.device, decoder=self.decoder, tile=self.tile
        )


@dataclass(frozen=True)
class Outcome:
    """What happened to one file.  ``n_bytes``: size of its `.sodec` file (input or output)."""

    status: str  # "done", "skipped" or "failed"
    source: Path | str  # a str for a URI (``--ray``)
    output: Path | str
    n_bytes: int = 0
    width: int = 0
    height: int = 0
    reason: str = ""

    @property
    def bpp(self) -> float:
        return bits_per_pixel(self.n_bytes, self.width, self.height) if self.width and self.height else 0.0

    def line(self, kind: str) -> str:
        """The line printed for a file done or skipped (``kind``: compress or decompress)."""
        size = f"{self.width}x{self.height}, {self.bpp:.4f} bpp"
        if self.status == "skipped":
            return f"{self.source} -> {self.output}: skipped, output exists ({size})"
        if kind == "compress":
            return f"{self.source} -> {self.output}: {self.n_bytes} bytes, {size}"
        return f"{self.source} -> {self.output}: {size}"


def work(task: Task, source: Path, output: Path, catch_all: bool = True) -> Outcome:
    """Code one file; errors become a ``failed`` outcome (all of them with ``catch_all``, else only
    :class:`SodecError` and :class:`OSError`, the rest propagating as internal errors)."""
    caught = Exception if catch_all else (SodecError, OSError)
    try:
        r = task.run(source, output)
    except caught as e:
        return Outcome("failed", source, output, reason=describe(e))
    return Outcome("done", source, output, r.n_bytes, r.width, r.height)


def check_existing(task: Task, source: Path, output: Path) -> Outcome:
    """An existing output in a folder run: ``skipped`` if it is what this run writes, else ``failed``."""
    from sodec import container

    try:
        if task.kind == "compress":
            data = output.read_bytes()
            h = container.unpack(data).header
            name, rate = _model_name_and_rate(task)
            if name is not None and (h.model_name, h.rate_point) != (name, rate):
                made = f"model {h.model_name!r} rate {h.rate_point}, not {name!r} rate {rate}"
                return Outcome("failed", source, output, reason=f"{output} exists and was made with {made} {_FORCE}")
            return Outcome("skipped", source, output, len(data), h.width, h.height)
        from PIL import Image

        data = source.read_bytes()
        h = container.unpack(data).header
        with Image.open(output) as im:
            size, fmt = im.size, im.format
        if fmt != "PNG" or size != (h.width, h.height):
            what = f"is not the {h.width}x{h.height} PNG of {source}"
            return Outcome("failed", source, output, reason=f"{output} exists but {what} {_FORCE}")
        return Outcome("skipped", source, output, len(data), h.width, h.height)
    except Exception as e:  # noqa: BLE001 - a damaged file or a foreign one: reported, never overwritten
        what = "a valid .sodec file" if task.kind == "compress" else "a readable PNG (or its input is damaged)"
        return Outcome("failed", source, output, reason=f"{output} exists but is not {what}: {describe(e)} {_FORCE}")


def _model_name_and_rate(task: Task) -> tuple[str | None, int | None]:
    """The model name and rate point a compress task writes into its files (from ``config.json`` only)."""
    import json

    from sodec import api
    from sodec.models.config import CONFIG_NAME

    try:
        cfg = json.loads((api.resolve_model_folder(task.model, task.rate) / CONFIG_NAME).read_text())
        return cfg["name"], int(cfg.get("rate_point", 0))
    except (SodecError, OSError, ValueError, KeyError, TypeError):
        return None, None  # the run itself will report the model problem


def _duplicates(pairs: Sequence[tuple[Path, Path]]) -> dict[int, str]:
    """Pairs whose output is also the output of an earlier input (``a.png`` and ``a.jpg``): index → reason."""
    first: dict[Path, Path] = {}
    bad = {}
    for i, (src, dst) in enumerate(pairs):
        key = dst.resolve() if isinstance(dst, Path) else dst  # a URI is compared as written
        if key in first:
            bad[i] = f"{src}: its output {dst} is also the output of {first[key]} (rename one of them)"
        else:
            first[key] = src
    return bad


# --------------------------------------------------------------------------------------------- workers
def _init_worker(task: Task, threads: int) -> None:
    """Once per worker process: thread count, one-line warnings, SIGINT to the parent only, the model."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent lets the files in progress finish
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    warnings.showwarning = warn_one_line
    if task.kind == "compress":
        from sodec import api

        try:
            api.load_model(task.model, task.rate, task.device)  # cached: each worker loads it once
        except Exception:  # noqa: BLE001 - reported by each file's job
            pass


def _context():
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        # Workers fork from a fresh server that has imported sodec and torch once (fast start, shared pages)
        # but never run a torch op, so no OpenMP state is forked; a plain fork of this process could be.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["sodec.api"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_parallel(
    items: Sequence[tuple[int, Path, Path]], task: Task, jobs: int, threads: int, report: Callable[[int, Outcome], None]
) -> None:
    todo = deque(items)
    retry: deque = deque()  # files in flight when a worker died: rerun one at a time to find the culprit
    ctx = _context()
    while todo or retry:
        serial = bool(retry)
        source = retry if serial else todo
        width = 1 if serial else min(jobs, len(todo))
        pool = ProcessPoolExecutor(width, mp_context=ctx, initializer=_init_worker, initargs=(task, threads))
        inflight: dict = {}
        broken = False
        try:
            while (source or inflight) and not broken:
                while source and len(inflight) < width:
                    i, src, dst = item = source.popleft()
                    inflight[pool.submit(work, task, src, dst)] = item
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for future in done:
                    i, src, dst = item = inflight.pop(future)
                    try:
                        report(i, future.result())
                    except BrokenProcessPool:
                        broken = True
                        if serial:
                            report(i, Outcome("failed", src, dst, reason=f"{src}: {DIED}"))
                        else:
                            retry.append(item)
            retry.extend(inflight.values())  # a broken pool fails every future it had: retry them
            inflight.clear()
        except KeyboardInterrupt:
            n = sum(not f.done() for f in inflight)
            if n:
                print(f"sodec: interrupted; finishing the {n} file(s) in progress", file=sys.stderr)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------- runs
def run(
    pairs: Sequence[tuple[Path, Path]],
    task: Task,
    *,
    folder: bool,
    jobs: int = 1,
    threads: int = 1,
    quiet: bool = False,
    runner: Callable[[Sequence[tuple[int, Any, Any]], Task, bool, Callable[[int, Outcome], None]], None]
    | None = None,
) -> int:
    """Code every (input, output) pair; returns the exit code (2 if any file failed).

    ``folder``: a folder run (existing outputs skipped, a summary at the end); otherwise a single file,
    where an existing output is an error unless ``task.force``.  ``threads``: the torch threads of this
    process, shared out among ``jobs`` workers.  ``runner(items, task, folder, report)``: codes the
    ``(index, input, output)`` items elsewhere (``jobs`` is then unused) and calls ``report(index, outcome)``
    for each; it checks existing outputs itself, where they are (paths may be URIs there).
    """
    outcomes: list[Outcome | None] = [None] * len(pairs)
    progress = None
    if len(pairs) > 1 and not quiet:
        from tqdm import tqdm

        progress = tqdm(total=len(pairs), unit="file", file=sys.stderr)

    def report(i: int, outcome: Outcome) -> None:
        if folder and outcome.status == "failed" and str(outcome.source) not in outcome.reason:
            outcome = replace(outcome, reason=f"{outcome.source}: {outcome.reason}")  # say which file
        outcomes[i] = outcome
        if outcome.status == "failed":
            msg = f"sodec: error: {outcome.reason}"
            progress.write(msg, file=sys.stderr) if progress else print(msg, file=sys.stderr)
        elif not quiet:
            (progress.write if progress else print)(outcome.line(task.kind))
        if progress:
            progress.update()

    pending = []
    duplicates = _duplicates(pairs) if folder else {}
    for i, (src, dst) in enumerate(pairs):
        if i in duplicates:
            report(i, Outcome("failed", src, dst, reason=duplicates[i]))
        elif runner is None and folder and not task.force and dst.is_file():
            report(i, check_existing(task, src, dst))
        else:
            pending.append((i, src, dst))
    try:
        if runner is not None:
            runner(pending, task, folder, report)
        elif jobs > 1 and len(pending) > 1:
            _run_parallel(pending, task, jobs, max(1, threads // jobs), report)
        else:
            for i, src, dst in pending:
                report(i, work(task, src, dst, catch_all=folder))
    finally:
        if progress:
            progress.close()
    finished = [o for o in outcomes if o is not None]
    failed = [o for o in finished if o.status == "failed"]
    if folder:
        _summary(finished, quiet)
    if failed and len(pairs) > 1:
        print(f"sodec: {len(failed)} of {len(pairs)} files failed", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def _summary(outcomes: Sequence[Outcome], quiet: bool) -> None:
    count = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    coded = [o for o in outcomes if o.status != "failed" and o.width]
    total = sum(o.n_bytes for o in coded)
    mean = sum(o.bpp for o in coded) / len(coded) if coded else 0.0
    if not quiet:
        print(
            f"summary: {len(outcomes)} files: {count['done']} done, {count['skipped']} skipped (output exists), "
            f"{count['failed']} failed; {total} bytes of .sodec, mean {mean:.4f} bpp over {len(coded)} files"
        )
    for o in outcomes:
        if o.status == "failed":
            print(f"sodec: failed: {o.reason}", file=sys.stderr)
