"""Clipping by the global norm, in place (AdamWeightDecayStrategy) and folded into the fused AdamW
update, against Paddle's own ClipGradByGlobalNorm with Paddle's AdamW."""

import numpy as np
import paddle
import pytest

from bert_cased_L_24_H_1024_A_16 import kernels
from bert_cased_L_24_H_1024_A_16.finetune.adamw import AdamW, ClipGradByGlobalNormInPlace

NAMES = ("w1", "b1", "w2", "w3")
needs_kernels = pytest.mark.skipif(not kernels.available(), reason="the bert_adamw kernel is not available here")


def _initial_values_and_inputs(steps):
    rng = np.random.default_rng(0)
    shapes = {"w1": (5, 4), "b1": (4,), "w2": (4, 2), "w3": (5, 2)}
    values = {name: rng.normal(size=shapes[name]).astype(np.float32) for name in NAMES}
    return values, [rng.normal(size=(6, 5)).astype(np.float32) for _ in range(steps)]


def _loss(x, w1, b1, w2, w3):
    return paddle.mean(paddle.square(paddle.matmul(paddle.tanh(paddle.matmul(x, w1) + b1), w2))) \
        + paddle.mean(paddle.matmul(x, w3))


def _train_static(clip, optimizer_class, steps=3):
    """Parameters of a small two-layer net after ``steps`` AdamW steps with ``clip``, and the op names."""
    initial, inputs = _initial_values_and_inputs(steps)
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [6, 5], "float32")
            params = {name: paddle.static.create_parameter(list(initial[name].shape), "float32", name=name)
                      for name in NAMES}
            params["w3"].need_clip = False  # Paddle's rule: this one is neither clipped nor counted in the norm.
            optimizer_class(learning_rate=0.01, weight_decay=0.01, grad_clip=clip).minimize(_loss(x, **params))
        scope, executor = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(scope):
            executor.run(startup)
            for name in NAMES:
                scope.find_var(name).get_tensor().set(initial[name], paddle.CPUPlace())
            for batch in inputs:
                executor.run(main, feed={"x": batch})
            values = {name: np.array(scope.find_var(name).get_tensor()) for name in NAMES}
            scope.erase(list(scope.local_var_names()))
            return values, [op.name() for op in main.global_block().ops]
    finally:
        paddle.disable_static()


def _train_dynamic(clip, optimizer_class, steps=3):
    """The same training as :func:`_train_static`, in dynamic mode."""
    initial, inputs = _initial_values_and_inputs(steps)
    params = {name: paddle.create_parameter(list(value.shape), "float32",
                                            default_initializer=paddle.nn.initializer.Assign(value))
              for name, value in initial.items()}
    params["w3"].need_clip = False
    optimizer = optimizer_class(learning_rate=0.01, weight_decay=0.01, grad_clip=clip,
                                parameters=list(params.values()))
    for batch in inputs:
        _loss(paddle.to_tensor(batch), **params).backward()
        optimizer.step()
        optimizer.clear_grad()
    return {name: param.numpy() for name, param in params.items()}


@pytest.mark.parametrize("clip_norm", [1e-3, 1e6], ids=["clipping", "below-the-norm"])
def test_in_place_clip_equals_paddles(clip_norm):
    ours, _ = _train_static(ClipGradByGlobalNormInPlace(clip_norm), paddle.optimizer.AdamW)
    reference, _ = _train_static(paddle.nn.ClipGradByGlobalNorm(clip_norm), paddle.optimizer.AdamW)
    unclipped, _ = _train_static(None, paddle.optimizer.AdamW)
    for name in ours:
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-6, atol=1e-7, err_msg=name)
    moved = max(float(np.abs(ours[n] - unclipped[n]).max()) for n in ("w1", "b1", "w2"))
    assert (moved > 1e-4) == (clip_norm < 1), "the clip must act exactly when the norm is above it"


@needs_kernels
@pytest.mark.parametrize("clip_class", [paddle.nn.ClipGradByGlobalNorm, ClipGradByGlobalNormInPlace])
@pytest.mark.parametrize("clip_norm", [1e-3, 1e6], ids=["clipping", "below-the-norm"])
def test_clip_folded_into_the_fused_update_equals_paddles_in_a_program(clip_norm, clip_class):
    ours, our_ops = _train_static(clip_class(clip_norm), AdamW)
    reference, _ = _train_static(paddle.nn.ClipGradByGlobalNorm(clip_norm), paddle.optimizer.AdamW)
    assert our_ops.count("custom_op.bert_adamw_") == 4 and "pd_op.adamw_" not in our_ops
    assert not any(name.startswith("pd_op.multiply") for name in our_ops), "the gradients must not be rewritten"
    for name in ours:
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)


@needs_kernels
@pytest.mark.parametrize("clip_norm", [1e-3, 1e6, None], ids=["clipping", "below-the-norm", "no-clip"])
def test_fused_update_in_dynamic_mode_equals_paddles(clip_norm):
    clip = lambda: None if clip_norm is None else paddle.nn.ClipGradByGlobalNorm(clip_norm)  # noqa: E731
    ours = _train_dynamic(clip(), AdamW)
    reference = _train_dynamic(clip(), paddle.optimizer.AdamW)
    initial, _ = _initial_values_and_inputs(0)
    for name in ours:
        assert np.abs(ours[name] - initial[name]).max() > 1e-4, f"{name} did not train"
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)


@needs_kernels
def test_fused_update_in_dynamic_mode_runs_the_kernel_with_the_clip_factor(monkeypatch):
    original, scales = kernels.adamw_, []

    def spy(*args):
        scales.append(float(args[7].numpy().reshape(-1)[0]))  # grad_scale
        return original(*args)

    monkeypatch.setattr(kernels, "adamw_", spy)
    _train_dynamic(paddle.nn.ClipGradByGlobalNorm(1e-3), AdamW, steps=1)
    assert len(scales) == 4
    assert sorted(scales)[-1] == 1.0 and scales.count(1.0) == 1, "only w3 (need_clip=False) is left unscaled"
    assert all(0 < s < 1e-2 for s in scales if s != 1.0), scales


def _train_dynamic_groups(optimizer_class, steps=3):
    """Dynamic-mode training with two parameter groups (rate scales 1 and 0.25, the second without
    weight decay), as ULMFiT's optimizer makes them, and a global-norm clip."""
    initial, inputs = _initial_values_and_inputs(steps)
    params = {name: paddle.create_parameter(list(value.shape), "float32",
                                            default_initializer=paddle.nn.initializer.Assign(value))
              for name, value in initial.items()}
    groups = [{"params": [params["w1"], params["b1"]]},
              {"params": [params["w2"], params["w3"]], "learning_rate": 0.25, "weight_decay": 0.0}]
    optimizer = optimizer_class(learning_rate=0.01, weight_decay=0.01, parameters=groups,
                                grad_clip=paddle.nn.ClipGradByGlobalNorm(1e-2))
    for batch in inputs:
        _loss(paddle.to_tensor(batch), **params).backward()
        optimizer.step()
        optimizer.clear_grad()
    return {name: param.numpy() for name, param in params.items()}


@needs_kernels
def test_fused_update_with_parameter_groups_equals_paddles(monkeypatch):
    calls = []
    original = kernels.adamw_
    monkeypatch.setattr(kernels, "adamw_", lambda *args: calls.append(args) or original(*args))
    ours = _train_dynamic_groups(AdamW)
    monkeypatch.setattr(kernels, "adamw_", original)
    reference = _train_dynamic_groups(paddle.optimizer.AdamW)
    assert len(calls) == 4 * 3, "every update must be the fused one"
    for name in ours:
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)
