"""The ``bert_linear`` training kernel against its pure-Paddle fallback and a float64 reference."""

import logging
import shutil

import numpy as np
import paddle
import pytest

from bert_cased_L_24_H_1024_A_16 import device, kernels
from bert_cased_L_24_H_1024_A_16.network import build_program, static_mode

from conftest import TINY_CONFIGS

needs_kernel = pytest.mark.skipif(not shutil.which("g++") or not paddle.base.core.is_compiled_with_onednn(),
                                  reason="the kernels need g++ and a Paddle build with oneDNN")


@pytest.fixture
def fallback(monkeypatch):
    """Runs the test as on a machine where the kernel can't be built."""
    monkeypatch.setitem(kernels._state, "available", False)


def _operands(m, k, n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32),
            rng.standard_normal(n).astype(np.float32), rng.standard_normal((m, n)).astype(np.float32))


def _run(x, w, b, out_grad, bf16=False, gelu_input=False):
    """``kernels.linear`` in dynamic mode: the output and the gradients of ``sum(out * out_grad)``."""
    tensors = [paddle.to_tensor(a, stop_gradient=False) for a in (x, w, b)]
    out = kernels.linear(*tensors, bf16=bf16, gelu_input=gelu_input)
    (out * paddle.to_tensor(out_grad)).sum().backward()
    return [out.numpy()] + [t.grad.numpy() for t in tensors]


def _reference(x, w, b, out_grad):
    x, w, b, g = (a.astype(np.float64) for a in (x, w, b, out_grad))
    return [x @ w + b, g @ w.T, x.T @ g, g.sum(axis=0)]


def _torch_float64(function, arrays, out_grad):
    """``function`` of float64 torch copies of ``arrays``: its output and the gradients of ``sum(out * out_grad)``."""
    import torch

    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = function(*tensors)
    (out * torch.tensor(out_grad, dtype=torch.float64)).sum().backward()
    return [out.detach().numpy()] + [t.grad.numpy() for t in tensors]


def _assert_close(names, got, want, tolerance=1e-5):
    """Each array of ``got`` within ``tolerance`` times the largest magnitude of the same array of ``want``."""
    for name, value, reference in zip(names, got, want):
        assert np.abs(value - reference).max() <= tolerance * np.abs(reference).max(), name


@needs_kernel
@pytest.mark.parametrize("shape", [(7, 5, 3), (64, 96, 80), (1, 33, 17)])
def test_kernel_matches_the_float64_reference_and_the_fallback(shape, monkeypatch):
    x, w, b, g = _operands(*shape)
    assert kernels.available()
    ours = _run(x, w, b, g)
    monkeypatch.setitem(kernels._state, "available", False)
    plain = _run(x, w, b, g)
    want = _reference(x, w, b, g)
    _assert_close(("out", "dx", "dw", "db"), ours, want)
    _assert_close(("out", "dx", "dw", "db"), plain, want)


@needs_kernel
@pytest.mark.parametrize("shape", [(7, 5, 3), (96, 256, 64)])
def test_gelu_input_matches_torch_float64_and_the_fallback(shape, monkeypatch):
    """``gelu(x) · w + b``: the forward pass and the gradients, the GELU's recomputed one included."""
    torch = pytest.importorskip("torch")
    x, w, b, g = _operands(*shape, seed=3)
    x *= 2  # GELU's bend lies within a few units of 0.
    assert kernels.available()
    ours = _run(x, w, b, g, gelu_input=True)
    monkeypatch.setitem(kernels._state, "available", False)
    plain = _run(x, w, b, g, gelu_input=True)
    want = _torch_float64(lambda x, w, b: torch.nn.functional.gelu(x) @ w + b, (x, w, b), g)
    _assert_close(("out", "dx", "dw", "db"), ours, want)
    _assert_close(("out", "dx", "dw", "db"), plain, want)


@needs_kernel
@pytest.mark.parametrize("shape", [(7, 24), (300, 1024)])
def test_layer_norm_kernel_matches_torch_float64_and_the_fallback(shape, monkeypatch):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    scale, bias = (rng.standard_normal(shape[1]).astype(np.float32) for _ in range(2))
    out_grad = rng.standard_normal(shape).astype(np.float32)

    def ours():
        tensors = [paddle.to_tensor(a, stop_gradient=False) for a in (x, scale, bias)]
        out = kernels.layer_norm(*tensors, 1e-12)
        (out * paddle.to_tensor(out_grad)).sum().backward()
        return [out.numpy()] + [t.grad.numpy() for t in tensors]

    assert kernels.available()
    got = ours()
    monkeypatch.setitem(kernels._state, "available", False)
    plain = ours()
    want = _torch_float64(lambda x, scale, bias: torch.nn.functional.layer_norm(x, shape[1:], scale, bias, eps=1e-12),
                          (x, scale, bias), out_grad)
    _assert_close(("y", "dx", "dscale", "dbias"), got, want)
    _assert_close(("y", "dx", "dscale", "dbias"), plain, want)


