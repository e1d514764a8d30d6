"""Fine-tuning: the strategies' three ULMFiT mechanisms checked numerically, and the classifier task.

Numerical checks use plain SGD on a tiny network without dropout, where one step changes a
parameter by exactly ``lr_t * scale * grad``; gradients come from a separate gradient program
run on the same parameters and batch.
"""

import dataclasses
import logging
import math
import os
import time
import warnings

import numpy as np
import paddle
import pytest
from bert_cased_L_24_H_1024_A_16 import finetune, kernels
from bert_cased_L_24_H_1024_A_16.config import BertConfig
from bert_cased_L_24_H_1024_A_16.device import cpu_supports_bf16, gpu_available
from bert_cased_L_24_H_1024_A_16.finetune import (
    AdamWeightDecayStrategy,
    DefaultStrategy,
    RunConfig,
    TextClassifierTask,
    ULMFiTStrategy,
    read_labeled_file,
)
from bert_cased_L_24_H_1024_A_16.finetune import strategy as strategy_module
from bert_cased_L_24_H_1024_A_16.finetune import task as task_module
from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge
from bert_cased_L_24_H_1024_A_16.weights.names import HUB_PREFIX, layer_of, legacy_parameter_shapes
from conftest import install_weights

# Four layers, no dropout: every mechanism has several layers to tell apart, and runs repeat exactly.
MECH_CONFIG = BertConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
# The learning checks: BERT's own dropout.
LEARN_CONFIG = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          max_position_embeddings=64)
SEQ = 16


def bert_init(config, seed=0):
    """Random weights as BERT initialises them: truncated normal (std 0.02) matrices, unit layer-norm scales, zero biases."""
    rng = np.random.default_rng(seed)
    std = config.initializer_range
    arrays = {}
    for name, shape in legacy_parameter_shapes(config).items():
        if name.endswith("_scale"):
            arrays[name] = np.ones(shape, np.float32)
        elif len(shape) == 1:
            arrays[name] = np.zeros(shape, np.float32)
        else:
            arrays[name] = np.clip(rng.normal(0.0, std, shape), -2 * std, 2 * std).astype(np.float32)
    return arrays


@pytest.fixture(scope="module")
def mech_module(tmp_path_factory):
    dest = install_weights(bert_init(MECH_CONFIG, seed=3), MECH_CONFIG, tmp_path_factory.mktemp("mech") / "weights")
    return BertCasedLarge(weights_dir=dest)


@pytest.fixture(scope="module")
def learn_module(tmp_path_factory):
    dest = install_weights(bert_init(LEARN_CONFIG, seed=0), LEARN_CONFIG, tmp_path_factory.mktemp("learn") / "weights")
    return BertCasedLarge(weights_dir=dest)


# -- a classifier program built by hand, for the strategy checks ------------------------------

