"""Text -> tokens -> ids: BERT's basic + WordPiece tokenizer, and a SentencePiece one.

:class:`BertTokenizer` is the tokenizer of this cased model (SPEC section 5). It
gives the same tokens as Hugging Face's ``BertTokenizer(vocab, do_lower_case=False)``
(or ``do_lower_case=True`` for uncased vocabularies), which is the reference:

1. special tokens written in the text (``[CLS]``, ``[SEP]``, ...) are kept whole,
   unless ``split_special_tokens=True``;
2. clean: drop NUL, U+FFFD and control/format characters (Unicode ``C*``), turn
   whitespace (``Zs``, ``\\t``, ``\\n``, ``\\r``) into a space;
3. surround every CJK ideograph with spaces;
4. NFC-normalize (as Hugging Face does; Google's original skipped this);
5. uncased only: lower-case (character by character, as Hugging Face does), then
   strip accents (NFD, drop ``Mn``);
6. split on whitespace, then split off every punctuation character (ASCII
   non-letter/number symbols and Unicode ``P*``) as a word of its own;
7. WordPiece each word: greedy longest-match-first with ``##`` continuations,
   ``[UNK]`` for a word that cannot be covered or is longer than
   ``max_input_chars_per_word`` characters.

Steps 2-6 run over the whole text with ``str.translate`` tables that fill
themselves per character and a precompiled regular expression; WordPiece
results are cached per word. Nothing here imports Paddle.

:class:`SentencePieceTokenizer` offers the same interface for vocabularies built
with SentencePiece, as the 1.x code did (optionally cutting the text into words
of a dictionary first).
"""

import collections
import functools
import operator
import os
import re
import sys
import unicodedata

__all__ = ["SPECIAL_TOKENS", "load_vocab", "BertTokenizer", "SentencePieceTokenizer"]

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)

# Characters are classified on first sight and remembered; past this many distinct
# characters a table stops growing (a guard against adversarial input, not a limit).
_TABLE_LIMIT = 1 << 16
# Distinct words whose WordPiece split a tokenizer remembers before starting afresh.
_WORD_CACHE_LIMIT = 1 << 17

# The CJK Unified Ideographs blocks (and extensions, compatibility ideographs) that
# BERT splits into single characters. Hangul, kana etc. are not among them.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


# ---------------------------------------------------------------------------
# Vocabulary files


def _read_lines(path, what, hint=""):
    """Returns the lines of a UTF-8 text file without their trailing newline (as Hugging Face reads a vocabulary).

    ``what`` names the file in errors: FileNotFoundError (with ``hint``) if it is
    missing, ValueError if it is not UTF-8 or is empty.
    """
    path = os.fspath(path)
    try:
        with open(path, "r", encoding="utf-8") as reader:
            lines = [line.rstrip("\n") for line in reader]
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path!r}{hint}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path!r} is not UTF-8 text: {e}") from None
    if not lines:
        raise ValueError(f"{what} {path!r} is empty; expected one entry per line")
    return lines


def _read_vocab_lines(path):
    """The tokens of a vocabulary file, one per line (line index = id)."""
    return _read_lines(path, "vocabulary file", "; pass the path of a vocab.txt with one token per line "
                                                "(the module ships its own as assets/vocab.txt)")


def load_vocab(path):
    """Loads a vocabulary file into an ``OrderedDict`` from token to id.

    The id of a token is its 0-based line number. The file is UTF-8; only the
    trailing newline of each line is removed. A token listed twice gets the id of
    its last line (as Hugging Face's ``load_vocab``), so the dict may hold fewer
    entries than the file has lines.
    """
    return _token_ids(_read_vocab_lines(path))


def _token_ids(tokens):
    """``OrderedDict`` token -> index in ``tokens``; a repeated token keeps its first place and last index."""
    return collections.OrderedDict((token, index) for index, token in enumerate(tokens))


# ---------------------------------------------------------------------------
# Character classes (definitions of Google's tokenization.py)


def _is_whitespace(char):
    """``\\t``, ``\\n``, ``\\r`` and Unicode space separators (``Zs``)."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char):
    """Control, format, surrogate, private-use and unassigned characters (``C*``), less ``\\t\\n\\r``."""
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def _is_punctuation(char):
    """Every non-letter/number ASCII symbol, and Unicode punctuation (``P*``)."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(cp):
    """Whether code point ``cp`` is a CJK ideograph that BERT splits off."""
    return any(low <= cp <= high for low, high in _CJK_RANGES)


def _clean_char(char):
    """Step 2 and 3 for one character: None to drop it, else its replacement."""
    cp = ord(char)
    if cp == 0 or cp == 0xFFFD or _is_control(char):
        return None
    if _is_whitespace(char):
        return " "
    if _is_cjk(cp):
        return f" {char} "
    return char


