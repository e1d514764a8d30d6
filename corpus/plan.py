"""The shard plan: which records each shard of a corpus holds, found in one streaming pass.

Shard ``k`` holds records ``k*shard_size`` to ``(k+1)*shard_size - 1`` of the inputs, in input
order, so the same inputs and shard size always give the same shards. The pass reads and checks
every row (bad input is reported before anything is computed) and keeps only each shard's
starting :class:`.readers.Position`, so memory does not grow with the corpus.
"""

import itertools
import typing

from .readers import CorpusError, Position, SkipCounter, iter_records

__all__ = ["Shard", "plan_shards", "read_shard"]


class Shard(typing.NamedTuple):
    """Shard ``index``: ``rows`` records from ``start`` on."""

    index: int
    start: Position
    rows: int


def plan_shards(sources, fields, shard_size, skip_bad_rows=False):
    """``(shards, skipped)``: the :class:`Shard` list of ``sources`` and the :class:`SkipCounter` of rows left out.

    Raises CorpusError for bad rows (unless ``skip_bad_rows``) and for inputs without samples.
    """
    skipped = SkipCounter()
    shards = []
    start, rows = None, 0
    for record in iter_records(sources, fields, skip_bad_rows=skip_bad_rows, skipped=skipped):
        if start is None:
            start = record.position
        rows += 1
        if rows == shard_size:
            shards.append(Shard(len(shards), start, rows))
            start, rows = None, 0
    if rows:
        shards.append(Shard(len(shards), start, rows))
    if not shards:
        raise CorpusError("the inputs hold no samples" + (" once bad rows are left out" if skipped.total() else ""))
    return shards, skipped


def read_shard(sources, fields, shard, skip_bad_rows=False):
    """The :class:`.readers.Record` s of ``shard``, read from its start position."""
    records = iter_records(sources, fields, start=shard.start, skip_bad_rows=skip_bad_rows)
    return itertools.islice(records, shard.rows)
