"""Custom operators for training on the CPU, compiled from source on first use.

``bert_adamw`` (``adamw_op.cc``) is Paddle's ``adamw_`` update in one multi-threaded pass (Paddle's
runs on one thread); :class:`..finetune.adamw.AdamW` emits it instead of ``adamw_``.

``bert_dropout`` (``dropout_op.cc``) is dropout with upscaling in training, forward and backward on
every core (Paddle's draws each element's number on one thread); its seed comes from Paddle's CPU
generator, so ``paddle.seed`` makes runs repeat, though its masks differ from Paddle's.

``bert_attention`` (``attention_op.cc``) is the core of BERT's self-attention (scores, softmax,
dropout, the weighted sum of values) in one op that keeps only its inputs and a dropout seed for the
backward pass, and computes the attention probabilities again there.

``bert_layer_norm`` (``layer_norm_op.cc``) is layer normalization over the last axis of ``[M, N]``
rows, forward and backward on every core (Paddle's ``layer_norm_grad`` runs on one thread).

``bert_linear_int8`` (``linear_int8_op.cc``) is a dense layer for inference with int8 products:
weights quantized ahead of time per output column (:mod:`..weights.quantize`), each row of ``x``
quantized on its own range at every call, and oneDNN's AVX512-VNNI / AMX kernels for the product.

``bert_linear`` (``linear_op.cc``) is a dense layer, ``out[M, N] = x[M, K] · w[K, N] + b[N]``, whose
forward and backward run on the oneDNN library inside Paddle's wheel (AVX-512 / AMX kernels); it can
apply GELU to its input, recomputed in the backward pass instead of kept (the feed-forward output).
Paddle 3.3.1's own training matmuls run on its bundled MKL (an AVX2 path at best on AMD CPUs) and its
bias gradient is a slow column reduction; its oneDNN kernels give wrong gradients in training.
With ``bf16=True`` the op's products round their inputs to bfloat16 and accumulate in float32:
mixed precision for the dense layers only; weights, gradients and activations stay float32, and a
bfloat16 copy of each weight matrix lives from its forward pass to its backward pass (one conversion
a step instead of two).

The ops are built into one library, once per Paddle installation and source (under a minute, with
g++), into ``<cache dir>/kernels``. Where it can't be built or used -- no compiler, Paddle without
oneDNN, a GPU present, or ``BERT_CASED_L_24_H_1024_A_16_KERNELS=0`` -- :func:`linear` runs Paddle's
matmul and add, :func:`linear_int8` the same quantized arithmetic in Paddle's float32 ops (slowly),
:func:`layer_norm` Paddle's ``layer_norm``, :func:`dropout` Paddle's ``dropout``, the network its
attention in Paddle's ops and the optimizer Paddle's ``adamw_``: the same numbers in float32 (within
rounding; dropout draws other masks from the same distribution), no bf16.
"""

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import threading

__all__ = ["ADAMW_OP", "ATTENTION_OP", "DROPOUT_OP", "KERNELS_ENV", "LAYER_NORM_OP", "LINEAR_INT8_OP",
           "LINEAR_OP", "TRAINING_PRECISIONS", "adamw_", "attention", "available", "check_training_precision",
           "dropout", "layer_norm", "linear", "linear_int8", "set_linear_precision"]

log = logging.getLogger(__name__)

KERNELS_ENV = "BERT_CASED_L_24_H_1024_A_16_KERNELS"
LINEAR_OP = "bert_linear"
LINEAR_INT8_OP = "bert_linear_int8"
ADAMW_OP = "bert_adamw"
LAYER_NORM_OP = "bert_layer_norm"
DROPOUT_OP = "bert_dropout"
ATTENTION_OP = "bert_attention"
#: ``"bf16"``: mixed precision, the dense layers' products in bfloat16 with float32 sums and weights.
TRAINING_PRECISIONS = ("fp32", "bf16")
_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCES = tuple(os.path.join(_HERE, name) for name in ("linear_op.cc", "linear_int8_op.cc", "adamw_op.cc",
                                                             "layer_norm_op.cc", "dropout_op.cc", "attention_op.cc"))
_HEADERS = tuple(os.path.join(_HERE, name) for name in ("onednn.h", "threads.h", "dropout_mask.h"))
# The PIR names of the op and of its gradient op in a program.
_PROGRAM_OP_NAMES = (f"custom_op.{LINEAR_OP}", f"custom_op.{LINEAR_OP}_grad")

_lock = threading.Lock()
_state = {"available": None}


def linear(x, weight, bias, bf16=False, gelu_input=False):
    """``x · weight + bias`` for ``x`` ``[M, K]`` float32, ``weight`` ``[K, N]``, ``bias`` ``[N]``;
    ``gelu(x) · weight + bias`` (the exact, erf GELU) when ``gelu_input``.

    Runs ``bert_linear`` where it is available (static programs and dynamic mode alike), else
    ``paddle.nn.functional.linear`` (after ``gelu``), which has no bf16 mode: ``bf16`` then changes
    nothing. The op keeps only ``x`` for its backward pass and computes ``gelu(x)`` again there.
    """
    if len(x.shape) == 2 and available():
        from paddle import _C_ops

        return _C_ops._run_custom_op(LINEAR_OP, x, weight, bias, bool(bf16), bool(gelu_input))[0]
    import paddle.nn.functional as F

    return F.linear(F.gelu(x) if gelu_input else x, weight, bias)


