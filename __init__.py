"""BERT-Large, cased (``bert_cased_L-24_H-1024_A-16``) as a PaddleHub module on PaddlePaddle 3.

The hub class lives in :mod:`.module`; this file stays import-light so that the
command line (``python -m bert_cased_L_24_H_1024_A_16``) starts fast and the
tokenizer works without Paddle being imported.
"""

__version__ = "1.1.0"
#: The module's name in PaddleHub (``hub.Module(name=HUB_NAME)``, ``/predict/<HUB_NAME>``).
HUB_NAME = "bert_cased_L-24_H-1024_A-16"

from .device import select_fast_mkl_path

# Before Paddle's MKL makes its first call, which is when it reads the variable.
select_fast_mkl_path()
