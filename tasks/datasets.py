"""Local tab-separated files as PaddleHub 2.x data sets, with their labels checked first.

PaddleHub's ``TextClassificationDataset`` (``label<TAB>text``), ``SeqLabelingDataset``
(``tokens<TAB>labels``, both joined by ``split_char``) and ``TextMatchingDataset``
(``query<TAB>title<TAB>label``) read local files already, but a label outside ``label_list``
surfaces as a bare ``KeyError`` or ``ValueError`` deep in their conversion. These subclasses take
the same arguments and raise, before converting anything, a ``ValueError`` naming the file, the
line and the label.
"""

from paddlehub.datasets.base_nlp_dataset import SeqLabelingDataset, TextClassificationDataset, TextMatchingDataset

__all__ = ["TextClassificationFiles", "SeqLabelingFiles", "TextMatchingFiles"]


class _CheckedLabels:
    """Mixin over a PaddleHub NLP data set: every example's labels must be in ``label_list``."""

    def _labels_of(self, example):
        return [example.label]

    def _read_file(self, input_file, is_file_with_header=False):
        examples = super()._read_file(input_file, is_file_with_header)
        first_line = 2 if is_file_with_header else 1
        for example in examples:
            for label in self._labels_of(example):
                if label not in self.label_map:
                    raise ValueError(f"{input_file}, line {first_line + example.guid}: label {label!r} is not in "
                                     f"label_list {self.label_list}; fix the file or add the label to label_list")
        return examples


class TextClassificationFiles(_CheckedLabels, TextClassificationDataset):
    """``TextClassificationDataset`` (lines ``label<TAB>text``) with its labels checked."""


class SeqLabelingFiles(_CheckedLabels, SeqLabelingDataset):
    """``SeqLabelingDataset`` (lines ``tokens<TAB>labels``, each joined by ``split_char``) with its labels checked."""

    def _labels_of(self, example):
        return example.label.split(self.split_char)


class TextMatchingFiles(_CheckedLabels, TextMatchingDataset):
    """``TextMatchingDataset`` (lines ``query<TAB>title<TAB>label``) with its labels checked."""
