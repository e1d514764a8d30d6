"""PaddleHub 2.x task models (tasks/): routing, outputs against Hugging Face, metrics, hub.Trainer, bad input.

The task models run over tiny weights made from a random Hugging Face ``BertModel``, so the
encoder part of every output is checked against torch; the heads are checked against numpy.
"""

import numpy as np
import paddle
import pytest

from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge

from conftest import PACKAGE_VOCAB, TINY_CONFIGS, hf_arrays, hf_model, install_weights

hub = pytest.importorskip("paddlehub")
torch = pytest.importorskip("torch")

from bert_cased_L_24_H_1024_A_16.tasks.datasets import (SeqLabelingFiles, TextClassificationFiles,  # noqa: E402
                                                        TextMatchingFiles)

NER_LABELS = {0: "B-PER", 1: "I-PER", 2: "O"}


@pytest.fixture(scope="module")
def reference():
    """``(weights dir, Hugging Face model)`` holding the same tiny random weights."""
    config = TINY_CONFIGS["tiny"]
    model = hf_model(config, seed=1)
    return model, config


@pytest.fixture
def weights(reference, tmp_path):
    model, config = reference
    return install_weights(hf_arrays(model, config), config, tmp_path / "weights")


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _hf_outputs(model, input_ids, token_type_ids):
    """``(sequence_output, pooled_output)`` of the reference, padding (id 0) masked."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor(input_ids), token_type_ids=torch.tensor(token_type_ids),
                    attention_mask=torch.tensor((np.asarray(input_ids) != 0).astype(np.int64)))
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _head(task_model):
    return task_model.classifier.weight.numpy(), task_model.classifier.bias.numpy()


def _encode(tokenizer, texts, max_seq_len=12):
    records = [tokenizer(text=t, max_seq_len=max_seq_len, pad_to_max_seq_len=True) for t in texts]
    return (np.array([r["input_ids"] for r in records]), np.array([r["token_type_ids"] for r in records]))


# -- routing and the tokenizer -----------------------------------------------------------------

def test_task_none_keeps_the_module_and_a_task_gives_a_layer(weights):
    module = BertCasedLarge(weights_dir=weights)
    assert type(module) is BertCasedLarge and module.get_params_layer()
    model = BertCasedLarge(weights_dir=weights, task="seq-cls", num_classes=3)
    assert isinstance(model, paddle.nn.Layer) and model.task == "seq-cls" and model.num_classes == 3
    assert model.label_map == {0: 0, 1: 1, 2: 2}


def test_tokenizer_is_paddlenlp_and_gives_the_module_tokenizer_ids(weights):
    from paddlenlp.transformers import PretrainedTokenizer

    module = BertCasedLarge(weights_dir=weights)
    tokenizer = BertCasedLarge(weights_dir=weights, task="seq-cls").get_tokenizer()
    assert isinstance(tokenizer, PretrainedTokenizer)
    ours = module.tokenizer
    for text in ["Hello, World!", "naïve Café déjà-vu", "北京 Straße 123,45 e-mail@x.org", "unaffable GPUs"]:
        expected = [ours.cls_id] + ours.convert_tokens_to_ids(ours.tokenize(text)) + [ours.sep_id]
        assert tokenizer(text=text)["input_ids"] == expected, text


# -- outputs against the references ---------------------------------------------------------------

def test_seq_cls_probabilities_match_the_reference(weights, reference):
    model = BertCasedLarge(weights_dir=weights, task="seq-cls", num_classes=3)
    model.eval()
    ids, types = _encode(model.get_tokenizer(), ["A short one", "A somewhat longer sentence here"])
    probs = model(paddle.to_tensor(ids), paddle.to_tensor(types)).numpy()
    _, pooled = _hf_outputs(reference[0], ids, types)
    w, b = _head(model)
    np.testing.assert_allclose(probs, _softmax(pooled @ w + b), atol=1e-5)


def test_token_cls_probabilities_loss_and_f1(weights, reference):
    model = BertCasedLarge(weights_dir=weights, task="token-cls", label_map=NER_LABELS)
    model.eval()
    ids, types = _encode(model.get_tokenizer(), ["Ann Lee met Bob", "Hi"], max_seq_len=8)
    sequence, _ = _hf_outputs(reference[0], ids, types)
    w, b = _head(model)
    probs, loss, metrics = model(paddle.to_tensor(ids), paddle.to_tensor(types),
                                 labels=paddle.to_tensor(_ner_labels(ids)))
    expected = _softmax(sequence @ w + b)
    np.testing.assert_allclose(probs.numpy(), expected, atol=1e-5)
    labels = _ner_labels(ids)
    real = labels != -100
    picked = np.take_along_axis(expected, np.where(real, labels, 0)[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(float(loss), -np.log(picked[real]).mean(), rtol=1e-5)
    # Force every prediction to B-PER: each real token becomes a one-token PER chunk, padding excluded.
    model.classifier.bias.set_value(np.array([100.0, 0.0, 0.0], dtype=np.float32))
    predicted = int(real.sum())
    _, _, metrics = model(paddle.to_tensor(ids), paddle.to_tensor(types), labels=paddle.to_tensor(labels))
    assert metrics == {"f1_score": 0.0}  # The one gold chunk, "Ann Lee", spans two tokens: no match.
    labels[0, 1:3] = [0, 0]  # Now "Ann" and "Lee" are two one-token chunks, both predicted.
    _, _, metrics = model(paddle.to_tensor(ids), paddle.to_tensor(types), labels=paddle.to_tensor(labels))
    precision, recall = 2 / predicted, 1.0
    assert metrics["f1_score"] == pytest.approx(2 * precision * recall / (precision + recall))


def _ner_labels(ids):
    """[CLS] Ann Lee met Bob [SEP] → O B-PER I-PER O O O; padding -100 (as SeqLabelingDataset makes them)."""
    labels = np.where(ids != 0, 2, -100)
    labels[0, 1:3] = [0, 1]
    return labels


def test_text_matching_probabilities_match_the_reference(weights, reference):
    model = BertCasedLarge(weights_dir=weights, task="text-matching")
    model.eval()
    tokenizer = model.get_tokenizer()
    q_ids, q_types = _encode(tokenizer, ["How old are you", "Hi"])
    t_ids, t_types = _encode(tokenizer, ["What is your age", "Hello there friend"])
    probs = model(paddle.to_tensor(q_ids), paddle.to_tensor(q_types), title_input_ids=paddle.to_tensor(t_ids),
                  title_token_type_ids=paddle.to_tensor(t_types)).numpy()

    def mean(ids, types):
        sequence, _ = _hf_outputs(reference[0], ids, types)
        mask = (ids != 0)[..., None]
        return (sequence * mask).sum(1) / mask.sum(1)

    q, t = mean(q_ids, q_types), mean(t_ids, t_types)
    w, b = _head(model)
    np.testing.assert_allclose(probs, _softmax(np.concatenate([q, t, np.abs(q - t)], -1) @ w + b), atol=1e-5)


def test_predict_maps_classes_through_label_map(weights):
    model = BertCasedLarge(weights_dir=weights, task="seq-cls", label_map={0: "negative", 1: "positive"})
    data = [["bad"], ["good good"], ["fine", "pair"]]
    labels, probs = model.predict(data, max_seq_len=16, batch_size=2, return_prob=True)
    assert labels == [["negative", "positive"][int(np.argmax(p))] for p in probs] and len(labels) == 3
    assert np.allclose(np.sum(probs, axis=1), 1.0)


def test_models_built_twice_in_one_process_are_independent(weights):
    first = BertCasedLarge(weights_dir=weights, task="seq-cls")
    second = BertCasedLarge(weights_dir=weights, task="seq-cls")
    np.testing.assert_array_equal(first.bert.embeddings.word.weight.numpy(), second.bert.embeddings.word.weight.numpy())
    first.bert.embeddings.word.weight.set_value(np.zeros([28996, 32], np.float32))
    assert np.abs(second.bert.embeddings.word.weight.numpy()).sum() > 0


# -- hub.Trainer end to end ------------------------------------------------------------------------

def _classification_files(folder):
    folder.mkdir()
    rows = ["1\tgood nice great", "0\tbad awful poor", "1\tnice fine", "0\tterrible bad", "1\tgreat good",
            "0\tpoor awful", "1\tfine nice good", "0\tbad poor"]
    for mode in ("train", "dev", "test"):
        _write(folder / f"{mode}.tsv", rows)
    return folder


def test_trainer_trains_saves_best_model_and_reloads_for_predict(weights, tmp_path):
    label_map = {0: "negative", 1: "positive"}
    model = BertCasedLarge(weights_dir=weights, task="seq-cls", label_map=label_map)
    data = _classification_files(tmp_path / "data")
    sets = {mode: TextClassificationFiles(base_path=str(data), tokenizer=model.get_tokenizer(), max_seq_len=16,
                                          mode=mode, data_file=f"{mode}.tsv", label_list=["0", "1"])
            for mode in ("train", "dev", "test")}
    before = model.classifier.weight.numpy().copy()
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=model.parameters())
    checkpoint_dir = tmp_path / "ckpt"
    trainer = hub.Trainer(model, optimizer, checkpoint_dir=str(checkpoint_dir), use_vdl=False)
    trainer.train(sets["train"], epochs=2, batch_size=4, eval_dataset=sets["dev"], save_interval=1)
    assert not np.allclose(before, model.classifier.weight.numpy())
    result = trainer.evaluate(sets["test"], batch_size=4)
    assert set(result["metrics"]) == {"acc"} and 0.0 <= result["metrics"]["acc"] <= 1.0
    for folder in ("best_model", "epoch_1", "epoch_2"):
        assert (checkpoint_dir / folder / "model.pdparams").is_file()
    # The last epoch's parameters, reloaded, predict as the trained model does.
    reloaded = BertCasedLarge(weights_dir=weights, task="seq-cls", label_map=label_map,
                              load_checkpoint=str(checkpoint_dir / "epoch_2" / "model.pdparams"))
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), reloaded.state_dict()[name].numpy(), err_msg=name)
    data = [["good nice"], ["bad poor"]]
    assert reloaded.predict(data, max_seq_len=16, return_prob=True) == model.predict(data, max_seq_len=16,
                                                                                    return_prob=True)
    assert trainer.best_metrics["acc"] == max(_acc_of(trainer, sets["dev"], checkpoint_dir, e) for e in (1, 2))


def _acc_of(trainer, dataset, checkpoint_dir, epoch):
    trainer.load_model(str(checkpoint_dir / f"epoch_{epoch}"))
    return trainer.evaluate(dataset, batch_size=4)["metrics"]["acc"]


def test_token_cls_trains_on_padded_sequence_labeling_files(weights, tmp_path):
    """paddlenlp 2.8.1's padded seq_len and 1-element chunk counts broke this path in PaddleHub."""
    model = BertCasedLarge(weights_dir=weights, task="token-cls", label_map=NER_LABELS)
    folder = tmp_path / "ner"
    folder.mkdir()
    _write(folder / "train.tsv", ["Ann\002Lee\002met\002Bob\tB-PER\002I-PER\002O\002B-PER", "Hi\002there\tO\002O"])
    dataset = SeqLabelingFiles(base_path=str(folder), tokenizer=model.get_tokenizer(), max_seq_len=12,
                               data_file="train.tsv", label_list=list(NER_LABELS.values()))
    assert dataset[1][2] == 12  # The data set's seq_len counts the padding.
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=model.parameters())
    trainer = hub.Trainer(model, optimizer, checkpoint_dir=str(tmp_path / "ckpt"), use_vdl=False)
    trainer.train(dataset, epochs=1, batch_size=2, eval_dataset=dataset, save_interval=1)
    assert "f1_score" in trainer.evaluate(dataset, batch_size=2)["metrics"]


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("options, error, words", [
    ({"task": "ner"}, ValueError, "unknown task 'ner'"),
    ({"task": "seq-cls", "num_classes": 1}, ValueError, "num_classes must be an int >= 2, got 1"),
    ({"task": "seq-cls", "num_classes": 3, "label_map": {0: "a", 1: "b"}}, ValueError, "num_classes=3"),
    ({"task": "seq-cls", "label_map": {1: "a", 2: "b"}}, ValueError, "{1: 'a', 2: 'b'}"),
    ({"task": "token-cls"}, ValueError, "needs label_map"),
    ({"num_classes": 2}, TypeError, "num_classes only apply with task="),
    ({"task": "seq-cls", "load_checkpoint": "/nonexistent/model.pdparams"}, FileNotFoundError,
     "/nonexistent/model.pdparams"),
])
def test_bad_options_name_the_value(weights, options, error, words):
    with pytest.raises(error, match=None) as info:
        BertCasedLarge(weights_dir=weights, **options)
    assert words in str(info.value)


