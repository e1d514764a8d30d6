"""ULMFiT in the dynamic route (tasks/ulmfit.py), checked numerically as tests/test_finetune.py checks
the static strategy: the rate applied at every step, the per-layer rate ratios, and parameters that
stay bit-identical while frozen, through ``hub.Trainer`` as shipped."""

import numpy as np
import paddle
import pytest

from bert_cased_L_24_H_1024_A_16.finetune import AdamW
from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge

from conftest import TINY_CONFIGS

hub = pytest.importorskip("paddlehub")

from bert_cased_L_24_H_1024_A_16.tasks.datasets import TextClassificationFiles  # noqa: E402
from bert_cased_L_24_H_1024_A_16.tasks.ulmfit import ulmfit_optimizer  # noqa: E402

TOP = TINY_CONFIGS["tiny"].num_hidden_layers  # The head's layer: one above the top encoder layer.


def stlr(t, lr, total, cut_fraction, ratio):
    """SPEC section 6, written out independently of the code under test."""
    cut = int(total * cut_fraction)
    p = t / cut if t <= cut else 1 - (t - cut) / (total - cut)
    return lr * (1 + p * (ratio - 1)) / ratio


def effective_rate(before, after, grad):
    """The SGD rate that turned ``before`` into ``after`` given ``grad`` (median over clear entries); None for
    a gradient that is only rounding noise (attention key biases: softmax ignores a shift per query)."""
    clear = np.abs(grad) > max(1e-3 * np.abs(grad).max(), 1e-6)
    return float(np.median((before - after)[clear] / grad[clear])) if clear.any() else None


@pytest.fixture
def model(tiny_weights_dir):
    return BertCasedLarge(task="seq-cls")


@pytest.fixture
def dataset(model, tmp_path):
    rows = ["1\tgood nice", "0\tbad poor", "1\tgreat fine", "0\tawful bad"] * 2
    (tmp_path / "train.tsv").write_text("".join(r + "\n" for r in rows))
    return TextClassificationFiles(base_path=str(tmp_path), tokenizer=model.get_tokenizer(), max_seq_len=8,
                                   data_file="train.tsv", label_list=["0", "1"])


def _batch(dataset, indices):
    return [paddle.to_tensor(np.stack(column)) for column in zip(*(dataset[i] for i in indices))]


def _values(model):
    return {p.name: p.numpy().copy() for p in model.parameters()}


def test_params_layer_covers_every_parameter_of_the_task_model(model):
    layers = model.get_params_layer()
    assert set(layers) == {p.name for p in model.parameters()}
    assert {layers[p.name] for p in model.classifier.parameters()} == {TOP}
    assert set(layers.values()) == set(range(TOP + 1))


def test_every_step_applies_the_slanted_rate_times_factor_per_layer(model, dataset):
    """hub.Trainer's per-batch sequence (training_step, backward, step, scheduler step, clear) with plain SGD."""
    total, lr, factor = 6, 0.5, 2.6
    optimizer = ulmfit_optimizer(model, num_train_steps=total, steps_per_epoch=total, learning_rate=lr,
                                 optimizer_class=paddle.optimizer.SGD, cut_fraction=0.34, ratio=8, factor=factor,
                                 unfreeze=False)
    layers = model.get_params_layer()
    for t in range(total):
        before = _values(model)
        model.training_step(_batch(dataset, [t % 8, (t + 3) % 8]), t)["loss"].backward()
        grads = {p.name: p.grad.numpy().copy() for p in model.parameters() if p.grad is not None}
        optimizer.step()
        optimizer._learning_rate.step()
        model.clear_gradients()
        after = _values(model)
        checked = set()
        for name, grad in grads.items():
            rate = effective_rate(before[name], after[name], grad)
            if rate is not None:
                expected = stlr(t, lr, total, 0.34, 8) * factor ** -(TOP - layers[name])
                assert rate == pytest.approx(expected, rel=2e-3), (t, name)
                checked.add(layers[name])
        assert checked == set(range(TOP + 1)), t


@pytest.mark.parametrize("optimizer_class", [paddle.optimizer.SGD, paddle.optimizer.AdamW, AdamW])
def test_trainer_unfreezes_one_layer_per_epoch_and_frozen_ones_stay_bit_identical(model, dataset, tmp_path,
                                                                                 optimizer_class):
    steps_per_epoch, epochs = 2, TOP + 1  # 8 samples in batches of 4
    optimizer = ulmfit_optimizer(model, num_train_steps=steps_per_epoch * epochs, steps_per_epoch=steps_per_epoch,
                                 learning_rate=0.05, optimizer_class=optimizer_class)
    trainer = hub.Trainer(model, optimizer, checkpoint_dir=str(tmp_path / "ckpt"), use_vdl=False)
    layers = model.get_params_layer()
    for epoch in range(epochs):
        before = _values(model)
        trainer.train(dataset, epochs=1, batch_size=4, save_interval=epochs + 1)
        after = _values(model)
        for name, layer in layers.items():
            if layer >= TOP - epoch:
                if "key_fc.b_0" not in name:  # Zero gradient in exact arithmetic (see effective_rate).
                    assert not np.array_equal(before[name], after[name]), (epoch, name)
            else:
                assert np.array_equal(before[name], after[name]), (epoch, name)


def test_resuming_restores_the_epochs_frozen_set(model, tmp_path):
    optimizer = ulmfit_optimizer(model, num_train_steps=6, steps_per_epoch=2, optimizer_class=paddle.optimizer.SGD)
    for _ in range(2):  # Into epoch 1: layers >= TOP - 1 train.
        optimizer._learning_rate.step()
    state = optimizer.state_dict()
    fresh = BertCasedLarge(task="seq-cls")
    resumed = ulmfit_optimizer(fresh, num_train_steps=6, steps_per_epoch=2, optimizer_class=paddle.optimizer.SGD)
    assert sum(not p.stop_gradient for p in fresh.parameters()) < sum(not p.stop_gradient for p in model.parameters())
    resumed.set_state_dict(state)
    assert [p.stop_gradient for p in fresh.parameters()] == [p.stop_gradient for p in model.parameters()]
    assert {layer for name, layer in model.get_params_layer().items()
            if not dict((p.name, p) for p in model.parameters())[name].stop_gradient} == {TOP - 1, TOP}


def test_a_params_layer_naming_unknown_parameters_is_refused(model):
    with pytest.raises(ValueError, match="not-a-parameter"):
        ulmfit_optimizer(model, num_train_steps=4, steps_per_epoch=2, params_layer={"not-a-parameter": 0})
