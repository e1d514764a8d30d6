"""Labelled texts from TSV/CSV files: ``[(sample, label), ...]`` for :class:`.task.TextClassifierTask`."""

import csv
import os

__all__ = ["read_labeled_file"]

_TEXT_COLUMN_CHOICES = (("text_a", "text_b"), ("text",), ("sentence",), ("text_a",))


def _delimiter_for(path):
    extension = os.path.splitext(path)[1].lower()
    return "," if extension == ".csv" else "\t"


def read_labeled_file(path, text_columns=None, label_column="label", delimiter=None, encoding="utf-8"):
    """Reads a delimited file with a header row into ``[(sample, label), ...]``.

    Args:
        path: the file. ``.csv`` files are comma-separated with CSV quoting; anything else
            (``.tsv``, ``.txt``) is tab-separated with no quoting, as PaddleHub 1.x datasets were.
        text_columns: one or two column names (a text, or a text pair). By default
            ``text_a`` (+ ``text_b`` when present), else ``text``, else ``sentence``.
        label_column: the column holding the label (kept as the string read; the task maps it).
        delimiter: overrides the one chosen from the extension.

    A sample is ``[text]`` or ``[text_a, text_b]``; an empty ``text_b`` makes a single-text sample.
    Raises ``ValueError`` naming the file and line for a missing column or a short row.
    """
    path = os.fspath(path)
    delimiter = delimiter or _delimiter_for(path)
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    with open(path, encoding=encoding, newline="") as f:
        rows = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = next(rows, None)
        if header is None:
            raise ValueError(f"{path} is empty; expected a header row naming the text and {label_column!r} columns")
        header = [name.strip().lstrip("\ufeff") for name in header]
        if text_columns is None:
            text_columns = next((choice for choice in _TEXT_COLUMN_CHOICES if all(c in header for c in choice)), None)
            if text_columns is None:
                raise ValueError(f"{path}: the header {header} has no text column; name it text_a (and text_b), "
                                 f"text or sentence, or pass text_columns")
        elif isinstance(text_columns, str):
            text_columns = (text_columns,)
        text_columns = tuple(text_columns)
        if not 1 <= len(text_columns) <= 2:
            raise ValueError(f"text_columns must name 1 or 2 columns, got {text_columns!r}")
        missing = [c for c in (*text_columns, label_column) if c not in header]
        if missing:
            raise ValueError(f"{path}: the header {header} lacks the column(s) {missing}")
        text_at = [header.index(c) for c in text_columns]
        label_at = header.index(label_column)
        needed = max(*text_at, label_at) + 1
        samples = []
        for line, row in enumerate(rows, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) < needed:
                raise ValueError(f"{path}, line {line}: {len(row)} fields, expected at least {needed} "
                                 f"(delimiter {delimiter!r})")
            texts = [row[i] for i in text_at]
            if len(texts) == 2 and texts[1] == "":
                texts = texts[:1]
            samples.append((texts, row[label_at].strip()))
    return samples
