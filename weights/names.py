"""Parameter names of the 1.x release and how other checkpoints name the same tensors (SPEC section 3).

The 1.x name (without the hub prefix) is the canonical key everywhere in this package.
Fully connected weights are stored ``[in, out]`` under 1.x and PaddleNLP names and
``[out, in]`` under Hugging Face names.
"""

import collections
import re

__all__ = ["HUB_PREFIX", "QKV_FC", "unprefixed", "legacy_parameter_shapes", "huggingface_names", "paddlenlp_names",
           "layer_of"]

HUB_PREFIX = "@HUB_bert_cased_L-24_H-1024_A-16@"

# The query, key and value projections of an encoder layer merged into one, in int8 inference
# programs only (weights/quantize.py); a layer's 1.x prefix goes before it.
QKV_FC = "multi_head_att_qkv_fc"


def unprefixed(file_name):
    """The 1.x name in a parameter file name: the installed 1.x module's files carry HUB_PREFIX, the release's not."""
    return file_name[len(HUB_PREFIX):] if file_name.startswith(HUB_PREFIX) else file_name

# 1.x suffix of an encoder layer parameter -> (HF suffix, PaddleNLP suffix), both under the layer.
_LAYER_FC = {
    "multi_head_att_query_fc": ("attention.self.query", "self_attn.q_proj"),
    "multi_head_att_key_fc": ("attention.self.key", "self_attn.k_proj"),
    "multi_head_att_value_fc": ("attention.self.value", "self_attn.v_proj"),
    "multi_head_att_output_fc": ("attention.output.dense", "self_attn.out_proj"),
    "ffn_fc_0": ("intermediate.dense", "linear1"),
    "ffn_fc_1": ("output.dense", "linear2"),
}
_LAYER_NORM = {
    "post_att_layer_norm": ("attention.output.LayerNorm", "norm1"),
    "post_ffn_layer_norm": ("output.LayerNorm", "norm2"),
}


def legacy_parameter_shapes(config):
    """Ordered ``{1.x name: shape}`` of every parameter of the network described by ``config``."""
    h, ffn = config.hidden_size, config.intermediate_size
    shapes = collections.OrderedDict()
    shapes["word_embedding"] = (config.vocab_size, h)
    shapes["pos_embedding"] = (config.max_position_embeddings, h)
    shapes["sent_embedding"] = (config.type_vocab_size, h)
    shapes["pre_encoder_layer_norm_scale"] = (h,)
    shapes["pre_encoder_layer_norm_bias"] = (h,)
    fc_shapes = {
        "multi_head_att_query_fc": (h, h), "multi_head_att_key_fc": (h, h),
        "multi_head_att_value_fc": (h, h), "multi_head_att_output_fc": (h, h),
        "ffn_fc_0": (h, ffn), "ffn_fc_1": (ffn, h),
    }
    for i in range(config.num_hidden_layers):
        for part in ("multi_head_att_query_fc", "multi_head_att_key_fc", "multi_head_att_value_fc",
                     "multi_head_att_output_fc"):
            shapes[f"encoder_layer_{i}_{part}.w_0"] = fc_shapes[part]
            shapes[f"encoder_layer_{i}_{part}.b_0"] = (fc_shapes[part][1],)
        shapes[f"encoder_layer_{i}_post_att_layer_norm_scale"] = (h,)
        shapes[f"encoder_layer_{i}_post_att_layer_norm_bias"] = (h,)
        for part in ("ffn_fc_0", "ffn_fc_1"):
            shapes[f"encoder_layer_{i}_{part}.w_0"] = fc_shapes[part]
            shapes[f"encoder_layer_{i}_{part}.b_0"] = (fc_shapes[part][1],)
        shapes[f"encoder_layer_{i}_post_ffn_layer_norm_scale"] = (h,)
        shapes[f"encoder_layer_{i}_post_ffn_layer_norm_bias"] = (h,)
    shapes["pooled_fc.w_0"] = (h, h)
    shapes["pooled_fc.b_0"] = (h,)
    return shapes


def huggingface_names(config):
    """``{1.x name: (Hugging Face name, transpose)}``; names carry no ``bert.`` prefix.

    Old checkpoints that call layer-norm parameters ``gamma``/``beta`` are renamed by the loader.
    """
    return _foreign_names(config, embedding_norm="embeddings.LayerNorm", layers="encoder.layer",
                          scheme=0, pooler="pooler.dense", transpose=True)


def paddlenlp_names(config):
    """``{1.x name: (PaddleNLP name, transpose)}``; names carry no ``bert.`` prefix."""
    return _foreign_names(config, embedding_norm="embeddings.layer_norm", layers="encoder.layers",
                          scheme=1, pooler="pooler.dense", transpose=False)


def _foreign_names(config, embedding_norm, layers, scheme, pooler, transpose):
    names = collections.OrderedDict()
    names["word_embedding"] = ("embeddings.word_embeddings.weight", False)
    names["pos_embedding"] = ("embeddings.position_embeddings.weight", False)
    names["sent_embedding"] = ("embeddings.token_type_embeddings.weight", False)
    names["pre_encoder_layer_norm_scale"] = (embedding_norm + ".weight", False)
    names["pre_encoder_layer_norm_bias"] = (embedding_norm + ".bias", False)
    for i in range(config.num_hidden_layers):
        for part, foreign in _LAYER_FC.items():
            names[f"encoder_layer_{i}_{part}.w_0"] = (f"{layers}.{i}.{foreign[scheme]}.weight", transpose)
            names[f"encoder_layer_{i}_{part}.b_0"] = (f"{layers}.{i}.{foreign[scheme]}.bias", False)
        for part, foreign in _LAYER_NORM.items():
            names[f"encoder_layer_{i}_{part}_scale"] = (f"{layers}.{i}.{foreign[scheme]}.weight", False)
            names[f"encoder_layer_{i}_{part}_bias"] = (f"{layers}.{i}.{foreign[scheme]}.bias", False)
    names["pooled_fc.w_0"] = (pooler + ".weight", transpose)
    names["pooled_fc.b_0"] = (pooler + ".bias", False)
    return names


_LAYER_INDEX = re.compile(r"^encoder_layer_(\d+)_")


def layer_of(name, config):
    """Encoder layer (0 .. num_hidden_layers-1) a 1.x parameter name belongs to.

    Embeddings and the pre-encoder layer norm belong to layer 0 and the pooler to the top
    layer, so that layer-wise strategies cover the whole network (1.x left them out).
    """
    match = _LAYER_INDEX.match(name)
    if match:
        return int(match.group(1))
    if name.startswith("pooled_fc."):
        return config.num_hidden_layers - 1
    return 0
