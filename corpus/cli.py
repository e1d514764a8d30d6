"""``python -m bert_cased_L_24_H_1024_A_16 embed INPUT... --output DIR``: the command line of a corpus job."""

import argparse
import sys

from ..cli import _batch_size, _bounded_int, _max_seq_len
from .readers import FORMATS, CorpusError

__all__ = ["build_parser", "main"]

_positive_int = _bounded_int(1, 2**31 - 1)


def build_parser(prog="python -m bert_cased_L_24_H_1024_A_16 embed"):
    from .shard import POOLINGS

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Embed a corpus into a Parquet folder, one row per sample (id, pooled, num_tokens[, "
                    "token_features]), in shards written atomically. Run the same command again after an "
                    "interruption: finished shards are skipped. A folder made with other weights or settings "
                    "is refused.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="files or globs: .txt (one text per line, text_a<TAB>text_b for a pair), .jsonl, "
                             ".csv, .tsv, .parquet")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="the Parquet folder to write")
    source = parser.add_argument_group("input")
    source.add_argument("--input-format", choices=FORMATS, help="format of every input (default: by extension)")
    source.add_argument("--text-field", default="text", metavar="NAME",
                        help="JSONL key or CSV/TSV/Parquet column of the text (default: text)")
    source.add_argument("--text-b-field", metavar="NAME", help="... of the second text of a pair")
    source.add_argument("--id-field", metavar="NAME",
                        help="... of the sample id (default: <file>:<line>, for Parquet <file>:<row index>)")
    source.add_argument("--skip-bad-rows", action="store_true",
                        help="leave out rows that cannot be read (bad UTF-8, not an object, missing or null "
                             "field), counting them in the report, instead of stopping at the first")
    model = parser.add_argument_group("model")
    model.add_argument("--weights", metavar="DIR", help="weights folder (default: the one the module uses)")
    model.add_argument("--batch-size", type=_batch_size, default=8, help="samples per forward pass (default: 8)")
    model.add_argument("--max-seq-len", type=_max_seq_len, default=512,
                       help="tokens per sample with [CLS]/[SEP], 1 to 512; longer input is truncated (default: 512)")
    model.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                       help="bf16: oneDNN bfloat16 on CPUs with avx512_bf16/amx_bf16, ~1.8x faster; int8: int8 "
                            "products in the encoder, about 3x faster, features close to fp32 (default: fp32)")
    model.add_argument("--pooling", choices=POOLINGS, default="pooler",
                       help="the pooled column: BERT's pooler output (as get_embedding), the last layer at [CLS], "
                            "or its mean over the tokens (default: pooler)")
    model.add_argument("--token-features", action="store_true",
                       help="also write each sample's last-layer features (num_tokens x 1024 floats: large)")
    job = parser.add_argument_group("job")
    job.add_argument("--shard-size", type=_positive_int, default=10000, metavar="N",
                     help="rows per output file; the unit of work and of resumption (default: 10000)")
    job.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="compute on Ray Data: a new local cluster, or the cluster at ADDRESS (auto, "
                          "ray://host:10001); needs the ray extra")
    job.add_argument("--actors", type=_positive_int, default=2, metavar="N",
                     help="with --ray: actors in the pool, each with one predictor (default: 2)")
    job.add_argument("--cpus-per-actor", type=_positive_int, metavar="N",
                     help="with --ray: CPUs (math threads) per actor (default: the cluster's CPUs / actors)")
    job.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv, prog=None):
    """Runs ``embed`` with ``argv``; returns the exit status. Expected failures print one line to stderr."""
    parser = build_parser(**({"prog": prog} if prog else {}))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    from .job import embed_corpus
    from ..weights import WeightsError

    try:
        report = embed_corpus(
            args.inputs, args.output, input_format=args.input_format, text_field=args.text_field,
            text_b_field=args.text_b_field, id_field=args.id_field, shard_size=args.shard_size,
            batch_size=args.batch_size, max_seq_len=args.max_seq_len, precision=args.precision,
            pooling=args.pooling, token_features=args.token_features, skip_bad_rows=args.skip_bad_rows,
            weights_dir=args.weights, ray=args.ray is not None,
            ray_address=None if args.ray in (None, "local") else args.ray, actors=args.actors,
            cpus_per_actor=args.cpus_per_actor, progress=False if args.no_progress else None)
    except (CorpusError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except OSError as e:  # e.g. the disk filling up: the shards written so far are whole
        print(f"error: {type(e).__name__}: {e}; the shards written so far are whole, run the same command again "
              "once it is fixed", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; the shards written so far are whole, run the same command again to go on",
              file=sys.stderr, flush=True)
        return 130
    print(report.summary(), flush=True)
    return 0
