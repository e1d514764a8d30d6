"""The static-graph BERT against SPEC section 3 and against Hugging Face ``BertModel``."""

import numpy as np
import paddle
import pytest

from bert_cased_L_24_H_1024_A_16 import network
from bert_cased_L_24_H_1024_A_16.config import DEFAULT_CONFIG_FILE, BertConfig
from bert_cased_L_24_H_1024_A_16.weights.names import HUB_PREFIX, legacy_parameter_shapes

from conftest import TINY_CONFIGS, feeds_with_padding, hf_arrays, hf_model

FULL_PARAMETER_COUNT = 333_579_264  # SPEC section 3.


def _program_parameters(program):
    return {p.name: tuple(p.shape) for p in program.global_block().all_parameters()}


def test_full_configuration_matches_the_spec():
    config = BertConfig.from_json_file(DEFAULT_CONFIG_FILE)
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, config.max_position_embeddings, config.type_vocab_size) == (
        28996, 1024, 24, 16, 4096, 512, 2)
    with network.static_mode():
        bert = network.build_program(config, max_seq_len=128)
    params = _program_parameters(bert.program)
    expected = {HUB_PREFIX + name: shape for name, shape in legacy_parameter_shapes(config).items()}
    assert params == expected
    assert sum(int(np.prod(shape)) for shape in params.values()) == FULL_PARAMETER_COUNT
    # Spot checks straight from the SPEC table, independent of names.py.
    assert params[HUB_PREFIX + "word_embedding"] == (28996, 1024)
    assert params[HUB_PREFIX + "encoder_layer_23_ffn_fc_0.w_0"] == (1024, 4096)
    assert params[HUB_PREFIX + "encoder_layer_0_ffn_fc_1.w_0"] == (4096, 1024)
    assert params[HUB_PREFIX + "pooled_fc.b_0"] == (1024,)
    assert len(params) == 5 + 24 * 16 + 2


def test_full_configuration_counts_as_hugging_face_does():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = BertConfig.from_json_file(DEFAULT_CONFIG_FILE)
    with torch.device("meta"):
        model = transformers.BertModel(transformers.BertConfig(**config.to_dict()))
    assert sum(p.numel() for p in model.parameters()) == FULL_PARAMETER_COUNT


def test_static_mode_is_restored():
    assert paddle.in_dynamic_mode()
    with network.static_mode():
        assert not paddle.in_dynamic_mode()
    assert paddle.in_dynamic_mode()
    with pytest.raises(RuntimeError), network.static_mode():
        raise RuntimeError("boom")
    assert paddle.in_dynamic_mode()


def _run_static(config, arrays, feeds, num_slots=1):
    with network.static_mode():
        bert = network.build_program(config, max_seq_len=feeds["input_ids"].shape[1], num_slots=num_slots)
        scope = paddle.static.Scope()
        network.set_parameters(bert.program, arrays, scope=scope)
        program, outputs = network.inference_clone(bert.program, bert.outputs)
        all_feeds = {}
        for slot in range(1, num_slots + 1):
            suffix = "" if slot == 1 else f"_{slot}"
            all_feeds.update({name + suffix: value for name, value in feeds.items()})
        names = sorted(outputs)
        exe = paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(scope):
            values = exe.run(program, feed=all_feeds, fetch_list=[outputs[n] for n in names])
    return dict(zip(names, values))


@pytest.mark.parametrize("config_name", sorted(TINY_CONFIGS))
def test_matches_hugging_face_on_padded_pairs(config_name):
    torch = pytest.importorskip("torch")
    config = TINY_CONFIGS[config_name]
    model = hf_model(config)
    feeds = feeds_with_padding(config, lengths=[11, 7, 3, 11], seq_len=11)
    ours = _run_static(config, hf_arrays(model, config), feeds)
    with torch.inference_mode():
        ref = model(input_ids=torch.from_numpy(feeds["input_ids"]),
                    token_type_ids=torch.from_numpy(feeds["segment_ids"]),
                    attention_mask=torch.from_numpy(feeds["input_mask"]),
                    position_ids=torch.from_numpy(feeds["position_ids"]))
    seq_ref, pooled_ref = ref.last_hidden_state.numpy(), ref.pooler_output.numpy()
    for row, length in enumerate(feeds["input_mask"].sum(axis=1)):
        np.testing.assert_allclose(ours["sequence_output"][row, :length], seq_ref[row, :length], atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours["pooled_output"], pooled_ref, atol=1e-4, rtol=0)


