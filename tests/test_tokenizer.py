"""The tokenizers against Hugging Face's ``BertTokenizer`` (the reference of SPEC section 5), and their errors."""

import hashlib
import logging
import pathlib
import random
import re
import sys
import time
import unicodedata

import pytest

from bert_cased_L_24_H_1024_A_16 import tokenizer as tokenization
from bert_cased_L_24_H_1024_A_16.tokenizer import BertTokenizer, SentencePieceTokenizer, load_vocab

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_VOCAB = REPO_ROOT / "assets" / "vocab.txt"
SHARED_VOCAB = pathlib.Path(__file__).resolve().parents[2] / "shared" / "vocab" / "bert_cased_vocab.txt"
VOCAB_SHA256 = "eeaa9875b23b04b4c54ef759d03db9d1ba1554838f8fb26c5d96fa551df93d02"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def shared_vocab():
    if not SHARED_VOCAB.is_file():
        pytest.skip(f"shared vocabulary not found at {SHARED_VOCAB}")
    return str(SHARED_VOCAB)


def hf_tokenizer(vocab, do_lower_case):
    transformers = pytest.importorskip("transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return transformers.BertTokenizer(vocab, do_lower_case=do_lower_case)


def write_vocab(path, tokens):
    path.write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------
# A seeded corpus that stresses Unicode


_ENGLISH = (
    "The quick brown fox jumps over the lazy dog . BERT was pre-trained on Wikipedia and BooksCorpus ; "
    "it doesn't lower-case anything in the cased model , so Apple and apple differ . Dr. Smith paid "
    "$1,234.56 on 2019-03-14 at 10:30am ( about 45 % more ) and e-mailed john.doe@example.com ! "
    "Unbelievably , unaffable Mr. O'Neill's \"quotes\" were #1 on http://www.example.org/path?q=1&r=2 "
    "naïve café résumé coöperate Zürich São Paulo Kraków Ångström façade jalapeño"
).split()

_SCRIPTS = {
    "latin": [(0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xFF), (0x100, 0x17F), (0x180, 0x24F), (0x1E00, 0x1EFF)],
    "greek": [(0x391, 0x3A9), (0x3B1, 0x3C9), (0x386, 0x38F), (0x1F00, 0x1FFE)],
    "cyrillic": [(0x410, 0x44F), (0x400, 0x40F), (0x450, 0x45F)],
    "arabic": [(0x621, 0x64A), (0x64B, 0x652), (0x660, 0x669), (0x6F0, 0x6F9)],
    "hebrew": [(0x5D0, 0x5EA), (0x5B0, 0x5BC)],
    "devanagari": [(0x905, 0x939), (0x93E, 0x94D), (0x966, 0x96F)],
    "thai": [(0xE01, 0xE3A), (0xE40, 0xE4E)],
    "hangul": [(0xAC00, 0xD7A3), (0x1100, 0x1112), (0x1161, 0x1175), (0x11A8, 0x11C2)],
    "kana": [(0x3041, 0x3096), (0x30A1, 0x30FA), (0xFF66, 0xFF9D)],
    "cjk": [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
            (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F), (0x9FF0, 0xA00F), (0x2CEA0, 0x2CEBF)],
    "fullwidth": [(0xFF01, 0xFF5E)],
    "numbers": [(0x30, 0x39), (0xB2, 0xB3), (0xBC, 0xBE), (0x2160, 0x217F), (0x2460, 0x249B)],
}
_COMBINING = [chr(c) for c in range(0x300, 0x370)] + ["\u20DD", "\u20E3", "\uFE0F", "\u0483", "\u1AB0"]
_EMOJI = ["\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F468\u200D\U0001F469\u200D\U0001F467",
          "\U0001F1E9\U0001F1EA", "1\uFE0F\u20E3", "\u2764\uFE0F", "\U0001F3F3\uFE0F\u200D\U0001F308",
          "\U0001F9D1\U0001F3FF\u200D\U0001F4BB", "\u263A", "\U0001F44B\U0001F3FB"]
_INVISIBLE = ["\u200B", "\u200C", "\u200D", "\uFEFF", "\u00AD", "\u2060", "\x00", "\x01", "\x07", "\x1B", "\x7F",
              "\x85", "\x9F", "\uFFFD", "\uE000", "\U000F0000", "\u0378", "\uD800", "\U000E0041", "\u061C"]
_SPACES = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00A0", "\u2003", "\u3000", "\u1680", "\u202F", "\u205F",
           "\u2028", "\u2029", "\x0B", "\x0C", "\u2000"]
