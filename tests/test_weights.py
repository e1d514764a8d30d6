"""Tests of the weights package: every checkpoint format, the checks, atomic install and finding weights.

Everything runs on a tiny configuration; tests needing paddle, torch or transformers skip without them.
"""

import hashlib
import importlib.util
import io
import math
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest

from bert_cased_L_24_H_1024_A_16 import weights
from bert_cased_L_24_H_1024_A_16.config import BertConfig
from bert_cased_L_24_H_1024_A_16.weights import MissingWeightsError, WeightsError, legacy, store
from bert_cased_L_24_H_1024_A_16.weights.names import legacy_parameter_shapes

TINY = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

needs_torch = pytest.mark.skipif(
    not (importlib.util.find_spec("torch") and importlib.util.find_spec("transformers")),
    reason="needs torch and transformers")


def paddle_core():
    paddle = pytest.importorskip("paddle")
    return paddle, paddle.base.core


def random_arrays(config=TINY, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32)
            for name, shape in legacy_parameter_shapes(config).items()}


def assert_same_arrays(got, want):
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == np.float32, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def write_vocab(path, size=TINY.vocab_size, specials=SPECIALS):
    tokens = list(specials) + [f"tok{i}" for i in range(size - len(specials))]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    return write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")


@pytest.fixture
def installed(tmp_path, vocab_file):
    """A previous install at tmp_path/hub/bert, and a function telling whether it is untouched."""
    dest = tmp_path / "hub" / "bert"
    arrays = random_arrays(seed=1)
    weights.install(arrays, TINY, vocab_file, str(dest), {"format": "test"})
    before = snapshot(dest)

    def untouched():
        assert snapshot(dest) == before
        assert sorted(os.listdir(dest.parent)) == [".bert.lock", "bert"], "stray temporary folders"
        assert_same_arrays(weights.load_weights(str(dest))[1], arrays)
        return True

    return dest, untouched


def snapshot(folder):
    """{relative path: (size, mtime_ns, sha256)} of every file under folder."""
    result = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            st = os.stat(path)
            result[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns, digest)
    return result


def make_assets(folder, vocab_file, config=TINY, with_config=True, seed=2):
    """A 1.x assets folder (params/, vocab.txt, bert_config.json) of random weights; returns the arrays."""
    arrays = random_arrays(config, seed)
    weights.write_params_dir(str(folder / "params"), arrays)
    shutil.copyfile(vocab_file, folder / "vocab.txt")
    if with_config:
        config.to_json_file(str(folder / "bert_config.json"))
    return arrays


# ---------------------------------------------------------------- the 1.x per-parameter file

@pytest.mark.parametrize("shape", [(3, 4), (7,), (0, 3), (), (2, 3, 5)])
def test_float32_file_is_byte_identical_to_paddles(tmp_path, shape):
    paddle, core = paddle_core()
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    weights.write_dense_tensor(str(ours), array)
    tensor = core.DenseTensor()
    tensor.set(array, paddle.CPUPlace())
    core.save_dense_tensor(tensor, str(theirs))
    assert ours.read_bytes() == theirs.read_bytes()
    loaded = core.DenseTensor()
    core.load_dense_tensor(loaded, str(ours))
    np.testing.assert_array_equal(np.array(loaded), array)


@pytest.mark.parametrize("dtype", [np.bool_, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64])
def test_every_dtype_round_trips_with_paddle(tmp_path, dtype):
    paddle, core = paddle_core()
    array = (np.arange(24).reshape(2, 3, 4) % 7 - 3).astype(dtype)
    tensor = core.DenseTensor()
    tensor.set(array, paddle.CPUPlace())
    core.save_dense_tensor(tensor, str(tmp_path / "theirs"))
    got = weights.read_dense_tensor(str(tmp_path / "theirs"))
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)

    weights.write_dense_tensor(str(tmp_path / "ours"), array)
    loaded = core.DenseTensor()
    core.load_dense_tensor(loaded, str(tmp_path / "ours"))
    np.testing.assert_array_equal(np.array(loaded), array)
    assert np.array(loaded).dtype == array.dtype


