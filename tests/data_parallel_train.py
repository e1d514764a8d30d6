"""Fine-tunes a seq-cls task model with ``hub.Trainer``, alone or under ``paddle.distributed.launch``.

Used by tests/test_tasks_distributed.py and for the README's samples/s. Every rank writes its final
parameters to ``<out>.rank<R>.npz``; rank 0 prints ``samples/s=<global samples per second>``.
``--die_at_step N`` makes rank 1 exit with status 3 in its N-th training step (a worker dying);
``--eval_delay S`` makes rank 0's evaluations S seconds longer (the other ranks wait meanwhile).
"""

import argparse
import os
import time

import numpy as np
import paddle
import paddlehub as hub

from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge
from bert_cased_L_24_H_1024_A_16.tasks.datasets import TextClassificationFiles


OPTIMIZERS = {"sgd": paddle.optimizer.SGD, "momentum": paddle.optimizer.Momentum, "adamw": paddle.optimizer.AdamW}


def main(argv=None):
    """Runs the fine-tuning ``argv`` (default: the command line) describes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True, help="folder with train.tsv (label<TAB>text) and dev.tsv")
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch_size", type=int, default=2, help="per process")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max_seq_len", type=int, default=16)
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd")
    parser.add_argument("--learning_rate", type=float, default=0.1)
    parser.add_argument("--die_at_step", type=int, default=0)
    parser.add_argument("--eval_delay", type=float, default=0, help="seconds each evaluation takes longer on rank 0")
    args = parser.parse_args(argv)

    paddle.seed(7)  # The task head's initial weights: the same in every process and run.
    model = BertCasedLarge(weights_dir=args.weights, task="seq-cls", num_classes=2)
    tokenizer = model.get_tokenizer()
    datasets = {mode: TextClassificationFiles(base_path=args.data, tokenizer=tokenizer, max_seq_len=args.max_seq_len,
                                              mode=mode, data_file=f"{mode}.tsv", label_list=["0", "1"])
                for mode in ("train", "dev")}
    optimizer = OPTIMIZERS[args.optimizer](learning_rate=args.learning_rate, parameters=model.parameters())
    rank = paddle.distributed.get_rank()
    if args.die_at_step and rank == 1:
        step = model.training_step

        def dying_step(batch, batch_idx):
            if batch_idx + 1 == args.die_at_step:
                os._exit(3)
            return step(batch, batch_idx)

        model.training_step = dying_step
    if args.eval_delay and rank == 0:
        validate = model.validation_step

        def slow_validation_step(batch, batch_idx):
            if batch_idx == 0:
                time.sleep(args.eval_delay)
            return validate(batch, batch_idx)

        model.validation_step = slow_validation_step
    trainer = hub.Trainer(model, optimizer, checkpoint_dir=args.checkpoint_dir, use_vdl=False)
    start = time.perf_counter()
    trainer.train(datasets["train"], epochs=args.epochs, batch_size=args.batch_size, eval_dataset=datasets["dev"],
                  save_interval=1, log_interval=1)
    seconds = time.perf_counter() - start
    np.savez(f"{args.out}.rank{rank}.npz", **{name: t.numpy() for name, t in model.state_dict().items()})
    if rank == 0:
        print(f"samples/s={args.epochs * len(datasets['train']) / seconds:.2f}", flush=True)


if __name__ == "__main__":
    main()
