"""The peers bench_embedding.py measures ``get_embedding`` against: one Hugging Face ``BertModel``, run the
fastest ways a user would run it on a CPU -- torch (fp32, bf16) and ONNX Runtime (fp32 with its BERT
fusion, dynamic int8).

Every runner does exactly the job ``get_embedding`` does, with the same batches: tokenize all texts
(``BertTokenizerFast``), sort them by token count (longest first; equal counts keep input order),
cut that order into batches of ``batch_size``, pad each batch to its own longest sample, run it, copy
each output row cut to its sample's real tokens, and return ``[pooled, seq]`` per text in input order.

ONNX Runtime, as its BERT documentation runs it:

- fp32: ``torch.onnx.export`` (the TorchScript exporter, opset 17) of the model with dynamic batch and
  sequence axes, inputs ``input_ids``/``attention_mask``/``token_type_ids``, outputs
  ``last_hidden_state``/``pooler_output``; then ``onnxruntime.transformers.optimizer.optimize_model(...,
  model_type="bert", num_heads=..., hidden_size=...)``, which fuses the embeddings, attention, GELU and
  skip+layer-norm into ORT's own kernels. :func:`fuse` reports the fused operators.
- int8: ``onnxruntime.quantization.quantize_dynamic`` of the fused model, QInt8 weights, per-tensor
  scales (``per_channel=False``: ``quantize_dynamic``'s default and what ORT's BERT helper,
  ``onnxruntime/transformers/quantize_helper.py``, runs), ``DefaultTensorType`` float as that helper
  sets it (shape inference cannot type the outputs of ORT's fused operators). ``per_channel=True``
  is an option of the bench.
- Sessions: ``intra_op_num_threads`` = the bench's threads, ``inter_op_num_threads`` 1, all graph
  optimizations, the CPU execution provider.
"""

import contextlib
import logging
import warnings

import numpy as np


def run_sorted(tokenizer, texts, batch_size, max_seq_len, forward):
    """``[pooled, seq]`` per text in input order, ``forward(input_ids, attention_mask, token_type_ids)`` (int64
    arrays ``[B, S]``) returning ``(pooled [B, hidden], seq [B, S, hidden])`` on length-sorted batches."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_seq_len, return_attention_mask=False)
    ids, types = encoded["input_ids"], encoded["token_type_ids"]
    lengths = np.array([len(i) for i in ids], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    pad = tokenizer.pad_token_id
    results = [None] * len(ids)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = int(lengths[batch].max())
        input_ids = np.full((len(batch), width), pad, dtype=np.int64)
        token_types = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, i in enumerate(batch):
            n = lengths[i]
            input_ids[row, :n], token_types[row, :n], mask[row, :n] = ids[i], types[i], 1
        pooled, sequence = forward(input_ids, mask, token_types)
        for row, i in enumerate(batch):
            results[i] = [np.array(pooled[row], dtype=np.float32), np.array(sequence[row, :lengths[i]], dtype=np.float32)]
    return results


# -- torch --------------------------------------------------------------------------------------------


def torch_forward(model, autocast=False):
    """A ``forward`` for :func:`run_sorted`: ``model`` under ``torch.inference_mode()``, optionally in
    ``torch.autocast("cpu", dtype=torch.bfloat16)``; outputs as float32 numpy arrays."""
    import torch

    def forward(input_ids, mask, token_types):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask),
                        token_type_ids=torch.from_numpy(token_types))
            return out.pooler_output.float().numpy(), out.last_hidden_state.float().numpy()

    return forward


# -- ONNX Runtime -------------------------------------------------------------------------------------

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("last_hidden_state", "pooler_output")


def export_onnx(model, path):
    """``torch.onnx.export`` of a Hugging Face ``BertModel`` with dynamic batch and sequence axes."""
    import torch

    example = torch.ones(2, 8, dtype=torch.long)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS + ("last_hidden_state",)}
    axes["pooler_output"] = {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # Tracer and exporter deprecation warnings.
        torch.onnx.export(model, (example, torch.ones_like(example), torch.zeros_like(example)), str(path),
                          input_names=list(INPUTS), output_names=list(OUTPUTS), dynamic_axes=axes,
                          opset_version=17, do_constant_folding=True, dynamo=False)


def fuse(src, dst, config):
    """ORT's BERT fusion of the export at ``src``, saved at ``dst``; returns ``{fused operator: count}``."""
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet():
        model = optimize_model(str(src), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size)
        stats = {op: n for op, n in model.get_fused_operator_statistics().items() if n}
        model.save_model_to_file(str(dst))
    return stats


