"""The Paddle inference models that :mod:`.embedding` runs, exported from one weights source.

Two graphs are exported, each on first use: ``"float"`` (:func:`network.build_program` for
inference; the fp32 and bf16 predictors run it) and ``"int8"`` (its int8 version, whose encoder
dense layers have int8 products, from :func:`weights.quantize.quantize_encoder`, smoothed with the
input ranges :mod:`.calibration` measures). An export is a
PIR ``model.json`` + ``model.pdiparams``. Exports of a weights dir are cached on disk, keyed by the
weights' identity, the configuration, the graph and the Paddle version, so later processes skip
them; other weights sources get a private temporary folder that lives as long as the object.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping

from .cache import default_cache_dir
from .feeder import FEED_NAMES
from .memory import release_freed_memory
from .weights import file_sha256

__all__ = ["GRAPHS", "InferenceModels", "export_inference_model"]

log = logging.getLogger(__name__)

GRAPHS = ("float", "int8")

# Bump when the exported graph changes: cached exports made by older code are then not reused.
_EXPORT_VERSION = 1
_MODEL_PREFIX = "model"
_INFO_FILE = "export.json"


def export_inference_model(config, arrays, dest_dir, graph="float", calibration=None):
    """Writes the inference model of ``config`` with ``arrays`` (``{1.x name: float32 array}``) to ``dest_dir``.

    ``graph="int8"`` quantizes the encoder's dense layers first, smoothed with their input ranges
    over ``calibration`` (feed dicts, :func:`calibration.calibration_batches`) unless it is None.
    The weights go through a private scope, never ``paddle.static.global_scope()``, and the scope
    is emptied before returning.
    Leaves Paddle's dynamic/static mode as it found it. Returns the path prefix of
    ``<prefix>.json`` and ``<prefix>.pdiparams``.
    """
    import paddle

    from .network import build_program, set_parameters, static_mode

    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
    if graph == "int8":
        from .calibration import dense_input_ranges
        from .weights.quantize import quantize_encoder

        ranges = dense_input_ranges(config, arrays, calibration) if calibration else None
        arrays = quantize_encoder(config, arrays, ranges)
    prefix = os.path.join(dest_dir, _MODEL_PREFIX)
    with static_mode():
        bert = build_program(config, max_seq_len=None, trainable=False, training=False, int8=graph == "int8")
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


def _arrays_of_export(prefix):
    """``{1.x name: array}`` of the parameters saved in the float export at ``prefix``."""
    import paddle

    from .network import static_mode
    from .weights.names import HUB_PREFIX

    with static_mode():
        scope = paddle.static.Scope()
        try:
            with paddle.static.scope_guard(scope):
                program, _, _ = paddle.static.load_inference_model(prefix, paddle.static.Executor(paddle.CPUPlace()))
                return {param.name[len(HUB_PREFIX):]: scope.find_var(param.name).get_tensor().__array__().copy()
                        for param in program.global_block().all_parameters()}
        finally:
            scope.erase(list(scope.local_var_names()))


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


class InferenceModels:
    """The exports of one weights source; see the module documentation.

    Args:
        config: the :class:`.config.BertConfig` of the weights.
        weights: a weights dir (absolute path), a mapping ``{1.x name: float32 array}``, or a
            callable returning such a mapping or ``(config, mapping)``. Read only when an export
            is made. A mapping is not kept past the first export: later exports read the float
            export's parameters instead.
        cache_dir: where exports of weights dirs are kept (default :func:`default_cache_dir`);
            ``False`` keeps none.
        calibration: a callable returning the feed dicts that calibrate the int8 export
            (:func:`calibration.calibration_batches`), or None for none.
    """

    def __init__(self, config, weights, cache_dir=None, calibration=None):
        self.config = config
        self.weights = weights
        self._cache_dir = cache_dir
        self._calibration = calibration
        self._prefixes = {}  # graph -> (path prefix, whether it is a shared cache entry)

    def prefix(self, graph):
        """The path prefix of ``graph``'s export, made on first request."""
        if graph not in self._prefixes:
            self._prefixes[graph] = self._export(graph)
        return self._prefixes[graph][0]

    def discard(self, graph):
        """Forgets ``graph``'s export, removing it if it is a cache entry (one that failed to load).
        Returns whether it was one; a private export is kept, and False returned."""
        prefix, in_cache = self._prefixes.get(graph, (None, False))
        if not in_cache:
            return False
        log.warning("could not load the cached inference model at %s; exporting it again", prefix)
        shutil.rmtree(os.path.dirname(prefix), ignore_errors=True)
        del self._prefixes[graph]
        return True

    def _export(self, graph):
        root = self._cache_root() if isinstance(self.weights, str) else None
        if root is not None:
            try:
                return self._cached_export(root, graph), True
            except OSError as e:
                log.warning("cannot use the inference cache %s (%s); exporting to a temporary folder", root, e)
        if isinstance(self.weights, Mapping) and graph != "float":
            self.prefix("float")  # The source of every later export (see below).
        folder = tempfile.mkdtemp(prefix="bert_cased_L_24_H_1024_A_16-inference-")
        weakref.finalize(self, shutil.rmtree, folder, True)
        prefix = export_inference_model(self.config, self._load_arrays(), folder, graph, self._batches(graph))
        if isinstance(self.weights, Mapping) and graph == "float":
            # Exported for good: do not keep the caller's arrays alive; read them back if needed.
            self.weights = lambda: _arrays_of_export(prefix)
        release_freed_memory()
        return prefix, False

    def _cache_root(self):
        if self._cache_dir is False:
            return None
        return os.path.abspath(os.path.expanduser(os.fspath(self._cache_dir))) if self._cache_dir else \
            default_cache_dir()

    def _cache_key(self, graph):
        import paddle

        from . import kernels

        description = {
            "export_version": _EXPORT_VERSION,
            "paddle": [paddle.__version__, paddle.version.commit],
            "config": self.config.to_dict(),
            "graph": graph,
            "weights_dir": self.weights,
            "weights": _weights_dir_identity(self.weights),
        }
        if graph == "int8":  # The program holds the kernel's op, or Paddle's ops where it can't run.
            from .calibration import CALIBRATION_TEXTS

            description["int8_kernel"] = bool(kernels.available())
            description["calibration"] = file_sha256(CALIBRATION_TEXTS) if self._calibration else None
        blob = json.dumps(description, sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:24]

    def _cached_export(self, root, graph):
        key = self._cache_key(graph)
        entry = os.path.join(root, key)
        prefix = os.path.join(entry, _MODEL_PREFIX)
        if all(os.path.isfile(prefix + suffix) for suffix in (".json", ".pdiparams")):
            return prefix
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root)
        try:
            log.debug("exporting the %s inference model of %s to %s", graph, self.weights, entry)
            export_inference_model(self.config, self._load_arrays(), tmp, graph, self._batches(graph))
            release_freed_memory()
            with open(os.path.join(tmp, _INFO_FILE), "w", encoding="utf-8") as f:
                json.dump({"weights_dir": self.weights, "graph": graph, "key": key}, f, indent=2)
            try:
                os.rename(tmp, entry)
            except OSError:
                if not os.path.isfile(prefix + ".pdiparams"):  # Not another process winning the race.
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._prune_cache(root, keep=key, graph=graph)
        return prefix

    def _prune_cache(self, root, keep, graph):
        """Removes older exports of the same weights dir and graph (other content, config or Paddle version)."""
        for name in os.listdir(root):
            if name == keep or name.startswith("."):
                continue
            try:
                with open(os.path.join(root, name, _INFO_FILE), encoding="utf-8") as f:
                    info = json.load(f)
            except (OSError, ValueError):
                continue
            if info.get("weights_dir") == self.weights and info.get("graph", "float") == graph:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)

    def _batches(self, graph):
        return self._calibration() if graph == "int8" and self._calibration else None

    def _load_arrays(self):
        weights = self.weights
        if isinstance(weights, str):
            from .weights import load_weights

            config, arrays = load_weights(weights)
        else:
            loaded = weights() if callable(weights) and not isinstance(weights, Mapping) else weights
            config, arrays = loaded if isinstance(loaded, tuple) else (None, loaded)
        if config is not None and config != self.config:
            raise ValueError(f"the weights' configuration {config} differs from the embedder's {self.config}")
        return arrays
