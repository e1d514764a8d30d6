"""Shards computed on Ray Data: an actor pool, one predictor per actor, each actor writing the shards it computes.

The dataset is the list of shards still to do (``ray.data.from_items``), not the rows: reading
files with a Ray Data read task beside an actor pool that fills every CPU deadlocked on a
2-core machine (the read task never got a CPU), and Ray Data would otherwise ship the corpus
through the object store. Each actor reads its shard's rows from the shard's start position
(inputs and output must be on a filesystem every node sees, such as NFS) and writes the shard
with the same code as the local runner, so both give the same files. The only CPU consumers
are the actors, and the job checks they fit the cluster before starting, so no layout can
leave the pool waiting for CPUs.
"""

import logging
import os

import numpy as np

from .plan import Shard
from .readers import CorpusError, Position
from .shard import build_embedder, embed_shard

__all__ = ["INSTALL_HINT", "connect", "require_ray", "run_on_ray"]

INSTALL_HINT = 'Ray is not installed; install the extra: pip install "bert-cased-L-24-H-1024-A-16[ray]" ' \
               '(or, in a checkout, pip install -e ".[ray]")'


def require_ray():
    """The ``ray`` module with Ray Data; CorpusError saying how to install it when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without its data extra lacks pandas/pyarrow glue)
    except ImportError:
        raise CorpusError(INSTALL_HINT) from None
    return ray


def connect(address):
    """Joins the Ray cluster at ``address`` (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``), or with
    ``address=None`` starts a local one on this machine's CPUs (reused when this process already has one)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address is None:
        from ..embedding import available_cpus

        # "local": a new cluster even when `ray start` left one running on this machine.
        ray.init(address="local", num_cpus=available_cpus(), include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.WARNING)
    else:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise CorpusError(f"cannot join the Ray cluster at {address}: {e}") from None
    return ray


class _ShardActor:
    """A Ray Data actor: builds one predictor, with as many math threads as CPUs Ray gave it, then computes
    shards (a batch of shard indices at a time)."""

    def __init__(self, job):
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        self._job = job
        self._threads = max(1, int(cpus))
        self._embedder = build_embedder(job, num_threads=self._threads)

    def __call__(self, batch):
        rows = [embed_shard(self._embedder, self._job, Shard(int(index), Position(int(source), int(offset), int(line)),
                                                             int(count)))
                for index, source, offset, line, count in zip(batch["shard"], batch["source"], batch["offset"],
                                                              batch["line"], batch["rows"])]
        return {"shard": np.asarray(batch["shard"]), "rows": np.asarray(rows, np.int64),
                "actor": np.full(len(rows), f"{os.uname().nodename}:{os.getpid()}"),
                "threads": np.full(len(rows), self._threads)}


def run_on_ray(job, shards, actors, cpus_per_actor=None, progress=None):
    """Computes ``shards`` of ``job`` on the connected cluster with ``actors`` actors; returns
    ``{"host:pid" of an actor: its math threads}`` for the actors that computed shards.

    ``cpus_per_actor`` defaults to the cluster's CPUs divided among the actors. ``progress(n)`` is called as
    each shard of ``n`` rows is done.
    """
    ray = require_ray()
    cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus_per_actor is None:
        cpus_per_actor = max(1, cluster_cpus // actors)
    if actors * cpus_per_actor > cluster_cpus:
        raise CorpusError(f"{actors} actors x {cpus_per_actor} CPUs need {actors * cpus_per_actor} CPUs; the Ray "
                          f"cluster has {cluster_cpus}. Use fewer --actors or --cpus-per-actor")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.verbose_progress = False
    items = [{"shard": shard.index, "source": shard.start.source, "offset": shard.start.offset,
              "line": shard.start.line, "rows": shard.rows} for shard in shards]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    dataset = dataset.map_batches(_ShardActor, fn_constructor_kwargs={"job": job},
                                  compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
                                  batch_size=1, batch_format="numpy")
    per_actor = {}
    try:
        for row in dataset.iter_rows():
            per_actor[str(row["actor"])] = int(row["threads"])
            if progress:
                progress(int(row["rows"]))
    except ray.exceptions.RayError as e:
        cause = str(e).strip().splitlines()
        raise CorpusError(f"a Ray actor failed: {cause[-1] if cause else type(e).__name__}. Every node needs this "
                          "package (with the ray extra) installed, and the weights, inputs and output at the same "
                          "paths (a shared filesystem)") from None
    return per_actor
