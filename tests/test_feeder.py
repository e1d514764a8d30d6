"""The feeder: samples -> padded int64 feeds, truncation as Hugging Face, batches and the order to restore."""

import logging
import pathlib
import random

import numpy as np
import pytest

from bert_cased_L_24_H_1024_A_16.feeder import (FEED_NAMES, Batch, Encoding, Feeder, check_int,
                                                normalize_samples, truncation_lengths)
from bert_cased_L_24_H_1024_A_16.tokenizer import BertTokenizer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_VOCAB = REPO_ROOT / "assets" / "vocab.txt"

_WORDS = ("The quick brown fox jumps over the lazy dog unaffable Unbelievably naïve café São Paulo 中文 字符 "
          "Ångström , . ! ? ( ) 1,234.56 2019-03-14 e-mail Kraków Ζεύς Москва שלום नमस्ते 😀 [MASK]").split()


def random_text(rng, low=0, high=40):
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(PACKAGE_VOCAB)


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return transformers.BertTokenizer(str(PACKAGE_VOCAB), do_lower_case=False)


@pytest.fixture(scope="module")
def samples():
    """A mix of single texts and pairs, lengths from 0 to ~80 tokens, from a fixed seed."""
    rng = random.Random(7)
    out = []
    for _ in range(60):
        if rng.random() < 0.5:
            out.append([random_text(rng)])
        else:
            out.append([random_text(rng), random_text(rng)])
    return out + [[""], ["", ""], "a bare str sample", ("a", "tuple pair")]


# ---------------------------------------------------------------------------
# normalize_samples


def test_normalize_samples_accepts_the_documented_forms():
    assert normalize_samples([]) == []
    assert normalize_samples(()) == []
    assert normalize_samples([["a"], ["a", "b"], "c", ("d", "e"), [""]]) == [
        ("a",), ("a", "b"), ("c",), ("d", "e"), ("",)]
    assert normalize_samples(iter([["x"], "y"])) == [("x",), ("y",)]
    assert normalize_samples(s for s in ["x"]) == [("x",)]


@pytest.mark.parametrize("texts, error, message", [
    ("just a str", TypeError, "texts must be a list of samples, got str; wrap a single text as [[text]]"),
    (b"bytes", TypeError, "texts must be a list of samples, got bytes; wrap a single text as [[text]]"),
    (None, TypeError, "texts must be a list of samples (each [text_a] or [text_a, text_b]), got None"),
    (3, TypeError, "got int"),
    ({"a": 1}, TypeError, "got dict"),
    ([["ok"], None], TypeError, "texts[1] must be a str or a list/tuple of 1 or 2 str"),
    ([["ok"], ["ok"], 5], TypeError, "texts[2] must be a str or a list/tuple of 1 or 2 str ([text_a] or "
                                     "[text_a, text_b]), got int"),
    ([b"raw"], TypeError, "texts[0] must be a str or a list/tuple of 1 or 2 str ([text_a] or [text_a, text_b]), "
                          "got bytes; decode bytes to str first"),
    ([["a", b"b"]], TypeError, "texts[0][1] must be a str, got bytes; decode bytes to str first"),
    ([["a"], [None]], TypeError, "texts[1][0] must be a str, got None"),
    ([["a"], ["b", 2]], TypeError, "texts[1][1] must be a str, got int"),
    ([["a"], []], ValueError, "texts[1] has 0 texts; expected 1 or 2 ([text_a] or [text_a, text_b])"),
    ([["a", "b", "c"]], ValueError, "texts[0] has 3 texts; expected 1 or 2"),
])
def test_normalize_samples_errors_name_the_sample(texts, error, message):
    with pytest.raises(error) as info:
        normalize_samples(texts)
    assert message in str(info.value)


# ---------------------------------------------------------------------------
# encode: layout and truncation


