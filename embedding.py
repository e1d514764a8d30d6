"""Texts -> BERT features through a Paddle Inference predictor: what ``get_embedding`` runs.

:class:`Embedder` turns samples (``[text_a]``, ``[text_a, text_b]`` or a bare str) into one
``[pooled_feature, seq_feature]`` per sample, in input order:

- ``pooled_feature``: float32 ``(hidden,)``, the pooler output (``tanh(Wp·h[CLS] + bp)``);
- ``seq_feature``: float32 ``(n_tokens, hidden)``, the last layer at the sample's real tokens,
  ``[CLS]`` and ``[SEP]`` included and no padding rows (``n_tokens <= max_seq_len``).

How it runs, and why (measured on a 2-core AVX-512 EPYC, BERT-Large, see ``bench/``):

- The network is exported once as a Paddle inference model (PIR ``.json`` + ``.pdiparams``)
  and run by a ``paddle.inference`` predictor: oneDNN on the CPU with one math thread per
  CPU this process may use, or the GPU. The export is cached on disk, keyed by the weights'
  identity, the configuration and the Paddle version, so later processes skip it; its
  weights pass through a private scope that is dropped right after, so the process holds
  them once (in the predictor).
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
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import types
import typing
import warnings
import weakref
from collections.abc import Iterator, Mapping

import numpy as np

from .cache import CACHE_ENV, default_cache_dir
from .device import available_cpus, cpu_supports_bf16, gpu_available
from .feeder import FEED_NAMES, Feeder, check_int, normalize_samples
from .memory import release_freed_memory
from .weights import file_sha256

__all__ = ["CACHE_ENV", "PRECISIONS", "Embedder", "available_cpus", "cpu_supports_bf16", "default_cache_dir",
           "export_inference_model"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
_PRECISION_ALIASES = {"fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16"}

# Bump when the exported graph changes: cached exports made by older code are then not reused.
_EXPORT_VERSION = 1
_MODEL_PREFIX = "model"
_INFO_FILE = "export.json"

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


# -- the exported inference model ----------------------------------------------------------------

def export_inference_model(config, arrays, dest_dir):
    """Writes the inference model of ``config`` with ``arrays`` (``{1.x name: array}``) to ``dest_dir``.

    The weights go through a private scope, never ``paddle.static.global_scope()``, and the
    scope is emptied before returning. Leaves Paddle's dynamic/static mode as it found it.
    Returns the path prefix of ``<prefix>.json`` and ``<prefix>.pdiparams``.
    """
    import paddle

    from .network import build_program, set_parameters, static_mode

    prefix = os.path.join(dest_dir, _MODEL_PREFIX)
    with static_mode():
        bert = build_program(config, max_seq_len=None, trainable=False, training=False)
        feeds = [bert.inputs[name] for name in FEED_NAMES]
        fetches = [bert.outputs["pooled_output"], bert.outputs["sequence_output"]]
        scope = paddle.static.Scope()
        try:
            set_parameters(bert.program, arrays, scope=scope)
            executor = paddle.static.Executor(paddle.CPUPlace())
            with paddle.static.scope_guard(scope):
                paddle.static.save_inference_model(prefix, feeds, fetches, executor, program=bert.program)
        finally:
            # Scopes made from Python stay in Paddle's scope pool until the process exits, so
            # dropping the object frees nothing: empty it.
            scope.erase(list(scope.local_var_names()))
    return prefix


def _weights_dir_identity(weights_dir):
    """What tells one weights dir's content from another's without reading 1.3 GB: the manifest and
    configuration bytes, and each parameter file's name, size and modification time."""
    identity = {}
    for name in ("manifest.json", "bert_config.json"):
        path = os.path.join(weights_dir, name)
        identity[name] = file_sha256(path) if os.path.isfile(path) else None
    params = os.path.join(weights_dir, "params")
    entries = []
    with os.scandir(params) as it:
        for entry in sorted(it, key=lambda e: e.name):
            stat = entry.stat()
            entries.append([entry.name, stat.st_size, stat.st_mtime_ns])
    identity["params"] = entries
    return identity


# -- the embedder --------------------------------------------------------------------------------

