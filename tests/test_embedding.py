"""get_embedding's runner (:mod:`embedding`): the Paddle Inference path against the Executor path and
Hugging Face, input order, token counts, errors, devices, precision and the predictor's lifetime."""

import io
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import paddle
import pytest

from bert_cased_L_24_H_1024_A_16 import embedding, inference_model, network
from bert_cased_L_24_H_1024_A_16.device import gpu_available
from bert_cased_L_24_H_1024_A_16.embedding import Embedder
from bert_cased_L_24_H_1024_A_16.feeder import Feeder, normalize_samples
from bert_cased_L_24_H_1024_A_16.tokenizer import BertTokenizer

from conftest import PACKAGE_VOCAB, TINY_CONFIGS, hf_arrays, hf_model, install_weights, random_arrays

LONG = " ".join(f"word{i} and, more: text" for i in range(40))  # ~200 tokens: truncated by every max_seq_len here.
TEXTS = [
    ["Hello world."],
    ["The quick brown fox", "jumps over the lazy dog, twice!"],
    "A plain string is one text.",
    [LONG],
    ["Short", LONG],
    [LONG, "short second part"],
    ["Ünïcödé, CJK 中文 and émojis 🙂 are fine"],
    [""],
    ["A sentence of medium length, with some punctuation; and words."],
]


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(str(PACKAGE_VOCAB), do_lower_case=False)


@pytest.fixture(scope="module")
def embedders(tokenizer):
    """One embedder per tiny configuration (building predictors is the slow part: share them)."""
    made = {name: Embedder(config, tokenizer, random_arrays(config, seed=1), cache_dir=False)
            for name, config in TINY_CONFIGS.items()}
    yield made
    for embedder in made.values():
        embedder.close()


def _executor_features(config, arrays, feeds):
    """What ``context()`` users get: ``build_program`` + ``inference_clone`` run by the static Executor."""
    with network.static_mode():
        bert = network.build_program(config, max_seq_len=feeds["input_ids"].shape[1])
        scope = paddle.static.Scope()
        network.set_parameters(bert.program, arrays, scope=scope)
        program, outputs = network.inference_clone(bert.program, bert.outputs)
        exe = paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(scope):
            pooled, sequence = exe.run(program, feed=feeds,
                                       fetch_list=[outputs["pooled_output"], outputs["sequence_output"]])
        scope.erase(list(scope.local_var_names()))
    return pooled, sequence


def _token_count(tokenizer, sample, max_seq_len):
    """Tokens of a sample straight from the tokenizer: [CLS] a [SEP] (b [SEP]), longest part cut first."""
    parts = [tokenizer.tokenize(text) for text in ([sample] if isinstance(sample, str) else sample)]
    budget = max_seq_len - 1 - len(parts)
    lengths = [len(p) for p in parts]
    while sum(lengths) > budget:
        longest = max(range(len(lengths)), key=lambda i: (lengths[i], i))
        lengths[longest] -= 1
    return sum(lengths) + 1 + len(parts)


# -- parity ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("config_name, batch_size, max_seq_len", [
    ("tiny", 1, 24), ("tiny", 3, 24), ("tiny", 5, 40), ("odd", 7, 17), ("odd", 4, 40),
])
def test_features_equal_the_executor_path(embedders, tokenizer, config_name, batch_size, max_seq_len):
    config = TINY_CONFIGS[config_name]
    results = embedders[config_name].embed(TEXTS, batch_size=batch_size, max_seq_len=max_seq_len)
    feeds = Feeder(tokenizer, max_seq_len).feed(TEXTS)  # Input order, padded to the longest.
    pooled, sequence = _executor_features(config, random_arrays(config, seed=1), feeds)
    lengths = feeds["input_mask"].sum(axis=1)
    assert len(results) == len(TEXTS)
    assert max(lengths) == max_seq_len  # The long texts were truncated.
    for i, (pooled_feature, seq_feature) in enumerate(results):
        np.testing.assert_allclose(pooled_feature, pooled[i], atol=1e-4, rtol=0)
        np.testing.assert_allclose(seq_feature, sequence[i, :lengths[i]], atol=1e-4, rtol=0)


