"""The PaddleHub module class: a thin layer that wires tokenizer, feeder, network and weights.

Reached as ``hub.Module(name="bert_cased_L-24_H-1024_A-16")``, ``hub.Module(directory=...)``
or ``from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge``. Works without
paddlehub installed; paddlehub only adds the hub integration.
"""

import os

from .config import DEFAULT_CONFIG_FILE, BertConfig
from .feeder import Feeder, check_int
from .finetune import register_with_paddlehub
from .network import MAX_SEQ_LEN
from .tokenizer import BertTokenizer
from .weights import Casing, MissingWeightsError, find_weights, installed_casing, load_weights, read_manifest
from .weights.names import HUB_PREFIX, legacy_parameter_shapes, layer_of
from .serving import serve_request  # importing it also guards `hub serving` against non-object JSON bodies

try:
    from paddlehub.module.module import moduleinfo, runnable, serving
except ImportError:  # paddlehub is optional: without it the class is a plain Python class.
    def moduleinfo(**info):
        def decorate(cls):
            for key, value in info.items():
                setattr(cls, key, value)
            return cls
        return decorate

    def runnable(func):
        return func

    def serving(func):
        return func

ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
VOCAB_FILE = os.path.join(ASSETS_DIR, "vocab.txt")


# PaddleHub reads these values from this file's syntax tree (`hub install`): they must stay literals,
# equal to HUB_NAME and __version__.
@moduleinfo(
    name="bert_cased_L-24_H-1024_A-16",
    version="1.1.0",
    summary="bert_cased_L-24_H-1024_A-16, 24-layer, 1024-hidden, 16-heads, 340M parameters",
    author="paddlepaddle",
    author_email="paddle-dev@baidu.com",
    type="nlp/semantic_model",
)
class BertCasedLarge:
    """BERT-Large, cased, as a PaddleHub module.

    ``weights_dir``: an installed weights folder (``bert_config.json``, ``vocab.txt``,
    ``params/``); by default the one :func:`weights.find_weights` picks. Weights are read
    only when a method needs them, so the tokenizer works before any are installed.
    """

    # PaddleHub's RunModule runs every public method in static mode and, when one raises,
    # leaves the whole process there. Each method here manages the mode itself.
    __getattribute__ = object.__getattribute__

    def __new__(cls, weights_dir=None, task=None, **task_options):
        """``task=None``: this module, with its 1.x API. ``task="seq-cls"``, ``"token-cls"`` or
        ``"text-matching"``: PaddleHub 2.x's fine-tunable task model over this module's weights
        instead (a ``paddle.nn.Layer``; ``task_options``: ``num_classes``, ``label_map``,
        ``load_checkpoint``, ``suffix``; see ``tasks/models.py``)."""
        if task is None:
            if task_options:
                raise TypeError(f"{', '.join(sorted(task_options))} only apply with task= (one of seq-cls, token-cls, "
                                f"text-matching)")
            return object.__new__(cls)
        from .tasks import build_task_model

        return build_task_model(cls(weights_dir), task, **task_options)

    def __init__(self, weights_dir=None, task=None):  # task is None here: __new__ returned a task model otherwise
        self._weights_dir = weights_dir
        self._config = None
        self._tokenizer = None
        self._embedder = None
        # 1.x examples reach the strategies as hub.finetune.strategy.ULMFiTStrategy; PaddleHub 2.4
        # only has placeholders there, which this replaces (a no-op without paddlehub).
        register_with_paddlehub()

    # -- what the methods share ----------------------------------------------------------

    @property
    def weights_dir(self):
        """The weights folder in use; raises ``MissingWeightsError`` saying how to install one."""
        if self._weights_dir is None:
            self._weights_dir = find_weights(extra_candidates=[ASSETS_DIR])
        return self._weights_dir

    def _installed_file(self, name, fallback):
        """``name`` inside the weights folder when weights are installed and have it, else ``fallback``."""
        try:
            candidate = os.path.join(self.weights_dir, name)
        except MissingWeightsError:
            return fallback
        return candidate if os.path.exists(candidate) else fallback

    @property
    def config(self):
        """The :class:`BertConfig` of the installed weights, or of the release when none are installed."""
        if self._config is None:
            self._config = BertConfig.from_json_file(self._installed_file("bert_config.json", DEFAULT_CONFIG_FILE))
        return self._config

    @property
    def casing(self):
        """The installed checkpoint's :class:`weights.Casing`: whether it lower-cases its input, and what told so.

        Without installed weights: the package's cased vocabulary.
        """
        try:
            weights_dir = self.weights_dir
        except MissingWeightsError:
            return Casing(False, "the package's vocabulary (no weights installed)")
        return installed_casing(weights_dir, VOCAB_FILE)

    @property
    def tokenizer(self):
        """WordPiece over :meth:`get_vocab_path`; cased unless the checkpoint is uncased (:attr:`casing`)."""
        if self._tokenizer is None:
            self._tokenizer = BertTokenizer(self.get_vocab_path(), do_lower_case=self.casing.do_lower_case)
        return self._tokenizer

    def get_vocab_path(self):
        """Path of the vocabulary file: the installed weights' ``vocab.txt``, else the module's own."""
        return self._installed_file("vocab.txt", VOCAB_FILE)

    def feeder(self, max_seq_len=MAX_SEQ_LEN):
        """A :class:`Feeder` that turns texts into this module's feeds, truncating at ``max_seq_len``."""
        return Feeder(self.tokenizer, max_seq_len=max_seq_len)

    def weights_info(self):
        """The manifest of the installed weights (source, checks), or None for a bare 1.x assets folder."""
        return read_manifest(self.weights_dir)

    # -- the 1.x API ---------------------------------------------------------------------

    def context(self, trainable=True, max_seq_len=128, num_slots=1):
        """The pretrained network as a static program, for networks built on top of it.

        Returns ``(inputs, outputs, program)``: ``inputs`` maps ``input_ids``, ``position_ids``,
        ``segment_ids``, ``input_mask`` (int64 ``[batch, max_seq_len]``) to the program's feed
        values; ``outputs`` maps ``pooled_output`` (float32 ``[batch, hidden]``) and
        ``sequence_output`` (float32 ``[batch, max_seq_len, hidden]``) to its values; slots 2 and 3
        add ``_2``/``_3`` entries sharing the same parameters. The pretrained weights are copied
        into ``paddle.static.global_scope()`` under the parameters' 1.x names (every call copies
        them again). The program is a training program (dropout on); use
        :func:`network.inference_clone` for a deterministic copy. Paddle is left in static mode,
        which the returned program needs.
        """
        check_int("max_seq_len", max_seq_len, 1, MAX_SEQ_LEN)
        check_int("num_slots", num_slots, 1, 3)
        if not isinstance(trainable, bool):
            raise TypeError(f"trainable must be a bool, got {trainable!r}")
        import paddle

        from .network import build_program, set_parameters

        config, arrays = load_weights(self.weights_dir)
        paddle.enable_static()
        bert = build_program(config, max_seq_len=max_seq_len, num_slots=num_slots, trainable=trainable)
        set_parameters(bert.program, arrays)
        return bert.inputs, bert.outputs, bert.program

    def get_embedding(self, texts, use_gpu=False, batch_size=1, max_seq_len=512, precision="fp32",
                      show_progress=None, prepacked_weights=False):
        """Sentence and token features of each sample, in input order.

        ``texts``: a list of samples, each ``[text_a]`` or ``[text_a, text_b]`` (a bare str is one
        text). ``use_gpu``: run on the GPU when Paddle has CUDA and a device, else warn once and use
        the CPU. ``batch_size``: the most samples per forward pass. ``max_seq_len``: the most tokens
        per sample, ``[CLS]``/``[SEP]`` included (1 to 512); longer samples are truncated, the longer
        text of a pair first. ``precision``: ``"fp32"``; ``"bf16"`` (oneDNN bfloat16, about 1.7x
        faster, cosine >= 0.9998 to fp32) on CPUs with avx512_bf16 or amx_bf16; or ``"int8"`` (int8
        products in the encoder's dense layers, about 3x faster, CPU only; pooled cosine to fp32
        0.999 on a trained checkpoint, see the README). ``show_progress``:
        None shows a bar on stderr when it is a terminal and there are several batches.
        ``prepacked_weights``: fp32 on the CPU: keep oneDNN-packed copies of the weights (1.3 to
        2.5 GB more memory) instead of repacking them on every pass; 7-10 % faster at batch
        size 8, 23 % at batch size 1.

        Returns a list of ``[pooled_feature, seq_feature]``: float32 ``(hidden,)`` (the pooler
        output) and ``(n_tokens, hidden)`` (the last layer at the sample's real tokens, no padding).
        Samples run in length-sorted batches, each padded to its own longest sample, through a
        Paddle Inference predictor built on first use and reused. ``[]`` gives ``[]``.
        """
        return self._get_embedder().embed(texts, batch_size=batch_size, max_seq_len=max_seq_len, use_gpu=use_gpu,
                                          precision=precision, show_progress=show_progress,
                                          prepacked_weights=prepacked_weights)

    def iter_embedding(self, texts, use_gpu=False, batch_size=1, max_seq_len=512, precision="fp32",
                       show_progress=None, chunk_size=1024, prepacked_weights=False):
        """:meth:`get_embedding` for inputs of any size: ``texts`` may be any iterable; results are
        yielded in input order, ``chunk_size`` samples being sorted and run at a time."""
        return self._get_embedder().iter_embed(texts, batch_size=batch_size, max_seq_len=max_seq_len,
                                               use_gpu=use_gpu, precision=precision,
                                               show_progress=show_progress, prepacked_weights=prepacked_weights,
                                               chunk_size=chunk_size)

    def _get_embedder(self):
        if self._embedder is None:
            from .embedding import Embedder

            self._embedder = Embedder(self.config, self.tokenizer, self.weights_dir)
        return self._embedder

    def get_params_layer(self):
        """``{parameter name in the program: encoder layer index}`` for every parameter.

        Encoder parameters map to their layer (0 .. 23); unlike 1.x, the embeddings and the
        pre-encoder layer norm map to layer 0 and the pooler to the top layer, so layer-wise
        learning rates and gradual unfreezing cover the whole network. Needs no ``context()``.
        """
        config = self.config
        return {HUB_PREFIX + name: layer_of(name, config) for name in legacy_parameter_shapes(config)}

    # -- hub run and hub serving -----------------------------------------------------------

    @runnable
    def run_cmd(self, argvs):
        """``hub run bert_cased_L-24_H-1024_A-16 --input_text TEXT | --input_file FILE``; see cli.py."""
        from .cli import run_hub_command

        return run_hub_command(self, argvs)

    @serving
    def serving_method(self, **kwargs):
        """``hub serving``: ``POST /predict/bert_cased_L-24_H-1024_A-16``, body ``{"texts": [...]}``; see serving.py."""
        return serve_request(self, kwargs)