def test_reads_lod_and_packed_dims(tmp_path):
    paddle, core = paddle_core()
    tensor = core.DenseTensor()
    tensor.set(np.arange(3, dtype=np.int64), paddle.CPUPlace())
    tensor.set_lod([[0, 2, 3]])
    core.save_dense_tensor(tensor, str(tmp_path / "lod"))
    np.testing.assert_array_equal(weights.read_dense_tensor(str(tmp_path / "lod")), np.arange(3))

    desc = bytes([0x08, 5, 0x12, 2, 2, 3])  # data_type FP32, dims packed [2, 3]
    data = np.arange(6, dtype="<f4").tobytes()
    (tmp_path / "packed").write_bytes(struct.pack("<IQIi", 0, 0, 0, len(desc)) + desc + data)
    np.testing.assert_array_equal(weights.read_dense_tensor(str(tmp_path / "packed")),
                                  np.arange(6, dtype=np.float32).reshape(2, 3))


def _header(desc, version=0, tensor_version=0):
    return struct.pack("<IQIi", version, 0, tensor_version, len(desc)) + desc


_GOOD = _header(bytes([0x08, 5, 0x10, 2, 0x10, 3])) + bytes(24)


@pytest.mark.parametrize("content, message", [
    (_GOOD[:-1], "truncated"),
    (_GOOD[:10], "truncated header"),
    (_GOOD + b"\0", "unexpected bytes after the data"),
    (_header(bytes([0x08, 5, 0x10, 2]), version=7) + bytes(8), "version 7"),
    (_header(bytes([0x08, 5, 0x10, 2]), tensor_version=3) + bytes(8), "tensor version 3"),
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a 1.x parameter file"),
    (_header(bytes([0x08, 5, 0x10])) + bytes(8), "garbage header"),
    (_header(bytes([0x08, 22, 0x10, 2])) + bytes(4), "unknown data_type 22"),
], ids=["truncated data", "truncated header", "trailing bytes", "bad version", "bad tensor version", "png",
        "bad varint", "unknown dtype"])
def test_bad_parameter_file_is_named_and_explained(tmp_path, content, message):
    path = tmp_path / "encoder_layer_0_ffn_fc_0.w_0"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message) as error:
        weights.read_dense_tensor(str(path))
    assert str(path) in str(error.value)


def test_params_dir_gives_float32_and_skips_foreign_files(tmp_path, caplog):
    arrays = random_arrays()
    halves = dict(arrays, word_embedding=arrays["word_embedding"].astype(np.float16),
                  pooled_fc_b_0_moment=np.zeros(3, np.float32))
    weights.write_params_dir(str(tmp_path), halves)
    got = weights.read_params_dir(str(tmp_path), TINY)
    assert_same_arrays(got, dict(arrays, word_embedding=arrays["word_embedding"].astype(np.float16)
                                 .astype(np.float32)))
    assert "pooled_fc_b_0_moment" in caplog.text

    weights.write_dense_tensor(str(tmp_path / "pooled_fc.b_0"), np.zeros(TINY.hidden_size, np.int64))
    with pytest.raises(WeightsError, match="pooled_fc.b_0.*floating point"):
        weights.read_params_dir(str(tmp_path), TINY)


# ---------------------------------------------------------------- checks

def test_check_arrays_lists_every_problem_in_one_message():
    arrays = random_arrays()
    del arrays["encoder_layer_1_ffn_fc_1.b_0"]
    arrays["encoder_layer_5_ffn_fc_1.b_0"] = np.zeros(32, np.float32)
    arrays["pooled_fc.w_0"] = arrays["pooled_fc.w_0"][:, :16]
    arrays["sent_embedding"][1, 3] = np.nan
    arrays["pos_embedding"] = arrays["pos_embedding"].astype(np.int32)
    with pytest.raises(WeightsError) as error:
        weights.check_arrays(arrays, TINY, source="somewhere")
    message = str(error.value)
    for part in ("somewhere", "1 missing", "encoder_layer_1_ffn_fc_1.b_0", "1 unexpected",
                 "encoder_layer_5_ffn_fc_1.b_0", "pooled_fc.w_0: expected shape (32, 32), got (32, 16)",
                 "sent_embedding: 1 of 64 values are NaN", "pos_embedding: expected floating point"):
        assert part in message


