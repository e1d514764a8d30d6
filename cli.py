"""The package's command line, and the argument handling of ``hub run``.

::

    python -m bert_cased_L_24_H_1024_A_16 download [--source huggingface|paddlehub|paddlenlp] [--url URL]
                                                   [--dest DIR] [--timeout S] [--retries N] [--allow-pickle] ...
    python -m bert_cased_L_24_H_1024_A_16 convert PATH [--dest DIR] [--config FILE] [--vocab FILE] [--allow-pickle]
    python -m bert_cased_L_24_H_1024_A_16 upgrade [--from DIR] [--dest DIR]   (from an installed 1.x module)
    python -m bert_cased_L_24_H_1024_A_16 info [--dest DIR] [--verify] [--json]
    python -m bert_cased_L_24_H_1024_A_16 run --input_text TEXT ...   (what `hub run` does, without PaddleHub)
    python -m bert_cased_L_24_H_1024_A_16 embed INPUT... --output DIR [--ray [ADDRESS]] ...   (see corpus/cli.py)

    hub run bert_cased_L-24_H-1024_A-16 --input_text "Paris is in France." [--input_text_b "..."]
    hub run bert_cased_L-24_H-1024_A-16 --input_file texts.tsv [--batch_size 8] [--max_seq_len 128]
                                        [--use_gpu] [--output features.npz|.npy|.jsonl]

Expected failures (no weights, a bad checkpoint, a failed download, bad arguments) print one clear message
to stderr and exit non-zero, without a traceback. This file imports nothing heavy at import time.
"""

import argparse
import json
import os
import sys

from . import HUB_NAME

__all__ = ["main", "build_parser", "run_hub_command", "read_input_file", "summarize", "write_features"]

PACKAGE = "bert_cased_L_24_H_1024_A_16"
_ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
OUTPUT_FORMATS = ("npz", "npy", "jsonl")
SUMMARY_LIMIT = 20  # texts summarized on screen; --output holds them all


