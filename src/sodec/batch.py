"""Runs over many files: ``sodec compress|decompress SRC -o OUT`` on this machine (``--jobs``) or elsewhere.

The rules of a run live here, once, for every way of running it (in this process, ``--jobs N`` worker
processes, a Ray cluster through a ``runner``) and for local paths and URIs alike (:mod:`sodec.uris`):

* **Pairing** (:func:`pair_files`): a file gives one pair; a folder (or URI prefix) gives one pair per file
  directly in it whose suffix fits, each to ``OUT/stem + suffix``; an output that names a folder (or ends in
  ``/``) receives ``stem + suffix``.  Two inputs with one output name: the later one fails, never overwrites.
* **Existing outputs** (:func:`existing_output`): in a folder run an existing output is checked to be what this
  run would write (a `.sodec` file that passes its CRC and names the same model and rate point; a PNG of the
  size the `.sodec` declares) and skipped, or reported as foreign and never overwritten; for a single file
  it is an error.  ``force`` overwrites.
* **Writing** (:func:`process_file`): to a temporary file, synced and renamed (:func:`sodec.imageio.atomic_write`),
  so a file under its final name is complete; a URI's side is staged in a local temporary folder, removed
  afterwards, and uploaded as :func:`sodec.uris.upload` says.  Temporary files left by a writer that was
  killed are removed at the end of the run (:func:`remove_stale_temps`).
* One bad file never stops the run: its error is reported and counted, the others go on (a ``--jobs``
  worker process that dies is replaced and the files it had are retried one at a time, so only the file
  that kills a worker fails).  At the end, a summary: files done / skipped / failed, total `.sodec` bytes
  and mean bpp, each failure with its one-line reason; exit code 2 if any file failed, else 0.
* ``jobs > 1`` codes in that many worker processes, each loading the model once and running torch with
  ``threads // jobs`` threads, so that N workers do not oversubscribe the cores.

From Python: ``batch.run_files(Task("compress", "nano"), "photos/", "s3://bucket/coded/", jobs=2)``, or with
``runner=sodec.distributed.ray_runner("auto")`` on a Ray cluster.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

from sodec import uris
from sodec.console import describe, warn_one_line
from sodec.container import bits_per_pixel
from sodec.errors import SodecError
from sodec.imageio import IMAGE_SUFFIXES
from sodec.uris import Location

EXIT_FAILED = 2
_FORCE = "(use --force to overwrite)"
DIED = "the worker process died (killed by a signal, for instance for lack of memory)"
_STAGING = "sodec-stage-"  # + PID + "-" + random: where a process stages the remote end of a file
# what each kind of task reads (suffixes) and writes (suffix)
SUFFIXES = {"compress": (IMAGE_SUFFIXES, ".sodec"), "decompress": ((".sodec",), ".png")}

Pair = tuple[Location, Location]
Runner = Callable[[Sequence[tuple[int, Location, Location]], "Task", bool, Callable[[int, "Outcome"], None]], None]


@dataclass(frozen=True)
class Task:
    """What to do with each file (picklable: sent to the worker processes and Ray workers)."""

    kind: str  # "compress" or "decompress"
    model: str | None = None  # bundled name or folder; None (decompress): the model named in each file
    rate: int | None = None
    device: str = "cpu"
    force: bool = False
    decoder: str = "auto"
    tile: int = 64
    effort: int = 0  # compress: encode effort (sodec.api.compress_image)

    def load_model(self):
        """The model a compress task codes with, loaded once per process (:func:`sodec.api.load_model`
        caches it).  The one place where a file job loads its encoder, whoever runs it: the encoder only
        (``for_encoding``: no decoder, no diffusion bases), or the full model at effort > 0, which refines
        the latents against the decoder Da."""
        from sodec import api

        return api.load_model(self.model, self.rate, self.device, for_encoding=self.effort == 0)

    def run(self, source: Path, output: Path):
        """Code one local file (raises on error); returns :class:`sodec.api.FileResult`."""
        from sodec import api

        if self.kind == "compress":
            return api.compress_file(
                source, output, self.load_model(), force=self.force, tile=self.tile, effort=self.effort
            )
        return api.decompress_file(
            source, output, self.model, force=self.force, device=self.device, decoder=self.decoder, tile=self.tile
        )


def start_worker(task: Task) -> None:
    """Once per worker (a ``--jobs`` process or a Ray worker): clear what dead workers left in the temporary
    folder, and load the model before the first file.  A model that fails to load is left for each file to
    report."""
    remove_dead_staging()
    if task.kind == "compress":
        try:
            task.load_model()
        except Exception:  # noqa: BLE001 - reported by each file's job
            pass


@dataclass(frozen=True)
class Outcome:
    """What happened to one file.  ``n_bytes``: size of its `.sodec` file (input or output)."""

    status: str  # "done", "skipped" or "failed"
    source: Location
    output: Location
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


# ---------------------------------------------------------------------------------------------- pairing
def pair_files(source: str | os.PathLike, output: str | os.PathLike | None, kind: str) -> tuple[list[Pair], bool]:
    """``([(input, output)], is_folder_run)`` for a local path or URI (:mod:`sodec.uris`), either end.

    Raises :class:`SodecError` (nothing is created) for a missing input, a folder without input files or an
    unsupported URI; creates the output folder of a folder run.
    """
    suffixes, new_suffix = SUFFIXES[kind]
    into_folder = output is not None and str(output).endswith(("/", os.sep))
    src = uris.location(source)
    out = None if output is None else uris.location(output)
    what = uris.kind(src)
    if what == "folder":
        names = [n for n in uris.list_files(src) if Path(n).suffix.lower() in suffixes]
        if not names:
            raise SodecError(f"{source}: no input files ({', '.join(suffixes)})")
        out = src if out is None else out
        uris.make_folder(out)
        return [(uris.join(src, n), uris.join(out, Path(n).stem + new_suffix)) for n in names], True
    if what != "file":
        raise SodecError(f"{source}: no such file")
    if out is None:
        return [(src, uris.with_suffix(src, new_suffix))], False
    if into_folder or uris.kind(out) == "folder":
        uris.make_folder(out)
        out = uris.join(out, Path(uris.name(src)).stem + new_suffix)
    return [(src, out)], False


def _duplicates(pairs: Sequence[Pair]) -> dict[int, str]:
    """Pairs whose output is also the output of an earlier input (``a.png`` and ``a.jpg``): index → reason."""
    first: dict[Location, Location] = {}
    bad = {}
    for i, (src, dst) in enumerate(pairs):
        key = dst.resolve() if isinstance(dst, Path) else dst  # a URI is compared as written
        if key in first:
            bad[i] = f"{src}: its output {dst} is also the output of {first[key]} (rename one of them)"
        else:
            first[key] = src
    return bad


# ------------------------------------------------------------------------------------------- one file
def existing_output(task: Task, source: Location, output: Location, folder: bool) -> Outcome | None:
    """The existing-output policy: ``None`` to code the file, else the outcome to report instead."""
    if task.force or uris.kind(output) != "file":
        return None
    if not folder:
        return Outcome("failed", source, output, reason=f"{output} exists {_FORCE}")
    return check_existing(task, source, output)


def check_existing(task: Task, source: Location, output: Location) -> Outcome:
    """An existing output in a folder run: ``skipped`` if it is what this run writes, else ``failed``."""
    from PIL import Image

    from sodec import container

    try:
        if task.kind == "compress":
            data = uris.read_bytes(output)
            h = container.unpack(data).header
            name, rate = _model_name_and_rate(task)
            if name is not None and (h.model_name, h.rate_point) != (name, rate):
                made = f"model {h.model_name!r} rate {h.rate_point}, not {name!r} rate {rate}"
                return Outcome("failed", source, output, reason=f"{output} exists and was made with {made} {_FORCE}")
            return Outcome("skipped", source, output, len(data), h.width, h.height)
        data = uris.read_bytes(source)
        h = container.unpack(data).header
        with uris.open_input(output) as f, Image.open(f) as im:
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


def process_file(task: Task, source: Location, output: Location, folder: bool, catch_all: bool = True) -> Outcome:
    """One file, as every runner codes it: the existing-output policy, then code and write atomically.

    Errors become a ``failed`` outcome (all of them with ``catch_all``, else only :class:`SodecError` and
    :class:`OSError`, the rest propagating as internal errors).
    """
    caught = Exception if catch_all else (SodecError, OSError)
    try:
        existing = existing_output(task, source, output, folder)
        if existing is not None:
            return existing
        if isinstance(source, Path) and isinstance(output, Path):
            return work(task, source, output, catch_all)
        return _staged(task, source, output, catch_all)
    except caught as e:
        return Outcome("failed", source, output, reason=describe(e))


def work(task: Task, source: Path, output: Path, catch_all: bool = True) -> Outcome:
    """Code one local file, no questions asked about its output; errors become a ``failed`` outcome."""
    caught = Exception if catch_all else (SodecError, OSError)
    try:
        r = task.run(source, output)
    except caught as e:
        return Outcome("failed", source, output, reason=describe(e))
    return Outcome("done", source, output, r.n_bytes, r.width, r.height)


def _staged(task: Task, source: Location, output: Location, catch_all: bool) -> Outcome:
    """A file with a URI at either end: that end goes through a local temporary folder (removed after), and
    the file is coded by :func:`work`, so its bytes are those of a local run."""
    with tempfile.TemporaryDirectory(prefix=f"{_STAGING}{os.getpid()}-") as tmp:
        local_src, local_dst = source, output
        if not isinstance(source, Path):
            local_src = Path(tmp) / "in" / uris.name(source)
            local_src.parent.mkdir()
            uris.download(source, local_src)
        if not isinstance(output, Path):
            local_dst = Path(tmp) / "out" / uris.name(output)
            local_dst.parent.mkdir()
        outcome = work(task, local_src, local_dst, catch_all)
        if outcome.status == "done" and not isinstance(output, Path):
            uris.upload(local_dst, output)
    reason = outcome.reason.replace(str(local_src), str(source)).replace(str(local_dst), str(output))
    return replace(outcome, source=source, output=output, reason=reason)


def remove_dead_staging() -> int:
    """Remove the staging folders (``sodec-stage-PID-*`` in the temporary folder) of processes that died
    while they coded a file (killed: no ``finally`` ran); returns how many.  Called when a worker starts and
    at the end of a run."""
    import shutil

    removed = 0
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{_STAGING}*-*"):
        pid = folder.name[len(_STAGING):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:  # a killed process not yet reaped by its parent is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temps(outputs: Sequence[Location]) -> int:
    """Remove the temporary files (``.NAME.RANDOM.tmp``) that writers killed mid-write left next to these
    outputs; returns how many.  Call when no writer of these outputs is running any more."""
    by_folder: dict[Location, set[str]] = {}
    for out in outputs:
        by_folder.setdefault(uris.parent(out), set()).add(uris.name(out))
    removed = 0
    for folder, names in by_folder.items():
        try:
            entries = uris.list_files(folder)
        except OSError:
            continue  # a folder we cannot list has nothing we could delete either
        for entry in entries:
            if entry.startswith(".") and entry.endswith(uris.TEMP_SUFFIX) and \
                    entry[1: -len(uris.TEMP_SUFFIX)].rpartition(".")[0] in names:
                removed += uris.delete(uris.join(folder, entry))
    return removed


# --------------------------------------------------------------------------------------------- workers
def _init_worker(task: Task, threads: int) -> None:
    """Once per worker process: thread count, one-line warnings, SIGINT to the parent only, the model."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent lets the files in progress finish
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    warnings.showwarning = warn_one_line
    start_worker(task)


