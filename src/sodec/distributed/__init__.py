"""Collections that outgrow one machine: bulk compress, decompress and eval on a Ray cluster.

One module per job, one worker class per job, and in each worker class's constructor the one place where
that job loads its model:

* :mod:`~sodec.distributed.cluster` — joining the cluster, and the :class:`ActorPool` that codes a job's
  items one per call, retries an item whose worker is lost and says why from what Ray reports.
* :mod:`~sodec.distributed.files` — :func:`ray_runner`, the file job of ``sodec compress|decompress --ray``
  (:class:`~sodec.distributed.files.FileWorker`), with the rules of :mod:`sodec.batch`.
* :mod:`~sodec.distributed.dataset` — :func:`compress_dataset` / :func:`decompress_dataset` over a Ray Dataset
  (:class:`~sodec.distributed.dataset.DatasetCoder`).
* :mod:`~sodec.distributed.evaluation` — :func:`eval_images`, the per-image step of ``sodec eval --ray``
  (:class:`~sodec.distributed.evaluation.EvalWorker`).

Ray is an optional extra (``pip install -e '.[ray]'`` from a checkout).  Nothing here imports it at module
level, so this package imports (and :func:`require_ray` explains what is missing) without it.
"""

from sodec.distributed.cluster import ATTEMPTS, ActorPool, Cluster, connect, require_ray
from sodec.distributed.dataset import compress_dataset, decompress_dataset
from sodec.distributed.evaluation import eval_images
from sodec.distributed.files import ray_runner

__all__ = ["ATTEMPTS", "ActorPool", "Cluster", "compress_dataset", "connect", "decompress_dataset",
           "eval_images", "ray_runner", "require_ray"]