def _strip_mark(char):
    """Drops non-spacing marks (``Mn``): what remains of an accent after NFD."""
    return None if unicodedata.category(char) == "Mn" else char


class _CharTable(dict):
    """A ``str.translate`` table that computes ``rule(char)`` on first sight of a character.

    This keeps a table over all of Unicode from being built up front, while the
    translation itself runs in C for every character seen before.
    """

    __slots__ = ("_rule",)

    def __init__(self, rule):
        super().__init__()
        self._rule = rule

    def __missing__(self, cp):
        value = self._rule(chr(cp))
        if len(self) < _TABLE_LIMIT:
            self[cp] = value
        return value


_CLEAN_TABLE = _CharTable(_clean_char)
_LOWER_TABLE = _CharTable(str.lower)
_STRIP_MARKS_TABLE = _CharTable(_strip_mark)


@functools.lru_cache(maxsize=None)
def _punctuation_ranges():
    """``(first, last)`` code point runs of the punctuation of ``_is_punctuation``, over all of Unicode."""
    ranges = []
    for cp in range(sys.maxunicode + 1):
        if _is_punctuation(chr(cp)):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return tuple(map(tuple, ranges))


def _punctuation_class(last=sys.maxunicode):
    """The body of a regex character class matching the punctuation up to code point ``last``."""
    runs = [(low, min(high, last)) for low, high in _punctuation_ranges() if low <= last]
    return "".join(f"\\U{low:08x}" if low == high else f"\\U{low:08x}-\\U{high:08x}" for low, high in runs)


def _word_pattern(never_split, last=sys.maxunicode):
    """A regex whose matches are the words of step 6, in order, for text with no code point above ``last``.

    A word is a punctuation character, or a run of characters that are neither
    whitespace (``str.split``'s notion, as ``\\s`` is) nor punctuation. A whole
    whitespace-delimited token that equals one of ``never_split`` is one word.
    (``re`` matches a class of BMP characters with a bitmap, but scans a class
    with astral characters range by range: hence a pattern for BMP-only text.)
    """
    punct = _punctuation_class(last)
    alternatives = [f"[{punct}]", f"[^{punct}\\s]+"]
    if never_split:
        keep = "|".join(re.escape(token) for token in sorted(never_split, key=len, reverse=True))
        alternatives.insert(0, f"(?<!\\S)(?:{keep})(?!\\S)")
    return re.compile("|".join(alternatives))


# ---------------------------------------------------------------------------
# Tokenizers


class _Vocabulary:
    """Token <-> id maps and the special tokens' ids, shared by both tokenizers."""

    pad_token = PAD_TOKEN
    unk_token = UNK_TOKEN
    cls_token = CLS_TOKEN
    sep_token = SEP_TOKEN
    mask_token = MASK_TOKEN

    def _set_vocabulary(self, tokens, source, hint=""):
        """Takes ``tokens[i]`` as the token of id ``i``; ValueError naming ``source`` if a special token is missing."""
        self._ids_to_tokens = list(tokens)
        self.vocab = _token_ids(self._ids_to_tokens)
        missing = [token for token in SPECIAL_TOKENS if token not in self.vocab]
        if missing:
            raise ValueError(
                f"vocabulary {source} lacks the special token(s) {' '.join(missing)}; "
                f"it must contain all of {' '.join(SPECIAL_TOKENS)}{hint}")
        self.pad_id = self.vocab[PAD_TOKEN]
        self.unk_id = self.vocab[UNK_TOKEN]
        self.cls_id = self.vocab[CLS_TOKEN]
        self.sep_id = self.vocab[SEP_TOKEN]
        self.mask_id = self.vocab[MASK_TOKEN]

    def __len__(self):
        """The number of ids (lines of the vocabulary), i.e. the embedding rows it needs."""
        return len(self._ids_to_tokens)

    def convert_tokens_to_ids(self, tokens):
        """Maps a list of tokens to their ids; a token not in the vocabulary maps to ``unk_id``."""
        if isinstance(tokens, str):
            raise TypeError(f"convert_tokens_to_ids() expects a list of tokens, got str {tokens!r}; "
                            f"wrap a single token as [token]")
        get, unk_id = self.vocab.get, self.unk_id
        return [get(token, unk_id) for token in tokens]

    def convert_ids_to_tokens(self, ids):
        """Maps a list of ids to their tokens; an id outside ``[0, len(self))`` raises IndexError naming it."""
        tokens, size = self._ids_to_tokens, len(self._ids_to_tokens)
        out = []
        for token_id in ids:
            try:
                index = operator.index(token_id)
            except TypeError:
                raise TypeError(f"token ids must be ints, got {type(token_id).__name__} {token_id!r}") from None
            if not 0 <= index < size:
                raise IndexError(f"token id {index} is out of range for a vocabulary of {size} tokens")
            out.append(tokens[index])
        return out