class Net:
    """``context()`` + a linear head + cross-entropy, with a fixed batch and a gradient program."""

    def __init__(self, module, batch=6, seed=0):
        _, outputs, program = module.context(max_seq_len=SEQ)
        self.program = program
        rng = np.random.default_rng(seed)
        with paddle.static.program_guard(program, paddle.static.Program()):
            label = paddle.static.data("label", [-1, 1], "int64")
            weight = paddle.static.create_parameter([module.config.hidden_size, 3], "float32", name="head.w_0")
            logits = paddle.matmul(outputs["pooled_output"], weight)
            self.loss = paddle.mean(paddle.nn.functional.cross_entropy(logits, label))
        self.set("head.w_0", rng.normal(0.0, 0.5, (module.config.hidden_size, 3)).astype(np.float32))
        lengths = rng.integers(4, SEQ + 1, batch)
        mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
        self.feed = {"input_ids": rng.integers(1000, 5000, (batch, SEQ)) * mask,
                     "position_ids": np.tile(np.arange(SEQ), (batch, 1)),
                     "segment_ids": np.zeros((batch, SEQ), np.int64), "input_mask": mask,
                     "label": rng.integers(0, 3, (batch, 1))}
        self.feed = {k: np.asarray(v, np.int64) for k, v in self.feed.items()}
        self.names = [p.name for p in program.global_block().all_parameters()]
        self.layers = {HUB_PREFIX + name: layer_of(name, module.config)
                       for name in legacy_parameter_shapes(module.config)}
        self.executor = paddle.static.Executor(paddle.CPUPlace())
        mapping = paddle.base.libpaddle.pir.IrMapping()
        self._grad_program = program.clone(mapping)
        with paddle.static.program_guard(self._grad_program, paddle.static.Program()):
            params = self._grad_program.global_block().all_parameters()
            self._grad_names = [p.name for p in params]
            self._grads = paddle.static.gradients([mapping.look_up(self.loss)], params)

    @staticmethod
    def set(name, array):
        paddle.static.global_scope().var(name).get_tensor().set(array, paddle.CPUPlace())

    def values(self):
        scope = paddle.static.global_scope()
        return {name: np.array(scope.find_var(name).get_tensor()) for name in self.names}

    def grads(self):
        results = self.executor.run(self._grad_program, feed=self.feed, fetch_list=self._grads)
        return dict(zip(self._grad_names, (np.asarray(r, np.float64) for r in results)))

    def step(self, strategy):
        """One training step; returns (values before, gradients at them, values after)."""
        before, grads = self.values(), self.grads()
        strategy.run(self.executor, self.feed, [self.loss])
        return before, grads, self.values()


def effective_rate(before, after, grad):
    """``lr`` such that ``before - after == lr * grad`` (least squares), or None for a zero gradient."""
    norm = float((grad * grad).sum())
    if norm < 1e-20:
        return None
    return float(((before.astype(np.float64) - after) * grad).sum() / norm)


@pytest.fixture
def static():
    paddle.enable_static()
    yield


# -- learning-rate schedules ------------------------------------------------------------------

def stlr(t, lr, total, cut_fraction, ratio):
    """SPEC section 6, written out independently."""
    cut = int(total * cut_fraction)
    p = t / cut if t <= cut else 1 - (t - cut) / (total - cut)
    return lr * (1 + p * (ratio - 1)) / ratio


def test_slanted_triangle_scheduler_follows_the_formula():
    scheduler = strategy_module.SlantedTriangularLR(0.01, num_train_steps=50, cut_fraction=0.2, ratio=32)
    assert scheduler.cut == 10
    for t in range(51):
        assert scheduler() == pytest.approx(stlr(t, 0.01, 50, 0.2, 32), rel=1e-12)
        scheduler.step()
    assert strategy_module.SlantedTriangularLR(0.01, 50, 0.2, 32).value(0) == pytest.approx(0.01 / 32)
    assert strategy_module.SlantedTriangularLR(0.01, 50, 0.2, 32).value(10) == pytest.approx(0.01)
    assert strategy_module.SlantedTriangularLR(0.01, 50, 0.2, 32).value(80) == pytest.approx(0.01 / 32)


def test_linear_warmup_decay_scheduler():
    scheduler = strategy_module.LinearWarmupDecayLR(1e-3, num_train_steps=100, warmup_steps=10)
    assert [scheduler.value(t) for t in (0, 5, 10, 55, 100, 120)] == pytest.approx(
        [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0])
    noam = strategy_module.NoamWarmupLR(1e-3, warmup_steps=10)
    assert noam.value(9) == pytest.approx(1e-3) and noam.value(0) < noam.value(9) and noam.value(99) < 1e-3


def test_learning_rate_applied_at_every_step_equals_the_formula(mech_module, static):
    """Plain SGD: the top layer's update over its gradient is the scheduled rate, step by step."""
    net = Net(mech_module)
    total, lr = 12, 0.5
    strategy = ULMFiTStrategy(learning_rate=lr, optimizer_name="sgd", cut_fraction=0.25, ratio=8,
                              dis_params_layer=net.layers, frz_blocks=0)
    strategy.minimize(net.loss, net.program, num_train_steps=total)
    top = HUB_PREFIX + "encoder_layer_3_ffn_fc_1.w_0"
    for t in range(total):
        assert strategy.learning_rate_at(t) == pytest.approx(stlr(t, lr, total, 0.25, 8))
        before, grads, after = net.step(strategy)
        for name in (top, "head.w_0"):
            assert effective_rate(before[name], after[name], grads[name]) == pytest.approx(
                stlr(t, lr, total, 0.25, 8), rel=2e-3), (t, name)
    assert strategy.global_step == total


