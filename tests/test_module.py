"""The hub class: context(), get_params_layer() and the weights it finds, through each format."""

import numpy as np
import paddle
import pytest

from bert_cased_L_24_H_1024_A_16 import weights
from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge
from bert_cased_L_24_H_1024_A_16.network import inference_clone
from bert_cased_L_24_H_1024_A_16.weights import legacy
from bert_cased_L_24_H_1024_A_16.weights.names import HUB_PREFIX, legacy_parameter_shapes, paddlenlp_names

from conftest import PACKAGE_VOCAB, TINY_CONFIGS, feeds_with_padding, hf_arrays, hf_model, random_arrays

WEIGHTS_ENV = "BERT_CASED_L_24_H_1024_A_16_WEIGHTS"


def _run_context(module, feeds):
    """Runs ``context()``'s program in test mode on ``feeds``; returns (sequence_output, pooled_output)."""
    inputs, outputs, program = module.context(trainable=False, max_seq_len=feeds["input_ids"].shape[1])
    assert set(inputs) == set(feeds)
    test_program, test_outputs = inference_clone(program, outputs)
    exe = paddle.static.Executor(paddle.CPUPlace())
    return exe.run(test_program, feed=feeds,
                   fetch_list=[test_outputs["sequence_output"], test_outputs["pooled_output"]])


# -- weights arriving in each format, checked against Hugging Face -----------------------------

def _hugging_face_folder(model, folder):
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "vocab.txt").write_bytes(PACKAGE_VOCAB.read_bytes())
    return folder


def _paddlenlp_file(model, config, path):
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    from bert_cased_L_24_H_1024_A_16.weights.names import huggingface_names

    hf = huggingface_names(config)
    pdparams = {}
    for name, (nlp_name, _) in paddlenlp_names(config).items():
        hf_name, hf_transposed = hf[name]
        pdparams["bert." + nlp_name] = paddle.to_tensor(state[hf_name].T if hf_transposed else state[hf_name])
    paddle.save(pdparams, str(path))
    return path


def _legacy_assets(model, config, folder):
    legacy.write_params_dir(str(folder / "params"), hf_arrays(model, config))
    config.to_json_file(str(folder / "bert_config.json"))
    (folder / "vocab.txt").write_bytes(PACKAGE_VOCAB.read_bytes())
    return folder


@pytest.mark.parametrize("source_format", ["huggingface", "paddlenlp", "legacy"])
@pytest.mark.parametrize("config_name", sorted(TINY_CONFIGS))
def test_context_matches_hugging_face_for_every_weight_format(tmp_path, source_format, config_name):
    torch = pytest.importorskip("torch")
    config = TINY_CONFIGS[config_name]
    model = hf_model(config, seed=7)
    source = tmp_path / "source"
    source.mkdir()
    if source_format == "huggingface":
        checkpoint = _hugging_face_folder(model, source)
    elif source_format == "paddlenlp":
        checkpoint = _paddlenlp_file(model, config, source / "bert.pdparams")
    else:
        checkpoint = _legacy_assets(model, config, source)
    installed = weights.convert(str(checkpoint), dest_dir=str(tmp_path / "installed"), config=config)

    feeds = feeds_with_padding(config, lengths=[9, 4, 1], seq_len=9, seed=1)
    seq, pooled = _run_context(BertCasedLarge(weights_dir=installed), feeds)
    with torch.inference_mode():
        ref = model(input_ids=torch.from_numpy(feeds["input_ids"]),
                    token_type_ids=torch.from_numpy(feeds["segment_ids"]),
                    attention_mask=torch.from_numpy(feeds["input_mask"]))
    for row, length in enumerate(feeds["input_mask"].sum(axis=1)):
        np.testing.assert_allclose(seq[row, :length], ref.last_hidden_state.numpy()[row, :length], atol=1e-4, rtol=0)
    np.testing.assert_allclose(pooled, ref.pooler_output.numpy(), atol=1e-4, rtol=0)


# -- context() -------------------------------------------------------------------------------

def test_context_returns_the_documented_feeds_and_outputs(tiny_weights_dir):
    inputs, outputs, program = BertCasedLarge().context(max_seq_len=16)
    assert not paddle.in_dynamic_mode()  # documented: the static program needs static mode
    assert sorted(inputs) == ["input_ids", "input_mask", "position_ids", "segment_ids"]
    for value in inputs.values():
        assert list(value.shape) == [-1, 16]
        assert value.dtype == paddle.int64
    assert sorted(outputs) == ["pooled_output", "sequence_output"]
    assert list(outputs["pooled_output"].shape) == [-1, 32]
    assert list(outputs["sequence_output"].shape) == [-1, 16, 32]
    assert outputs["pooled_output"].dtype == paddle.float32
    assert isinstance(program, paddle.static.Program)