@needs_kernel
def test_bf16_mode_rounds_the_products_and_stays_close():
    if not device.cpu_supports_bf16():
        pytest.skip("this CPU has no avx512_bf16/amx_bf16")
    x, w, b, g = _operands(48, 256, 40, seed=1)
    fp32, bf16, want = _run(x, w, b, g), _run(x, w, b, g, bf16=True), _reference(x, w, b, g)
    for name, half, full, exact in zip(("out", "dx", "dw", "db"), bf16, fp32, want):
        scale = np.abs(exact).max()
        # bfloat16 keeps 8 significant bits: a K-term sum of rounded products is off by ~2^-8 * sqrt(K).
        assert np.abs(half - exact).max() <= 0.03 * scale, name
        if name != "db":  # the bias gradient is a float32 sum in both modes
            assert np.abs(half - full).max() > 1e-4 * scale, f"{name}: bf16 mode changed nothing"
    np.testing.assert_allclose(bf16[3], fp32[3], rtol=1e-6, atol=1e-5)


@needs_kernel
def test_training_programs_use_the_kernel_and_inference_programs_do_not():
    config = TINY_CONFIGS["tiny"]
    bf16 = device.cpu_supports_bf16()
    with static_mode():
        training = build_program(config, max_seq_len=8)
        inference = build_program(config, training=False)
        dense = 6 * config.num_hidden_layers + 1  # four attention projections, two feed-forward, the pooler
        if bf16:  # Set before the backward pass exists: the gradient ops take it over.
            assert kernels.set_linear_precision(training.program, "bf16") == dense
        with paddle.static.program_guard(training.program, training.startup_program):
            paddle.optimizer.SGD(0.1).minimize(paddle.mean(training.outputs["pooled_output"]))
    names = [op.name() for op in training.program.global_block().ops]
    assert names.count("custom_op.bert_linear") == dense
    assert names.count("custom_op.bert_linear_grad") == dense
    # The encoder's two layer norms a layer; the embeddings' one ([batch, seq, hidden]) stays Paddle's.
    assert names.count("custom_op.bert_layer_norm") == names.count("custom_op.bert_layer_norm_grad") == \
        2 * config.num_hidden_layers
    assert not [name for name in (op.name() for op in inference.program.global_block().ops) if "bert_linear" in name]
    flags = [op.attrs()["bf16"] for op in training.program.global_block().ops if "bert_linear" in op.name()]
    assert flags == [bf16] * (2 * dense)
    assert kernels.set_linear_precision(training.program, "fp32") == 2 * dense
    assert not any(op.attrs()["bf16"] for op in training.program.global_block().ops if "bert_linear" in op.name())


def test_fallback_program_has_paddle_ops_and_refuses_bf16(fallback):
    with static_mode():
        bert = build_program(TINY_CONFIGS["tiny"], max_seq_len=8)
    names = [op.name() for op in bert.program.global_block().ops]
    assert "pd_op.matmul" in names and not [name for name in names if "bert_linear" in name]
    assert kernels.set_linear_precision(bert.program, "fp32") == 0
    if device.cpu_supports_bf16():
        with pytest.raises(RuntimeError, match="bert_linear kernel"):
            kernels.check_training_precision("bf16")


def test_precision_is_checked(monkeypatch):
    with pytest.raises(ValueError, match="precision must be one of"):
        kernels.check_training_precision("fp16")
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: False)
    with pytest.raises(RuntimeError, match="avx512_bf16"):
        kernels.check_training_precision("bf16")
    assert kernels.check_training_precision("fp32") == "fp32"


def test_a_failed_build_falls_back_with_a_warning(monkeypatch, caplog):
    def no_compiler(library):
        raise RuntimeError("g++: command not found")

    monkeypatch.setitem(kernels._state, "available", None)
    monkeypatch.setattr(kernels, "_build", no_compiler)
    monkeypatch.setattr(device, "gpu_available", lambda: False)
    x, w, b, g = _operands(5, 4, 3)
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        got = _run(x, w, b, g)
    assert kernels._state["available"] is False
    assert "g++: command not found" in caplog.text and "Paddle's matmul" in caplog.text
    for value, want in zip(got, _reference(x, w, b, g)):
        assert np.abs(value - want).max() <= 1e-5 * np.abs(want).max()


def test_the_environment_switch_turns_the_kernel_off(monkeypatch):
    monkeypatch.setitem(kernels._state, "available", None)
    monkeypatch.setenv(kernels.KERNELS_ENV, "0")
    assert kernels.available() is False


