"""``paddle.optimizer.AdamW`` whose update is this package's multi-threaded ``bert_adamw`` kernel,
with clipping by the global norm folded into that update.

Same constructor, accumulators (so checkpoints and resumes see the same state names), learning-rate
scaling (``ParamAttr(learning_rate=...)``, ``lr_ratio``) and formulas as Paddle's; only the operator
appended for each parameter changes, in static (PIR) programs and in dynamic mode alike. It does so
only where the kernels are available, the parameter is a float32 one without a master weight, and
neither AMSGrad nor a dynamic ``beta`` is used. Anything else falls back to Paddle's ``adamw_``.

With ``grad_clip=paddle.nn.ClipGradByGlobalNorm(c)`` (or :class:`ClipGradByGlobalNormInPlace`) and
every update fused, the gradients are not rewritten: the norm is computed, and each update reads
``g * c / max(||g||, c)``. Paddle's clip writes every scaled gradient once more (in dynamic mode to
new tensors, a second copy of the gradients, 1.3 GB for BERT-Large).
"""

import numbers

import paddle

from .. import kernels

__all__ = ["AdamW", "ClipGradByGlobalNormInPlace"]

def _clips(param):
    """Whether a global-norm clip counts and scales ``param``'s gradient (Paddle's ``need_clip`` rule)."""
    return getattr(param, "need_clip", True)


def _global_norm_scale(params_grads, clip_norm):
    """``clip_norm / max(||g||, clip_norm)`` (a ``[1]`` float32 tensor, or PIR value) over the gradients
    of ``params_grads`` whose parameter clips; None where none does. ``||g||``: the L2 norm of all of
    them together, as ``paddle.nn.ClipGradByGlobalNorm`` computes it."""
    squares = [paddle._C_ops.squared_l2_norm(g) for p, g in params_grads if g is not None and _clips(p)]
    if not squares:
        return None
    global_norm = paddle.sqrt(paddle.add_n(squares))
    max_norm = paddle.full([1], clip_norm, global_norm.dtype)
    return paddle.divide(max_norm, paddle.maximum(global_norm, max_norm))


class ClipGradByGlobalNormInPlace(paddle.nn.ClipGradByGlobalNorm):
    """``paddle.nn.ClipGradByGlobalNorm`` that scales the gradients where they are (static programs).

    Paddle's PIR version writes each scaled gradient to a new tensor while every gradient is
    still alive (the global norm needs them all): a second copy of the gradients, 1.3 GB for
    BERT-Large, at the step's peak. ``g *= clip_norm / max(||g||, clip_norm)``, over every
    gradient of a parameter that has not opted out with ``need_clip = False``.
    """

    def _pir_clip(self, params_grads):
        params_grads = [(p, g) for p, g in params_grads if g is not None]
        scale = _global_norm_scale(params_grads, self.clip_norm)
        if scale is None:
            return params_grads
        return [(p, paddle.multiply_(g, scale) if _clips(p) else g) for p, g in params_grads]


# The clips whose factor the fused update can apply (subclasses may change what clipping means).
_FOLDABLE_CLIPS = (paddle.nn.ClipGradByGlobalNorm, ClipGradByGlobalNormInPlace)


class AdamW(paddle.optimizer.AdamW):
    """``paddle.optimizer.AdamW`` with the ``bert_adamw`` update (see the module documentation)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clip_scale = None  # While a fused update is appended: the global-norm clip's factor.
        self._unit_scale = None  # ... and 1, for the parameters the clip leaves alone.

    def _apply_optimize(self, loss, startup_program, params_grads, param_group_idx=0):
        grouped = isinstance(params_grads, dict)  # One parameter group's pairs and options.
        pairs = params_grads["params"] if grouped else params_grads
        clip = params_grads.get("grad_clip") if grouped else self._grad_clip
        options = params_grads if grouped else {}
        if not self._fuses_update(clip, pairs, options):
            return super()._apply_optimize(loss, startup_program, params_grads, param_group_idx)
        self._clip_scale = None if clip is None else _global_norm_scale(pairs, clip.clip_norm)
        self._unit_scale = paddle.full([1], 1.0, "float32")
        # The clip is folded into the updates instead of rewriting the gradients.
        if grouped:
            params_grads = dict(params_grads, grad_clip=None)
        else:
            self._grad_clip = None
        try:
            return super()._apply_optimize(loss, startup_program, params_grads, param_group_idx)
        finally:
            if not grouped:
                self._grad_clip = clip
            self._clip_scale = self._unit_scale = None

    def _append_optimize_op(self, block, param_and_grad):
        if self._unit_scale is None:  # Not a fused pass (see _apply_optimize).
            return super()._append_optimize_op(block, param_and_grad)
        if isinstance(param_and_grad, dict):  # A parameter group's pair: its options become current.
            param_and_grad = self._update_param_group(param_and_grad)
        param, grad = param_and_grad
        with_decay = self._apply_decay_param_fun is None or bool(self._apply_decay_param_fun(param.name))
        scale = self._clip_scale if self._clip_scale is not None and _clips(param) else self._unit_scale
        accumulator = lambda kind: self._get_accumulator_master(kind, param)  # noqa: E731
        kernels.adamw_(param, grad, self._create_param_lr(param_and_grad), accumulator(self._moment1_acc_str),
                       accumulator(self._moment2_acc_str), accumulator(self._beta1_pow_acc_str),
                       accumulator(self._beta2_pow_acc_str), scale, self._beta1, self._beta2, self._epsilon,
                       1.0 if self._lr_ratio is None else self._lr_ratio(param), self._weight_decay, with_decay)
        return None

    def _fuses_update(self, clip, pairs, options):
        """Whether every update of ``pairs`` (with a group's ``options``) can be ``bert_adamw``, ``clip`` folded in."""
        if clip is not None and type(clip) not in _FOLDABLE_CLIPS:
            return False
        if not (paddle.framework.in_pir_mode() or paddle.in_dynamic_mode()) or not kernels.available():
            return False
        settings = {**self._default_dict, **options} if options else {  # a parameter group's, or the optimizer's
            "lazy_mode": self._lazy_mode, "beta1": self._beta1, "beta2": self._beta2, "weight_decay": self._weight_decay}
        if self._amsgrad or settings["lazy_mode"]:
            return False
        if not all(isinstance(settings[name], numbers.Real) for name in ("beta1", "beta2", "weight_decay")):
            return False
        return all(p.dtype == paddle.float32 and _dense(g) for p, g in pairs if g is not None)


def _dense(grad):
    """Whether ``grad`` is a dense tensor (not the rows of a sparse embedding gradient)."""
    if paddle.in_dynamic_mode():
        return not grad.is_selected_rows()
    return grad.is_dense_tensor_type()
