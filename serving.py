"""``hub serving``: the module's serving method, its request checks, and how bad requests get a 4xx answer.

``hub serving start -m bert_cased_L-24_H-1024_A-16`` answers ``POST /predict/bert_cased_L-24_H-1024_A-16``.
The JSON body holds the keyword arguments of the serving method (see :data:`PARAMETERS`)::

    {"texts": [["Paris is in France."], ["Question?", "Answer."]], "max_seq_len": 128}

and the reply is PaddleHub's envelope ``{"status": "000", "msg": "", "results": [...]}`` with, per text, in
input order: ``pooled_output`` (hidden floats), ``sequence_output`` (one list of hidden floats per token, real
tokens only), ``num_tokens`` and, if asked, ``tokens``.

How a malformed request gets a 4xx. PaddleHub's ``predict_v2`` catches every exception of the serving method
and answers HTTP 200 with ``status`` "101" and the exception's text as ``msg``. Before raising, the serving
method registers a Flask ``after_this_request`` callback (public Flask API; the serving method runs inside the
request) that sets the reply's HTTP status: 400 for a request that breaks the rules below (413 for one that
asks too much: more than MAX_TEXTS samples, or MAX_SEQUENCE_TOKENS token features), 503 when the
server has no weights, 500 for anything else. The body stays PaddleHub's envelope, so ``msg`` carries the
reason. Two malformed requests never reach the method: a body that is not JSON gets Flask's own 400, a
wrong content type 415, a JSON body that is not an object (a list, a string) would make PaddleHub
itself fail with a 500, and a JSON ``null`` body gets PaddleHub's HTTP 200 with status "112" (an
outdated-protocol notice). :func:`install_request_guard` wraps the two functions of
``paddlehub.serving.app_compat`` that the route calls, looked up at call time: ``predict_v2``, and
``package_result`` for that "112" on this module's route, so that such bodies get a 400 too. It is
installed when this file is imported in a process that already loaded PaddleHub's serving app (``hub
serving`` loads it before the module), it is idempotent, and it leaves every other request, of this or any
other module, to the original functions. The server is single-threaded and keeps serving after every
one of these.
"""

import json
import sys

from . import HUB_NAME
from .device import gpu_available

__all__ = ["PARAMETERS", "MAX_TEXTS", "MAX_SEQUENCE_TOKENS", "RequestError", "validate_request", "serve_request",
           "features_to_json", "install_request_guard"]

MAX_TEXTS = 1024
# Token features are the bulk of a reply (hidden floats per token, ~10 KB of JSON per token for BERT-Large):
# with return_sequence, len(texts) * max_seq_len may not exceed this.
MAX_SEQUENCE_TOKENS = 16384
MAX_BATCH_SIZE = 256
MAX_TEXT_CHARS = 100_000

# name: (default, description); no other key is accepted.
PARAMETERS = {
    "texts": (None, "required: a non-empty list of samples, each a str, [text_a] or [text_a, text_b]"),
    "batch_size": (1, f"int from 1 to {MAX_BATCH_SIZE}"),
    "max_seq_len": (512, "int from 1 to 512: tokens per sample, [CLS]/[SEP] included; longer input is truncated"),
    "use_gpu": (False, "bool: run on the GPU (only on a server that has one)"),
    "precision": ("fp32", '"fp32", "bf16" (oneDNN bfloat16, on CPUs that have it) or "int8" (int8 products)'),
    "return_sequence": (True, "bool: include sequence_output (one feature per token)"),
    "return_tokens": (False, "bool: include the tokens each feature belongs to"),
}


