"""Text classification on ``context()``: a classifier head on ``pooled_output``, trained by a strategy.

    module = hub.Module(name="bert_cased_L-24_H-1024_A-16")
    strategy = ULMFiTStrategy(params_layer=module.get_params_layer())
    task = TextClassifierTask(module, label_list=["neg", "pos"], max_seq_len=128,
                              config=RunConfig(num_epoch=3, batch_size=32, strategy=strategy,
                                               checkpoint_dir="ckpt"))
    history = task.finetune_and_eval(train_data, dev_data)   # [(text or [a, b], label), ...] or a .tsv/.csv path
    task.predict(["a new text"])                             # [(label, [p_0, p_1]), ...]

The network lives in one static program and its weights once, in
``paddle.static.global_scope()`` (where ``context()`` put them). The task adds
``dropout -> fc -> softmax`` and a cross-entropy loss, keeps deterministic copies of the graph
(no weights) for evaluation and prediction, and lets the strategy build the training program.
"""

import contextlib
import logging
import math
import os
import sys
import time
import warnings
import weakref

import numpy as np
import paddle

from ..device import cpu_execution, gpu_available
from ..feeder import check_int
from ..kernels import set_linear_precision
from ..memory import release_freed_memory
from ..network import inference_clone, static_mode
from .checkpoint import CheckpointMixin
from .reader import read_labeled_file
from .run_config import as_run_config, check_strategy
from .strategy import AdamWeightDecayStrategy

__all__ = ["TextClassifierTask"]

logger = logging.getLogger(__name__)

_task_ids = iter(range(1 << 62))
_gpu_fallback_warned = False


def choose_place(use_gpu):
    """``CUDAPlace(0)`` when asked for and available, else ``CPUPlace()`` (warning once when GPU was asked for)."""
    global _gpu_fallback_warned
    if use_gpu:
        if gpu_available():
            return paddle.CUDAPlace(0)
        if not _gpu_fallback_warned:
            warnings.warn("use_gpu=True but this Paddle build has no CUDA support or no GPU is visible; "
                          "running on CPU", RuntimeWarning, stacklevel=3)
            _gpu_fallback_warned = True
    return paddle.CPUPlace()


def _labeled(data, where):
    """``data`` (a list of ``(sample, label)`` / ``(text_a, text_b, label)`` or a TSV/CSV path) as two lists."""
    if isinstance(data, (str, os.PathLike)):
        data = read_labeled_file(data)
    if not isinstance(data, (list, tuple)):
        raise TypeError(f"{where} must be a list of (text, label) pairs or a .tsv/.csv path, got {type(data).__name__}")
    samples, labels = [], []
    for index, item in enumerate(data):
        if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
            raise ValueError(f"{where}[{index}] must be (text, label), ([text_a, text_b], label) or "
                             f"(text_a, text_b, label), got {item!r}")
        if len(item) == 3:
            samples.append([item[0], item[1]])
        else:
            samples.append(item[0])
        labels.append(item[-1])
    return samples, labels