def linear_int8(x, factor, weight, scale, shift, bias, gelu=False):
    """A dense layer with int8 products, for inference: ``x`` ``[M, K]`` float32, and the quantized
    layer of :func:`..weights.quantize.quantize_dense`: ``factor`` ``[K]`` float32, ``weight``
    ``[K, N]`` int8, ``scale`` and ``shift`` ``[N]`` float32; ``bias`` ``[N]`` float32. Returns
    float32 ``[M, N]``:

        ``out[m, n] = sx[m] * scale[n] * sum_k round(x[m, k] * factor[k] / sx[m]) * weight[k, n] + bias[n]``,
        ``sx[m] = max_k |x[m, k] * factor[k]| / 127``,

    followed by the exact (erf) GELU when ``gelu``.

    Runs ``bert_linear_int8`` where it is available, else the same arithmetic in Paddle's float32
    ops (``shift`` is the kernel's own correction and unused there; ties may round the other way).
    """
    if len(x.shape) == 2 and available():
        from paddle import _C_ops

        return _C_ops._run_custom_op(LINEAR_INT8_OP, x, factor, weight, scale, shift, bias, bool(gelu))[0]
    import paddle
    import paddle.nn.functional as F

    x = x * factor
    step = paddle.clip(paddle.max(paddle.abs(x), axis=-1, keepdim=True) / 127.0, min=1e-30)
    integers = paddle.round(x / step)
    out = paddle.matmul(integers, weight.astype("float32")) * (step * scale) + bias
    return F.gelu(out) if gelu else out


def attention(q, k, v, bias, num_heads, p):
    """BERT's self-attention core on ``bert_attention``; call only when :func:`available`.

    ``q``, ``k``, ``v``: ``[batch*seq, heads*head_size]`` float32 rows (the projections' outputs);
    ``bias``: ``[batch, 1, 1, seq]``, added to the scores. Returns ``[batch*seq, heads*head_size]``:
    ``dropout(softmax(q_h · k_hᵀ / sqrt(head_size) + bias), p) · v_h`` for each head ``h``, side by
    side. The op keeps ``q``, ``k``, ``v`` and its dropout seed for the backward pass and computes the
    probabilities again there. In a static program its ``is_test`` attribute (set by
    ``network.inference_clone``) turns dropout off.
    """
    from paddle import _C_ops

    return _C_ops._run_custom_op(ATTENTION_OP, q, k, v, bias, int(num_heads), float(p), False)[0]


def layer_norm(x, scale, bias, epsilon):
    """Layer normalization of ``x`` ``[M, N]`` float32 over its last axis with ``scale``, ``bias`` ``[N]``.

    Runs ``bert_layer_norm`` where it is available, else ``paddle.nn.functional.layer_norm``.
    """
    if len(x.shape) == 2 and available():
        from paddle import _C_ops

        return _C_ops._run_custom_op(LAYER_NORM_OP, x, scale, bias, float(epsilon))[0]
    import paddle.nn.functional as F

    return F.layer_norm(x, x.shape[-1:], weight=scale, bias=bias, epsilon=epsilon)


def dropout(x, p):
    """Dropout of float32 ``x`` (any shape) in training: each element zeroed with probability ``p``,
    the others divided by ``1 - p`` (Paddle's ``upscale_in_train``).

    Runs ``bert_dropout`` where it is available and ``0 < p < 1``, else ``paddle.nn.functional.dropout``.
    In a static program the op's ``is_test`` attribute (set by ``network.inference_clone``) makes it
    the identity, as Paddle's dropout.
    """
    if 0.0 < p < 1.0 and available():
        from paddle import _C_ops

        return _C_ops._run_custom_op(DROPOUT_OP, x, float(p), False)[0]
    import paddle.nn.functional as F

    return F.dropout(x, p, training=True)


def adamw_(param, grad, learning_rate, moment1, moment2, beta1_pow, beta2_pow, grad_scale, beta1, beta2, epsilon,
           lr_ratio, coeff, with_decay):
    """Appends (static) or runs (dynamic) ``bert_adamw``, updating ``param``, the moments and the beta
    powers in place; the arguments are ``adamw_``'s, and the update uses ``grad * grad_scale``
    (``grad_scale``: a ``[1]`` float32 tensor, e.g. a global-norm clip's factor). Call only when
    :func:`available`."""
    import paddle
    from paddle import _C_ops

    if paddle.in_dynamic_mode():  # Eager mode refuses in-place ops on a trainable leaf; its detached view shares it.
        param = param.detach()
    _C_ops._run_custom_op(ADAMW_OP, param, grad, learning_rate, moment1, moment2, beta1_pow, beta2_pow, grad_scale,
                          float(beta1), float(beta2), float(epsilon), float(lr_ratio), float(coeff), bool(with_decay))


