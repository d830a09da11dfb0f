"""Collections that outgrow one machine: bulk compress, decompress and eval on a Ray cluster.

Three ways in, one mechanism — a Ray Data pipeline whose map stage is an *actor pool*: each worker is a
long-lived process that loads the model (or, for eval, the models and metric networks) once, then codes one
file per call.  Workers take a GPU each when the cluster has GPUs.

* :func:`code_files` — the folder-to-folder job of ``sodec compress|decompress SRC -o DST --ray [ADDRESS]``,
  with the guarantees of ``--jobs`` (:mod:`sodec.batch`): resumable (an existing output is verified, by the
  worker, and skipped), atomic writes, a failing file reported while the others go on, a summary, exit
  code 2 on any failure, and `.sodec` files byte-identical to those of the single-process path (on the same
  kind of device).  A worker that dies (killed, out of memory) is restarted by Ray and its file retried;
  a file that kills its worker on every attempt is reported as failed.
* :func:`compress_dataset` / :func:`decompress_dataset` — the same coding over a :class:`ray.data.Dataset`,
  for notebooks and pipelines (rows in, rows with the coded bytes out; nothing written).
* :func:`eval_images` — the per-image step of ``sodec eval --ray`` (:mod:`sodec.eval.coding`); the driver
  aggregates, so BD-rates and the report are exactly those of ``sodec eval``.

Paths: local folders, or URIs of the file systems that :func:`pyarrow.fs.FileSystem.from_uri` opens
(``s3://``, ``gs://``, ``hdfs://``, ``abfs://``, ``file://``).  A URI's files are listed, read and written
through :mod:`pyarrow.fs`; each is staged in a local temporary folder and coded by exactly the code that
codes local files.  What "atomic" means on each store is in :func:`_upload` and docs/scaling.md.

Ray is an optional extra: ``pip install 'sodec[ray]'``.  Nothing here imports it at module level, so this
module imports (and :func:`require_ray` explains what is missing) without it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sodec.batch import DIED, Outcome, Task, check_existing, work
from sodec.console import describe, warn_one_line
from sodec.errors import SodecError

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

    from sodec.eval.coding import ImageResult
    from sodec.eval.settings import EvalConfig

EXTRA = "pip install 'sodec[ray]'"
ATTEMPTS = 3  # a file is tried this often when its worker dies: once, then retried twice
# Test hook: a folder; a worker coding a file whose name starts with "kill" dies mid-write, once per file
# (every time for "kill-always"); the folder holds the markers of the deaths.
_KILL_ONCE_ENV = "SODEC_TEST_KILL_ONCE"


def require_ray(what: str = "--ray"):
    """Import Ray (and Ray Data), or raise the one error that names the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        missing = e.name or "ray"
        raise SodecError(f"{what} needs the ray extra ({missing} is not installed): {EXTRA}") from None
    return ray


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster a job runs on: its address as given and its resources."""

    address: str
    cpus: float
    gpus: float

    def workers(self, cpus_per_worker: float, use_gpus: bool) -> int:
        """Default pool size: one worker per GPU where workers take GPUs, else one per ``cpus_per_worker``."""
        if use_gpus:
            return max(1, int(self.gpus))
        return max(1, int(self.cpus // cpus_per_worker))


def connect(address: str | None = "local") -> Cluster:
    """Join (or start) a Ray cluster, unless this process is already connected to one.

    ``address``: ``"local"`` or ``None`` starts a local cluster on this machine; ``"auto"`` joins the cluster
    this machine belongs to (``ray start``); ``"ray://HOST:PORT"`` connects a Ray client.
    """
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(
            address="local" if address in (None, "", "local") else address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            # Workers import sodec from the same environment as the driver on a local cluster; a remote
            # cluster needs sodec installed on its nodes (docs/scaling.md) rather than shipped per job.
        )
    _quiet_ray_data()
    res = ray.cluster_resources()
    return Cluster(str(address or "local"), float(res.get("CPU", 0)), float(res.get("GPU", 0)))


def _quiet_ray_data() -> None:
    """Progress and summaries are sodec's own (one line per file, a summary): no Ray Data progress bars."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # e.g. "progress bars disabled": our choice


