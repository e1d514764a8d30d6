"""The ``embed`` command on one machine: local mode against Ray with 1 actor x 2 threads and 2 actors x 1 thread.

Run from a clone of the repository, installed with the ``ray`` extra (``pip install -e ".[ray]"``; the
runs are ``python -m bert_cased_L_24_H_1024_A_16`` processes)::

    python bench/bench_corpus.py                   # random full-size BERT-Large, several minutes on 2 cores
    python bench/bench_corpus.py --quick           # a tiny model: checks the plumbing

It installs random weights (BERT-Large's sizes, or a tiny model with ``--quick``) into a temporary
folder, writes ``--num-texts`` English sentences (bench_embedding.py's, 2 to 100 words) to a text file,
warms the inference-model cache with one short run, then runs, each in a fresh process and output
folder, ``embed corpus.txt --output DIR --batch-size 8 --max-seq-len 128 --shard-size S`` locally and
with ``--ray --actors 1 --cpus-per-actor 2`` and ``--ray --actors 2 --cpus-per-actor 1``. It prints each
run's wall time (everything: start-up, planning, weights digest, Ray start, predictors, writing) and
texts/s over it, the local run's peak RSS, the load average before and after each run, and whether
the three outputs hold the same rows.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_embedding import PACKAGE, import_package, make_texts  # noqa: E402


# Runs a command and prints its peak RSS (KiB) last: the measured process alone, not the warm-up's export.
_PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
             "print('peak RSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True); sys.exit(code)")


def run(command, env):
    """Runs ``command``; returns (wall seconds, its stdout). Raises when it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-texts", type=int, default=400)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="a tiny model instead of BERT-Large")
    args = parser.parse_args(argv)

    import_package()
    import numpy as np
    import pyarrow.parquet as pq

    from bert_cased_L_24_H_1024_A_16 import weights
    from bert_cased_L_24_H_1024_A_16.config import DEFAULT_CONFIG_FILE, BertConfig
    from bert_cased_L_24_H_1024_A_16.weights.names import legacy_parameter_shapes

    config = BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512) \
        if args.quick else BertConfig.from_json_file(DEFAULT_CONFIG_FILE)
    with tempfile.TemporaryDirectory(prefix="bench_corpus-") as tmp:
        rng = np.random.default_rng(0)
        arrays = {name: rng.normal(0.0, 0.02, size=shape).astype(np.float32)
                  for name, shape in legacy_parameter_shapes(config).items()}
        weights_dir = weights.install(arrays, config, str(ROOT / "assets" / "vocab.txt"),
                                      os.path.join(tmp, "weights"), {"format": "bench"})
        del arrays
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("\n".join(make_texts(args.num_texts)) + "\n")
        warm = os.path.join(tmp, "warm.txt")
        with open(warm, "w", encoding="utf-8") as f:
            f.write("\n".join(make_texts(4, seed=1)) + "\n")
        env = dict(os.environ, BERT_CASED_L_24_H_1024_A_16_WEIGHTS=weights_dir, RAY_AUTH_MODE="disabled",
                   BERT_CASED_L_24_H_1024_A_16_CACHE=os.path.join(tmp, "cache"))
        base = [sys.executable, "-m", PACKAGE, "embed", "--batch-size", "8", "--max-seq-len", "128",
                "--shard-size", str(args.shard_size), "--no-progress"]
        seconds, _ = run(base + [warm, "--output", os.path.join(tmp, "warm")], env)
        print(f"warm-up (exports the inference model): {seconds:.1f} s", flush=True)
        runs = {"local": [], "ray 1 actor x 2 threads": ["--ray", "--actors", "1", "--cpus-per-actor", "2"],
                "ray 2 actors x 1 thread": ["--ray", "--actors", "2", "--cpus-per-actor", "1"]}
        outputs = {}
        for name, extra in runs.items():
            load_before = os.getloadavg()[0]
            outputs[name] = os.path.join(tmp, name.replace(" ", "_"))
            seconds, stdout = run([sys.executable, "-c", _PEAK_RSS] + base + [corpus, "--output", outputs[name]]
                                  + extra, env)
            stdout, rss = stdout.rsplit("peak RSS ", 1)
            line = f"{name}: {args.num_texts} texts in {seconds:.1f} s, {args.num_texts / seconds:.2f} texts/s " \
                   f"(load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)"
            if name == "local":  # With Ray the actors are not the command's children.
                line += f", peak RSS {int(rss) / 2**20:.2f} GiB"
            print(line + "\n    " + stdout.strip().replace("\n", "\n    "), flush=True)
        tables = {name: pq.read_table(path).to_pydict() for name, path in outputs.items()}
        reference = tables["local"]
        for name, table in tables.items():
            difference = float(np.abs(np.asarray(table["pooled"]) - np.asarray(reference["pooled"])).max())
            print(f"{name}: same ids as local: {table['id'] == reference['id']}, max |pooled - local| {difference:.2e}")


if __name__ == "__main__":
    main()