class CommandError(Exception):
    """An expected failure: printed as one message, exit status ``status``."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


# -- python -m bert_cased_L_24_H_1024_A_16 ----------------------------------------------------------------------

def build_parser():
    from .download import DEFAULT_SOURCE, SOURCES

    parser = argparse.ArgumentParser(
        prog=f"python -m {PACKAGE}",
        description=f"Pretrained weights for the PaddleHub module {HUB_NAME}: download, convert, inspect. "
                    "Weights are installed in $BERT_CASED_L_24_H_1024_A_16_WEIGHTS if set, else in "
                    f"$HUB_HOME/weights/{PACKAGE} (HUB_HOME defaults to ~/.paddlehub), where the module "
                    "finds them.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    download = commands.add_parser(
        "download", help="download the pretrained weights and install them",
        description="Download the pretrained weights and vocabulary, check them, convert and install them "
                    "atomically (an interrupted or rejected download leaves the installed weights as they were; "
                    "an interrupted one resumes when run again). Sources: "
                    + "; ".join(f"{name}: {src.description}" for name, src in SOURCES.items()) + ".")
    download.add_argument("--source", choices=sorted(SOURCES), default=DEFAULT_SOURCE,
                          help=f"where to download from (default: {DEFAULT_SOURCE})")
    download.add_argument("--url", metavar="URL",
                          help="a mirror: base URL that holds the source's files (each fetched as URL/<file "
                               "name>), or, for one-file sources, the file's full URL")
    download.add_argument("--dest", metavar="DIR", help="weights dir to install into (default: see above)")
    download.add_argument("--cache-dir", metavar="DIR",
                          help="where downloads wait until installed (default: <dest>.download)")
    download.add_argument("--config", metavar="FILE",
                          help="bert_config.json for a checkpoint without one (paddlenlp; default: the "
                               "bert-large-cased configuration)")
    download.add_argument("--allow-pickle", action="store_true",
                          help="allow pickle files that can run code (pytorch_model.bin, unusual .pdparams)")
    download.add_argument("--timeout", type=_positive_float, default=30.0, metavar="S",
                          help="seconds to wait for a connection or for data (or to get at least 1 KiB/s) before "
                               "giving up (default: 30)")
    download.add_argument("--retries", type=_non_negative_int, default=3, metavar="N",
                          help="retries after a transient network failure, each resuming (default: 3)")
    download.add_argument("--keep-download", action="store_true",
                          help="keep the downloaded files after installing")
    download.add_argument("--no-progress", action="store_true", help="no progress bar")

    convert = commands.add_parser(
        "convert", help="install weights from local files",
        description="Check and install a checkpoint you have: a 1.x assets folder (with params/), an installed "
                    "1.x module folder, a tar of either or Paddle's release archive cased_L-24_H-1024_A-16.tar.gz, "
                    "a Hugging Face folder (config.json + model.safetensors or "
                    "pytorch_model.bin, vocab.txt), or a PaddleNLP .pdparams file. Installation is atomic.")
    convert.add_argument("path", metavar="PATH", help="the checkpoint folder or file")
    convert.add_argument("--dest", metavar="DIR", help="weights dir to install into (default: see above)")
    convert.add_argument("--config", metavar="FILE",
                         help="bert_config.json for a checkpoint without one; must match one that has one")
    convert.add_argument("--vocab", metavar="FILE", help="vocab.txt to install (default: the checkpoint's, else "
                                                         "the package's)")
    convert.add_argument("--allow-pickle", action="store_true",
                         help="allow pickle files that can run code (pytorch_model.bin, unusual .pdparams)")

    upgrade = commands.add_parser(
        "upgrade", help="upgrade a PaddleHub 1.x install of this module, keeping its weights",
        description="Carry the weights of an installed 1.x module over to the weights folder, then `hub install` "
                    "this package (which removes the 1.x module folder, weights included, first).")
    upgrade.add_argument("--from", dest="module_dir", metavar="DIR",
                         help=f"the installed 1.x module (default: $HUB_HOME/modules/{PACKAGE})")
    upgrade.add_argument("--dest", metavar="DIR", help="weights dir to carry them to (default: see above)")

    info = commands.add_parser("info", help="where the weights are, their source and checks",
                               description="Show the installed weights: folder, source, configuration, checks.")
    info.add_argument("--dest", metavar="DIR", help="weights dir to show (default: the one the module uses)")
    info.add_argument("--verify", action="store_true", help="read every parameter and check it again")
    info.add_argument("--json", action="store_true", help="print the information as JSON")

    run = commands.add_parser("run", add_help=False, help="embed texts, as `hub run` does (see `run --help`)")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    embed = commands.add_parser("embed", add_help=False,
                                help="embed a corpus into a resumable Parquet folder (see `embed --help`)")
    embed.add_argument("argv", nargs=argparse.REMAINDER)
    return parser


def main(argv=None):
    """Runs the command line; returns the exit status (0 on success)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        if argv[:1] == ["run"]:  # everything after `run` is hub run's, --help included
            args = argparse.Namespace(command="run", argv=argv[1:])
        elif argv[:1] == ["embed"]:  # the corpus job has its own parser (corpus/cli.py)
            from .corpus.cli import main as embed_main

            return embed_main(argv[1:])
        else:
            args = parser.parse_args(argv)
    except SystemExit as e:  # --help or a usage error, already printed by argparse
        return e.code if isinstance(e.code, int) else 2
    handlers = {"download": _download, "convert": _convert, "upgrade": _upgrade, "info": _info, "run": _run}
    try:
        return handlers[args.command](args) or 0
    except CommandError as e:
        _error(str(e))
        return e.status
    except KeyboardInterrupt:
        _error("interrupted; installed weights are as they were (a download resumes when run again)")
        return 130
    except SystemExit as e:  # `run`'s argparse
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:
        from .download import DownloadError
        from .weights import PickleRefusedError, WeightsError

        if isinstance(e, PickleRefusedError):
            _error(e.naming("--allow-pickle"))
            return 1
        if isinstance(e, (DownloadError, WeightsError)):
            _error(str(e))
            return 1
        if isinstance(e, OSError):
            _error(f"{type(e).__name__}: {e}")
            return 1
        raise


def _error(message):
    print(f"error: {message}", file=sys.stderr, flush=True)


def _positive_float(value):
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


def _non_negative_int(value):
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value!r}")
    return number


def _read_config(path):
    if not path:
        return None
    from .config import BertConfig

    try:
        return BertConfig.from_json_file(path)
    except (OSError, ValueError, TypeError) as e:
        raise CommandError(f"cannot use --config {path}: {e}") from None


