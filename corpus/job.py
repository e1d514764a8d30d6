"""``embed_corpus``: a corpus job from inputs to a finished Parquet folder, locally or on Ray.

The steps: expand the inputs, read them once to plan the shards (checking every row), claim the
output folder (same identity or refused), then compute the shards not yet there, locally one
after another or on a Ray actor pool.
"""

import os
import time
import typing

from .output import claim_output, finished_shards, weights_sha256
from .plan import plan_shards
from .ray_runner import connect, require_ray, run_on_ray
from .readers import CorpusError, Fields, expand_inputs
from .shard import POOLINGS, Job, build_embedder, embed_shard

__all__ = ["EmbedReport", "embed_corpus"]

#: Samples sorted by length and run together (and rows per Parquet row group): large enough that sorting
#: pads little, small enough that the progress bar moves every few seconds on BERT-Large.
CHUNK_SIZE = 256


class EmbedReport(typing.NamedTuple):
    """What a job did: shards and rows computed now and found finished, rows left out by reason, wall time."""

    output_dir: str
    shards_total: int
    shards_written: int
    shards_skipped: int  # found finished from an earlier run
    rows_total: int
    rows_written: int
    rows_left_out: dict  # {reason: count} (blank lines; bad rows with skip_bad_rows)
    seconds: float
    ray_actors: dict  # {"host:pid": math threads} of the Ray actors that computed shards ({}: computed locally)

    def summary(self):
        lines = [f"wrote {self.shards_written} shard(s), {self.rows_written} rows, to {self.output_dir} in "
                 f"{self.seconds:.1f} s ({self.rows_written / max(self.seconds, 1e-9):.2f} texts/s)",
                 f"skipped {self.shards_skipped} of {self.shards_total} shard(s), already finished"]
        if self.ray_actors:
            threads = sorted(set(self.ray_actors.values()))
            lines.append(f"on Ray: {len(self.ray_actors)} actor(s) x {'/'.join(map(str, threads))} thread(s) "
                         "computed the shards")
        lines += [f"left out {count} {reason}" for reason, count in sorted(self.rows_left_out.items())]
        return "\n".join(lines)


def _check_choice(name, value, choices):
    if value not in choices:
        raise CorpusError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def embed_corpus(inputs, output_dir, *, input_format=None, text_field="text", text_b_field=None, id_field=None,
                 shard_size=10000, batch_size=8, max_seq_len=512, precision="fp32", pooling="pooler",
                 token_features=False, skip_bad_rows=False, weights_dir=None, ray=False, ray_address=None,
                 actors=2, cpus_per_actor=None, progress=None):
    """Embeds every sample of ``inputs`` (paths or globs) into the Parquet folder ``output_dir``; returns an
    :class:`EmbedReport`. Rerunning the same call computes only the shards not yet written.

    Inputs and fields: see :mod:`.readers`. ``pooling``: what the ``pooled`` column holds (see
    :data:`.shard.POOLINGS`). ``token_features`` adds each sample's last-layer features. ``ray``: compute on
    Ray (``ray_address`` None starts a local cluster) with ``actors`` actors of ``cpus_per_actor`` CPUs each.
    ``progress``: None shows a bar on a terminal; True/False force it. Raises CorpusError for bad input, an
    output folder of another job, or an unwritable output.
    """
    from ..feeder import check_int
    from ..embedding import PRECISIONS, cpu_supports_bf16, default_cache_dir
    from ..weights import find_weights, read_weights_config

    started = time.monotonic()
    for name, value, low, high in (("shard_size", shard_size, 1, None), ("batch_size", batch_size, 1, 4096),
                                   ("max_seq_len", max_seq_len, 2, 512), ("actors", actors, 1, None)):
        try:
            check_int(name, value, low, high)
        except ValueError as e:
            raise CorpusError(str(e)) from None
    _check_choice("precision", precision, PRECISIONS)
    if precision == "bf16" and not cpu_supports_bf16():
        raise CorpusError("precision bf16 needs a CPU with avx512_bf16 or amx_bf16 and a Paddle build with "
                          "oneDNN; this machine lacks them: use fp32")
    if ray:
        require_ray()  # Before reading the inputs, which may take long.
    _check_choice("pooling", pooling, POOLINGS)
    sources = expand_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(i) for i in inputs],
                            input_format)
    fields = Fields(text_field, text_b_field, id_field)
    weights_dir = os.path.abspath(weights_dir) if weights_dir else find_weights()
    config = read_weights_config(weights_dir)
    from .. import HUB_NAME, __version__

    identity = {
        "model": f"{HUB_NAME} {__version__}",
        "weights_sha256": weights_sha256(weights_dir),
        "hidden_size": config.hidden_size,
        "max_seq_len": min(max_seq_len, config.max_position_embeddings),
        "precision": precision,
        "pooling": pooling,
        "token_features": bool(token_features),
        "shard_size": shard_size,
        "fields": fields._asdict(),
        "skip_bad_rows": bool(skip_bad_rows),
        "inputs": [_describe_input(source) for source in sources],
    }
    shards, skipped = plan_shards(sources, fields, shard_size, skip_bad_rows)
    output_dir = os.path.abspath(os.fspath(output_dir))
    job = Job(sources, fields, bool(skip_bad_rows), output_dir, identity, weights_dir, default_cache_dir(),
              batch_size, max_seq_len, precision, pooling, bool(token_features), min(CHUNK_SIZE, shard_size))
    with claim_output(output_dir, identity):
        done = finished_shards(output_dir)
        todo = [shard for shard in shards if shard.index not in done]
        bar = _progress_bar(progress, sum(shard.rows for shard in todo))
        per_actor = {}
        try:
            update = bar.update if bar else None
            if ray and todo:
                connect(ray_address)
                per_actor = run_on_ray(job, todo, actors, cpus_per_actor, update)
            elif todo:
                embedder = build_embedder(job)
                for shard in todo:
                    embed_shard(embedder, job, shard, update)
        finally:
            if bar:
                bar.close()
    return EmbedReport(output_dir, len(shards), len(todo), len(shards) - len(todo),
                       sum(shard.rows for shard in shards), sum(shard.rows for shard in todo), dict(skipped.counts),
                       time.monotonic() - started, per_actor)


def _describe_input(source):
    """An input as the identity records it: what tells a changed or other file from the one first embedded."""
    stat = os.stat(source.path)
    return {"path": os.path.abspath(source.path), "as_given": source.path, "format": source.fmt,
            "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _progress_bar(progress, total):
    import sys

    if progress is None:
        progress = getattr(sys.stderr, "isatty", lambda: False)() and total > 0
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="texts", desc="embedding", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
