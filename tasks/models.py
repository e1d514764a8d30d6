"""PaddleHub 2.x's task models, over this module's network and pretrained weights.

What PaddleHub 2.x's ``bert-large-cased`` module builds for each ``task``, with the encoder being
:class:`..network.BertModel` (1.x parameter names) instead of paddlenlp's:

* ``seq-cls``: ``softmax(W · dropout(pooled_output))``, metric ``acc``;
* ``token-cls``: ``softmax(W · dropout(sequence_output))`` per token, loss the mean over tokens not labelled -100,
  metric ``f1_score`` (paddlenlp's ``ChunkEvaluator`` over each sample's real tokens);
* ``text-matching``: query and title through the one encoder, the mean of each one's token
  features (after dropout) over its real tokens, ``softmax(W · [q, t, |q - t|])``, metric ``acc``.

``training_step`` and ``validation_step`` (``{"loss", "metrics"}``), ``predict`` and the serving
method are PaddleHub's own (``TransformerModule``); the metrics a step returns are those of its
batch. Dropout rates are the weights' ``bert_config.json`` ones.
"""

import logging
import os

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddlehub.module.nlp_module import TransformerModule
from paddlenlp.metrics import ChunkEvaluator

from ..network import BertModel
from ..weights import load_weights
from ..weights.names import HUB_PREFIX, layer_of
from . import TASKS
from .data_parallel import GradientAllReduce, install_trainer_fix, wait_for_every_rank
from .tokenizer import paddlenlp_tokenizer

__all__ = ["BertTaskModel", "SequenceClassifier", "TokenClassifier", "TextMatcher", "build"]

logger = logging.getLogger(__name__)

#: The token label that PaddleHub's SeqLabelingDataset gives padding, left out of loss and metric.
IGNORED_LABEL = -100


class BertTaskModel(nn.Layer, TransformerModule):
    """The shared part: encoder ``self.bert``, head ``self.classifier``, ``label_map``, metric, tokenizer.

    ``label_map``: ``{class index: label}`` for ``predict``. Built with random parameters; :func:`build`
    fills them from the pretrained weights or a checkpoint.
    """

    task = None
    head_inputs = 1  # How many hidden-size vectors the classifier reads.
    # PaddleHub's RunModule would inspect every attribute access; a Layer never needs its static-mode guard.
    __getattribute__ = object.__getattribute__

    def __init__(self, config, vocab_file, pad_id, num_classes, label_map):
        super().__init__()
        self.num_classes = num_classes
        self.label_map = label_map
        self._vocab_file = vocab_file
        self._pad_id = pad_id
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(self.head_inputs * config.hidden_size, num_classes)
        self.criterion = nn.CrossEntropyLoss()
        self._gradient_all_reduce = GradientAllReduce(self)

    def set_pretrained_weights(self, weights):
        """Copies ``weights`` (``{1.x name: float32 array}``) into the encoder; the head keeps its random init."""
        for param in self.bert.parameters():
            param.set_value(weights[param.name[len(HUB_PREFIX):]])

    def get_tokenizer(self):
        """A paddlenlp ``BertTokenizer`` over the module's cased vocabulary (what ``hub.datasets`` need)."""
        return paddlenlp_tokenizer(self._vocab_file)

    def get_params_layer(self):
        """``{parameter name: layer}`` for every parameter, for ULMFiT (:mod:`.ulmfit`).

        Encoder parameters as the module's ``get_params_layer()`` maps them (embeddings at 0, the
        pooler at the top encoder layer); the task head one layer above the top encoder layer.
        """
        config = self.bert.config
        layers = {p.name: layer_of(p.name[len(HUB_PREFIX):], config) for p in self.bert.parameters()}
        layers.update({p.name: config.num_hidden_layers for p in self.classifier.parameters()})
        return layers

    def training_step(self, batch, batch_idx):
        """PaddleHub's step; under a multi-process ``hub.Trainer`` its backward pass all-reduces gradients,
        and the first step of an epoch waits for rank 0 to finish evaluating and saving."""
        if batch_idx == 0:
            wait_for_every_rank()
        result = super().training_step(batch, batch_idx)
        self._gradient_all_reduce.arm()
        return result

    def __call__(self, *args, **kwargs):
        # A forward pass not followed by training_step (e.g. through paddle.DataParallel's own forward,
        # which all-reduces by itself) must not all-reduce a second time.
        self._gradient_all_reduce.disarm()
        return super().__call__(*args, **kwargs)

    def _encode(self, input_ids, token_type_ids=None, position_ids=None, attention_mask=None):
        """``(sequence_output, pooled_output, mask)``; ``attention_mask`` (``[batch, seq]``, 1 at real tokens)
        defaults to the non-padding tokens, ``token_type_ids`` to 0, ``position_ids`` to 0, 1, 2, ..."""
        limit = self.bert.config.max_position_embeddings
        if input_ids.shape[1] > limit:
            raise ValueError(f"inputs of {input_ids.shape[1]} tokens exceed the model's {limit} positions; "
                             f"pass max_seq_len <= {limit}")
        if attention_mask is None:
            attention_mask = (input_ids != self._pad_id).astype("int64")
        if token_type_ids is None:
            token_type_ids = paddle.zeros_like(input_ids)
        if position_ids is None:
            position_ids = paddle.arange(input_ids.shape[1], dtype="int64").expand_as(input_ids)
        sequence_output, pooled_output = self.bert(input_ids, position_ids, token_type_ids, attention_mask)
        return sequence_output, pooled_output, attention_mask

    def _accuracy(self, probs, logits, labels):
        loss = self.criterion(logits, labels)
        self.metric.reset()
        self.metric.update(self.metric.compute(probs, labels))
        return probs, loss, {"acc": float(self.metric.accumulate())}