class RequestError(ValueError):
    """A request that breaks the rules: answered with HTTP ``status`` (400 unless said otherwise)."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def _type_name(value):
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(value), type(value).__name__)


def _check_int(kwargs, name, low, high):
    value = kwargs.get(name, PARAMETERS[name][0])
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _check_bool(kwargs, name):
    value = kwargs.get(name, PARAMETERS[name][0])
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false, got {value!r}")
    return value


def _check_choice(kwargs, name, choices):
    value = kwargs.get(name, PARAMETERS[name][0])
    if value not in choices or not isinstance(value, str):
        raise RequestError(f"{name} must be one of {', '.join(map(json.dumps, choices))}, got {value!r}")
    return value


def validate_request(kwargs):
    """The request's arguments, checked and completed with defaults; raises RequestError saying what is wrong.

    ``texts`` becomes a list of 1- or 2-tuples of str.
    """
    unknown = sorted(set(kwargs) - set(PARAMETERS))
    if unknown:
        raise RequestError(f"unknown key{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
                           f"accepted: {', '.join(PARAMETERS)} (texts is required)")
    if "texts" not in kwargs:
        raise RequestError('missing "texts": send {"texts": [["text a"], ["text a", "text b"]]}')
    texts = kwargs["texts"]
    if not isinstance(texts, list):
        raise RequestError(f"texts must be an array of samples, got {_type_name(texts)}")
    if not texts:
        raise RequestError("texts is empty: send at least one sample")
    if len(texts) > MAX_TEXTS:
        raise RequestError(f"too many samples: {len(texts)}; send at most {MAX_TEXTS} per request", status=413)
    samples = []
    for i, sample in enumerate(texts):
        if isinstance(sample, str):
            sample = [sample]
        if not isinstance(sample, list) or not 1 <= len(sample) <= 2:
            got = f"an array of {len(sample)}" if isinstance(sample, list) else _type_name(sample)
            raise RequestError(f"texts[{i}] must be a string, [text_a] or [text_a, text_b]; got {got}")
        for j, text in enumerate(sample):
            if not isinstance(text, str):
                raise RequestError(f"texts[{i}][{j}] must be a string, got {_type_name(text)}")
            if len(text) > MAX_TEXT_CHARS:
                raise RequestError(f"texts[{i}][{j}] has {len(text)} characters; at most {MAX_TEXT_CHARS}",
                                   status=413)
        samples.append(tuple(sample))
    params = {
        "texts": samples,
        "batch_size": _check_int(kwargs, "batch_size", 1, MAX_BATCH_SIZE),
        "max_seq_len": _check_int(kwargs, "max_seq_len", 1, 512),
        "use_gpu": _check_bool(kwargs, "use_gpu"),
        "precision": _check_choice(kwargs, "precision", ("fp32", "bf16", "int8")),
        "return_sequence": _check_bool(kwargs, "return_sequence"),
        "return_tokens": _check_bool(kwargs, "return_tokens"),
    }
    if params["return_sequence"] and len(samples) * params["max_seq_len"] > MAX_SEQUENCE_TOKENS:
        raise RequestError(f"too much to return: {len(samples)} samples x max_seq_len {params['max_seq_len']} "
                           f"token features exceed {MAX_SEQUENCE_TOKENS}; send fewer samples, a smaller "
                           "max_seq_len, or \"return_sequence\": false", status=413)
    return params


def _floats(array):
    """A float32 array as (nested) lists of Python floats."""
    return array.tolist()


def features_to_json(module, samples, results, max_seq_len, return_sequence=True, return_tokens=False):
    """``get_embedding`` results as JSON-able dicts, one per sample, in input order."""
    feeder = module.feeder(max_seq_len) if return_tokens else None
    answer = []
    for sample, (pooled, sequence) in zip(samples, results):
        item = {"pooled_output": _floats(pooled), "num_tokens": int(sequence.shape[0])}
        if return_sequence:
            item["sequence_output"] = _floats(sequence)
        if return_tokens:
            item["tokens"] = module.tokenizer.convert_ids_to_tokens(list(feeder.encode(list(sample)).input_ids))
        answer.append(item)
    return answer


def serve_request(module, kwargs):
    """The serving method's body: checks ``kwargs`` (the request's JSON object), embeds, returns JSON-able
    results. Raises on a bad request, after setting the HTTP status of the reply (see the module docstring)."""
    try:
        params = validate_request(kwargs)
        if params["use_gpu"] and not gpu_available():
            raise RequestError("use_gpu is true, but this server has no GPU (a CPU build of Paddle, or no device)")
        extra = {} if params["precision"] == "fp32" else {"precision": params["precision"]}
        results = module.get_embedding([list(s) for s in params["texts"]], use_gpu=params["use_gpu"],
                                       batch_size=params["batch_size"], max_seq_len=params["max_seq_len"], **extra)
        return features_to_json(module, params["texts"], results, params["max_seq_len"],
                                params["return_sequence"], params["return_tokens"])
    except RequestError as e:
        _reply_status(e.status)
        raise
    except Exception as e:
        _reply_status(_status_of(e))
        raise


def _status_of(error):
    from .weights import MissingWeightsError

    if isinstance(error, MissingWeightsError):
        return 503
    if isinstance(error, (ValueError, TypeError)):  # get_embedding's own argument checks
        return 400
    return 500


def _reply_status(status):
    """Sets the HTTP status of the reply to the current Flask request, if there is one."""
    flask = sys.modules.get("flask")
    if flask is None or not flask.has_request_context():
        return

    @flask.after_this_request
    def set_status(response):
        response.status_code = status
        return response


# -- a 400 for JSON bodies that are not objects -----------------------------------------------------------------

_GUARD_MARK = "_bert_cased_L_24_H_1024_A_16_guard"
# PaddleHub's status for a body that ``request.json`` reads as None: with Flask 3, only a JSON null.
_PADDLEHUB_NO_BODY = "112"


def _not_an_object(app_compat, value):
    """PaddleHub's envelope for a JSON body that is not an object, with the reply's status set to 400."""
    _reply_status(400)
    return app_compat.package_result(
        "101", f"the request body must be a JSON object of keyword arguments (e.g. {{\"texts\": [[\"text\"]]}}), "
               f"got a JSON {_type_name(value)}", "")


def _on_this_modules_route():
    flask = sys.modules.get("flask")
    return flask is not None and flask.has_request_context() and flask.request.path == f"/predict/{HUB_NAME}"


def install_request_guard():
    """Wraps PaddleHub's ``predict_v2`` and ``package_result`` so a JSON body that is not an object (null
    included) gets HTTP 400 (idempotent).

    Does nothing unless ``paddlehub.serving.app_compat`` is already imported (only serving processes import
    it); returns whether the guard is in place.
    """
    app_compat = sys.modules.get("paddlehub.serving.app_compat")
    if app_compat is None or not hasattr(app_compat, "predict_v2") or not hasattr(app_compat, "package_result"):
        return False
    original_predict, original_result = app_compat.predict_v2, app_compat.package_result
    if getattr(original_predict, _GUARD_MARK, False):
        return True

    def predict_v2(module_info, input):
        if not isinstance(input, dict):
            return _not_an_object(app_compat, input)
        return original_predict(module_info, input)

    def package_result(status, msg, data):
        if status == _PADDLEHUB_NO_BODY and _on_this_modules_route():
            return _not_an_object(app_compat, None)  # Its "101" envelope goes to the original below.
        return original_result(status, msg, data)

    for wrapper, original in ((predict_v2, original_predict), (package_result, original_result)):
        setattr(wrapper, _GUARD_MARK, True)
        wrapper.__wrapped__ = original
        wrapper.__doc__ = original.__doc__
        setattr(app_compat, original.__name__, wrapper)
    return True


install_request_guard()
