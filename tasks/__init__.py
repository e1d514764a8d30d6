"""PaddleHub 2.x fine-tuning: the task models behind ``hub.Module(..., task=...)``.

``hub.Module(name="bert_cased_L-24_H-1024_A-16", task="seq-cls" | "token-cls" | "text-matching",
num_classes=..., label_map=..., load_checkpoint=..., suffix=...)`` gives what PaddleHub 2.x's
``bert-large-cased`` gives: a ``paddle.nn.Layer`` over this module's pretrained weights, trained with
``hub.Trainer`` (see :mod:`.models`). Beside it: the paddlenlp tokenizer ``hub.datasets`` needs
(:mod:`.tokenizer`), local-file data sets (:mod:`.datasets`), ULMFiT for this route (:mod:`.ulmfit`)
and what makes ``hub.Trainer`` data-parallel across processes (:mod:`.data_parallel`).

Importing this package is cheap; Paddle, paddlenlp and PaddleHub load on first use.
"""

#: The values of ``task`` besides None (None keeps the module's 1.x API).
TASKS = ("seq-cls", "token-cls", "text-matching")


def build_task_model(module, task, **options):
    """The task model for ``task`` over ``module`` (a ``BertCasedLarge``); see :func:`.models.build`."""
    from .models import build

    return build(module, task, **options)
