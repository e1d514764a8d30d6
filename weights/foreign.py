"""Renames a foreign state dict (Hugging Face or PaddleNLP names) to 1.x names and layout."""

import numpy as np

from .checks import WeightsError, to_float32

__all__ = ["to_legacy"]


def to_legacy(state, names, source, ignore):
    """``{1.x name: float32 array}`` from ``state`` ``{foreign name: array}``.

    ``names`` is ``huggingface_names(config)`` or ``paddlenlp_names(config)``; a ``bert.`` prefix on state keys
    is optional; keys for which ``ignore(key without prefix)`` is true (pretraining heads, buffers) are dropped;
    weights marked for transposition are transposed to ``[in, out]``. Keys that match nothing are kept under
    their own name so that check_arrays reports them as unexpected. Two keys for one parameter raise.
    """
    legacy_of = {foreign: (legacy, transpose) for legacy, (foreign, transpose) in names.items()}
    arrays, origin = {}, {}
    for key, value in state.items():
        short = key[len("bert."):] if key.startswith("bert.") else key
        if ignore(short):
            continue
        name, transpose = legacy_of.get(short, (key, None))  # transpose None: an unexpected key
        if name in arrays:
            raise WeightsError(f"{source}: both {origin[name]!r} and {key!r} hold parameter {short!r}")
        if transpose is not None:
            value = to_float32(value, f"{source}: {key}")
            value = np.asarray(value.T, order="C") if transpose else value
        arrays[name], origin[name] = value, key
    return arrays
