"""PaddleHub 2.x's own demos (tests/demos/, see its README) run against this module, by name, offline.

One subprocess with its own ``HUB_HOME`` (the module copied into ``modules/`` as ``hub install``
leaves it, local data sets under ``dataset/``, tiny weights through the environment) runs each
demo's ``train.py`` then ``predict.py`` as ``__main__``, each in its own working folder, then loads a
task model with ``hub.Module(directory=...)``.
"""

import dataclasses
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from conftest import TINY_CONFIGS, clean_clone, install_weights, offline_hub_home, random_arrays

pytest.importorskip("paddlehub")

DEMOS = pathlib.Path(__file__).resolve().parent / "demos"
NER_LABELS = ["B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "O"]


def _data_sets(dataset_home):
    """Local files in the layout of PaddleHub's ChnSentiCorp, MSRA_NER and LCQMC archives (with headers)."""
    sentiment = ["label\ttext_a", "1\tGreat room and friendly staff", "0\tDirty and noisy", "1\tLovely breakfast",
                 "0\tRude staff, never again", "1\tClean and quiet", "0\tOverpriced and old"]
    ner = ["text_a\tlabel", "\002".join("John lives in Paris".split()) + "\t" + "\002".join(["B-PER", "O", "O",
                                                                                             "B-LOC"]),
           "\002".join("Red Cross helps".split()) + "\t" + "\002".join(["B-ORG", "I-ORG", "O"]),
           "\002".join("Anna met Bob in New York".split()) + "\t" + "\002".join(["B-PER", "O", "B-PER", "O", "B-LOC",
                                                                                 "I-LOC"])]
    matching = ["text_a\ttext_b\tlabel", "How old are you\tWhat is your age\t1", "How old are you\tWhere is Paris\t0",
                "What is a band\tWhat does band mean\t1", "Is it raining\tHow do I cook rice\t0"]
    for name, lines in (("chnsenticorp", sentiment), ("msra_ner", ner), ("lcqmc", matching)):
        folder = dataset_home / name
        folder.mkdir(parents=True)
        for mode in ("train", "dev", "test"):
            (folder / f"{mode}.tsv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


_DRIVER = """
    import os, runpy, sys
    demos, installed = sys.argv[1:]
    for demo in ("text_classification", "sequence_labeling", "text_matching"):
        os.makedirs(demo)
        os.chdir(demo)
        for script, argv in (("train.py", ["--use_gpu", "False"]), ("predict.py", [])):
            print(f"== {demo}/{script}", flush=True)
            sys.argv = [script] + argv
            runpy.run_path(os.path.join(demos, demo, script), run_name="__main__")
        os.chdir("..")
    import paddlehub as hub
    by_directory = hub.Module(directory=installed, task="text-matching")
    print("by directory:", type(by_directory).__name__, by_directory.task)
"""


def test_paddlehub_demos_train_and_predict_with_this_module(tmp_path, monkeypatch):
    config = dataclasses.replace(TINY_CONFIGS["tiny"], max_position_embeddings=128)  # The demos' max_seq_len.
    weights = install_weights(random_arrays(config), config, tmp_path / "weights")
    monkeypatch.setenv("BERT_CASED_L_24_H_1024_A_16_WEIGHTS", weights)
    home = offline_hub_home(tmp_path / "hub_home")
    installed = clean_clone(home / "modules" / "bert_cased_L_24_H_1024_A_16")
    _data_sets(home / "dataset")
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, HUB_HOME=str(home), PYTHONPATH="")  # The module comes from HUB_HOME, by name.
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_DRIVER), str(DEMOS), str(installed)], cwd=work, env=env, capture_output=True, text=True,
                            timeout=600, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for demo in ("text_classification", "sequence_labeling", "text_matching"):
        assert (work / demo / "checkpoint" / "best_model" / "model.pdparams").is_file(), demo
        assert (work / demo / "checkpoint" / "epoch_3" / "model.pdparams").is_file(), demo
    predictions = {demo: output.split(f"== {demo}/predict.py")[1].split("==")[0] for demo in
                   ("text_classification", "sequence_labeling", "text_matching")}
    labels = [line.rsplit("Lable: ", 1)[1] for line in predictions["text_classification"].splitlines()
              if line.startswith("Data: ")]
    assert len(labels) == 3 and set(labels) <= {"negative", "positive"}
    tags = [line.rsplit("Lable: ", 1)[1].split(", ") for line in predictions["sequence_labeling"].splitlines()
            if line.startswith("Data: ")]
    assert [len(t) for t in tags] == [8, 5] and all(set(t) <= set(NER_LABELS) for t in tags)
    matches = [line.rsplit("Label: ", 1)[1] for line in predictions["text_matching"].splitlines()
               if line.startswith("TextA: ")]
    assert len(matches) == 3 and set(matches) <= {"similar", "dissimilar"}
    assert "by directory: TextMatcher text-matching" in output
    assert "Traceback" not in output