def _worker_setup() -> tuple[int, bool]:
    """Once per worker: torch threads = the CPUs Ray gave it, one-line warnings; returns (threads, has_gpu)."""
    import ray
    import torch

    ctx = ray.get_runtime_context()
    threads = max(1, int(ctx.get_assigned_resources().get("CPU", 1)))
    torch.set_num_threads(threads)
    warnings.showwarning = warn_one_line
    has_gpu = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
    return threads, has_gpu


def _resolve_device(device: str, has_gpu: bool) -> str:
    """``auto``: the GPU Ray assigned this worker, else the CPU."""
    if device == "auto":
        return "cuda" if has_gpu else "cpu"
    return device


def _pool(workers: int | None, cluster: Cluster, n_items: int, cpus_per_worker: float, use_gpus: bool):
    """A fixed pool: no more workers than items, since each one pays a model load."""
    import ray.data

    size = max(1, min(workers or cluster.workers(cpus_per_worker, use_gpus), n_items))
    return ray.data.ActorPoolStrategy(size=size)


def _map_batches(ds: ray.data.Dataset, worker: type, kwargs: dict, pool, cpus_per_worker: float,
                 use_gpus: bool) -> ray.data.Dataset:
    """``ds.map_batches`` through a pool of ``worker(**kwargs)`` actors, one row per call."""
    with warnings.catch_warnings():
        # max_restarts / max_task_retries have no named parameter in Ray 2.60 (pinned by the extra); Ray Data
        # warns that the catch-all ``**ray_remote_args`` goes in 2.64.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=Warning)
        return ds.map_batches(worker, fn_constructor_kwargs=kwargs, compute=pool,
                              **_map_args(cpus_per_worker, use_gpus))


def _map_args(cpus_per_worker: float, use_gpus: bool) -> dict[str, Any]:
    """Resources and fault tolerance of each pooled worker."""
    return {
        "batch_size": 1,  # one file per call: results stream back as files finish; a dead worker loses one
        "batch_format": "numpy",
        "num_cpus": cpus_per_worker,
        "num_gpus": 1 if use_gpus else 0,
        # A worker that dies is restarted (its model loads again) and the file it had is retried, at most
        # ATTEMPTS times in all: a file that kills every worker it meets must not stall the run.
        "max_restarts": -1,
        "max_task_retries": ATTEMPTS - 1,
    }


class _Tolerant:
    """Let a job finish when some of its one-file blocks exhausted their retries (those files are reported
    as failed by the caller), instead of failing the whole dataset; restores the setting afterwards."""

    def __enter__(self):
        import ray.data

        self.ctx = ray.data.DataContext.get_current()
        self.saved = self.ctx.max_errored_blocks
        self.ctx.max_errored_blocks = -1
        return self

    def __exit__(self, *exc):
        self.ctx.max_errored_blocks = self.saved


# ------------------------------------------------------------------------------------------------ paths


def is_uri(path: str | os.PathLike) -> bool:
    """A ``scheme://`` location, handled through :mod:`pyarrow.fs` (anything else is a local path)."""
    return "://" in str(path)


_FILESYSTEMS: dict[str, Any] = {}


def _filesystem(uri: str):
    """``(pyarrow FileSystem, path in it)`` of a URI.  The file system is opened once per scheme and host in
    each process: opening an S3 or GCS one resolves credentials and the bucket's region, not a per-file cost."""
    from pyarrow import fs as pafs

    scheme, rest = uri.split("://", 1)
    host = rest.split("/", 1)[0]
    key = f"{scheme}://{host}"
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = pafs.FileSystem.from_uri(uri)[0]
    path = rest.split("?", 1)[0]  # object stores: "bucket/key"; file:///abs: "/abs"
    if scheme in ("hdfs", "viewfs"):  # hdfs://host:port/path: the path on that host
        path = "/" + path.split("/", 1)[1] if "/" in path else "/"
    return _FILESYSTEMS[key], path.rstrip("/") or "/"


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def _name(location: str) -> str:
    return PurePosixPath(location.split("://", 1)[-1]).name


