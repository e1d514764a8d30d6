"""The BERT encoder as a ``paddle.nn.Layer``, and the static-graph programs built from it.

The same :class:`BertModel` runs in dynamic mode (for data-parallel training, which on a
CPU build of Paddle 3.3.1 works only there) and, built inside ``program_guard``, as the
static program that ``context()`` hands out. Every parameter carries its 1.x name behind
the 1.x hub prefix (SPEC section 3), e.g. ``@HUB_bert_cased_L-24_H-1024_A-16@word_embedding``.

Computation (post-LayerNorm BERT, SPEC section 3):
``emb = LN(word[ids] + pos[pos_ids] + sent[seg_ids])``; per layer
``x = LN(x + MHA(x))``, ``x = LN(x + W2·gelu(W1·x))``; ``pooled = tanh(Wp·x[:, 0] + bp)``.
"""

import contextlib
import dataclasses

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from . import kernels
from .feeder import FEED_NAMES
from .weights.names import HUB_PREFIX, QKV_FC

__all__ = ["FEED_NAMES", "MAX_SEQ_LEN", "BertModel", "StaticBert", "build_program", "static_mode",
           "inference_clone", "set_parameters"]

MAX_SEQ_LEN = 512

# Added to attention scores at padded keys; exp(-10000) underflows to 0 in float32.
_MASK_BIAS = -10000.0


def _attr(name, config, trainable, weight=False):
    """ParamAttr for a parameter with 1.x name ``name`` (weights get BERT's truncated normal init)."""
    initializer = nn.initializer.TruncatedNormal(std=config.initializer_range) if weight else None
    return paddle.ParamAttr(name=HUB_PREFIX + name, initializer=initializer, trainable=trainable)


class _Dense(nn.Linear):
    """``nn.Linear`` on ``[rows, in]`` inputs, through :func:`kernels.linear` when ``use_kernel``
    (oneDNN's ``bert_linear`` op where it is available; the training programs' fast path).
    ``gelu_input``: the layer computes ``gelu(x) · W + b`` (exact GELU)."""

    def __init__(self, in_size, out_size, weight_attr, bias_attr, use_kernel, gelu_input=False):
        super().__init__(in_size, out_size, weight_attr=weight_attr, bias_attr=bias_attr)
        self.use_kernel, self.gelu_input = use_kernel, gelu_input

    def forward(self, x):
        if self.use_kernel:
            return kernels.linear(x, self.weight, self.bias, gelu_input=self.gelu_input)
        return super().forward(F.gelu(x) if self.gelu_input else x)


def _linear(config, trainable, name, in_size, out_size, use_kernel, gelu_input=False):
    return _Dense(in_size, out_size, _attr(name + ".w_0", config, trainable, weight=True),
                  _attr(name + ".b_0", config, trainable), use_kernel, gelu_input)


class _Norm(nn.LayerNorm):
    """``nn.LayerNorm`` that runs :func:`kernels.layer_norm` on ``[rows, hidden]`` inputs when ``use_kernel``."""

    def __init__(self, size, epsilon, weight_attr, bias_attr, use_kernel):
        super().__init__(size, epsilon=epsilon, weight_attr=weight_attr, bias_attr=bias_attr)
        self.use_kernel = use_kernel

    def forward(self, x):
        if self.use_kernel and len(x.shape) == 2:
            return kernels.layer_norm(x, self.weight, self.bias, self._epsilon)
        return super().forward(x)


class _Int8Dense(nn.Layer):
    """A dense layer of int8 products for inference, :func:`kernels.linear_int8`, on ``[rows, in]`` inputs.

    Parameters (for 1.x name ``name``; :func:`weights.quantize.quantize_encoder` makes them):
    ``name.w_0`` int8 ``[in, out]``, ``name.w_0_factor`` float32 ``[in]``, ``name.w_0_scale`` and
    ``name.w_0_shift`` float32 ``[out]``, ``name.b_0`` float32 ``[out]``.
    """

    def __init__(self, name, in_size, out_size, gelu=False):
        super().__init__()
        self.gelu = gelu  # The kernel applies GELU to its output.

        def parameter(suffix, shape, dtype):
            return self.create_parameter(shape, attr=paddle.ParamAttr(name=HUB_PREFIX + name + suffix, trainable=False),
                                         dtype=dtype, default_initializer=nn.initializer.Constant(0))

        self.factor = parameter(".w_0_factor", [in_size], "float32")
        self.weight = parameter(".w_0", [in_size, out_size], "int8")
        self.scale = parameter(".w_0_scale", [out_size], "float32")
        self.shift = parameter(".w_0_shift", [out_size], "float32")
        self.bias = parameter(".b_0", [out_size], "float32")

    def forward(self, x):
        return kernels.linear_int8(x, self.factor, self.weight, self.scale, self.shift, self.bias, self.gelu)