def test_whole_path_matches_hugging_face(tokenizer):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = TINY_CONFIGS["tiny"]
    model = hf_model(config, seed=2)
    embedder = Embedder(config, tokenizer, hf_arrays(model, config), cache_dir=False)
    hf_tokenizer = transformers.BertTokenizer(str(PACKAGE_VOCAB), do_lower_case=False)
    max_seq_len = 32
    results = embedder.embed(TEXTS, batch_size=4, max_seq_len=max_seq_len)
    for sample, (pooled_feature, seq_feature) in zip(TEXTS, results):
        parts = [sample] if isinstance(sample, str) else sample
        encoded = hf_tokenizer(*parts, truncation="longest_first", max_length=max_seq_len, return_tensors="pt")
        with torch.inference_mode():
            out = model(**encoded)
        assert seq_feature.shape == (encoded["input_ids"].shape[1], config.hidden_size)
        np.testing.assert_allclose(seq_feature, out.last_hidden_state[0].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(pooled_feature, out.pooler_output[0].numpy(), atol=1e-4, rtol=0)


# -- order, shapes, memory ------------------------------------------------------------------------

def test_input_order_and_token_counts_survive_length_sorting(embedders, tokenizer):
    rng = np.random.default_rng(7)
    words = rng.integers(0, 30, size=23)
    texts = [[" ".join(f"w{j}" for j in range(n))] if i % 3 else [f"pair {i}", "x " * int(n)]
             for i, n in enumerate(words)]
    embedder = embedders["tiny"]
    batched = embedder.embed(texts, batch_size=4, max_seq_len=24)
    for sample, (pooled_feature, seq_feature) in zip(texts, batched):
        n_tokens = _token_count(tokenizer, sample, 24)
        assert seq_feature.shape == (n_tokens, 32)
        assert pooled_feature.shape == (32,)
        assert seq_feature.dtype == pooled_feature.dtype == np.float32
        # Own their memory: a result never keeps a padded batch alive.
        assert seq_feature.base is None and pooled_feature.base is None
        assert seq_feature.flags.c_contiguous
    # One at a time (no sorting, no padding) gives the same features in the same order.
    for sample, (pooled_feature, seq_feature) in zip(texts, batched):
        [(alone_pooled, alone_seq)] = embedder.embed([sample], max_seq_len=24)
        np.testing.assert_allclose(seq_feature, alone_seq, atol=1e-5, rtol=0)
        np.testing.assert_allclose(pooled_feature, alone_pooled, atol=1e-5, rtol=0)


def test_large_batches_run_in_passes_of_bounded_rows(tokenizer):
    config = TINY_CONFIGS["tiny"]
    split = Embedder(config, tokenizer, random_arrays(config), cache_dir=False, rows_per_pass=20)
    assert list(split._passes([10, 9, 5, 3, 3], use_gpu=False)) == [(0, 2), (2, 5)]
    assert list(split._passes([30, 4], use_gpu=False)) == [(0, 1), (1, 2)]  # Too long alone: a pass of its own.
    whole = Embedder(config, tokenizer, random_arrays(config), cache_dir=False, rows_per_pass=0)
    assert list(whole._passes([10, 9, 5], use_gpu=False)) == [(0, 3)]
    default = Embedder(TINY_CONFIGS["odd"], tokenizer, {}, cache_dir=False)
    assert next(default._passes([40] * 1100, use_gpu=False)) == (0, (1 << 20) // 24 // 40)
    for (p, s), (wp, ws) in zip(split.embed(TEXTS, batch_size=9, max_seq_len=24),
                                whole.embed(TEXTS, batch_size=9, max_seq_len=24)):
        np.testing.assert_allclose(p, wp, atol=1e-5, rtol=0)
        np.testing.assert_allclose(s, ws, atol=1e-5, rtol=0)


def test_iter_embed_streams_in_input_order(embedders):
    embedder = embedders["tiny"]
    texts = [[f"text number {i} " + "pad " * (i % 9)] for i in range(11)]
    expected = embedder.embed(texts, batch_size=3, max_seq_len=20)
    stream = embedder.iter_embed((t for t in texts), batch_size=3, max_seq_len=20, chunk_size=4)
    got = list(stream)
    assert len(got) == len(expected)
    for (p, s), (ep, es) in zip(got, expected):
        np.testing.assert_allclose(p, ep, atol=1e-6, rtol=0)
        np.testing.assert_allclose(s, es, atol=1e-6, rtol=0)


def test_empty_input_gives_an_empty_list_without_building_anything(tokenizer):
    config = TINY_CONFIGS["tiny"]
    embedder = Embedder(config, tokenizer, lambda: pytest.fail("weights read for no texts"), cache_dir=False)
    assert embedder.embed([]) == []
    assert embedder.embed(()) == []
    assert list(embedder.iter_embed(iter([]))) == []
    assert embedder.predictor_builds == 0


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("texts", [
    "a bare string", None, 3, [["ok"], None], [["a", b"b"]], [["a"], []], [["a", "b", "c"]], [b"raw"],
])
def test_bad_texts_raise_the_feeders_errors(embedders, texts):
    with pytest.raises((TypeError, ValueError)) as expected:
        normalize_samples(texts)
    with pytest.raises(type(expected.value)) as got:
        embedders["tiny"].embed(texts)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("texts", ["a bare string", None, 3, {"a": 1}])
def test_iter_embed_rejects_what_the_feeder_rejects(embedders, texts):
    with pytest.raises(TypeError) as expected:
        normalize_samples(texts)
    with pytest.raises(TypeError) as got:
        embedders["tiny"].iter_embed(texts)
    assert str(got.value) == str(expected.value)


def test_a_bad_sample_deep_in_a_stream_is_named_by_its_index(embedders):
    texts = [["fine"]] * 5 + [["fine", 7]] + [["fine"]]
    with pytest.raises(TypeError, match=r"^texts\[5\]\[1\] must be a str, got int"):
        list(embedders["tiny"].iter_embed(iter(texts), chunk_size=2))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
    ({"batch_size": -2}, ValueError, "batch_size"),
    ({"batch_size": 2.0}, ValueError, "batch_size must be an int >= 1, got 2.0"),
    ({"batch_size": True}, ValueError, "batch_size"),
    ({"max_seq_len": 0}, ValueError, "max_seq_len must be an int from 1 to 512, got 0"),
    ({"max_seq_len": 513}, ValueError, "max_seq_len must be an int from 1 to 512, got 513"),
    ({"max_seq_len": "32"}, ValueError, "max_seq_len must be an int from 1 to 512, got '32'"),
    ({"max_seq_len": 1}, ValueError, "max_seq_len must be an int >= 2, got 1"),  # The feeder's bound.
    ({"precision": "fp16"}, ValueError, "precision must be one of ('fp32', 'bf16', 'int8'), got 'fp16'"),
    ({"use_gpu": "false"}, TypeError, "use_gpu must be True or False, got 'false'"),
    ({"show_progress": 1}, TypeError, "show_progress must be True, False or None, got 1"),
    ({"prepacked_weights": "yes"}, TypeError, "prepacked_weights must be True or False, got 'yes'"),
])
def test_bad_arguments_are_named(embedders, kwargs, error, message):
    with pytest.raises(error) as info:
        embedders["tiny"].embed([["text"]], **kwargs)
    assert message in str(info.value)