def list_pairs(source: str, output: str | None, suffixes: Sequence[str], new_suffix: str) -> tuple[list, bool]:
    """``([(input, output)], is_folder)`` for a local path or a URI, as the CLI pairs files.

    A folder (or URI prefix) gives one pair per file directly in it whose suffix is in ``suffixes``, sorted,
    each to ``OUTPUT/stem + new_suffix``; a single file gives one pair.
    """
    from pyarrow import fs as pafs

    fs, path = _filesystem(source)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        entries = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        names = sorted(e.base_name for e in entries
                       if e.type == pafs.FileType.File and PurePosixPath(e.base_name).suffix.lower() in suffixes)
        if not names:
            raise SodecError(f"{source}: no input files ({', '.join(suffixes)})")
        out = (output or source).rstrip("/")
        if is_uri(out):
            ofs, opath = _filesystem(out)
            ofs.create_dir(opath, recursive=True)
        else:
            Path(out).mkdir(parents=True, exist_ok=True)
        base = source.rstrip("/")
        return [(_join(base, n), _join(out, PurePosixPath(n).stem + new_suffix)) for n in names], True
    if info.type != pafs.FileType.File:
        raise SodecError(f"{source}: no such file")
    stem = PurePosixPath(_name(source)).stem
    if output is None:
        output = source[: len(source) - len(PurePosixPath(source).suffix)] + new_suffix
    elif output.endswith("/") or _is_folder(output):
        output = _join(output, stem + new_suffix)
    return [(source, output)], False


def _is_folder(location: str) -> bool:
    if not is_uri(location):
        return Path(location).is_dir()
    from pyarrow import fs as pafs

    fs, path = _filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def _exists(location: str) -> bool:
    if not is_uri(location):
        return Path(location).is_file()
    from pyarrow import fs as pafs

    fs, path = _filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def _download(location: str, local: Path) -> None:
    fs, path = _filesystem(location)
    with fs.open_input_stream(path) as f, open(local, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)


def _upload(local: Path, location: str) -> None:
    """Put a finished local file at ``location`` so that no reader ever sees part of it.

    * Object stores (S3, GCS, Azure): an object becomes visible only when its upload completes, so the file
      is written under its final key; a writer killed mid-upload leaves no object (S3 may keep the parts of
      an unfinished multipart upload until a lifecycle rule aborts it).
    * Other file systems (local, HDFS, ``file://``): written under a temporary name ``.NAME.RANDOM.tmp`` in
      the same folder, then moved (a rename).  A writer killed before the move leaves that temporary file,
      which the end of the run removes (:func:`remove_stale_temps`).
    """
    fs, path = _filesystem(location)
    if fs.type_name in ("s3", "gcs", "abfs"):
        with open(local, "rb") as f, fs.open_output_stream(path) as out:
            shutil.copyfileobj(f, out, 1 << 20)
        return
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp" if folder else f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(local, "rb") as f, fs.open_output_stream(tmp) as out:
            shutil.copyfileobj(f, out, 1 << 20)
            _kill_hook(location, "upload")
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def remove_stale_temps(outputs: Sequence[str | os.PathLike]) -> int:
    """Remove the temporary files (``.NAME.RANDOM.tmp``) that writers killed mid-write left next to these
    outputs; returns how many.  Call when no writer of these outputs is running any more."""
    by_folder: dict[str, set[str]] = {}
    for out in outputs:
        out = str(out)
        folder, name = out.rsplit("/", 1) if is_uri(out) else os.path.split(out)
        by_folder.setdefault(folder, set()).add(name)
    removed = 0
    for folder, names in by_folder.items():
        for entry in _list_names(folder):
            if entry.startswith(".") and entry.endswith(".tmp") and entry[1:-4].rpartition(".")[0] in names:
                removed += _delete(_join(folder, entry) if is_uri(folder) else os.path.join(folder, entry))
    return removed


