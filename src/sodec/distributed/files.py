"""The file job of ``sodec compress|decompress SRC -o OUT --ray``: :func:`ray_runner`.

A runner for :func:`sodec.batch.run`: the driver pairs the files (:func:`sodec.batch.pair_files`, local paths
or URIs), a pool of Ray workers (:class:`~sodec.distributed.cluster.ActorPool`) codes them one per call with
:func:`sodec.batch.process_file`, exactly as ``--jobs`` does, and the driver reports each outcome as it
arrives.  So the guarantees are those of ``--jobs``: existing outputs verified and skipped, atomic writes, one
file's failure its own, temporary files of killed writers removed, the same bytes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

from sodec.batch import Outcome, Runner, Task, process_file, start_worker
from sodec.distributed.cluster import ActorPool, connect
from sodec.uris import Location


class FileWorker:
    """A Ray worker of the file job: its constructor loads the model once (:func:`sodec.batch.start_worker`),
    then it codes one file per call."""

    def __init__(self, task: Task, folder: bool) -> None:
        from sodec.distributed.cluster import worker_setup

        self.task = replace(task, device=worker_setup(task.device))
        self.folder = folder
        start_worker(self.task)

    def code(self, source: Location, output: Location, attempt: int) -> Outcome:
        # A retried file may have been written completely by the worker that died: verify it, never refuse it.
        return process_file(self.task, source, output, self.folder or attempt > 1)


def ray_runner(address: str | None = "local", *, workers: int | None = None, cpus_per_worker: float = 1,
               quiet: bool = False) -> Runner:
    """A runner for :func:`sodec.batch.run` / :func:`sodec.batch.run_files` that codes on a Ray cluster.

    ``address``: see :func:`~sodec.distributed.cluster.connect`.  ``workers``: the pool size (default: one
    per GPU when the cluster has GPUs and the task's device is ``auto`` or CUDA, else one per
    ``cpus_per_worker`` CPUs; never more than there are files).  Each worker runs torch with
    ``cpus_per_worker`` threads.  Unless ``quiet``, one line on stderr says the pool and the cluster.
    """

    def runner(items: Sequence[tuple[int, Location, Location]], task: Task, folder: bool,
               report: Callable[[int, Outcome], None]) -> None:
        if not items:
            return
        cluster = connect(address)
        use_gpus = cluster.uses_gpus(task.device)
        size = cluster.pool_size(workers, len(items), cpus_per_worker, use_gpus)
        if not quiet:
            from tqdm import tqdm

            tqdm.write(f"sodec: ray: {cluster.describe(size)}", file=sys.stderr)  # above the progress bar
        pool = ActorPool(FileWorker, {"task": task, "folder": folder}, size, cpus_per_worker, int(use_gpus))

        def failed(k: int, why: str) -> None:
            i, src, dst = items[k]
            report(i, Outcome("failed", src, dst, reason=f"{src}: {why}"))

        try:
            pool.run([(src, dst) for _, src, dst in items], lambda k, o: report(items[k][0], o), failed)
        finally:
            pool.close()

    return runner