def test_pairs_need_room_for_three_special_tokens(embedders):
    with pytest.raises(ValueError, match=r"texts\[1\] is a text pair, which needs max_seq_len >= 3"):
        embedders["tiny"].embed([["a"], ["a", "b"]], max_seq_len=2)


# -- the predictor: reuse, devices, precision -----------------------------------------------------

def test_predictor_is_built_once_and_reused(tokenizer):
    config = TINY_CONFIGS["tiny"]
    embedder = Embedder(config, tokenizer, random_arrays(config), cache_dir=False)
    for batch_size, max_seq_len in [(1, 8), (4, 64), (2, 16), (3, 33)]:
        embedder.embed(TEXTS, batch_size=batch_size, max_seq_len=max_seq_len)
    # The default max_seq_len (512) means "the model's limit" for a model with fewer positions.
    assert embedder.embed([[LONG]])[0][1].shape == (config.max_position_embeddings, config.hidden_size)
    assert embedder.predictor_builds == 1
    assert paddle.in_dynamic_mode()
    assert not list(paddle.static.global_scope().local_var_names())  # Weights never went to the global scope.


def test_prepacked_weights_give_the_same_features_and_switching_rebuilds_the_predictor(embedders, tokenizer):
    config = TINY_CONFIGS["odd"]
    embedder = Embedder(config, tokenizer, random_arrays(config, seed=1), cache_dir=False)
    prepacked = embedder.embed(TEXTS, batch_size=4, max_seq_len=40, prepacked_weights=True)
    assert embedder._predictor_key[3] is True and embedder.predictor_builds == 1
    for (p, s), (ep, es) in zip(prepacked, embedders["odd"].embed(TEXTS, batch_size=4, max_seq_len=40)):
        np.testing.assert_allclose(p, ep, atol=1e-5, rtol=0)
        np.testing.assert_allclose(s, es, atol=1e-5, rtol=0)
    embedder.embed(TEXTS[:2], max_seq_len=40)
    assert embedder._predictor_key[3] is False and embedder.predictor_builds == 2