# -- discriminative learning rates ------------------------------------------------------------

def test_layer_update_relative_to_top_is_factor_power(mech_module, static):
    net = Net(mech_module)
    factor, lr = 2.6, 0.5
    strategy = ULMFiTStrategy(learning_rate=lr, optimizer_name="sgd", cut_fraction=0, factor=factor,
                              dis_params_layer=net.layers, frz_blocks=0)
    strategy.minimize(net.loss, net.program)
    before, grads, after = net.step(strategy)
    top = MECH_CONFIG.num_hidden_layers - 1
    checked = set()
    for name in net.names:
        rate = effective_rate(before[name], after[name], grads[name])
        if rate is None:
            continue
        expected = lr * factor ** -(top - net.layers[name]) if name in net.layers else lr
        assert rate == pytest.approx(expected, rel=2e-3), name
        checked.add(net.layers.get(name, "outside"))
    assert checked == {0, 1, 2, 3, "outside"}  # every layer, and the head outside the map at the full rate
    assert strategy.lr_scale(HUB_PREFIX + "word_embedding") == pytest.approx(factor ** -3)


# -- gradual unfreezing -----------------------------------------------------------------------

@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_frozen_parameters_are_bit_identical_and_one_layer_thaws_per_step(mech_module, static, optimizer_name):
    net = Net(mech_module)
    strategy = ULMFiTStrategy(learning_rate=0.05, optimizer_name=optimizer_name, cut_fraction=0,
                              frz_params_layer=net.layers, dis_blocks=0)
    strategy.minimize(net.loss, net.program)
    top = MECH_CONFIG.num_hidden_layers - 1
    # Before the first step() only what is outside the map (the head) trains.
    assert strategy.trainable_parameters == {"head.w_0"}
    for epoch in range(top + 2):
        strategy.step()
        expected = {n for n in net.names if n not in net.layers or net.layers[n] >= top - epoch}
        assert strategy.trainable_parameters == expected
        before, _, after = net.step(strategy)
        for name in net.names:
            if name in expected:
                assert not np.array_equal(before[name], after[name]), (epoch, name)
            else:
                assert np.array_equal(before[name], after[name]), (epoch, name)  # bit-identical
        state = set(strategy.optimizer_state_names())
        assert not any(s.startswith(n + "_") for s in state for n in net.names if n not in expected)
    assert strategy.trainable_parameters == set(net.names)


def test_without_maps_blocks_group_parameters_by_depth(mech_module, static):
    net = Net(mech_module)
    strategy = ULMFiTStrategy(learning_rate=0.05, optimizer_name="sgd", cut_fraction=0)  # dis_blocks=frz_blocks=3
    strategy.minimize(net.loss, net.program)
    dis_layers, frz_layers = strategy.parameter_layers()
    assert dis_layers == frz_layers and set(dis_layers) == set(net.names)
    assert set(dis_layers.values()) == {0, 1, 2}
    assert dis_layers[HUB_PREFIX + "word_embedding"] == 0 and dis_layers["head.w_0"] == 2
    # Blocks follow the encoder's order: a lower encoder layer is never in a higher block.
    by_layer = {}
    for name, block in dis_layers.items():
        if name in net.layers:
            by_layer.setdefault(net.layers[name], set()).add(block)
    for low, high in zip(range(3), range(1, 4)):
        assert max(by_layer[low]) <= min(by_layer[high])
    assert strategy.lr_scale(HUB_PREFIX + "word_embedding") == pytest.approx(2.6 ** -2)
    with pytest.raises(RuntimeError, match="step"):
        strategy.run(net.executor, net.feed, [net.loss])  # the whole graph is in blocks: nothing trains yet
    strategy.step()
    assert strategy.trainable_parameters == {n for n, b in frz_layers.items() if b == 2}


