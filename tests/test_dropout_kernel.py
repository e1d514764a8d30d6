"""The ``bert_dropout`` training kernel: its mask statistics, scaling and gradient, its seed, its test
mode in cloned programs, and the fallback to Paddle's dropout."""

import shutil

import numpy as np
import paddle
import pytest

from bert_cased_L_24_H_1024_A_16 import kernels
from bert_cased_L_24_H_1024_A_16.network import build_program, inference_clone, static_mode

from conftest import TINY_CONFIGS

needs_kernel = pytest.mark.skipif(not shutil.which("g++") or not paddle.base.core.is_compiled_with_onednn(),
                                  reason="the kernels need g++ and a Paddle build with oneDNN")


def _dropout_with_grad(x, p, seed):
    """``kernels.dropout`` in dynamic mode: the output and the gradient of ``sum(out * out_grad)``."""
    paddle.seed(seed)
    tensor = paddle.to_tensor(x, stop_gradient=False)
    out_grad = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    out = kernels.dropout(tensor, p)
    (out * paddle.to_tensor(out_grad)).sum().backward()
    return out.numpy(), tensor.grad.numpy(), out_grad


@needs_kernel
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_kept_elements_are_scaled_dropped_ones_zero_and_the_gradient_follows_the_mask(p):
    assert kernels.available()
    x = np.random.default_rng(0).uniform(0.5, 1.5, (512, 1024)).astype(np.float32)  # no zeros of its own
    out, grad, out_grad = _dropout_with_grad(x, p, seed=7)
    kept = out != 0
    # A binomial keep fraction: 524288 draws, standard deviation below 0.0007.
    assert abs(kept.mean() - (1 - p)) < 0.004
    np.testing.assert_array_equal(out[kept], x[kept] * np.float32(1 / (1 - p)))
    np.testing.assert_allclose(grad, np.where(kept, out_grad / (1 - p), 0.0), rtol=1e-6)
    # The mask is not a pattern over rows or columns: every row and column keeps about 1 - p.
    assert abs(kept.mean(axis=1) - (1 - p)).max() < 0.1 and abs(kept.mean(axis=0) - (1 - p)).max() < 0.1


@needs_kernel
def test_paddle_seed_repeats_the_mask_and_each_call_draws_a_new_one():
    x = np.ones((64, 256), np.float32)
    first, _, _ = _dropout_with_grad(x, 0.1, seed=3)
    again, _, _ = _dropout_with_grad(x, 0.1, seed=3)
    other, _, _ = _dropout_with_grad(x, 0.1, seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    paddle.seed(3)
    tensor = paddle.to_tensor(x)
    assert not np.array_equal(kernels.dropout(tensor, 0.1).numpy(), kernels.dropout(tensor, 0.1).numpy())


@needs_kernel
def test_training_programs_use_the_kernel_and_their_inference_clone_turns_it_off():
    config = TINY_CONFIGS["tiny"]
    with static_mode():
        bert = build_program(config, max_seq_len=8)
        test_program, (pooled,) = inference_clone(bert.program, [bert.outputs["pooled_output"]])
        with paddle.static.program_guard(bert.program, bert.startup_program):
            paddle.optimizer.SGD(0.0).minimize(paddle.mean(bert.outputs["pooled_output"]))
        names = [op.name() for op in bert.program.global_block().ops]
        # Two a layer (the attention output, the feed-forward output) and one after the embeddings; the
        # attention probabilities' dropout runs inside bert_attention, which the inference clone turns off too.
        assert names.count("custom_op.bert_dropout") == names.count("custom_op.bert_dropout_grad") == \
            2 * config.num_hidden_layers + 1
        assert names.count("custom_op.bert_attention") == names.count("custom_op.bert_attention_grad") == \
            config.num_hidden_layers
        assert "pd_op.dropout" not in names
        scope = paddle.static.Scope()
        executor = paddle.static.Executor(paddle.CPUPlace())
        rng = np.random.default_rng(0)
        feed = {"input_ids": rng.integers(1, config.vocab_size, (2, 8)), "position_ids": np.tile(np.arange(8), (2, 1)),
                "segment_ids": np.zeros((2, 8), np.int64), "input_mask": np.ones((2, 8), np.int64)}
        feed = {name: value.astype(np.int64) for name, value in feed.items()}
        with paddle.static.scope_guard(scope):
            executor.run(bert.startup_program)
            runs = [executor.run(test_program, feed=feed, fetch_list=[pooled])[0] for _ in range(2)]
            trained = [executor.run(bert.program, feed=feed, fetch_list=[bert.outputs["pooled_output"]])[0]
                       for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])  # test mode: no dropout
    assert not np.array_equal(trained[0], trained[1])  # training: a new mask every run


def test_without_the_kernels_paddles_dropout_runs(monkeypatch):
    monkeypatch.setitem(kernels._state, "available", False)
    with static_mode():
        bert = build_program(TINY_CONFIGS["tiny"], max_seq_len=8)
    names = [op.name() for op in bert.program.global_block().ops]
    assert "pd_op.dropout" in names and "custom_op.bert_dropout" not in names
    x = paddle.ones([1000])
    kept = kernels.dropout(x, 0.5).numpy()
    assert set(np.unique(kept)) == {0.0, 2.0}