def _check_text(text):
    if not isinstance(text, str):
        raise TypeError(f"tokenize() expects a str, got {type(text).__name__}")


class BertTokenizer(_Vocabulary):
    """BERT's basic + WordPiece tokenizer (see the module docstring for the steps).

    Args:
        vocab_file: path of a WordPiece ``vocab.txt``; it must contain
            ``[PAD] [UNK] [CLS] [SEP] [MASK]``.
        do_lower_case: False (default) for cased vocabularies: the text keeps its
            case and accents. True lower-cases and strips accents, like Hugging
            Face's uncased mode.
        max_input_chars_per_word: longer words become ``[UNK]``.
        split_special_tokens: False (default) keeps ``[CLS]`` etc. written in the
            text as one token each, as Hugging Face does; True tokenizes them like
            any other text, as Google's original did.
    """

    def __init__(self, vocab_file, do_lower_case=False, max_input_chars_per_word=100, split_special_tokens=False):
        if not isinstance(do_lower_case, bool):
            raise TypeError(f"do_lower_case must be a bool, got {type(do_lower_case).__name__}")
        if isinstance(max_input_chars_per_word, bool) or not isinstance(max_input_chars_per_word, int) \
                or max_input_chars_per_word < 1:
            raise ValueError(f"max_input_chars_per_word must be a positive int, got {max_input_chars_per_word!r}")
        self.vocab_file = os.fspath(vocab_file)
        self._set_vocabulary(_read_vocab_lines(self.vocab_file), repr(self.vocab_file))
        self.do_lower_case = do_lower_case
        self.max_input_chars_per_word = max_input_chars_per_word
        self.split_special_tokens = bool(split_special_tokens)

        if self.split_special_tokens:
            self._special_pattern = None
            never_split = ()
        else:
            names = sorted(SPECIAL_TOKENS, key=len, reverse=True)
            self._special_pattern = re.compile("(" + "|".join(map(re.escape, names)) + ")")
            # A token that only becomes "[MASK]" after cleaning is kept whole too (Hugging Face's never_split).
            never_split = SPECIAL_TOKENS
        self._word_re = _word_pattern(never_split)
        self._bmp_word_re = _word_pattern(never_split, 0xFFFF)
        # No vocabulary entry is longer than this (counting a "##" piece without its "##").
        self._max_piece_chars = max(len(t[2:]) if t.startswith("##") else len(t) for t in self.vocab)
        self._word_cache = {}

    def __repr__(self):
        return (f"{type(self).__name__}(vocab_file={self.vocab_file!r}, do_lower_case={self.do_lower_case}, "
                f"vocab_size={len(self)})")

    def tokenize(self, text):
        """Splits ``text`` (a str) into WordPiece tokens, all of them in the vocabulary."""
        _check_text(text)
        if self._special_pattern is None:
            return self._tokenize_segment(text)
        parts = self._special_pattern.split(text)
        if len(parts) == 1:
            return self._tokenize_segment(text)
        tokens = []
        for index, part in enumerate(parts):
            if index % 2:  # a special token, found by the capturing group
                tokens.append(part)
            elif part:
                tokens.extend(self._tokenize_segment(part))
        return tokens

    def _tokenize_segment(self, text):
        tokens = []
        wordpiece = self._wordpiece
        for word in self._basic_tokenize(text):
            tokens.extend(wordpiece(word))
        return tokens

    def basic_tokenize(self, text):
        """Steps 2-6: the words of ``text``, before WordPiece (special tokens are not treated apart here)."""
        _check_text(text)
        return self._basic_tokenize(text)

    def _basic_tokenize(self, text):
        if self.do_lower_case:
            # Hugging Face lower-cases character by character before anything else
            # (so a final capital sigma becomes "σ", not "ς"); done the same way here.
            text = text.lower() if text.isascii() else text.translate(_LOWER_TABLE)
        text = text.translate(_CLEAN_TABLE)
        if not text.isascii():
            text = unicodedata.normalize("NFC", text)
            if self.do_lower_case:
                text = unicodedata.normalize("NFD", text.lower()).translate(_STRIP_MARKS_TABLE)
            if max(text, default="") > "\uffff":
                return self._word_re.findall(text)
        return self._bmp_word_re.findall(text)

    def _wordpiece(self, word):
        """The WordPiece tokens of one word (a tuple), cached."""
        pieces = self._word_cache.get(word)
        if pieces is None:
            pieces = self._wordpiece_uncached(word)
            if len(self._word_cache) >= _WORD_CACHE_LIMIT:
                self._word_cache.clear()
            self._word_cache[word] = pieces
        return pieces

    def _wordpiece_uncached(self, word):
        """Greedy longest-match-first split of ``word``; ``(unk_token,)`` if it cannot be covered."""
        length = len(word)
        if length > self.max_input_chars_per_word:
            return (self.unk_token,)
        vocab, longest = self.vocab, self._max_piece_chars
        pieces = []
        start = 0
        while start < length:
            end = min(length, start + longest)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            else:
                return (self.unk_token,)
            pieces.append(piece)
            start = end
        return tuple(pieces)


