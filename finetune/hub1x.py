"""What PaddleHub 1.x fine-tuning scripts reach that PaddleHub 2.4 lacks, or keeps only in a form that breaks them.

The 1.x text-classification demo calls ``hub.RunConfig(..., strategy=...)``,
``hub.reader.ClassifyReader(dataset=..., vocab_path=module.get_vocab_path(), max_seq_len=...)`` and
``hub.TextClassifierTask(data_reader=..., feature=..., feed_list=..., num_classes=..., config=...)``, over a
data set deriving from ``paddlehub.dataset.base_nlp_dataset.BaseNLPDataset``. On PaddleHub 2.4:

- ``hub.RunConfig`` takes ``strategy=`` and drops it: :class:`RunConfig` is PaddleHub's own, keeping it;
- ``hub.reader`` and ``hub.TextClassifierTask`` do not exist, ``paddlehub.dataset`` has no ``base_nlp_dataset``
  (PaddleHub 2.4 keeps that class as ``paddlehub.compat.datasets.nlp_dataset``);
- PaddleHub's compat ``ClassifyReader`` lower-cases by default: :class:`ClassifyReader` defaults to the
  checkpoint's casing instead, and the task tokenizes with this module's tokenizer.

:func:`register` puts these where 1.x scripts look. This file imports PaddleHub; import it only when it is there.
"""

import os
import sys
import types
import warnings

import paddlehub
from paddlehub.compat.datasets import nlp_dataset
from paddlehub.compat.task import config as hub_config
from paddlehub.compat.task import reader as hub_reader

from ..feeder import Feeder
from . import is_package_class
from ..tokenizer import BertTokenizer
from ..weights import Casing, installed_casing, read_vocab
from ..weights.casing import UNTOLD, casing_of_vocab
from .task import TextClassifierTask

__all__ = ["RunConfig", "ClassifyReader", "LegacyTextClassifierTask", "register", "vocab_casing"]

_FEEDS = ("input_ids", "position_ids", "segment_ids", "input_mask")