class TextClassifierTask(CheckpointMixin):
    """A classifier on ``pooled_output`` trained with a :class:`.strategy.Strategy`.

    Args:
        module: the BERT module (anything with ``context()`` and ``feeder()``), or a
            ``(inputs, outputs, program)`` tuple from ``context()`` together with ``feeder``.
        num_classes: number of classes; defaults to ``len(label_list)``.
        label_list: the labels, in class-index order. Without it labels must be ints (or
            digit strings) in ``[0, num_classes)``, and predictions are class indices.
        config: a :class:`RunConfig` (PaddleHub's compat ``hub.RunConfig`` is accepted too).
        strategy: overrides ``config.strategy``; default ``AdamWeightDecayStrategy()``.
        max_seq_len: tokens per sample, passed to ``context()`` (ignored for a tuple, whose
            inputs fix it).
        feeder: the :class:`Feeder` turning texts into feeds (default ``module.feeder(max_seq_len)``).
        dropout: dropout on ``pooled_output`` before the classifier (1.x used 0.1).
        trainable: passed to ``context()``; False trains the head only.
        train_data / dev_data: defaults for :meth:`finetune` / :meth:`evaluate`.
    """

    def __init__(self, module=None, num_classes=None, *, label_list=None, config=None, strategy=None,
                 max_seq_len=128, feeder=None, dropout=0.1, trainable=True, train_data=None, dev_data=None):
        self.config = as_run_config(config)
        self.strategy = check_strategy(strategy) or self.config.strategy or AdamWeightDecayStrategy()
        if self.strategy.bound:
            raise ValueError("this strategy already trains another task; create a new strategy for each task")
        self.label_list = list(label_list) if label_list is not None else None
        if num_classes is None:
            if self.label_list is None:
                raise ValueError("give num_classes or label_list")
            num_classes = len(self.label_list)
        self.num_classes = check_int("num_classes", num_classes, 2)
        if self.label_list is not None and len(self.label_list) != self.num_classes:
            raise ValueError(f"label_list has {len(self.label_list)} labels but num_classes is {self.num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.train_data, self.dev_data = train_data, dev_data
        self.place = choose_place(self.config.use_gpu)
        self.history = []
        self._tag = f"task{next(_task_ids)}@"
        with static_mode():
            self._build(module, max_seq_len, feeder, dropout, trainable)
            self._executor = paddle.static.Executor(self.place)
            self._executor.run(self._startup)
        # What the task added to the global scope goes with it, closed or just dropped (k-fold loops).
        self._free = weakref.finalize(self, _free_task_state, self.strategy, tuple(self._head_names))
        self._free.atexit = False

    # -- the graph ----------------------------------------------------------------------

    def _build(self, module, max_seq_len, feeder, dropout, trainable):
        if isinstance(module, (tuple, list)) and len(module) == 3:
            inputs, outputs, program = module
            if feeder is None:
                raise ValueError("a (inputs, outputs, program) tuple needs feeder= (e.g. module.feeder(max_seq_len))")
            mapping = paddle.base.libpaddle.pir.IrMapping()
            clone = program.clone(mapping)  # leave the caller's program as it was
            outputs = {name: mapping.look_up(value) for name, value in outputs.items()}
            program = clone
        elif hasattr(module, "context"):
            inputs, outputs, program = module.context(trainable=trainable, max_seq_len=max_seq_len)
            feeder = feeder if feeder is not None else module.feeder(max_seq_len)
        else:
            raise TypeError(f"module must be the BERT module or a (inputs, outputs, program) tuple, got {module!r}")
        if "pooled_output" not in outputs:
            raise ValueError("the context's outputs have no pooled_output")
        self.feeder = feeder
        seq = int(inputs["input_ids"].shape[1])
        self.max_seq_len = seq if seq > 0 else feeder.max_seq_len
        self._pad_to = seq if seq > 0 else None
        if self.place_is_gpu:
            _move_parameters(program, self.place)
        set_linear_precision(program, self.config.precision)  # The clones below and the optimizer's ops inherit it.
        pooled = outputs["pooled_output"]
        hidden = int(pooled.shape[-1])
        # The head starts from ``seed`` alone (BERT's truncated normal, std 0.02), so runs repeat.
        rng = np.random.default_rng(self.config.seed)
        weight = rng.standard_normal((hidden, self.num_classes))
        while np.any(np.abs(weight) > 2):
            outside = np.abs(weight) > 2
            weight[outside] = rng.standard_normal(int(outside.sum()))
        weight = (weight * 0.02).astype(np.float32)
        self._startup = paddle.static.Program()
        with paddle.static.program_guard(program, self._startup):
            features = paddle.nn.functional.dropout(pooled, p=dropout, training=True) if dropout else pooled
            classifier = paddle.nn.Linear(
                hidden, self.num_classes,
                weight_attr=paddle.ParamAttr(name=self._tag + "cls_out.w_0",
                                             initializer=paddle.nn.initializer.Assign(weight)),
                bias_attr=paddle.ParamAttr(name=self._tag + "cls_out.b_0",
                                           initializer=paddle.nn.initializer.Constant(0.0)))
            logits = classifier(features)
            probs = paddle.nn.functional.softmax(logits)
        self._predict_program, (self._predict_probs,) = inference_clone(program, [probs])
        with paddle.static.program_guard(program, self._startup):
            label = paddle.static.data("label", [-1, 1], "int64")
            loss = paddle.mean(paddle.nn.functional.cross_entropy(logits, label))
        self._eval_program, (self._eval_probs, self._eval_loss) = inference_clone(program, [probs, loss])
        self._program, self._loss, self._probs = program, loss, probs
        self._head_names = [self._tag + "cls_out.w_0", self._tag + "cls_out.b_0"]

    @contextlib.contextmanager
    def _running(self):
        """Static mode, and on the CPU :func:`..device.cpu_execution` (ops in order, every core for each)."""
        with static_mode(), (contextlib.nullcontext() if self.place_is_gpu else cpu_execution()):
            yield

    @property
    def place_is_gpu(self):
        return isinstance(self.place, paddle.CUDAPlace)

    @property
    def program(self):
        """The forward program with the head and loss (the strategy trains clones of it)."""
        return self._program

    # -- data ---------------------------------------------------------------------------

    def _label_index(self, label, where):
        if self.label_list is not None:
            if label in self.label_list:
                return self.label_list.index(label)
            as_str = [str(item) for item in self.label_list]
            if str(label) in as_str:
                return as_str.index(str(label))
            raise ValueError(f"{where}: label {label!r} is not in label_list {self.label_list}")
        value = label
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                or not 0 <= value < self.num_classes:
            raise ValueError(f"{where}: label {label!r} must be a class index in [0, {self.num_classes}) "
                             f"(or pass label_list)")
        return int(value)

    def _encode(self, data, where):
        samples, labels = _labeled(data, where)
        if not samples:
            raise ValueError(f"{where} is empty")
        encodings = [self.feeder.encode(sample, f"{where}[{i}]") for i, sample in enumerate(samples)]
        indices = np.array([self._label_index(label, f"{where}[{i}]") for i, label in enumerate(labels)],
                           dtype=np.int64)
        return encodings, indices

    def _feed(self, encodings, labels=None):
        feed = self.feeder.pad(encodings, self._pad_to)
        if labels is not None:
            feed["label"] = labels.reshape(-1, 1)
        return feed

    def _epoch_order(self, epoch, count):
        if not self.config.shuffle:
            return np.arange(count)
        return np.random.default_rng([self.config.seed, epoch]).permutation(count)

    # -- training -----------------------------------------------------------------------

    def finetune_and_eval(self, train_data=None, dev_data=None):
        """Trains for ``config.num_epoch`` epochs, evaluating on ``dev_data`` after each; returns :attr:`history`."""
        return self.finetune(train_data, dev_data)

    def finetune(self, train_data=None, dev_data=None):
        """Trains on ``train_data`` (evaluating on ``dev_data`` after each epoch when given).

        Resumes from ``config.checkpoint_dir`` when it holds a checkpoint of this task. Returns
        :attr:`history`: one dict per epoch with ``epoch``, ``train_loss``, ``train_accuracy``,
        ``learning_rate`` (of the epoch's last step), ``seconds`` and, with dev data,
        ``dev_loss`` / ``dev_accuracy``.
        """
        train_data = train_data if train_data is not None else self.train_data
        dev_data = dev_data if dev_data is not None else self.dev_data
        if train_data is None:
            raise ValueError("finetune needs train_data (a list of (text, label) or a .tsv/.csv path)")
        config = self.config
        with self._running():
            encodings, labels = self._encode(train_data, "train_data")
            dev = self._encode(dev_data, "dev_data") if dev_data is not None else None
            count, batch_size = len(encodings), config.batch_size
            steps_per_epoch = math.ceil(count / batch_size)
            if not self.strategy.bound:
                self.strategy.minimize(self._loss, self._program,
                                       num_train_steps=config.num_epoch * steps_per_epoch, place=self.place)
            elif not (config.checkpoint_dir and config.resume):
                warnings.warn("this task has trained already: training again goes on from its current weights and "
                              "learning-rate schedule; create a new task and strategy to start over", stacklevel=2)
            start_epoch, skip = 0, 0
            if config.checkpoint_dir and config.resume:
                resumed = self.load_checkpoint()
                if resumed is not None:
                    start_epoch, skip = resumed
            for epoch in range(start_epoch, config.num_epoch):
                if skip == 0:
                    self.strategy.step()  # 1.x: at the start of every epoch (gradual unfreezing)
                self._train_epoch(epoch, skip, encodings, labels, steps_per_epoch, dev)
                skip = 0
        return self.history

    def _train_epoch(self, epoch, skip, encodings, labels, steps_per_epoch, dev):
        config, strategy = self.config, self.strategy
        order = self._epoch_order(epoch, len(encodings))
        started = time.time()
        total_loss, correct, seen = 0.0, 0, 0
        progress = _progress(steps_per_epoch, skip, f"epoch {epoch + 1}/{config.num_epoch}")
        last_lr = strategy.current_learning_rate
        try:
            for step in range(skip, steps_per_epoch):
                rows = order[step * config.batch_size:(step + 1) * config.batch_size]
                batch_labels = labels[rows]
                last_lr = strategy.current_learning_rate
                loss, probs = strategy.run(self._executor, self._feed([encodings[i] for i in rows], batch_labels),
                                           [self._loss, self._probs])
                loss = float(np.asarray(loss))
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the training loss became {loss} at step {strategy.global_step}; "
                                             f"lower the learning rate")
                total_loss += loss * len(rows)
                correct += int((np.asarray(probs).argmax(-1) == batch_labels).sum())
                seen += len(rows)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
                elif strategy.global_step % config.log_interval == 0:
                    logger.info("epoch %d step %d/%d: loss %.4f, accuracy %.4f, lr %.3g", epoch + 1, step + 1,
                                steps_per_epoch, total_loss / seen, correct / seen, last_lr)
                if config.checkpoint_dir and config.save_ckpt_interval and step + 1 < steps_per_epoch \
                        and strategy.global_step % config.save_ckpt_interval == 0:
                    self.save_checkpoint(epoch, step + 1)
        finally:
            if progress is not None:
                progress.close()
        record = {"epoch": epoch + 1, "train_loss": total_loss / seen if seen else float("nan"),
                  "train_accuracy": correct / seen if seen else float("nan"), "learning_rate": last_lr,
                  "steps": strategy.global_step}
        if dev is not None:
            metrics = self._evaluate_encoded(*dev)
            record.update(dev_loss=metrics["loss"], dev_accuracy=metrics["accuracy"])
        record["seconds"] = time.time() - started
        self.history.append(record)
        logger.info("epoch %d/%d: %s", epoch + 1, config.num_epoch,
                    ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in ("epoch",)))
        if config.checkpoint_dir:
            # Best model first: a run stopped between the two redoes this epoch, and decides again.
            if dev is not None and config.save_best_model and self._is_best(record):
                self.save_best_model()
            self.save_checkpoint(epoch + 1, 0)

    def _is_best(self, record):
        """Whether ``record`` (the last of :attr:`history`) has a higher dev accuracy than every epoch before."""
        earlier = [h["dev_accuracy"] for h in self.history[:-1] if "dev_accuracy" in h]
        return not earlier or record["dev_accuracy"] > max(earlier)

    # -- evaluation and prediction ------------------------------------------------------

    def evaluate(self, data=None):
        """``{"loss", "accuracy", "num_examples"}`` on labelled ``data`` (default: ``dev_data``), dropout off."""
        data = data if data is not None else self.dev_data
        if data is None:
            raise ValueError("evaluate needs data (a list of (text, label) or a .tsv/.csv path)")
        with self._running():
            return self._evaluate_encoded(*self._encode(data, "data"))

    def _evaluate_encoded(self, encodings, labels):
        total_loss, correct = 0.0, 0
        size = self.config.batch_size
        for start in range(0, len(encodings), size):
            batch_labels = labels[start:start + size]
            probs, loss = self._executor.run(self._eval_program,
                                             feed=self._feed(encodings[start:start + size], batch_labels),
                                             fetch_list=[self._eval_probs, self._eval_loss])
            total_loss += float(np.asarray(loss)) * len(batch_labels)
            correct += int((np.asarray(probs).argmax(-1) == batch_labels).sum())
        return {"loss": total_loss / len(encodings), "accuracy": correct / len(encodings),
                "num_examples": len(encodings)}

    def predict(self, texts, batch_size=None):
        """``[(label, [probability per class]), ...]`` for ``texts`` (each a str, ``[text]`` or ``[text_a, text_b]``), in order.

        ``label`` is from ``label_list`` when the task has one, else the class index.
        """
        size = check_int("batch_size", batch_size, 1) if batch_size is not None else self.config.batch_size
        results = {}
        with self._running():
            for batch in self.feeder.batches(texts, size, sort_by_length=True, pad_to=self._pad_to):
                (probs,) = self._executor.run(self._predict_program, feed=batch.feeds,
                                              fetch_list=[self._predict_probs])
                for row, index in enumerate(batch.indices):
                    p = np.asarray(probs[row], dtype=np.float64)
                    best = int(p.argmax())
                    label = self.label_list[best] if self.label_list is not None else best
                    results[int(index)] = (label, p.tolist())
        return [results[index] for index in range(len(results))]

    def close(self):
        """Frees the head and the optimizer state from the global scope (the module's weights stay) and hands
        the memory back to the OS; deleting the task does the same."""
        self._free()


def _free_task_state(strategy, head_names):
    strategy.close()
    scope = paddle.static.global_scope()
    scope.erase([name for name in head_names if scope.find_var(name) is not None])
    release_freed_memory()


def _progress(total, initial, description):
    """A tqdm bar on an interactive terminal, else None (progress then goes to logging)."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=description, leave=False, file=sys.stderr)


def _move_parameters(program, place):
    """Copies the program's parameters in the global scope to ``place`` (``context()`` loads them on the CPU)."""
    scope = paddle.static.global_scope()
    for param in program.global_block().all_parameters():
        var = scope.find_var(param.name)
        if var is not None and var.get_tensor()._is_initialized():
            var.get_tensor().set(np.array(var.get_tensor()), place)
