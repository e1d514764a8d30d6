"""Fine-tuning steps of this module against a plain torch loop on the same weights, texts and batches.

Run from a clone of the repository, with an environment that has paddlepaddle, torch and transformers
(``pip install -e .[hub,test]``)::

    python bench/bench_finetune.py                  # full-size BERT-Large: 32 and 128 tokens, ~40 minutes on 2 cores
    python bench/bench_finetune.py --seqs 64 --engines paddle,torch   # one length, two engines
    python bench/bench_finetune.py --quick          # a tiny model, seconds: checks the plumbing

What it does:

1. Makes one random-init Hugging Face ``BertForSequenceClassification`` (2 classes) with
   ``torch.manual_seed(0)``, saves it, and installs the same encoder weights as this module's weights
   folder.
2. For each ``--seqs`` length (short and medium texts: 32 and 128 tokens), runs each engine in a child
   process of its own, so that peak memory is that engine's alone, on the same batches of ``--batch``
   English sentences truncated and padded to that length:
   - ``paddle``: this module's ``TextClassifierTask`` with its default strategy
     (``AdamWeightDecayStrategy``: AdamW, weight decay 0.01, linear warmup and decay, clipping by
     global norm 1.0) through ``finetune`` -- the static program, as 1.x users train;
   - ``paddle-bf16``: the same with ``RunConfig(precision="bf16")`` (the dense layers' products in
     bfloat16, float32 sums, weights and optimizer state);
   - ``paddle-2x``: PaddleHub 2.x's route, ``hub.Module(..., task="seq-cls")`` in dynamic mode, with
     this package's ``finetune.AdamW`` (paddle's AdamW with the fused update; weight decay 0.01 but
     biases and norms), global-norm clipping 1.0 and paddlenlp's linear warmup and decay, inside
     ``device.cpu_execution()``, as the README tells 2.x users: the loop ``hub.Trainer`` runs;
   - ``torch``: the loop a torch user writes: ``torch.optim.AdamW(fused=True)`` (weight decay 0.01;
     fused is torch's fastest CPU AdamW), ``clip_grad_norm_(1.0)``, a linear schedule, fp32;
   - ``torch-bf16``: the same loop under ``torch.autocast("cpu", dtype=torch.bfloat16)``.
   Tokenization is outside the timed steps of all (the task tokenizes its data once up front).
   Every child gets ``OMP_NUM_THREADS=--threads``; torch also ``torch.set_num_threads``, and glibc's
   heap settings that the paddle engines set for themselves (``memory.keep_freed_memory``) through
   ``MALLOC_*`` environment variables, so that no engine pays for page faults the others don't.
3. Prints, per length, the median step time over the steps after the first (which builds and warms
   the kernels), the FLOP rate, peak RSS and the losses, then a GOALS block: each paddle engine's
   speed against the torch fp32 loop (issue #13: >= 1.0x for fp32, >= 1.5x for bf16), the largest
   step-by-step loss difference between bf16 and fp32 (dropout differs between them), and memory:
   ``paddle``'s peak RSS against the state the task needs (weights, gradients and two Adam moments,
   16 bytes a parameter; goal <= 1.3x), the RSS after the task is closed and deleted, and the peak
   while a second task of the same size is created and trained in the same process (hyperparameter
   or k-fold loops).

Training FLOPs of a step: three times the forward pass's (the backward pass costs two forward
passes), counted over all ``batch * seq`` positions, padding included, since every engine computes
them: ``3 * batch * (L * (2*n*(4*h*h + 2*h*f) + 4*n*n*h) + 2*h*h)`` with ``n = seq``.
"""

import argparse
import gc
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_embedding import import_package, make_texts, rss_gb, sample_flops  # noqa: E402

FULL = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
QUICK = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
ENGINES = ("paddle", "paddle-bf16", "paddle-2x", "torch", "torch-bf16")
# The goals (#13): a fine-tuning step against the torch fp32 loop, and peak memory against the state.
GOALS = {"paddle": 1.0, "paddle-bf16": 1.5, "paddle-2x": 1.0}
MEMORY_GOAL = 1.3


