"""Pretrained weights: reading every supported checkpoint format, checking, installing and finding them.

Arrays are keyed by 1.x parameter names without the hub prefix (see :mod:`.names`), fully connected
weights ``[in, out]``, float32. Importing this package imports neither paddle nor torch.
"""

import collections
import logging
import os
import tarfile

from ..config import DEFAULT_CONFIG_FILE, BertConfig
from .archive import read_archive
from .casing import Casing, read_casing_in_json
from .checks import (MissingWeightsError, PickleRefusedError, WeightsError, check_arrays, check_vocab, read_vocab,
                     to_float32)
from .huggingface import is_huggingface_dir, read_huggingface
from .legacy import keep_parameters, read_dense_tensor, read_params_dir, write_dense_tensor, write_params_dir
from .paddlenlp import read_paddlenlp
from .store import (WEIGHTS_ENV, default_weights_dir, file_sha256, find_weights, hub_home, install, install_lock,
                    installed_casing, is_weights_dir, load_weights, read_manifest, read_weights_config, told_casing)

__all__ = ["WeightsError", "MissingWeightsError", "PickleRefusedError", "Checkpoint", "read_checkpoint", "convert",
           "install", "find_weights", "default_weights_dir", "is_weights_dir", "load_weights", "read_manifest",
           "read_weights_config", "check_arrays", "check_vocab", "read_vocab", "read_dense_tensor",
           "write_dense_tensor", "read_params_dir", "write_params_dir", "WEIGHTS_ENV", "PACKAGE_VOCAB_FILE",
           "file_sha256", "Casing", "installed_casing", "hub_home", "install_lock"]

log = logging.getLogger(__name__)

PACKAGE_VOCAB_FILE = os.path.join(os.path.dirname(DEFAULT_CONFIG_FILE), "vocab.txt")

Checkpoint = collections.namedtuple("Checkpoint", "config arrays vocab_file source_format casing")
Checkpoint.__doc__ = """A checkpoint read into memory: BertConfig, {1.x name: float32 array}, its vocab file or None,
its format: "paddlehub-1.x" (folder), "paddlehub-1.x-archive", "huggingface" or "paddlenlp", and the Casing its
files state (None when they say nothing; see :mod:`.casing`)."""

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")