def test_encode_layout(tokenizer):
    feeder = Feeder(tokenizer, max_seq_len=16)
    ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("Hello world"))
    assert feeder.encode("Hello world") == Encoding([101] + ids + [102], [0] * (len(ids) + 2))
    assert feeder.encode(["Hello world"]) == feeder.encode(("Hello world",))
    pair = feeder.encode(("Hello", "world"))
    assert pair.input_ids == [101, 8667, 102, 1362, 102]
    assert pair.segment_ids == [0, 0, 0, 1, 1]
    assert feeder.encode(("", "")) == Encoding([101, 102, 102], [0, 0, 1])
    assert feeder.encode("") == Encoding([101, 102], [0, 0])


def test_truncation_lengths_equal_popping_one_token_at_a_time():
    def popping(len_a, len_b, budget):
        while len_a + len_b > budget:
            if len_a > len_b:
                len_a -= 1
            else:
                len_b -= 1
        return len_a, len_b

    for budget in range(0, 26):
        for len_a in range(0, 30):
            for len_b in range(0, 30):
                assert truncation_lengths(len_a, len_b, budget) == popping(len_a, len_b, budget), \
                    (len_a, len_b, budget)


@pytest.mark.parametrize("max_len", [3, 4, 5, 6, 7, 8, 9, 12, 16, 23, 32, 64, 128])
def test_pair_truncation_matches_hugging_face(tokenizer, hf, max_len):
    rng = random.Random(max_len)
    feeder = Feeder(tokenizer, max_seq_len=max_len)
    truncated = 0
    for _ in range(40):
        a, b = random_text(rng, 0, 60), random_text(rng, 0, 60)
        expected = hf.encode_plus(a, b, truncation="longest_first", max_length=max_len)
        encoding = feeder.encode((a, b))
        assert encoding.input_ids == expected["input_ids"], (a, b)
        assert encoding.segment_ids == expected["token_type_ids"], (a, b)
        assert len(encoding.input_ids) <= max_len
        truncated += len(hf.encode_plus(a, b)["input_ids"]) > max_len
    assert truncated > 0  # the test reaches the truncating path


@pytest.mark.parametrize("max_len", [3, 4, 5, 8, 13, 32, 128])
def test_single_truncation_matches_hugging_face(tokenizer, hf, max_len):
    rng = random.Random(100 + max_len)
    feeder = Feeder(tokenizer, max_seq_len=max_len)
    for _ in range(40):
        text = random_text(rng, 0, 80)
        expected = hf.encode_plus(text, truncation="longest_first", max_length=max_len)
        encoding = feeder.encode(text)
        assert encoding.input_ids == expected["input_ids"], text
        assert encoding.segment_ids == expected["token_type_ids"], text


def test_smallest_max_seq_len(tokenizer):
    # Hugging Face refuses to truncate a text to nothing and returns it whole; max_seq_len is a promise here.
    feeder = Feeder(tokenizer, max_seq_len=2)
    assert feeder.encode("Hello world") == Encoding([101, 102], [0, 0])
    with pytest.raises(ValueError, match=r"texts\[1\] is a text pair, which needs max_seq_len >= 3"):
        feeder.feed(["a", ["b", "c"]])
    assert Feeder(tokenizer, max_seq_len=3).encode(("Hello", "world")) == Encoding([101, 102, 102], [0, 0, 1])


@pytest.mark.parametrize("bad", [1, 0, -5, "8", 2.5, True, None])
def test_max_seq_len_is_validated(tokenizer, bad):
    with pytest.raises(ValueError, match="max_seq_len must be an int >= 2") as info:
        Feeder(tokenizer, max_seq_len=bad)
    assert f"got {bad!r}" in str(info.value)


def test_numpy_ints_are_accepted(tokenizer):
    feeder = Feeder(tokenizer, max_seq_len=np.int64(8))
    assert feeder.max_seq_len == 8 and type(feeder.max_seq_len) is int
    assert len(list(feeder.batches([["a"]] * 3, batch_size=np.int32(2)))) == 2