def _download(args):
    from .download import download_and_install

    installed = download_and_install(
        source=args.source, url=args.url, dest_dir=args.dest, cache_dir=args.cache_dir,
        config=_read_config(args.config), allow_pickle=args.allow_pickle, timeout=args.timeout,
        retries=args.retries, keep_download=args.keep_download, progress=False if args.no_progress else None)
    print(f"installed the {args.source} weights in {installed}")
    _hint_env(installed)


def _convert(args):
    from . import weights

    if not os.path.exists(args.path):
        raise CommandError(f"no such file or folder: {args.path}")
    installed = weights.convert(args.path, dest_dir=args.dest, config=_read_config(args.config),
                                allow_pickle=args.allow_pickle, vocab_file=args.vocab)
    print(f"installed the weights from {args.path} in {installed}")
    _hint_env(installed)


def _upgrade(args):
    from .upgrade import upgrade

    try:
        carried = upgrade(module_dir=args.module_dir, dest_dir=args.dest)
    except RuntimeError as e:
        raise CommandError(str(e)) from None
    print(f"upgraded {HUB_NAME}" + (f"; its 1.x weights are in {carried}" if carried else ""))
    if carried:
        _hint_env(carried)


def _hint_env(installed):
    """Says how to make the module use weights installed off the default place."""
    from . import weights

    if os.path.realpath(installed) != os.path.realpath(weights.default_weights_dir()):
        print(f"the module looks in {weights.default_weights_dir()}; to use these, set "
              f"{weights.WEIGHTS_ENV}={installed}")


def _info(args):
    from . import weights

    if args.dest:
        folder = os.path.abspath(os.path.expanduser(args.dest))
        if not weights.is_weights_dir(folder):
            raise CommandError(f"{folder} holds no weights (no params/ folder)")
    else:
        try:
            folder = weights.find_weights(extra_candidates=[_ASSETS_DIR])
        except weights.MissingWeightsError as e:
            raise CommandError(str(e)) from None
    manifest = weights.read_manifest(folder)
    config = weights.read_weights_config(folder)
    verified = None
    if args.verify:
        weights.load_weights(folder)
        vocab = os.path.join(folder, "vocab.txt")
        weights.check_vocab(vocab if os.path.isfile(vocab) else weights.PACKAGE_VOCAB_FILE, config)
        verified = list(weights.checks.CHECKS)
    casing = weights.installed_casing(folder, weights.PACKAGE_VOCAB_FILE)
    used = _module_folder()
    if args.json:
        print(json.dumps({"weights_dir": folder, "used_by_module": used == folder, "manifest": manifest,
                          "config": config.to_dict(), "verified": verified, "do_lower_case": casing.do_lower_case,
                          "casing_told_by": casing.told_by}, indent=2, sort_keys=True))
        return
    lines = [f"weights dir:  {folder}" + ("" if used == folder else f"  (the module uses {used or 'none'})")]
    if manifest is None:
        lines.append("source:       a 1.x assets folder (no manifest: not installed by this package)")
    else:
        source = manifest.get("source") or {}
        what = source.get("format", "?")
        if source.get("source"):
            what = f"{source['source']} download ({what})"
        lines.append(f"source:       {what}, installed {manifest.get('installed_at', '?')}")
        for name, item in (source.get("files") or {}).items():
            lines.append(f"  {name}: {item.get('url')} ({item.get('size')} bytes, sha256 {item.get('sha256')})")
        if source.get("path"):
            lines.append(f"  from {source['path']}")
        if "vocab_from" in source:
            lines.append(f"vocabulary:   from the {source['vocab_from']}; "
                         + ("same as the package's" if source.get("vocab_matches_package") else
                            "DIFFERENT from the package's"))
        if "parameter_count" in manifest:
            lines.append(f"parameters:   {manifest['parameter_count']:,} in {manifest.get('parameter_tensors')} "
                         "tensors")
        lines.append("checks passed at install: " + ", ".join(manifest.get("checks_passed", [])
                                                             + source.get("download_checks", [])))
    lines.append(f"config:       hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
                 f"{config.num_attention_heads} heads, intermediate {config.intermediate_size}, "
                 f"vocab {config.vocab_size}")
    lines.append("tokenizer:    " + ("uncased (lower-cases and strips accents)" if casing.do_lower_case else "cased")
                 + f", told by {casing.told_by}")
    if verified:
        lines.append("verified now: " + ", ".join(verified))
    print("\n".join(lines))


def _module_folder():
    from . import weights

    try:
        return weights.find_weights(extra_candidates=[_ASSETS_DIR])
    except weights.MissingWeightsError:
        return None


