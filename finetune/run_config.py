"""How to run fine-tuning: :class:`RunConfig` (PaddleHub 1.x's), and the strategy and configuration checks."""

import os

from ..feeder import check_int
from ..kernels import check_training_precision
from .strategy import Strategy

__all__ = ["RunConfig", "as_run_config", "check_strategy"]


class RunConfig:
    """How to run fine-tuning (PaddleHub 1.x ``RunConfig``).

    Args:
        num_epoch: passes over the training data.
        batch_size: samples per step (training, evaluation and prediction).
        strategy: a :class:`.strategy.Strategy`; ``None`` means ``AdamWeightDecayStrategy()``.
        checkpoint_dir: where checkpoints go; ``None`` saves none. A task whose directory
            holds a checkpoint resumes from it (``resume=False`` starts over).
        use_gpu: run on GPU 0; falls back to CPU, with one warning, when Paddle has no CUDA or
            no GPU is visible. ``use_cuda`` is the 1.x spelling.
        log_interval: log the running loss every this many steps (at INFO, when no progress bar).
        save_ckpt_interval: also checkpoint every this many steps (besides every epoch end).
        max_checkpoints: how many checkpoints to keep (oldest removed first).
        save_best_model: with ``checkpoint_dir`` and dev data, also keep the parameters of
            the epoch with the best dev accuracy so far in ``<checkpoint_dir>/best_model``
            (parameters only, no optimizer state; ties keep the earlier epoch).
        shuffle: shuffle the training data each epoch (with ``seed + epoch``, so resumed runs
            see the same order).
        seed: seeds the shuffling and the classifier head's initial weights.
        precision: ``"fp32"``, or ``"bf16"`` for mixed precision on CPUs with ``avx512_bf16`` or
            ``amx_bf16``: the encoder's dense layers multiply in bfloat16 and sum in float32, while
            weights, optimizer state, layer norms and softmax stay float32 (about 2x faster
            products; see :mod:`..kernels`). Training, evaluation and prediction all use it.
    """

    def __init__(self, num_epoch=1, batch_size=32, strategy=None, checkpoint_dir=None, use_gpu=False, use_cuda=None,
                 log_interval=10, save_ckpt_interval=None, max_checkpoints=1, shuffle=True, seed=0, resume=True,
                 save_best_model=True, precision="fp32"):
        self.num_epoch = check_int("num_epoch", num_epoch, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.strategy = check_strategy(strategy)
        self.checkpoint_dir = os.fspath(checkpoint_dir) if checkpoint_dir is not None else None
        self.use_gpu = bool(use_gpu if use_cuda is None else use_cuda)
        self.log_interval = check_int("log_interval", log_interval, 1)
        self.save_ckpt_interval = None if save_ckpt_interval is None else \
            check_int("save_ckpt_interval", save_ckpt_interval, 1)
        self.max_checkpoints = check_int("max_checkpoints", max_checkpoints, 1)
        self.shuffle = bool(shuffle)
        self.seed = check_int("seed", seed, 0)
        self.resume = bool(resume)
        self.save_best_model = bool(save_best_model)
        self.precision = check_training_precision(precision)

    @property
    def use_cuda(self):
        return self.use_gpu

    def __repr__(self):
        return (f"RunConfig(num_epoch={self.num_epoch}, batch_size={self.batch_size}, strategy={self.strategy!r}, "
                f"checkpoint_dir={self.checkpoint_dir!r}, use_gpu={self.use_gpu}, precision={self.precision!r})")


def check_strategy(strategy):
    """``strategy`` when it is one (duck-typed: a strategy from another copy of this package counts), or None."""
    if strategy is None:
        return None
    if isinstance(strategy, Strategy) or all(hasattr(strategy, a) for a in ("minimize", "run", "step", "bound")):
        return strategy
    hint = " (PaddleHub's placeholder: load the module first, or import ULMFiTStrategy from this package)" \
        if strategy == 0 else ""
    raise TypeError(f"strategy must be a fine-tuning Strategy (e.g. ULMFiTStrategy(...)), got {strategy!r}{hint}")


def as_run_config(config):
    """Our RunConfig from ours, PaddleHub's ``hub.RunConfig`` (with the strategy that :mod:`.hub1x` makes it keep)
    or None. ValueError for a PaddleHub RunConfig that dropped its strategy."""
    if config is None:
        return RunConfig()
    if isinstance(config, RunConfig):
        return config
    if not hasattr(config, "strategy"):  # never train another strategy than the one given, without a word
        raise ValueError(f"this {type(config).__name__} has lost its strategy: PaddleHub 2.4's hub.RunConfig drops "
                         "the strategy it is given, unless it is created after hub.Module(...) has loaded this "
                         "module. Create the RunConfig after hub.Module(...), or use this package's "
                         "finetune.RunConfig")
    return RunConfig(num_epoch=getattr(config, "num_epoch", 1), batch_size=getattr(config, "batch_size", 32),
                     strategy=getattr(config, "strategy", None), checkpoint_dir=getattr(config, "checkpoint_dir", None),
                     use_gpu=getattr(config, "use_cuda", getattr(config, "use_gpu", False)),
                     log_interval=getattr(config, "log_interval", 10) or 10,
                     save_ckpt_interval=getattr(config, "save_ckpt_interval", None))