_PUNCT = ["!!!", "...", "?!", "\u2014\u2013", "\u00AB\u00BB", "\u201E\u201C", "\u00BF\u00A1", "\u3001\u3002",
          "()[]{}", "$%^&*", "~`|\\", "@#", "\u00B7", "\u203D", "''", "\"", "-", "\u2026", "\u00A7\u00B6",
          "\uFF01\uFF1F", "\u1FEF", "\u037E", "\u0387", "+=<>", "\u060C", "\u05BE", "\u0964"]
_SPECIAL_IN_TEXT = ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "[mask]", "[MA\u200BSK]", "x[SEP]y",
                    "[CLS][CLS]", "[[MASK]]"]
_EDGE = ["", " ", "\t\n ", "\uFFFD", "\x00", "\u200B", "\u3000", "a" * 100, "a" * 101, "\u00E9" * 101,
         "e\u0301" * 60, "\u4E00" * 150, "A\u030A", "\u212B", "\u2126", "ΟΔΟΣ ΣΟΦΟΣ", "İstanbul", "ß ẞ",
         "\uFB01", "\u0130\u0049\u0131", "\u1E9E", "\u01C5", "x\U00010100y", "\U0001E95Ez", "a\U000110BBb\U0001F600",
         "\u05D0\u05B7\u200F!", "\u0915\u094D\u200D\u0937"]


def _chars(rng, script, count):
    ranges = _SCRIPTS[script]
    out = []
    for _ in range(count):
        low, high = rng.choice(ranges)
        out.append(chr(rng.randint(low, high)))
    return "".join(out)


def _fragment(rng):
    kind = rng.random()
    if kind < 0.25:
        return " ".join(rng.choice(_ENGLISH) for _ in range(rng.randint(1, 8)))
    if kind < 0.55:
        word = _chars(rng, rng.choice(list(_SCRIPTS)), rng.randint(1, 12))
        if rng.random() < 0.3:  # combining marks on and between letters
            at = rng.randint(0, len(word))
            word = word[:at] + "".join(rng.choice(_COMBINING) for _ in range(rng.randint(1, 3))) + word[at:]
        return word
    if kind < 0.65:
        return rng.choice(_EMOJI)
    if kind < 0.75:
        return rng.choice(_PUNCT) * rng.randint(1, 3)
    if kind < 0.83:
        word = rng.choice(_ENGLISH)
        at = rng.randint(0, len(word))
        return word[:at] + rng.choice(_INVISIBLE) + word[at:]
    if kind < 0.88:
        return rng.choice(_SPECIAL_IN_TEXT)
    if kind < 0.93:
        return rng.choice(_EDGE)
    if kind < 0.96:  # a long word: over 100 characters most of the time
        return _chars(rng, rng.choice(["latin", "cyrillic", "greek"]), rng.randint(90, 130))
    # anything at all, unassigned and surrogate code points included
    return "".join(chr(rng.randint(0, sys.maxunicode)) for _ in range(rng.randint(1, 6)))


def unicode_corpus(count=6000, seed=20240517):
    """``count`` strings from a fixed seed; the edge cases come first, then random mixtures."""
    rng = random.Random(seed)
    corpus = list(_EDGE) + list(_SPECIAL_IN_TEXT) + _PUNCT + _EMOJI + _SPACES + _INVISIBLE
    while len(corpus) < count:
        parts = []
        for _ in range(rng.randint(1, 10)):
            parts.append(_fragment(rng))
            parts.append(rng.choice(_SPACES) if rng.random() < 0.8 else rng.choice(["", "", rng.choice(_PUNCT)]))
        corpus.append("".join(parts))
    return corpus


@pytest.fixture(scope="module")
def corpus():
    return unicode_corpus()


@pytest.fixture(scope="module")
def cased():
    return BertTokenizer(PACKAGE_VOCAB)


# ---------------------------------------------------------------------------
# The vocabulary files


def test_package_vocab_is_the_release_vocab():
    assert hashlib.sha256(PACKAGE_VOCAB.read_bytes()).hexdigest() == VOCAB_SHA256


def test_shared_vocab_is_the_release_vocab():
    path = shared_vocab()
    assert hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest() == VOCAB_SHA256