def test_context_runs_right_after_the_call_with_the_installed_weights(tiny_weights_dir):
    config = TINY_CONFIGS["tiny"]
    feeds = feeds_with_padding(config, lengths=[6, 3], seq_len=6)
    inputs, outputs, program = BertCasedLarge().context(max_seq_len=6)
    exe = paddle.static.Executor(paddle.CPUPlace())
    pooled = exe.run(program, feed=feeds, fetch_list=[outputs["pooled_output"]])[0]
    assert pooled.shape == (2, 32) and np.isfinite(pooled).all()
    scope = paddle.static.global_scope()
    stored = np.array(scope.find_var(HUB_PREFIX + "pooled_fc.w_0").get_tensor())
    np.testing.assert_array_equal(stored, random_arrays(config)["pooled_fc.w_0"])


def test_num_slots_add_suffixed_feeds_and_outputs(tiny_weights_dir):
    inputs, outputs, _ = BertCasedLarge().context(max_seq_len=8, num_slots=3)
    assert {"input_ids_2", "input_mask_3", "segment_ids_2", "position_ids_3"} <= set(inputs)
    assert {"pooled_output_2", "sequence_output_3"} <= set(outputs)
    assert len(inputs) == 12 and len(outputs) == 6


@pytest.mark.parametrize("trainable", [True, False])
def test_trainable_sets_whether_parameters_train(tiny_weights_dir, trainable):
    _, _, program = BertCasedLarge().context(trainable=trainable, max_seq_len=4)
    params = program.global_block().all_parameters()
    assert params and all(p.trainable == trainable for p in params)


def test_a_second_call_leaves_the_first_program_alone(tiny_weights_dir):
    config = TINY_CONFIGS["tiny"]
    module = BertCasedLarge()
    _, first_outputs, first = module.context(max_seq_len=6)
    ops_before = len(first.global_block().ops)
    second_inputs, _, second = module.context(max_seq_len=8)
    assert first is not second
    assert len(first.global_block().ops) == ops_before
    assert list(second_inputs["input_ids"].shape) == [-1, 8]
    test_program, outputs = inference_clone(first, first_outputs)
    feeds = feeds_with_padding(config, lengths=[6], seq_len=6)
    pooled = paddle.static.Executor(paddle.CPUPlace()).run(test_program, feed=feeds,
                                                          fetch_list=[outputs["pooled_output"]])[0]
    assert pooled.shape == (1, 32)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_seq_len": 0}, "max_seq_len"), ({"max_seq_len": 513}, "513"), ({"max_seq_len": 12.0}, "12.0"),
    ({"max_seq_len": True}, "True"), ({"num_slots": 4}, "num_slots"), ({"num_slots": 0}, "num_slots"),
])
def test_context_rejects_bad_arguments(tiny_weights_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        BertCasedLarge().context(**kwargs)


def test_context_without_weights_says_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HUB_HOME", str(tmp_path))
    with pytest.raises(weights.MissingWeightsError, match="download"):
        BertCasedLarge().context()
    assert paddle.in_dynamic_mode()


# -- get_params_layer() ------------------------------------------------------------------------

def test_params_layer_covers_every_program_parameter(tiny_weights_dir):
    module = BertCasedLarge()
    params_layer = module.get_params_layer()  # before any context() call
    _, _, program = module.context(max_seq_len=4)
    assert set(params_layer) == {p.name for p in program.global_block().all_parameters()}
    assert params_layer[HUB_PREFIX + "encoder_layer_1_ffn_fc_0.w_0"] == 1
    assert params_layer[HUB_PREFIX + "encoder_layer_0_multi_head_att_key_fc.b_0"] == 0
    assert params_layer[HUB_PREFIX + "word_embedding"] == 0
    assert params_layer[HUB_PREFIX + "pre_encoder_layer_norm_scale"] == 0
    assert params_layer[HUB_PREFIX + "pooled_fc.w_0"] == 1


def test_params_layer_of_the_full_model_needs_no_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HUB_HOME", str(tmp_path))
    params_layer = BertCasedLarge().get_params_layer()
    assert len(params_layer) == 5 + 24 * 16 + 2
    assert sorted(set(params_layer.values())) == list(range(24))
    assert params_layer[HUB_PREFIX + "encoder_layer_17_post_ffn_layer_norm_bias"] == 17
    assert params_layer[HUB_PREFIX + "pooled_fc.b_0"] == 23
    assert all(key.startswith(HUB_PREFIX) for key in params_layer)
    assert {key[len(HUB_PREFIX):] for key in params_layer} == set(legacy_parameter_shapes(BertCasedLarge().config))
