"""Fine-tuning memory: tasks created in turn in one process (hyperparameter or k-fold loops) stay bounded."""

import ctypes

import pytest

from bert_cased_L_24_H_1024_A_16.config import BertConfig
from bert_cased_L_24_H_1024_A_16.finetune import RunConfig, TextClassifierTask
from bert_cased_L_24_H_1024_A_16.memory import release_freed_memory
from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge

from conftest import install_weights, random_arrays

# Wide enough that a leaked copy of the Adam moments (about 170 MB) stands far above allocator noise.
CONFIG = BertConfig(hidden_size=512, num_hidden_layers=2, num_attention_heads=8, intermediate_size=1024,
                    max_position_embeddings=64)
TRAIN = [(f"sample number {i} of a small data set", i % 2) for i in range(8)]


def _rss_bytes():
    release_freed_memory()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "malloc_trim"), reason="needs glibc and /proc")
def test_tasks_created_in_turn_do_not_accumulate_memory(tmp_path):
    arrays = random_arrays(CONFIG)
    weight_bytes = sum(a.nbytes for a in arrays.values())
    module = BertCasedLarge(weights_dir=install_weights(arrays, CONFIG, tmp_path / "weights"))
    del arrays
    after_close = []
    for turn in range(4):
        task = TextClassifierTask(module, num_classes=2, max_seq_len=16,
                                  config=RunConfig(num_epoch=1, batch_size=8, shuffle=False))
        task.finetune(TRAIN)
        if turn % 2:  # closed, or only dropped: both give the state back
            task.close()
        del task
        after_close.append(_rss_bytes())
    # A task that kept its Adam moments would add twice the weights each time: four times over the last
    # two tasks. What does stay (programs, allocator caches) measured about 40 MB a task and shrinking.
    growth = after_close[-1] - after_close[1]  # the first task settles the allocators
    assert growth < weight_bytes, f"RSS after each task: {[round(b / 1e6) for b in after_close]} MB " \
                                        f"(weights: {weight_bytes / 1e6:.0f} MB)"