# -- the strategy objects ---------------------------------------------------------------------

def test_ulmfit_accepts_both_historical_signatures():
    layers = {"a": 0, "b": 1}
    old = ULMFiTStrategy(params_layer=layers)
    assert old.dis_params_layer == layers and old.frz_params_layer == layers
    new = ULMFiTStrategy(dis_params_layer=layers)
    assert new.dis_params_layer == layers and new.frz_params_layer is None and new.frz_blocks == 3
    new = ULMFiTStrategy(1e-3, "SGD", 0.2, 16, 2, 2.0, 1, dis_params_layer=layers, frz_params_layer={"a": 0})
    assert (new.learning_rate, new.optimizer_name, new.cut_fraction, new.ratio, new.dis_blocks, new.factor,
            new.frz_blocks) == (1e-3, "sgd", 0.2, 16, 2, 2.0, 1)
    with pytest.raises(ValueError, match="not both"):
        ULMFiTStrategy(params_layer=layers, dis_params_layer=layers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ULMFiTStrategy(params_layer=layers)  # the default blocks are not "passed": no warning
    with pytest.warns(UserWarning, match="dis_blocks is ignored"):
        ULMFiTStrategy(params_layer=layers, dis_blocks=5)


@pytest.mark.parametrize("kwargs, error", [
    ({"learning_rate": 0}, "learning_rate"), ({"learning_rate": float("nan")}, "learning_rate"),
    ({"optimizer_name": "ftrl"}, "optimizer_name"), ({"optimizer_name": None}, "optimizer_name"),
    ({"cut_fraction": 1.5}, "cut_fraction"), ({"ratio": 0.5}, "ratio"), ({"dis_blocks": -1}, "dis_blocks"),
    ({"dis_blocks": 2.5}, "dis_blocks"), ({"frz_blocks": True}, "frz_blocks"), ({"factor": 0}, "factor"),
    ({"params_layer": {}}, "params_layer"), ({"params_layer": {"a": -1}}, "params_layer"),
    ({"frz_params_layer": {"a": "top"}}, "frz_params_layer"),
])
def test_ulmfit_rejects_invalid_values(kwargs, error):
    with pytest.raises(ValueError, match=error):
        ULMFiTStrategy(**kwargs)


def test_other_invalid_strategy_arguments():
    with pytest.raises(TypeError, match="params_layer"):
        ULMFiTStrategy(params_layer=[("a", 0)])
    with pytest.raises(ValueError, match="lr_scheduler"):
        AdamWeightDecayStrategy(lr_scheduler="cosine")
    with pytest.raises(ValueError, match="optimizer_name"):
        AdamWeightDecayStrategy(optimizer_name="sgd")
    with pytest.raises(ValueError, match="warmup_proportion"):
        AdamWeightDecayStrategy(warmup_proportion=2)


@pytest.mark.parametrize("optimizer_name", strategy_module.OPTIMIZER_NAMES)
def test_every_optimizer_trains(mech_module, static, optimizer_name):
    net = Net(mech_module)
    strategy = ULMFiTStrategy(learning_rate=0.01, optimizer_name=optimizer_name, params_layer=net.layers)
    strategy.minimize(net.loss, net.program, num_train_steps=4)
    strategy.step()
    losses = [float(strategy.run(net.executor, net.feed, [net.loss])[0]) for _ in range(3)]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]


def test_adam_weight_decay_is_decoupled_and_skips_biases_and_layer_norms(mech_module, static):
    net = Net(mech_module)
    start = net.values()
    after = {}
    for decay in (0.0, 0.5):
        for name, array in start.items():
            net.set(name, array)
        strategy = AdamWeightDecayStrategy(learning_rate=0.01, warmup_proportion=0.0, weight_decay=decay)
        strategy.minimize(net.loss, net.program, num_train_steps=10)
        strategy.step()
        _, _, after[decay] = net.step(strategy)
        strategy.close()
    for name, array in start.items():
        difference = after[0.0][name].astype(np.float64) - after[0.5][name]
        if array.ndim == 1:  # biases and layer-norm parameters: no decay at all
            assert np.array_equal(after[0.0][name], after[0.5][name]), name
        else:  # param -= weight_decay * lr * param, beside the Adam update
            np.testing.assert_allclose(difference, 0.5 * 0.01 * array, rtol=1e-3, atol=1e-8, err_msg=name)