def read_checkpoint(path, config=None, allow_pickle=False, progress=None):
    """Reads and checks the checkpoint at ``path``, telling its format from what it finds; returns a Checkpoint.

    ``path`` is a weights dir or 1.x assets folder (has ``params/``), an installed 1.x module folder (has
    ``assets/params/``, files named with the hub prefix), a 1.x archive (``.tar.gz`` etc.: the assets, the module
    folder, or Paddle's release archive with its pretraining heads, which are skipped),
    a Hugging Face folder (``config.json`` + ``model.safetensors``/``pytorch_model.bin``) or a PaddleNLP
    ``.pdparams`` file. ``config`` is used where the checkpoint carries none (PaddleNLP, some 1.x assets;
    default: the package's bert-large-cased configuration) and must equal the checkpoint's own where it
    carries one. ``allow_pickle`` permits pickle files that can run code (``pytorch_model.bin``, and
    ``.pdparams`` that are more than plain state dicts). ``progress(stage, done, total)`` is called while
    1.x parameter files are read. Raises WeightsError naming every problem found.
    An archive's vocab is copied to a temporary folder that is removed when the interpreter exits.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        if not is_weights_dir(path) and is_weights_dir(os.path.join(path, "assets")):  # an installed 1.x module
            path = os.path.join(path, "assets")
        if is_weights_dir(path):
            own = read_weights_config(path) if os.path.isfile(os.path.join(path, "bert_config.json")) else None
            config = _agreed_config(own, config, path)
            arrays = read_params_dir(os.path.join(path, "params"), config, progress)
            vocab = os.path.join(path, "vocab.txt")
            checkpoint = Checkpoint(config, arrays, vocab if os.path.isfile(vocab) else None, "paddlehub-1.x",
                                    told_casing(path))
        elif is_huggingface_dir(path):
            own, arrays, vocab = read_huggingface(path, allow_pickle)
            checkpoint = Checkpoint(_agreed_config(own, config, path), arrays, vocab, "huggingface",
                                    read_casing_in_json(os.path.join(path, "tokenizer_config.json")))
        else:
            raise WeightsError(f"{path} is neither a weights/1.x assets folder (no params/ folder) nor a Hugging "
                               "Face folder (config.json with model.safetensors or pytorch_model.bin)")
    elif os.path.isfile(path):
        if path.endswith(".pdparams"):
            config = _agreed_config(None, config, path)
            checkpoint = Checkpoint(config, read_paddlenlp(path, config, allow_pickle), None, "paddlenlp", None)
        elif path.endswith(_ARCHIVE_SUFFIXES) or tarfile.is_tarfile(path):
            tensors, own, vocab, casing = read_archive(path, progress)
            config = _agreed_config(own, config, path)
            arrays = {name: to_float32(tensors[name], f"{path}: {name}")
                      for name in keep_parameters(tensors, config, path)}
            checkpoint = Checkpoint(config, arrays, vocab, "paddlehub-1.x-archive", casing)
        else:
            raise WeightsError(f"cannot tell the format of {path}: expected a PaddleNLP .pdparams file or a 1.x "
                               f"assets archive ({', '.join(_ARCHIVE_SUFFIXES)}); for a Hugging Face checkpoint "
                               "give its folder")
    else:
        raise WeightsError(f"no such file or folder: {path}")
    check_arrays(checkpoint.arrays, checkpoint.config, source=path)
    return checkpoint


def convert(path, dest_dir=None, config=None, allow_pickle=False, vocab_file=None, progress=None):
    """Reads the checkpoint at ``path`` (see read_checkpoint) and installs it as the weights dir ``dest_dir``
    (default: default_weights_dir()); returns the installed dir.

    The vocab installed is ``vocab_file`` if given, else the checkpoint's own, else the package's
    ``assets/vocab.txt``; the manifest records which, and whether it equals the package's vocabulary (a
    different one of the right size is accepted, with a warning), and whether the checkpoint lower-cases
    (see :mod:`.casing`; a warning when it cannot be told).
    """
    checkpoint = read_checkpoint(path, config, allow_pickle, progress)
    if vocab_file:
        vocab, vocab_from = vocab_file, "argument"
    elif checkpoint.vocab_file:
        vocab, vocab_from = checkpoint.vocab_file, "checkpoint"
    else:
        vocab, vocab_from = PACKAGE_VOCAB_FILE, "package"
    check_vocab(vocab, checkpoint.config)
    matches = read_vocab(vocab) == read_vocab(PACKAGE_VOCAB_FILE)
    if not matches:
        log.warning("the vocabulary %s differs from the package's %s; installing it since its size fits",
                    vocab, PACKAGE_VOCAB_FILE)
    source_info = {"format": checkpoint.source_format, "path": os.path.abspath(os.path.expanduser(path)),
                   "vocab_from": vocab_from, "vocab_matches_package": matches}
    return install(checkpoint.arrays, checkpoint.config, vocab, dest_dir or default_weights_dir(), source_info,
                   progress, casing=checkpoint.casing)


def _agreed_config(own, given, source):
    """The checkpoint's own config, which a given one must equal; else the given one, else the package default."""
    if own is None:
        return given or BertConfig.from_json_file(DEFAULT_CONFIG_FILE)
    if given is not None and given != own:
        diffs = [f"{key}: checkpoint {value!r}, given {getattr(given, key)!r}"
                 for key, value in own.to_dict().items() if getattr(given, key) != value]
        raise WeightsError(f"{source} carries its own configuration, which differs from the one given: "
                           + "; ".join(diffs))
    return own
