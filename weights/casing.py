"""Whether a checkpoint lower-cases its input (an uncased vocabulary) or keeps case, and how that was told.

Read from the checkpoint's own files when they say it (Hugging Face ``tokenizer_config.json``, a 1.x
``bert_config.json`` with ``do_lower_case``), else told by its vocabulary: word pieces in upper case mean
cased, lower-case letters and none in upper case mean uncased. A vocabulary with no cased letters at all
cannot tell.
"""

import collections
import json
import logging

__all__ = ["Casing", "casing_in_json", "read_casing_in_json", "casing_of_vocab", "decide_casing", "UNTOLD"]

log = logging.getLogger(__name__)

Casing = collections.namedtuple("Casing", "do_lower_case told_by")
Casing.__doc__ = """``do_lower_case`` (bool) and ``told_by``: the file or rule it was read from, for messages."""

#: What an installed checkpoint whose casing could not be told is run as: this module's cased tokenization.
UNTOLD = "nothing (assumed cased)"


def casing_in_json(values, told_by):
    """Casing(do_lower_case, told_by) when the JSON object ``values`` has a boolean ``do_lower_case``, else None."""
    if isinstance(values, dict) and isinstance(values.get("do_lower_case"), bool):
        return Casing(values["do_lower_case"], told_by)
    return None


def read_casing_in_json(path):
    """casing_in_json of the JSON file at ``path``; None when it is missing, unreadable or silent."""
    try:
        with open(path, encoding="utf-8") as f:
            return casing_in_json(json.load(f), path)
    except (OSError, ValueError):
        return None


def casing_of_vocab(tokens):
    """Casing told by a vocabulary's tokens (special tokens such as ``[CLS]`` aside), or None when it cannot."""
    lower = False
    for token in tokens:
        if token.startswith("[") and token.endswith("]"):
            continue
        if any(char.isupper() for char in token):
            return Casing(False, "the vocabulary (it has upper-case word pieces)")
        lower = lower or any(char.islower() for char in token)
    return Casing(True, "the vocabulary (no upper-case word pieces)") if lower else None


def decide_casing(told, tokens, source):
    """``told`` if the checkpoint said it, else what the vocabulary ``tokens`` tell; else cased, with a warning."""
    casing = told or casing_of_vocab(tokens)
    if casing is None:
        log.warning("%s: cannot tell whether this checkpoint lower-cases its input (no do_lower_case in its "
                    "files, and its vocabulary has no cased letters); it will be tokenized cased", source)
        return Casing(False, UNTOLD)
    return casing
