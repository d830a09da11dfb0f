"""One worker thread and a bounded queue: the demo codes one image at a time and never runs out of memory.

A request that arrives while the worker is busy waits in the queue (the page shows its position); when
``max_waiting`` requests are already waiting, :meth:`JobQueue.submit` raises :class:`QueueFull` and the server
answers 503 with a clear message.  Finished jobs keep their result and files until ``keep`` newer jobs have
finished (then the page says the result expired).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sodec.errors import SodecError

log = logging.getLogger("sodec.serve")


class QueueFull(SodecError):
    """Too many requests are already waiting."""


@dataclass
class Job:
    """One request: its state (queued → running → done | error), the worker's progress and its outputs."""

    kind: str
    # run(publish, outputs): fills the outputs dict as files appear and calls publish(stage, result[, progress])
    run: Callable = field(repr=False)
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    state: str = "queued"
    stage: str = "waiting for the worker"
    error: str | None = None
    status: int = 200  # HTTP status describing an error (4xx: the upload; 500: a bug)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    outputs: dict = field(default_factory=dict, repr=False)
    progress: float | None = None  # share of the work done (0..1), when the job can tell
    _result: str = "null"  # JSON of the latest published result
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def publish(self, stage: str, result: dict, progress: float | None = None) -> None:
        """Make ``result`` (a partial result, then the final one) what pollers see, with the current stage.

        The result is serialised here, on the worker, so a poll never sees a dict that is being changed.
        """
        text = json.dumps(result)
        with self._lock:
            self.stage = stage
            self.progress = progress
            self._result = text

    def snapshot(self, position: int) -> dict:
        with self._lock:
            result = json.loads(self._result)
            out = {"id": self.id, "kind": self.kind, "state": self.state, "stage": self.stage, "error": self.error,
                   "status": self.status, "position": position, "progress": self.progress, "result": result}
        if self.started is not None:
            out["elapsed_s"] = round((self.finished or time.time()) - self.started, 2)
        return out


class JobQueue:
    """A single worker thread fed by a bounded FIFO; ``warm_up`` runs first on that same thread."""

    def __init__(self, max_waiting: int = 4, keep: int = 16, warm_up: Callable[[], None] | None = None) -> None:
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.max_waiting = max_waiting
        self.keep = max(1, keep)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._finished: deque[str] = deque()
        self._cond = threading.Condition()
        self._warm_up = warm_up
        self.ready = warm_up is None
        self.warm_up_error: str | None = None
        self._thread = threading.Thread(target=self._work, name="sodec-serve-worker", daemon=True)
        self._thread.start()

    # --------------------------------------------------------------------------------------------- public

    def submit(self, kind: str, run: Callable) -> Job:
        """Queue ``run(publish, outputs)``; raises :class:`QueueFull` when ``max_waiting`` jobs are already waiting."""
        with self._cond:
            idle = self.ready and self._running is None and not self._waiting
            if not idle and len(self._waiting) >= self.max_waiting:
                busy = "the model is loading" if not self.ready else "one image is being coded"
                raise QueueFull(
                    f"server busy: {busy} and {len(self._waiting)} more request(s) are waiting (the queue holds "
                    f"{self.max_waiting}); please try again in a minute"
                )
            job = Job(kind, run)
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify_all()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """1 = next to run, 2 = after that, ...; 0 once it runs or has finished."""
        with self._cond:
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return 0

    def status(self) -> dict:
        with self._cond:
            return {"ready": self.ready, "warm_up_error": self.warm_up_error, "running": self._running is not None,
                    "waiting": len(self._waiting), "max_waiting": self.max_waiting}

    # --------------------------------------------------------------------------------------------- worker

    def _work(self) -> None:
        if self._warm_up is not None:
            try:
                self._warm_up()
            except Exception as e:  # reported by /api/info; jobs still run and report their own errors
                self.warm_up_error = f"{e.__class__.__name__}: {e}"
                log.error("warm-up failed: %s", self.warm_up_error)
            with self._cond:
                self.ready = True
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
                job = self._waiting.popleft()
                self._running = job
                job.state, job.started = "running", time.time()
            try:
                job.run(job.publish, job.outputs)
                job.state = "done"
            except SodecError as e:  # the upload's fault: a clear message, 4xx
                job.state, job.error, job.status = "error", str(e), getattr(e, "status", 400)
            except Exception as e:  # a bug: say so, keep the server up
                log.error("job %s failed:\n%s", job.id, traceback.format_exc())
                job.state, job.error, job.status = "error", f"internal error ({e.__class__.__name__}: {e})", 500
            finally:
                with self._cond:
                    job.finished = time.time()
                    self._running = None
                    self._finished.append(job.id)
                    while len(self._finished) > self.keep:
                        self._jobs.pop(self._finished.popleft(), None)