def _layer_norm(config, trainable, name, use_kernel=False):
    return _Norm(config.hidden_size, config.layer_norm_eps, _attr(name + "_scale", config, trainable),
                 _attr(name + "_bias", config, trainable), use_kernel)


class _Dropout(nn.Dropout):
    """``nn.Dropout`` that runs :func:`kernels.dropout` in training when ``use_kernel`` (which falls back
    to Paddle's dropout where it can't run)."""

    def __init__(self, p, use_kernel):
        super().__init__(p)
        self.use_kernel = use_kernel

    def forward(self, x):
        if self.use_kernel and self.training:
            return kernels.dropout(x, self.p)
        return super().forward(x)


class _Embeddings(nn.Layer):
    def __init__(self, config, trainable, use_kernels):
        super().__init__()
        h = config.hidden_size
        self.word = nn.Embedding(config.vocab_size, h, weight_attr=_attr("word_embedding", config, trainable, True))
        self.pos = nn.Embedding(config.max_position_embeddings, h,
                                weight_attr=_attr("pos_embedding", config, trainable, True))
        self.sent = nn.Embedding(config.type_vocab_size, h, weight_attr=_attr("sent_embedding", config, trainable, True))
        self.norm = _layer_norm(config, trainable, "pre_encoder_layer_norm")
        self.dropout = _Dropout(config.hidden_dropout_prob, use_kernels)

    def forward(self, input_ids, position_ids, segment_ids):
        emb = self.word(input_ids) + self.pos(position_ids) + self.sent(segment_ids)
        return self.dropout(self.norm(emb))


class _EncoderLayer(nn.Layer):
    def __init__(self, config, trainable, index, use_kernels, int8):
        super().__init__()
        h, ffn = config.hidden_size, config.intermediate_size
        prefix = f"encoder_layer_{index}_"
        self.num_heads, self.head_size = config.num_attention_heads, config.head_size

        def dense(name, in_size, out_size, gelu_output=False, gelu_input=False):
            if int8:
                return _Int8Dense(prefix + name, in_size, out_size, gelu_output)
            return _linear(config, trainable, prefix + name, in_size, out_size, use_kernels, gelu_input)

        if int8:  # One product for the three projections: each row is quantized once.
            self.query_key_value = dense(QKV_FC, h, 3 * h)
        else:
            self.query = dense("multi_head_att_query_fc", h, h)
            self.key = dense("multi_head_att_key_fc", h, h)
            self.value = dense("multi_head_att_value_fc", h, h)
        self.attention_output = dense("multi_head_att_output_fc", h, h)
        self.attention_norm = _layer_norm(config, trainable, prefix + "post_att_layer_norm", use_kernels)
        # Where the feed-forward GELU runs: an int8 ffn_in applies it to its products; with the training
        # kernels ffn_out applies it to its input, and its backward pass computes it again instead of
        # keeping gelu(x) ([rows, intermediate], 16.8 MB a layer at 8 x 128 tokens) from the forward pass.
        self.gelu_in_dense = int8 or use_kernels
        self.ffn_in = dense("ffn_fc_0", h, ffn, gelu_output=int8)
        self.ffn_out = dense("ffn_fc_1", ffn, h, gelu_input=use_kernels)
        self.ffn_norm = _layer_norm(config, trainable, prefix + "post_ffn_layer_norm", use_kernels)
        self.attention_dropout = _Dropout(config.attention_probs_dropout_prob, use_kernels)
        # Training: kernels.attention keeps q, k and v and computes the probabilities again in the
        # backward pass, instead of keeping them (19 MB a layer at 8 x 128 tokens).
        self.fused_attention = use_kernels and not int8 and kernels.available()
        self.hidden_dropout = _Dropout(config.hidden_dropout_prob, use_kernels)

    def _split_heads(self, rows, seq_len):
        """``[batch*seq, hidden]`` -> ``[batch, heads, seq, head_size]``."""
        return rows.reshape([-1, seq_len, self.num_heads, self.head_size]).transpose([0, 2, 1, 3])

    def _attention(self, q, k, v, attention_bias, seq_len):
        """Paddle's ops (which inference passes fuse): ``[batch*seq, hidden]`` rows of each projection in,
        the heads' contexts side by side out."""
        q, k, v = (self._split_heads(rows, seq_len) for rows in (q, k, v))
        scores = paddle.matmul(q, k, transpose_y=True) * (self.head_size ** -0.5) + attention_bias
        probs = self.attention_dropout(F.softmax(scores, axis=-1))
        return paddle.matmul(probs, v).transpose([0, 2, 1, 3]).reshape([-1, self.num_heads * self.head_size])

    def forward(self, x, attention_bias, seq_len):
        """``x``: ``[batch*seq, hidden]`` rows, so that every projection is one GEMM."""
        if hasattr(self, "query_key_value"):
            q, k, v = paddle.split(self.query_key_value(x), 3, axis=-1)
        else:
            q, k, v = self.query(x), self.key(x), self.value(x)
        if self.fused_attention:
            p = self.attention_dropout.p if self.training else 0.0
            context = kernels.attention(q, k, v, attention_bias, self.num_heads, p)
        else:
            context = self._attention(q, k, v, attention_bias, seq_len)
        x = self.attention_norm(x + self.hidden_dropout(self.attention_output(context)))
        hidden = self.ffn_in(x)
        if not self.gelu_in_dense:
            hidden = F.gelu(hidden, approximate=False)
        hidden = self.ffn_out(hidden)
        return self.ffn_norm(x + self.hidden_dropout(hidden))