@pytest.mark.parametrize("which", ["package", "shared"])
def test_vocab_ids(which):
    path = str(PACKAGE_VOCAB) if which == "package" else shared_vocab()
    vocab = load_vocab(path)
    assert len(vocab) == 28996
    assert list(vocab.values()) == list(range(28996))
    assert [vocab[t] for t in SPECIALS] == [0, 100, 101, 102, 103]
    assert (vocab["the"], vocab["Hello"], vocab["##ing"]) == (1103, 8667, 1158)
    tok = BertTokenizer(path)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token) == tuple(SPECIALS)
    assert len(tok) == 28996 and tok.vocab == vocab


def test_load_vocab_matches_hugging_face_including_odd_lines(tmp_path):
    bert = pytest.importorskip("transformers.models.bert.tokenization_bert")
    lines = ["[PAD]", "dup", " spaced ", "trailing\t", "", "dup", "[UNK]", "caf\u00e9", "x\r", "[CLS]", "dup"]
    path = tmp_path / "vocab.txt"
    path.write_bytes("\n".join(lines).encode("utf-8"))  # no final newline, a CR, an empty line, duplicates
    ours = load_vocab(path)
    assert ours == bert.load_vocab(str(path))
    assert list(ours.items()) == list(bert.load_vocab(str(path)).items())
    assert ours["dup"] == 10 and ours[" spaced "] == 2 and ours["trailing\t"] == 3 and ours[""] == 4


def test_duplicate_tokens_map_to_their_last_id(tmp_path):
    path = write_vocab(tmp_path / "vocab.txt", SPECIALS + ["a", "##b", "a"])
    tok = BertTokenizer(path)
    assert tok.convert_tokens_to_ids(["a", "##b"]) == [7, 6]
    assert len(tok) == 8  # one id per line
    assert tok.convert_ids_to_tokens([5, 7]) == ["a", "a"]


# ---------------------------------------------------------------------------
# Parity with Hugging Face


def assert_same_tokens_and_ids(ours, theirs, texts):
    """Asserts that both tokenizers give the same tokens and ids on every text; returns all our tokens."""
    all_tokens, mismatches = [], []
    for text in texts:
        tokens, expected = ours.tokenize(text), theirs.tokenize(text)
        if tokens != expected or ours.convert_tokens_to_ids(tokens) != theirs.convert_tokens_to_ids(expected):
            mismatches.append((text, tokens, expected))
        all_tokens.extend(tokens)
    assert not mismatches, f"{len(mismatches)} of {len(texts)} texts differ, e.g. {mismatches[:3]!r}"
    return all_tokens


def test_corpus_is_varied(corpus):
    assert len(corpus) >= 5000
    joined = "".join(corpus)
    for needle in ["\u200D", "\uFEFF", "\u00AD", "\u00A0", "\u3000", "\x00", "\uFFFD", "\U0001F3FD", "\u0301",
                   "\t", "\r", "\n", "[MASK]"]:
        assert needle in joined, f"corpus lacks {needle!r}"
    assert "" in corpus and any(t and t.isspace() for t in corpus)
    assert any(len(w) > 100 for t in corpus for w in t.split())
    for script, ranges in _SCRIPTS.items():
        assert any(low <= ord(c) <= high for c in joined for low, high in ranges), script


@pytest.mark.parametrize("which", ["package", "shared"])
def test_cased_tokens_and_ids_match_hugging_face(corpus, which):
    path = str(PACKAGE_VOCAB) if which == "package" else shared_vocab()
    ours = BertTokenizer(path)
    theirs = hf_tokenizer(path, do_lower_case=False)
    all_tokens = assert_same_tokens_and_ids(ours, theirs, corpus if which == "package" else corpus[::4])
    # The corpus reaches the interesting paths: unknown words, continuations, special tokens kept whole.
    assert "[UNK]" in all_tokens and "[MASK]" in all_tokens
    assert sum(t.startswith("##") for t in all_tokens) > 1000


def test_uncased_mode_matches_hugging_face_uncased(corpus):
    ours = BertTokenizer(PACKAGE_VOCAB, do_lower_case=True)
    theirs = hf_tokenizer(str(PACKAGE_VOCAB), do_lower_case=True)
    all_tokens = assert_same_tokens_and_ids(ours, theirs, corpus)
    assert not any(t != t.lower() for t in all_tokens if t not in SPECIALS)


