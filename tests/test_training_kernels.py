"""The training path's kernels: ``context()``'s program on the CPU kernels it selects, against torch autograd."""

import dataclasses

import numpy as np
import paddle
import pytest

from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge
from bert_cased_L_24_H_1024_A_16.weights.names import HUB_PREFIX, huggingface_names

from conftest import TINY_CONFIGS, feeds_with_padding, hf_arrays, hf_model, install_weights

# No dropout, so that both sides compute the same function.
CONFIG = dataclasses.replace(TINY_CONFIGS["odd"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
SEQ = 9


def _static_gradients(module, feeds, pooled_weight, sequence_weight):
    """Loss ``sum(pooled * P) + sum(sequence * S * mask)`` and its gradient for every parameter, by 1.x name."""
    _, outputs, program = module.context(max_seq_len=SEQ)
    with paddle.static.program_guard(program, paddle.static.Program()):
        seq_mask = paddle.static.data("seq_mask", [-1, SEQ, 1], "float32")
        pooled_w = paddle.static.data("pooled_w", list(pooled_weight.shape), "float32")
        sequence_w = paddle.static.data("sequence_w", list(sequence_weight.shape), "float32")
        loss = paddle.sum(outputs["pooled_output"] * pooled_w) + \
            paddle.sum(outputs["sequence_output"] * sequence_w * seq_mask)
        params = program.global_block().all_parameters()
        grads = paddle.static.gradients([loss], params)
    feed = dict(feeds, seq_mask=feeds["input_mask"][:, :, None].astype(np.float32), pooled_w=pooled_weight,
                sequence_w=sequence_weight)
    values = paddle.static.Executor(paddle.CPUPlace()).run(program, feed=feed, fetch_list=[loss, *grads])
    return float(values[0]), {p.name[len(HUB_PREFIX):]: g for p, g in zip(params, values[1:])}


def test_context_gradients_match_torch_autograd(tmp_path):
    torch = pytest.importorskip("torch")
    model = hf_model(CONFIG, seed=4)
    module = BertCasedLarge(weights_dir=install_weights(hf_arrays(model, CONFIG), CONFIG, tmp_path / "weights"))
    feeds = feeds_with_padding(CONFIG, lengths=[9, 5, 2], seq_len=SEQ, seed=4)
    rng = np.random.default_rng(5)
    pooled_weight = rng.normal(size=(3, CONFIG.hidden_size)).astype(np.float32)
    sequence_weight = rng.normal(size=(3, SEQ, CONFIG.hidden_size)).astype(np.float32)

    loss, grads = _static_gradients(module, feeds, pooled_weight, sequence_weight)

    model.zero_grad()
    out = model(input_ids=torch.from_numpy(feeds["input_ids"]), token_type_ids=torch.from_numpy(feeds["segment_ids"]),
                attention_mask=torch.from_numpy(feeds["input_mask"]),
                position_ids=torch.from_numpy(feeds["position_ids"]))
    seq_mask = torch.from_numpy(feeds["input_mask"]).float()[:, :, None]
    ref_loss = (out.pooler_output * torch.from_numpy(pooled_weight)).sum() + \
        (out.last_hidden_state * torch.from_numpy(sequence_weight) * seq_mask).sum()
    ref_loss.backward()
    ref_params = dict(model.named_parameters())

    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-5)
    for name, (hf_name, transpose) in huggingface_names(CONFIG).items():
        ref = ref_params[hf_name].grad.numpy()
        ref = ref.T if transpose else ref
        scale = max(float(np.abs(ref).max()), 1e-3)
        np.testing.assert_allclose(grads[name], ref, atol=1e-4 * scale, rtol=0, err_msg=name)