def test_strategy_binds_once_and_leaves_the_program_alone(mech_module, static):
    net = Net(mech_module)
    ops = len(net.program.global_block().ops)
    strategy = DefaultStrategy(learning_rate=0.01, optimizer_name="sgd")
    strategy.minimize(net.loss, net.program)
    strategy.run(net.executor, net.feed, [net.loss])
    assert len(net.program.global_block().ops) == ops  # the training program is a clone
    with pytest.raises(RuntimeError, match="already bound"):
        strategy.minimize(net.loss, net.program)
    with pytest.raises(ValueError, match="num_train_steps"):
        ULMFiTStrategy().minimize(net.loss, net.program)


def test_register_with_paddlehub_replaces_the_placeholders():
    hub = pytest.importorskip("paddlehub")
    assert finetune.register_with_paddlehub() is True
    assert finetune.register_with_paddlehub() is True  # idempotent
    assert hub.finetune.strategy.ULMFiTStrategy is ULMFiTStrategy
    assert hub.finetune.strategy["ULMFiTStrategy"] is ULMFiTStrategy
    assert hub.finetune.strategy.AdamWeightDecayStrategy is AdamWeightDecayStrategy
    assert hub.finetune.strategy.DefaultStrategy is DefaultStrategy
    assert hub.AdamWeightDecayStrategy is AdamWeightDecayStrategy
    strategy = hub.finetune.strategy.ULMFiTStrategy(params_layer={"x": 0})
    assert isinstance(strategy, ULMFiTStrategy)


# -- the task: data ---------------------------------------------------------------------------

WORDS = "the a cat dog sat on mat house tree car road blue green small big red runs walks fast slow".split()
POSITIVE, NEGATIVE = "excellent wonderful great superb".split(), "terrible awful horrible bad".split()