def _train_with(optimizer_class, steps=3):
    """Parameters after ``steps`` of ``optimizer_class`` on a small regression, and the program's op names."""
    from paddle.nn.initializer import Assign

    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 300)).astype(np.float32)
    init = {"w": rng.standard_normal((300, 300)).astype(np.float32) * 0.05,
            "b": rng.standard_normal(300).astype(np.float32) * 0.05}
    scope = paddle.static.Scope()
    with static_mode(), paddle.static.scope_guard(scope):
        program, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(program, startup):
            feed = paddle.static.data("x", [8, 300], "float32")
            w = paddle.create_parameter([300, 300], "float32", name="fused_adamw_test_w",
                                        default_initializer=Assign(init["w"]))
            b = paddle.create_parameter([300], "float32", name="fused_adamw_test_b",
                                        attr=paddle.ParamAttr(name="fused_adamw_test_b", learning_rate=0.5,
                                                              initializer=Assign(init["b"])))
            loss = paddle.mean(paddle.square(paddle.matmul(feed, w) + b))
            optimizer_class(learning_rate=0.01, weight_decay=0.1,
                            apply_decay_param_fun=lambda name: name.endswith("_w")).minimize(loss)
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup)
        for _ in range(steps):
            executor.run(program, feed={"x": x})
        values = {name: np.array(scope.find_var(f"fused_adamw_test_{name}").get_tensor()) for name in init}
        names = [op.name() for op in program.global_block().ops]
    scope.erase(list(scope.local_var_names()))
    return values, names, init


@needs_kernel
def test_fused_adamw_matches_paddles_adamw_step_by_step():
    from bert_cased_L_24_H_1024_A_16.finetune.adamw import AdamW

    ours, our_ops, init = _train_with(AdamW)
    theirs, their_ops, _ = _train_with(paddle.optimizer.AdamW)
    assert our_ops.count("custom_op.bert_adamw_") == 2 and "pd_op.adamw_" not in our_ops
    assert their_ops.count("pd_op.adamw_") == 2
    for name in init:
        assert np.abs(theirs[name] - init[name]).max() > 1e-3  # the steps moved the parameter
        # Same formulas, float32 rounding in another order: within a ten-thousandth of one step (lr 0.01).
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_adamw_falls_back_to_paddles_update_without_the_kernels(fallback):
    from bert_cased_L_24_H_1024_A_16.finetune.adamw import AdamW

    ours, our_ops, _ = _train_with(AdamW, steps=2)
    theirs, _, _ = _train_with(paddle.optimizer.AdamW, steps=2)
    assert "pd_op.adamw_" in our_ops and "custom_op.bert_adamw_" not in our_ops
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name])


@needs_kernel
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_attention_kernel_matches_torch_float64(p):
    """``bert_attention``'s output and gradients, with padded keys and with dropout: its mask is
    ``bert_dropout``'s over the ``[batch, heads, seq, seq]`` probabilities after the same seed."""
    torch = pytest.importorskip("torch")
    batch, seq, heads, head_size = 3, 7, 3, 5  # 441 probabilities: dropout's groups of four don't divide them
    rng = np.random.default_rng(4)
    q, k, v, out_grad = (rng.standard_normal((batch * seq, heads * head_size)).astype(np.float32) for _ in range(4))
    mask = np.ones((batch, seq), np.float32)
    mask[1, 5:] = mask[2, 2:] = 0
    bias = ((1 - mask) * -10000.0).reshape(batch, 1, 1, seq).astype(np.float32)
    assert kernels.available()
    paddle.seed(7)
    tensors = [paddle.to_tensor(a, stop_gradient=False) for a in (q, k, v)]
    out = kernels.attention(*tensors, paddle.to_tensor(bias), heads, p)
    (out * paddle.to_tensor(out_grad)).sum().backward()
    got = [out.numpy()] + [t.grad.numpy() for t in tensors]
    paddle.seed(7)
    kept = kernels.dropout(paddle.ones([batch, heads, seq, seq]), p).numpy() if p else 1.0

    def split(rows):
        return rows.reshape(batch, seq, heads, head_size).permute(0, 2, 1, 3)

    def attention(q, k, v):
        scores = split(q) @ split(k).transpose(-1, -2) / head_size ** 0.5 + torch.tensor(bias)
        probs = torch.softmax(scores, dim=-1) * torch.as_tensor(kept, dtype=torch.float64)
        return (probs @ split(v)).permute(0, 2, 1, 3).reshape(batch * seq, heads * head_size)

    _assert_close(("out", "dq", "dk", "dv"), got, _torch_float64(attention, (q, k, v), out_grad))
    if p:  # the mask dropped something, and the kept probabilities were scaled up
        assert 0 < np.mean(kept == 0) < 0.6 and np.allclose(kept[kept > 0], 1 / (1 - p))
