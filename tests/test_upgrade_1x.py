"""Upgrading from the 1.x module: its installed folder (prefixed parameter files), the `upgrade` command that
carries those weights past `hub install`, checkpoints of another casing, and the --allow-pickle message."""

import json
import logging
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from bert_cased_L_24_H_1024_A_16 import cli, weights
from bert_cased_L_24_H_1024_A_16.config import BertConfig
from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge
from bert_cased_L_24_H_1024_A_16.weights import legacy
from bert_cased_L_24_H_1024_A_16.weights.names import huggingface_names

from conftest import PACKAGE_VOCAB, TINY_CONFIGS, clean_clone, offline_hub_home, random_arrays, tree_digest

CONFIG = TINY_CONFIGS["tiny"]
PREFIX = "@HUB_bert_cased_L-24_H-1024_A-16@"  # spelled out, as the 1.x build script wrote it
MODULE_FOLDER = "bert_cased_L_24_H_1024_A_16"


def fake_1x_install(modules_dir, arrays, config=CONFIG, vocab_bytes=None):
    """What `hub install bert_cased_L-24_H-1024_A-16==1.1.0` left: module.py and assets/ with prefixed params."""
    module_dir = modules_dir / MODULE_FOLDER
    legacy.write_params_dir(str(module_dir / "assets" / "params"), {PREFIX + name: a for name, a in arrays.items()})
    config.to_json_file(str(module_dir / "assets" / "bert_config.json"))
    (module_dir / "assets" / "vocab.txt").write_bytes(vocab_bytes or PACKAGE_VOCAB.read_bytes())
    (module_dir / "module.py").write_text("# the 1.x module's code\n")
    return module_dir


def assert_same(got, want):
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# -- the installed 1.x module, as a folder and as a tar ------------------------------------------------------------

@pytest.mark.parametrize("form", ["module folder", "assets folder", "module tar", "assets tar"])
def test_installed_1x_module_with_prefixed_names_converts(tmp_path, form):
    arrays = random_arrays(CONFIG, seed=21)
    module_dir = fake_1x_install(tmp_path / "modules", arrays)
    path = module_dir if form.startswith("module") else module_dir / "assets"
    if form.endswith("tar"):
        archive = tmp_path / "upload.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(str(path), arcname=path.name)
        path = archive
    dest = weights.convert(str(path), str(tmp_path / "weights"))
    config, installed = weights.load_weights(dest)
    assert config == CONFIG
    assert_same(installed, arrays)
    assert sorted(os.listdir(os.path.join(dest, "params"))) == sorted(arrays)  # installed without the prefix


def test_a_parameter_both_prefixed_and_bare_is_refused(tmp_path):
    arrays = random_arrays(CONFIG, seed=22)
    module_dir = fake_1x_install(tmp_path / "modules", arrays)
    legacy.write_params_dir(str(module_dir / "assets" / "params"), {"pooled_fc.b_0": arrays["pooled_fc.b_0"]})
    with pytest.raises(weights.WeightsError, match="pooled_fc.b_0 is there twice"):
        weights.read_checkpoint(str(module_dir))


# -- upgrade: weights carried out of modules/ before hub install removes them ---------------------------------------

def test_upgrade_refuses_a_weights_folder_inside_the_module(tmp_path, capsys):
    module_dir = fake_1x_install(tmp_path / "modules", random_arrays(CONFIG, seed=23))
    before = tree_digest(module_dir)
    assert cli.main(["upgrade", "--from", str(module_dir), "--dest", str(module_dir / "weights")]) == 1
    assert "which `hub install` removes" in capsys.readouterr().err
    assert tree_digest(module_dir) == before


def test_upgrade_from_a_1x_install_keeps_its_weights(tmp_path):
    pytest.importorskip("paddlehub")
    home = offline_hub_home(tmp_path / "hub_home")
    arrays = random_arrays(CONFIG, seed=24)
    module_dir = fake_1x_install(home / "modules", arrays)
    clean_clone(tmp_path / "src" / MODULE_FOLDER)
    env = dict(os.environ, HUB_HOME=str(home), PYTHONPATH=str(tmp_path / "src"))
    env.pop(weights.WEIGHTS_ENV, None)
    run = dict(env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path)
    done = subprocess.run([sys.executable, "-m", MODULE_FOLDER, "upgrade"], **run)
    assert done.returncode == 0, done.stdout + done.stderr
    carried = home / "weights" / MODULE_FOLDER
    assert f"its 1.x weights are in {carried}" in done.stdout
    # hub install replaced the 1.x folder (its weights with it) by this module ...
    assert not (module_dir / "assets" / "params").exists()
    assert "class BertCasedLarge" in (module_dir / "module.py").read_text()
    # ... and the weights live on outside it, where the installed module finds them.
    config, installed = weights.load_weights(str(carried))
    assert config == CONFIG
    assert_same(installed, arrays)
    found = subprocess.run([sys.executable, "-c", "import paddlehub as hub; "
                            "print(hub.Module(name='bert_cased_L-24_H-1024_A-16').weights_dir)"], **run)
    assert found.returncode == 0, found.stdout + found.stderr
    assert found.stdout.strip().splitlines()[-1] == str(carried)