def _list_names(folder: str) -> list[str]:
    try:
        if not is_uri(folder):
            return os.listdir(folder or ".")
        from pyarrow import fs as pafs

        fs, path = _filesystem(folder)
        return [e.base_name for e in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))]
    except OSError:
        return []


def _delete(location: str) -> int:
    try:
        if is_uri(location):
            fs, path = _filesystem(location)
            fs.delete_file(path)
        else:
            os.unlink(location)
        return 1
    except OSError:
        return 0


def _kill_hook(location: str, where: str) -> None:
    """Tests only (``SODEC_TEST_KILL_ONCE=FOLDER``): die mid-write the first time a file named ``kill*`` is
    written, as a worker killed by the OOM killer or a pre-empted node would."""
    folder = os.environ.get(_KILL_ONCE_ENV)
    if not folder or not _name(location).startswith("kill"):
        return
    marker = Path(folder) / f"{_name(location)}.{where}"
    if not marker.exists():
        marker.touch()
        os._exit(1)


# -------------------------------------------------------------------------------------------- file jobs


def process_file(task: Task, source: str, output: str, folder: bool) -> Outcome:
    """Code one file as a folder run does: verify and skip a finished output, else code and write it
    atomically; every error becomes a ``failed`` outcome.  Local paths and URIs alike."""
    try:
        if not is_uri(source) and not is_uri(output):
            src, dst = Path(source), Path(output)
            if not task.force and dst.is_file():
                if folder:
                    return check_existing(task, src, dst)
                return Outcome("failed", src, dst, reason=f"{dst} exists (use --force to overwrite)")
            if _kill_hook_armed(dst):
                _die_mid_local_write(dst)
            return work(task, src, dst)
        return _process_remote(task, source, output, folder)
    except Exception as e:  # noqa: BLE001 - one file's failure, whatever it is, is reported and the run goes on
        return Outcome("failed", source, output, reason=describe(e))


def _kill_hook_armed(dst: Path) -> bool:
    return bool(os.environ.get(_KILL_ONCE_ENV)) and dst.name.startswith("kill")


def _die_mid_local_write(dst: Path) -> None:
    """Tests only: leave what a writer killed inside :func:`sodec.imageio.atomic_write` leaves — a partial
    temporary file next to the output — and die: once per file, or every time for ``kill-always*``."""
    marker = Path(os.environ[_KILL_ONCE_ENV]) / f"{dst.name}.local"
    if not dst.name.startswith("kill-always"):
        if marker.exists():
            return
        marker.touch()
    fd, _tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.write(fd, b"SDC partial")
    os._exit(1)


