"""get_embedding against the fastest CPU peers on the same weights and texts, and against the GEMM peak.

Run from a clone of the repository, with an environment that has paddlepaddle, torch, transformers and
onnxruntime (``pip install -e .[test]``)::

    python bench/bench_embedding.py                 # full-size BERT-Large, both mixes: long on 2 cores
    python bench/bench_embedding.py --quick         # a tiny model, seconds: checks the plumbing
    python bench/bench_embedding.py --mixes short --json out.json

What it does, in one process:

1. Measures this machine's fp32 GEMM rate with numpy (a 4096^3 float32 matmul, best of several, in a
   child process with the same thread count). ``OPENBLAS_CORETYPE`` can pin OpenBLAS to older kernels
   (``Haswell``: AVX2 only); when it is set the probe also runs without it, and the higher figure is
   taken as the peak, so the share below is never flattered by a slowed-down probe.
2. Makes one random-init BERT-Large (Hugging Face ``BertModel``, ``torch.manual_seed``), installs the same
   weights as this module's weights folder, and loads it with this module (``get_embedding``).
3. Makes the text mixes (``--mixes``), each ``--num-texts`` deterministic English sentences, measured
   separately: ``short``, 16 to 25 words (about 25 tokens on average), and ``medium``, 76 to 104 words
   (about 100 tokens).
4. Runs every runner on every mix, at the same batch size and thread count, one runner at a time (each
   is freed before the next; RSS is reported after each row):
   - ours: ``get_embedding(texts, batch_size=B)`` fp32 (Paddle Inference + oneDNN), the same with
     ``prepacked_weights=True``, ``precision="bf16"`` (on CPUs with avx512_bf16/amx_bf16), and
     ``precision="int8"``;
   - torch: the ``BertModel`` under ``torch.inference_mode()`` in fp32; bf16 both under
     ``torch.autocast("cpu", dtype=torch.bfloat16)`` and as a bf16 model (``model.bfloat16()``), the
     faster of the two being the bf16 reference;
   - ONNX Runtime: the same model exported, fused by ORT's BERT optimizer (fp32), and quantized with
     ``quantize_dynamic`` (int8, QInt8 weights, per-tensor scales as ORT's BERT helper runs it;
     ``--ort-per-channel`` for per-channel). See peers.py for the export and the sessions.
   Every runner sorts the texts by token count, pads each batch to its own longest sample and puts
   the results back in input order, as ``get_embedding`` does; tokenization (the peers: Hugging Face
   ``BertTokenizerFast``) and copying each output row out, cut to its real tokens, are inside every
   timing. Before each timed run a warm-up on ``2 * B`` texts builds the predictor / kernels.
5. Prints, per mix, a table (seconds, texts/s, real tokens/s, real-token FLOP rate, its share of the
   GEMM peak, RSS), each runner's rate against oneDNN's GEMM at the mix's batch shape (fp32 for fp32
   runners, bf16 for bf16 ones: the products alone, the most any runner can reach), how closely each
   runner's features agree with its fp32 reference, and a GOALS block: the speed ratios and agreement
   bounds of issue #13, each with its goal and PASS or how far short it is, and for each speed goal
   the share of that GEMM rate it would take (over 100 %: out of reach on this CPU). Random weights hide most quantization error (their activations have no outliers),
   so the int8 cosines here are an upper bound on trained weights'.

Real-token FLOPs of a sample with ``n`` tokens (``[CLS]``/``[SEP]`` included), ``L`` layers, hidden ``h``,
feed-forward ``f``: ``L * (2*n*(4*h*h + 2*h*f) + 4*n*n*h) + 2*h*h`` -- the four attention projections and
the two feed-forward matrices (2 FLOPs a multiply-add), the two attention products over the sample's own
``n`` tokens, and the pooler. Padding, embeddings, layer norms, softmax, GELU and biases are not counted,
so the rate is of useful work only. BERT-Large: about 0.60 GFLOP per token at ``n = 100``. For int8
rows the same count is divided by the fp32 peak, so their share can pass 100 %.

The timings are wall-clock over the whole job; CPU time used by other processes during each one is
reported, and a run during which they used more than ``--max-foreign`` of the CPUs is repeated.
"""