class SequenceClassifier(BertTaskModel):
    """``task="seq-cls"``: ``forward(input_ids, token_type_ids, ..., labels=None)`` gives class
    probabilities ``[batch, num_classes]``, or ``(probs, loss, {"acc"})`` with ``labels`` ``[batch]``."""

    task = "seq-cls"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.metric = paddle.metric.Accuracy()

    def forward(self, input_ids, token_type_ids=None, position_ids=None, attention_mask=None, labels=None):
        _, pooled_output, _ = self._encode(input_ids, token_type_ids, position_ids, attention_mask)
        logits = self.classifier(self.dropout(pooled_output))
        probs = F.softmax(logits, axis=1)
        return probs if labels is None else self._accuracy(probs, logits, labels)


class TokenClassifier(BertTaskModel):
    """``task="token-cls"``: per-token class probabilities ``[batch, seq, num_classes]``, or with
    ``labels`` (``[batch, seq]``, -100 ignored) ``(probs, loss, {"f1_score"})``.

    ``seq_lengths`` is accepted and ignored: the data sets' lengths count padding on paddlenlp
    2.8.1, so the chunk metric reads each sample's real length from its tokens instead.
    """

    task = "token-cls"

    def __init__(self, *args, suffix=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.metric = ChunkEvaluator(label_list=[self.label_map[i] for i in range(self.num_classes)], suffix=suffix)

    def forward(self, input_ids, token_type_ids=None, position_ids=None, attention_mask=None, seq_lengths=None,
                labels=None):
        sequence_output, _, mask = self._encode(input_ids, token_type_ids, position_ids, attention_mask)
        logits = self.classifier(self.dropout(sequence_output))
        probs = F.softmax(logits, axis=-1)
        if labels is None:
            return probs
        # Paddle's mean would divide by the ignored (-100) positions too; this is the mean over labelled tokens.
        losses = F.cross_entropy(logits, labels.unsqueeze(-1), ignore_index=IGNORED_LABEL, reduction="none")
        loss = losses.sum() / (labels != IGNORED_LABEL).astype(losses.dtype).sum().clip(min=1)
        lengths = [int(n) for n in mask.sum(axis=1).numpy()]
        self.metric.reset()
        chunks = self.metric.compute(lengths, probs.argmax(axis=-1), labels)
        self.metric.update(*(int(count.item()) for count in chunks))  # 1-element arrays would break accumulate()
        _, _, f1_score = self.metric.accumulate()
        return probs, loss, {"f1_score": float(f1_score)}


class TextMatcher(BertTaskModel):
    """``task="text-matching"``: ``forward(query_input_ids, query_token_type_ids, title_input_ids,
    title_token_type_ids, ..., labels=None)`` gives ``[batch, num_classes]`` probabilities, or
    ``(probs, loss, {"acc"})`` with ``labels``."""

    task = "text-matching"
    head_inputs = 3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.metric = paddle.metric.Accuracy()

    def _mean_tokens(self, input_ids, token_type_ids, position_ids, attention_mask):
        sequence_output, _, mask = self._encode(input_ids, token_type_ids, position_ids, attention_mask)
        mask = mask.astype(sequence_output.dtype).unsqueeze(2)
        return (self.dropout(sequence_output) * mask).sum(axis=1) / mask.sum(axis=1)

    def forward(self, query_input_ids, query_token_type_ids=None, query_position_ids=None, query_attention_mask=None,
                title_input_ids=None, title_token_type_ids=None, title_position_ids=None, title_attention_mask=None,
                labels=None):
        query = self._mean_tokens(query_input_ids, query_token_type_ids, query_position_ids, query_attention_mask)
        title = self._mean_tokens(title_input_ids, title_token_type_ids, title_position_ids, title_attention_mask)
        logits = self.classifier(paddle.concat([query, title, paddle.abs(query - title)], axis=-1))
        probs = F.softmax(logits, axis=-1)
        return probs if labels is None else self._accuracy(probs, logits, labels)


_CLASSES = {cls.task: cls for cls in (SequenceClassifier, TokenClassifier, TextMatcher)}
assert tuple(_CLASSES) == TASKS


def _num_classes_and_label_map(task, num_classes, label_map):
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 2):
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if label_map is None:
        if task == "token-cls":
            raise ValueError("task='token-cls' needs label_map={index: label} (e.g. {0: 'B-PER', 1: 'I-PER', ..., "
                             "6: 'O'}): its chunk metric reads the label names")
        num_classes = 2 if num_classes is None else num_classes
        return num_classes, {i: i for i in range(num_classes)}
    if not isinstance(label_map, dict) or sorted(label_map, key=repr) != sorted(range(len(label_map)), key=repr):
        raise ValueError(f"label_map must be a dict {{0: label, 1: label, ...}} with the class indices 0 .. n-1 as "
                         f"keys, got {label_map!r}")
    if num_classes is not None and num_classes != len(label_map):
        raise ValueError(f"label_map has {len(label_map)} classes but num_classes={num_classes}; pass one of them "
                         f"or make them agree")
    if len(label_map) < 2:
        raise ValueError(f"label_map must have at least 2 classes, got {label_map!r}")
    return len(label_map), dict(label_map)


