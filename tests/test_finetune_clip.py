"""The in-place global-norm clip of AdamWeightDecayStrategy against Paddle's own ClipGradByGlobalNorm."""

import numpy as np
import paddle
import pytest

from bert_cased_L_24_H_1024_A_16.finetune.strategy import ClipGradByGlobalNormInPlace


def _train(clip, steps=3):
    """Parameters of a small two-layer net after ``steps`` AdamW steps with ``clip``."""
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [6, 5], "float32")
            hidden = paddle.nn.Linear(5, 4, weight_attr=paddle.ParamAttr(name="w1"), bias_attr=paddle.ParamAttr(name="b1"))
            out = paddle.nn.Linear(4, 2, weight_attr=paddle.ParamAttr(name="w2"), bias_attr=False)
            frozen = paddle.static.create_parameter([5, 2], "float32", name="w3")
            frozen.need_clip = False  # Paddle's rule: this one is neither clipped nor counted in the norm.
            loss = paddle.mean(paddle.square(out(paddle.tanh(hidden(x))))) + paddle.mean(paddle.matmul(x, frozen))
            paddle.optimizer.AdamW(learning_rate=0.01, weight_decay=0.01, grad_clip=clip).minimize(loss)
        scope, executor = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
        rng = np.random.default_rng(0)
        with paddle.static.scope_guard(scope):
            executor.run(startup)
            for name in ("w1", "b1", "w2", "w3"):
                tensor = scope.find_var(name).get_tensor()
                tensor.set(rng.normal(size=tensor.shape()).astype(np.float32), paddle.CPUPlace())
            for _ in range(steps):
                executor.run(main, feed={"x": rng.normal(size=(6, 5)).astype(np.float32)})
            values = {name: np.array(scope.find_var(name).get_tensor()) for name in ("w1", "b1", "w2", "w3")}
            scope.erase(list(scope.local_var_names()))
            return values
    finally:
        paddle.disable_static()


@pytest.mark.parametrize("clip_norm", [1e-3, 1e6], ids=["clipping", "below-the-norm"])
def test_in_place_clip_equals_paddles(clip_norm):
    ours = _train(ClipGradByGlobalNormInPlace(clip_norm))
    reference = _train(paddle.nn.ClipGradByGlobalNorm(clip_norm))
    unclipped = _train(None)
    for name in ours:
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-6, atol=1e-7, err_msg=name)
    moved = max(float(np.abs(ours[n] - unclipped[n]).max()) for n in ("w1", "b1", "w2"))
    assert (moved > 1e-4) == (clip_norm < 1), "the clip must act exactly when the norm is above it"