# -- casing --------------------------------------------------------------------------------------------------------

UNCASED_WORDS = ["hello", "world", ",", ".", "!", "cafe", "naive", "the", "paris", "is", "in", "france", "res",
                 "##ume", "##s", "un", "##related", *"abcdefghijklmnopqrstuvwxyz",
                 *("##" + c for c in "abcdefghijklmnopqrstuvwxyz")]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = ["Hello World, CAFÉ! Naïve Résumés in PARIS", "unrelated Xyz.", "THE paris"]


def small_config(vocab):
    return BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64)


def _checkpoint(root, form, vocab):
    """A tiny checkpoint of ``form`` over ``vocab``; returns its path."""
    config = small_config(vocab)
    arrays = random_arrays(config, seed=25)
    root.mkdir(parents=True)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    if form == "huggingface":
        from safetensors.numpy import save_file

        save_file({"bert." + hf: np.ascontiguousarray(arrays[name].T if transpose else arrays[name])
                   for name, (hf, transpose) in huggingface_names(config).items()}, str(root / "model.safetensors"))
        (root / "config.json").write_text(json.dumps(dict(config.to_dict(), model_type="bert")))
        (root / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
        return root
    legacy.write_params_dir(str(root / "params"), arrays)
    values = config.to_dict()
    if form == "1.x bert_config":
        values["do_lower_case"] = True
    (root / "bert_config.json").write_text(json.dumps(values))
    return root


@pytest.mark.parametrize("form, told_by", [("huggingface", "tokenizer_config.json"),
                                           ("1.x bert_config", "bert_config.json"),
                                           ("vocabulary", "the vocabulary")])
def test_an_uncased_checkpoint_tokenizes_as_the_uncased_reference(tmp_path, capsys, form, told_by):
    transformers = pytest.importorskip("transformers")
    vocab = SPECIALS + UNCASED_WORDS
    if form != "vocabulary":  # an upper-case piece: only what the files state can say uncased
        vocab.append("X")
    source = _checkpoint(tmp_path / "source", form, vocab)
    dest = weights.convert(str(source), str(tmp_path / "weights"))
    manifest = weights.read_manifest(dest)
    assert manifest["do_lower_case"] is True and told_by in manifest["casing_told_by"]

    reference = transformers.BertTokenizer(str(source / "vocab.txt"), do_lower_case=True)
    tokenizer = BertCasedLarge(weights_dir=dest).tokenizer
    for text in TEXTS:
        assert tokenizer.tokenize(text) == reference.tokenize(text), text
        assert tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)) == reference.encode(
            text, add_special_tokens=False)
    assert "[UNK]" not in tokenizer.tokenize(TEXTS[0])

    assert cli.main(["info", "--dest", dest]) == 0
    assert "tokenizer:    uncased (lower-cases and strips accents), told by" in capsys.readouterr().out


def test_a_cased_vocabulary_stays_cased_and_an_untold_one_warns(tmp_path, caplog):
    cased = weights.convert(str(_checkpoint(tmp_path / "cased", "1.x", SPECIALS + UNCASED_WORDS + ["Paris"])),
                            str(tmp_path / "w1"))
    assert weights.read_manifest(cased)["do_lower_case"] is False
    assert BertCasedLarge(weights_dir=cased).tokenizer.tokenize("Paris") == ["Paris"]

    digits = SPECIALS + [str(i) for i in range(40)] + [",", "."]
    with caplog.at_level(logging.WARNING):
        untold = weights.convert(str(_checkpoint(tmp_path / "untold", "1.x", digits)), str(tmp_path / "w2"))
    assert "cannot tell whether this checkpoint lower-cases" in caplog.text
    assert weights.read_manifest(untold)["do_lower_case"] is False


def test_a_1x_assets_folder_without_manifest_is_tokenized_by_its_stated_casing(tmp_path):
    folder = _checkpoint(tmp_path / "assets", "1.x bert_config", SPECIALS + UNCASED_WORDS + ["X"])
    assert weights.read_manifest(str(folder)) is None
    assert BertCasedLarge(weights_dir=str(folder)).tokenizer.do_lower_case is True


# -- pickles -------------------------------------------------------------------------------------------------------

def test_a_refused_pickle_names_the_switch_of_each_interface(tmp_path, capsys):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dict(CONFIG.to_dict(), model_type="bert")))
    (folder / "pytorch_model.bin").write_bytes(b"not read before consent")
    with pytest.raises(weights.PickleRefusedError, match="pass allow_pickle=True"):
        weights.read_checkpoint(str(folder))
    assert cli.main(["convert", str(folder), "--dest", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert "pass --allow-pickle" in err and "allow_pickle" not in err