def _read_checkpoint(path, model):
    """The state dict saved at ``path``, checked to hold exactly ``model``'s parameters, shaped alike."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise FileNotFoundError(f"load_checkpoint={path!r} is not a file; pass the model.pdparams that hub.Trainer "
                                f"saved (e.g. checkpoint_dir/best_model/model.pdparams)")
    state = paddle.load(str(path))
    if not isinstance(state, dict):
        raise ValueError(f"load_checkpoint={path!r} holds a {type(state).__name__}, not a state dict")
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{name} {list(state[name].shape)} (this model: {list(shape)})" for name, shape in expected.items()
                 if name in state and tuple(state[name].shape) != shape]
    if missing or unexpected or misshaped:
        raise ValueError(f"load_checkpoint={path!r} does not fit this {model.task} model (same task, num_classes and "
                         f"weights configuration?): missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"shapes {misshaped[:5]}")
    return state


def build(module, task, num_classes=None, label_map=None, load_checkpoint=None, suffix=False):
    """The task model for ``task`` over ``module``'s weights (or over ``load_checkpoint``'s parameters).

    ``num_classes`` (default 2, or ``len(label_map)``); ``label_map`` ``{index: label}`` (required for
    ``token-cls``); ``load_checkpoint``: a ``model.pdparams`` saved by ``hub.Trainer`` for the same
    task and classes (the pretrained weights are then not read); ``suffix``: ``token-cls`` labels end
    in ``-B``/``-I`` rather than start with ``B-``/``I-``. Also installs the ``hub.Trainer`` fix of
    :mod:`.data_parallel`.
    """
    if task not in _CLASSES:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}, or None for the module itself")
    if not isinstance(suffix, bool):
        raise TypeError(f"suffix must be a bool, got {suffix!r}")
    num_classes, label_map = _num_classes_and_label_map(task, num_classes, label_map)
    options = {"suffix": suffix} if task == "token-cls" else {}
    model = _CLASSES[task](module.config, module.get_vocab_path(), module.tokenizer.pad_id, num_classes, label_map,
                           **options)
    if load_checkpoint is None:
        model.set_pretrained_weights(load_weights(module.weights_dir)[1])
    else:
        model.set_state_dict(_read_checkpoint(load_checkpoint, model))
        logger.info("loaded the task model's parameters from %s", os.path.abspath(load_checkpoint))
    install_trainer_fix()
    return model