# ---------------------------------------------------------------------------
# pad / feed


def _check_feeds(feeds, batch, seq):
    assert list(feeds) == list(FEED_NAMES)
    for name in FEED_NAMES:
        assert feeds[name].dtype == np.int64, name
        assert feeds[name].shape == (batch, seq), name


def test_feed_matches_hugging_face_padding(tokenizer, hf, samples):
    feeder = Feeder(tokenizer, max_seq_len=48)
    feeds = feeder.feed(samples)
    rows = [hf.encode_plus(*((s,) if isinstance(s, str) else s), truncation="longest_first", max_length=48)
            for s in samples]
    seq = max(len(r["input_ids"]) for r in rows)
    _check_feeds(feeds, len(samples), seq)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        assert feeds["input_ids"][i].tolist() == row["input_ids"] + [0] * (seq - n)
        assert feeds["segment_ids"][i].tolist() == row["token_type_ids"] + [0] * (seq - n)
        assert feeds["input_mask"][i].tolist() == row["attention_mask"] + [0] * (seq - n)
        assert feeds["position_ids"][i].tolist() == list(range(seq))


def test_pad_to_fixed_length_vs_longest(tokenizer):
    feeder = Feeder(tokenizer, max_seq_len=32)
    texts = [["Hello"], ["Hello world", "again"]]
    longest = feeder.feed(texts)
    fixed = feeder.feed(texts, pad_to=32)
    _check_feeds(longest, 2, 6)
    _check_feeds(fixed, 2, 32)
    for name in FEED_NAMES:
        assert (fixed[name][:, :6] == longest[name]).all(), name
    assert fixed["position_ids"].tolist() == [list(range(32))] * 2
    assert (fixed["input_ids"][:, 6:] == 0).all() and (fixed["input_mask"][:, 6:] == 0).all()
    assert fixed["input_mask"].sum(axis=1).tolist() == [3, 6]
    assert longest["segment_ids"].tolist() == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]]


def test_pad_uses_the_vocabularys_pad_id(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(["[UNK]", "[CLS]", "[SEP]", "[MASK]", "[PAD]", "a", "b"]) + "\n", encoding="utf-8")
    feeder = Feeder(BertTokenizer(path), max_seq_len=8)
    feeds = feeder.feed([["a b a"], ["b"]])
    assert feeds["input_ids"].tolist() == [[1, 5, 6, 5, 2], [1, 6, 2, 4, 4]]
    assert feeds["input_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


def test_pad_to_shorter_than_the_longest_raises(tokenizer):
    feeder = Feeder(tokenizer, max_seq_len=32)
    with pytest.raises(ValueError, match=r"pad_to=3 is shorter than the longest encoding \(6 tokens\)"):
        feeder.feed([["Hello world", "again"]], pad_to=3)
    with pytest.raises(ValueError, match="pad_to must be an int >= 1"):
        feeder.feed([["Hello"]], pad_to=0)
    with pytest.raises(ValueError, match="pad_to=3 is shorter"):
        feeder.batches([["Hello"], ["Hello world", "again"]], batch_size=1, pad_to=3)  # before any batch


def test_feed_of_nothing(tokenizer):
    feeder = Feeder(tokenizer, max_seq_len=8)
    _check_feeds(feeder.feed([]), 0, 0)
    _check_feeds(feeder.feed([], pad_to=8), 0, 8)


# ---------------------------------------------------------------------------
# batches


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64, 1000])
def test_sorted_batches_restore_input_order(tokenizer, samples, batch_size):
    feeder = Feeder(tokenizer, max_seq_len=40)
    encodings = [feeder.encode(s) for s in samples]
    batches = list(feeder.batches(samples, batch_size=batch_size))
    assert all(isinstance(b, Batch) for b in batches)
    assert [len(b.indices) for b in batches] == [min(batch_size, len(samples) - start)
                                                  for start in range(0, len(samples), batch_size)]
    indices = np.concatenate([b.indices for b in batches])
    assert sorted(indices.tolist()) == list(range(len(samples)))
    lengths = np.concatenate([b.lengths for b in batches])
    assert lengths.tolist() == [len(encodings[i].input_ids) for i in indices]
    # Longest first, ties in input order.
    assert lengths.tolist() == sorted(lengths.tolist(), reverse=True)
    for k in range(len(indices) - 1):
        if lengths[k] == lengths[k + 1]:
            assert indices[k] < indices[k + 1]
    # "Run" each batch (row sums stand in for a model), then put results back in input order.
    restored = [None] * len(samples)
    for batch in batches:
        feeds = batch.feeds
        _check_feeds(feeds, len(batch.indices), int(batch.lengths.max()))
        assert batch.indices.dtype == np.int64 and batch.lengths.dtype == np.int64
        assert feeds["input_mask"].sum(axis=1).tolist() == batch.lengths.tolist()
        for row, index in enumerate(batch.indices):
            restored[index] = feeds["input_ids"][row, :batch.lengths[row]].tolist()
    assert restored == [e.input_ids for e in encodings]