def peak_rss_gb():
    """The process's peak resident set so far (``VmHWM``), in GB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def batches(args):
    """``[(texts, labels)]``: ``args.steps`` batches of sentences long enough to fill ``args.seq`` tokens."""
    texts = make_texts(args.steps * args.batch, seed=1, min_words=args.seq, max_words=args.seq + 20)
    labels = np.random.default_rng(2).integers(0, 2, len(texts))
    return [(texts[i:i + args.batch], labels[i:i + args.batch].tolist()) for i in range(0, len(texts), args.batch)]


# -- the engines (each runs in a child process) --------------------------------------------------------


def run_paddle(args, weights_dir, data, precision):
    package = import_package()
    from bert_cased_L_24_H_1024_A_16.finetune import RunConfig, TextClassifierTask  # noqa: F401
    from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge

    module = BertCasedLarge(weights_dir=weights_dir)
    train = [(text, label) for texts, labels in data for text, label in zip(texts, labels)]

    def one_task():
        task = TextClassifierTask(module, num_classes=2, max_seq_len=args.seq,
                                  config=RunConfig(num_epoch=1, batch_size=args.batch, shuffle=False,
                                                   precision=precision))
        times, losses = [], []
        run = task.strategy.run

        def timed_run(executor, feed, fetch_list=()):
            started = time.perf_counter()
            result = run(executor, feed, fetch_list)
            times.append(time.perf_counter() - started)
            losses.append(float(np.asarray(result[0])))
            return result

        task.strategy.run = timed_run
        task.finetune(train)
        return task, times, losses

    task, times, losses = one_task()
    peak = peak_rss_gb()
    if precision != "fp32":  # The memory checks below run once, with the default precision.
        return {"times": times, "losses": losses, "peak_rss_gb": peak, "package": str(package.__file__)}
    task.close()
    del task
    gc.collect()
    after_close = rss_gb()
    second_task, _, _ = one_task()
    second_peak = peak_rss_gb()
    del second_task
    return {"times": times, "losses": losses, "peak_rss_gb": peak, "rss_after_close_gb": after_close,
            "peak_rss_two_tasks_gb": second_peak, "package": str(package.__file__)}


def run_paddle_2x(args, weights_dir, data):
    """PaddleHub 2.x's route: ``hub.Module(..., task="seq-cls")`` in dynamic mode, in the loop ``hub.Trainer`` runs."""
    import_package()
    import paddle
    from paddlenlp.transformers import LinearDecayWithWarmup

    from bert_cased_L_24_H_1024_A_16.device import cpu_execution
    from bert_cased_L_24_H_1024_A_16.finetune import AdamW
    from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge

    paddle.disable_static()
    model = BertCasedLarge(weights_dir=weights_dir, task="seq-cls", num_classes=2)
    model.train()
    tokenizer = model.get_tokenizer()
    schedule = LinearDecayWithWarmup(1e-4, len(data), max(1, len(data) // 10))
    decay = {p.name for n, p in model.named_parameters() if not (n.endswith("bias") or "norm" in n)}
    optimizer = AdamW(learning_rate=schedule, parameters=model.parameters(), weight_decay=0.01,
                      apply_decay_param_fun=lambda name: name in decay, grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    encoded = []
    for texts, labels in data:
        batch = tokenizer(texts, max_length=args.seq, padding="max_length", truncation=True,
                          return_attention_mask=True)
        encoded.append(({key: paddle.to_tensor(batch[key], dtype="int64")
                         for key in ("input_ids", "token_type_ids", "attention_mask")},
                        paddle.to_tensor(labels, dtype="int64")))
    times, losses = [], []
    with cpu_execution():
        for inputs, labels in encoded:
            started = time.perf_counter()
            _, loss, _ = model(**inputs, labels=labels)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.clear_grad()
            losses.append(float(loss))
            times.append(time.perf_counter() - started)
    return {"times": times, "losses": losses, "peak_rss_gb": peak_rss_gb()}


def run_torch(args, hf_dir, data, bf16):
    import contextlib

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    tokenizer = transformers.BertTokenizerFast(os.path.join(hf_dir, "vocab.txt"), do_lower_case=False)
    model = transformers.BertForSequenceClassification.from_pretrained(hf_dir).train()
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-4, fused=True)  # torch's fastest CPU AdamW: one kernel for all tensors
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, max(1, len(data) // 10), len(data))
    encoded = [(tokenizer(texts, padding="max_length", truncation=True, max_length=args.seq, return_tensors="pt"),
                torch.tensor(labels)) for texts, labels in data]
    times, losses = [], []
    for inputs, labels in encoded:
        started = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = model(**inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
        losses.append(float(loss))
    return {"times": times, "losses": losses, "peak_rss_gb": peak_rss_gb()}


def child(args):
    data = batches(args)
    if args.child == "paddle-2x":
        result = run_paddle_2x(args, os.path.join(args.workdir, "weights"), data)
    elif args.child.startswith("paddle"):
        precision = "bf16" if args.child == "paddle-bf16" else "fp32"
        result = run_paddle(args, os.path.join(args.workdir, "weights"), data, precision)
    else:
        result = run_torch(args, os.path.join(args.workdir, "hf"), data, bf16=args.child == "torch-bf16")
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent ----------------------------------------------------------------------------------------


def make_checkpoints(args, workdir):
    """Saves one random classifier as a Hugging Face folder and installs its encoder as our weights folder."""
    import torch
    import transformers

    package = import_package()
    from bert_cased_L_24_H_1024_A_16 import weights
    from bert_cased_L_24_H_1024_A_16.config import BertConfig

    sizes = QUICK if args.quick else FULL
    config = BertConfig(**sizes)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(**config.to_dict(), num_labels=2))
    hf_dir = os.path.join(workdir, "hf")
    model.save_pretrained(hf_dir)
    vocab = os.path.join(os.path.dirname(package.__file__), "assets", "vocab.txt")
    with open(vocab, "rb") as src, open(os.path.join(hf_dir, "vocab.txt"), "wb") as dst:
        dst.write(src.read())
    encoder_dir = os.path.join(workdir, "encoder")  # the converter takes a BertModel, not its classifier
    model.bert.save_pretrained(encoder_dir)
    checkpoint = weights.read_checkpoint(encoder_dir)
    weights.install(checkpoint.arrays, checkpoint.config, vocab, os.path.join(workdir, "weights"),
                    {"format": "bench"})
    del model, checkpoint
    gc.collect()
    return config


def run_child(args, engine, workdir):
    command = [sys.executable, __file__, "--child", engine, "--workdir", workdir, "--steps", str(args.steps),
               "--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if engine.startswith("torch"):  # glibc's heap as the paddle engines keep it (memory.keep_freed_memory).
        import_package()
        from bert_cased_L_24_H_1024_A_16.memory import kept_heap_environment

        env.update(kept_heap_environment())
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
    raise RuntimeError(f"the {engine} run failed (exit {done.returncode})")


def report(args, config, params, results):
    """The step table of one sequence length, its ratios and the goals they meet or miss."""
    flops = 3 * args.batch * sample_flops(args.seq, config)
    print(f"== batch {args.batch} x {args.seq} tokens, {flops / 1e12:.3f} TFLOP a step")
    for engine, result in results.items():
        print(f"{engine:>12}: {result['step']:7.2f} s/step  {flops / result['step'] / 1e9:6.1f} GFLOP/s  "
              f"peak RSS {result['peak_rss_gb']:.2f} GB  losses {[round(x, 3) for x in result['losses']]}",
              flush=True)
    print(f"GOALS ({args.seq} tokens):")
    torch_step = results.get("torch", {}).get("step")
    for engine, goal in GOALS.items():
        if engine in results and torch_step:
            ratio = torch_step / results[engine]["step"]
            verdict = "PASS" if ratio >= goal else f"short by {goal - ratio:.2f}x"
            print(f"  speed: {engine} / torch fp32 loop {ratio:10.2f}x  goal >= {goal}: {verdict}")
    for engine in ("paddle", "paddle-bf16"):
        if engine in results and "torch-bf16" in results:
            print(f"  speed: {engine} / torch bf16 autocast loop {results['torch-bf16']['step'] / results[engine]['step']:.2f}x "
                  "(no goal: for reference)")
    if "paddle" in results and "paddle-bf16" in results:
        fp32, bf16 = np.array(results["paddle"]["losses"]), np.array(results["paddle-bf16"]["losses"])
        print(f"  loss: paddle-bf16 vs paddle fp32, largest step difference {np.abs(bf16 - fp32).max():.4f} "
              f"(mean loss {fp32.mean():.3f}; random labels and different dropout masks, so for reference only: "
              "tests/test_finetune.py checks the bf16 loss curve on a learnable task)")
    if "paddle" in results:
        result, state = results["paddle"], 16 * params / 1e9
        share = result["peak_rss_gb"] / state
        verdict = "PASS" if share <= MEMORY_GOAL else f"over by {share - MEMORY_GOAL:.2f}x"
        print(f"  memory: paddle peak {result['peak_rss_gb']:.2f} GB / state (weights, gradients, 2 Adam moments) "
              f"{state:.2f} GB = {share:.2f}x  goal <= {MEMORY_GOAL}: {verdict}")
        second = result["peak_rss_two_tasks_gb"] / result["peak_rss_gb"]
        print(f"  memory: after close + del {result['rss_after_close_gb']:.2f} GB; peak with a second task after it "
              f"{result['peak_rss_two_tasks_gb']:.2f} GB = {second:.2f}x the first task's peak (goal: bounded by it)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model: checks the plumbing")
    parser.add_argument("--steps", type=int, default=6, help="training steps per engine (the first is warm-up)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seqs", default="32,128",
                        help="tokens per sample, padded: one table per value (short and medium texts: 32,128)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {ENGINES}")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--seq", type=int, help=argparse.SUPPRESS)  # a child's one length
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    engines = [e for e in args.engines.split(",") if e]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engines {unknown}; choose from {ENGINES}")
    seqs = [int(s) for s in args.seqs.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as workdir:
        config = make_checkpoints(args, workdir)
        params = sum(int(np.prod(s)) for s in
                     __import__("bert_cased_L_24_H_1024_A_16.weights.names", fromlist=["x"])
                     .legacy_parameter_shapes(config).values())
        print(f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, {params / 1e6:.1f} M parameters; "
              f"{args.threads} threads, {args.steps} steps per engine (the first is warm-up), each engine in a "
              "process of its own", flush=True)
        for seq in seqs:
            args.seq = seq
            results = {}
            for engine in engines:
                results[engine] = result = run_child(args, engine, workdir)
                result["step"] = statistics.median(result["times"][1:] or result["times"])
                print(f"  {engine} at {seq} tokens: {result['step']:.2f} s/step", flush=True)
            report(args, config, params, results)


if __name__ == "__main__":
    main()
