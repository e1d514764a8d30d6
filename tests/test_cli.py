"""The command line: ``convert`` and ``info`` (in process), ``python -m`` (subprocess), and ``hub run`` end to end
against a hub-installed clean copy of the repository with tiny weights (subprocesses, isolated HUB_HOME)."""

import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from bert_cased_L_24_H_1024_A_16 import cli, weights
from bert_cased_L_24_H_1024_A_16.config import BertConfig
from bert_cased_L_24_H_1024_A_16.weights import legacy
from bert_cased_L_24_H_1024_A_16.weights.names import paddlenlp_names

from conftest import (PACKAGE_VOCAB, TINY_CONFIGS, clean_clone, hf_arrays, hf_model, hub_executable, install_leftovers,
                      offline_hub_home, random_arrays, tree_digest)

WEIGHTS_ENV = "BERT_CASED_L_24_H_1024_A_16_WEIGHTS"
HUB_NAME = "bert_cased_L-24_H-1024_A-16"
CONFIG = TINY_CONFIGS["tiny"]
# The tiny network the hub-installed module runs: the release's vocabulary and 512 positions, so that every
# default (max_seq_len 512) holds.
HUB_TINY_CONFIG = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def no_weights_env(tmp_path, monkeypatch):
    """No weights anywhere the package looks: env var unset, HUB_HOME empty."""
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "hub_home"))
    return tmp_path


# -- convert -----------------------------------------------------------------------------------------------------

def _legacy_folder(root, arrays):
    assets = root / "assets"
    legacy.write_params_dir(str(assets / "params"), arrays)
    CONFIG.to_json_file(str(assets / "bert_config.json"))
    (assets / "vocab.txt").write_bytes(PACKAGE_VOCAB.read_bytes())
    return assets


def _checkpoint(kind, root):
    """``(path, expected arrays, extra argv)`` of a small checkpoint of ``kind`` under ``root``."""
    if kind in ("legacy-folder", "legacy-archive"):
        arrays = random_arrays(CONFIG, seed=4)
        assets = _legacy_folder(root, arrays)
        if kind == "legacy-folder":
            return assets, arrays, []
        archive = root / "assets.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(str(assets), arcname="assets")
        return archive, arrays, []
    if kind == "huggingface":
        model = hf_model(CONFIG, seed=5)
        model.save_pretrained(str(root / "hf"), safe_serialization=True)
        (root / "hf" / "vocab.txt").write_bytes(PACKAGE_VOCAB.read_bytes())
        return root / "hf", hf_arrays(model, CONFIG), []
    import paddle

    arrays = random_arrays(CONFIG, seed=6)
    path = root / "bert-large-cased.pdparams"
    paddle.save({"bert." + nlp: paddle.to_tensor(arrays[name]) for name, (nlp, _) in paddlenlp_names(CONFIG).items()},
                str(path))
    config_file = root / "tiny_config.json"
    CONFIG.to_json_file(str(config_file))
    return path, arrays, ["--config", str(config_file)]


