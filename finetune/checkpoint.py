"""Checkpoints of a fine-tuning task: saving, resuming and the best model, as ``state.json`` + ``tensors.npz``.

A folder is written through ``<name>.partial`` and renamed when complete, so an interrupted save never
replaces a good one. Parameters are keyed by their name less the task's tag, so a new task reads them.
"""

import json
import logging
import os
import shutil
import warnings
import zipfile

import numpy as np
import paddle

from .strategy import concrete_place

__all__ = ["CHECKPOINT_FORMAT", "CheckpointMixin"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_LATEST = "latest"
_BEST_MODEL = "best_model"


class CheckpointMixin:
    """Checkpoint I/O of :class:`.task.TextClassifierTask`.

    Uses the task's ``config`` (``checkpoint_dir``, ``max_checkpoints``), ``strategy``, ``history``,
    ``num_classes``, ``label_list``, ``max_seq_len``, ``place``, ``_program`` and ``_tag``.
    """

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
