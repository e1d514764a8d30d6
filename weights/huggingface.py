"""A Hugging Face BERT folder: ``config.json``, ``vocab.txt`` and ``model.safetensors`` or ``pytorch_model.bin``.

Sharded checkpoints (``*.index.json`` next to the shards) are read too. Safetensors is read with the
``safetensors`` library (numpy); the pickle-based ``pytorch_model.bin`` only on request (``allow_pickle``),
with ``torch.load(weights_only=True)``.
"""

import json
import os

from ..config import BertConfig
from .checks import PickleRefusedError, WeightsError
from .foreign import to_legacy
from .names import huggingface_names

__all__ = ["is_huggingface_dir", "read_huggingface"]

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLE, PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
_WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, PICKLE, PICKLE_INDEX)  # in order of preference

# Buffers saved by some transformers versions; not parameters.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def is_huggingface_dir(path):
    """Whether ``path`` is a folder with ``config.json`` and one of the weight files."""
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        os.path.isfile(os.path.join(path, name)) for name in _WEIGHT_FILES)


def read_huggingface(folder, allow_pickle=False):
    """``(BertConfig, {1.x name: float32 array}, vocab file or None)`` of a Hugging Face folder.

    Keys may carry a ``bert.`` prefix; old ``gamma``/``beta`` names are read as ``weight``/``bias``;
    pretraining heads (``cls.*``) and id buffers are ignored; Linear weights are transposed to ``[in, out]``.
    Names and shapes are not checked here (see check_arrays).
    """
    config = _read_config(os.path.join(folder, "config.json"))
    state = _modern_names(_read_state(folder, allow_pickle), folder)
    arrays = to_legacy(state, huggingface_names(config), folder,
                       ignore=lambda key: key.startswith("cls.") or key in _BUFFERS)
    vocab = os.path.join(folder, "vocab.txt")
    return config, arrays, vocab if os.path.isfile(vocab) else None


def _read_config(path):
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot read Hugging Face config {path}: {e}") from None
    if not isinstance(values, dict):
        raise WeightsError(f"{path}: expected a JSON object")
    for key, wanted in (("model_type", "bert"), ("position_embedding_type", "absolute")):
        if values.get(key, wanted) != wanted:
            raise WeightsError(f"{path}: {key} is {values[key]!r}; this module runs {key} {wanted!r} only")
    try:
        return BertConfig.from_dict(values)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: {e}") from None


def _read_state(folder, allow_pickle):
    present = [name for name in _WEIGHT_FILES if os.path.isfile(os.path.join(folder, name))]
    if not present:
        raise WeightsError(f"{folder}: no weights file ({', '.join(_WEIGHT_FILES)})")
    name = present[0]
    reader = _read_safetensors if name.startswith(SAFETENSORS) else _pickle_reader(folder, name, allow_pickle)
    if not name.endswith(".index.json"):
        return reader(os.path.join(folder, name))
    index = os.path.join(folder, name)
    try:
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise WeightsError(f"cannot read shard index {index}: {e!r}") from None
    state = {}
    for shard in shards:
        state.update(reader(os.path.join(folder, shard)))
    return state


def _read_safetensors(path):
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except Exception as e:  # the library raises its own error types, and OSError/TypeError for bf16 etc.
        raise WeightsError(f"cannot read safetensors file {path}: {e}") from None


def _pickle_reader(folder, name, allow_pickle):
    if not allow_pickle:
        raise PickleRefusedError(
            f"{os.path.join(folder, name)} is a pickle (PyTorch's .bin format), and unpickling a file can run "
            "arbitrary code, so it is refused by default. Prefer model.safetensors; if you trust this file, "
            f"pass {PickleRefusedError.SWITCH} (it is then read with torch.load(weights_only=True)).")
    try:
        import torch
    except ImportError:
        raise WeightsError(f"reading {name} needs PyTorch, which is not installed: install torch, "
                           "or use a model.safetensors checkpoint") from None

    def read(path):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types (pickle, zip, RuntimeError) for a bad file
            raise WeightsError(f"cannot read PyTorch checkpoint {path}: {e}") from None
        if not isinstance(state, dict):
            raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
        return {key: (value.float() if value.dtype == torch.bfloat16 else value).numpy()
                for key, value in state.items()}

    return read


def _modern_names(state, source):
    """Renames old layer-norm ``*.gamma``/``*.beta`` keys to ``*.weight``/``*.bias``."""
    renamed = {}
    for key, value in state.items():
        for old, new in ((".gamma", ".weight"), (".beta", ".bias")):
            if key.endswith(old):
                key = key[:-len(old)] + new
        if key in renamed:
            raise WeightsError(f"{source}: holds {key!r} under both its old and its new name")
        renamed[key] = value
    return renamed
