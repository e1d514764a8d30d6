"""How large each input channel of the encoder's dense layers runs, for the int8 export.

Trained BERTs have a few input channels whose values run far larger than the rest, in the same
channels for every token. :func:`weights.quantize.quantize_encoder` moves that spread into the
weights (SmoothQuant), which needs each channel's largest ``|value|``: :func:`dense_input_ranges`
runs the float network over calibration texts (``assets/calibration.txt``, English prose of
everyday topics) and records it.
"""

import os

import numpy as np

from .feeder import Feeder

__all__ = ["CALIBRATION_TEXTS", "calibration_batches", "dense_input_ranges"]

CALIBRATION_TEXTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "calibration.txt")
_MAX_SEQ_LEN = 128
_BATCH_SIZE = 8


def calibration_batches(tokenizer, config):
    """Feed dicts (``FEED_NAMES`` -> int64 ``[batch, seq]``) of the calibration texts, tokenized by
    ``tokenizer``, at most 128 tokens or ``config.max_position_embeddings`` long."""
    try:
        with open(CALIBRATION_TEXTS, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError as e:
        raise FileNotFoundError(f"the int8 calibration texts are missing ({e}); reinstall the package") from None
    feeder = Feeder(tokenizer, max_seq_len=min(_MAX_SEQ_LEN, config.max_position_embeddings))
    return [batch.feeds for batch in feeder.batches(texts, _BATCH_SIZE)]  # Each padded to its longest text.


def dense_input_ranges(config, arrays, batches):
    """``{1.x weight name: float32 [in]}``: the largest ``|input|`` of each encoder dense layer, per
    input channel, over the feed dicts ``batches``, through the float network with ``arrays``."""
    import paddle

    from .network import build_program, set_parameters, static_mode
    from .weights.names import HUB_PREFIX

    with static_mode():
        bert = build_program(config, max_seq_len=None, trainable=False, training=False)
        targets = {}
        with paddle.static.program_guard(bert.program, bert.startup_program):
            for op in list(bert.program.global_block().ops):
                if op.name() != "pd_op.matmul":
                    continue
                weight = op.operand_source(1).get_defining_op()
                name = weight.attrs().get("parameter_name", "") if weight.name() == "builtin.parameter" else ""
                if name.startswith(HUB_PREFIX + "encoder_layer_"):
                    targets[name[len(HUB_PREFIX):]] = paddle.max(paddle.abs(op.operand_source(0)), axis=0)
        if not targets:
            raise RuntimeError("found no encoder dense layer in the float program to calibrate")
        names = sorted(targets)
        ranges = {}
        scope = paddle.static.Scope()
        try:
            set_parameters(bert.program, arrays, scope=scope)
            executor = paddle.static.Executor(paddle.CPUPlace())
            with paddle.static.scope_guard(scope):
                for feeds in batches:
                    values = executor.run(bert.program, feed=feeds, fetch_list=[targets[n] for n in names])
                    for name, value in zip(names, values):
                        ranges[name] = np.maximum(ranges.get(name, 0.0), value)
        finally:
            scope.erase(list(scope.local_var_names()))
    return {name: np.asarray(value, dtype=np.float32) for name, value in ranges.items()}