class BertModel(nn.Layer):
    """BERT encoder with 1.x parameter names.

    Any number of instances may be built in one process (in dynamic mode too), each with the
    same 1.x names. ``forward`` takes four int64 ``[batch, seq]`` tensors (``FEED_NAMES``; ``input_mask`` is 1 at
    real tokens, 0 at padding) and returns ``(sequence_output [batch, seq, hidden],
    pooled_output [batch, hidden])``, float32.

    ``use_kernels`` (training): dense layers, the encoder's layer norms and dropout run
    :func:`kernels.linear`, :func:`kernels.layer_norm` and :func:`kernels.dropout`, and the attention
    :func:`kernels.attention` (this package's training kernels where they are available); False
    keeps Paddle's own ops, which inference passes know how to fuse.

    ``int8`` (inference): the encoder's dense layers are :class:`_Int8Dense`, with the query, key
    and value projections merged into one (``weights.names.QKV_FC``); their parameters come from
    :func:`weights.quantize.quantize_encoder`. Embeddings, layer norms and the pooler stay float32.
    """

    def __init__(self, config, trainable=True, use_kernels=True, int8=False):
        super().__init__()
        self.config = config
        self.use_kernels = use_kernels
        # Dynamic mode refuses a parameter name seen before in the process; a fresh name namespace
        # lets every instance carry the 1.x names. Static programs keep their names as they are.
        names = paddle.utils.unique_name.guard() if paddle.in_dynamic_mode() else contextlib.nullcontext()
        with names:
            self.embeddings = _Embeddings(config, trainable, use_kernels)
            self.layers = nn.LayerList([_EncoderLayer(config, trainable, i, use_kernels, int8)
                                        for i in range(config.num_hidden_layers)])
            self.pooler = _linear(config, trainable, "pooled_fc", config.hidden_size, config.hidden_size,
                                  use_kernels)

    def forward(self, input_ids, position_ids, segment_ids, input_mask):
        x = self.embeddings(input_ids, position_ids, segment_ids)
        hidden, seq_len = self.config.hidden_size, input_ids.shape[1]
        if seq_len < 0:  # A static program fed any length: known only at run time.
            seq_len = paddle.shape(input_ids)[1]
        # [batch, 1, 1, seq]: 0 at real keys, _MASK_BIAS at padded keys.
        attention_bias = (1.0 - input_mask.astype(x.dtype)).unsqueeze([1, 2]) * _MASK_BIAS
        rows = x.reshape([-1, hidden])
        for layer in self.layers:
            rows = layer(rows, attention_bias, seq_len)
        x = rows.reshape([-1, seq_len, hidden])
        pooled = paddle.tanh(self.pooler(x[:, 0]))
        return x, pooled


