"""PaddleHub 1.x's text-classification demo, run unchanged as a file against the hub-installed module on a local
TSV data set, with its AdamWeightDecayStrategy and with ULMFiTStrategy.

Each run is a subprocess with its own offline ``HUB_HOME`` and tiny weights; a wrapper runs the demo file with
``runpy`` and reports what its task trained with.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import PACKAGE_VOCAB, hub_installed_with_weights
from test_finetune import LEARN_CONFIG, bert_init

pytest.importorskip("paddlehub")

# PaddleHub 1.x demo/text_classification/text_cls.py (release/v1.8), for this module and a local data set as the
# 1.x tutorial defines one. The data set import sits after hub.Module(...): the one line the README says to move.
DEMO = '''
# coding:utf-8
import argparse
import ast
import paddlehub as hub

parser = argparse.ArgumentParser(__doc__)
parser.add_argument("--num_epoch", type=int, default=3, help="Number of epoches for fine-tuning.")
parser.add_argument("--use_gpu", type=ast.literal_eval, default=True, help="Whether use GPU for finetuning, input should be True or False")
parser.add_argument("--learning_rate", type=float, default=5e-5, help="Learning rate used to train with warmup.")
parser.add_argument("--weight_decay", type=float, default=0.01, help="Weight decay rate for L2 regularizer.")
parser.add_argument("--warmup_proportion", type=float, default=0.1, help="Warmup proportion params for warmup strategy")
parser.add_argument("--checkpoint_dir", type=str, default=None, help="Directory to model checkpoint")
parser.add_argument("--max_seq_len", type=int, default=512, help="Number of words of the longest seqence.")
parser.add_argument("--batch_size", type=int, default=32, help="Total examples' number in batch for training.")
parser.add_argument("--use_data_parallel", type=ast.literal_eval, default=False, help="Whether use data parallel.")
parser.add_argument("--dataset_dir", type=str, default="./data", help="Directory of the local data set.")
args = parser.parse_args()

if __name__ == '__main__':
    # Load Paddlehub BERT pretrained model
    module = hub.Module(name="bert_cased_L-24_H-1024_A-16")
    inputs, outputs, program = module.context(trainable=True, max_seq_len=args.max_seq_len)

    from paddlehub.dataset.base_nlp_dataset import BaseNLPDataset

    class DemoDataset(BaseNLPDataset):
        """DemoDataset"""
        def __init__(self):
            # 数据集存放位置
            self.dataset_dir = args.dataset_dir
            super(DemoDataset, self).__init__(
                base_path=self.dataset_dir,
                train_file="train.tsv",
                dev_file="dev.tsv",
                test_file="test.tsv",
                train_file_with_header=True,
                dev_file_with_header=True,
                test_file_with_header=True,
                # 数据集类别集合
                label_list=["0", "1"])

    dataset = DemoDataset()
    metrics_choices = ["acc"]

    reader = hub.reader.ClassifyReader(
        dataset=dataset,
        vocab_path=module.get_vocab_path(),
        max_seq_len=args.max_seq_len)

    # Construct transfer learning network
    # Use "pooled_output" for classification tasks on an entire sentence.
    # Use "sequence_output" for token-level output.
    pooled_output = outputs["pooled_output"]

    # Setup feed list for data feeder
    # Must feed all the tensor of module need
    feed_list = [
        inputs["input_ids"].name,
        inputs["position_ids"].name,
        inputs["segment_ids"].name,
        inputs["input_mask"].name,
    ]

    # Select finetune strategy, setup config and finetune
STRATEGY
    # Setup RunConfig for PaddleHub Fine-tune API
    config = hub.RunConfig(
        use_data_parallel=args.use_data_parallel,
        use_cuda=args.use_gpu,
        num_epoch=args.num_epoch,
        batch_size=args.batch_size,
        checkpoint_dir=args.checkpoint_dir,
        strategy=strategy)

    # Define a classfication finetune task by PaddleHub's API
    cls_task = hub.TextClassifierTask(
        data_reader=reader,
        feature=pooled_output,
        feed_list=feed_list,
        num_classes=dataset.num_labels,
        config=config,
        metrics_choices=metrics_choices)

    # Finetune and evaluate by PaddleHub's API
    # will finish training, evaluation, testing, save model automatically
    cls_task.finetune_and_eval()
'''

STRATEGIES = {
    "AdamWeightDecayStrategy": '''
    strategy = hub.AdamWeightDecayStrategy(
        warmup_proportion=args.warmup_proportion,
        weight_decay=args.weight_decay,
        learning_rate=args.learning_rate)
''',
    "ULMFiTStrategy": '''
    strategy = hub.finetune.strategy.ULMFiTStrategy(
        learning_rate=args.learning_rate,
        params_layer=module.get_params_layer())
''',
}

# Runs the demo file as `python text_cls.py ARGS` would, then reports what its task trained with.
REPORT = '''
import json, runpy, sys
demo, sys.argv = sys.argv[1], sys.argv[1:]
g = runpy.run_path(demo, run_name="__main__")
task, strategy = g["cls_task"], g["strategy"]
sample = g["dataset"].get_train_examples()[0].text_a
print("RESULT " + json.dumps({
    "task_strategy_is_given": task.strategy is strategy, "config_strategy_is_given": g["config"].strategy is strategy,
    "strategy": type(strategy).__name__, "global_step": strategy.global_step, "epochs": len(task.history),
    "dev_accuracy": [record.get("dev_accuracy") for record in task.history],
    "sample": sample, "tokens": task.feeder.tokenizer.tokenize(sample), "labels": task.label_list,
    "reader_tokens": g["reader"].tokenizer.tokenize(sample),
}))
'''

TRAIN = [("The Cat sat on the Mat, EXCELLENT!", "1"), ("Paris in Spring was WONDERFUL.", "1"),
         ("A Dreadful, boring Film.", "0"), ("The Dog ran off: TERRIBLE.", "0")] * 3
DEV = [("An EXCELLENT Mat.", "1"), ("A boring Dog.", "0")]


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory):
    """A hub home with the module installed and tiny weights, and the demo's local TSV data set."""
    root = tmp_path_factory.mktemp("demo")
    env = hub_installed_with_weights(root, bert_init(LEARN_CONFIG), LEARN_CONFIG)
    data = root / "data"
    data.mkdir()
    for name, rows in (("train", TRAIN), ("dev", DEV), ("test", DEV)):
        lines = ["text_a\tlabel"] + [f"{text}\t{label}" for text, label in rows]
        (data / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return env, root, data


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_the_1x_demo_runs_unchanged_with_the_strategy_it_gives(demo_env, tmp_path, strategy):
    env, root, data = demo_env
    demo = tmp_path / "text_cls.py"
    demo.write_text(textwrap.dedent(DEMO).replace("STRATEGY\n", STRATEGIES[strategy]))
    batch_size, epochs = 4, 2
    argv = [str(demo), "--use_gpu", "False", "--num_epoch", str(epochs), "--batch_size", str(batch_size),
            "--max_seq_len", "16", "--checkpoint_dir", str(tmp_path / "ckpt"), "--dataset_dir", str(data)]
    result = subprocess.run([sys.executable, "-c", REPORT, *argv], env=env, capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    facts = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert facts["task_strategy_is_given"] and facts["config_strategy_is_given"]
    assert facts["strategy"] == strategy
    assert facts["global_step"] == epochs * math.ceil(len(TRAIN) / batch_size)
    assert facts["epochs"] == epochs and all(accuracy is not None for accuracy in facts["dev_accuracy"])
    assert facts["labels"] == ["0", "1"]
    # The module's cased tokenization, not the compat reader's lower-casing.
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertTokenizer(str(PACKAGE_VOCAB), do_lower_case=False)
    assert facts["sample"] == TRAIN[0][0] and facts["tokens"] == reference.tokenize(TRAIN[0][0])
    assert facts["reader_tokens"] == facts["tokens"]  # the reader no longer lower-cases by default
    assert os.listdir(tmp_path / "ckpt")  # the checkpoint_dir it gave was used


def test_a_hub_run_config_that_dropped_its_strategy_is_refused_not_swapped():
    from paddlehub.compat.task.config import RunConfig as HubRunConfig

    from bert_cased_L_24_H_1024_A_16.finetune import ULMFiTStrategy
    from bert_cased_L_24_H_1024_A_16.finetune.hub1x import RunConfig
    from bert_cased_L_24_H_1024_A_16.finetune.run_config import as_run_config

    strategy = ULMFiTStrategy()
    assert as_run_config(RunConfig(num_epoch=2, batch_size=3, strategy=strategy, use_cuda=False)).strategy is strategy
    with pytest.raises(ValueError, match="has lost its strategy.*after hub.Module"):
        as_run_config(HubRunConfig(num_epoch=2, batch_size=3, strategy=strategy, use_cuda=False))


def test_1x_task_arguments_it_cannot_honour_are_refused(tiny_weights_dir, tmp_path):
    from paddlehub.compat.datasets.nlp_dataset import BaseNLPDataset

    from bert_cased_L_24_H_1024_A_16.finetune.hub1x import ClassifyReader, LegacyTextClassifierTask
    from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge

    (tmp_path / "train.tsv").write_text("text_a\tlabel\nGood.\t1\nBad.\t0\n", encoding="utf-8")
    dataset = BaseNLPDataset(str(tmp_path), train_file="train.tsv", train_file_with_header=True,
                             label_list=["0", "1"])
    module = BertCasedLarge()
    inputs, outputs, _ = module.context(max_seq_len=16)
    feeds = [inputs[name].name for name in ("input_ids", "position_ids", "segment_ids", "input_mask")]
    reader = ClassifyReader(module.get_vocab_path(), dataset=dataset, max_seq_len=16)
    assert reader.do_lower_case is False  # the tiny weights carry the package's cased vocabulary
    cases = [(dict(feed_list=feeds[:3]), "feed_list must name"),
             (dict(hidden_units=[8]), "hidden_units=\\[8\\] is not supported"),
             (dict(data_reader=ClassifyReader(module.get_vocab_path(), max_seq_len=16)), "has no dataset"),
             (dict(data_reader=ClassifyReader(module.get_vocab_path(), dataset=dataset, max_seq_len=32)),
              "reader's max_seq_len \\(32\\) exceeds the context's \\(16\\)")]
    for change, message in cases:
        arguments = {"feature": outputs["pooled_output"], "num_classes": 2, "feed_list": feeds, "data_reader": reader,
                     **change}
        with pytest.raises(ValueError, match=message):
            LegacyTextClassifierTask(**arguments)