def test_a_checkpoint_of_another_task_or_class_count_is_refused(weights, tmp_path):
    path = str(tmp_path / "model.pdparams")
    paddle.save(BertCasedLarge(weights_dir=weights, task="seq-cls", num_classes=3).state_dict(), path)
    with pytest.raises(ValueError, match=r"does not fit this seq-cls model.*classifier\.weight \[32, 3\]"):
        BertCasedLarge(weights_dir=weights, task="seq-cls", num_classes=2, load_checkpoint=path)
    with pytest.raises(ValueError, match="does not fit this text-matching model"):
        BertCasedLarge(weights_dir=weights, task="text-matching", load_checkpoint=path)


@pytest.mark.parametrize("dataset, lines, bad", [
    (TextClassificationFiles, ["label\ttext", "1\tgood", "2\tmeh"], "line 3: label '2'"),
    (TextMatchingFiles, ["a\tb\tlabel", "x\ty\t1", "x\ty\tyes"], "line 3: label 'yes'"),
    (SeqLabelingFiles, ["text\tlabel", "Ann\002Lee\tB-PER\002I-PER", "Bob\tB-ORG"], "line 3: label 'B-ORG'"),
])
def test_data_set_labels_outside_label_list_name_file_and_line(tmp_path, dataset, lines, bad):
    from bert_cased_L_24_H_1024_A_16.tasks.tokenizer import paddlenlp_tokenizer

    path = _write(tmp_path / "train.tsv", lines)
    labels = list(NER_LABELS.values()) if dataset is SeqLabelingFiles else ["0", "1"]
    with pytest.raises(ValueError) as info:
        dataset(base_path=str(tmp_path), tokenizer=paddlenlp_tokenizer(str(PACKAGE_VOCAB)), data_file="train.tsv",
                label_list=labels, is_file_with_header=True)
    assert f"{path}, {bad} is not in label_list" in str(info.value)


def test_inputs_longer_than_the_position_table_are_refused(weights):
    model = BertCasedLarge(weights_dir=weights, task="seq-cls")
    with pytest.raises(ValueError, match="inputs of 65 tokens exceed the model's 64 positions; pass max_seq_len <= 64"):
        model.predict([["word " * 100]], max_seq_len=65)
