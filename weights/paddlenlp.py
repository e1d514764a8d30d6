"""A PaddleNLP ``.pdparams`` state dict (``bert.embeddings.*``, ``bert.encoder.layers.{i}.*``, ...).

A ``.pdparams`` file is a pickle. By default it is read with an unpickler that builds only numpy arrays and
plain containers, which is all ``paddle.save`` writes for a state dict, and refuses anything else; with
``allow_pickle=True`` it is read with ``paddle.load`` instead, which runs whatever the pickle asks for.
"""

import collections
import pickle

import numpy as np

from .checks import PickleRefusedError, WeightsError
from .foreign import to_legacy
from .names import paddlenlp_names

__all__ = ["read_paddlenlp"]

_STRUCTURE_KEY = "StructuredToParameterName@@"  # name table paddle.save adds to a Layer's state dict

_RECONSTRUCT = np.ndarray(0).__reduce__()[0]  # numpy's array unpickling helper, whatever module it lives in
_SAFE_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


def read_paddlenlp(path, config, allow_pickle=False):
    """``{1.x name: float32 array}`` from a PaddleNLP BERT state dict; ``config`` gives the layer count.

    Keys may carry a ``bert.`` prefix; pretraining heads (``cls.*``) and id buffers are ignored. Linear weights
    are already ``[in, out]``. Names and shapes are not checked here (see check_arrays).
    """
    state = _load_with_paddle(path) if allow_pickle else _load_restricted(path)
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    state = {key: value for key, value in state.items() if key != _STRUCTURE_KEY}
    return to_legacy(state, paddlenlp_names(config), path,
                     ignore=lambda key: key.startswith("cls.") or key.endswith("position_ids"))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, f, path):
        super().__init__(f, encoding="latin1")
        self.path = path

    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[module, name]
        except KeyError:
            raise PickleRefusedError(
                f"{self.path}: the pickle refers to {module}.{name}, which a plain state dict does not, so it is "
                f"refused. If you trust this file, pass {PickleRefusedError.SWITCH} to read it with paddle.load.") \
                from None


def _load_restricted(path):
    try:
        with open(path, "rb") as f:
            return _StateDictUnpickler(f, path).load()
    except WeightsError:
        raise
    except Exception as e:  # unpickling a bad file raises many types (UnpicklingError, EOFError, ValueError, ...)
        raise WeightsError(f"cannot read PaddleNLP state dict {path}: {e!r}") from None


def _load_with_paddle(path):
    import paddle

    try:
        return paddle.load(path, return_numpy=True)
    except Exception as e:  # paddle.load raises many types for a bad file
        raise WeightsError(f"cannot read PaddleNLP state dict {path} with paddle.load: {e!r}") from None
