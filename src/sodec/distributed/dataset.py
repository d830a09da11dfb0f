"""The Dataset API: :func:`compress_dataset` / :func:`decompress_dataset` over a :class:`ray.data.Dataset`.

For notebooks and pipelines: rows in, rows with the coded bytes out, nothing written (the pipeline decides
where the bytes go).  A Ray Data ``map_batches`` through an autoscaling actor pool of :class:`DatasetCoder`,
one row per call; a row that fails gets its reason in its ``error`` column and the others go on.  A worker
that dies is restarted and its row retried by Ray Data (3 attempts in all); a row that kills its worker
every time fails the Dataset's execution, as any Ray Data job does.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from typing import TYPE_CHECKING

from sodec.console import describe
from sodec.distributed.cluster import ATTEMPTS, connect, require_ray
from sodec.errors import SodecError

if TYPE_CHECKING:  # pragma: no cover
    import ray.data


class DatasetCoder:
    """A Ray Data worker of :func:`compress_dataset` / :func:`decompress_dataset`: loads a compress model in
    its constructor (decompress: the model each row's header names, loaded once and cached), then codes one
    row per call."""

    def __init__(self, kind: str, model: str | None, rate: int | None, device: str, decoder: str,
                 tile: int) -> None:
        from sodec import api
        from sodec.distributed.cluster import worker_setup

        self.kind, self.model, self.decoder, self.tile = kind, model, decoder, tile
        self.device = worker_setup(device)
        self.encoder = None
        self.load_error: Exception | None = None
        if kind == "compress":
            try:
                self.encoder = api.load_model(model, rate, self.device, for_encoding=True)  # no bases
            except Exception as e:  # noqa: BLE001 - each row then reports the model's error
                self.load_error = e

    def _compress(self, row: dict) -> tuple[bytes, int, int, int]:
        from sodec import api, container
        from sodec.imageio import decode_image_bytes, from_rgb_array

        if self.load_error is not None:
            raise self.load_error
        if row.get("bytes") is not None:
            # The reader of `sodec compress` (colour policy, EXIF orientation, size limits), for bytes in memory:
            # the same .sodec bytes as compressing the file itself.
            name = os.path.basename(str(row["path"])) if row.get("path") is not None else "image"
            rgb, mode = decode_image_bytes(bytes(row["bytes"]), name)
            data = api.compress_image(self.encoder, from_rgb_array(rgb, mode), self.tile)
        else:
            data = api.compress_image(self.encoder, row["image"], self.tile)
        h = container.unpack(data).header
        return data, h.width, h.height, len(data)

    def _decompress(self, row: dict) -> tuple[bytes, int, int, int]:
        from sodec import api
        from sodec.imageio import PNG_COMPRESS_LEVEL

        data = row["sodec"] if "sodec" in row else row["bytes"]
        if data is None:
            raise SodecError("no .sodec bytes in this row (its compression failed?)")
        data = bytes(data)
        image, h = api.decompress_bytes(data, self.model, self.device, self.decoder, self.tile)
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)  # as `sodec decompress` writes it
        return buf.getvalue(), h.width, h.height, len(data)

    def __call__(self, batch: dict) -> dict:
        from sodec.container import bits_per_pixel

        n = len(next(iter(batch.values())))
        col = "png" if self.kind == "decompress" else "sodec"
        out: dict[str, list] = {k: [] for k in (col, "width", "height", "n_bytes", "bpp", "error")}
        for k in range(n):
            row = {key: values[k] for key, values in batch.items()}
            try:
                data, w, h, n_bytes = self._compress(row) if self.kind == "compress" else self._decompress(row)
                values = (data, w, h, n_bytes, bits_per_pixel(n_bytes, w, h), None)
            except Exception as e:  # noqa: BLE001 - a bad row is reported in its own row; the others go on
                values = (None, 0, 0, 0, 0.0, describe(e))
            for key, v in zip(out, values):
                out[key].append(v)
        return {**batch, **out}


def _dataset_map(ds: ray.data.Dataset, kind: str, model: str | None, rate: int | None, device: str, decoder: str,
                 tile: int, workers: int | None, cpus_per_worker: float) -> ray.data.Dataset:
    import ray.data

    cluster = connect(None)
    _quiet_ray_data()
    use_gpus = cluster.uses_gpus(device)
    size = workers or cluster.default_workers(cpus_per_worker, use_gpus)
    kwargs = {"kind": kind, "model": model, "rate": rate, "device": device, "decoder": decoder, "tile": tile}
    # An autoscaling pool: a fixed one could take every CPU before the upstream read tasks have run, and wait
    # for rows that nothing is left to read.
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=size)
    with warnings.catch_warnings():
        # max_restarts / max_task_retries have no named parameter in Ray 2.60 (pinned by the extra); Ray Data
        # warns that the catch-all ``**ray_remote_args`` goes in 2.64.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=Warning)
        return ds.map_batches(
            DatasetCoder, fn_constructor_kwargs=kwargs, compute=pool,
            batch_size=1,  # one row per call: a dead worker loses one row
            batch_format="numpy", num_cpus=cpus_per_worker, num_gpus=1 if use_gpus else 0,
            max_restarts=-1, max_task_retries=ATTEMPTS - 1,
        )


def _quiet_ray_data() -> None:
    """Progress is the caller's: no Ray Data progress bars or execution banners."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # e.g. "progress bars disabled": our choice


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
