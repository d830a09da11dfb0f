"""A Ray job for the tests, with faults injected into its workers — from here, never from sodec's own code.

:func:`start` joins the cluster named by ``RAY_ADDRESS`` (``ray start --head --num-cpus 2``: for machines too
loaded for ``ray.init`` to start one within Ray's 30 s) or starts a local 2-CPU one.  Every worker process of
the job runs :func:`_install_faults` when it starts (runtime_env's ``worker_process_setup_hook``), which
wraps three functions of that process, by file name, so that one job holds files that fail and files that
do not:

* an output named ``kill-*``: the worker is killed (SIGKILL, as the kernel's OOM killer does) inside
  :func:`sodec.imageio.atomic_write`, once its temporary file holds the whole output and before it is renamed
  (the ``os.fsync`` of that file).  Once per name (a marker file in ``markers``), or on every attempt for
  ``kill-always*``;
* an output named ``kill-upload-*``: killed in the middle of its upload to a URI
  (:func:`sodec.uris.upload`), after half of its first block, once per name;
* an image named ``die-*`` kills the worker that reads it (:func:`sodec.imageio.load_image`), every time;
* a file ``markers/disarmed`` turns every rule off (a rerun "after the fault").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def start(markers: Path, env_vars: dict[str, str] | None = None):
    """``ray.init`` for a test module (``ray.shutdown()`` at its end); skips without ray."""
    ray = pytest.importorskip("ray")
    # Workers cannot import the tests folder: the hook travels by value, with this module.
    pytest.importorskip("ray.cloudpickle").register_pickle_by_value(sys.modules[__name__])
    runtime_env = {"worker_process_setup_hook": _hook(str(markers)), "env_vars": dict(env_vars or {})}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env, logging_level="ERROR")
    else:
        ray.init(num_cpus=2, include_dashboard=False, runtime_env=runtime_env, logging_level="ERROR")
    return ray


def _hook(markers: str):
    def hook() -> None:
        _install_faults(markers)

    return hook


def _install_faults(markers: str) -> None:
    import signal

    import sodec.imageio
    import sodec.uris

    def first_time(name: str, prefix: str) -> bool:
        """Whether the worker writing output ``name`` dies now, by the rule for names starting with ``prefix``."""
        if os.path.exists(os.path.join(markers, "disarmed")) or not name.startswith(prefix):
            return False
        if name.startswith("kill-always"):
            return True
        if prefix == "kill-" and name.startswith("kill-upload-"):
            return False
        try:  # O_EXCL: exactly one worker dies for this name, even with two racing
            os.close(os.open(os.path.join(markers, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        leaf = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if leaf.startswith(".") and leaf.endswith(".tmp") and first_time(leaf[1:-4].rpartition(".")[0], "kill-"):
            die()  # inside atomic_write: the temporary file is written, not yet synced or renamed
        real_fsync(fd)

    os.fsync = fsync

    real_load = sodec.imageio.load_image

    def load_image(path):
        if os.path.basename(str(path)).startswith("die-") and not os.path.exists(os.path.join(markers, "disarmed")):
            die()
        return real_load(path)

    sodec.imageio.load_image = load_image

    class Stream:  # an upload stream whose writer dies half-way through its first block
        def __init__(self, stream, name: str) -> None:
            self.stream, self.name = stream, name

        def write(self, data) -> int:
            if first_time(self.name, "kill-upload-"):
                self.stream.write(bytes(data)[: len(data) // 2])
                die()
            return self.stream.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.stream.close()

    class FileSystem:
        def __init__(self, fs) -> None:
            self.fs = fs

        def __getattr__(self, attr: str):
            return getattr(self.fs, attr)

        def open_output_stream(self, path: str, *args, **kwargs):
            return Stream(self.fs.open_output_stream(path, *args, **kwargs), os.path.basename(path))

    real_filesystem = sodec.uris.filesystem

    def filesystem(uri: str):
        fs, path = real_filesystem(uri)
        return FileSystem(fs), path

    sodec.uris.filesystem = filesystem


class BrokenWorker:
    """A pool worker whose constructor fails, as one whose model cannot load on its node would."""

    def __init__(self) -> None:
        raise ValueError("no model on this node")

    def code(self, item, attempt: int):  # pragma: no cover - never reached
        return item