def test_prepacked_predictor_is_rebuilt_after_the_shape_limit(tokenizer, monkeypatch):
    """Per-shape oneDNN state is bounded: past the limit of distinct shapes, a fresh predictor."""
    monkeypatch.setattr(embedding, "_PREPACKED_SHAPE_LIMIT", 3)
    config = TINY_CONFIGS["tiny"]
    embedder = Embedder(config, tokenizer, random_arrays(config, seed=2), cache_dir=False)
    words = ["one", "one two", "one two three", "one two three four"]  # 3, 4, 5, 6 tokens: one shape each.
    reference = embedder.embed(words, max_seq_len=16)
    assert embedder.predictor_builds == 1
    results = []
    for _ in range(2):  # Shapes already run do not count again.
        results += embedder.embed(words[:3], max_seq_len=16, prepacked_weights=True)
    assert embedder.predictor_builds == 2 and len(embedder._shapes_run) == 3
    results += embedder.embed(words[3:], max_seq_len=16, prepacked_weights=True)
    assert embedder.predictor_builds == 3 and len(embedder._shapes_run) == 1
    for (pooled, sequence), (expected_pooled, expected_sequence) in zip(results, reference[:3] * 2 + reference[3:]):
        np.testing.assert_allclose(pooled, expected_pooled, atol=1e-5, rtol=0)
        np.testing.assert_allclose(sequence, expected_sequence, atol=1e-5, rtol=0)


