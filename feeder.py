"""Samples -> padded int64 feeds, in length-sorted batches with the order to restore.

Shared by ``context()`` users, ``get_embedding`` and fine-tuning. A *sample* is
``[text_a]`` or ``[text_a, text_b]`` (a bare str is taken as ``[text_a]``); it
becomes ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` with segment ids 0 for the
first part (with its ``[SEP]``) and 1 for the second (SPEC section 5).

Feeds are named ``input_ids``, ``position_ids``, ``segment_ids``, ``input_mask``:
int64 arrays of shape ``[batch, seq]``. The tokenizer is any object with
``tokenize``, ``convert_tokens_to_ids`` and ``cls_id``/``sep_id``/``pad_id``
(see :mod:`.tokenizer`).
"""

import collections.abc
import operator
from typing import Dict, Iterator, List, NamedTuple, Tuple

import numpy as np

__all__ = ["FEED_NAMES", "Encoding", "Batch", "Feeder", "check_int", "normalize_samples", "truncation_lengths"]

FEED_NAMES = ("input_ids", "position_ids", "segment_ids", "input_mask")

_SAMPLE_EXPECTED = "a str or a list/tuple of 1 or 2 str ([text_a] or [text_a, text_b])"


class Encoding(NamedTuple):
    """One sample as ids: ``[CLS] a [SEP] (b [SEP])``, already truncated, and its segment ids."""

    input_ids: List[int]
    segment_ids: List[int]


class Batch(NamedTuple):
    """Padded feeds for some samples, and where they came from.

    ``indices[i]`` is the position in the input list of row ``i`` of the feeds;
    ``lengths[i]`` is its real token count (with ``[CLS]``/``[SEP]``).
    """

    indices: np.ndarray
    lengths: np.ndarray
    feeds: Dict[str, np.ndarray]


def _type_name(value):
    return "None" if value is None else type(value).__name__


def _normalize_sample(sample, where):
    """One sample as a tuple of 1 or 2 str; ``where`` names it in errors (e.g. ``texts[3]``)."""
    if isinstance(sample, str):
        return (sample,)
    if not isinstance(sample, (list, tuple)):
        hint = "; decode bytes to str first" if isinstance(sample, (bytes, bytearray)) else ""
        raise TypeError(f"{where} must be {_SAMPLE_EXPECTED}, got {_type_name(sample)}{hint}")
    if not 1 <= len(sample) <= 2:
        raise ValueError(f"{where} has {len(sample)} texts; expected 1 or 2 ([text_a] or [text_a, text_b])")
    for position, text in enumerate(sample):
        if not isinstance(text, str):
            hint = "; decode bytes to str first" if isinstance(text, (bytes, bytearray)) else ""
            raise TypeError(f"{where}[{position}] must be a str, got {_type_name(text)}{hint}")
    return tuple(sample)


def normalize_samples(texts) -> List[Tuple[str, ...]]:
    """Validates ``texts`` and returns each sample as a tuple of 1 or 2 str.

    ``texts`` is a list or tuple (an iterator is listed first) of samples; a sample
    is a str or a list/tuple of 1 or 2 str. An empty list gives ``[]``; an empty
    string is a valid text. TypeError/ValueError name the offending sample's index
    and what was expected.
    """
    if isinstance(texts, (str, bytes, bytearray)):
        raise TypeError(f"texts must be a list of samples, got {type(texts).__name__}; "
                        f"wrap a single text as [[text]]")
    if isinstance(texts, collections.abc.Iterator):
        texts = list(texts)
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a list of samples (each [text_a] or [text_a, text_b]), "
                        f"got {_type_name(texts)}")
    return [_normalize_sample(sample, f"texts[{index}]") for index, sample in enumerate(texts)]


