"""One shard: its records through the embedder into a Parquet file. Shared by the local and the Ray runner."""

import collections
import os
import typing

import numpy as np

from .output import ShardWriter, shard_path, shard_schema
from .plan import read_shard
from .readers import CorpusError

__all__ = ["POOLINGS", "Job", "build_embedder", "embed_shard"]

#: ``pooler``: BERT's pooler output ``tanh(Wp·h[CLS] + bp)`` (get_embedding's pooled feature);
#: ``cls``: the last layer at ``[CLS]``; ``mean``: the mean of the last layer over the real tokens.
POOLINGS = ("pooler", "cls", "mean")


class Job(typing.NamedTuple):
    """Everything a worker needs to compute any shard of a job (picklable, for Ray)."""

    sources: list  # [readers.Source]
    fields: tuple  # readers.Fields
    skip_bad_rows: bool
    output_dir: str
    identity: dict  # what output.claim_output checked; recorded in each shard
    weights_dir: str
    cache_dir: str  # the inference-model cache (embedding.default_cache_dir() of the caller)
    batch_size: int
    max_seq_len: int
    precision: str
    pooling: str
    token_features: bool
    chunk_size: int  # samples sorted and run together, and rows per Parquet row group


def build_embedder(job, num_threads=None):
    """An :class:`.embedding.Embedder` of ``job``'s weights with ``num_threads`` math threads (default: all CPUs)."""
    from ..embedding import Embedder
    from ..tokenizer import BertTokenizer
    from ..weights import PACKAGE_VOCAB_FILE, read_weights_config

    vocab = os.path.join(job.weights_dir, "vocab.txt")
    tokenizer = BertTokenizer(vocab if os.path.isfile(vocab) else PACKAGE_VOCAB_FILE, do_lower_case=False)
    return Embedder(read_weights_config(job.weights_dir), tokenizer, job.weights_dir, cache_dir=job.cache_dir,
                    num_threads=num_threads)


def _pool(pooled, sequence, pooling):
    if pooling == "pooler":
        return pooled
    if pooling == "cls":
        return sequence[0]
    return sequence.mean(axis=0, dtype=np.float32)


def embed_shard(embedder, job, shard, progress=None):
    """Computes ``shard`` and writes it atomically to its final path; returns its row count.

    ``progress(n)`` is called after every ``n`` rows written.
    """
    ids = collections.deque()

    def samples():
        for record in read_shard(job.sources, job.fields, shard, job.skip_bad_rows):
            ids.append(record.id)
            yield list(record.sample)

    results = embedder.iter_embed(samples(), batch_size=job.batch_size, max_seq_len=job.max_seq_len,
                                  precision=job.precision, show_progress=False, chunk_size=job.chunk_size)
    schema = shard_schema(embedder.config.hidden_size, job.token_features, dict(job.identity, shard=shard.index))
    with ShardWriter(shard_path(job.output_dir, shard.index), schema) as writer:
        group = []
        for pooled, sequence in results:
            group.append((ids.popleft(), _pool(pooled, sequence, job.pooling), sequence))
            if len(group) == job.chunk_size:
                _write_group(writer, group, job.token_features, progress)
                group = []
        if group:
            _write_group(writer, group, job.token_features, progress)
        if writer.rows != shard.rows:
            raise CorpusError(f"shard {shard.index}: {writer.rows} rows read, {shard.rows} planned: the inputs "
                              "changed while the job ran; restore them, or start over in a new --output")
        writer.commit()
    return writer.rows


def _write_group(writer, group, token_features, progress):
    """Writes ``[(id, pooled vector, token features)]`` as one row group."""
    sequences = [row[2] for row in group]
    writer.write([row[0] for row in group], np.stack([row[1] for row in group]), [s.shape[0] for s in sequences],
                 np.concatenate(sequences) if token_features else None)
    if progress:
        progress(len(group))