def test_use_gpu_without_a_gpu_warns_once_and_runs_on_the_cpu(embedders):
    if gpu_available():
        pytest.skip("this machine has a GPU")
    embedder = embedders["odd"]
    expected = embedder.embed(TEXTS[:3], max_seq_len=16)
    builds = embedder.predictor_builds
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = embedder.embed(TEXTS[:3], max_seq_len=16, use_gpu=True)
        embedder.embed(TEXTS[:3], max_seq_len=16, use_gpu=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "running on the CPU" in messages[0] and "use_gpu=True" in messages[0]
    assert embedder.predictor_builds == builds  # The CPU predictor it already had.
    for (p, s), (ep, es) in zip(first, expected):
        np.testing.assert_array_equal(p, ep)
        np.testing.assert_array_equal(s, es)


def _cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def test_bf16_agrees_with_fp32_and_switching_rebuilds_the_predictor(tokenizer):
    if not embedding.cpu_supports_bf16():
        pytest.skip("this CPU has no avx512_bf16/amx_bf16")
    config = TINY_CONFIGS["tiny"]
    embedder = Embedder(config, tokenizer, random_arrays(config, seed=4), cache_dir=False)
    fp32 = embedder.embed(TEXTS, batch_size=3, max_seq_len=48)
    assert embedder.predictor_builds == 1
    bf16 = embedder.embed(TEXTS, batch_size=3, max_seq_len=48, precision="bf16")
    bf16_again = embedder.embed(TEXTS, batch_size=2, max_seq_len=48, precision="bfloat16")
    assert embedder.predictor_builds == 2
    embedder.embed(TEXTS[:1], precision="fp32")
    assert embedder.predictor_builds == 3
    for (p32, s32), (p16, s16), (p16b, _) in zip(fp32, bf16, bf16_again):
        assert s16.shape == s32.shape and s16.dtype == np.float32
        assert _cosine(p16, p32) >= 0.999
        assert _cosine(s16, s32) >= 0.999
        assert not np.array_equal(s16, s32)  # bf16 really ran.
        np.testing.assert_allclose(p16b, p16, atol=1e-2, rtol=0)


def test_bf16_on_a_cpu_without_it_is_a_clear_error(tokenizer, monkeypatch):
    monkeypatch.setattr(embedding, "cpu_supports_bf16", lambda: False)
    config = TINY_CONFIGS["tiny"]
    embedder = Embedder(config, tokenizer, random_arrays(config), cache_dir=False)
    with pytest.raises(RuntimeError, match="precision='bf16' needs a CPU with avx512_bf16 or amx_bf16"):
        embedder.embed([["text"]], precision="bf16")


def test_threads_follow_the_cpus_the_process_may_use(embedders, monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert embedding.available_cpus() == len(os.sched_getaffinity(0))
    embedder = embedders["tiny"]
    embedder.embed(TEXTS[:1])
    assert embedder._predictor_key == ("cpu", "fp32", embedding.available_cpus(), False)
    builds = embedder.predictor_builds
    monkeypatch.setattr(embedding, "available_cpus", lambda: 1)  # e.g. taskset after start.
    embedder.embed(TEXTS[:1])
    assert embedder._predictor_key == ("cpu", "fp32", 1, False) and embedder.predictor_builds == builds + 1


# -- weights folders and the export cache ---------------------------------------------------------

def test_weights_dir_export_is_cached_keyed_and_pruned(tokenizer, tmp_path, monkeypatch):
    config = TINY_CONFIGS["tiny"]
    arrays = random_arrays(config, seed=5)
    weights_dir = install_weights(arrays, config, tmp_path / "weights")
    cache = tmp_path / "cache"
    first = Embedder(config, tokenizer, weights_dir, cache_dir=str(cache))
    from_dir = first.embed(TEXTS, batch_size=2, max_seq_len=32)
    entries = os.listdir(cache)
    assert len(entries) == 1
    in_memory = Embedder(config, tokenizer, arrays, cache_dir=False).embed(TEXTS, batch_size=2, max_seq_len=32)
    for (p, s), (mp, ms) in zip(from_dir, in_memory):
        np.testing.assert_array_equal(p, mp)
        np.testing.assert_array_equal(s, ms)

    # A second embedder (a new process, say) loads the export without reading the weights again.
    monkeypatch.setattr(inference_model, "export_inference_model", lambda *a: pytest.fail("exported again"))
    again = Embedder(config, tokenizer, weights_dir, cache_dir=str(cache)).embed(TEXTS[:2], max_seq_len=32)
    np.testing.assert_array_equal(again[1][1], from_dir[1][1])
    monkeypatch.undo()

    # New weights in the same folder: a new export, and the stale one is removed.
    install_weights(random_arrays(config, seed=6), config, weights_dir)
    changed = Embedder(config, tokenizer, weights_dir, cache_dir=str(cache)).embed(TEXTS[:2], max_seq_len=32)
    assert not np.allclose(changed[1][1], from_dir[1][1])
    new_entries = os.listdir(cache)
    assert len(new_entries) == 1 and new_entries != entries


def test_cache_dir_defaults_under_hub_home(monkeypatch, tmp_path):
    monkeypatch.delenv(embedding.CACHE_ENV, raising=False)
    monkeypatch.setenv("HUB_HOME", str(tmp_path))
    assert embedding.default_cache_dir() == str(tmp_path / "cache" / "bert_cased_L_24_H_1024_A_16")
    monkeypatch.setenv(embedding.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert embedding.default_cache_dir() == str(tmp_path / "elsewhere")


# -- progress -------------------------------------------------------------------------------------

def test_progress_bar_is_switchable(embedders, monkeypatch):
    pytest.importorskip("tqdm")
    embedder = embedders["tiny"]
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    embedder.embed(TEXTS, batch_size=1, max_seq_len=16)  # Not a terminal: quiet.
    assert stream.getvalue() == ""
    embedder.embed(TEXTS, batch_size=1, max_seq_len=16, show_progress=False)
    assert stream.getvalue() == ""
    embedder.embed(TEXTS, batch_size=1, max_seq_len=16, show_progress=True)
    assert "embedding" in stream.getvalue() and f"{len(TEXTS)}/{len(TEXTS)}" in stream.getvalue()
    stream.truncate(0)
    stream.seek(0)
    monkeypatch.setattr(stream, "isatty", lambda: True, raising=False)
    embedder.embed(TEXTS, batch_size=1, max_seq_len=16)  # A terminal and many batches: a bar.
    assert f"{len(TEXTS)}/{len(TEXTS)}" in stream.getvalue()
    stream.truncate(0)
    stream.seek(0)
    embedder.embed(TEXTS[:2], batch_size=1, max_seq_len=16)  # A terminal, but two batches: quiet.
    assert stream.getvalue() == ""


# -- the benchmark's plumbing (its numbers are not tested) -----------------------------------------

def test_benchmark_runs_in_quick_mode(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "bench_embedding.py")
    out = subprocess.run([sys.executable, script, "--quick", "--num-texts", "16", "--json", str(tmp_path / "b.json")],
                         check=False, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    # ORT's BERT fusion fused every attention layer of the tiny model (2), with no warning.
    assert re.search(r"ORT BERT fusion .*\bAttention 2\b", text) and "WARNING" not in text, text
    rows = ["ours fp32", "ours fp32 prepacked", "ours int8", "torch fp32", "ORT fp32 fused", "ORT int8"]
    if embedding.cpu_supports_bf16():
        rows += ["ours bf16", "torch bf16 autocast", "torch bf16 weights"]
    with open(tmp_path / "b.json") as f:
        report = json.load(f)
    assert sorted(report["mixes"]) == ["medium", "short"]
    for mix in ("short", "medium"):
        assert f"== mix {mix}:" in text, text
        block = text.split(f"== mix {mix}:")[1].split("== mix")[0]
        for row in rows:
            assert re.search(rf"^\| {re.escape(row)} +\| +[0-9.]+ \|", block, re.M), (row, block)
        assert sorted(r["runner"] for r in report["mixes"][mix]["rows"]) == sorted(rows)
        goals = block.split(f"GOALS ({mix}):")[1]
        assert re.search(r"speed: ours fp32 / ORT fp32 fused +[0-9.]+x +goal >= 1.1: ", goals), goals
        assert re.search(r"speed: ours int8 / ORT int8 .*goal >= 1.0: ", goals), goals
        # Same weights, same tokens: fp32 features agree, and int8 stays close on random weights.
        assert re.search(r"ours fp32 vs torch fp32, token features max \|diff\| +\S+ +goal <= 0.0001: PASS", goals)
        assert re.search(r"ORT int8 vs ORT fp32, pooled cosine \(min\) +0\.99\d+ +goal >= 0.998: PASS", goals)
        assert re.search(r"ours int8 vs ours fp32, pooled cosine \(min\) +0\.99\d+ +goal >= 0.998: PASS", goals)
        if embedding.cpu_supports_bf16():
            assert re.search(r"speed: ours bf16 / best torch bf16 \(torch bf16 \w+\) +[0-9.]+x +goal >= 1.3: ", goals)
            assert re.search(r"ours bf16 vs ours fp32, pooled cosine \(min\) +0\.99\d+ +goal >= 0.999: PASS", goals)
        assert "random weights hide quantization error" in goals
