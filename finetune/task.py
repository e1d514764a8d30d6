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

import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
import zipfile

import numpy as np
import paddle

from ..device import gpu_available
from ..feeder import check_int
from ..network import inference_clone, static_mode
from .reader import read_labeled_file
from .strategy import AdamWeightDecayStrategy, Strategy, concrete_place

__all__ = ["RunConfig", "TextClassifierTask"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_LATEST = "latest"
_BEST_MODEL = "best_model"
_task_ids = iter(range(1 << 62))
_gpu_fallback_warned = False


class RunConfig:
    """How to run fine-tuning (PaddleHub 1.x ``RunConfig``).

    Args:
        num_epoch: passes over the training data.
        batch_size: samples per step (training, evaluation and prediction).
        strategy: a :class:`.strategy.Strategy`; ``None`` means ``AdamWeightDecayStrategy()``.
        checkpoint_dir: where checkpoints go; ``None`` saves none. A task whose directory
            holds a checkpoint resumes from it (``resume=False`` starts over).
        use_gpu: run on GPU 0; falls back to CPU, with one warning, when Paddle has no CUDA or
            no GPU is visible. ``use_cuda`` is the 1.x spelling.
        log_interval: log the running loss every this many steps (at INFO, when no progress bar).
        save_ckpt_interval: also checkpoint every this many steps (besides every epoch end).
        max_checkpoints: how many checkpoints to keep (oldest removed first).
        save_best_model: with ``checkpoint_dir`` and dev data, also keep the parameters of
            the epoch with the best dev accuracy so far in ``<checkpoint_dir>/best_model``
            (parameters only, no optimizer state; ties keep the earlier epoch).
        shuffle: shuffle the training data each epoch (with ``seed + epoch``, so resumed runs
            see the same order).
        seed: seeds the shuffling and the classifier head's initial weights.
    """

    def __init__(self, num_epoch=1, batch_size=32, strategy=None, checkpoint_dir=None, use_gpu=False, use_cuda=None,
                 log_interval=10, save_ckpt_interval=None, max_checkpoints=1, shuffle=True, seed=0, resume=True,
                 save_best_model=True):
        self.num_epoch = check_int("num_epoch", num_epoch, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.strategy = _check_strategy(strategy)
        self.checkpoint_dir = os.fspath(checkpoint_dir) if checkpoint_dir is not None else None
        self.use_gpu = bool(use_gpu if use_cuda is None else use_cuda)
        self.log_interval = check_int("log_interval", log_interval, 1)
        self.save_ckpt_interval = None if save_ckpt_interval is None else \
            check_int("save_ckpt_interval", save_ckpt_interval, 1)
        self.max_checkpoints = check_int("max_checkpoints", max_checkpoints, 1)
        self.shuffle = bool(shuffle)
        self.seed = check_int("seed", seed, 0)
        self.resume = bool(resume)
        self.save_best_model = bool(save_best_model)

    @property
    def use_cuda(self):
        return self.use_gpu

    def __repr__(self):
        return (f"RunConfig(num_epoch={self.num_epoch}, batch_size={self.batch_size}, strategy={self.strategy!r}, "
                f"checkpoint_dir={self.checkpoint_dir!r}, use_gpu={self.use_gpu})")


def _check_strategy(strategy):
    """``strategy`` when it is one (duck-typed: a strategy from another copy of this package counts), or None."""
    if strategy is None:
        return None
    if isinstance(strategy, Strategy) or all(hasattr(strategy, a) for a in ("minimize", "run", "step", "bound")):
        return strategy
    hint = " (PaddleHub's placeholder: load the module first, or import ULMFiTStrategy from this package)" \
        if strategy == 0 else ""
    raise TypeError(f"strategy must be a fine-tuning Strategy (e.g. ULMFiTStrategy(...)), got {strategy!r}{hint}")


def _run_config(config):
    """Our RunConfig from ours, PaddleHub 2.4's compat ``hub.RunConfig`` or None."""
    if config is None:
        return RunConfig()
    if isinstance(config, RunConfig):
        return config
    return RunConfig(num_epoch=getattr(config, "num_epoch", 1), batch_size=getattr(config, "batch_size", 32),
                     strategy=getattr(config, "strategy", None), checkpoint_dir=getattr(config, "checkpoint_dir", None),
                     use_gpu=getattr(config, "use_cuda", getattr(config, "use_gpu", False)),
                     log_interval=getattr(config, "log_interval", 10) or 10,
                     save_ckpt_interval=getattr(config, "save_ckpt_interval", None))


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


class TextClassifierTask:
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
        self.config = _run_config(config)
        self.strategy = _check_strategy(strategy) or self.config.strategy or AdamWeightDecayStrategy()
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
        with static_mode():
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
        with static_mode():
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
        with static_mode():
            for batch in self.feeder.batches(texts, size, sort_by_length=True, pad_to=self._pad_to):
                (probs,) = self._executor.run(self._predict_program, feed=batch.feeds,
                                              fetch_list=[self._predict_probs])
                for row, index in enumerate(batch.indices):
                    p = np.asarray(probs[row], dtype=np.float64)
                    best = int(p.argmax())
                    label = self.label_list[best] if self.label_list is not None else best
                    results[int(index)] = (label, p.tolist())
        return [results[index] for index in range(len(results))]

    # -- checkpoints --------------------------------------------------------------------

    def _stable(self, name):
        return name.removeprefix(self._tag)

    def _parameters(self):
        return {p.name: p for p in self._program.global_block().all_parameters()}

    def _checkpoint_root(self):
        """``config.checkpoint_dir``, created if missing; ValueError when it is not set."""
        root = self.config.checkpoint_dir
        if not root:
            raise ValueError("config.checkpoint_dir is not set")
        os.makedirs(root, exist_ok=True)
        return root

    def _parameter_entries(self):
        """``(key in tensors.npz, scope variable)`` of every parameter, as checkpoints store them."""
        return [("param:" + self._stable(name), name) for name in self._parameters()]

    def save_checkpoint(self, epoch, step_in_epoch):
        """Saves parameters, optimizer state and counters; ``epoch``/``step_in_epoch`` say where to go on.

        Written to ``<checkpoint_dir>/step_<global step>/`` (``state.json`` and ``tensors.npz``)
        and then named in ``<checkpoint_dir>/latest``, so an interrupted save never replaces a
        good checkpoint. Returns the checkpoint's folder.
        """
        root = self._checkpoint_root()
        scope = paddle.static.global_scope()
        tensors = self._parameter_entries()
        tensors += [("opt:" + self._stable(stable), name)
                    for stable, name in self.strategy.optimizer_state_names().items()]
        state = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "step_in_epoch": step_in_epoch,
                 "num_classes": self.num_classes, "label_list": self.label_list, "max_seq_len": self.max_seq_len,
                 "num_epoch": self.config.num_epoch, "batch_size": self.config.batch_size,
                 "strategy": self.strategy.state_dict(), "history": self.history}
        name = f"step_{self.strategy.global_step}"
        final = _write_tensors_and_state(root, name, scope, tensors, state)
        _write_atomically(os.path.join(root, _LATEST), name + "\n")
        self._prune_checkpoints(root, keep=name)
        logger.info("checkpoint saved: %s", final)
        return final

    def save_best_model(self):
        """Saves the parameters (no optimizer state) and the last :attr:`history` record to
        ``<checkpoint_dir>/best_model``, replacing what was there; returns the folder.

        :meth:`finetune` calls it after each epoch whose dev accuracy beats every earlier one
        (``RunConfig(save_best_model=False)`` turns that off); :meth:`load_best_model` restores it.
        """
        root = self._checkpoint_root()
        tensors = self._parameter_entries()
        state = {"format": CHECKPOINT_FORMAT, "parameters_only": True, "num_classes": self.num_classes,
                 "label_list": self.label_list, "max_seq_len": self.max_seq_len,
                 "record": self.history[-1] if self.history else None}
        final = _write_tensors_and_state(root, _BEST_MODEL, paddle.static.global_scope(), tensors, state)
        logger.info("best model saved: %s (%s)", final, state["record"])
        return final

    @property
    def best_model_dir(self):
        """``<checkpoint_dir>/best_model`` when it holds a saved model, else None."""
        root = self.config.checkpoint_dir
        path = os.path.join(root, _BEST_MODEL) if root else None
        return path if path and os.path.isfile(os.path.join(path, "state.json")) else None

    def load_best_model(self, path=None):
        """Sets the task's parameters to a best model (default: :attr:`best_model_dir`); returns its
        :attr:`history` record (epoch and metrics). The optimizer and schedule are left as they are."""
        path = path or self.best_model_dir
        if path is None:
            raise FileNotFoundError(f"no best model in {self.config.checkpoint_dir!r}: it is saved by finetune "
                                    "with checkpoint_dir set and dev data given")
        state = self._read_state(path)
        if not state.get("parameters_only"):
            raise ValueError(f"{path} is a training checkpoint; resume it with load_checkpoint")
        with np.load(os.path.join(path, "tensors.npz")) as tensors:
            self._set_parameters(path, tensors)
        logger.info("loaded the best model from %s (%s)", path, state["record"])
        return state["record"]

    def _prune_checkpoints(self, root, keep):
        found = sorted((int(entry[5:]), entry) for entry in os.listdir(root)
                       if entry.startswith("step_") and entry[5:].isdigit())
        others = [entry for _, entry in found if entry != keep]
        for entry in others[:max(0, len(others) - (self.config.max_checkpoints - 1))]:
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)

    def latest_checkpoint(self):
        """The folder ``<checkpoint_dir>/latest`` names, or None."""
        root = self.config.checkpoint_dir
        if not root:
            return None
        try:
            with open(os.path.join(root, _LATEST), encoding="utf-8") as f:
                name = f.read().strip()
        except FileNotFoundError:
            return None
        path = os.path.join(root, name)
        return path if os.path.isfile(os.path.join(path, "state.json")) else None

    def load_checkpoint(self, path=None):
        """Restores a checkpoint (default: the latest); returns ``(epoch, step_in_epoch)`` to go on from, or None.

        The strategy must be bound (as :meth:`finetune` does before calling this).
        """
        path = path or self.latest_checkpoint()
        if path is None:
            return None
        state = self._read_state(path)
        if state.get("parameters_only"):
            raise ValueError(f"{path} holds parameters only (a best model); load it with load_best_model")
        if state["strategy"].get("num_train_steps") != self.strategy.num_train_steps:
            warnings.warn(f"{path} was saved for {state['strategy']['num_train_steps']} training steps; this run "
                          f"has {self.strategy.num_train_steps}: the learning-rate schedule continues on the new "
                          f"length", stacklevel=3)
        self.strategy.set_state_dict(state["strategy"])  # builds the training program of the saved stage
        scope = paddle.static.global_scope()
        with np.load(os.path.join(path, "tensors.npz")) as tensors:
            self._set_parameters(path, tensors)
            for stable, name in self.strategy.optimizer_state_names().items():
                key = "opt:" + self._stable(stable)
                if key in tensors.files:
                    _set_tensor(scope, name, tensors[key], self.place)
                else:
                    logger.warning("%s has no optimizer state %s; it starts fresh", path, stable)
        self.history = list(state.get("history", []))
        logger.info("resumed from %s (epoch %d, step %d of it, global step %d)", path, state["epoch"] + 1,
                    state["step_in_epoch"], self.strategy.global_step)
        return int(state["epoch"]), int(state["step_in_epoch"])

    def _read_state(self, path):
        """``state.json`` of a checkpoint or best model, checked to belong to a task like this one."""
        with open(os.path.join(path, "state.json"), encoding="utf-8") as f:
            state = json.load(f)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: unknown checkpoint format {state.get('format')!r}")
        if state["num_classes"] != self.num_classes or state["label_list"] != self.label_list:
            raise ValueError(f"{path} was saved by a task with num_classes={state['num_classes']}, "
                             f"label_list={state['label_list']}; this task has {self.num_classes}, {self.label_list}")
        return state

    def _set_parameters(self, path, tensors):
        """Sets every parameter from ``tensors`` (the open ``<path>/tensors.npz``), after checking that
        all are there with the network's shapes."""
        params = self._parameters()
        missing = [name for name in params if "param:" + self._stable(name) not in tensors.files]
        if missing:
            raise ValueError(f"{path} does not hold the parameters {missing[:5]}{'...' if len(missing) > 5 else ''}"
                             f"; it was saved for another network")
        arrays = {name: tensors["param:" + self._stable(name)] for name in params}
        for name, param in params.items():
            if tuple(arrays[name].shape) != tuple(param.shape):
                raise ValueError(f"{path}: parameter {name} has shape {list(arrays[name].shape)}, "
                                 f"the network has {list(param.shape)}")
        scope = paddle.static.global_scope()
        for name, array in arrays.items():
            _set_tensor(scope, name, array, self.place)

    def close(self):
        """Frees the head and the optimizer state from the global scope (the module's weights stay)."""
        self.strategy.close()
        paddle.static.global_scope().erase([n for n in self._head_names
                                            if paddle.static.global_scope().find_var(n) is not None])