class SentencePieceTokenizer(_Vocabulary):
    """Tokenizer for vocabularies built with SentencePiece, with the interface of :class:`BertTokenizer`.

    Args:
        model_file: a trained SentencePiece ``.model`` file.
        vocab_file: optional; one token per line, or ``token<TAB>score`` lines (a
            SentencePiece ``.vocab`` file). When given, its line numbers are the ids;
            otherwise the ids are those of the SentencePiece model.
        word_dict: optional file of words, one per line. The text is then first cut
            into dictionary words by forward maximum matching (characters that
            start no dictionary word stand alone), and the words, joined by single
            spaces, are passed to SentencePiece, as the 1.x ERNIE-style tokenizer
            did. Matching tries the longest dictionary word first (1.x capped it at
            5 characters).
        do_lower_case: lower-case the text first (before the dictionary cut).

    The vocabulary must contain ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (train the model
    with them as user-defined or control symbols and ``unk_piece="[UNK]"``, or give
    a ``vocab_file`` holding them). The model's own unknown piece and any piece
    missing from the vocabulary become ``[UNK]``.
    """

    def __init__(self, model_file, vocab_file=None, word_dict=None, do_lower_case=False):
        import sentencepiece

        if not isinstance(do_lower_case, bool):
            raise TypeError(f"do_lower_case must be a bool, got {type(do_lower_case).__name__}")
        self.model_file = os.fspath(model_file)
        if not os.path.isfile(self.model_file):
            raise FileNotFoundError(f"SentencePiece model file not found: {self.model_file!r}")
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.Load(self.model_file)
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{self.model_file!r} is not a SentencePiece model: {e}") from None
        self._sp_unk_piece = self._sp.IdToPiece(self._sp.unk_id())

        self.vocab_file = None if vocab_file is None else os.fspath(vocab_file)
        if self.vocab_file is None:
            tokens = [self._sp.IdToPiece(i) for i in range(self._sp.GetPieceSize())]
            self._set_vocabulary(tokens, f"of the SentencePiece model {self.model_file!r}",
                                 " (train the model with user_defined_symbols or control_symbols "
                                 "[PAD],[CLS],[SEP],[MASK] and unk_piece=[UNK], or pass a vocab_file)")
        else:
            tokens = [line.split("\t", 1)[0] for line in _read_vocab_lines(self.vocab_file)]
            self._set_vocabulary(tokens, repr(self.vocab_file))
        self.do_lower_case = do_lower_case

        self.word_dict = None if word_dict is None else os.fspath(word_dict)
        self._words = frozenset()
        self._max_word_chars = 0
        if self.word_dict is not None:
            words = {line.strip() for line in _read_lines(self.word_dict, "word dictionary file")}
            words.discard("")
            if not words:
                raise ValueError(f"word dictionary {self.word_dict!r} holds no words; expected one word per line")
            self._words = frozenset(words)
            self._max_word_chars = max(map(len, words))

    def __repr__(self):
        return (f"{type(self).__name__}(model_file={self.model_file!r}, vocab_file={self.vocab_file!r}, "
                f"word_dict={self.word_dict!r}, do_lower_case={self.do_lower_case}, vocab_size={len(self)})")

    def cut_words(self, text):
        """Forward maximum matching of ``text`` against the word dictionary (the text itself if none)."""
        if not self._words:
            return [text] if text else []
        words, index, length = [], 0, len(text)
        while index < length:
            for size in range(min(self._max_word_chars, length - index), 0, -1):
                if text[index:index + size] in self._words:
                    break
            else:
                size = 1
            words.append(text[index:index + size])
            index += size
        return words

    def tokenize(self, text):
        """Splits ``text`` (a str) into SentencePiece pieces, each in the vocabulary or ``[UNK]``."""
        _check_text(text)
        if self.do_lower_case:
            text = text.lower()
        if self._words:
            text = " ".join(word for word in self.cut_words(text) if not word.isspace())
        vocab, sp_unk, unk = self.vocab, self._sp_unk_piece, self.unk_token
        return [unk if piece == sp_unk or piece not in vocab else piece
                for piece in self._sp.EncodeAsPieces(text)]
