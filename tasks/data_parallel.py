"""What makes PaddleHub 2.4's ``hub.Trainer`` train one model across processes and machines.

Under ``python -m paddle.distributed.launch``, ``hub.Trainer`` wraps the model in
``paddle.DataParallel`` and shards batches, but on Paddle 3.3.1 it does not all-reduce: its
``training_step`` calls ``model._layers.training_step``, which bypasses ``DataParallel.forward``,
where the wrapper prepares its all-reduce. Two fixes, both installed by the task models:

* :class:`GradientAllReduce`: gradient hooks on the task model's parameters that, in the backward
  pass following its ``training_step``, all-reduce each gradient and divide it by the world size
  (what ``DataParallel`` computes), on whatever backend ``init_parallel_env`` chose (gloo on
  CPUs, NCCL on GPUs). A forward pass through ``DataParallel`` itself disarms them.
* :func:`wait_for_every_rank` at the start of every epoch: ``hub.Trainer`` evaluates and saves
  on rank 0 alone at the end of an epoch while the other ranks go on into the next one, and
  gloo gives up on a collective after 30 s (a fixed limit of Paddle 3.3.1's CPU process group; measured),
  which a real evaluation outlasts. The ranks meet through the launcher's TCP store instead,
  which waits as long as it takes.
* :func:`install_trainer_fix`: ``hub.Trainer`` lists ``checkpoint_dir`` on every rank but creates
  it only on rank 0, so a rank on another machine crashes, and a resumed run would leave the
  other ranks at epoch 0 with their own parameters. With the fix, rank 0 alone reads the
  checkpoint and sends epoch, best metrics, parameters and optimizer state to every rank. Only
  rank 0 writes (as ``hub.Trainer`` does already); other ranks touch no file.
"""

import functools
import itertools
import os
import time
from collections import defaultdict

import paddle
import paddle.distributed as dist

__all__ = ["GradientAllReduce", "install_trainer_fix", "wait_for_every_rank"]

_meetings = itertools.count()


def _peer_failure(error):
    return RuntimeError(f"rank {dist.get_rank()} of {dist.get_world_size()}: {error}; most likely another worker "
                        f"died, see its log")


def wait_for_every_rank():
    """Returns once every rank has called this as often as this one (a no-op in a single process).

    Polls a counter in the launcher's TCP store (``paddle.base.core``'s global store, the one
    ``init_parallel_env`` set up) rather than a gloo collective, so the wait has no 30 s limit.
    """
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    key = f"bert_cased_L_24_H_1024_A_16/meeting/{next(_meetings)}"
    store = paddle.base.core.create_or_get_global_tcp_store()
    try:
        store.add(key, 1)
        while store.add(key, 0) < dist.get_world_size():
            time.sleep(0.05)
    except (OSError, RuntimeError) as error:  # The store lives in rank 0's process.
        raise _peer_failure(f"waiting for the other ranks failed ({error})") from None


class GradientAllReduce:
    """Hooks on every parameter of ``layer``: once :meth:`arm`-ed, the next backward pass replaces each
    gradient by its mean over the ranks. Does nothing in a single process or before
    ``init_parallel_env()``. Every rank must run the same backward graph (same frozen parameters)."""

    def __init__(self, layer):
        self._armed = False
        for param in layer.parameters():
            param.register_hook(self._mean_over_ranks)

    def arm(self):
        self._armed = dist.is_initialized() and dist.get_world_size() > 1

    def disarm(self):
        self._armed = False

    def _mean_over_ranks(self, grad):
        if not self._armed:
            return grad
        total = grad.clone()
        try:
            dist.all_reduce(total)
        except (OSError, RuntimeError) as error:  # gloo: "Connection reset by peer" when a peer process died.
            raise _peer_failure(f"the gradient all-reduce failed ({error})") from None
        return total / dist.get_world_size()


def _as_numpy(value):
    """``value`` with every tensor turned into a numpy array (picklable, for ``broadcast_object_list``)."""
    if isinstance(value, paddle.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {key: _as_numpy(item) for key, item in value.items()}
    return value


def _resume_state(trainer):
    """Rank 0's ``[epoch, best metrics, model state, optimizer state]`` after its ``_load_checkpoint``."""
    epoch = trainer.current_epoch
    if epoch == 0:
        return [0, {}, None, None]
    folder = os.path.join(trainer.checkpoint_dir, f"epoch_{epoch}")
    return [epoch, dict(trainer.best_metrics), _as_numpy(trainer.model.state_dict()),
            _as_numpy(paddle.load(os.path.join(folder, "model.pdopt")))]


def _load_checkpoint_on_rank_0(original):
    @functools.wraps(original)
    def load(trainer):
        if trainer.nranks <= 1:
            return original(trainer)
        if trainer.local_rank == 0:
            original(trainer)
            state = _resume_state(trainer)
        else:
            state = [None] * 4
        wait_for_every_rank()  # Reading a large checkpoint may take rank 0 longer than gloo waits.
        dist.broadcast_object_list(state, src=0)
        if trainer.local_rank != 0 and state[0]:
            epoch, metrics, model_state, optimizer_state = state
            trainer.current_epoch, trainer.best_metrics = epoch, defaultdict(int, metrics)
            trainer.model.set_state_dict(model_state)
            trainer.optimizer.set_state_dict(optimizer_state)
        return None

    load.fixed_by_bert_cased = True
    return load


def install_trainer_fix():
    """Makes ``paddlehub.Trainer._load_checkpoint`` read on rank 0 only and share what it read (idempotent)."""
    from paddlehub.finetune.trainer import Trainer

    if not getattr(Trainer._load_checkpoint, "fixed_by_bert_cased", False):
        Trainer._load_checkpoint = _load_checkpoint_on_rank_0(Trainer._load_checkpoint)
