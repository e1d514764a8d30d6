"""Texts -> BERT features through a Paddle Inference predictor: what ``get_embedding`` runs.

:class:`Embedder` turns samples (``[text_a]``, ``[text_a, text_b]`` or a bare str) into one
``[pooled_feature, seq_feature]`` per sample, in input order:

- ``pooled_feature``: float32 ``(hidden,)``, the pooler output (``tanh(Wp·h[CLS] + bp)``);
- ``seq_feature``: float32 ``(n_tokens, hidden)``, the last layer at the sample's real tokens,
  ``[CLS]`` and ``[SEP]`` included and no padding rows (``n_tokens <= max_seq_len``).

How it runs, and why (measured on a 2-core AVX-512 EPYC, BERT-Large, see ``bench/``):

- The network is exported once as a Paddle inference model (:mod:`.inference_model`, cached
  on disk for weights dirs) and run by a ``paddle.inference`` predictor: oneDNN on the CPU
  with one math thread per CPU this process may use, or the GPU. The export's weights pass
  through a private scope that is dropped right after, so the process holds them once (in
  the predictor).
- The exported graph is :func:`network.build_program` for inference: no dropout ops at all,
  and the encoder runs on ``[batch*seq, hidden]`` rows, so each projection is one GEMM
  (up to 1.8x faster for short texts than one GEMM per sample).
- Two oneDNN passes are left out (``fc_onednn_enable_pass``, ``matmul_add_act_fuse_pass``):
  with them the predictor keeps a repacked copy of all weights for every new input shape
  (+1.2 GB each, up to its cache of 10 shapes) and spends ~0.5 s on each new shape, and
  every batch has a new shape here. ``prepacked_weights=True`` keeps them with that cache
  off: the weights are packed once (one copy per packing layout oneDNN picks) and shared by
  all shapes, which saves the matmuls' per-pass repacking for more memory.
- Samples are sorted by length (longest first) and each batch is padded only to its own
  longest sample; ``batch_size`` is the most samples in one forward pass. On the CPU a batch
  of more than 1024 token rows (for BERT-Large) is run in several passes, each padded to its
  own longest sample: larger activations outgrow the caches and slow every FLOP. Each row
  is cut to its real length and copied out, so results never pin a padded batch.
- ``precision="bf16"`` runs oneDNN's bfloat16 kernels (about 2x faster) on CPUs with
  ``avx512_bf16`` or ``amx_bf16``; features agree with fp32 to a cosine of about 0.9999.
- ``precision="int8"`` runs the int8 export: the encoder's dense layers multiply int8 weights
  (quantized once per output column) by each row of activations quantized on its own range
  (``kernels.linear_int8``, oneDNN's VNNI / AMX kernels); BERT-Large's predictor holds 1.13 GB
  RSS against fp32's 1.75 (the int8 weights, plainly and packed once). Features are close to fp32, not equal (see ``bench/`` for the cosine on a
  trained checkpoint); where this package's kernels can't run, it is the same arithmetic in
  Paddle's float32 ops, slower than fp32.
"""

import contextlib
import logging
import os
import re
import sys
import threading
import typing
import warnings
from collections.abc import Iterator, Mapping

import numpy as np

from .cache import CACHE_ENV, default_cache_dir
from .calibration import calibration_batches
from .device import available_cpus, cpu_supports_bf16, gpu_available
from .feeder import FEED_NAMES, Feeder, check_int, normalize_samples
from .inference_model import InferenceModels
from .memory import release_freed_memory