class RunConfig(hub_config.RunConfig):
    """PaddleHub 2.4's compat ``hub.RunConfig``, keeping the ``strategy`` it is given (it dropped it)."""

    def __init__(self, *args, strategy=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.strategy = strategy


def vocab_casing(vocab_path):
    """The Casing of the checkpoint whose vocabulary is ``vocab_path``: its weights folder's record when the file
    is a folder's ``vocab.txt`` (module.get_vocab_path() is), else what the vocabulary tells, else cased."""
    vocab_path = os.path.abspath(vocab_path)
    if os.path.basename(vocab_path) == "vocab.txt":
        return installed_casing(os.path.dirname(vocab_path), vocab_path)
    return casing_of_vocab(read_vocab(vocab_path)) or Casing(False, UNTOLD)


class ClassifyReader(hub_reader.ClassifyReader):
    """PaddleHub's compat ``ClassifyReader`` whose ``do_lower_case`` defaults to the checkpoint's casing (None).

    Keeps ``vocab_path`` and ``do_lower_case``, from which :class:`LegacyTextClassifierTask` builds this
    module's tokenizer.
    """

    def __init__(self, vocab_path, dataset=None, max_seq_len=512, do_lower_case=None, **kwargs):
        self.vocab_path = os.path.abspath(vocab_path)
        casing = vocab_casing(vocab_path)
        if do_lower_case is None:
            do_lower_case = casing.do_lower_case
        elif do_lower_case != casing.do_lower_case:
            warnings.warn(f"ClassifyReader(do_lower_case={do_lower_case}) differs from the checkpoint's casing "
                          f"(do_lower_case={casing.do_lower_case}, told by {casing.told_by})", stacklevel=2)
        self.do_lower_case = bool(do_lower_case)
        super().__init__(vocab_path, dataset=dataset, max_seq_len=max_seq_len, do_lower_case=self.do_lower_case,
                         **kwargs)


class LegacyTextClassifierTask(TextClassifierTask):
    """The 1.x ``hub.TextClassifierTask(feature, num_classes, feed_list, data_reader, ...)`` on this package's task.

    ``feature``: ``outputs["pooled_output"]`` of ``module.context()``; ``feed_list``: the names of its
    ``input_ids``, ``position_ids``, ``segment_ids`` and ``input_mask`` inputs; ``data_reader``: a
    :class:`ClassifyReader` (``hub.reader.ClassifyReader`` once the module is loaded), whose data set gives the
    train and dev examples and labels, and whose vocabulary and casing give the tokenizer. ``config``: a
    ``hub.RunConfig`` (its strategy is used; none means the 1.x default ``AdamWeightDecayStrategy()``).
    ``metrics_choices``: accuracy is what the task reports. ``startup_program`` is accepted for 1.x scripts: the
    pretrained parameters are in the scope already. ``hidden_units`` (extra layers) is not supported.
    """

    def __init__(self, feature, num_classes, feed_list, data_reader, startup_program=None, config=None,
                 hidden_units=None, metrics_choices="default"):
        if hidden_units:
            raise ValueError(f"hidden_units={hidden_units!r} is not supported: the classifier sits on the feature")
        metrics = [metrics_choices] if isinstance(metrics_choices, str) else list(metrics_choices)
        if set(metrics) - {"default", "acc"}:
            warnings.warn(f"metrics_choices={metrics_choices!r}: this task reports accuracy only", stacklevel=2)
        # Duck-typed: the ClassifyReader of another copy of this package (installed vs. editable) counts.
        if not all(hasattr(data_reader, name) for name in ("vocab_path", "do_lower_case", "dataset")):
            raise TypeError(f"data_reader must be hub.reader.ClassifyReader(...), created after hub.Module(...) "
                            f"loaded this module; got {type(data_reader).__name__}")
        program = feature.get_defining_op().get_parent_block().program
        inputs = _inputs_by_name(program, feed_list)
        seq = int(inputs["input_ids"].shape[1])
        if seq > 0 and data_reader.max_seq_len > seq:
            raise ValueError(f"the reader's max_seq_len ({data_reader.max_seq_len}) exceeds the context's "
                             f"({seq}); give both the same max_seq_len")
        feeder = Feeder(BertTokenizer(data_reader.vocab_path, do_lower_case=data_reader.do_lower_case),
                        max_seq_len=data_reader.max_seq_len)
        if data_reader.dataset is None:
            raise ValueError("the data_reader has no dataset: the task trains on its train examples; give "
                             "hub.reader.ClassifyReader(dataset=...)")
        labels = data_reader.dataset.get_labels()
        dev = _labeled(data_reader.get_dev_examples())
        super().__init__((inputs, {"pooled_output": feature}, program), num_classes,
                         label_list=list(labels) if labels else None, config=config, feeder=feeder,
                         train_data=_labeled(data_reader.get_train_examples()), dev_data=dev or None)


def _inputs_by_name(program, feed_list):
    """``{feed name: the program's data value}`` for the four BERT feeds, which ``feed_list`` must name."""
    if sorted(feed_list) != sorted(_FEEDS):
        raise ValueError(f"feed_list must name the context's inputs {list(_FEEDS)}, got {list(feed_list)}")
    found = {op.attrs()["name"]: op.result(0) for op in program.global_block().ops
             if op.name() == "pd_op.data" and op.attrs().get("name") in _FEEDS}
    missing = [name for name in _FEEDS if name not in found]
    if missing:
        raise ValueError(f"the feature's program has no input(s) {missing}; is feature an output of "
                         "module.context()?")
    return found


def _labeled(examples):
    """1.x examples (``text_a``, ``text_b`` or None, ``label``) as ``[(sample, label), ...]``."""
    return [([e.text_a] if e.text_b is None else [e.text_a, e.text_b], e.label) for e in examples or []]


def register():
    """Puts :class:`RunConfig`, ``hub.reader`` (with :class:`ClassifyReader`), ``hub.TextClassifierTask`` and
    ``paddlehub.dataset.base_nlp_dataset`` where 1.x scripts look, replacing only what PaddleHub 2.4 lacks and
    its strategy-dropping ``RunConfig``; what holds anything else is left alone. Idempotent."""
    def ours(value, name):
        return is_package_class(value, (name,), "hub1x")

    if paddlehub.RunConfig is hub_config.RunConfig or ours(paddlehub.RunConfig, "RunConfig"):
        paddlehub.RunConfig = RunConfig
    reader = getattr(paddlehub, "reader", None)
    if reader is None or ours(getattr(reader, "ClassifyReader", None), "ClassifyReader"):
        paddlehub.reader = types.ModuleType("paddlehub.reader", "1.x readers, for scripts written for PaddleHub 1.x")
        paddlehub.reader.ClassifyReader = ClassifyReader
    task = getattr(paddlehub, "TextClassifierTask", None)
    if task is None or ours(task, "LegacyTextClassifierTask"):
        paddlehub.TextClassifierTask = LegacyTextClassifierTask
    dataset = getattr(paddlehub, "dataset", None)
    if dataset is not None and "base_nlp_dataset" not in dataset:
        dataset.base_nlp_dataset = nlp_dataset  # EasyDict: attribute and item
    sys.modules.setdefault("paddlehub.dataset.base_nlp_dataset", nlp_dataset)