def test_uncased_mode_lowers_and_strips_accents(tmp_path):
    path = write_vocab(tmp_path / "vocab.txt", SPECIALS + ["cafe", "resume", "οδοσ", "ß", "straße"])
    tok = BertTokenizer(path, do_lower_case=True)
    assert tok.tokenize("CAFÉ Résumé") == ["cafe", "resume"]
    # Lower-cased character by character like Hugging Face: a final capital sigma gives "σ", not "ς".
    assert tok.tokenize("ΟΔΟΣ") == ["οδοσ"]
    assert tok.tokenize("STRASSE Straße") == ["[UNK]", "straße"]
    assert BertTokenizer(path).tokenize("CAFÉ") == ["[UNK]"]  # cased: nothing lowered


def test_split_special_tokens_matches_hugging_face_components(corpus):
    """``split_special_tokens=True`` tokenizes ``[CLS]`` etc. like any text, as Google's original did.

    The reference is Hugging Face's own BasicTokenizer + WordpieceTokenizer with no
    ``never_split``: its ``split_special_tokens=True`` flag still keeps a special token
    that stands between spaces whole (transformers 4.46 does not pass it on to
    ``_tokenize``), so it cannot serve.
    """
    theirs = hf_tokenizer(str(PACKAGE_VOCAB), do_lower_case=False)

    def reference(text):
        return [piece for word in theirs.basic_tokenizer.tokenize(text)
                for piece in theirs.wordpiece_tokenizer.tokenize(word)]

    ours = BertTokenizer(PACKAGE_VOCAB, split_special_tokens=True)
    texts = [t for t in corpus if "[" in t][:300] + corpus[:300]
    mismatches = [t for t in texts if ours.tokenize(t) != reference(t)]
    assert not mismatches, mismatches[:3]
    assert ours.tokenize("a [MASK] b") == ["a", "[", "MA", "##S", "##K", "]", "b"]
    assert ours.tokenize("[MA\u200bSK]") == ["[", "MA", "##S", "##K", "]"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_agrees_with_the_rust_wordpiece_on_ordinary_text(corpus, cased):
    """An independent implementation (``tokenizers``), on the texts where it is known to agree.

    It differs from Hugging Face's Python tokenizer (and this one, and Google's
    original) in four places, so those texts are left out: it does not NFC-normalize;
    it does not keep special tokens whole unless they are registered as added tokens;
    it turns the control characters that Rust counts as whitespace (vertical tab,
    form feed, U+001C-U+001F, U+0085) into a space where the others drop them, so
    "a\\x0bb" is two words there and one here; and its own Unicode tables decide
    which unassigned and private-use characters are dropped, and miss punctuation
    newer than Unicode 3.2 here and there (e.g. Adlam's U+1E95E).
    """
    tokenizers = pytest.importorskip("tokenizers")
    fast = tokenizers.BertWordPieceTokenizer(str(PACKAGE_VOCAB), lowercase=False, strip_accents=False,
                                              clean_text=True, handle_chinese_chars=True)

    def ordinary(text):
        kept = "".join(c for c in text if not unicodedata.category(c).startswith("C"))
        assigned = all(unicodedata.category(c) not in ("Cn", "Co", "Cs") for c in text)
        spaced_controls = any(c in text for c in "\x0b\x0c\x1c\x1d\x1e\x1f\x85")
        new_punctuation = any(unicodedata.category(c)[0] == "P" and unicodedata.ucd_3_2_0.category(c) == "Cn"
                              for c in text)
        return ("[" not in text and assigned and not spaced_controls and not new_punctuation
                and unicodedata.is_normalized("NFC", kept))

    texts = [t for t in corpus if ordinary(t)]
    assert len(texts) > 1000
    mismatches = [t for t in texts if cased.tokenize(t) != fast.encode(t, add_special_tokens=False).tokens]
    assert not mismatches, mismatches[:3]


def test_character_classes_match_hugging_face_on_every_code_point():
    bert = pytest.importorskip("transformers.models.bert.tokenization_bert")
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    expected = {c for c in every if bert._is_punctuation(c)}
    assert set(re.findall(f"[{tokenization._punctuation_class()}]", every)) == expected
    bmp = set(re.findall(f"[{tokenization._punctuation_class(0xFFFF)}]", every))
    assert bmp == {c for c in expected if c <= "\uffff"} and len(bmp) < len(expected)
    basic = bert.BasicTokenizer(do_lower_case=False)
    head = every[:0x40000] + every[0xE0000:0xE1000]  # planes 0-3 and 14: all but unassigned and private use
    assert head.translate(tokenization._CLEAN_TABLE) == basic._tokenize_chinese_chars(basic._clean_text(head))


def test_examples(cased):
    assert cased.tokenize("Hello, World!") == ["Hello", ",", "World", "!"]
    assert cased.tokenize("unaffable Unbelievably") == [
        "un", "##af", "##fa", "##ble", "Un", "##bel", "##ie", "##va", "##bly"]
    assert cased.tokenize("中文") == ["中", "文"]
    assert cased.tokenize("a\u200Bb\u00ADc\u2003d") == ["a", "##b", "##c", "d"]
    assert cased.tokenize("e\u0301") == ["é"]  # NFC, as Hugging Face
    assert cased.tokenize("a" * 100) != ["[UNK]"] and cased.tokenize("a" * 101) == ["[UNK]"]
    assert cased.tokenize("x[SEP]y [MASK]") == ["x", "[SEP]", "y", "[MASK]"]
    assert cased.tokenize("") == [] and cased.tokenize(" \t\n\u3000\u200B\x00\uFFFD") == []
    assert cased.convert_tokens_to_ids(["Hello", "no-such-token"]) == [8667, 100]
    assert cased.convert_ids_to_tokens([101, 8667, 102]) == ["[CLS]", "Hello", "[SEP]"]


def test_max_input_chars_per_word(tmp_path):
    path = write_vocab(tmp_path / "vocab.txt", SPECIALS + ["a", "##a"])
    assert BertTokenizer(path, max_input_chars_per_word=3).tokenize("aaa aaaa") == ["a", "##a", "##a", "[UNK]"]
    with pytest.raises(ValueError, match="max_input_chars_per_word"):
        BertTokenizer(path, max_input_chars_per_word=0)


def test_faster_than_hugging_face(corpus):
    theirs = hf_tokenizer(str(PACKAGE_VOCAB), do_lower_case=False)
    texts = corpus[:1500]
    ours = BertTokenizer(PACKAGE_VOCAB)  # a fresh instance: no word cache yet

    def seconds(tokenize):
        start = time.perf_counter()
        for text in texts:
            tokenize(text)
        return time.perf_counter() - start

    ours_s, theirs_s = seconds(ours.tokenize), seconds(theirs.tokenize)
    assert ours_s < theirs_s, f"ours {ours_s:.3f} s, Hugging Face {theirs_s:.3f} s"


# ---------------------------------------------------------------------------
# Errors


def test_missing_vocab_file(tmp_path):
    missing = tmp_path / "nope" / "vocab.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))) as info:
        BertTokenizer(missing)
    assert "one token per line" in str(info.value)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_vocab(missing)


def test_empty_vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty") as info:
        load_vocab(path)
    assert str(path) in str(info.value)


def test_vocab_not_utf8(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\n\xff\xfe\n")
    with pytest.raises(ValueError, match="UTF-8"):
        load_vocab(path)


def test_vocab_lacking_special_tokens(tmp_path):
    path = write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[MASK]", "hello"])
    with pytest.raises(ValueError) as info:
        BertTokenizer(path)
    message = str(info.value)
    assert "[CLS]" in message and "[SEP]" in message and str(path) in message
    assert "lacks the special token(s) [CLS] [SEP];" in message


def test_tokenize_rejects_non_str(cased):
    for bad, name in [(b"bytes", "bytes"), (None, "NoneType"), (3, "int"), (["a"], "list")]:
        with pytest.raises(TypeError, match=f"got {name}"):
            cased.tokenize(bad)


def test_convert_errors(cased):
    with pytest.raises(IndexError, match="28996"):
        cased.convert_ids_to_tokens([5, 28996])
    with pytest.raises(IndexError, match="-1"):
        cased.convert_ids_to_tokens([-1])
    with pytest.raises(TypeError, match="str"):
        cased.convert_tokens_to_ids("Hello")
    with pytest.raises(TypeError, match="float"):
        cased.convert_ids_to_tokens([1.5])
    np = pytest.importorskip("numpy")
    assert cased.convert_ids_to_tokens(np.array([101, 102])) == ["[CLS]", "[SEP]"]


# ---------------------------------------------------------------------------
# SentencePiece


_SP_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "hello world this is a small test of sentencepiece",
    "machine learning and natural language processing",
    "tokenizers split text into pieces and pieces into ids",
    "helloworld is one word in the dictionary test",
] * 40


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    prefix = tmp_path_factory.mktemp("sp") / "tiny"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_SP_SENTENCES), model_prefix=str(prefix), vocab_size=80,
        user_defined_symbols=["[PAD]", "[CLS]", "[SEP]", "[MASK]"], unk_piece="[UNK]", bos_id=-1, eos_id=-1,
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    return str(prefix) + ".model"