def _process_remote(task: Task, source: str, output: str, folder: bool) -> Outcome:
    """A URI's file: staged through a local temporary folder and coded by :func:`sodec.batch.work`."""
    with tempfile.TemporaryDirectory(prefix="sodec-ray-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        (tmp / "out").mkdir()
        local_src = tmp / "in" / _name(source)
        local_dst = tmp / "out" / _name(output)

        def named(o: Outcome) -> Outcome:  # messages name the URIs, not the staging copies
            reason = o.reason.replace(str(local_src), source).replace(str(local_dst), output)
            return replace(o, source=source, output=output, reason=reason)

        exists = _exists(output)
        if exists and not task.force and not folder:
            return Outcome("failed", source, output, reason=f"{output} exists (use --force to overwrite)")
        _fetch(source, local_src)
        if exists and not task.force:
            _fetch(output, local_dst)
            return named(check_existing(task, local_src, local_dst))
        outcome = work(task, local_src, local_dst)
        if outcome.status == "done":
            _put(local_dst, output)
        return named(outcome)


def _fetch(location: str, local: Path) -> None:
    if is_uri(location):
        _download(location, local)
    else:
        shutil.copyfile(location, local)


def _put(local: Path, location: str) -> None:
    if is_uri(location):
        _upload(local, location)
    else:
        from sodec.imageio import atomic_write

        atomic_write(location, data=local.read_bytes())


class _FileWorker:
    """A pooled Ray worker of :func:`code_files`: loads the model once, then codes one file per call."""

    def __init__(self, task: Task, folder: bool) -> None:
        _, has_gpu = _worker_setup()
        self.task = replace(task, device=_resolve_device(task.device, has_gpu))
        self.folder = folder
        if task.kind == "compress":
            from sodec import api

            try:
                api.load_model(self.task.model, self.task.rate, self.task.device)  # cached for every file
            except Exception:  # noqa: BLE001 - each file then reports the model's error
                pass

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {k: [] for k in ("i", "status", "n_bytes", "width", "height", "reason")}
        for i, src, dst in zip(batch["i"], batch["source"], batch["output"]):
            o = process_file(self.task, str(src), str(dst), self.folder)
            out["i"].append(int(i))
            out["status"].append(o.status)
            out["n_bytes"].append(o.n_bytes)
            out["width"].append(o.width)
            out["height"].append(o.height)
            out["reason"].append(o.reason)
        return out


def code_files(
    address: str | None = "local",
    *,
    workers: int | None = None,
    cpus_per_worker: float = 1,
) -> Callable[[Sequence[tuple[int, Any, Any]], Task, bool, Callable[[int, Outcome], None]], None]:
    """A runner for :func:`sodec.batch.run` (its ``runner=``) that codes the files on a Ray cluster.

    ``address``: see :func:`connect`.  ``workers``: actor-pool size (default: one per GPU when the cluster has
    GPUs and the task's device is ``auto`` or CUDA, else one per ``cpus_per_worker`` CPUs).  Each worker runs
    torch with ``cpus_per_worker`` threads.
    """

    def runner(items: Sequence[tuple[int, Any, Any]], task: Task, folder: bool,
               report: Callable[[int, Outcome], None]) -> None:
        if not items:
            return
        import ray.data

        cluster = connect(address)
        use_gpus = cluster.gpus > 0 and (task.device == "auto" or task.device.startswith("cuda"))
        rows = [{"i": i, "source": str(src), "output": str(dst)} for i, src, dst in items]
        by_index = {i: (src, dst) for i, src, dst in items}
        seen = set()
        with _Tolerant():  # around the Dataset's creation too: a Dataset keeps the context it was made in
            ds = _map_batches(
                ray.data.from_items(rows, override_num_blocks=min(len(rows), 100_000)),
                _FileWorker, {"task": task, "folder": folder},
                _pool(workers, cluster, len(rows), cpus_per_worker, use_gpus), cpus_per_worker, use_gpus,
            )
            for row in ds.iter_rows():
                i = int(row["i"])
                seen.add(i)
                src, dst = by_index[i]
                report(i, Outcome(str(row["status"]), src, dst, int(row["n_bytes"]), int(row["width"]),
                                  int(row["height"]), str(row["reason"])))
        for i, src, dst in items:  # files whose every attempt killed its worker
            if i not in seen:
                report(i, Outcome("failed", src, dst, reason=f"{src}: {DIED} ({ATTEMPTS} attempts)"))
        remove_stale_temps([str(dst) for _, _, dst in items])

    return runner


# ----------------------------------------------------------------------------------------- dataset API


class _DatasetCoder:
    """A pooled Ray worker of :func:`compress_dataset` / :func:`decompress_dataset`."""

    def __init__(self, kind: str, model, rate, device: str, decoder: str, tile: int) -> None:
        _, has_gpu = _worker_setup()
        self.kind, self.rate, self.decoder, self.tile = kind, rate, decoder, tile
        self.device = _resolve_device(device, has_gpu)
        self.model = model
        self.tmp = Path(tempfile.mkdtemp(prefix="sodec-ds-"))

    def _compress_one(self, row_bytes, row_image, path) -> tuple[bytes, int, int]:
        from sodec import api, container

        model = api.load_model(self.model, self.rate, self.device)  # cached: once per worker
        if row_image is not None:
            data = api.compress_image(model, row_image, self.tile)
        else:
            # Through a file, so that the colour policy, EXIF orientation and size limits are exactly those
            # of `sodec compress` (the same bytes as compressing the file itself).
            tmp = self.tmp / (_name(str(path)) if path else "image")
            tmp.write_bytes(bytes(row_bytes))
            try:
                data = api.compress_image(model, tmp, self.tile)
            finally:
                tmp.unlink(missing_ok=True)
        h = container.unpack(data).header
        return data, h.width, h.height

    def _decompress_one(self, data: bytes) -> tuple[bytes, int, int]:
        import io

        from sodec import api
        from sodec.imageio import PNG_COMPRESS_LEVEL

        image, h = api.decompress_bytes(bytes(data), self.model, self.device, self.decoder, self.tile)
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)  # as `sodec decompress` writes it
        return buf.getvalue(), h.width, h.height

    def __call__(self, batch: dict) -> dict:
        from sodec.container import bits_per_pixel

        n = len(next(iter(batch.values())))
        col = "png" if self.kind == "decompress" else "sodec"
        coded, widths, heights, sizes, bpps, errors = [], [], [], [], [], []
        for k in range(n):
            try:
                if self.kind == "compress":
                    data, w, h = self._compress_one(
                        batch["bytes"][k] if "bytes" in batch else None,
                        batch["image"][k] if "bytes" not in batch else None,
                        batch["path"][k] if "path" in batch else None,
                    )
                    n_bytes = len(data)
                else:
                    src = batch["sodec"][k] if "sodec" in batch else batch["bytes"][k]
                    data, w, h = self._decompress_one(src)
                    n_bytes = len(src)
                coded.append(data)
                widths.append(w)
                heights.append(h)
                sizes.append(n_bytes)
                bpps.append(bits_per_pixel(n_bytes, w, h))
                errors.append(None)
            except Exception as e:  # noqa: BLE001 - a bad row is reported in its own row; the others go on
                coded.append(None)
                widths.append(0)
                heights.append(0)
                sizes.append(0)
                bpps.append(0.0)
                errors.append(describe(e))
        return {**batch, col: coded, "width": widths, "height": heights, "n_bytes": sizes, "bpp": bpps,
                "error": errors}