def _progress(total, initial, description):
    """A tqdm bar on an interactive terminal, else None (progress then goes to logging)."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=description, leave=False, file=sys.stderr)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _set_tensor(scope, name, array, place):
    """Writes ``array`` into the scope variable ``name``, on the place it already lives on (else ``place``)."""
    tensor = scope.var(name).get_tensor()
    if tensor._is_initialized():
        place = concrete_place(tensor._place(), place)
    tensor.set(np.ascontiguousarray(array), place)


def _write_tensors_and_state(root, name, scope, tensors, state):
    """Writes ``<root>/<name>/`` (``tensors.npz`` of ``(key, scope variable)`` pairs and ``state.json``)
    through ``<name>.partial``, so an interrupted save never replaces a complete folder; returns it."""
    final, partial = os.path.join(root, name), os.path.join(root, name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    _save_npz(os.path.join(partial, "tensors.npz"),
              ((key, lambda var=var: np.array(scope.find_var(var).get_tensor())) for key, var in tensors))
    with open(os.path.join(partial, "state.json"), "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, default=_json_default)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final


def _save_npz(path, items):
    """Writes ``(key, make_array)`` pairs as an ``.npz`` that ``np.load`` reads, one array in memory at a time."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, make_array in items:
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(make_array()), allow_pickle=False)


def _write_atomically(path, text):
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, path)


def _move_parameters(program, place):
    """Copies the program's parameters in the global scope to ``place`` (``context()`` loads them on the CPU)."""
    scope = paddle.static.global_scope()
    for param in program.global_block().all_parameters():
        var = scope.find_var(param.name)
        if var is not None and var.get_tensor()._is_initialized():
            var.get_tensor().set(np.array(var.get_tensor()), place)