def test_slots_share_parameters_and_agree():
    config = TINY_CONFIGS["tiny"]
    from conftest import random_arrays

    feeds = feeds_with_padding(config, lengths=[5, 8], seq_len=8)
    outputs = _run_static(config, random_arrays(config), feeds, num_slots=3)
    for suffix in ("_2", "_3"):
        np.testing.assert_array_equal(outputs["pooled_output" + suffix], outputs["pooled_output"])
    with network.static_mode():
        bert = network.build_program(config, max_seq_len=8, num_slots=3)
    assert len(_program_parameters(bert.program)) == len(legacy_parameter_shapes(config))


def test_dynamic_mode_gives_the_static_result():
    config = TINY_CONFIGS["odd"]
    from conftest import random_arrays

    arrays = random_arrays(config, seed=3)
    feeds = feeds_with_padding(config, lengths=[6, 2], seq_len=6, seed=3)
    static = _run_static(config, arrays, feeds)
    model = network.BertModel(config)
    model.eval()
    state = {name: paddle.to_tensor(arrays[param.name[len(HUB_PREFIX):]]) for name, param in model.named_parameters()}
    model.set_state_dict(state)
    seq, pooled = model(*(paddle.to_tensor(feeds[name]) for name in network.FEED_NAMES))
    np.testing.assert_allclose(pooled.numpy(), static["pooled_output"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(seq.numpy(), static["sequence_output"], atol=1e-5, rtol=0)


def test_training_program_has_dropout_and_inference_clone_does_not():
    config = TINY_CONFIGS["tiny"]
    from conftest import random_arrays

    feeds = feeds_with_padding(config, lengths=[8, 8], seq_len=8)
    with network.static_mode():
        bert = network.build_program(config, max_seq_len=8)
        scope = paddle.static.Scope()
        network.set_parameters(bert.program, random_arrays(config), scope=scope)
        test_program, test_outputs = network.inference_clone(bert.program, bert.outputs)
        exe = paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(scope):
            train_runs = [exe.run(bert.program, feed=feeds, fetch_list=[bert.outputs["pooled_output"]])[0]
                          for _ in range(2)]
            test_runs = [exe.run(test_program, feed=feeds, fetch_list=[test_outputs["pooled_output"]])[0]
                         for _ in range(2)]
    assert not np.array_equal(train_runs[0], train_runs[1])
    np.testing.assert_array_equal(test_runs[0], test_runs[1])


def test_set_parameters_reports_missing_and_misshaped_weights():
    config = TINY_CONFIGS["tiny"]
    from conftest import random_arrays

    arrays = random_arrays(config)
    with network.static_mode():
        bert = network.build_program(config, max_seq_len=4)
        scope = paddle.static.Scope()
        missing = dict(arrays)
        del missing["pooled_fc.b_0"]
        with pytest.raises(KeyError, match="pooled_fc.b_0"):
            network.set_parameters(bert.program, missing, scope=scope)
        misshaped = dict(arrays, sent_embedding=np.zeros((5, 32), np.float32))
        with pytest.raises(ValueError, match="sent_embedding"):
            network.set_parameters(bert.program, misshaped, scope=scope)


def test_dynamic_mode_builds_any_number_of_models_with_the_1x_names():
    config = TINY_CONFIGS["tiny"]
    first, second = network.BertModel(config), network.BertModel(config)
    names = [p.name for p in first.parameters()]
    assert names == [p.name for p in second.parameters()]
    assert set(names) == {HUB_PREFIX + name for name in legacy_parameter_shapes(config)}
    with network.static_mode():  # The static program still carries exactly the 1.x names.
        bert = network.build_program(config, max_seq_len=8)
    assert set(_program_parameters(bert.program)) == set(names)
