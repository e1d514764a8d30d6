"""Input files -> records ``(id, sample)``, streamed, each with the position it starts at.

Formats (told by the extension unless given): ``text`` (one sample per line, ``text_a<TAB>text_b``
for a pair; blank lines are not samples), ``jsonl`` (one JSON object per line), ``csv``/``tsv``
(a header row names the columns) and ``parquet``. JSONL, CSV/TSV and Parquet take their texts
from the fields :class:`Fields` names. A record's id is its ``id`` field when one is named,
else ``<path>:<line>`` (the 1-based line the row starts on; for Parquet, ``<path>:<row>``
with the 0-based row index).

Every record carries a :class:`Position` from which :func:`iter_records` can start again, so a
shard of a corpus is read without reading what comes before it. A bad row raises
:class:`CorpusError` naming the file and line, or, with ``skip_bad_rows``, is counted in a
:class:`SkipCounter` and left out.
"""

import collections
import csv
import glob
import json
import os
import typing

__all__ = ["FORMATS", "CorpusError", "Fields", "Position", "Record", "Source", "SkipCounter", "expand_inputs",
           "iter_records"]

FORMATS = ("text", "jsonl", "csv", "tsv", "parquet")
_EXTENSIONS = {".txt": "text", ".text": "text", ".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl",
               ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_PARQUET_BATCH_ROWS = 4096


class CorpusError(ValueError):
    """Bad input or output of a corpus job; the message names the file, line or folder and what to do."""


class Fields(typing.NamedTuple):
    """Which fields (JSONL keys, CSV/TSV/Parquet columns) hold the texts and the id; ignored for text files."""

    text: str = "text"
    text_b: typing.Optional[str] = None
    id: typing.Optional[str] = None


class Source(typing.NamedTuple):
    """One input file: ``path`` as given (ids use it) and its ``fmt``."""

    path: str
    fmt: str


class Position(typing.NamedTuple):
    """Where a record starts: index into the sources, byte offset (Parquet: row index), line (Parquet: row)."""

    source: int
    offset: int
    line: int


class Record(typing.NamedTuple):
    id: str
    sample: tuple  # (text_a,) or (text_a, text_b)
    position: Position


class SkipCounter:
    """Rows left out, by reason, with the first place each reason was met (for the report)."""

    def __init__(self):
        self.counts = collections.Counter()
        self.first = {}

    def add(self, reason, where):
        self.counts[reason] += 1
        self.first.setdefault(reason, where)

    def total(self):
        return sum(self.counts.values())

    def report(self):
        """One line per reason: ``N <reason> (first: <where>)``."""
        return [f"{count} {reason} (first: {self.first[reason]})" for reason, count in sorted(self.counts.items())]


def expand_inputs(patterns, fmt=None):
    """The :class:`Source` list of ``patterns`` (paths or globs), in the order given, each glob sorted.

    ``fmt`` forces one format; otherwise each file's extension tells it. Raises CorpusError for a
    glob matching nothing, a missing file, a folder or an unknown extension.
    """
    if fmt is not None and fmt not in FORMATS:
        raise CorpusError(f"unknown input format {fmt!r}; expected one of {', '.join(FORMATS)}")
    sources = []
    for pattern in patterns:
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not paths:
            raise CorpusError(f"input {pattern!r} matches no file")
        for path in paths:
            if not os.path.exists(path):
                raise CorpusError(f"input {path}: no such file")
            if os.path.isdir(path):
                raise CorpusError(f"input {path} is a folder; give its files (a glob such as {path}/*.jsonl)")
            sources.append(Source(path, fmt or _format_of(path)))
    if not sources:
        raise CorpusError("no input files given")
    return sources


def _format_of(path):
    name = path.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst"):
        if name.endswith(suffix):
            raise CorpusError(f"input {path}: compressed files are not read; decompress it first")
    extension = os.path.splitext(name)[1]
    if extension not in _EXTENSIONS:
        raise CorpusError(f"input {path}: cannot tell the format from the extension {extension or '(none)'!r}; "
                          f"give --input-format ({', '.join(FORMATS)})")
    return _EXTENSIONS[extension]


def iter_records(sources, fields=Fields(), start=Position(0, 0, 1), skip_bad_rows=False, skipped=None):
    """Yields every :class:`Record` of ``sources`` from ``start`` on, in order.

    ``skipped`` (a :class:`SkipCounter`) counts blank lines and, with ``skip_bad_rows``, bad rows;
    without ``skip_bad_rows`` a bad row raises CorpusError. A file with no records raises too.
    """
    skipped = SkipCounter() if skipped is None else skipped
    for index in range(start.source, len(sources)):
        source = sources[index]
        at = start if index == start.source else Position(index, 0, 1 if source.fmt != "parquet" else 0)
        reader = _READERS[source.fmt]
        any_record = at.offset > 0
        for record in reader(source, index, fields, at, skip_bad_rows, skipped):
            any_record = True
            yield record
        if not any_record:
            raise CorpusError(f"input {source.path} holds no samples (an empty file?); remove it from the inputs")


def _bad_row(message, where, skip_bad_rows, skipped, reason):
    if not skip_bad_rows:
        raise CorpusError(f"{where}: {message}; fix or remove the row, or pass --skip-bad-rows to leave such "
                          "rows out (they are counted)")
    skipped.add(reason, where)


def _lines(source, at):
    """``(offset, end, line number, decoded line or UnicodeDecodeError)`` of each line of a file, from ``at``.

    Lines end at ``\n`` (a ``\r`` before it is dropped), read in binary so offsets are bytes.
    """
    try:
        f = open(source.path, "rb")
    except OSError as e:
        raise CorpusError(f"cannot read input {source.path}: {e}") from None
    with f:
        f.seek(at.offset)
        offset, number = at.offset, at.line
        for raw in f:
            body = raw[:-1] if raw.endswith(b"\n") else raw
            if body.endswith(b"\r"):
                body = body[:-1]
            if offset == 0 and body.startswith(b"\xef\xbb\xbf"):
                body = body[3:]
            try:
                line = body.decode("utf-8")
            except UnicodeDecodeError as e:
                line = e
            yield offset, offset + len(raw), number, line
            offset += len(raw)
            number += 1


def _not_utf8(error):
    return f"not UTF-8 ({error.reason} at byte {error.start} of the line)"


def _text_lines(source, at, skip_bad_rows, skipped):
    """``(offset, line number, where, line)`` of the lines that are valid UTF-8 and not blank."""
    for offset, _, number, line in _lines(source, at):
        where = f"{source.path} line {number}"
        if isinstance(line, UnicodeDecodeError):
            _bad_row(_not_utf8(line), where, skip_bad_rows, skipped, "rows of invalid UTF-8")
        elif not line.strip():
            skipped.add("blank lines", where)
        else:
            yield offset, number, where, line


def _read_text(source, index, fields, at, skip_bad_rows, skipped):
    for offset, number, where, line in _text_lines(source, at, skip_bad_rows, skipped):
        parts = line.split("\t")
        if len(parts) > 2:
            _bad_row(f"{len(parts)} tab-separated fields; expected a text, or a pair text_a<TAB>text_b", where,
                     skip_bad_rows, skipped, "rows with more than two tab-separated fields")
            continue
        yield Record(f"{source.path}:{number}", tuple(parts), Position(index, offset, number))


def _read_jsonl(source, index, fields, at, skip_bad_rows, skipped):
    for offset, number, where, line in _text_lines(source, at, skip_bad_rows, skipped):
        try:
            row = json.loads(line)
        except ValueError as e:
            _bad_row(f"not JSON ({e})", where, skip_bad_rows, skipped, "rows that are not JSON")
            continue
        if not isinstance(row, dict):
            _bad_row(f"a JSON {type(row).__name__}, not an object", where, skip_bad_rows, skipped,
                     "rows that are not JSON objects")
            continue
        record = _record_from_fields(row, fields, source, Position(index, offset, number), where, skip_bad_rows,
                                     skipped)
        if record is not None:
            yield record


def _record_from_fields(row, fields, source, position, where, skip_bad_rows, skipped):
    """The record of a row mapping field names to values, or None when it is skipped."""
    sample = []
    for name in (fields.text, fields.text_b):
        if name is None:
            continue
        if name not in row:
            present = ", ".join(map(str, list(row)[:10])) or "none"
            _bad_row(f"no field {name!r} (fields: {present}); choose it with --text-field/--text-b-field", where,
                     skip_bad_rows, skipped, f"rows without the field {name!r}")
            return None
        value = row[name]
        if not isinstance(value, str):
            what = "null" if value is None else f"a {type(value).__name__}, not a string"
            _bad_row(f"field {name!r} is {what}", where, skip_bad_rows, skipped, f"rows whose {name!r} is not text")
            return None
        sample.append(value)
    if fields.id is None:
        record_id = f"{source.path}:{position.line}"
    else:
        value = row.get(fields.id)
        if value is None or isinstance(value, (dict, list, float)):
            what = "missing" if fields.id not in row else ("null" if value is None else f"a {type(value).__name__}")
            _bad_row(f"id field {fields.id!r} is {what}; ids must be strings or integers", where, skip_bad_rows,
                     skipped, f"rows without a usable id {fields.id!r}")
            return None
        record_id = str(value)
    return Record(record_id, tuple(sample), position)


class _LineFeed:
    """Feeds decoded lines to the csv module and knows where the next unread line starts.

    The csv module pulls exactly the lines of one row before returning it, so the position
    read before each row is where that row starts. A line of invalid UTF-8 raises, or with
    ``skip_bad_rows`` is counted and left out.
    """

    def __init__(self, source, at, skip_bad_rows, skipped):
        self._lines = _lines(source, at)
        self._source, self._skipped = source, skipped
        self.skip_bad_rows = skip_bad_rows
        self.next_offset, self.next_line = at.offset, at.line

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            _, end, number, line = next(self._lines)
            self.next_offset, self.next_line = end, number + 1
            if not isinstance(line, UnicodeDecodeError):
                return line + "\n"
            _bad_row(_not_utf8(line), f"{self._source.path} line {number}", self.skip_bad_rows, self._skipped,
                     "rows of invalid UTF-8")

    def close(self):
        self._lines.close()


def _read_delimited(source, index, fields, at, skip_bad_rows, skipped):
    delimiter = "\t" if source.fmt == "tsv" else ","
    feed = _LineFeed(source, Position(index, 0, 1), False, skipped)  # The header must be readable.
    rows = csv.reader(feed, delimiter=delimiter, strict=True)
    try:
        header = next(rows, None)
    except csv.Error as e:
        raise CorpusError(f"{source.path}, header row: {e}") from None
    if not header:
        raise CorpusError(f"input {source.path} holds no samples (no header row); a {source.fmt.upper()} file needs "
                          "a header naming its columns")
    missing = [name for name in (fields.text, fields.text_b, fields.id) if name is not None and name not in header]
    if missing:
        raise CorpusError(f"{source.path}: no column {', '.join(map(repr, missing))} in the header "
                          f"({', '.join(header)}); choose with --text-field/--text-b-field/--id-field")
    if at.offset > 0:
        feed.close()
        feed = _LineFeed(source, at, skip_bad_rows, skipped)
        rows = csv.reader(feed, delimiter=delimiter, strict=True)
    else:
        feed.skip_bad_rows = skip_bad_rows
    try:
        while True:
            start = Position(index, feed.next_offset, feed.next_line)
            where = f"{source.path} line {start.line}"
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as e:
                raise CorpusError(f"{where}: {e}; the file cannot be read past it") from None
            if not row:
                skipped.add("blank lines", where)
            elif len(row) != len(header):
                _bad_row(f"{len(row)} fields; the header has {len(header)}", where, skip_bad_rows, skipped,
                         "rows with the wrong number of fields")
            else:
                record = _record_from_fields(dict(zip(header, row)), fields, source, start, where, skip_bad_rows,
                                             skipped)
                if record is not None:
                    yield record
    finally:
        feed.close()


def _read_parquet(source, index, fields, at, skip_bad_rows, skipped):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source.path)
    except (OSError, pa.ArrowException) as e:
        raise CorpusError(f"cannot read input {source.path} as Parquet: {e}") from None
    schema = parquet.schema_arrow
    columns = [name for name in (fields.text, fields.text_b, fields.id) if name is not None]
    missing = [name for name in columns if name not in schema.names]
    if missing:
        raise CorpusError(f"{source.path}: no column {', '.join(map(repr, missing))} (columns: "
                          f"{', '.join(schema.names)}); choose with --text-field/--text-b-field/--id-field")
    for name in (fields.text, fields.text_b):
        if name is not None and not (pa.types.is_string(schema.field(name).type)
                                     or pa.types.is_large_string(schema.field(name).type)):
            raise CorpusError(f"{source.path}: column {name!r} is {schema.field(name).type}, not text")
    groups, row_number, group_start = [], None, 0  # The row groups from the one holding row at.offset on.
    for group in range(parquet.num_row_groups):
        group_end = group_start + parquet.metadata.row_group(group).num_rows
        if group_end > at.offset:
            groups.append(group)
            row_number = group_start if row_number is None else row_number
        group_start = group_end
    if not groups:
        return
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=groups, columns=columns):
        values = {name: batch.column(name).to_pylist() for name in columns}
        for i in range(batch.num_rows):
            if row_number >= at.offset:
                where = f"{source.path} row {row_number}"
                record = _record_from_fields({name: values[name][i] for name in columns}, fields, source,
                                             Position(index, row_number, row_number), where, skip_bad_rows, skipped)
                if record is not None:
                    yield record
            row_number += 1


_READERS = {"text": _read_text, "jsonl": _read_jsonl, "csv": _read_delimited, "tsv": _read_delimited,
            "parquet": _read_parquet}
