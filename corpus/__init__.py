"""Embedding a corpus: files in, a resumable, sharded Parquet folder out, on one machine or on Ray Data.

``embed_corpus(inputs, output_dir, ...)`` (see :mod:`.job`) and the ``embed`` command (:mod:`.cli`).
One module, one job: :mod:`.readers` (input files -> records), :mod:`.plan` (records -> shards),
:mod:`.output` (the folder: identity, lock, atomic Parquet shards), :mod:`.shard` (one shard through
the embedder), :mod:`.ray_runner` (shards on a Ray actor pool), :mod:`.job` (the whole job).
"""

from .job import EmbedReport, embed_corpus
from .readers import CorpusError

__all__ = ["CorpusError", "EmbedReport", "embed_corpus"]