__all__ = ["CACHE_ENV", "PRECISIONS", "Embedder", "available_cpus", "cpu_supports_bf16", "default_cache_dir"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
_PRECISION_ALIASES = {"fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "int8": "int8"}

# oneDNN passes that keep a repacked copy of the weights per input shape (see the module doc).
_DELETED_ONEDNN_PASSES = ("fc_onednn_enable_pass", "matmul_add_act_fuse_pass")

# With prepacked weights the predictor is rebuilt after this many distinct (batch, length)
# shapes: oneDNN's fully connected kernels keep about 4 MB per shape for BERT-Large until then.
_PREPACKED_SHAPE_LIMIT = 128

# A progress bar appears (when allowed) once a job has more batches than this.
_PROGRESS_MIN_BATCHES = 4
# Samples sorted together by iter_embed, unless told otherwise: large enough that per-chunk
# sorting pads about as little as a global sort.
_DEFAULT_CHUNK = 1024
# On the CPU a forward pass runs at most this many token rows times hidden units (1024 rows
# for BERT-Large): past that the activations outgrow the caches and every FLOP costs more
# (8 x 128 tokens ran at ~415 GFLOP/s, 32 x 128 at ~300), so a larger batch is split.
_CPU_PASS_ELEMENTS = 1 << 20


# -- arguments -----------------------------------------------------------------------------------

def _check_bool(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        expected = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    return bool(value)


def _check_precision(precision):
    key = precision.lower() if isinstance(precision, str) else None
    if key not in _PRECISION_ALIASES:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return _PRECISION_ALIASES[key]


class _Engine(typing.NamedTuple):
    """How forward passes run: what :meth:`Embedder.embed` was asked for (checked values)."""

    use_gpu: bool
    precision: str
    prepacked_weights: bool


class _PredictorKey(typing.NamedTuple):
    """What a predictor is built for; a call needing another key rebuilds it."""

    device: str  # "cpu" or "gpu"
    precision: str
    threads: int  # 0 on the GPU
    prepacked: bool  # oneDNN fully connected kernels on weights packed once (CPU fp32 only)


_INDEX_IN_MESSAGE = re.compile(r"^texts\[(\d+)\]")


@contextlib.contextmanager
def _indexed_from(offset):
    """Errors about ``texts[i]`` of a chunk name ``texts[i + offset]``, the sample's index in the whole input."""
    try:
        yield
    except (TypeError, ValueError) as error:
        if not offset or not _INDEX_IN_MESSAGE.match(str(error)):
            raise
        message = _INDEX_IN_MESSAGE.sub(lambda m: f"texts[{int(m.group(1)) + offset}]", str(error))
        raise type(error)(message) from None


# -- the embedder --------------------------------------------------------------------------------

class Embedder:
    """Runs BERT over texts with a Paddle Inference predictor; see the module documentation.

    Args:
        config: the :class:`.config.BertConfig` of the weights.
        tokenizer: a :class:`.tokenizer.BertTokenizer` (anything :class:`.feeder.Feeder` accepts).
        weights: a weights dir (path; its export is cached on disk), a mapping ``{1.x name:
            float32 array}``, or a callable returning such a mapping or ``(config, mapping)``.
            Read only when the first predictor is built, and not kept: a mapping is exported
            to a private temporary folder that lives as long as this object
            (:class:`.inference_model.InferenceModels`).
        cache_dir: where exports of weights dirs are kept (default :func:`default_cache_dir`);
            ``False`` keeps none (a temporary export per object instead).
        num_threads: CPU math threads; default: every CPU this process may use, looked up
            at each call (the predictor is rebuilt if that changes).
        rows_per_pass: the most token rows (samples x padded length) in one forward pass;
            a batch with more is run in several passes. Default: ``2**20 // hidden_size`` on
            the CPU (1024 for BERT-Large), no limit on the GPU; 0: no limit.

    The predictor is built on first use and reused across calls; it is rebuilt only when
    the device, the precision, ``prepacked_weights`` or the thread count changes, and (with
    prepacked weights) after ``_PREPACKED_SHAPE_LIMIT`` distinct batch shapes. An object may
    be shared by threads: forward passes take turns.
    """

    def __init__(self, config, tokenizer, weights, cache_dir=None, num_threads=None, rows_per_pass=None):
        if isinstance(weights, (str, os.PathLike)):
            weights = os.path.abspath(os.fspath(weights))
        elif not (isinstance(weights, Mapping) or callable(weights)):
            raise TypeError("weights must be a weights dir, a mapping of arrays or a callable returning one, "
                            f"got {type(weights).__name__}")
        self.config = config
        self.tokenizer = tokenizer
        self._models = InferenceModels(config, weights, cache_dir,
                                       calibration=lambda: calibration_batches(tokenizer, config))
        self._num_threads = None if num_threads is None else check_int("num_threads", num_threads, 1)
        self._rows_per_pass = None if rows_per_pass is None else check_int("rows_per_pass", rows_per_pass, 0)
        self._lock = threading.RLock()
        self._predictor = None
        self._predictor_key = None
        self._outputs = None  # (pooled handle, sequence handle) of the current predictor.
        self._shapes_run = set()  # (batch, length) shapes the current predictor has run.
        self._warned_no_gpu = False
        #: How many predictors this object has built (tests and diagnostics).
        self.predictor_builds = 0

    def __repr__(self):
        weights = self._models.weights
        source = weights if isinstance(weights, str) else type(weights).__name__
        return f"{type(self).__name__}(weights={source!r}, predictor={self._predictor_key})"

    # -- public API ---------------------------------------------------------------------------

    def embed(self, texts, batch_size=1, max_seq_len=512, use_gpu=False, precision="fp32", show_progress=None,
              prepacked_weights=False):
        """Features of every sample of ``texts``, as a list in input order.

        Args:
            texts: a list of samples, each ``[text_a]``, ``[text_a, text_b]`` or a str.
            batch_size: the most samples per forward pass.
            max_seq_len: the most tokens per sample (``[CLS]``/``[SEP]`` included), 1 to 512
                (at most the model's ``max_position_embeddings`` is used); longer samples are
                truncated, the longer part of a pair first.
            use_gpu: run on the GPU when Paddle has CUDA and a device; otherwise a warning
                (once per object) and the CPU.
            precision: ``"fp32"``; ``"bf16"`` for oneDNN bfloat16 on CPUs that support it;
                ``"int8"`` for int8 products in the encoder's dense layers (CPU only).
            show_progress: ``None`` shows a progress bar on stderr when it is a terminal and
                the job has several batches; ``True``/``False`` force it on/off.
            prepacked_weights: fp32 on the CPU only (ignored otherwise): run the projections
                with oneDNN's fully connected kernels on weights packed once, instead of
                matmuls that repack them on every pass. Faster (BERT-Large, 2 cores: about
                +7-10 % at batch size 8, +23 % at batch size 1), for more memory: a packed copy
                of the weights (+1.3 GB), a second one once a pass has at most 64 token rows
                (+1.2 GB), and about 4 MB per distinct batch shape, bounded by rebuilding the
                predictor (about 1.5 s) after ``_PREPACKED_SHAPE_LIMIT`` shapes.

        Returns a list of ``[pooled_feature, seq_feature]``: float32 ``(hidden,)`` and
        ``(n_tokens, hidden)``. Raises TypeError/ValueError naming a bad sample or argument
        before anything runs.
        """
        samples = normalize_samples(texts)
        return list(self._iter(samples, batch_size, max_seq_len, use_gpu, precision, show_progress,
                               prepacked_weights, chunk_size=max(1, len(samples)), total=len(samples)))

    def iter_embed(self, texts, batch_size=1, max_seq_len=512, use_gpu=False, precision="fp32",
                   show_progress=None, chunk_size=_DEFAULT_CHUNK, prepacked_weights=False):
        """Like :meth:`embed`, but yields results one by one, in input order, as they are ready.

        ``texts`` may be any iterable (a generator over a file, say); it is read
        ``chunk_size`` samples at a time, and each chunk is length-sorted and run before the
        next is read, so memory holds one chunk's results, not the whole job's. A bad sample
        raises (naming its index in ``texts``) when its chunk is reached.
        """
        total = len(texts) if isinstance(texts, (list, tuple)) else None
        if total is None and not isinstance(texts, Iterator):
            normalize_samples(texts)  # Raises the feeder's error (a bare str, None, a dict, ...).
        chunk_size = check_int("chunk_size", chunk_size, 1)
        return self._iter(texts, batch_size, max_seq_len, use_gpu, precision, show_progress, prepacked_weights,
                          chunk_size=chunk_size, total=total)

    def close(self):
        """Frees the predictor; the next call builds it again (from the export, which is kept)."""
        with self._lock:
            self._predictor = self._outputs = self._predictor_key = None
            self._shapes_run = set()

    # -- running ------------------------------------------------------------------------------

    def _iter(self, texts, batch_size, max_seq_len, use_gpu, precision, show_progress, prepacked_weights,
              chunk_size, total):
        batch_size = check_int("batch_size", batch_size, 1)
        from .network import MAX_SEQ_LEN

        max_seq_len = check_int("max_seq_len", max_seq_len, 1, MAX_SEQ_LEN)
        max_seq_len = min(max_seq_len, self.config.max_position_embeddings)  # A smaller model's own limit.
        show_progress = _check_bool("show_progress", show_progress, allow_none=True)
        engine = _Engine(use_gpu=_check_bool("use_gpu", use_gpu), precision=_check_precision(precision),
                         prepacked_weights=_check_bool("prepacked_weights", prepacked_weights))
        feeder = Feeder(self.tokenizer, max_seq_len=max_seq_len)  # Raises for max_seq_len < 2.
        return self._generate(iter(texts), feeder, batch_size, engine, show_progress, chunk_size, total)

    def _generate(self, texts, feeder, batch_size, engine, show_progress, chunk_size, total):
        bar = None
        offset = 0
        try:
            while True:
                chunk = []
                for sample in texts:
                    chunk.append(sample)
                    if len(chunk) == chunk_size:
                        break
                if not chunk:
                    return
                with _indexed_from(offset):
                    # Checks and encodes the whole chunk before any of it runs.
                    batches = feeder.batches(chunk, batch_size)
                samples = chunk
                results = [None] * len(samples)
                if bar is None:
                    bar = self._progress_bar(show_progress, total, batch_size, len(samples))
                for batch in batches:
                    indices, lengths = batch.indices.tolist(), batch.lengths.tolist()
                    for start, stop in self._passes(lengths, engine.use_gpu):
                        width = max(lengths[start:stop])
                        feeds = {name: array[start:stop, :width] for name, array in batch.feeds.items()}
                        pooled, sequence = self._run(feeds, engine)
                        for row in range(stop - start):
                            # Copies: a result must not keep the padded batch alive.
                            results[indices[start + row]] = [
                                np.array(pooled[row], dtype=np.float32, copy=True),
                                np.array(sequence[row, :lengths[start + row]], dtype=np.float32, copy=True)]
                        del pooled, sequence
                        if bar:
                            bar.update(stop - start)
                offset += len(samples)
                yield from results
                del results
        finally:
            if bar:
                bar.close()

    @staticmethod
    def _progress_bar(show_progress, total, batch_size, first_chunk):
        expected = total if total is not None else first_chunk
        if show_progress is None:
            stream_is_terminal = getattr(sys.stderr, "isatty", lambda: False)()
            show_progress = stream_is_terminal and -(-expected // batch_size) > _PROGRESS_MIN_BATCHES
        if not show_progress:
            return False
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return False
        return tqdm(total=total, unit="text", desc="embedding", file=sys.stderr, dynamic_ncols=True)

    def _passes(self, lengths, use_gpu):
        """``(start, stop)`` row ranges of a batch, one per forward pass (see ``_CPU_PASS_ELEMENTS``)."""
        rows = self._rows_per_pass
        if rows is None:
            rows = 0 if use_gpu and gpu_available() else max(1, _CPU_PASS_ELEMENTS // self.config.hidden_size)
        if not rows:
            yield 0, len(lengths)
            return
        start = 0
        while start < len(lengths):
            stop, longest = start + 1, lengths[start]
            while stop < len(lengths) and (stop + 1 - start) * max(longest, lengths[stop]) <= rows:
                longest = max(longest, lengths[stop])
                stop += 1
            yield start, stop
            start = stop

    def _run(self, feeds, engine):
        """One forward pass; returns ``(pooled [B, hidden], sequence [B, S, hidden])`` as new arrays."""
        with self._lock:
            predictor = self._ensure_predictor(engine)
            shape = feeds["input_ids"].shape
            if self._predictor_key.prepacked and shape not in self._shapes_run:
                if len(self._shapes_run) >= _PREPACKED_SHAPE_LIMIT:
                    # oneDNN's fully connected kernels keep state per shape that only a new
                    # predictor frees; the packed weights are rebuilt with it.
                    log.debug("rebuilding the predictor after %d batch shapes", len(self._shapes_run))
                    self.close()
                    predictor = self._ensure_predictor(engine)
                self._shapes_run.add(shape)
            for name in FEED_NAMES:
                predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(feeds[name], dtype=np.int64))
            predictor.run()
            pooled_handle, sequence_handle = self._outputs
            return pooled_handle.copy_to_cpu(), sequence_handle.copy_to_cpu()

    # -- the predictor ------------------------------------------------------------------------

    def _device(self, use_gpu, precision):
        if use_gpu:
            if gpu_available():
                if precision != "fp32":
                    raise ValueError(f"precision={precision!r} is a CPU (oneDNN) mode; on the GPU use 'fp32'")
                return "gpu"
            if not self._warned_no_gpu:
                self._warned_no_gpu = True
                import paddle

                why = ("Paddle has no GPU device" if paddle.is_compiled_with_cuda()
                       else "this Paddle build has no CUDA (install paddlepaddle-gpu for GPU inference)")
                warnings.warn(f"use_gpu=True but {why}; running on the CPU", RuntimeWarning, stacklevel=2)
                log.warning("use_gpu=True but %s; running on the CPU", why)
        return "cpu"

    def _ensure_predictor(self, engine):
        precision = engine.precision
        device = self._device(engine.use_gpu, precision)
        if device == "cpu" and precision == "bf16" and not cpu_supports_bf16():
            raise RuntimeError("precision='bf16' needs a CPU with avx512_bf16 or amx_bf16 instructions and a "
                               "Paddle build with oneDNN; this machine lacks them, use precision='fp32'")
        threads = self._num_threads or available_cpus()
        prepacked = engine.prepacked_weights and device == "cpu" and precision == "fp32"
        key = _PredictorKey("gpu", "fp32", 0, False) if device == "gpu" else \
            _PredictorKey("cpu", precision, threads, prepacked)
        if self._predictor is not None and key == self._predictor_key:
            return self._predictor
        self.close()  # Free the old one first.
        graph = "int8" if precision == "int8" else "float"
        if graph == "int8":
            self._check_int8_kernel()
        try:
            predictor = self._create_predictor(self._models.prefix(graph), key)
        except Exception:
            if not self._models.discard(graph):  # A damaged cache entry is exported again, once.
                raise
            predictor = self._create_predictor(self._models.prefix(graph), key)
        outputs = [predictor.get_output_handle(name) for name in predictor.get_output_names()]
        # The model is saved with fetches (pooled, sequence); tell them apart by rank all the same.
        outputs.sort(key=lambda handle: len(handle.shape()))
        self._predictor, self._outputs, self._predictor_key = predictor, tuple(outputs), key
        self.predictor_builds += 1
        release_freed_memory()  # What loading and optimizing the program allocated for a while.
        return predictor

    @staticmethod
    def _check_int8_kernel():
        """Registers ``bert_linear_int8`` in this process (a predictor loads it by name), or warns
        that int8 runs on the slow fallback."""
        from . import kernels

        if not kernels.available():
            warnings.warn("precision='int8': this package's kernels can't run here (see the log), so int8 runs "
                          "the same arithmetic in Paddle's float32 ops, slower than fp32", RuntimeWarning,
                          stacklevel=4)

    @staticmethod
    def _create_predictor(prefix, key):
        from paddle import inference

        device, precision, threads, prepacked = key
        config = inference.Config(prefix + ".json", prefix + ".pdiparams")
        config.disable_glog_info()
        if device == "gpu":
            config.enable_use_gpu(256, 0)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(threads)
            import paddle

            if paddle.base.core.is_compiled_with_onednn():
                config.enable_onednn()
                if prepacked:
                    # Keep oneDNN's fully connected kernels, which repack the weights once, but
                    # turn off the per-input-shape cache so that every shape shares the packs.
                    config.set_onednn_cache_capacity(0)
                else:
                    for name in _DELETED_ONEDNN_PASSES:
                        config.delete_pass(name)
                if precision == "bf16":
                    config.enable_onednn_bfloat16()
        log.debug("building a Paddle Inference predictor (%s, %s, %d threads) from %s", device, precision,
                 threads, prefix)
        return inference.create_predictor(config)