class Embedder:
    """Runs BERT over texts with a Paddle Inference predictor; see the module documentation.

    Args:
        config: the :class:`.config.BertConfig` of the weights.
        tokenizer: a :class:`.tokenizer.BertTokenizer` (anything :class:`.feeder.Feeder` accepts).
        weights: a weights dir (path; its export is cached on disk), a mapping ``{1.x name:
            float32 array}``, or a callable returning such a mapping or ``(config, mapping)``.
            Read only when the first predictor is built, and not kept: a mapping is exported
            to a private temporary folder that lives as long as this object.
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
        self._weights = weights
        self._cache_dir = cache_dir
        self._num_threads = None if num_threads is None else check_int("num_threads", num_threads, 1)
        self._rows_per_pass = None if rows_per_pass is None else check_int("rows_per_pass", rows_per_pass, 0)
        self._lock = threading.RLock()
        self._model_prefix = None  # Path prefix of the exported model once there is one.
        self._model_in_cache = False  # Whether that export is a shared cache entry (else private).
        self._predictor = None
        self._predictor_key = None
        self._outputs = None  # (pooled handle, sequence handle) of the current predictor.
        self._shapes_run = set()  # (batch, length) shapes the current predictor has run.
        self._warned_no_gpu = False
        #: How many predictors this object has built (tests and diagnostics).
        self.predictor_builds = 0

    def __repr__(self):
        source = self._weights if isinstance(self._weights, str) else type(self._weights).__name__
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
            precision: ``"fp32"``, or ``"bf16"`` for oneDNN bfloat16 on CPUs that support it.
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
        prefix = self._ensure_model()
        try:
            predictor = self._create_predictor(prefix, key)
        except Exception:
            if not self._model_in_cache:
                raise
            # A damaged cache entry: export again once.
            log.warning("could not load the cached inference model at %s; exporting it again", prefix)
            shutil.rmtree(os.path.dirname(prefix), ignore_errors=True)
            self._model_prefix, self._model_in_cache = None, False
            predictor = self._create_predictor(self._ensure_model(), key)
        outputs = [predictor.get_output_handle(name) for name in predictor.get_output_names()]
        # The model is saved with fetches (pooled, sequence); tell them apart by rank all the same.
        outputs.sort(key=lambda handle: len(handle.shape()))
        self._predictor, self._outputs, self._predictor_key = predictor, tuple(outputs), key
        self.predictor_builds += 1
        release_freed_memory()  # What loading and optimizing the program allocated for a while.
        return predictor

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

    # -- the exported model -------------------------------------------------------------------

    def _cache_root(self):
        if self._cache_dir is False:
            return None
        return os.path.abspath(os.path.expanduser(os.fspath(self._cache_dir))) if self._cache_dir else \
            default_cache_dir()

    def _ensure_model(self):
        if self._model_prefix is not None:
            return self._model_prefix
        root = self._cache_root() if isinstance(self._weights, str) else None
        if root is not None:
            try:
                self._model_prefix = self._cached_export(root)
                self._model_in_cache = True
                return self._model_prefix
            except OSError as e:
                log.warning("cannot use the inference cache %s (%s); exporting to a temporary folder", root, e)
        # A private export, removed with this object.
        folder = tempfile.mkdtemp(prefix="bert_cased_L_24_H_1024_A_16-inference-")
        weakref.finalize(self, shutil.rmtree, folder, True)
        export_inference_model(self.config, self._load_arrays(), folder)
        if isinstance(self._weights, Mapping):
            self._weights = types.MappingProxyType({})  # Exported for good: do not keep the caller's arrays alive.
        release_freed_memory()
        self._model_prefix = os.path.join(folder, _MODEL_PREFIX)
        self._model_in_cache = False
        return self._model_prefix

    def _cache_key(self):
        import paddle

        description = {
            "export_version": _EXPORT_VERSION,
            "paddle": [paddle.__version__, paddle.version.commit],
            "config": self.config.to_dict(),
            "weights_dir": self._weights,
            "weights": _weights_dir_identity(self._weights),
        }
        blob = json.dumps(description, sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:24]

    def _cached_export(self, root):
        key = self._cache_key()
        entry = os.path.join(root, key)
        prefix = os.path.join(entry, _MODEL_PREFIX)
        if all(os.path.isfile(prefix + suffix) for suffix in (".json", ".pdiparams")):
            return prefix
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root)
        try:
            log.debug("exporting the inference model of %s to %s", self._weights, entry)
            export_inference_model(self.config, self._load_arrays(), tmp)
            release_freed_memory()
            with open(os.path.join(tmp, _INFO_FILE), "w", encoding="utf-8") as f:
                json.dump({"weights_dir": self._weights, "key": key}, f, indent=2)
            try:
                os.rename(tmp, entry)
            except OSError:
                if not os.path.isfile(prefix + ".pdiparams"):  # Not another process winning the race.
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._prune_cache(root, keep=key)
        return prefix

    def _prune_cache(self, root, keep):
        """Removes older exports of the same weights dir (other content, config or Paddle version)."""
        for name in os.listdir(root):
            if name == keep or name.startswith("."):
                continue
            try:
                with open(os.path.join(root, name, _INFO_FILE), encoding="utf-8") as f:
                    info = json.load(f)
            except (OSError, ValueError):
                continue
            if info.get("weights_dir") == self._weights:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)

    def _load_arrays(self):
        weights = self._weights
        if isinstance(weights, str):
            from .weights import load_weights

            config, arrays = load_weights(weights)
        else:
            loaded = weights() if callable(weights) and not isinstance(weights, Mapping) else weights
            config, arrays = loaded if isinstance(loaded, tuple) else (None, loaded)
        if config is not None and config != self.config:
            raise ValueError(f"the weights' configuration {config} differs from the embedder's {self.config}")
        return arrays
