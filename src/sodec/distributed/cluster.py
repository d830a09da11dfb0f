"""The cluster a job runs on, and the pool of workers that codes its items, one item per call.

Every job of :mod:`sodec.distributed` that codes a list of items (files, eval images) runs it through an
:class:`ActorPool`: ``size`` long-lived Ray actors of one worker class, each loading its model in its
constructor and then coding one item per call.  The pool, not Ray, retries an item whose worker dies, so it
knows how many attempts were really made and what Ray said about each loss (:func:`lost_in_every_attempt`).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sodec.console import describe, warn_one_line
from sodec.errors import SodecError

EXTRA = "pip install -e '.[ray]' (from a sodec checkout)"
ATTEMPTS = 3  # an item whose worker dies is tried this often in all: once, then twice more
RESTART_WAIT_S = 120  # at the end of a job, how long to wait for workers that Ray is still restarting


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
    """The Ray cluster a job runs on: its address (its GCS's ``host:port``) and its resources."""

    address: str
    cpus: float
    gpus: float

    def uses_gpus(self, device: str) -> bool:
        """Workers take a GPU each where the cluster has GPUs and the device is ``auto`` or CUDA."""
        return self.gpus > 0 and (device == "auto" or device.startswith("cuda"))

    def default_workers(self, cpus_per_worker: float, use_gpus: bool) -> int:
        """One worker per GPU where workers take GPUs, else one per ``cpus_per_worker`` CPUs."""
        return max(1, int(self.gpus) if use_gpus else int(self.cpus // cpus_per_worker))

    def pool_size(self, workers: int | None, n_items: int, cpus_per_worker: float, use_gpus: bool) -> int:
        """``workers`` if given, else :meth:`default_workers`; never more than there are items, since each
        worker pays a model load."""
        return max(1, min(workers or self.default_workers(cpus_per_worker, use_gpus), n_items))

    def describe(self, size: int) -> str:
        return f"{size} worker(s) on a cluster of {self.cpus:g} CPUs and {self.gpus:g} GPUs ({self.address})"


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
    res = ray.cluster_resources()
    joined = ray.get_runtime_context().gcs_address  # the cluster really joined (a test may have joined first)
    return Cluster(str(joined or address or "local"), float(res.get("CPU", 0)), float(res.get("GPU", 0)))


def worker_setup(device: str) -> str:
    """Once per worker: torch threads = the CPUs Ray gave it, one-line warnings; returns the device to use
    (``auto``: the GPU Ray assigned this worker, else the CPU)."""
    import ray
    import torch

    threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    torch.set_num_threads(threads)
    warnings.showwarning = warn_one_line
    if device == "auto":
        return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    return device


def lost_in_every_attempt(reasons: Sequence[str]) -> str:
    """Why an item was never coded: each attempt ended with its worker lost, in Ray's words."""
    said = "; ".join(dict.fromkeys(reasons))  # each distinct reason once, in order
    if len(reasons) == 1:
        return f"not coded: its worker was lost (Ray: {said})"
    return f"not coded after {len(reasons)} attempts: each time its worker was lost (Ray: {said})"


def loss_reason(error: Exception) -> str:
    """One line of what Ray reported when a worker was lost in a call."""
    import ray.exceptions as rx

    text = str(error)
    if isinstance(error, rx.ActorUnavailableError):  # the process went away mid-call; Ray restarts it
        m = re.search(r"is unavailable: (.*?)\. The task may", text, re.S)
        return m.group(1) if m else text.splitlines()[0]
    if isinstance(error, rx.ActorDiedError):
        if error.actor_init_failed:
            return "the worker failed to start: " + text.strip().splitlines()[-1]
        lines = [ln for ln in text.splitlines()[1:] if ln.strip() and not ln.startswith("\t")]
        detail = " ".join(lines) or text.splitlines()[0]
        return detail.split(" Some common causes")[0].split(" There are some potential")[0]
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


class ActorPool:
    """``size`` Ray actors of ``worker_class(**kwargs)``, each with ``cpus`` CPUs and ``gpus`` GPUs.

    Ray restarts an actor whose process dies (its constructor, and so its model load, runs again); the pool
    sends it no item until it is back, and a job that lost workers ends when they are back (or after
    ``RESTART_WAIT_S``), since a worker's constructor clears what its dead predecessor left on the node.
    Each actor has one call in flight at a time, so a death is charged to the one item that was being coded.
    ``worker_class`` has ``code(*call, attempt)``.
    """

    def __init__(self, worker_class: type, kwargs: dict, size: int, cpus: float, gpus: float,
                 attempts: int = ATTEMPTS) -> None:
        import ray

        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=0)(worker_class)
        self.actors = [remote.remote(**kwargs) for _ in range(size)]
        self.attempts = attempts

    def run(self, calls: Sequence[tuple], on_result: Callable[[int, Any], None],
            on_failed: Callable[[int, str], None]) -> None:
        """Call ``actor.code(*calls[k], attempt)`` for every ``k``: ``on_result(k, value)`` as each returns,
        or ``on_failed(k, why)`` for an item whose worker was lost in ``attempts`` calls in a row (or that
        no worker is left to code, or whose worker raised, a bug: workers return errors as values)."""
        import ray
        import ray.exceptions as rx

        todo = deque((k, 1) for k in range(len(calls)))
        idle = list(self.actors)
        inflight: dict = {}  # ObjectRef of a call -> (k, attempt, actor)
        recovering: dict = {}  # ObjectRef of a readiness probe -> actor being restarted by Ray
        lost: dict[int, list[str]] = {}  # item -> what Ray said of each lost attempt
        while todo or inflight:
            while todo and idle:
                k, attempt = todo.popleft()
                actor = idle.pop()
                inflight[actor.code.remote(*calls[k], attempt)] = (k, attempt, actor)
            if not inflight and not recovering:  # every actor is gone for good: nothing can code the rest
                last = next(reversed(lost.values()), ["unknown"])[-1]
                for k, _ in todo:
                    tried = lost_in_every_attempt(lost[k]) + "; " if k in lost else "not coded: "
                    on_failed(k, f"{tried}no worker is left (the last one: {last})")
                return
            (ref,), _ = ray.wait([*inflight, *recovering], num_returns=1)
            if ref in recovering:
                actor = recovering.pop(ref)
                try:
                    ray.get(ref)
                    idle.append(actor)
                except rx.RayError:
                    pass  # could not be restarted (its constructor failed): the pool goes on without it
                continue
            k, attempt, actor = inflight.pop(ref)
            try:
                value = ray.get(ref)
            except rx.RayTaskError as e:  # a worker raised: a bug, since workers return errors as values
                idle.append(actor)
                on_failed(k, "its worker raised " + (describe(e.cause) if e.cause else str(e).splitlines()[0]))
                continue
            except rx.RayError as e:  # the worker was lost mid-call
                if not (isinstance(e, rx.ActorDiedError) and e.actor_init_failed):
                    # back in the pool once Ray has restarted it (its model loaded again)
                    recovering[actor.__ray_ready__.options(max_task_retries=-1).remote()] = actor
                lost.setdefault(k, []).append(loss_reason(e))
                if attempt < self.attempts:
                    todo.appendleft((k, attempt + 1))
                else:
                    on_failed(k, lost_in_every_attempt(lost[k]))
                continue
            idle.append(actor)
            on_result(k, value)
        if recovering:  # the restarted workers' constructors clear what the dead ones left (staging folders)
            ray.wait(list(recovering), num_returns=len(recovering), timeout=RESTART_WAIT_S)

    def close(self) -> None:
        """End the actors (call when every call has returned)."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