def _context():
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        # Workers fork from a fresh server that has imported sodec and torch once (fast start, shared pages)
        # but never run a torch op, so no OpenMP state is forked; a plain fork of this process could be.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["sodec.api"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_parallel(items: Sequence[tuple[int, Location, Location]], task: Task, folder: bool, jobs: int, threads: int,
                  report: Callable[[int, Outcome], None]) -> None:
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
                    # a retried file may have been written by the worker that died: verify it, do not refuse it
                    inflight[pool.submit(process_file, task, src, dst, folder or serial)] = item
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
    pairs: Sequence[Pair],
    task: Task,
    *,
    folder: bool,
    jobs: int = 1,
    threads: int = 1,
    quiet: bool = False,
    runner: Runner | None = None,
) -> int:
    """Code every (input, output) pair; returns the exit code (2 if any file failed).

    ``folder``: a folder run (existing outputs skipped, a summary at the end); otherwise a single file,
    where an existing output is an error unless ``task.force``.  ``threads``: the torch threads of this
    process, shared out among ``jobs`` workers.  ``runner(items, task, folder, report)``: codes the
    ``(index, input, output)`` items elsewhere (``jobs`` is then unused) with :func:`process_file` and calls
    ``report(index, outcome)`` for each.
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
    parallel = runner is None and jobs > 1 and len(pairs) > 1
    for i, (src, dst) in enumerate(pairs):
        if i in duplicates:
            report(i, Outcome("failed", src, dst, reason=duplicates[i]))
        elif parallel and isinstance(dst, Path) and (early := existing_output(task, src, dst, folder)):
            report(i, early)  # checked here: a rerun of a finished folder starts no worker
        else:
            pending.append((i, src, dst))
    try:
        if runner is not None:
            runner(pending, task, folder, report)
        elif parallel and len(pending) > 1:
            _run_parallel(pending, task, folder, jobs, max(1, threads // jobs), report)
        else:
            for i, src, dst in pending:
                report(i, process_file(task, src, dst, folder, catch_all=folder))
    finally:
        if progress:
            progress.close()
    remove_stale_temps([dst for _, dst in pairs])
    remove_dead_staging()
    finished = [o for o in outcomes if o is not None]
    failed = [o for o in finished if o.status == "failed"]
    if folder:
        _summary(finished, quiet)
    if failed and len(pairs) > 1:
        print(f"sodec: {len(failed)} of {len(pairs)} files failed", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def run_files(task: Task, source: str | os.PathLike, output: str | os.PathLike | None = None, *, jobs: int = 1,
              threads: int | None = None, quiet: bool = False, runner: Runner | None = None) -> int:
    """Code a file or a folder, local or at a URI, into ``output`` (default: next to the input), as
    ``sodec compress|decompress`` does; returns the exit code (0, or 2 if any file failed).

    ``jobs``: worker processes on this machine; ``threads``: torch threads shared among them (default: this
    process's); ``runner``: code elsewhere instead (:func:`sodec.distributed.ray_runner`).
    """
    pairs, folder = pair_files(source, output, task.kind)
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    return run(pairs, task, folder=folder, jobs=jobs, threads=threads, quiet=quiet, runner=runner)


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