def synthetic(count, seed):
    """Texts of filler words with one marker word; the label says whether the marker is positive."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        label = int(rng.integers(2))
        words = list(rng.choice(WORDS, int(rng.integers(3, 8))))
        words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(POSITIVE if label else NEGATIVE)))
        samples.append((" ".join(words), label))
    return samples


def test_read_labeled_file_tsv_and_csv(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text('label\ttext_a\ttext_b\npos\tGood "movie"\tyes\nneg\tBad, really\t\n\n', encoding="utf-8")
    assert read_labeled_file(tsv) == [(["Good \"movie\"", "yes"], "pos"), (["Bad, really"], "neg")]
    csv_file = tmp_path / "dev.csv"
    csv_file.write_text('text,label\n"Hello, world",1\nplain,0\n', encoding="utf-8")
    assert read_labeled_file(csv_file) == [(["Hello, world"], "1"), (["plain"], "0")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\ttext_a\npos\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_labeled_file(bad)
    with pytest.raises(ValueError, match="lacks"):
        read_labeled_file(tsv, label_column="class")


def test_task_rejects_bad_labels_and_reused_strategies(mech_module):
    task = TextClassifierTask(mech_module, label_list=["neg", "pos"], max_seq_len=SEQ,
                              config=RunConfig(num_epoch=1, batch_size=4))
    with pytest.raises(ValueError, match="not in label_list"):
        task.evaluate([("some text", "maybe")])
    plain = TextClassifierTask(mech_module, num_classes=2, max_seq_len=SEQ)
    metrics = plain.evaluate([("text a", "text b", 1), (["a", "pair"], "0"), ("single", np.int64(1))])
    assert metrics["num_examples"] == 3 and 0 <= metrics["accuracy"] <= 1
    with pytest.raises(ValueError, match=r"class index in \[0, 2\)"):
        plain.evaluate([("some text", 2)])
    strategy = DefaultStrategy(optimizer_name="sgd")
    first = TextClassifierTask(mech_module, num_classes=2, max_seq_len=SEQ, strategy=strategy)
    first.finetune([("a text", 0), ("another", 1)])
    with pytest.raises(ValueError, match="new strategy"):
        TextClassifierTask(mech_module, num_classes=2, max_seq_len=SEQ, strategy=strategy)
    with pytest.raises(TypeError, match="placeholder"):
        TextClassifierTask(mech_module, num_classes=2, strategy=0)


def test_use_gpu_falls_back_to_cpu_with_one_warning(mech_module, monkeypatch):
    if gpu_available():
        pytest.skip("a GPU is available")
    monkeypatch.setattr(task_module, "_gpu_fallback_warned", False)
    with pytest.warns(RuntimeWarning, match="running on CPU"):
        task = TextClassifierTask(mech_module, num_classes=2, max_seq_len=SEQ, config=RunConfig(use_gpu=True))
    assert isinstance(task.place, paddle.CPUPlace)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TextClassifierTask(mech_module, num_classes=2, max_seq_len=SEQ, config=RunConfig(use_cuda=True))


# -- the task learns --------------------------------------------------------------------------

def test_task_learns_with_ulmfit_from_a_tsv_file(learn_module, tmp_path, caplog):
    train_file = tmp_path / "train.tsv"
    rows = ["text_a\tlabel"] + [f"{text}\t{'pos' if label else 'neg'}" for text, label in synthetic(320, 11)]
    train_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    dev = [(text, "pos" if label else "neg") for text, label in synthetic(200, 21)]
    started = time.time()
    strategy = ULMFiTStrategy(learning_rate=5e-3, params_layer=learn_module.get_params_layer())
    task = TextClassifierTask(learn_module, label_list=["neg", "pos"], max_seq_len=SEQ,
                              config=RunConfig(num_epoch=8, batch_size=16, strategy=strategy, seed=1))
    with caplog.at_level(logging.INFO, logger=task_module.__name__):
        history = task.finetune_and_eval(str(train_file), dev)
    elapsed = time.time() - started
    assert elapsed < 120
    assert len(history) == 8 and history[-1]["dev_accuracy"] >= 0.95, history
    assert sum("epoch 8/8" in r.getMessage() for r in caplog.records) == 1  # per-epoch metrics are logged
    assert task.evaluate(dev)["accuracy"] == pytest.approx(history[-1]["dev_accuracy"])
    # Gradual unfreezing ran: one layer per epoch until the whole map trained.
    assert strategy.trainable_parameters >= set(learn_module.get_params_layer())
    predictions = task.predict([text for text, _ in dev], batch_size=7)
    accuracy = np.mean([predicted == label for (predicted, _), (_, label) in zip(predictions, dev)])
    assert accuracy == pytest.approx(history[-1]["dev_accuracy"])
    texts = [text for text, _ in dev[:5]] + [["the cat", "excellent"]]
    predictions = task.predict(texts, batch_size=3)
    for (label, probs), text in zip(predictions, texts):
        assert len(probs) == 2 and sum(probs) == pytest.approx(1.0) and label == ["neg", "pos"][int(np.argmax(probs))]
        assert task.predict([text])[0][1] == pytest.approx(probs, abs=1e-6)  # order and batching do not matter


def test_task_learns_with_the_default_strategy(learn_module):
    train, dev = synthetic(320, 12), synthetic(200, 22)
    started = time.time()
    task = TextClassifierTask(learn_module, num_classes=2, max_seq_len=SEQ,
                              config=RunConfig(num_epoch=8, batch_size=16, seed=2,
                                               strategy=AdamWeightDecayStrategy(learning_rate=2e-3)))
    history = task.finetune_and_eval(train, dev)
    assert time.time() - started < 120
    assert history[-1]["dev_accuracy"] >= 0.95, history
    assert isinstance(task.strategy, AdamWeightDecayStrategy)
    assert isinstance(TextClassifierTask(learn_module, num_classes=2, max_seq_len=SEQ).strategy,
                      AdamWeightDecayStrategy)  # the default when none is given


@pytest.fixture(scope="module")
def still_module(tmp_path_factory):
    """LEARN_CONFIG without dropout: a run depends on its seed and its arithmetic alone."""
    config = dataclasses.replace(LEARN_CONFIG, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    dest = install_weights(bert_init(config, seed=0), config, tmp_path_factory.mktemp("still") / "weights")
    return BertCasedLarge(weights_dir=dest)


def test_bf16_training_follows_the_fp32_loss_curve(still_module):
    """Mixed precision trains like fp32: its per-epoch losses stay closer to fp32's than another seed's do."""
    if not (cpu_supports_bf16() and kernels.available()):
        pytest.skip("bf16 training needs avx512_bf16/amx_bf16 and the bert_linear kernel")
    train, dev = synthetic(320, 12), synthetic(200, 22)

    def run(precision, seed):
        task = TextClassifierTask(still_module, num_classes=2, max_seq_len=SEQ, dropout=0.0,
                                  config=RunConfig(num_epoch=4, batch_size=16, seed=seed, precision=precision,
                                                   strategy=AdamWeightDecayStrategy(learning_rate=2e-3)))
        flags = {op.attrs()["bf16"] for op in task.program.global_block().ops if op.name().endswith("bert_linear")}
        assert flags == {precision == "bf16"}
        history = task.finetune_and_eval(train, dev)
        return np.array([epoch["train_loss"] for epoch in history]), history[-1]["dev_accuracy"]

    fp32, _ = run("fp32", 2)
    assert np.array_equal(run("fp32", 2)[0], fp32)  # without dropout, a run repeats exactly
    bf16, bf16_accuracy = run("bf16", 2)
    noise = max(np.abs(run("fp32", seed)[0] - fp32).max() for seed in (3, 4))
    assert 0 < np.abs(bf16 - fp32).max() <= noise, (fp32, bf16, noise)
    assert bf16[-1] < 0.5 * bf16[0] and bf16_accuracy >= 0.95, (bf16, bf16_accuracy)


# -- checkpoints ------------------------------------------------------------------------------

class Interrupted(Exception):
    pass


@pytest.mark.parametrize("where", ["epoch end", "mid epoch"])
def test_resumed_run_continues_from_its_checkpoint(mech_module, tmp_path, monkeypatch, where):
    """Stop a run at a checkpoint, resume it in a new task: it ends exactly where an uninterrupted run ends."""
    train, dev = synthetic(40, 5), synthetic(12, 6)

    def run(checkpoint_dir=None, interrupt_at=None):
        strategy = ULMFiTStrategy(learning_rate=5e-3, params_layer=mech_module.get_params_layer())
        config = RunConfig(num_epoch=3, batch_size=8, strategy=strategy, checkpoint_dir=checkpoint_dir,
                           save_ckpt_interval=3 if where == "mid epoch" else None, max_checkpoints=2)
        task = TextClassifierTask(mech_module, num_classes=2, max_seq_len=SEQ, dropout=0.0, config=config)
        if interrupt_at is not None:
            save = task.save_checkpoint

            def save_then_stop(epoch, step_in_epoch):
                path = save(epoch, step_in_epoch)
                if (epoch, step_in_epoch) == interrupt_at:
                    raise Interrupted(path)
                return path
            monkeypatch.setattr(task, "save_checkpoint", save_then_stop)
        history = task.finetune_and_eval(train, dev)
        values = {task._stable(name): np.array(paddle.static.global_scope().find_var(name).get_tensor())
                  for name in task._parameters()}
        return task, history, values

    _, full_history, full_values = run()
    interrupt_at = (1, 0) if where == "epoch end" else (1, 1)  # after epoch 1, or 1 step into epoch 2 (step 6)
    with pytest.raises(Interrupted):
        run(tmp_path / "ckpt", interrupt_at)
    assert (tmp_path / "ckpt" / "latest").read_text().strip() == ("step_5" if where == "epoch end" else "step_6")
    task, history, values = run(tmp_path / "ckpt")
    assert task.strategy.global_step == 15 and task.strategy.epoch == 2
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for resumed, full in zip(history, full_history):
        assert resumed["learning_rate"] == pytest.approx(full["learning_rate"], rel=1e-12)
        assert resumed["dev_loss"] == pytest.approx(full["dev_loss"], rel=1e-5)
        if where == "epoch end" or resumed["epoch"] != 2:
            assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-5)
    assert set(values) == set(full_values)
    for name, array in full_values.items():
        np.testing.assert_allclose(values[name], array, rtol=1e-5, atol=1e-7, err_msg=name)
    kept = ["step_10", "step_15"] if where == "epoch end" else ["step_12", "step_15"]
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["best_model", "latest"] + kept  # max_checkpoints=2
    # A finished run resumes to nothing left to do.
    task, history, _ = run(tmp_path / "ckpt")
    assert task.strategy.global_step == 15 and len(history) == 3


def test_the_best_dev_epoch_is_kept_and_restores_its_parameters(mech_module, tmp_path, monkeypatch):
    """The best model holds the parameters of the epoch with the highest dev accuracy (the earlier on a tie),
    not the last epoch's, and a new task reloads exactly those."""
    train, dev = synthetic(40, 5), synthetic(24, 6)
    strategy = ULMFiTStrategy(learning_rate=5e-3, params_layer=mech_module.get_params_layer())
    config = RunConfig(num_epoch=4, batch_size=8, strategy=strategy, checkpoint_dir=tmp_path / "ckpt")
    task = TextClassifierTask(mech_module, num_classes=2, max_seq_len=SEQ, dropout=0.0, config=config)
    scripted = iter([0.6, 0.9, 0.7, 0.9])  # Dev accuracies per epoch: epoch 2 is the best.
    monkeypatch.setattr(task, "_evaluate_encoded",
                        lambda encodings, labels: {"loss": 1.0, "accuracy": next(scripted), "num_examples": 24})
    after_epoch, save = [], task.save_checkpoint

    def save_and_record(epoch, step_in_epoch):
        after_epoch.append(_parameter_values(task))
        return save(epoch, step_in_epoch)
    monkeypatch.setattr(task, "save_checkpoint", save_and_record)
    task.finetune_and_eval(train, dev)
    assert task.best_model_dir == str(tmp_path / "ckpt" / "best_model")
    assert not _same_values(after_epoch[1], after_epoch[3])  # Training went on after the best epoch.

    fresh = TextClassifierTask(mech_module, num_classes=2, max_seq_len=SEQ, dropout=0.0,
                               config=RunConfig(batch_size=8, checkpoint_dir=tmp_path / "ckpt", seed=9))
    assert not _same_values(_parameter_values(fresh), after_epoch[1])
    record = fresh.load_best_model()
    assert record["epoch"] == 2 and record["dev_accuracy"] == 0.9
    assert _same_values(_parameter_values(fresh), after_epoch[1])
    with pytest.raises(ValueError, match="holds parameters only"):
        fresh.load_checkpoint(fresh.best_model_dir)
    with pytest.raises(ValueError, match="is a training checkpoint"):
        fresh.load_best_model(task.latest_checkpoint())

    no_best = RunConfig(num_epoch=1, batch_size=8, checkpoint_dir=tmp_path / "plain", save_best_model=False,
                        strategy=ULMFiTStrategy(learning_rate=5e-3, params_layer=mech_module.get_params_layer()))
    plain = TextClassifierTask(mech_module, num_classes=2, max_seq_len=SEQ, dropout=0.0, config=no_best)
    plain.finetune_and_eval(train, dev)
    assert plain.best_model_dir is None and sorted(os.listdir(tmp_path / "plain")) == ["latest", "step_5"]
    with pytest.raises(FileNotFoundError, match="no best model"):
        plain.load_best_model()


def _parameter_values(task):
    """``{stable name: array}`` of a task's parameters (the head's name without the task's prefix)."""
    scope = paddle.static.global_scope()
    return {task._stable(name): np.array(scope.find_var(name).get_tensor()) for name in task._parameters()}


def _same_values(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)
