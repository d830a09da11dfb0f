"""The per-image step of ``sodec eval --ray``: :func:`eval_images`.

Each worker runs :func:`sodec.eval.coding.code_image` (load, preprocess, code with SODEC and the baselines,
measure); the driver aggregates, so BD-rates and the report are exactly those of ``sodec eval``.  An image
that fails, or whose worker is lost on every attempt, is reported and the others go on, as in ``sodec eval``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sodec.console import describe
from sodec.distributed.cluster import ActorPool, connect

if TYPE_CHECKING:  # pragma: no cover
    from sodec.eval.coding import ImageResult
    from sodec.eval.settings import EvalConfig


class EvalWorker:
    """A Ray worker of ``sodec eval --ray``: its constructor loads the SODEC models, baseline codecs and metric
    networks once (:func:`sodec.eval.coding.coder_for`); then one image per call."""

    def __init__(self, cfg: EvalConfig) -> None:
        from sodec.distributed.cluster import worker_setup
        from sodec.eval.coding import coder_for

        self.cfg = replace(cfg, device=worker_setup(cfg.device))
        coder_for(self.cfg)

    def code(self, source: str, name: str, attempt: int) -> tuple[ImageResult | None, str | None]:
        """``(result, None)``, or ``(None, why this image failed)``."""
        from sodec.eval.coding import code_image

        try:
            return code_image(self.cfg, Path(source), name), None
        except Exception as e:  # noqa: BLE001 - one image's failure, reported by the driver as sodec eval does
            return None, describe(e)


def eval_images(
    cfg: EvalConfig, items: Sequence[tuple[Path, str]], on_result: Callable[[], Any] | None = None
) -> tuple[list[ImageResult | None], dict[int, str], dict]:
    """Code and measure every ``(image path, output name)`` on the cluster ``cfg.ray``.

    Returns the results in the order of ``items`` (``None`` for an image that failed), ``{index: reason}`` of
    the failures, and a description of the cluster for the report.  The run folder ``cfg.out`` must be on a
    file system that every worker shares with this process.
    """
    cluster = connect(cfg.ray)
    use_gpus = cluster.uses_gpus(cfg.device)
    size = cluster.pool_size(cfg.workers, len(items), 1, use_gpus)
    results: list = [None] * len(items)
    failures: dict[int, str] = {}

    def done(k: int, value: tuple) -> None:
        results[k], error = value
        if error is not None:
            failures[k] = error if str(items[k][0]) in error else f"{items[k][0]}: {error}"
        if on_result:
            on_result()

    def failed(k: int, why: str) -> None:
        failures[k] = f"{items[k][0]}: {why}"
        if on_result:
            on_result()

    pool = ActorPool(EvalWorker, {"cfg": cfg}, size, 1, int(use_gpus))
    try:
        pool.run([(str(path), name) for path, name in items], done, failed)
    finally:
        pool.close()
    info = {"address": cluster.address, "workers": size, "cluster_cpus": cluster.cpus, "cluster_gpus": cluster.gpus}
    return results, failures, info