def test_sentencepiece_ids_from_model(sp_model):
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor()
    sp.Load(sp_model)
    tok = SentencePieceTokenizer(sp_model)
    assert len(tok) == sp.GetPieceSize()
    assert (tok.unk_id, tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    text = "hello world, the fox [MASK] QZ"
    tokens = tok.tokenize(text)
    expected = [p if sp.PieceToId(p) != sp.unk_id() else "[UNK]" for p in sp.EncodeAsPieces(text)]
    assert tokens == expected and "[MASK]" in tokens and "[UNK]" in tokens
    assert tok.convert_tokens_to_ids(tokens) == [sp.PieceToId(p) for p in tokens]
    assert tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(tokens)) == tokens
    assert tok.tokenize("") == []


def test_sentencepiece_vocab_file_overrides_ids(sp_model, tmp_path):
    vocab_path = sp_model[:-len(".model")] + ".vocab"  # "piece<TAB>score" lines, as trained
    tok = SentencePieceTokenizer(sp_model, vocab_file=vocab_path)
    assert tok.cls_id == 2
    # A vocabulary of its own: pieces missing from it become [UNK]; ids are its line numbers.
    own = write_vocab(tmp_path / "vocab.txt", ["[MASK]", "[SEP]", "[CLS]", "[UNK]", "[PAD]", "\u2581hello"])
    tok = SentencePieceTokenizer(sp_model, vocab_file=own)
    assert (tok.mask_id, tok.sep_id, tok.cls_id, tok.unk_id, tok.pad_id) == (0, 1, 2, 3, 4)
    tokens = tok.tokenize("hello fox")
    assert tokens[0] == "\u2581hello" and len(tokens) > 1 and set(tokens[1:]) == {"[UNK]"}
    assert tokens[1:] == ["[UNK]"] * (len(SentencePieceTokenizer(sp_model).tokenize("hello fox")) - 1)
    assert tok.convert_tokens_to_ids(tokens) == [5] + [3] * (len(tokens) - 1) and len(tok) == 6


