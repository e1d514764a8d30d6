"""The paddlenlp tokenizer that PaddleHub 2.x data sets and ``predict`` use, made offline.

``hub.datasets`` accept only a paddlenlp ``PretrainedTokenizer`` instance; paddlenlp's own
``BertTokenizer.from_pretrained("bert-large-cased")`` downloads its vocabulary, so this builds
the same class over the module's cased vocabulary file instead. Its ids equal those of the
module's own tokenizer (:mod:`..tokenizer`); ``tests/test_tasks.py`` checks it.
"""


def paddlenlp_tokenizer(vocab_file):
    """A paddlenlp ``BertTokenizer`` over ``vocab_file``, cased (``do_lower_case=False``)."""
    from paddlenlp.transformers import BertTokenizer

    return BertTokenizer(vocab_file, do_lower_case=False)