def _run(args):
    from .module import BertCasedLarge

    print(run_hub_command(BertCasedLarge(), args.argv))


# -- hub run ----------------------------------------------------------------------------------------------------

def _bool(value):
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _hub_run_parser():
    parser = argparse.ArgumentParser(
        prog=f"hub run {HUB_NAME}",
        description="Sentence (pooled) and token (sequence) features of BERT-Large, cased. Prints a summary per "
                    "text; --output writes all features.")
    inputs = parser.add_argument_group("input (one of)")
    inputs.add_argument("--input_text", metavar="TEXT", help="one text")
    inputs.add_argument("--input_text_b", metavar="TEXT", help="second text of a pair with --input_text")
    inputs.add_argument("--input_file", metavar="FILE",
                        help="UTF-8 file, one sample per line: a text, or a pair as text_a<TAB>text_b; blank lines "
                             "are skipped; '-' reads standard input")
    options = parser.add_argument_group("options")
    options.add_argument("--batch_size", type=_batch_size, default=1, help="samples per batch (default: 1)")
    options.add_argument("--max_seq_len", type=_max_seq_len, default=512,
                         help="tokens per sample with [CLS]/[SEP], 1 to 512; longer input is truncated "
                              "(default: 512)")
    options.add_argument("--use_gpu", type=_bool, nargs="?", const=True, default=False, metavar="BOOL",
                         help="run on the GPU (`--use_gpu` or `--use_gpu True`); without one, the CPU with a warning")
    options.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                         help="bf16: oneDNN bfloat16, faster on CPUs with avx512_bf16/amx_bf16; int8: int8 "
                              "products in the encoder, about 3x faster, features close to fp32 (default: fp32)")
    options.add_argument("--prepacked_weights", type=_bool, nargs="?", const=True, default=False, metavar="BOOL",
                         help="fp32 on the CPU: pack the weights once (1.3-2.5 GB more memory), 7-10%% faster at "
                              "batch size 8 and 23%% at batch size 1")
    options.add_argument("--output", metavar="FILE",
                         help="write all features: .npz (pooled_output [N, hidden], sequence_output [tokens of all "
                              "samples, hidden] split by num_tokens [N], text_a, text_b), .npy (pooled_output "
                              "only) or .jsonl (one JSON object per sample)")
    options.add_argument("--output_format", choices=OUTPUT_FORMATS,
                         help="format of --output when its extension does not say")
    return parser


def _bounded_int(low, high):
    def parse(value):
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {number}")
        return number

    return parse


_batch_size = _bounded_int(1, 4096)
_max_seq_len = _bounded_int(1, 512)


def read_input_file(path):
    """Samples of an input file: one per line, ``text`` or ``text_a<TAB>text_b``; blank lines skipped.

    Raises CommandError naming the line for more than one tab or bad UTF-8.
    """
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8-sig", newline="") as f:
                text = f.read()
        lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]  # only \n, \r\n end lines
    except FileNotFoundError:
        raise CommandError(f"--input_file {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise CommandError(f"--input_file {path} is not UTF-8 text: {e}") from None
    except OSError as e:
        raise CommandError(f"cannot read --input_file {path}: {e}") from None
    samples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) > 2:
            raise CommandError(f"--input_file {path}, line {number}: {len(fields)} tab-separated fields; expected "
                               "a text, or a pair text_a<TAB>text_b")
        samples.append(fields)
    if not samples:
        raise CommandError(f"--input_file {path} has no texts")
    return samples


def _output_format(path, given):
    if given:
        return given
    lowered = path.lower()
    for extension, fmt in ((".npz", "npz"), (".npy", "npy"), (".jsonl", "jsonl"), (".json", "jsonl")):
        if lowered.endswith(extension):
            return fmt
    raise CommandError(f"--output {path}: cannot tell the format from the extension; use .npz, .npy or .jsonl, "
                       "or give --output_format", status=2)