def _dataset_map(ds: ray.data.Dataset, kind: str, model, rate, device: str, decoder: str, tile: int,
                 workers: int | None, cpus_per_worker: float) -> ray.data.Dataset:
    cluster = connect(None)
    use_gpus = cluster.gpus > 0 and (device == "auto" or device.startswith("cuda"))
    size = workers or cluster.workers(cpus_per_worker, use_gpus)
    import ray.data

    kwargs = {"kind": kind, "model": model, "rate": rate, "device": device, "decoder": decoder, "tile": tile}
    # An autoscaling pool: a fixed one could take every CPU before the upstream read tasks have run, and wait
    # for rows that nothing is left to read.
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=size)
    return _map_batches(ds, _DatasetCoder, kwargs, pool, cpus_per_worker, use_gpus)


def compress_dataset(
    ds: ray.data.Dataset,
    model: str | os.PathLike = "nano",
    rate: int | None = None,
    *,
    device: str = "auto",
    tile: int = 64,
    workers: int | None = None,
    cpus_per_worker: float = 1,
) -> ray.data.Dataset:
    """Compress every image of a Ray Dataset (lazily: nothing runs until the result is consumed).

    Each row needs either ``bytes`` (an encoded image file, as ``ray.data.read_binary_files`` gives; with
    ``include_paths=True`` its ``path`` names it in error messages) or ``image`` (an ``(H, W, 3)`` uint8 array,
    as ``ray.data.read_images(..., mode="RGB")`` gives).  The result has every input column plus ``sodec``
    (the bytes of the `.sodec` file: the same bytes ``sodec compress`` writes for that file), ``width``,
    ``height``, ``n_bytes``, ``bpp`` and ``error`` (``None``, or why that row failed; then ``sodec`` is
    ``None``).  Workers load the model once each and take a GPU each where the cluster has them.

    >>> ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    >>> compress_dataset(ds, "nano", rate=0).select_columns(["path", "sodec", "bpp"]).write_parquet(...)
    """
    require_ray("compress_dataset")
    return _dataset_map(ds, "compress", str(model), rate, device, "auto", tile, workers, cpus_per_worker)


