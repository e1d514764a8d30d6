"""Fine-tuning strategies for the static (PIR) program: ULMFiT and AdamW with warmup (SPEC section 6).

A strategy turns a loss on a static program into training steps. It never changes the
program it is given: :meth:`Strategy.minimize` keeps a clone of it and builds the training
program (forward + backward + optimizer) from that clone, once per *stage*. A stage is a set
of trainable parameters; only ULMFiT's gradual unfreezing has more than one, and it rebuilds
the training program when :meth:`Strategy.step` grows the set. Optimizer state (Adam moments
and the like) lives in ``paddle.static.global_scope()`` under names that stay the same from
stage to stage, so moments carry over and only the newly unfrozen parameters get fresh ones.

How the three ULMFiT mechanisms are realised on the static program (measured on Paddle 3.3.1,
PIR; see ``tests/test_finetune.py``):

* Slanted triangular learning rate: :class:`SlantedTriangularLR`, a
  ``paddle.optimizer.lr.LRScheduler``; the executor writes its value into the program's
  learning-rate variable before every run and :meth:`Strategy.run` steps it once per batch.
* Discriminative learning rates: each parameter value of the training program gets
  ``optimize_attr = {"learning_rate": factor ** -(max_layer - layer)}`` before ``minimize``;
  Paddle's optimizers multiply the scheduled rate by it (``_create_param_lr``). Measured with
  plain SGD: the update of a layer-``l`` parameter is ``lr_t * factor^-(max-l) * grad``.
* Gradual unfreezing: the optimizer is built over the trainable parameters only
  (``minimize(loss, parameters=...)``), so frozen parameters get no optimizer op at all (they
  are bit-identical after any number of steps, their optimizer state is never created) and
  the backward pass stops below the lowest trainable layer.

Parameters outside a layer map (e.g. a task's classifier head) keep the full learning rate and
are never frozen, as in PaddleHub 1.x.
"""

import collections
import collections.abc
import itertools
import logging
import math
import numbers
import warnings

import paddle

from ..memory import release_freed_memory
from .adamw import AdamW, ClipGradByGlobalNormInPlace

__all__ = [
    "OPTIMIZER_NAMES",
    "AdamWeightDecayStrategy",
    "ConstantLR",
    "DefaultStrategy",
    "LinearWarmupDecayLR",
    "NoamWarmupLR",
    "SlantedTriangularLR",
    "Strategy",
    "ULMFiTStrategy",
    "parameter_depths",
]

logger = logging.getLogger(__name__)

#: Optimizer names every strategy accepts (case-insensitive). 1.x also knew ``decayedadagrad``,
#: ``ftrl`` and ``larsmomentum``, which Paddle 3 no longer has.
OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "adamw", "adagrad", "adamax", "rmsprop")

_strategy_ids = itertools.count()


# -- validation helpers ----------------------------------------------------------------------

