"""Fine-tuning on the static program: ULMFiT and AdamW strategies, a text-classification task.

``from bert_cased_L_24_H_1024_A_16.finetune import ULMFiTStrategy, TextClassifierTask`` works
with or without PaddleHub. With PaddleHub 2.4 installed, :func:`register_with_paddlehub`
(which the module class calls when it is created) puts the strategies where 1.x code looks
for them, so ``hub.finetune.strategy.ULMFiTStrategy(params_layer=...)`` builds a real strategy.

Importing this package is cheap; the strategies and tasks (and Paddle) load on first use.
"""

import importlib

__all__ = [
    "AdamW",
    "AdamWeightDecayStrategy",
    "ConstantLR",
    "DefaultStrategy",
    "LinearWarmupDecayLR",
    "NoamWarmupLR",
    "RunConfig",
    "SlantedTriangularLR",
    "Strategy",
    "TextClassifierTask",
    "ULMFiTStrategy",
    "read_labeled_file",
    "register_with_paddlehub",
]

_LAZY = {
    "Strategy": "strategy", "DefaultStrategy": "strategy", "AdamWeightDecayStrategy": "strategy",
    "ULMFiTStrategy": "strategy", "SlantedTriangularLR": "strategy", "LinearWarmupDecayLR": "strategy",
    "NoamWarmupLR": "strategy", "ConstantLR": "strategy", "OPTIMIZER_NAMES": "strategy",
    "AdamW": "adamw", "TextClassifierTask": "task", "RunConfig": "run_config", "read_labeled_file": "reader",
}

#: What :func:`register_with_paddlehub` installs into ``paddlehub.finetune.strategy``.
HUB_STRATEGIES = ("ULMFiTStrategy", "AdamWeightDecayStrategy", "DefaultStrategy")


def __getattr__(name):  # PEP 562: load the heavy parts on first use.
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_placeholder(value):
    """PaddleHub 2.4 keeps 1.x names as ``lambda ...: 0`` placeholders."""
    return getattr(value, "__name__", None) == "<lambda>"


def is_package_class(value, names, module):
    """Whether ``value`` is a class named in ``names`` from this package's ``finetune.<module>``, in this copy
    of the package or another (installed vs. editable)."""
    return (isinstance(value, type) and value.__name__ in names
            and str(getattr(value, "__module__", "")).endswith(f".finetune.{module}"))


def register_with_paddlehub():
    """Makes ``paddlehub.finetune.strategy.{ULMFiTStrategy, AdamWeightDecayStrategy, DefaultStrategy}`` ours.

    PaddleHub 2.4 keeps ``hub.finetune`` as an ``EasyDict`` whose ``strategy.ULMFiTStrategy``
    is a placeholder returning 0; this sets those attributes (and the top-level
    ``hub.ULMFiTStrategy`` / ``hub.AdamWeightDecayStrategy`` placeholders) to this package's
    classes, and fills in the rest of the 1.x fine-tuning API with :func:`.hub1x.register`
    (``hub.RunConfig`` keeping its strategy, ``hub.reader.ClassifyReader``, ``hub.TextClassifierTask``,
    ``paddlehub.dataset.base_nlp_dataset``). Attributes that hold anything other than a placeholder or
    one of our classes are left alone. Idempotent; returns True when PaddleHub is importable and was updated, False
    when it is not installed (or fails to import).
    """
    try:
        import paddlehub
    except Exception:  # noqa: BLE001 - any broken PaddleHub install just means "no hub integration".
        return False
    from . import strategy as ours

    finetune = getattr(paddlehub, "finetune", None)
    namespace = getattr(finetune, "strategy", None) if finetune is not None else None
    if namespace is None:
        return False
    for name in HUB_STRATEGIES:
        current = getattr(namespace, name, None)
        if current is None or _is_placeholder(current) or is_package_class(current, HUB_STRATEGIES, "strategy"):
            # EasyDict mirrors attributes and items; setattr keeps both in step.
            setattr(namespace, name, getattr(ours, name))
    for name in ("ULMFiTStrategy", "AdamWeightDecayStrategy"):
        if _is_placeholder(getattr(paddlehub, name, None)):
            setattr(paddlehub, name, getattr(ours, name))
    try:
        from . import hub1x
    except ImportError:  # a PaddleHub without the 2.4 compat package: its 1.x names are not ours to fill
        return True
    hub1x.register()
    return True