def quantize(src, dst, per_channel=False):
    """``quantize_dynamic`` of the fused model at ``src`` to QInt8 weights (see the module docstring)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def ort_session(path, threads):
    """An ``InferenceSession`` on the CPU: ``threads`` intra-op threads, 1 inter-op, all graph optimizations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_forward(session):
    """A ``forward`` for :func:`run_sorted` on an ONNX Runtime session."""
    def forward(input_ids, mask, token_types):
        pooled, sequence = session.run(["pooler_output", "last_hidden_state"], {
            "input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_types})
        return pooled, sequence

    return forward


@contextlib.contextmanager
def _quiet():
    """ORT's tools log advice (pre-processing, fusion progress) at WARNING/INFO on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


# -- the rows, in bench_embedding.py's order ----------------------------------------------------------


def measure_torch(measure, model, tokenizer, batch_size, max_seq_len, bf16, onnx_path):
    """The torch rows through ``measure(name, fn, vs=None, keep=False)``: fp32, then (with ``bf16``) autocast
    bf16; exports ``model`` to ``onnx_path`` in between; then casts ``model`` to bf16 in place for the
    bf16-weights row. The caller drops ``model`` afterwards."""
    import time

    def run(forward):
        return lambda texts: run_sorted(tokenizer, texts, batch_size, max_seq_len, forward)

    measure("torch fp32", run(torch_forward(model)), vs="ours fp32", keep=True)
    if bf16:
        measure("torch bf16 autocast", run(torch_forward(model, autocast=True)), vs="torch fp32")
    t0 = time.perf_counter()
    export_onnx(model, onnx_path)
    print(f"ONNX export {time.perf_counter() - t0:.0f} s", flush=True)
    if bf16:
        model.bfloat16()  # In place: the fp32 weights are not needed any more.
        measure("torch bf16 weights", run(torch_forward(model)), vs="torch fp32")


def measure_ort(measure, tokenizer, batch_size, max_seq_len, config, onnx_path, threads, per_channel=False):
    """The ONNX Runtime rows through ``measure``: fuses the export at ``onnx_path`` (then deletes it), runs the
    fused fp32 model, quantizes it to int8 (then deletes the fp32 file), runs that; one session at a time.
    Returns the fused operators' counts."""
    import gc
    import os
    import pathlib
    import time

    def run(forward):
        return lambda texts: run_sorted(tokenizer, texts, batch_size, max_seq_len, forward)

    onnx_path = pathlib.Path(onnx_path)
    fused_path, int8_path = onnx_path.with_name("fused.onnx"), onnx_path.with_name("int8.onnx")
    t0 = time.perf_counter()
    fused = fuse(onnx_path, fused_path, config)
    os.remove(onnx_path)
    print(f"ORT BERT fusion {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{op} {n}" for op, n in sorted(fused.items())), flush=True)
    if fused.get("Attention", 0) != config.num_hidden_layers:
        print(f"WARNING: ORT fused {fused.get('Attention', 0)} of {config.num_hidden_layers} attention layers; "
              "its rows are not its best", flush=True)
    session = ort_session(fused_path, threads)
    measure("ORT fp32 fused", run(ort_forward(session)), vs="torch fp32", keep=True)
    del session
    gc.collect()
    t0 = time.perf_counter()
    quantize(fused_path, int8_path, per_channel=per_channel)
    os.remove(fused_path)
    print(f"ORT int8 quantization ({'per-channel' if per_channel else 'per-tensor'}) "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    session = ort_session(int8_path, threads)
    measure("ORT int8", run(ort_forward(session)), vs="ORT fp32 fused")
    del session
    gc.collect()
    os.remove(int8_path)
    return fused
