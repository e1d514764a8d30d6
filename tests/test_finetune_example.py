"""The 1.x module page's example, run as written against the hub-installed module, then fine-tuned with its strategy.

Runs in a subprocess with its own ``HUB_HOME`` (PaddleHub reads it at import), the hub server
pointed at a closed local port, and tiny random weights found through the weights env var.
"""

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import hub_installed_with_weights
from test_finetune import LEARN_CONFIG, bert_init

pytest.importorskip("paddlehub")

# The example of the 1.x module page (version 1.1.0), verbatim.
SEED_EXAMPLE = '''
import paddlehub as hub

# Load $ hub install bert_cased_L-24_H-1024_A-16 pretrained model
module = hub.Module(name="bert_cased_L-24_H-1024_A-16")
inputs, outputs, program = module.context(trainable=True, max_seq_len=128)

# Must feed all the tensor of bert_cased_L-24_H-1024_A-16's module need
input_ids = inputs["input_ids"]
position_ids = inputs["position_ids"]
segment_ids = inputs["segment_ids"]
input_mask = inputs["input_mask"]

# Use "pooled_output" for sentence-level output.
pooled_output = outputs["pooled_output"]

# Use "sequence_output" for token-level output.
sequence_output = outputs["sequence_output"]

# Use "get_embedding" to get embedding result.
embedding_result = module.get_embedding(texts=[["Sample1_text_a"],["Sample2_text_a","Sample2_text_b"]], use_gpu=True)

# Use "get_params_layer" to get params layer and used to ULMFiTStrategy.
params_layer = module.get_params_layer()
strategy = hub.finetune.strategy.ULMFiTStrategy(params_layer=params_layer)
'''

# What a 1.x user did next: a classifier task trained with that strategy (from the module's own package).
FINETUNE_AFTER = '''
import importlib, json
package = type(strategy).__module__.rsplit(".", 2)[0]
ft = importlib.import_module(package + ".finetune")
samples = [("the cat sat on the mat excellent", 1), ("the dog ran terrible", 0)] * 8
task = ft.TextClassifierTask(module, num_classes=2, max_seq_len=16,
                             config=ft.RunConfig(num_epoch=2, batch_size=8, strategy=strategy, use_gpu=True))
history = task.finetune_and_eval(samples, samples)
print("RESULT " + json.dumps({
    "strategy": type(strategy).__name__, "params_layer": len(params_layer), "embeddings": len(embedding_result),
    "pooled_dim": int(pooled_output.shape[-1]), "epochs": len(history), "global_step": strategy.global_step,
    "strategy_epoch": strategy.epoch, "predict": task.predict(["the cat excellent"])[0][0] in (0, 1),
    "hub_default": type(hub.AdamWeightDecayStrategy()).__name__,
}))
'''

def test_seed_example_runs_as_written_and_its_strategy_fine_tunes(tmp_path):
    env = hub_installed_with_weights(tmp_path, bert_init(LEARN_CONFIG), LEARN_CONFIG)
    script = textwrap.dedent(SEED_EXAMPLE) + textwrap.dedent(FINETUNE_AFTER)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False,
                            stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    facts = json.loads(line[len("RESULT "):])
    assert facts == {"strategy": "ULMFiTStrategy", "params_layer": 5 + 16 * LEARN_CONFIG.num_hidden_layers + 2,
                     "embeddings": 2, "pooled_dim": LEARN_CONFIG.hidden_size, "epochs": 2, "global_step": 4,
                     "strategy_epoch": 1, "predict": True, "hub_default": "AdamWeightDecayStrategy"}
    assert "running on CPU" in result.stderr  # use_gpu=True fell back, and said so
