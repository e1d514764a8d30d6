"""The output folder of a corpus job: its identity, its lock, and its Parquet shards, each written atomically.

The folder is a Parquet dataset: ``part-<shard:06d>.parquet`` files, one row per sample (columns
:func:`shard_schema` describes). Beside them, ``_embed.json`` records what made them (model,
weights digest, settings, inputs); pandas, pyarrow and Spark skip names starting with ``_``
or ``.``. A job into a folder made with another identity is refused. A shard is written to
``.part-<shard>.parquet.tmp-*`` and renamed when complete, so a killed job leaves only whole
shards (and temporaries, which the next job removes under its lock).
"""

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import secrets

from .readers import CorpusError

__all__ = ["METADATA_KEY", "IDENTITY_FILE", "claim_output", "finished_shards", "shard_path", "shard_schema",
           "weights_sha256", "ShardWriter"]

#: The Parquet schema metadata key holding a shard's identity (JSON).
METADATA_KEY = b"bert_cased_L_24_H_1024_A_16"
IDENTITY_FILE = "_embed.json"
_LOCK_FILE = ".embed.lock"
_SHARD_NAME = re.compile(r"^part-(\d{6,})\.parquet$")


def shard_path(output_dir, index):
    return os.path.join(output_dir, f"part-{index:06d}.parquet")


def finished_shards(output_dir):
    """Indices of the shards present in ``output_dir`` (only whole shards ever carry the final name)."""
    return {int(m.group(1)) for m in map(_SHARD_NAME.match, os.listdir(output_dir)) if m}


def weights_sha256(weights_dir):
    """sha256 of a weights folder's content: ``bert_config.json``, ``vocab.txt`` and every ``params/`` file
    (names and bytes), so that any change of weights, configuration or vocabulary changes it."""
    from ..weights import file_sha256

    digest = hashlib.sha256()
    params = os.path.join(weights_dir, "params")
    names = ["bert_config.json", "vocab.txt"] + [os.path.join("params", n) for n in sorted(os.listdir(params))]
    for name in names:
        path = os.path.join(weights_dir, name)
        if os.path.isfile(path):
            digest.update(f"{name}\0{file_sha256(path)}\0".encode("utf-8"))
    return digest.hexdigest()


def shard_schema(hidden_size, token_features, identity):
    """The Arrow schema of every shard.

    ``id`` string; ``pooled`` fixed_size_list<float32>[hidden_size]; ``num_tokens`` int32 (with
    ``[CLS]``/``[SEP]``); with ``token_features``, ``token_features``
    list<fixed_size_list<float32>[hidden_size]> (one entry per token). The schema metadata
    ``METADATA_KEY`` holds ``identity`` as JSON.
    """
    import pyarrow as pa

    vector = pa.list_(pa.float32(), hidden_size)
    fields = [pa.field("id", pa.string(), nullable=False), pa.field("pooled", vector, nullable=False),
              pa.field("num_tokens", pa.int32(), nullable=False)]
    if token_features:
        fields.append(pa.field("token_features", pa.list_(vector), nullable=False))
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(identity, sort_keys=True).encode("utf-8")})


class ShardWriter:
    """Writes one shard: row groups go to a temporary file, :meth:`commit` renames it to ``path``.

    Used as a context manager; leaving it without :meth:`commit` (an error) removes the temporary.
    """

    def __init__(self, path, schema):
        import pyarrow.parquet as pq

        self.path, self.schema = path, schema
        folder, name = os.path.split(path)
        self._tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        self.rows = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._tmp)

    def write(self, ids, pooled, num_tokens, token_features=None):
        """Appends a row group. ``pooled``: float32 ``[n, hidden]``; ``num_tokens``: ``[n]``;
        ``token_features``: float32 ``[sum(num_tokens), hidden]`` (when the schema has the column)."""
        import numpy as np
        import pyarrow as pa

        hidden = pooled.shape[1]
        columns = [pa.array(ids, pa.string()),
                   pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(pooled, np.float32).ravel()), hidden),
                   pa.array(np.asarray(num_tokens, np.int32))]
        if "token_features" in self.schema.names:
            offsets = np.concatenate([[0], np.cumsum(num_tokens)]).astype(np.int32)
            tokens = pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(token_features, np.float32).ravel()), hidden)
            columns.append(pa.ListArray.from_arrays(pa.array(offsets), tokens))
        self._writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))
        self.rows += len(ids)

    def commit(self):
        """Closes the file, flushes it to disk and gives it its final name."""
        self._writer.close()
        self._writer = None
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)


@contextlib.contextmanager
def claim_output(output_dir, identity):
    """Makes ``output_dir`` this job's, for the ``with`` block: creates it or checks it is this job's.

    An existing folder must be empty or hold an ``_embed.json`` equal to ``identity``; otherwise
    CorpusError lists the differences. Holds an exclusive lock (a second job into the same folder is
    refused) and removes temporaries left by killed jobs. Raises CorpusError when it cannot write.
    """
    try:
        os.makedirs(output_dir, exist_ok=True)
        lock = open(os.path.join(output_dir, _LOCK_FILE), "a+")
    except OSError as e:
        raise CorpusError(f"cannot write to --output {output_dir}: {e.strerror or e}; choose a folder you can "
                          "write to") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CorpusError(f"another embed job is writing to {output_dir}; wait for it or choose another "
                              "--output") from None
        _check_identity(output_dir, identity)
        for leftover in glob.glob(os.path.join(glob.escape(output_dir), ".part-*.tmp-*")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)
        yield


def _check_identity(output_dir, identity):
    path = os.path.join(output_dir, IDENTITY_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
    except FileNotFoundError:
        others = [name for name in os.listdir(output_dir) if name != _LOCK_FILE]
        if others:
            raise CorpusError(f"--output {output_dir} already holds files ({', '.join(sorted(others)[:3])}, ...) "
                              f"but no {IDENTITY_FILE}: it was not made by embed; choose an empty or new "
                              "folder") from None
        _write_json_atomically(path, identity)
        return
    except (OSError, ValueError) as e:
        raise CorpusError(f"cannot read {path}: {e}; delete the folder to start over") from None
    if recorded != identity:
        differences = [f"{key}: {_short(recorded.get(key))} there, {_short(identity.get(key))} now"
                       for key in sorted(set(recorded) | set(identity)) if recorded.get(key) != identity.get(key)]
        raise CorpusError(f"--output {output_dir} holds embeddings made with other weights or settings ("
                          + "; ".join(differences) + "); refusing to mix them: choose another --output, or delete "
                          "the folder to start over")


def _short(value):
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _write_json_atomically(path, value):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise CorpusError(f"cannot write {path}: {e.strerror or e}") from None