def test_sentencepiece_word_dict(sp_model, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("hello\nworld\nhelloworld\nhell\n\n", encoding="utf-8")
    tok = SentencePieceTokenizer(sp_model, word_dict=words)
    # Forward maximum matching: the longest dictionary word wins; other characters stand alone.
    assert tok.cut_words("helloworld hellish") == ["helloworld", " ", "hell", "i", "s", "h"]
    assert tok.cut_words("worldhello") == ["world", "hello"]
    plain = SentencePieceTokenizer(sp_model)
    assert tok.tokenize("helloworld hellish") == plain.tokenize("helloworld hell i s h")
    assert tok.tokenize("worldhello") == plain.tokenize("world hello")
    lower = SentencePieceTokenizer(sp_model, word_dict=words, do_lower_case=True)
    assert lower.cut_words("HelloWorld".lower()) == ["helloworld"]
    assert lower.tokenize("HelloWorld") == plain.tokenize("helloworld")


def test_sentencepiece_errors(sp_model, tmp_path):
    spm = pytest.importorskip("sentencepiece")
    with pytest.raises(FileNotFoundError, match="missing.model"):
        SentencePieceTokenizer(tmp_path / "missing.model")
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        SentencePieceTokenizer(garbage)
    with pytest.raises(FileNotFoundError, match="words.txt"):
        SentencePieceTokenizer(sp_model, word_dict=tmp_path / "words.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no words"):
        SentencePieceTokenizer(sp_model, word_dict=empty)
    with pytest.raises(TypeError, match="got bytes"):
        SentencePieceTokenizer(sp_model).tokenize(b"x")
    # A model trained without BERT's special tokens.
    prefix = tmp_path / "plain"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_SP_SENTENCES), model_prefix=str(prefix),
                                   vocab_size=60, hard_vocab_limit=False, minloglevel=2)
    with pytest.raises(ValueError) as info:
        SentencePieceTokenizer(str(prefix) + ".model")
    message = str(info.value)
    assert "user_defined_symbols" in message
    assert "plain.model" in message and all(t in message for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