@pytest.mark.parametrize("kind", ["legacy-folder", "legacy-archive", "huggingface", "paddlenlp"])
def test_convert_installs_each_local_format(no_weights_env, capsys, kind):
    root = no_weights_env
    path, expected, extra = _checkpoint(kind, root)
    dest = root / "weights"
    assert cli.main(["convert", str(path), "--dest", str(dest), *extra]) == 0, capsys.readouterr().err
    config, arrays = weights.load_weights(str(dest))
    assert config == CONFIG and sorted(arrays) == sorted(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(arrays[name], array)
    out = capsys.readouterr().out
    assert f"installed the weights from {path} in {dest}" in out
    assert f"set {WEIGHTS_ENV}={dest}" in out  # not the default place: says how to use it


def test_convert_to_the_default_place_is_found_by_info(no_weights_env, capsys, monkeypatch):
    path, _, _ = _checkpoint("legacy-folder", no_weights_env)
    assert cli.main(["convert", str(path)]) == 0
    default = no_weights_env / "hub_home" / "weights" / "bert_cased_L_24_H_1024_A_16"
    out = capsys.readouterr().out
    assert f"in {default}" in out and WEIGHTS_ENV not in out
    assert cli.main(["info"]) == 0
    info = capsys.readouterr().out
    assert f"weights dir:  {default}\n" in info
    assert "source:       paddlehub-1.x, installed " in info
    assert f"  from {path}" in info
    assert "vocabulary:   from the checkpoint; same as the package's" in info
    assert "checks passed at install: names, shapes, dtypes, finite, vocab_size, special_tokens" in info
    assert "config:       hidden 32, 2 layers, 4 heads, intermediate 64, vocab 28996" in info

    assert cli.main(["info", "--json", "--verify"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["weights_dir"] == str(default) and document["used_by_module"] is True
    assert document["manifest"]["source"]["format"] == "paddlehub-1.x"
    assert document["verified"] == ["names", "shapes", "dtypes", "finite", "vocab_size", "special_tokens"]
    assert document["config"]["hidden_size"] == 32


@pytest.mark.parametrize("problem, expected", [
    ("missing", "error: no such file or folder: "),
    ("empty-folder", "is neither a weights/1.x assets folder"),
    ("bad-config", "error: cannot use --config "),
    ("wrong-shapes", "do not fit the configuration"),
])
def test_a_failed_convert_is_one_clear_error_and_leaves_the_install_as_it_was(no_weights_env, capsys, problem,
                                                                               expected):
    root = no_weights_env
    dest = root / "weights"
    weights.install(random_arrays(CONFIG, seed=8), CONFIG, str(PACKAGE_VOCAB), str(dest), {"format": "before"})
    digest = tree_digest(dest)
    argv = {"missing": ["convert", str(root / "nothing-here")],
            "empty-folder": ["convert", str(root)],
            "bad-config": ["convert", str(root), "--config", str(root / "nope.json")],
            "wrong-shapes": None}[problem]
    if argv is None:
        odd = TINY_CONFIGS["odd"]
        (root / "odd").mkdir()
        legacy.write_params_dir(str(root / "odd" / "params"), random_arrays(odd))
        config_file = root / "tiny.json"
        CONFIG.to_json_file(str(config_file))
        argv = ["convert", str(root / "odd"), "--config", str(config_file)]
    assert cli.main([*argv, "--dest", str(dest)]) == 1
    assert expected in capsys.readouterr().err
    assert tree_digest(dest) == digest
    assert not install_leftovers(dest)


def test_info_without_weights_names_the_commands(no_weights_env, capsys):
    assert cli.main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: No pretrained weights found")
    assert "`python -m bert_cased_L_24_H_1024_A_16 download`" in err
    assert "`python -m bert_cased_L_24_H_1024_A_16 convert <path>`" in err
    assert "Traceback" not in err
    assert cli.main(["info", "--dest", str(no_weights_env)]) == 1
    assert "holds no weights (no params/ folder)" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [[], ["download", "--source", "nowhere"], ["download", "--timeout", "0"],
                                  ["download", "--retries", "-1"], ["convert"], ["frobnicate"]])
def test_usage_errors_exit_2(capsys, argv):
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_python_m_runs_the_cli_without_importing_paddle(tmp_path):
    dest = tmp_path / "weights"
    weights.install(random_arrays(CONFIG), CONFIG, str(PACKAGE_VOCAB), str(dest), {"format": "test"})
    env = dict(os.environ, HUB_HOME=str(tmp_path / "home"))
    env.pop(WEIGHTS_ENV, None)
    result = subprocess.run([sys.executable, "-m", "bert_cased_L_24_H_1024_A_16", "info", "--dest", str(dest)],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"weights dir:  {dest}  (the module uses none)" in result.stdout
    code = ("import sys; from bert_cased_L_24_H_1024_A_16 import cli; "
            f"code = cli.main(['info', '--dest', {str(dest)!r}]); "
            "print('heavy:', sorted(m for m in ('paddle', 'torch', 'paddlehub', 'flask') if m in sys.modules)); "
            "sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout


# -- output files (in process, no model) -------------------------------------------------------------------------

def _fake_results(samples, hidden=3):
    rng = np.random.default_rng(0)
    return [[rng.normal(size=hidden).astype(np.float32), rng.normal(size=(2 + len(s) * 2, hidden)).astype(np.float32)]
            for s in samples]


@pytest.mark.parametrize("extension", [".npz", ".npy", ".jsonl"])
def test_write_features_in_each_format(tmp_path, extension):
    samples = [["Hello"], ["a", "b"], ["ünïcode"]]
    results = _fake_results(samples)
    path = tmp_path / ("features" + extension)
    cli.write_features(str(path), extension[1:], samples, results)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    if extension == ".npy":
        np.testing.assert_array_equal(np.load(path), np.stack([p for p, _ in results]))
    elif extension == ".npz":
        with np.load(path) as npz:  # no pickle needed
            np.testing.assert_array_equal(npz["pooled_output"], np.stack([p for p, _ in results]))
            parts = np.split(npz["sequence_output"], np.cumsum(npz["num_tokens"])[:-1])
            for part, (_, sequence) in zip(parts, results):
                np.testing.assert_array_equal(part, sequence)
            assert npz["text_a"].tolist() == ["Hello", "a", "ünïcode"] and npz["text_b"].tolist() == ["", "b", ""]
    else:
        items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert [item["text_a"] for item in items] == ["Hello", "a", "ünïcode"] and items[1]["text_b"] == "b"
        for item, (pooled, sequence) in zip(items, results):
            np.testing.assert_allclose(item["pooled_output"], pooled, rtol=1e-6)
            np.testing.assert_allclose(item["sequence_output"], sequence, rtol=1e-6)
            assert item["num_tokens"] == sequence.shape[0]


def test_read_input_file(tmp_path):
    path = tmp_path / "in.tsv"
    path.write_bytes("\ufeffone text\r\n\r\n  \nfirst\tsecond\nform\x0cfeed and\u2028separator".encode("utf-8"))
    assert cli.read_input_file(str(path)) == [["one text"], ["first", "second"], ["form\x0cfeed and\u2028separator"]]
    path.write_text("a\tb\tc\n", encoding="utf-8")
    with pytest.raises(cli.CommandError, match="line 1: 3 tab-separated fields"):
        cli.read_input_file(str(path))
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(cli.CommandError, match="has no texts"):
        cli.read_input_file(str(path))


# -- hub run, end to end ------------------------------------------------------------------------------------------

def hub_installation(tmp_path_factory):
    """``(env, root)``: an offline HUB_HOME in which a clean copy of the repository is hub-installed, and tiny
    weights (HUB_TINY_CONFIG) the env points the module at. Built once per test session (test_serving reuses it);
    built in a temporary folder and renamed into place, so a failed build is not reused."""
    root = tmp_path_factory.getbasetemp() / "hub-installation"
    if not (root / "ready").exists():
        build = tmp_path_factory.mktemp("hub-installation-build")
        clean_clone(build / "clone")
        offline_hub_home(build / "home")
        weights.install(random_arrays(HUB_TINY_CONFIG, seed=11), HUB_TINY_CONFIG, str(PACKAGE_VOCAB),
                        str(build / "weights"), {"format": "test"})
        env = _hub_env(build)
        result = subprocess.run([hub_executable(), "install", str(build / "clone")], env=env, capture_output=True,
                                text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stdout + result.stderr
        (build / "ready").write_text("ok")
        if root.exists():
            shutil.rmtree(root)
        build.rename(root)
        # PaddleHub keeps the module's absolute folder nowhere, so the renamed HUB_HOME still works.
    return _hub_env(root), root


def _hub_env(root):
    env = dict(os.environ, HUB_HOME=str(root / "home"), **{WEIGHTS_ENV: str(root / "weights")})
    env.pop("PYTHONPATH", None)
    return env


def hub(env, *args, cwd=None, timeout=300):
    return subprocess.run([hub_executable(), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=cwd)


@pytest.fixture(scope="module")
def hub_env(tmp_path_factory):
    pytest.importorskip("paddlehub")
    return hub_installation(tmp_path_factory)


@pytest.fixture(scope="module")
def reference_module(hub_env, tmp_path_factory):
    """The module class in this process, on the same tiny weights, for comparing numbers (its caches in a
    temporary HUB_HOME)."""
    from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HUB_HOME", str(tmp_path_factory.mktemp("reference_home")))
        yield BertCasedLarge(weights_dir=str(hub_env[1] / "weights"))


def test_hub_run_one_text_prints_a_summary(hub_env, reference_module):
    env, root = hub_env
    result = hub(env, "run", HUB_NAME, "--input_text", "Paris is the capital of France.")
    assert result.returncode == 0, result.stdout + result.stderr
    (pooled, sequence), = reference_module.get_embedding([["Paris is the capital of France."]])
    lines = result.stdout.splitlines()
    start = lines.index('[1] "Paris is the capital of France."')
    first = ", ".join(f"{v:.4f}" for v in pooled[:4].tolist())
    assert lines[start + 1] == (f"    tokens: 9  sequence_output: 9 x 32  pooled_output: norm "
                                f"{float(np.linalg.norm(pooled)):.4f}, first [{first}, ...]")
    assert sequence.shape == (9, 32)


def test_hub_run_input_file_writes_every_feature(hub_env, reference_module, tmp_path):
    env, _ = hub_env
    long_text = " ".join(["word"] * 40)
    (tmp_path / "in.tsv").write_text(f"Hello world!\n\nA question?\tAn answer.\n{long_text}\n", encoding="utf-8")
    samples = [["Hello world!"], ["A question?", "An answer."], [long_text]]
    result = hub(env, "run", HUB_NAME, "--input_file", "in.tsv", "--batch_size", "2", "--max_seq_len", "16",
                 "--prepacked_weights", "--output", "out.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '[2] "A question?" | "An answer."' in result.stdout
    assert f"wrote the features of 3 samples to {tmp_path / 'out.npz'} (npz)" in result.stdout
    expected = reference_module.get_embedding(samples, batch_size=2, max_seq_len=16)
    with np.load(tmp_path / "out.npz") as npz:
        assert npz["num_tokens"].tolist() == [s.shape[0] for _, s in expected] == [5, 9, 16]
        np.testing.assert_allclose(npz["pooled_output"], np.stack([p for p, _ in expected]), atol=1e-5)
        np.testing.assert_allclose(npz["sequence_output"], np.concatenate([s for _, s in expected]), atol=1e-5)
        assert npz["text_b"].tolist() == ["", "An answer.", ""]


def test_hub_run_pair_to_json_lines(hub_env, reference_module, tmp_path):
    env, _ = hub_env
    out = tmp_path / "pair.jsonl"
    result = hub(env, "run", HUB_NAME, "--input_text", "Who wrote it?", "--input_text_b", "Victor Hugo did.",
                 "--output", str(out), "--use_gpu", "False")
    assert result.returncode == 0, result.stdout + result.stderr
    item, = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert item["tokens"] == ["[CLS]", "Who", "wrote", "it", "?", "[SEP]", "Victor", "Hugo", "did", ".", "[SEP]"]
    assert item["num_tokens"] == 11 and np.asarray(item["sequence_output"]).shape == (11, 32)
    (pooled, _), = reference_module.get_embedding([["Who wrote it?", "Victor Hugo did."]])
    np.testing.assert_allclose(item["pooled_output"], pooled, atol=1e-5)


def test_hub_run_errors_are_one_message_without_traceback(hub_env, tmp_path):
    env, _ = hub_env
    result = hub(env, "run", HUB_NAME, "--batch_size", "2")
    assert result.returncode == 2
    assert "error: no input: give --input_text TEXT or --input_file FILE" in result.stderr
    assert "Traceback" not in result.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    result = hub(dict(env, **{WEIGHTS_ENV: str(empty)}), "run", HUB_NAME, "--input_text", "Hello")
    assert result.returncode == 1
    assert "holds no weights" in result.stderr
    assert "`python -m bert_cased_L_24_H_1024_A_16 download`" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_subcommand_and_bad_output_extension(hub_env, capsys, monkeypatch, tmp_path):
    """`python -m ... run` is hub run without PaddleHub; its errors exit 2 with the usage line."""
    _, root = hub_env
    monkeypatch.setenv(WEIGHTS_ENV, str(root / "weights"))
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "home"))
    assert cli.main(["run", "--input_text", "Hi", "--output", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "usage: hub run" in err and "cannot tell the format from the extension" in err
    assert cli.main(["run", "--input_text", "Hi", "--output", str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (1, 32)
    assert '[1] "Hi"' in capsys.readouterr().out
