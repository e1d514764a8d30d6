"""Where this package keeps what it derives from its inputs: exported inference models and compiled kernels."""

import os

from .weights import hub_home

__all__ = ["CACHE_ENV", "default_cache_dir"]

CACHE_ENV = "BERT_CASED_L_24_H_1024_A_16_CACHE"


def default_cache_dir():
    """``$BERT_CASED_L_24_H_1024_A_16_CACHE`` if set, else ``$HUB_HOME/cache/bert_cased_L_24_H_1024_A_16``
    (``HUB_HOME`` defaults to ``~/.paddlehub``)."""
    if os.environ.get(CACHE_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV]))
    return os.path.join(hub_home(), "cache", "bert_cased_L_24_H_1024_A_16")