def run_hub_command(module, argvs):
    """``hub run``: parses ``argvs``, embeds the texts with ``module.get_embedding``, writes ``--output`` if
    given, and returns the summary text (PaddleHub prints it).

    Bad arguments and missing weights print one message to stderr and exit (status 2 and 1).
    """
    parser = _hub_run_parser()
    args = parser.parse_args(argvs)
    try:
        if args.input_file is not None and args.input_text is not None:
            raise CommandError("give either --input_text or --input_file, not both", status=2)
        if args.input_text_b is not None and args.input_text is None:
            raise CommandError("--input_text_b needs --input_text (the first text of the pair)", status=2)
        if args.input_file is not None:
            samples = read_input_file(args.input_file)
        elif args.input_text is not None:
            samples = [[args.input_text] + ([args.input_text_b] if args.input_text_b is not None else [])]
        else:
            raise CommandError("no input: give --input_text TEXT or --input_file FILE", status=2)
        fmt = _output_format(args.output, args.output_format) if args.output else None
        from .weights import WeightsError

        try:
            results = module.get_embedding(samples, use_gpu=args.use_gpu, batch_size=args.batch_size,
                                           max_seq_len=args.max_seq_len, **_speed_options(args))
        except WeightsError as e:
            raise CommandError(str(e)) from None
        except ValueError as e:  # e.g. bf16 on a CPU without it; the arguments were checked above
            if args.precision == "fp32":
                raise
            raise CommandError(f"--precision {args.precision}: {e}") from None
        summary = summarize(samples, results)
        if args.output:
            write_features(args.output, fmt, samples, results, module=module, max_seq_len=args.max_seq_len)
            summary += f"\nwrote the features of {len(samples)} sample{'s' * (len(samples) > 1)} to " \
                       f"{os.path.abspath(args.output)} ({fmt})"
        return summary
    except CommandError as e:
        if e.status == 2:
            parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(e.status) from None


def _speed_options(args):
    """get_embedding's ``precision`` and ``prepacked_weights``, each passed only when not the default (so
    older modules, which lack them, still run)."""
    options = {}
    if args.precision != "fp32":
        options["precision"] = args.precision
    if args.prepacked_weights:
        options["prepacked_weights"] = True
    return options


def _quote(text, limit=60):
    shown = text if len(text) <= limit else text[:limit - 3] + "..."
    return json.dumps(shown, ensure_ascii=False)


def summarize(samples, results, limit=SUMMARY_LIMIT):
    """Two lines per sample: the text(s), then token count, sequence shape, pooled norm and first values."""
    import numpy as np

    lines = []
    for i, (sample, (pooled, sequence)) in enumerate(zip(samples, results)):
        if i == limit:
            lines.append(f"... and {len(samples) - limit} more (--output writes all)")
            break
        texts = " | ".join(_quote(text) for text in sample)
        first = ", ".join(f"{v:.4f}" for v in np.asarray(pooled)[:4].tolist())
        lines.append(f"[{i + 1}] {texts}")
        lines.append(f"    tokens: {sequence.shape[0]}  sequence_output: {sequence.shape[0]} x {sequence.shape[1]}"
                     f"  pooled_output: norm {float(np.linalg.norm(pooled)):.4f}, first [{first}, ...]")
    return "\n".join(lines)


def write_features(path, fmt, samples, results, module=None, max_seq_len=512):
    """Writes every feature to ``path`` in ``fmt`` (see the ``--output`` help); written to a temporary file
    first and renamed, so a failed write leaves no half file."""
    import numpy as np

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"--output {path}: folder {folder} does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if fmt == "npy":
                np.save(f, np.stack([np.asarray(pooled, np.float32) for pooled, _ in results]))
            elif fmt == "npz":
                hidden = results[0][0].shape[0]
                np.savez(f,
                         pooled_output=np.stack([np.asarray(p, np.float32) for p, _ in results]),
                         sequence_output=np.concatenate([np.asarray(s, np.float32).reshape(-1, hidden)
                                                         for _, s in results]),
                         num_tokens=np.array([s.shape[0] for _, s in results], np.int64),
                         text_a=np.array([sample[0] for sample in samples], dtype=str),
                         text_b=np.array([sample[1] if len(sample) > 1 else "" for sample in samples], dtype=str))
            else:
                feeder = module.feeder(max_seq_len) if module is not None else None
                for sample, (pooled, sequence) in zip(samples, results):
                    item = {"text_a": sample[0]}
                    if len(sample) > 1:
                        item["text_b"] = sample[1]
                    if feeder is not None:
                        ids = list(feeder.encode(list(sample)).input_ids)
                        item["tokens"] = module.tokenizer.convert_ids_to_tokens(ids)
                    item["num_tokens"] = int(sequence.shape[0])
                    item["pooled_output"] = np.asarray(pooled, np.float32).tolist()
                    item["sequence_output"] = np.asarray(sequence, np.float32).tolist()
                    f.write((json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
