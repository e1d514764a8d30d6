"""``paddle.optimizer.AdamW`` whose update is this package's multi-threaded ``bert_adamw`` kernel.

Same constructor, accumulators (so checkpoints and resumes see the same state names), learning-rate
scaling (``ParamAttr(learning_rate=...)``, ``lr_ratio``) and formulas as Paddle's; only the operator
appended for each parameter changes, and only where the kernels are available, the parameter is a
float32 one without a master weight, and neither AMSGrad nor a dynamic ``beta`` is used. Anything else
falls back to Paddle's ``adamw_``.
"""

import paddle

from .. import kernels

__all__ = ["AdamW"]


class AdamW(paddle.optimizer.AdamW):
    """``paddle.optimizer.AdamW`` with the ``bert_adamw`` update (see the module documentation)."""

    def _append_optimize_op(self, block, param_and_grad):
        if isinstance(param_and_grad, dict) or not self._fused_update_applies(param_and_grad[0]):
            return super()._append_optimize_op(block, param_and_grad)
        param, grad = param_and_grad
        with_decay = self._apply_decay_param_fun is None or bool(self._apply_decay_param_fun(param.name))
        accumulator = lambda kind: self._get_accumulator_master(kind, param)  # noqa: E731
        kernels.adamw_(param, grad, self._create_param_lr(param_and_grad), accumulator(self._moment1_acc_str),
                       accumulator(self._moment2_acc_str), accumulator(self._beta1_pow_acc_str),
                       accumulator(self._beta2_pow_acc_str), self._beta1, self._beta2, self._epsilon,
                       1.0 if self._lr_ratio is None else self._lr_ratio(param), self._weight_decay, with_decay)
        return None

    def _fused_update_applies(self, param):
        return (paddle.framework.in_pir_mode() and kernels.available() and param.dtype == paddle.float32
                and not self._amsgrad and not self._lazy_mode
                and isinstance(self._beta1, float) and isinstance(self._beta2, float)
                and isinstance(self._weight_decay, float))