def _positive_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _number_in(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        raise ValueError(f"{name} must be a number from {low} to {high}, got {value!r}")
    return float(value)


def _non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def _optimizer_name(value):
    if not isinstance(value, str) or value.lower() not in OPTIMIZER_NAMES:
        raise ValueError(f"optimizer_name must be one of {', '.join(OPTIMIZER_NAMES)}, got {value!r}")
    return value.lower()


def _layer_map(name, value):
    """Validates a ``{parameter name: layer index}`` map; returns a plain dict or None."""
    if value is None:
        return None
    if not isinstance(value, collections.abc.Mapping):
        raise TypeError(f"{name} must be a dict {{parameter name: layer index}} (e.g. module.get_params_layer()), "
                        f"got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} is empty; pass None to group parameters by depth instead")
    result = {}
    for key, layer in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be parameter names (str), got {key!r}")
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or layer < 0:
            raise ValueError(f"{name}[{key!r}] must be a layer index (int >= 0), got {layer!r}")
        result[key] = int(layer)
    return result


# -- learning-rate schedules -----------------------------------------------------------------

class _Schedule(paddle.optimizer.lr.LRScheduler):
    """A scheduler whose rate at step ``t`` (``last_epoch``, from 0) is the pure function :meth:`value`."""

    def get_lr(self):
        return self.value(self.last_epoch)

    def value(self, t):
        raise NotImplementedError


def _steps(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class ConstantLR(_Schedule):
    """The same rate at every step."""

    def __init__(self, learning_rate, last_epoch=-1):
        self.peak = _positive_number("learning_rate", learning_rate)
        super().__init__(self.peak, last_epoch)

    def value(self, t):
        return self.peak


class SlantedTriangularLR(_Schedule):
    """ULMFiT's slanted triangle over ``num_train_steps`` (``T``) steps (SPEC section 6).

    ``cut = int(T * cut_fraction)``; ``p = t / cut`` for ``t <= cut`` (when ``cut > 0``), else
    ``p = 1 - (t - cut) / (T - cut)`` (clipped at 0 past ``T``);
    ``lr_t = learning_rate * (1 + p * (ratio - 1)) / ratio``. Step ``t`` counts batches from 0.
    """

    def __init__(self, learning_rate, num_train_steps, cut_fraction=0.1, ratio=32, last_epoch=-1):
        self.peak = _positive_number("learning_rate", learning_rate)
        self.num_train_steps = _steps("num_train_steps", num_train_steps)
        self.cut_fraction = _number_in("cut_fraction", cut_fraction, 0.0, 1.0)
        self.ratio = _number_in("ratio", ratio, 1.0, math.inf)
        self.cut = int(self.num_train_steps * self.cut_fraction)
        super().__init__(self.peak, last_epoch)

    def value(self, t):
        cut, total = self.cut, self.num_train_steps
        if cut > 0 and t <= cut:
            p = t / cut
        elif total > cut:
            p = max(0.0, 1.0 - (t - cut) / (total - cut))
        else:
            p = 1.0
        return self.peak * (1.0 + p * (self.ratio - 1.0)) / self.ratio


class LinearWarmupDecayLR(_Schedule):
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then linear decay to 0 at ``num_train_steps``."""

    def __init__(self, learning_rate, num_train_steps, warmup_steps, last_epoch=-1):
        self.peak = _positive_number("learning_rate", learning_rate)
        self.num_train_steps = _steps("num_train_steps", num_train_steps)
        self.warmup_steps = _steps("warmup_steps", warmup_steps, 0)
        super().__init__(self.peak, last_epoch)

    def value(self, t):
        warmup, total = self.warmup_steps, self.num_train_steps
        if t < warmup:
            return self.peak * t / warmup
        if total <= warmup:
            return self.peak
        return self.peak * max(0.0, (total - t) / (total - warmup))


class NoamWarmupLR(_Schedule):
    """1.x ``noam_decay``: ``lr * sqrt(w) * min(s^-0.5, s * w^-1.5)`` with ``s = t + 1``; ``lr`` at ``s = w``."""

    def __init__(self, learning_rate, warmup_steps, last_epoch=-1):
        self.peak = _positive_number("learning_rate", learning_rate)
        self.warmup_steps = max(1, _steps("warmup_steps", warmup_steps, 0))
        super().__init__(self.peak, last_epoch)

    def value(self, t):
        step, warmup = t + 1, self.warmup_steps
        return self.peak * math.sqrt(warmup) * min(step ** -0.5, step * warmup ** -1.5)


# -- the program -----------------------------------------------------------------------------

def _parameter_name(value):
    """The parameter name behind ``value`` when a ``builtin.parameter`` op defines it, else None."""
    op = value.get_defining_op()
    if op is None or op.name() != "builtin.parameter":
        return None
    return op.str_attr("parameter_name")


def parameter_depths(program):
    """``{parameter name: depth}`` of every parameter that some op of ``program`` reads.

    PaddleHub 1.x's measure: an op's depth is 1 for an op without inputs and otherwise one
    more than its deepest input's op (the longest path from the feeds); a parameter's depth is
    the smallest depth of the ops that read it, and parameters whose names share the part
    before the first ``.`` (a layer's ``.w_0`` and ``.b_0``) share the smallest of their depths.
    Larger is nearer the output.
    """
    op_depth, depths = {}, {}
    for op in program.global_block().ops:
        parents = [operand.get_defining_op() for operand in op.operands_source()]
        depth = 1 + max((op_depth.get(parent.id(), 1) for parent in parents if parent is not None), default=0)
        op_depth[op.id()] = depth
        for operand in op.operands_source():
            name = _parameter_name(operand)
            if name is not None:
                depths[name] = min(depth, depths.get(name, depth))
    by_prefix = {}
    for name, depth in depths.items():
        prefix = name.split(".")[0]
        by_prefix[prefix] = min(depth, by_prefix.get(prefix, depth))
    return {name: by_prefix[name.split(".")[0]] for name in depths}


def _depth_blocks(depths, blocks):
    """``{name: pseudo layer}``: the distinct depths, deepest first, cut into ``blocks`` runs of equal count.

    As 1.x: ``ceil(levels / blocks)`` depth levels per block; the block nearest the output is
    the top layer (``number of blocks - 1``), the one nearest the input layer 0.
    """
    if not depths:
        return {}
    levels = sorted(set(depths.values()), reverse=True)
    per_block = math.ceil(len(levels) / blocks)
    top = math.ceil(len(levels) / per_block) - 1
    block_of = {level: index // per_block for index, level in enumerate(levels)}
    return {name: top - block_of[depth] for name, depth in depths.items()}


def _program_of(loss):
    try:
        return loss.get_defining_op().get_parent_block().program
    except AttributeError:
        return paddle.static.default_main_program()


_Stage = collections.namedtuple("_Stage", "program mapping trainable")


# -- strategies ------------------------------------------------------------------------------

class Strategy:
    """A learning-rate schedule and an optimizer applied to a static program's loss.

    Use: ``strategy.minimize(loss, program, num_train_steps)`` once, then per batch
    ``strategy.run(executor, feed, fetch_list)`` (one optimizer step, then the schedule advances)
    and per epoch ``strategy.step()`` (at the start of the epoch, as 1.x tasks did). The program
    passed to :meth:`minimize` is never modified; :attr:`program` is the training program of the
    current stage and ``fetch_list`` takes values of the original program.
    """

    def __init__(self, learning_rate=1e-4, optimizer_name="adam"):
        self.learning_rate = _positive_number("learning_rate", learning_rate)
        self.optimizer_name = _optimizer_name(optimizer_name)
        self.weight_decay = 0.0
        self._loss = None
        self._forward = None
        self._scheduler = None
        self._stage = None
        self._epoch = -1
        self._global_step = 0
        self._initialized = set()
        self._prefix = None
        self._place = None
        self.num_train_steps = None

    def __repr__(self):
        return f"{type(self).__name__}(learning_rate={self.learning_rate}, optimizer_name={self.optimizer_name!r})"

    # -- what subclasses decide ---------------------------------------------------------

    def create_scheduler(self, num_train_steps):
        """The ``LRScheduler`` for ``num_train_steps`` steps (``None`` when not known)."""
        return ConstantLR(self.learning_rate)

    def _analyse(self, loss, params):
        """Called once by :meth:`minimize` with the trainable parameter values of the program."""

    def lr_scale(self, name):
        """Multiplier of the scheduled learning rate for parameter ``name``."""
        return 1.0

    def trainable_names(self, epoch):
        """Names of the parameters that train in ``epoch`` (-1: before the first :meth:`step`)."""
        return set(self._trainable)

    def _decays(self, name):
        """Whether AdamW's decoupled weight decay applies to parameter ``name``."""
        return name not in self._no_decay

    def create_optimizer(self, scheduler):
        """The Paddle optimizer for one stage (per-parameter scales come from ``optimize_attr``)."""
        opt, name = paddle.optimizer, self.optimizer_name
        if name == "sgd":
            return opt.SGD(learning_rate=scheduler)
        if name == "momentum":
            return opt.Momentum(learning_rate=scheduler, momentum=0.9)
        if name == "adam":
            return opt.Adam(learning_rate=scheduler)
        if name == "adamw":
            return AdamW(learning_rate=scheduler, weight_decay=self.weight_decay or 0.0,
                             apply_decay_param_fun=self._decays)
        if name == "adagrad":
            return opt.Adagrad(learning_rate=scheduler)
        if name == "adamax":
            return opt.Adamax(learning_rate=scheduler)
        return opt.RMSProp(learning_rate=scheduler)

    # -- applying it --------------------------------------------------------------------

    def minimize(self, loss, program=None, num_train_steps=None, place=None):
        """Binds the strategy to ``loss`` (a value of ``program``) for ``num_train_steps`` batches.

        ``program`` defaults to the loss's own program; it is cloned, never modified, and its
        parameters must already hold their values in ``paddle.static.global_scope()``.
        ``num_train_steps`` (epochs x batches per epoch) is needed by every schedule that
        changes over time. Builds the first training program and initialises the optimizer
        state. A strategy is bound once; make a new one for another task. Returns ``self``.
        """
        if self._loss is not None:
            raise RuntimeError(f"this {type(self).__name__} is already bound to a program; "
                               f"create a new strategy for each task")
        if num_train_steps is not None:
            num_train_steps = _steps("num_train_steps", num_train_steps)
        program = program if program is not None else _program_of(loss)
        params = [p for p in program.global_block().all_parameters() if not p.stop_gradient]
        if not params:
            raise ValueError("the program has no trainable parameter")
        self.num_train_steps = num_train_steps
        self._scheduler = self.create_scheduler(num_train_steps)
        self._forward, self._loss = program, loss
        self._place = place if place is not None else paddle.CPUPlace()
        self._prefix = f"ft{next(_strategy_ids)}@"
        self._trainable = [p.name for p in params]
        shapes = {p.name: tuple(p.shape) for p in params}
        self._no_decay = {name for name, shape in shapes.items() if _excluded_from_decay(name, shape)}
        self._analyse(loss, params)
        if self.trainable_names(self._epoch):
            self._build_stage()  # otherwise (ULMFiT before its first step()) on the first step()
        return self

    @property
    def bound(self):
        return self._loss is not None

    def _require_bound(self):
        if self._loss is None:
            raise RuntimeError(f"call {type(self).__name__}.minimize(loss, program, num_train_steps) first")

    @property
    def scheduler(self):
        """The ``paddle.optimizer.lr.LRScheduler`` in use (after :meth:`minimize`)."""
        return self._scheduler

    @property
    def epoch(self):
        """Epochs entered with :meth:`step`, minus one (-1 before the first call)."""
        return self._epoch

    @property
    def global_step(self):
        """Optimizer steps run so far."""
        return self._global_step

    @property
    def current_learning_rate(self):
        """The scheduled (top-layer) learning rate of the next step."""
        self._require_bound()
        return float(self._scheduler())

    def learning_rate_at(self, t):
        """The scheduled learning rate of step ``t`` (from 0), by the schedule's formula."""
        self._require_bound()
        return float(self._scheduler.value(t))

    @property
    def program(self):
        """The training program of the current stage."""
        self._require_bound()
        self._ensure_stage()
        return self._stage.program

    @property
    def trainable_parameters(self):
        """Names of the parameters the current training program updates."""
        self._require_bound()
        self._ensure_stage()
        return set(self._stage.trainable)

    def value(self, value):
        """``value`` of the original program as a value of the current training program."""
        self._require_bound()
        self._ensure_stage()
        return self._stage.mapping.look_up(value)

    def run(self, executor, feed, fetch_list=()):
        """One training step on ``feed``; returns the fetched values (of the original program) as arrays."""
        self._require_bound()
        self._ensure_stage()
        fetch = [self._stage.mapping.look_up(v) for v in fetch_list]
        results = executor.run(self._stage.program, feed=feed, fetch_list=fetch)
        self._scheduler.step()
        self._global_step += 1
        return results

    def step(self):
        """Enters the next epoch (call at the start of every epoch, as 1.x tasks did).

        ULMFiT's gradual unfreezing grows the trainable set here; other strategies only count.
        """
        self._epoch += 1
        if self._loss is not None and self.trainable_names(self._epoch):
            self._ensure_stage()

    def state_dict(self):
        """Counters and schedule, for checkpoints (optimizer tensors: :meth:`optimizer_state_names`)."""
        self._require_bound()
        return {"strategy": type(self).__name__, "epoch": self._epoch, "global_step": self._global_step,
                "num_train_steps": self.num_train_steps, "scheduler": dict(self._scheduler.state_dict())}

    def set_state_dict(self, state):
        """Restores :meth:`state_dict` and builds the training program of the restored stage."""
        self._require_bound()
        if state.get("strategy") != type(self).__name__:
            warnings.warn(f"restoring the state of a {state.get('strategy')} into a {type(self).__name__}",
                          stacklevel=2)
        self._epoch = int(state["epoch"])
        self._global_step = int(state["global_step"])
        self._scheduler.set_state_dict(dict(state["scheduler"]))
        self._scheduler.last_lr = self._scheduler.get_lr()
        self._ensure_stage()

    def optimizer_state_names(self):
        """``{stable name: scope name}`` of the optimizer's tensors (moments, ...) in the current stage.

        Scope names carry a per-strategy prefix (two tasks in one process never share optimizer
        state); the stable name drops it, so checkpoints load into a new strategy.
        """
        self._require_bound()
        self._ensure_stage()
        from paddle.static.pir_io import get_pir_parameters

        _, states = get_pir_parameters(self._stage.program)
        prefix = self._prefix
        return {v.name[len(prefix):]: v.name for v in states if v.name.startswith(prefix)}

    def close(self):
        """Frees this strategy's optimizer state from the global scope."""
        if self._initialized:
            paddle.static.global_scope().erase(sorted(self._initialized))
            self._initialized = set()
        self._stage = None

    # -- stages -------------------------------------------------------------------------

    def _ensure_stage(self):
        if self._stage is None or set(self.trainable_names(self._epoch)) != set(self._stage.trainable):
            self._build_stage()

    def _build_stage(self):
        trainable = sorted(self.trainable_names(self._epoch))
        if not trainable:
            raise RuntimeError(f"{type(self).__name__}: no parameter trains at epoch {self._epoch}; "
                               f"call strategy.step() at the start of every epoch (the first call unfreezes "
                               f"the top layer)")
        mapping = paddle.base.libpaddle.pir.IrMapping()
        program = self._forward.clone(mapping)
        loss = mapping.look_up(self._loss)
        startup = paddle.static.Program()
        wanted = set(trainable)
        with paddle.static.program_guard(program, startup), paddle.utils.unique_name.guard(self._prefix):
            params = program.global_block().all_parameters()
            for param in params:
                # A clone's values carry no optimize_attr: every stage sets all of them.
                param.optimize_attr = {"learning_rate": float(self.lr_scale(param.name))}
            optimizer = self.create_optimizer(self._scheduler)
            optimizer.minimize(loss, parameters=[p for p in params if p.name in wanted])
        self._init_new_state(startup)
        self._stage = _Stage(program, mapping, tuple(trainable))
        logger.debug("%s: training program for epoch %d updates %d parameters", type(self).__name__,
                     self._epoch, len(trainable))

    def _init_new_state(self, startup):
        """Runs ``startup`` in a scratch scope and moves only state not initialised before into the global scope.

        Each tensor keeps the memory and place the startup gave it: the global scope's variable shares
        it, no copy is made. Copies (through numpy) left 1.1 GB of holes in glibc's heap between the
        moments (BERT-Large, AdamW), which training steps could not fill, and the heap grew past them:
        peak RSS 0.5 GB higher at 128 tokens. Scopes made from Python stay in Paddle's scope pool until
        the process exits, so the scratch scope is emptied as it goes.
        """
        scratch = paddle.static.Scope()
        paddle.static.Executor(self._place).run(startup, scope=scratch)
        scope = paddle.static.global_scope()
        for name in list(scratch.local_var_names()):
            source = scratch.find_var(name)
            if name not in self._initialized and source is not None and source.get_tensor()._is_initialized():
                scope.var(name).get_tensor()._share_data_with(source.get_tensor())
                self._initialized.add(name)
            scratch.erase([name])
        release_freed_memory()


def concrete_place(place, default):
    """A tensor's generic ``Place`` as the ``CPUPlace``/``CUDAPlace``/... that ``DenseTensor.set`` takes."""
    if place.is_cpu_place():
        return paddle.CPUPlace()
    if place.is_gpu_place():
        return paddle.CUDAPlace(place.gpu_device_id())
    if place.is_cuda_pinned_place():
        return paddle.CUDAPinnedPlace()
    return default


def _excluded_from_decay(name, shape):
    """Layer-norm parameters and biases (1.x's rule, plus every 1-D parameter) get no weight decay."""
    return ("layer_norm" in name or name.endswith(("_bias", "_b", ".b_0", ".bias")) or len(shape) <= 1)


class DefaultStrategy(Strategy):
    """A constant learning rate with the named optimizer (1.x ``DefaultStrategy``)."""


class AdamWeightDecayStrategy(Strategy):
    """AdamW with linear warmup and decay, the common BERT fine-tuning recipe (1.x default).

    ``lr_scheduler``: ``"linear_decay"`` (warmup from 0 over ``warmup_proportion`` of the
    steps, then linearly to 0 at the last step) or ``"noam_decay"``. Decoupled weight decay
    ``param -= weight_decay * lr * param`` skips layer-norm parameters and biases (every 1-D
    parameter); gradients are clipped to a global norm of 1.0. ``optimizer_name`` is ``"adam"``
    or ``"adamw"`` (the same optimizer).
    """

    def __init__(self, learning_rate=1e-4, lr_scheduler="linear_decay", warmup_proportion=0.1, weight_decay=0.01,
                 optimizer_name="adam"):
        super().__init__(learning_rate=learning_rate, optimizer_name=optimizer_name)
        if self.optimizer_name not in ("adam", "adamw"):
            raise ValueError(f"AdamWeightDecayStrategy's optimizer_name must be 'adam' or 'adamw' (decoupled weight "
                             f"decay is defined for Adam), got {optimizer_name!r}; use DefaultStrategy or "
                             f"ULMFiTStrategy for other optimizers")
        if lr_scheduler not in ("linear_decay", "noam_decay"):
            raise ValueError(f"lr_scheduler must be 'linear_decay' or 'noam_decay', got {lr_scheduler!r}")
        self.lr_scheduler = lr_scheduler
        self.warmup_proportion = _number_in("warmup_proportion", warmup_proportion, 0.0, 1.0)
        self.weight_decay = _number_in("weight_decay", weight_decay, 0.0, math.inf)
        self.grad_clip_norm = 1.0

    def __repr__(self):
        return (f"AdamWeightDecayStrategy(learning_rate={self.learning_rate}, lr_scheduler={self.lr_scheduler!r}, "
                f"warmup_proportion={self.warmup_proportion}, weight_decay={self.weight_decay}, "
                f"optimizer_name={self.optimizer_name!r})")

    def create_scheduler(self, num_train_steps):
        if num_train_steps is None:
            raise ValueError("AdamWeightDecayStrategy needs num_train_steps (epochs x batches per epoch) for its "
                             "warmup and decay")
        warmup = int(num_train_steps * self.warmup_proportion)
        if self.lr_scheduler == "noam_decay":
            return NoamWarmupLR(self.learning_rate, warmup)
        return LinearWarmupDecayLR(self.learning_rate, num_train_steps, warmup)

    def create_optimizer(self, scheduler):
        return AdamW(learning_rate=scheduler, weight_decay=self.weight_decay, apply_decay_param_fun=self._decays,
                     grad_clip=ClipGradByGlobalNormInPlace(self.grad_clip_norm))


class _Default:
    """A keyword default that remembers it was not passed (so an explicit value can be told apart)."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return repr(self.value)


_DIS_BLOCKS, _FRZ_BLOCKS = _Default(3), _Default(3)


class ULMFiTStrategy(Strategy):
    """ULMFiT fine-tuning (Howard & Ruder 2018) as PaddleHub 1.6-1.8 defined it (SPEC section 6).

    Accepts both historical signatures: 1.6's ``params_layer`` (one map for both mechanisms) and
    1.7+'s ``dis_params_layer`` / ``frz_params_layer``; the maps are keyword-only and 1.6's
    cannot be mixed with 1.7's. A map is ``{parameter name: layer}``, e.g.
    ``module.get_params_layer()``.

    * Slanted triangular learning rate over the ``num_train_steps`` given to :meth:`minimize`
      (:class:`SlantedTriangularLR`); ``cut_fraction=0`` turns it off (constant rate, as 1.x).
    * Discriminative learning rates: a parameter of layer ``l`` gets ``lr * factor^-(max_layer - l)``,
      ``max_layer`` being the highest layer of the map among the program's parameters. Without a
      map, ``dis_blocks`` groups the parameters by depth in the graph (:func:`parameter_depths`)
      into that many blocks, the block nearest the output counting as the top layer;
      ``dis_blocks=0`` turns it off.
    * Gradual unfreezing, advanced by :meth:`step` (called at the start of every epoch): in epoch
      ``e`` (from 0) parameters with layer ``>= max_layer - e`` train and the others stay frozen
      (bit-identical). Before the first :meth:`step` the whole map is frozen. Without a map,
      ``frz_blocks`` depth blocks play the layers; ``frz_blocks=0`` turns it off.
    * Parameters outside a map (e.g. a task's classifier head) keep the full learning rate and
      always train, as in 1.x. Parameters marked not trainable (``context(trainable=False)``)
      never train.
    * When a map is given, the matching ``*_blocks`` argument is ignored (with a warning when it
      was passed explicitly).

    ``optimizer_name``: one of :data:`OPTIMIZER_NAMES`; ``weight_decay`` applies to ``"adamw"``
    only (decoupled, skipping layer-norm parameters and biases).
    """

    def __init__(self, learning_rate=1e-4, optimizer_name="adam", cut_fraction=0.1, ratio=32,
                 dis_blocks=_DIS_BLOCKS, factor=2.6, frz_blocks=_FRZ_BLOCKS, *, params_layer=None,
                 dis_params_layer=None, frz_params_layer=None, weight_decay=0.01):
        super().__init__(learning_rate=learning_rate, optimizer_name=optimizer_name)
        self.cut_fraction = _number_in("cut_fraction", cut_fraction, 0.0, 1.0)
        self.ratio = _number_in("ratio", ratio, 1.0, math.inf)
        self.factor = _positive_number("factor", factor)
        self.weight_decay = _number_in("weight_decay", weight_decay, 0.0, math.inf)
        explicit_dis, explicit_frz = dis_blocks is not _DIS_BLOCKS, frz_blocks is not _FRZ_BLOCKS
        self.dis_blocks = _non_negative_int("dis_blocks", dis_blocks.value if not explicit_dis else dis_blocks)
        self.frz_blocks = _non_negative_int("frz_blocks", frz_blocks.value if not explicit_frz else frz_blocks)
        params_layer = _layer_map("params_layer", params_layer)
        dis_params_layer = _layer_map("dis_params_layer", dis_params_layer)
        frz_params_layer = _layer_map("frz_params_layer", frz_params_layer)
        if params_layer is not None:
            if dis_params_layer is not None or frz_params_layer is not None:
                raise ValueError("pass either params_layer (PaddleHub 1.6) or dis_params_layer/frz_params_layer "
                                 "(1.7+), not both")
            dis_params_layer = frz_params_layer = params_layer
        self.dis_params_layer, self.frz_params_layer = dis_params_layer, frz_params_layer
        for used, explicit, name in ((dis_params_layer, explicit_dis, "dis_blocks"),
                                     (frz_params_layer, explicit_frz, "frz_blocks")):
            if used is not None and explicit:
                warnings.warn(f"ULMFiTStrategy: {name} is ignored because a layer map was given (the map wins)",
                              stacklevel=2)
        self._dis_layers, self._dis_max = {}, 0
        self._frz_layers, self._frz_max = {}, 0
        self._frz_enabled = frz_params_layer is not None or self.frz_blocks > 0

    def __repr__(self):
        maps = ", ".join(f"{name}=<{len(value)} entries>" for name, value in
                         (("dis_params_layer", self.dis_params_layer), ("frz_params_layer", self.frz_params_layer))
                         if value is not None)
        return (f"ULMFiTStrategy(learning_rate={self.learning_rate}, optimizer_name={self.optimizer_name!r}, "
                f"cut_fraction={self.cut_fraction}, ratio={self.ratio}, dis_blocks={self.dis_blocks}, "
                f"factor={self.factor}, frz_blocks={self.frz_blocks}{', ' + maps if maps else ''})")

    def create_scheduler(self, num_train_steps):
        if self.cut_fraction == 0:
            return ConstantLR(self.learning_rate)
        if num_train_steps is None:
            raise ValueError("ULMFiTStrategy's slanted triangular learning rate needs num_train_steps "
                             "(epochs x batches per epoch); pass cut_fraction=0 for a constant rate")
        return SlantedTriangularLR(self.learning_rate, num_train_steps, self.cut_fraction, self.ratio)

    def _layers(self, layer_map, blocks, names, depths, what):
        """``({name: layer} for the program's parameters, max_layer)`` from a map or depth blocks."""
        if layer_map is not None:
            layers = {name: layer_map[name] for name in names if name in layer_map}
            if not layers:
                warnings.warn(f"ULMFiTStrategy: none of the program's trainable parameters is in the {what} map; "
                              f"it has no effect (were the names taken from another program?)", stacklevel=3)
        elif blocks > 0:
            layers = {name: layer for name, layer in _depth_blocks(depths, blocks).items() if name in names}
        else:
            layers = {}
        return layers, (max(layers.values()) if layers else 0)

    def _analyse(self, loss, params):
        names = {p.name for p in params}
        needs_depth = (self.dis_params_layer is None and self.dis_blocks > 0) or \
                      (self.frz_params_layer is None and self.frz_blocks > 0)
        depths = parameter_depths(self._forward) if needs_depth else {}
        self._dis_layers, self._dis_max = self._layers(self.dis_params_layer, self.dis_blocks, names, depths,
                                                       "dis_params_layer")
        self._frz_layers, self._frz_max = self._layers(self.frz_params_layer, self.frz_blocks, names, depths,
                                                       "frz_params_layer")

    def parameter_layers(self):
        """``({name: layer} for discriminative rates, {name: layer} for unfreezing)`` as bound to the program."""
        self._require_bound()
        return dict(self._dis_layers), dict(self._frz_layers)

    def lr_scale(self, name):
        layer = self._dis_layers.get(name)
        if layer is None:
            return 1.0
        return self.factor ** -(self._dis_max - layer)

    def trainable_names(self, epoch):
        if not self._frz_enabled:
            return set(self._trainable)
        lowest = self._frz_max - epoch
        return {name for name in self._trainable
                if name not in self._frz_layers or self._frz_layers[name] >= lowest}