import argparse
import gc
import importlib.util
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peers  # noqa: E402
from machine import CpuWatch, gemm_peak, onednn_gemm_rates, rss_gb  # noqa: E402  (rss_gb: bench_finetune imports it from here)

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "bert_cased_L_24_H_1024_A_16"

# -- the package under test: this clone, whatever is installed --------------------------------------


def import_package():
    """Imports this clone as ``bert_cased_L_24_H_1024_A_16`` (the repository root is the package)."""
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None and pathlib.Path(loaded.__file__).resolve().parent == ROOT:
        return loaded
    spec = importlib.util.spec_from_file_location(PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


# -- sentences ----------------------------------------------------------------------------------------

_CLAUSES = [
    "The committee met on Tuesday to review the budget for the coming year",
    "although several members asked for more time to read the report",
    "Rain is expected across the northern valleys by late afternoon",
    "She opened the old notebook and found a list of names she did not recognize",
    "the train to Edinburgh was delayed by almost forty minutes",
    "Researchers at the university published their findings in a peer-reviewed journal",
    "which suggests that the effect is smaller than first reported",
    "He replaced the battery, tightened the screws, and switched the radio back on",
    "Prices for fresh vegetables rose sharply after the early frost",
    "because the bridge was closed for repairs until the end of March",
    "The museum's new wing houses paintings from the seventeenth century",
    "Our neighbours adopted a small grey cat from the shelter last spring",
    "and the children named it after a character in their favourite book",
    "Engineers tested the prototype under extreme heat and humidity",
    "The recipe calls for two cups of flour, a pinch of salt, and three eggs",
    "while the orchestra tuned their instruments, the audience slowly found their seats",
    "Local farmers say the harvest was the best they have seen in a decade",
    "The software update fixes a bug that caused the app to crash on startup",
    "Dr. Alvarez explained the results to the patients in plain language",
    "If the weather holds, the climbers will reach the summit on Friday",
    "The library extended its opening hours during the examination period",
    "a decision welcomed by students who work during the day",
    "Shipping costs have doubled since the start of the year",
    "The river flooded the lower fields, but the village itself stayed dry",
    "Nobody expected the underdog team to win the championship",
    "The city council approved plans for a new cycling path along the canal",
    "Her first novel, written over seven years, was shortlisted for a major prize",
    "Volunteers collected more than two tons of litter from the beach",
    "The old lighthouse has been converted into a small hotel",
    "Analysts warned that the market could remain volatile for months",
    "so investors should be careful about making sudden decisions",
    "He learned to speak Portuguese while working in Lisbon in the 1990s",
    "The bakery on the corner sells out of croissants before nine o'clock",
    "Scientists observed the comet with telescopes in Chile and Hawaii",
    "The negotiations broke down late on Sunday night",
    "after neither side would accept the proposed compromise",
    "Our flight was cancelled, so we spent the night at the airport",
    "The garden was full of roses, lavender, and tall sunflowers",
    "Teachers reported that attendance improved after the new schedule was introduced",
    "The documentary follows three families over the course of a single year",
]


def make_texts(count, seed=0, min_words=2, max_words=100):
    """``count`` English sentences of ``min_words``..``max_words`` words (uniform), the same for a seed."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        target = int(rng.integers(min_words, max_words + 1))
        words = []
        while len(words) < target:
            words.extend(_CLAUSES[int(rng.integers(len(_CLAUSES)))].split())
        text = " ".join(words[:target]).rstrip(",")
        texts.append(text[0].upper() + text[1:] + ".")
    return texts


# Text mixes: (min_words, max_words) for make_texts; about 25 and 100 tokens on average.
MIXES = {"short": (16, 25), "medium": (76, 104)}


# -- counting -----------------------------------------------------------------------------------------


def sample_flops(n_tokens, config):
    """Real-token FLOPs of one sample (see the module docstring)."""
    n = np.asarray(n_tokens, dtype=np.float64)
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return layers * (2.0 * n * (4 * h * h + 2 * h * f) + 4.0 * n * n * h) + 2.0 * h * h


# -- comparing ----------------------------------------------------------------------------------------


def cosines(results, reference):
    """Per-sample cosine of pooled features, and of token features (flattened), against ``reference``, and
    the largest absolute difference of token features."""
    assert all(r[1].shape == q[1].shape for r, q in zip(results, reference)), "token counts differ between runners"

    def cos(a, b):
        a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))

    pooled = np.array([cos(r[0], q[0]) for r, q in zip(results, reference)])
    tokens = np.array([cos(r[1], q[1]) for r, q in zip(results, reference)])
    max_abs = max(float(np.abs(r[1] - q[1]).max()) for r, q in zip(results, reference))
    return pooled, tokens, max_abs


def goals(rows, ceiling):
    """The issue's goals that this mix's rows can check: ``[{goal, value, target, higher, status}]``.

    ``ceiling``: oneDNN's GEMM rates at this mix's shapes (``machine.onednn_gemm_rates``). For each speed
    goal against a peer, a ``ceiling`` entry says what share of that rate ours would need for the goal:
    the peer's share times the goal. Above 100 % the goal is out of reach of any implementation whose
    products run on these GEMMs, whatever else it fuses."""
    by_name = {row["runner"]: row for row in rows}
    out = []

    def add(label, value, target, higher=True, missing="not measured"):
        if value is None:
            status = missing
        elif target is None:
            status = "(no goal: for reference)"
        elif (value >= target) if higher else (value <= target):
            status = "PASS"
        elif label.startswith("speed"):
            status = f"short by {target - value:.2f}x"
        else:
            status = f"short by {abs(target - value):.2g}"
        out.append({"goal": label, "value": value, "target": target, "higher": higher, "status": status})

    def speed(ours, theirs):
        return by_name[ours]["texts_per_s"] / theirs["texts_per_s"] if ours in by_name and theirs else None

    def agreement(name, key):
        return by_name[name][key] if name in by_name else None

    ort_fp32, ort_int8 = by_name.get("ORT fp32 fused"), by_name.get("ORT int8")
    torch_bf16 = max((by_name[n] for n in ("torch bf16 autocast", "torch bf16 weights") if n in by_name),
                     key=lambda row: row["texts_per_s"], default=None)
    best = f" ({torch_bf16['runner']})" if torch_bf16 else ""
    add("speed: ours fp32 / ORT fp32 fused", speed("ours fp32", ort_fp32), 1.1)
    add("speed: ours fp32 prepacked / ORT fp32 fused", speed("ours fp32 prepacked", ort_fp32), 1.1)
    add(f"speed: ours bf16 / best torch bf16{best}", speed("ours bf16", torch_bf16), 1.3,
        missing="not measured (no avx512_bf16/amx_bf16, or --skip-bf16)")
    add("speed: ours int8 / ORT int8", speed("ours int8", ort_int8), 1.0,
        missing="not measured")
    for label, peer, target, precision in (("fp32 / ORT fp32 fused", ort_fp32, 1.1, "fp32"),
                                           ("bf16 / best torch bf16", torch_bf16, 1.3, "bf16")):
        rate = ceiling.get(precision)
        needed = peer["gflops"] / rate * target if peer and rate else None
        add(f"ceiling: share of oneDNN {precision} GEMM that ours {label} >= {target}x needs", needed, None,
            missing="not measured")
    add("agree: ours fp32 vs torch fp32, token features max |diff|", agreement("torch fp32", "max_abs_diff"),
        1e-4, higher=False)
    add("agree: ours fp32 vs torch fp32, pooled cosine (min)", agreement("torch fp32", "pooled_cos_min"), None)
    add("agree: ours bf16 vs ours fp32, pooled cosine (min)", agreement("ours bf16", "pooled_cos_min"), 0.999)
    add("agree: ORT int8 vs ORT fp32, pooled cosine (min)", agreement("ORT int8", "pooled_cos_min"), 0.998)
    add("agree: ours int8 vs ours fp32, pooled cosine (min)", agreement("ours int8", "pooled_cos_min"), 0.998)
    return out


def print_mix(mix, data, config, args, threads, peak, probes):
    rows, lengths = data["rows"], data["lengths"]
    lo, hi = MIXES[mix]
    print(f"\n== mix {mix}: {len(lengths)} texts of {lo}-{hi} words, {lengths.sum()} real tokens (mean "
          f"{lengths.mean():.1f}, min {lengths.min()}, max {lengths.max()}); BERT ({config.num_hidden_layers} "
          f"layers, hidden {config.hidden_size}), batch size {args.batch_size}, {threads} threads, "
          f"fp32 GEMM peak {peak:.0f} GFLOP/s")
    header = f"| {'runner':<19} | {'s':>6} | {'texts/s':>8} | {'tokens/s':>9} | {'GFLOP/s':>8} | {'% peak':>6} | " \
             f"{'RSS GB':>6} | {'others':>6} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for row in rows:
        print(f"| {row['runner']:<19} | {row['seconds']:>6.2f} | {row['texts_per_s']:>8.2f} | "
              f"{row['tokens_per_s']:>9.0f} | {row['gflops']:>8.0f} | {row['peak_share']:>6.0%} | "
              f"{row['rss_gb']:>6.2f} | {row['foreign_cpu']:>6.0%} |")
    print("(% peak: real-token FLOP rate / fp32 GEMM peak; RSS after the row; others: CPU used by other "
          "processes meanwhile)")
    for probe, what in probes:
        if probe != peak:
            shares = ", ".join(f"{row['runner']} {row['gflops'] / probe:.0%}" for row in rows)
            print(f"against numpy with {what} ({probe:.0f} GFLOP/s) instead: {shares}")
    ceiling = data["ceiling"]
    shares = ", ".join(f"{row['runner']} {row['gflops'] / ceiling[kind]:.0%}" for row in rows
                       for kind in ["bf16" if "bf16" in row["runner"] else "fp32"]
                       if "int8" not in row["runner"] and ceiling.get(kind))
    print(f"against oneDNN's GEMM at {ceiling['rows']} rows (fp32 {ceiling['fp32']:.0f}, bf16 "
          f"{ceiling['bf16'] or float('nan'):.0f} GFLOP/s; the ceiling of the dense products): {shares}")
    for row in rows:
        if row.get("vs"):
            print(f"{row['runner']} vs {row['vs']}: cosine pooled min {row['pooled_cos_min']:.6f} mean "
                  f"{row['pooled_cos_mean']:.6f}; tokens min {row['token_cos_min']:.6f}; "
                  f"max |diff| {row['max_abs_diff']:.2g}")
    print(f"GOALS ({mix}):")
    for goal in data["goals"]:
        speed = goal["goal"].startswith("speed")
        value = "-" if goal["value"] is None else (
            f"{goal['value']:.2f}x" if speed else f"{goal['value']:.0%}" if goal["goal"].startswith("ceiling")
            else f"{goal['value']:.6f}" if goal["higher"] else f"{goal['value']:.2g}")
        target = "" if goal["target"] is None else \
            f"goal {'>=' if goal['higher'] else '<='} {goal['target']:{'.1f' if speed else 'g'}}: "
        print(f"  {goal['goal']:<66} {value:>9}  {target}{goal['status']}")
    print("  (random weights hide quantization error: their activations have no outliers, so int8 cosines "
          "on trained weights are lower)")


def measure_ours(measure, module, batch_size, max_seq_len, bf16):
    """Our rows: fp32, fp32 with prepacked weights, bf16 (on CPUs that have it), int8."""
    def run(**options):
        return lambda texts: module.get_embedding(texts, batch_size=batch_size, max_seq_len=max_seq_len, **options)

    measure("ours fp32", run(precision="fp32"), keep=True)
    measure("ours fp32 prepacked", run(precision="fp32", prepacked_weights=True), vs="ours fp32")
    if bf16:
        measure("ours bf16", run(precision="bf16"), vs="ours fp32")
    measure("ours int8", run(precision="int8"), vs="ours fp32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8, help="samples per forward pass, every runner (8)")
    parser.add_argument("--num-texts", type=int, default=256, help="sentences to embed per mix (256)")
    parser.add_argument("--mixes", default="short,medium",
                        help=f"comma-separated text mixes, of {', '.join(MIXES)} (short,medium)")
    parser.add_argument("--max-seq-len", type=int, default=512, help="truncation length, every runner (512)")
    parser.add_argument("--threads", type=int, default=None,
                        help="math threads, every runner (default: every CPU this process may use)")
    parser.add_argument("--skip-bf16", action="store_true", help="leave out the bf16 rows")
    parser.add_argument("--ort-per-channel", action="store_true",
                        help="quantize ORT int8 with per-channel weight scales (default: per-tensor, as ORT's "
                             "BERT helper)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny model and fewer texts: checks the plumbing in seconds, measures nothing")
    parser.add_argument("--seed", type=int, default=0, help="weights and sentences seed (0)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per row; the fastest is kept (1)")
    parser.add_argument("--max-foreign", type=float, default=0.1,
                        help="a run during which other processes used more than this share of the CPUs is "
                             "repeated (0.1)")
    parser.add_argument("--retries", type=int, default=2, help="at most this many such repeats per row (2)")
    parser.add_argument("--json", metavar="FILE", help="also write the measurements to FILE as JSON")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.num_texts < 1 or args.repeat < 1 or args.retries < 0:
        parser.error("--batch-size, --num-texts and --repeat must be at least 1, --retries at least 0")
    mixes = [m.strip() for m in args.mixes.split(",") if m.strip()]
    if not mixes or any(m not in MIXES for m in mixes):
        parser.error(f"--mixes takes a comma-separated list of {', '.join(MIXES)}")

    import logging

    logging.getLogger(PACKAGE).setLevel(logging.WARNING)
    package = import_package()
    from bert_cased_L_24_H_1024_A_16 import embedding, weights
    from bert_cased_L_24_H_1024_A_16.config import DEFAULT_CONFIG_FILE, BertConfig
    from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge
    from bert_cased_L_24_H_1024_A_16.weights.names import huggingface_names

    threads = args.threads or embedding.available_cpus()
    if args.quick:
        config = BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512)
        args.num_texts = min(args.num_texts, 64)
    else:
        config = BertConfig.from_json_file(DEFAULT_CONFIG_FILE)
    bf16 = not args.skip_bf16 and embedding.cpu_supports_bf16()
    if not args.skip_bf16 and not bf16:
        print("bf16 rows left out: this CPU has no avx512_bf16/amx_bf16", file=sys.stderr)

    import onnxruntime
    import torch
    import transformers

    torch.set_num_threads(threads)
    print(f"package {package.__file__}; paddle {__import__('paddle').__version__}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, onnxruntime {onnxruntime.__version__}; {threads} threads; "
          f"batch size {args.batch_size}", flush=True)

    peak, peak_detail, probes = gemm_peak(threads, args.quick)
    print(f"fp32 GEMM peak: {peak:.0f} GFLOP/s ({peak_detail})", flush=True)

    vocab_file = str(ROOT / "assets" / "vocab.txt")
    hf_tokenizer = transformers.BertTokenizerFast(vocab_file, do_lower_case=False)

    with tempfile.TemporaryDirectory(prefix="bench_embedding-") as tmp:
        tmp = pathlib.Path(tmp)
        os.environ[embedding.CACHE_ENV] = str(tmp / "cache")  # Keep the export out of the user's cache.
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        hf_model = transformers.BertModel(transformers.BertConfig(**config.to_dict())).eval()
        state = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
        arrays = {name: np.ascontiguousarray(state[hf].T if transpose else state[hf])
                  for name, (hf, transpose) in huggingface_names(config).items()}
        weights_dir = weights.install(arrays, config, vocab_file, str(tmp / "weights"), {"format": "bench"})
        del state, arrays
        gc.collect()
        module = BertCasedLarge(weights_dir=weights_dir)
        feeder = module.feeder(args.max_seq_len)
        data = {}
        for mix in mixes:
            texts = make_texts(args.num_texts, args.seed, *MIXES[mix])
            lengths = np.array([len(feeder.encode([t]).input_ids) for t in texts])
            gemm_rows = int(round(args.batch_size * lengths.mean()))
            ceiling = onednn_gemm_rates(threads, gemm_rows, config.hidden_size, config.intermediate_size, bf16)
            data[mix] = {"texts": texts, "lengths": lengths, "flops": float(sample_flops(lengths, config).sum()),
                         "rows": [], "outputs": {}, "ceiling": dict(ceiling, rows=gemm_rows)}
            print(f"mix {mix}: {len(texts)} texts, {lengths.sum()} tokens (mean {lengths.mean():.1f}, min "
                  f"{lengths.min()}, max {lengths.max()}); oneDNN GEMM at {gemm_rows} rows: fp32 "
                  f"{ceiling['fp32']:.0f} GFLOP/s, bf16 {ceiling['bf16'] or float('nan'):.0f}", flush=True)
        print(f"setup {time.perf_counter() - t0:.0f} s, RSS {rss_gb():.1f} GB", flush=True)

        def measure(name, fn, vs=None, keep=False):
            """Times ``fn`` on every mix; compares with the kept results of ``vs``; keeps its own if ``keep``."""
            for mix in mixes:
                d = data[mix]
                texts, lengths, flops = d["texts"], d["lengths"], d["flops"]
                fn(texts[:2 * args.batch_size])  # Warm-up: predictor / kernels built outside the timing.
                runs = []
                for attempt in range(args.repeat + args.retries):
                    with CpuWatch() as watch:
                        result = fn(texts)
                    runs.append(watch)
                    if attempt + 1 >= args.repeat and min(r.foreign for r in runs) <= args.max_foreign:
                        break
                    print(f"  {name} ({mix}): {watch.seconds:.1f} s (other processes used {watch.foreign:.0%} of "
                          "the CPUs)" + ("; again" if attempt + 1 < args.repeat + args.retries else ""), flush=True)
                # The least disturbed run, the fastest among equally quiet ones.
                watch = min(runs, key=lambda r: (r.foreign > args.max_foreign, r.seconds))
                row = {"runner": name, "seconds": watch.seconds, "texts_per_s": len(texts) / watch.seconds,
                       "tokens_per_s": lengths.sum() / watch.seconds, "gflops": flops / watch.seconds / 1e9,
                       "peak_share": flops / watch.seconds / 1e9 / peak, "foreign_cpu": watch.foreign}
                if vs is not None:
                    pooled, tokens, max_abs = cosines(result, d["outputs"][vs])
                    row.update(vs=vs, pooled_cos_min=float(pooled.min()), pooled_cos_mean=float(pooled.mean()),
                               token_cos_min=float(tokens.min()), max_abs_diff=max_abs)
                if keep:
                    d["outputs"][name] = result
                del result
                gc.collect()
                row["rss_gb"] = rss_gb()
                d["rows"].append(row)
                print(f"  {name} ({mix}): {watch.seconds:.2f} s (other processes used {watch.foreign:.0%} of the "
                      f"CPUs), RSS {row['rss_gb']:.2f} GB", flush=True)

        measure_ours(measure, module, args.batch_size, args.max_seq_len, bf16)
        del module, feeder
        gc.collect()
        peers.measure_torch(measure, hf_model, hf_tokenizer, args.batch_size, args.max_seq_len, bf16,
                            tmp / "bert.onnx")
        del hf_model
        gc.collect()
        fused = peers.measure_ort(measure, hf_tokenizer, args.batch_size, args.max_seq_len, config,
                                  tmp / "bert.onnx", threads, per_channel=args.ort_per_channel)

    report = {"peak_gflops": peak, "peak_detail": peak_detail, "threads": threads, "batch_size": args.batch_size,
              "ort_per_channel": args.ort_per_channel, "ort_fused_operators": fused, "mixes": {}}
    for mix in mixes:
        d = data[mix]
        d["goals"] = goals(d["rows"], d["ceiling"])
        print_mix(mix, d, config, args, threads, peak, probes)
        report["mixes"][mix] = {"words": list(MIXES[mix]), "texts": len(d["texts"]), "tokens": int(d["lengths"].sum()),
                                "rows": d["rows"], "goals": d["goals"], "ceiling": d["ceiling"]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
