"""Errors of the weights package and the checks every set of weights must pass before use."""

import logging

import numpy as np

from .names import legacy_parameter_shapes

__all__ = ["WeightsError", "MissingWeightsError", "PickleRefusedError", "check_arrays", "to_float32", "read_vocab",
           "check_vocab", "SPECIAL_TOKENS", "CHECKS"]

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# What check_arrays and check_vocab verify, as recorded in an install's manifest.
CHECKS = ("names", "shapes", "dtypes", "finite", "vocab_size", "special_tokens")


class WeightsError(Exception):
    """Weights that cannot be read, do not fit the configuration, or cannot be installed."""


class MissingWeightsError(WeightsError):
    """No installed weights where the package looked for them."""


class PickleRefusedError(WeightsError):
    """A pickle that could run code, refused because pickles were not allowed.

    The message names the Python switch ``allow_pickle=True``; :meth:`naming` words it for another
    interface (``--allow-pickle`` on the command line).
    """

    SWITCH = "allow_pickle=True"

    def naming(self, switch):
        return str(self).replace(self.SWITCH, switch)


def check_arrays(arrays, config, source=None):
    """Raises one WeightsError listing every missing, unexpected, mis-shaped, non-float and non-finite array.

    ``arrays`` maps 1.x names (no hub prefix) to arrays; ``config`` gives the expected shapes
    (fully connected weights ``[in, out]``). ``source`` names where the arrays came from, for the message.
    """
    expected = legacy_parameter_shapes(config)
    missing = [name for name in expected if name not in arrays]
    unexpected = sorted(name for name in arrays if name not in expected)
    problems = []
    for name, shape in expected.items():
        if name not in arrays:
            continue
        array = arrays[name]
        if tuple(array.shape) != shape:
            problems.append(f"{name}: expected shape {shape}, got {tuple(array.shape)}")
        elif array.dtype.kind != "f":
            problems.append(f"{name}: expected floating point values, got dtype {array.dtype}")
        elif not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            problems.append(f"{name}: {bad} of {array.size} values are NaN or infinite")
    if not (missing or unexpected or problems):
        return
    sections = [f"weights{f' from {source}' if source else ''} do not fit the configuration "
                f"(hidden_size={config.hidden_size}, num_hidden_layers={config.num_hidden_layers}, "
                f"intermediate_size={config.intermediate_size}, vocab_size={config.vocab_size}; "
                f"shapes in 1.x layout, fully connected weights [in, out]):"]
    for title, lines in (("missing", missing), ("unexpected", unexpected), ("wrong", problems)):
        if lines:
            sections.append(f"{len(lines)} {title}:\n  " + "\n  ".join(lines))
    raise WeightsError("\n".join(sections))


def to_float32(array, what):
    """``array`` as a float32 ndarray; float16/float64 are converted (logged), other dtypes raise naming ``what``."""
    array = np.asarray(array)
    if array.dtype == np.float32:
        return array
    if array.dtype.kind != "f":
        raise WeightsError(f"{what}: a parameter must hold floating point values, got dtype {array.dtype}")
    log.info("%s: converting %s to float32", what, array.dtype)
    return array.astype(np.float32)


def read_vocab(vocab_file):
    """The tokens of a vocabulary file, one a line, read as Hugging Face's BertTokenizer reads them."""
    try:
        with open(vocab_file, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f.readlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise WeightsError(f"cannot read vocabulary file {vocab_file}: {e}") from None


def check_vocab(vocab_file, config):
    """Raises WeightsError unless ``vocab_file`` has ``config.vocab_size`` lines and all SPECIAL_TOKENS."""
    tokens = read_vocab(vocab_file)
    problems = []
    if len(tokens) != config.vocab_size:
        problems.append(f"it has {len(tokens)} lines, the configuration's vocab_size is {config.vocab_size}")
    present = set(tokens)
    absent = [token for token in SPECIAL_TOKENS if token not in present]
    if absent:
        problems.append(f"special tokens missing: {' '.join(absent)}")
    if problems:
        raise WeightsError(f"vocabulary file {vocab_file} does not fit: " + "; ".join(problems))