def decompress_dataset(
    ds: ray.data.Dataset,
    model: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    decoder: str = "auto",
    tile: int = 64,
    workers: int | None = None,
    cpus_per_worker: float = 1,
) -> ray.data.Dataset:
    """Decode the `.sodec` bytes in column ``sodec`` (or ``bytes``) of each row to PNG bytes in ``png``, plus
    ``width``, ``height``, ``n_bytes``, ``bpp`` and ``error``.  ``model``: as ``sodec decompress --model``
    (default: the bundled model named in each file)."""
    require_ray("decompress_dataset")
    return _dataset_map(ds, "decompress", None if model is None else str(model), None, device, decoder, tile,
                        workers, cpus_per_worker)


# ------------------------------------------------------------------------------------------------- eval


class _EvalWorker:
    """A pooled Ray worker of ``sodec eval --ray``: the models and metric networks load once per worker."""

    def __init__(self, cfg: EvalConfig) -> None:
        _worker_setup()
        from sodec.eval.coding import coder_for

        self.cfg = cfg
        coder_for(cfg)

    def __call__(self, batch: dict) -> dict:
        from sodec.eval.coding import code_image

        results, errors = [], []
        for source, name in zip(batch["source"], batch["name"]):
            try:
                results.append(code_image(self.cfg, Path(str(source)), str(name)))
                errors.append(None)
            except Exception as e:  # noqa: BLE001 - sent back: the driver fails the run as sodec eval would
                results.append(None)
                errors.append(describe(e))
        return {"i": batch["i"], "result": results, "error": errors}


def eval_images(
    cfg: EvalConfig, items: Sequence[tuple[Path, str]], on_result: Callable[..., Any] | None = None
) -> tuple[list[ImageResult], dict]:
    """Code and measure every ``(image path, output name)`` on the cluster ``cfg.ray``; returns the results in
    the order of ``items`` and a description of the cluster for the report.

    The run folder ``cfg.out`` must be on a file system that every worker shares with this process.  An
    image that fails (unreadable) fails the run, as in ``sodec eval``.
    """
    cluster = connect(cfg.ray)
    import ray.data

    use_gpus = cluster.gpus > 0 and cfg.device.startswith("cuda")
    rows = [{"i": i, "source": str(p), "name": n} for i, (p, n) in enumerate(items)]
    pool = _pool(cfg.workers, cluster, len(rows), 1, use_gpus)
    ds = _map_batches(ray.data.from_items(rows, override_num_blocks=min(len(rows), 100_000)), _EvalWorker,
                      {"cfg": cfg}, pool, 1, use_gpus)
    results: list = [None] * len(rows)
    for row in ds.iter_rows():
        if row["error"] is not None:
            raise SodecError(str(row["error"]))
        results[int(row["i"])] = row["result"]
        if on_result:
            on_result()
    info = {"address": cluster.address, "workers": pool.max_size, "cluster_cpus": cluster.cpus,
            "cluster_gpus": cluster.gpus}
    return results, info
