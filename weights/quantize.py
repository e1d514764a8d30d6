"""Float32 weights -> the int8 encoder of ``network.build_program(..., int8=True)``.

Each dense layer of the encoder, weight ``w`` ``[in, out]``, becomes (parameters ``<name>.w_0``,
``.w_0_factor``, ``.w_0_scale``, ``.w_0_shift``, and its bias ``.b_0``):

- ``factor`` ``[in]``: what the kernel multiplies its input channels by before quantizing them.
  With the largest ``|input|`` of each channel (``input_range``, from calibration), channels that run
  large are scaled down and their weight rows up by the same amount, SmoothQuant's
  ``s = input_range ** a / max_n |w[k, n]| ** (1 - a)``, ``factor = 1 / s``, which splits the spread
  between activations and weights. Without ranges, ``factor`` is 1.
- ``weight`` int8: ``w * s`` quantized symmetrically per output column, ``scale[n] = max_k |w s| / 127``.
- ``shift[n] = -128 * scale[n] * sum_k weight[k, n]``: what the ``bert_linear_int8`` kernel subtracts
  for feeding its inputs to the product as uint8 (value + 128).

The query, key and value projections are merged into one ``[hidden, 3 * hidden]`` layer
(``names.QKV_FC``). Embeddings, layer norms and the pooler stay float32.
"""

import numpy as np

from .names import QKV_FC

__all__ = ["quantize_dense", "quantize_encoder"]

_PROJECTIONS = ("multi_head_att_query_fc", "multi_head_att_key_fc", "multi_head_att_value_fc")
_OTHER_DENSE = ("multi_head_att_output_fc", "ffn_fc_0", "ffn_fc_1")
# SmoothQuant's migration strength a. On all-MiniLM-L6-v2 (a numpy simulation of this scheme, 64 texts),
# the smallest pooled cosine to fp32 was 0.9972 at a = 0.35, 0.9987 at 0.5, 0.9991 at 0.65, 0.9990 at 0.8.
_MIGRATION = 0.65
# Bounds of the smoothing factor s, so that a dead channel or weight row cannot make it 0 or inf.
_SMOOTHING_BOUNDS = (1e-3, 1e3)


def quantize_dense(weight, input_range=None):
    """``{"factor", "weight", "scale", "shift"}`` of float ``weight`` ``[in, out]`` (see the module
    documentation); ``input_range``: float ``[in]``, each input channel's largest ``|value|``, or None."""
    weight = np.asarray(weight, dtype=np.float32)
    if weight.ndim != 2:
        raise ValueError(f"a dense weight is [in, out], got shape {weight.shape}")
    if not np.isfinite(weight).all():
        raise ValueError("the weight has NaN or infinite values; they cannot be quantized")
    smoothing = np.ones(weight.shape[0], dtype=np.float64)
    if input_range is not None:
        input_range = np.asarray(input_range, dtype=np.float64)
        if input_range.shape != (weight.shape[0],):
            raise ValueError(f"input_range has shape {input_range.shape}, the weight {weight.shape[0]} inputs")
        row_range = np.abs(weight).max(axis=1).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            smoothing = input_range ** _MIGRATION / row_range ** (1.0 - _MIGRATION)
        smoothing = np.where(np.isfinite(smoothing) & (smoothing > 0), smoothing, 1.0).clip(*_SMOOTHING_BOUNDS)
    smoothed = weight * smoothing[:, None].astype(np.float32)
    largest = np.abs(smoothed).max(axis=0)
    scale = np.where(largest > 0, largest / 127.0, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(smoothed / scale), -127, 127).astype(np.int8)
    shift = (-128.0 * scale.astype(np.float64) * quantized.sum(axis=0, dtype=np.int64)).astype(np.float32)
    return {"factor": (1.0 / smoothing).astype(np.float32), "weight": quantized, "scale": scale, "shift": shift}


def _store(out, name, weight, bias, input_range):
    layer = quantize_dense(weight, input_range)
    for suffix, key in ((".w_0", "weight"), (".w_0_factor", "factor"), (".w_0_scale", "scale"),
                        (".w_0_shift", "shift")):
        out[name + suffix] = layer[key]
    out[name + ".b_0"] = np.asarray(bias, dtype=np.float32)


def quantize_encoder(config, arrays, input_ranges=None):
    """The parameters of ``config``'s int8 program from float ``arrays`` (``{1.x name: array}``).

    ``input_ranges``: ``{1.x weight name: float [in]}`` (``calibration.dense_input_ranges``), or None
    for no smoothing. Returns a new dict: every array that is not an encoder dense layer's, as it
    is, plus each layer's quantized dense layers. Raises ``KeyError`` naming a missing array.
    """
    consumed = set()
    ranges = input_ranges or {}

    def take(name):
        if name not in arrays:
            raise KeyError(f"no weights for {name!r}")
        consumed.add(name)
        return arrays[name]

    out = {}
    for index in range(config.num_hidden_layers):
        prefix = f"encoder_layer_{index}_"
        weights = [take(prefix + name + ".w_0") for name in _PROJECTIONS]
        biases = [take(prefix + name + ".b_0") for name in _PROJECTIONS]
        qkv_range = ranges.get(prefix + _PROJECTIONS[0] + ".w_0")  # The three share their input.
        _store(out, prefix + QKV_FC, np.concatenate(weights, axis=1), np.concatenate(biases), qkv_range)
        for name in _OTHER_DENSE:
            _store(out, prefix + name, take(prefix + name + ".w_0"), take(prefix + name + ".b_0"),
                   ranges.get(prefix + name + ".w_0"))
    for name, array in arrays.items():
        if name not in consumed:
            out[name] = array
    return out