def check_int(name, value, low, high=None):
    """``value`` as an int from ``low`` to ``high`` (no upper bound if None), else ValueError naming it.

    Any integer type is accepted (numpy's included), but not a bool, a float or a str.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        bound = f">= {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")
    return number


def truncation_lengths(len_a, len_b, budget):
    """How many tokens of each part survive "longest first" truncation to ``budget`` tokens.

    Equals popping one token at a time from the end of the longer part (on a tie,
    the second) until ``len_a + len_b <= budget``, in constant time.
    """
    if len_a + len_b <= budget:
        return len_a, len_b
    keep_a = min(len_a, max(budget - len_b, (budget + 1) // 2))
    return keep_a, min(len_b, budget - keep_a)


class Feeder:
    """Turns samples into the four int64 feeds of the network.

    Args:
        tokenizer: a :class:`.tokenizer.BertTokenizer` or anything with its interface.
        max_seq_len: the most tokens of a sample, ``[CLS]``/``[SEP]`` included; at
            least 2 (3 for pairs). The network's own limit (512) is enforced there.
    """

    def __init__(self, tokenizer, max_seq_len=512):
        self.tokenizer = tokenizer
        self.max_seq_len = check_int("max_seq_len", max_seq_len, 2)
        self._cls_id = tokenizer.cls_id
        self._sep_id = tokenizer.sep_id
        self._pad_id = tokenizer.pad_id

    def __repr__(self):
        return f"{type(self).__name__}({self.tokenizer!r}, max_seq_len={self.max_seq_len})"

    def _ids(self, text):
        return self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(text))

    def encode(self, sample, where="sample") -> Encoding:
        """Encodes one sample (a str, or a list/tuple of 1 or 2 str), truncated to ``max_seq_len``.

        Truncation pops tokens from the end of the longer part (on a tie, the
        second) until the texts fit in ``max_seq_len - 3`` tokens (``- 2`` for a
        single text). ``where`` names the sample in errors.
        """
        sample = _normalize_sample(sample, where)
        cls_id, sep_id = self._cls_id, self._sep_id
        ids_a = self._ids(sample[0])
        if len(sample) == 1:
            ids_a = ids_a[:self.max_seq_len - 2]
            return Encoding([cls_id] + ids_a + [sep_id], [0] * (len(ids_a) + 2))
        if self.max_seq_len < 3:
            raise ValueError(f"{where} is a text pair, which needs max_seq_len >= 3 "
                             f"([CLS] a [SEP] b [SEP]); max_seq_len is {self.max_seq_len}")
        ids_b = self._ids(sample[1])
        keep_a, keep_b = truncation_lengths(len(ids_a), len(ids_b), self.max_seq_len - 3)
        input_ids = [cls_id] + ids_a[:keep_a] + [sep_id] + ids_b[:keep_b] + [sep_id]
        return Encoding(input_ids, [0] * (keep_a + 2) + [1] * (keep_b + 1))

    def _encode_all(self, texts):
        samples = normalize_samples(texts)
        return [self.encode(sample, f"texts[{index}]") for index, sample in enumerate(samples)]

    @staticmethod
    def _check_pad_to(pad_to, longest):
        if pad_to is None:
            return longest
        pad_to = check_int("pad_to", pad_to, 1)
        if pad_to < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest encoding ({longest} tokens); "
                             f"raise pad_to or lower max_seq_len")
        return pad_to

    def pad(self, encodings, pad_to=None) -> Dict[str, np.ndarray]:
        """Stacks encodings into the four feeds, int64 ``[len(encodings), seq]``.

        ``seq`` is ``pad_to`` (ValueError if shorter than the longest encoding) or
        the longest encoding. Padding uses ``tokenizer.pad_id``, segment 0 and
        input_mask 0; real tokens have input_mask 1; position_ids is
        ``arange(seq)`` on every row, padding included.
        """
        lengths = np.array([len(e.input_ids) for e in encodings], dtype=np.int64)
        seq = self._check_pad_to(pad_to, int(lengths.max()) if len(lengths) else 0)
        batch = len(encodings)
        input_ids = np.full((batch, seq), self._pad_id, dtype=np.int64)
        segment_ids = np.zeros((batch, seq), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, :lengths[row]] = encoding.input_ids
            segment_ids[row, :lengths[row]] = encoding.segment_ids
        positions = np.arange(seq, dtype=np.int64)
        return {
            "input_ids": input_ids,
            "position_ids": np.tile(positions, (batch, 1)),
            "segment_ids": segment_ids,
            "input_mask": (positions[None, :] < lengths[:, None]).astype(np.int64),
        }

    def feed(self, texts, pad_to=None) -> Dict[str, np.ndarray]:
        """The feeds of all of ``texts`` as one batch, in input order."""
        return self.pad(self._encode_all(texts), pad_to)

    def batches(self, texts, batch_size, sort_by_length=True, pad_to=None) -> Iterator[Batch]:
        """Encodes all of ``texts`` now and returns an iterator of :class:`Batch` of at most ``batch_size``.

        Every sample is validated and encoded before this returns, so a bad sample
        (or a ``pad_to`` shorter than some encoding) fails before any batch is run.
        With ``sort_by_length`` the samples go longest first (stable: equal lengths
        keep input order), so each batch pads little and the largest batch comes
        first, where running out of memory shows at once; otherwise in input order.
        Put results back in input order with ``Batch.indices``. An empty ``texts``
        yields no batch.
        """
        batch_size = check_int("batch_size", batch_size, 1)
        encodings = self._encode_all(texts)
        lengths = np.array([len(e.input_ids) for e in encodings], dtype=np.int64)
        if pad_to is not None:
            pad_to = self._check_pad_to(pad_to, int(lengths.max()) if len(lengths) else 0)
        if sort_by_length:
            order = np.argsort(-lengths, kind="stable")
        else:
            order = np.arange(len(encodings), dtype=np.int64)
        return self._iter_batches(encodings, lengths, order, batch_size, pad_to)

    def _iter_batches(self, encodings, lengths, order, batch_size, pad_to):
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size].astype(np.int64)
            feeds = self.pad([encodings[i] for i in indices], pad_to)
            yield Batch(indices=indices, lengths=lengths[indices], feeds=feeds)