def set_linear_precision(program, precision):
    """Sets every ``bert_linear`` op of a static ``program`` (and its gradient op) to ``precision``.

    ``precision``: ``"fp32"`` or ``"bf16"`` (mixed precision: bfloat16 products, float32 sums).
    Returns how many ops were set; 0 where the program was built without the op (the fallback).
    Raises ``RuntimeError`` for ``"bf16"`` on a CPU without ``avx512_bf16``/``amx_bf16``.
    """
    precision = check_training_precision(precision)
    count = 0
    for op in program.global_block().ops:
        if op.name() in _PROGRAM_OP_NAMES:
            op.set_bool_attr("bf16", precision == "bf16")
            count += 1
    return count


def check_training_precision(precision):
    """``precision`` if it is one of :data:`TRAINING_PRECISIONS` that this machine can train in.

    ``ValueError`` for another value; ``RuntimeError`` for ``"bf16"`` on a CPU without
    ``avx512_bf16``/``amx_bf16`` (bfloat16 would be emulated, slower than float32) or where the
    ``bert_linear`` kernel is unavailable (its fallback has no bf16 mode).
    """
    if precision not in TRAINING_PRECISIONS:
        raise ValueError(f"precision must be one of {TRAINING_PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        from ..device import cpu_supports_bf16

        if not cpu_supports_bf16():
            raise RuntimeError("bf16 training needs a CPU with avx512_bf16 or amx_bf16 instructions and a Paddle "
                               "build with oneDNN; this machine lacks them, train in 'fp32'")
        if not available():
            raise RuntimeError(f"bf16 training needs the {LINEAR_OP} kernel, which could not be built or is turned "
                               f"off ({KERNELS_ENV}); see the warning logged above, or train in 'fp32'")
    return precision


def available():
    """Whether this package's ops are registered in this process, building and loading them on first call."""
    if _state["available"] is None:
        with _lock:
            if _state["available"] is None:
                _state["available"] = _load()
    return _state["available"]


def _load():
    if os.environ.get(KERNELS_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        log.info("%s is off: training runs on Paddle's own operators", KERNELS_ENV)
        return False
    import paddle

    from ..device import gpu_available

    if gpu_available() or not paddle.base.core.is_compiled_with_onednn():
        return False
    library = os.path.join(os.path.dirname(paddle.__file__), "libs", "libdnnl.so.3")
    if not os.path.exists(library):
        log.warning("Paddle's oneDNN library is not at %s; training runs on Paddle's own operators", library)
        return False
    try:
        shared_object = _build(library)
        names = paddle.utils.cpp_extension.load_op_meta_info_and_register_op(shared_object)
    except Exception as error:  # noqa: BLE001 -- any failure leaves the always-correct fallback.
        log.warning("could not build this package's training kernels (%s); training runs on Paddle's own "
                    "operators (Paddle's matmul), slower", error)
        return False
    return {LINEAR_OP, LINEAR_INT8_OP, ADAMW_OP, LAYER_NORM_OP, DROPOUT_OP, ATTENTION_OP} <= set(names)


def _build(library):
    """Compiles the ops' sources (once per source and Paddle) and returns the shared object's path."""
    import paddle

    from ..cache import default_cache_dir
    from ..weights import install_lock

    digest = hashlib.sha256(paddle.__version__.encode() + library.encode() + sys.version.encode())
    for source in _SOURCES + _HEADERS:
        with open(source, "rb") as f:
            digest.update(f.read())
    name = f"bert_kernels_{digest.hexdigest()[:16]}"
    root = os.path.join(default_cache_dir(), "kernels")
    shared_object = os.path.join(root, name, f"{name}.so")
    if os.path.exists(shared_object):
        return shared_object
    os.makedirs(root, exist_ok=True)
    with install_lock(os.path.dirname(shared_object)):  # One build when several processes start at once.
        if not os.path.exists(shared_object):
            log.info("compiling this package's training kernels once (under a minute) into %s", root)
            with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as build_dir:
                built = os.path.join(build_dir, name, f"{name}.so")
                # A child process: the build prints a lot and changes process-wide settings.
                script = ("import sys\nfrom paddle.utils.cpp_extension import load\n"
                          "load(name=sys.argv[1], sources=sys.argv[4:], build_directory=sys.argv[2],\n"
                          "     extra_cxx_cflags=['-O3', '-fopenmp-simd'], extra_ldflags=[sys.argv[3], '-ldl'],\n"
                          "     verbose=False)\n")
                done = subprocess.run([sys.executable, "-c", script, name, build_dir, library, *_SOURCES],
                                      capture_output=True, text=True)
                if done.returncode != 0 or not os.path.exists(built):
                    output = (done.stdout + done.stderr).strip().splitlines()
                    raise RuntimeError(f"compiling {', '.join(_SOURCES)} failed: " + " | ".join(output[-5:]))
                os.makedirs(os.path.dirname(shared_object), exist_ok=True)
                os.replace(built, shared_object)  # Whole or absent, never half-written.
    return shared_object