def test_check_vocab(tmp_path):
    weights.check_vocab(write_vocab(tmp_path / "ok.txt"), TINY)
    with pytest.raises(WeightsError, match="has 41 lines.*vocab_size is 40"):
        weights.check_vocab(write_vocab(tmp_path / "long.txt", size=41), TINY)
    with pytest.raises(WeightsError, match=r"special tokens missing: \[MASK\]"):
        weights.check_vocab(write_vocab(tmp_path / "nomask.txt", specials=SPECIALS[:4]), TINY)


def test_importing_weights_imports_neither_paddle_nor_torch():
    code = ("import sys, bert_cased_L_24_H_1024_A_16.weights; "
            "print(sorted(m for m in ('paddle', 'torch', 'safetensors', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- install, load, manifest

def test_install_then_load(tmp_path, vocab_file):
    arrays = random_arrays()
    dest = weights.install(arrays, TINY, vocab_file, str(tmp_path / "w"), {"format": "test", "path": "x"})
    assert dest == str(tmp_path / "w")
    assert sorted(os.listdir(dest)) == ["bert_config.json", "manifest.json", "params", "vocab.txt"]
    assert sorted(os.listdir(tmp_path)) == [".w.lock", "w"]  # The install lock's file stays, empty.
    config, loaded = weights.load_weights(dest)
    assert config == TINY
    assert_same_arrays(loaded, arrays)
    manifest = weights.read_manifest(dest)
    assert manifest["source"] == {"format": "test", "path": "x"}
    assert manifest["parameter_count"] == sum(a.size for a in arrays.values())
    assert manifest["parameter_tensors"] == len(arrays)
    assert manifest["vocab_sha256"] == hashlib.sha256(open(vocab_file, "rb").read()).hexdigest()
    assert manifest["package_version"] == "1.1.0" and "shapes" in manifest["checks_passed"]


def test_install_replaces_a_previous_install(installed, vocab_file):
    dest, _ = installed
    arrays = random_arrays(seed=7)
    weights.install(arrays, TINY, vocab_file, str(dest), {"format": "test"})
    assert_same_arrays(weights.load_weights(str(dest))[1], arrays)
    assert sorted(os.listdir(dest.parent)) == [".bert.lock", "bert"]


def _fail_after(count, exception):
    real, calls = legacy.write_dense_tensor, []

    def write(path, array):
        calls.append(path)
        if len(calls) > count:
            raise exception
        real(path, array)
    return write


@pytest.mark.parametrize("failure", ["misshaped", "nan", "vocab", "disk", "interrupt", "swap"])
def test_failed_install_leaves_the_previous_one_untouched(installed, vocab_file, tmp_path, monkeypatch, failure):
    dest, untouched = installed
    arrays, vocab, expected = random_arrays(seed=3), vocab_file, WeightsError
    if failure == "misshaped":
        arrays["encoder_layer_0_ffn_fc_0.w_0"] = arrays["encoder_layer_0_ffn_fc_0.w_0"].T
    elif failure == "nan":
        arrays["pooled_fc.b_0"][0] = np.inf
    elif failure == "vocab":
        vocab = write_vocab(tmp_path / "short.txt", size=30)
    elif failure == "disk":
        expected = OSError
        monkeypatch.setattr(legacy, "write_dense_tensor", _fail_after(5, OSError(28, "No space left on device")))
    elif failure == "interrupt":
        expected = KeyboardInterrupt
        monkeypatch.setattr(legacy, "write_dense_tensor", _fail_after(5, KeyboardInterrupt()))
    else:
        expected, real_rename = OSError, os.rename

        def rename(src, dst):
            if os.path.basename(src).startswith(".bert.tmp-"):
                raise OSError(5, "I/O error")
            real_rename(src, dst)
        monkeypatch.setattr(store.os, "rename", rename)
    with pytest.raises(expected):
        weights.install(arrays, TINY, vocab, str(dest), {"format": "test"})
    monkeypatch.undo()
    assert untouched()


_KILLED_INSTALL = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from conftest import random_arrays
from bert_cased_L_24_H_1024_A_16 import weights
from bert_cased_L_24_H_1024_A_16.config import BertConfig
from bert_cased_L_24_H_1024_A_16.weights import legacy, store

config = BertConfig(**{config!r})
if {between_renames!r}:  # Die right after the previous weights were renamed away.
    real_rename = os.rename
    def rename(src, dst):
        real_rename(src, dst)
        if ".old-" in dst:
            os.kill(os.getpid(), signal.SIGKILL)
    store.os.rename = rename
else:  # Die halfway through writing the parameter files.
    real_write, written = legacy.write_dense_tensor, []
    def write(path, array):
        written.append(path)
        if len(written) > 5:
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(path, array)
    legacy.write_dense_tensor = write
weights.install(random_arrays(config, seed=9), config, {vocab!r}, {dest!r}, {{"format": "test"}})
"""


@pytest.mark.parametrize("between_renames", [False, True], ids=["while-writing", "between-renames"])
def test_a_killed_install_is_repaired_by_the_next_lookup(installed, vocab_file, monkeypatch, between_renames):
    """SIGKILL leaves no cleanup; the next find_weights restores the previous weights and removes the rest."""
    dest, untouched = installed
    code = _KILLED_INSTALL.format(tests=os.path.dirname(os.path.abspath(__file__)), config=TINY.to_dict(),
                                  between_renames=between_renames, vocab=vocab_file, dest=str(dest))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    left = sorted(name.split("-")[0] for name in os.listdir(dest.parent))
    if between_renames:  # The previous weights are renamed away and the new ones not yet in.
        assert left == [".bert.lock", ".bert.old", ".bert.tmp"]
    else:
        assert left == [".bert.lock", ".bert.tmp", "bert"]
    monkeypatch.setenv(store.WEIGHTS_ENV, str(dest))
    assert weights.find_weights() == str(dest)
    assert untouched()


def test_the_next_install_clears_a_killed_one_and_installs_wait_for_each_other(installed, vocab_file, tmp_path):
    dest, _ = installed
    stale = dest.parent / ".bert.tmp-99999-dead"
    (stale / "params").mkdir(parents=True)
    (stale / "params" / "half_written").write_bytes(b"x" * 100)
    # Another process holds the lock: this install must wait for it, then clear the leftover.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        f"f = open({str(dest.parent / '.bert.lock')!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('locked', flush=True); sys.stdin.readline()\n"
        f"open({str(tmp_path / 'released')!r}, 'w').close()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        arrays = random_arrays(seed=5)
        threading.Timer(0.5, lambda: (holder.stdin.write("go\n"), holder.stdin.flush())).start()
        weights.install(arrays, TINY, vocab_file, str(dest), {"format": "test"})
        assert (tmp_path / "released").exists()  # It did not go ahead while the other held the lock.
    finally:
        holder.wait(timeout=30)
    assert sorted(os.listdir(dest.parent)) == [".bert.lock", "bert"]
    assert_same_arrays(weights.load_weights(str(dest))[1], arrays)


def test_install_refuses_to_replace_other_folders(tmp_path, vocab_file):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(WeightsError, match="not a weights dir"):
        weights.install(random_arrays(), TINY, vocab_file, str(tmp_path / "docs"), {})
    assert os.listdir(tmp_path / "docs") == ["thesis.tex"]
    assert sorted(os.listdir(tmp_path)) == ["docs"]


# ---------------------------------------------------------------- 1.x folders and archives

def test_1x_assets_folder(tmp_path, vocab_file):
    assets = tmp_path / "assets"
    arrays = make_assets(assets, vocab_file, with_config=False)
    with pytest.raises(WeightsError, match="expected shape"):  # no bert_config.json: bert-large by default
        weights.read_checkpoint(str(assets))
    checkpoint = weights.read_checkpoint(str(assets), config=TINY)
    assert checkpoint.source_format == "paddlehub-1.x" and checkpoint.config == TINY
    assert checkpoint.vocab_file == str(assets / "vocab.txt")
    assert_same_arrays(checkpoint.arrays, arrays)

    TINY.to_json_file(str(assets / "bert_config.json"))
    with pytest.raises(WeightsError, match="carries its own configuration.*num_hidden_layers: checkpoint 2, given 3"):
        weights.read_checkpoint(str(assets), config=BertConfig(**dict(TINY.to_dict(), num_hidden_layers=3)))

    dest = weights.convert(str(assets), str(tmp_path / "w"))
    manifest = weights.read_manifest(dest)
    assert manifest["source"]["format"] == "paddlehub-1.x"
    assert manifest["source"]["vocab_from"] == "checkpoint"
    assert manifest["source"]["vocab_matches_package"] is False
    assert_same_arrays(weights.load_weights(dest)[1], arrays)
    assert weights.read_manifest(str(assets)) is None


def _tar(path, entries):
    """Writes a tar.gz from (TarInfo, bytes or None) pairs."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def _file(name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_1x_archive(tmp_path, vocab_file):
    assets = tmp_path / "assets"
    arrays = make_assets(assets, vocab_file)
    archive = tmp_path / "assets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(assets, arcname="assets")
    seen = []
    checkpoint = weights.read_checkpoint(str(archive), progress=lambda *a: seen.append(a))
    assert checkpoint.source_format == "paddlehub-1.x-archive" and checkpoint.config == TINY
    assert_same_arrays(checkpoint.arrays, arrays)
    assert open(checkpoint.vocab_file).read() == open(vocab_file).read()
    assert len(seen) == len(arrays) and seen[-1] == ("read", len(arrays), None)

    dest = weights.convert(str(archive), str(tmp_path / "w"))
    assert weights.read_manifest(dest)["source"]["format"] == "paddlehub-1.x-archive"
    assert_same_arrays(weights.load_weights(dest)[1], arrays)


def _bad_archives(tmp_path, vocab_file):
    assets = tmp_path / "assets"
    make_assets(assets, vocab_file)
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        tar.add(assets, arcname="assets")
    data = good.read_bytes()
    (tmp_path / "truncated.tar.gz").write_bytes(data[:len(data) // 2])
    (tmp_path / "garbage.tar.gz").write_bytes(b"not an archive at all" * 10)
    small = (assets / "params" / "pooled_fc.b_0").read_bytes()
    link = tarfile.TarInfo("assets/params/pooled_fc.w_0")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return {
        "truncated": (str(tmp_path / "truncated.tar.gz"), "corrupt or truncated"),
        "garbage": (str(tmp_path / "garbage.tar.gz"), "corrupt or truncated"),
        "traversal": (_tar(tmp_path / "t.tar.gz", [_file("assets/params/../../evil", small)]), "'..'"),
        "absolute": (_tar(tmp_path / "a.tar.gz", [_file("/tmp/params/pooled_fc.b_0", small)]), "absolute path"),
        "symlink": (_tar(tmp_path / "s.tar.gz", [(link, None)]), "link"),
        "no params": (_tar(tmp_path / "n.tar.gz", [_file("assets/vocab.txt", b"[PAD]\n")]), "found none"),
        "bad member": (_tar(tmp_path / "b.tar.gz", [_file("assets/params/pooled_fc.b_0", small[:-4])]),
                       "pooled_fc.b_0: truncated"),
    }


@pytest.mark.parametrize("kind", ["truncated", "garbage", "traversal", "absolute", "symlink", "no params",
                                  "bad member"])
def test_bad_archive_is_refused_and_install_untouched(installed, tmp_path, vocab_file, kind):
    dest, untouched = installed
    (tmp_path / "src").mkdir()
    path, message = _bad_archives(tmp_path / "src", vocab_file)[kind]
    with pytest.raises(WeightsError, match=message):
        weights.convert(path, str(dest))
    assert untouched()


# ---------------------------------------------------------------- Hugging Face and PaddleNLP

@pytest.fixture(scope="module")
def hf(tmp_path_factory, vocab_file):
    """Tiny random BertModel and BertForPreTraining, saved in several ways; folders and state dicts."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    hf_config = transformers.BertConfig(
        vocab_size=TINY.vocab_size, hidden_size=TINY.hidden_size, num_hidden_layers=TINY.num_hidden_layers,
        num_attention_heads=TINY.num_attention_heads, intermediate_size=TINY.intermediate_size,
        max_position_embeddings=TINY.max_position_embeddings)
    models = {"base": transformers.BertModel(hf_config), "pretraining": transformers.BertForPreTraining(hf_config)}
    root = tmp_path_factory.mktemp("hf")
    folders = {}
    for kind, model in models.items():
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_()
        model.eval()
        for fmt, options in {"safetensors": dict(safe_serialization=True),
                             "pickle": dict(safe_serialization=False),
                             "sharded": dict(safe_serialization=True, max_shard_size="40KB"),
                             "pickle-sharded": dict(safe_serialization=False, max_shard_size="40KB")}.items():
            folder = root / f"{kind}-{fmt}"
            model.save_pretrained(str(folder), **options)
            shutil.copyfile(vocab_file, folder / "vocab.txt")
            folders[kind, fmt] = str(folder)
    states = {"base": {k: v.numpy() for k, v in models["base"].state_dict().items()},
              "pretraining": {k[len("bert."):]: v.numpy() for k, v in models["pretraining"].state_dict().items()
                              if k.startswith("bert.")}}
    return {"models": models, "folders": folders, "states": states, "root": root}


def expected_from_hf(state):
    """1.x arrays from a Hugging Face BertModel state dict, spelled out independently of names.py."""
    out = {"word_embedding": state["embeddings.word_embeddings.weight"],
           "pos_embedding": state["embeddings.position_embeddings.weight"],
           "sent_embedding": state["embeddings.token_type_embeddings.weight"],
           "pre_encoder_layer_norm_scale": state["embeddings.LayerNorm.weight"],
           "pre_encoder_layer_norm_bias": state["embeddings.LayerNorm.bias"],
           "pooled_fc.w_0": state["pooler.dense.weight"].T, "pooled_fc.b_0": state["pooler.dense.bias"]}
    for i in range(TINY.num_hidden_layers):
        p, e = f"encoder.layer.{i}.", f"encoder_layer_{i}_"
        for ours, theirs in [("multi_head_att_query_fc", "attention.self.query"),
                             ("multi_head_att_key_fc", "attention.self.key"),
                             ("multi_head_att_value_fc", "attention.self.value"),
                             ("multi_head_att_output_fc", "attention.output.dense"),
                             ("ffn_fc_0", "intermediate.dense"), ("ffn_fc_1", "output.dense")]:
            out[e + ours + ".w_0"] = state[p + theirs + ".weight"].T
            out[e + ours + ".b_0"] = state[p + theirs + ".bias"]
        for ours, theirs in [("post_att_layer_norm", "attention.output.LayerNorm"),
                             ("post_ffn_layer_norm", "output.LayerNorm")]:
            out[e + ours + "_scale"] = state[p + theirs + ".weight"]
            out[e + ours + "_bias"] = state[p + theirs + ".bias"]
    return out


def numpy_bert(arrays, ids, segments, config=TINY):
    """Reference forward pass (SPEC section 3) on 1.x arrays: (sequence_output, pooled_output) of one sample."""
    def norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + config.layer_norm_eps) * arrays[name + "_scale"] + arrays[name + "_bias"]

    def fc(x, name):
        return x @ arrays[name + ".w_0"] + arrays[name + ".b_0"]

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    x = arrays["word_embedding"][ids] + arrays["pos_embedding"][np.arange(len(ids))] + \
        arrays["sent_embedding"][segments]
    x = norm(x.astype(np.float64), "pre_encoder_layer_norm")
    heads, size = config.num_attention_heads, config.head_size
    for i in range(config.num_hidden_layers):
        e = f"encoder_layer_{i}_"
        q, k, v = (fc(x, e + f"multi_head_att_{n}_fc").reshape(len(ids), heads, size).transpose(1, 0, 2)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        context = (probs / probs.sum(-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(len(ids), -1)
        x = norm(x + fc(context, e + "multi_head_att_output_fc"), e + "post_att_layer_norm")
        x = norm(x + fc(gelu(fc(x, e + "ffn_fc_0")), e + "ffn_fc_1"), e + "post_ffn_layer_norm")
    return x, np.tanh(fc(x[0], "pooled_fc"))


@needs_torch
def test_huggingface_safetensors_matches_the_torch_model(hf):
    import torch

    checkpoint = weights.read_checkpoint(hf["folders"]["base", "safetensors"])
    assert checkpoint.source_format == "huggingface" and checkpoint.config == TINY
    assert checkpoint.vocab_file.endswith("vocab.txt")
    assert_same_arrays(checkpoint.arrays, expected_from_hf(hf["states"]["base"]))
    ids, segments = np.array([2, 17, 9, 33, 3, 21, 3]), np.array([0, 0, 0, 0, 0, 1, 1])
    with torch.no_grad():
        out = hf["models"]["base"](torch.tensor(ids[None]), token_type_ids=torch.tensor(segments[None]))
    sequence, pooled = numpy_bert(checkpoint.arrays, ids, segments)
    np.testing.assert_allclose(sequence, out.last_hidden_state[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(pooled, out.pooler_output[0].numpy(), atol=1e-4)


@needs_torch
@pytest.mark.parametrize("fmt", ["safetensors", "sharded", "pickle", "pickle-sharded"])
def test_huggingface_pretraining_checkpoint_drops_heads(hf, fmt):
    folder = hf["folders"]["pretraining", fmt]
    index = {"sharded": "model.safetensors.index.json", "pickle-sharded": "pytorch_model.bin.index.json"}
    if fmt in index:
        assert os.path.isfile(os.path.join(folder, index[fmt]))
    checkpoint = weights.read_checkpoint(folder, allow_pickle=fmt.startswith("pickle"))
    assert_same_arrays(checkpoint.arrays, expected_from_hf(hf["states"]["pretraining"]))


@needs_torch
def test_huggingface_pickle_needs_consent(hf):
    with pytest.raises(WeightsError, match="pytorch_model.bin is a pickle.*allow_pickle=True"):
        weights.read_checkpoint(hf["folders"]["pretraining", "pickle"])


@needs_torch
def test_huggingface_old_names_buffers_and_strays(hf, tmp_path):
    from safetensors.numpy import save_file

    state = {"bert." + key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"):
             value.copy() for key, value in hf["states"]["pretraining"].items()}
    state["bert.embeddings.position_ids"] = np.arange(TINY.max_position_embeddings)[None]
    state["cls.seq_relationship.bias"] = np.zeros(2, np.float32)
    shutil.copyfile(os.path.join(hf["folders"]["base", "safetensors"], "config.json"), tmp_path / "config.json")
    save_file(state, str(tmp_path / "model.safetensors"))
    checkpoint = weights.read_checkpoint(str(tmp_path))
    assert checkpoint.vocab_file is None
    assert_same_arrays(checkpoint.arrays, expected_from_hf(hf["states"]["pretraining"]))

    state["classifier.weight"] = np.zeros((2, TINY.hidden_size), np.float32)
    del state["bert.pooler.dense.bias"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match="(?s)1 missing.*pooled_fc.b_0.*1 unexpected.*classifier.weight"):
        weights.read_checkpoint(str(tmp_path))


def paddlenlp_state(hf_state):
    """PaddleNLP names for a Hugging Face BertModel state dict (Linear weights transposed to [in, out])."""
    renames = [("encoder.layer.", "encoder.layers."), ("attention.self.query", "self_attn.q_proj"),
               ("attention.self.key", "self_attn.k_proj"), ("attention.self.value", "self_attn.v_proj"),
               ("attention.output.dense", "self_attn.out_proj"), ("attention.output.LayerNorm", "norm1"),
               ("intermediate.dense", "linear1"), ("output.dense", "linear2"), ("output.LayerNorm", "norm2"),
               ("embeddings.LayerNorm", "embeddings.layer_norm")]
    state = {}
    for key, value in hf_state.items():
        linear = key.endswith(".weight") and value.ndim == 2 and not key.startswith("embeddings.")
        for old, new in renames:
            key = key.replace(old, new)
        state["bert." + key] = value.T.copy() if linear else value
    state["cls.predictions.decoder_bias"] = np.zeros(TINY.vocab_size, np.float32)
    return state


@needs_torch
@pytest.mark.parametrize("allow_pickle", [False, True])
def test_paddlenlp_pdparams(hf, tmp_path, allow_pickle):
    paddle, _ = paddle_core()
    path = str(tmp_path / "bert-tiny.pdparams")
    paddle.save({k: paddle.to_tensor(v) for k, v in paddlenlp_state(hf["states"]["base"]).items()}, path)
    checkpoint = weights.read_checkpoint(path, config=TINY, allow_pickle=allow_pickle)
    assert checkpoint.source_format == "paddlenlp" and checkpoint.vocab_file is None
    assert_same_arrays(checkpoint.arrays, expected_from_hf(hf["states"]["base"]))
    with pytest.raises(WeightsError, match="expected shape"):  # bert-large by default
        weights.read_checkpoint(path, allow_pickle=allow_pickle)


class _Sneaky:
    def __reduce__(self):
        return os.getcwd, ()


def test_pdparams_that_is_more_than_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"bert.pooler.dense.bias": _Sneaky()}, protocol=4))
    with pytest.raises(WeightsError, match="refers to posix.getcwd.*allow_pickle=True"):
        weights.read_checkpoint(str(path), config=TINY)
    path.write_bytes(pickle.dumps({"bert.pooler.dense.bias": np.zeros(3)}, protocol=4)[:-20])
    with pytest.raises(WeightsError, match="cannot read PaddleNLP state dict"):
        weights.read_checkpoint(str(path), config=TINY)


@needs_torch
def test_convert_huggingface_then_load(hf, tmp_path):
    seen = []
    dest = weights.convert(hf["folders"]["base", "safetensors"], str(tmp_path / "w"),
                           progress=lambda *a: seen.append(a))
    manifest = weights.read_manifest(dest)
    assert manifest["source"]["format"] == "huggingface" and manifest["source"]["vocab_from"] == "checkpoint"
    config, arrays = weights.load_weights(dest)
    assert config == TINY
    assert_same_arrays(arrays, expected_from_hf(hf["states"]["base"]))
    assert seen[-1] == ("write", len(arrays), len(arrays))


# ---------------------------------------------------------------- finding weights

def test_default_weights_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(store.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    assert weights.default_weights_dir() == str(tmp_path / "hub" / "weights" / "bert_cased_L_24_H_1024_A_16")
    monkeypatch.delenv("HUB_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights.default_weights_dir() == str(tmp_path / ".paddlehub" / "weights" / "bert_cased_L_24_H_1024_A_16")
    monkeypatch.setenv(store.WEIGHTS_ENV, str(tmp_path / "mine"))
    assert weights.default_weights_dir() == str(tmp_path / "mine")


def test_find_weights_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(store.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub"))
    default = tmp_path / "hub" / "weights" / "bert_cased_L_24_H_1024_A_16"
    assets, env = tmp_path / "assets", tmp_path / "env"
    assets.mkdir()

    with pytest.raises(MissingWeightsError) as error:
        weights.find_weights([str(assets)])
    message = str(error.value)
    for part in (str(assets), str(default), "python -m bert_cased_L_24_H_1024_A_16 download",
                 "python -m bert_cased_L_24_H_1024_A_16 convert <path>"):
        assert part in message

    (default / "params").mkdir(parents=True)
    assert weights.find_weights([str(assets)]) == str(default)
    (assets / "params").mkdir()
    assert weights.find_weights([str(assets)]) == str(assets)

    monkeypatch.setenv(store.WEIGHTS_ENV, str(env))
    with pytest.raises(MissingWeightsError, match=f"{store.WEIGHTS_ENV} is set to {env}"):
        weights.find_weights([str(assets)])
    (env / "params").mkdir(parents=True)
    assert weights.find_weights([str(assets)]) == str(env)