class StaticBert:
    """A static program holding :class:`BertModel`, with its feed and fetch values.

    ``inputs``: ``{feed name: value}``, each int64 ``[-1, max_seq_len]`` (``-1`` when
    ``max_seq_len`` is None); slot ``s > 1`` adds ``input_ids_s`` etc. ``outputs``:
    ``sequence_output`` ``[-1, seq, hidden]`` and ``pooled_output`` ``[-1, hidden]`` float32
    (``_s`` suffixed for later slots). All slots share one set of parameters.
    """

    def __init__(self, program, startup_program, inputs, outputs):
        self.program = program
        self.startup_program = startup_program
        self.inputs = inputs
        self.outputs = outputs


@contextlib.contextmanager
def static_mode():
    """Runs the block in Paddle's static mode and restores the mode found on entry."""
    was_dynamic = paddle.in_dynamic_mode()
    paddle.enable_static()
    try:
        yield
    finally:
        if was_dynamic:
            paddle.disable_static()


def build_program(config, max_seq_len=None, num_slots=1, trainable=True, training=True, int8=False):
    """Builds a fresh static program for ``config`` (call in static mode).

    ``training=False`` builds without dropout and with Paddle's own dense ops (for Paddle Inference);
    ``training=True`` uses :func:`kernels.linear` (see :class:`BertModel`). ``int8`` (with
    ``training=False``) builds the encoder's dense layers with int8 products. ``trainable=False`` marks
    every parameter as not trainable. Returns a :class:`StaticBert`; parameters are not initialised.
    """
    if int8 and training:
        raise ValueError("int8 programs are for inference: build them with training=False")
    if not training:  # Dropout with probability 0 emits no op at all (eval mode would keep is_test ops).
        config = dataclasses.replace(config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    program, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(program, startup):
        model = BertModel(config, trainable=trainable, use_kernels=training, int8=int8)
        model.train() if training else model.eval()
        inputs, outputs = {}, {}
        seq = -1 if max_seq_len is None else max_seq_len
        for slot in range(1, num_slots + 1):
            suffix = "" if slot == 1 else f"_{slot}"
            feeds = {name + suffix: paddle.static.data(name + suffix, [-1, seq], "int64") for name in FEED_NAMES}
            sequence_output, pooled_output = model(*feeds.values())
            inputs.update(feeds)
            outputs["pooled_output" + suffix] = pooled_output
            outputs["sequence_output" + suffix] = sequence_output
    return StaticBert(program, startup, inputs, outputs)


def inference_clone(program, values):
    """A deterministic copy of a PIR ``program`` (dropout in test mode) and ``values`` mapped into it.

    ``values``: a dict or list of the program's values (e.g. ``context()``'s ``outputs``). PIR
    programs have no ``clone(for_test=True)`` and a clone's values are new objects, so fetch the
    returned ones when running the copy. Feeds are matched by name and need no mapping.
    """
    mapping = paddle.base.libpaddle.pir.IrMapping()
    copy = program.clone(mapping)
    for op in copy.global_block().ops:
        if op.has_attr("is_test"):
            op.set_bool_attr("is_test", True)
    if isinstance(values, dict):
        return copy, {name: mapping.look_up(value) for name, value in values.items()}
    return copy, [mapping.look_up(value) for value in values]


def set_parameters(program, arrays, scope=None, place=None):
    """Copies ``arrays`` (``{1.x name: ndarray}``) into ``scope`` for every parameter of ``program``.

    Arrays are stored as float32, except for int8 parameters, which take int8 arrays. Raises
    ``KeyError`` naming parameters that have no array and ``ValueError`` on a shape or dtype mismatch.
    """
    scope = scope if scope is not None else paddle.static.global_scope()
    place = place if place is not None else paddle.CPUPlace()
    params = program.global_block().all_parameters()
    missing = [p.name for p in params if p.name[len(HUB_PREFIX):] not in arrays]
    if missing:
        raise KeyError(f"no weights for parameters {missing}")
    for param in params:
        array = arrays[param.name[len(HUB_PREFIX):]]
        if tuple(array.shape) != tuple(param.shape):
            raise ValueError(f"parameter {param.name} has shape {list(param.shape)}, weights have {list(array.shape)}")
        dtype = np.int8 if param.dtype == paddle.int8 else np.float32
        if (array.dtype == np.int8) != (dtype == np.int8):
            raise ValueError(f"parameter {param.name} is {dtype.__name__}, weights are {array.dtype}")
        scope.var(param.name).get_tensor().set(np.ascontiguousarray(array, dtype=dtype), place)