def test_unsorted_batches_keep_input_order_and_pad_to(tokenizer, samples):
    feeder = Feeder(tokenizer, max_seq_len=40)
    batches = list(feeder.batches(samples, batch_size=10, sort_by_length=False, pad_to=40))
    assert np.concatenate([b.indices for b in batches]).tolist() == list(range(len(samples)))
    whole = feeder.feed(samples, pad_to=40)
    for batch in batches:
        _check_feeds(batch.feeds, len(batch.indices), 40)
        for name in FEED_NAMES:
            assert (batch.feeds[name] == whole[name][batch.indices]).all()


def test_batches_of_nothing(tokenizer):
    assert list(Feeder(tokenizer).batches([], batch_size=4)) == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, None, "2", True])
def test_batch_size_is_validated(tokenizer, bad):
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        Feeder(tokenizer).batches([["a"]], batch_size=bad)


def test_a_bad_sample_fails_before_any_batch(tokenizer):
    calls = []

    class CountingTokenizer:
        pad_id, cls_id, sep_id = tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id

        def tokenize(self, text):
            calls.append(text)
            return tokenizer.tokenize(text)

        def convert_tokens_to_ids(self, tokens):
            return tokenizer.convert_tokens_to_ids(tokens)

    feeder = Feeder(CountingTokenizer(), max_seq_len=8)
    with pytest.raises(TypeError, match=r"texts\[2\]\[0\] must be a str, got int"):
        feeder.batches([["a"], ["b"], [3]], batch_size=1)  # raises at the call, not at iteration
    assert calls == []  # validated before anything was tokenized
    batches = feeder.batches([["a"], ["b"]], batch_size=1)
    assert calls == ["a", "b"]  # encoded up front
    assert len(list(batches)) == 2


@pytest.mark.parametrize("value, low, high, expected", [
    (3, 1, None, 3), (np.int64(512), 1, 512, 512), (np.int32(0), 0, None, 0),
    (0, 1, None, "n must be an int >= 1, got 0"),
    (513, 1, 512, "n must be an int from 1 to 512, got 513"),
    (True, 0, None, "n must be an int >= 0, got True"),
    (2.0, 1, None, "n must be an int >= 1, got 2.0"),
    ("3", 1, 4, "n must be an int from 1 to 4, got '3'"),
    (None, 1, None, "n must be an int >= 1, got None"),
])
def test_check_int_takes_any_integer_type_but_bools_floats_and_strings(value, low, high, expected):
    if isinstance(expected, str):
        with pytest.raises(ValueError) as error:
            check_int("n", value, low, high)
        assert str(error.value) == expected
    else:
        result = check_int("n", value, low, high)
        assert result == expected and type(result) is int
