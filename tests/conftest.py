"""Fixtures shared by the network, module and hub tests: tiny configurations and their weights."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bert_cased_L_24_H_1024_A_16.config import BertConfig
from bert_cased_L_24_H_1024_A_16.weights.names import huggingface_names

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_VOCAB = REPO_ROOT / "assets" / "vocab.txt"
SHARED_DIR = REPO_ROOT.parent / "shared"

# Tiny but complete: every parameter kind of the full network, several layers and heads.
TINY_CONFIGS = {
    "tiny": BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       max_position_embeddings=64),
    "odd": BertConfig(hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=40,
                      max_position_embeddings=40, type_vocab_size=3),
}


@pytest.fixture(autouse=True, scope="session")
def _private_hub_home(tmp_path_factory):
    """Keeps PaddleHub's home and the inference-model cache of every test out of the user's ~/.paddlehub."""
    home = tmp_path_factory.mktemp("hub_home")
    saved = {name: os.environ.get(name) for name in ("HUB_HOME", "BERT_CASED_L_24_H_1024_A_16_CACHE")}
    os.environ["HUB_HOME"] = str(home)
    os.environ["BERT_CASED_L_24_H_1024_A_16_CACHE"] = str(home / "cache")
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _dynamic_mode_after_each_test():
    """``context()`` leaves Paddle in static mode by design; tests must not leak it into each other."""
    yield
    import paddle

    if not paddle.in_dynamic_mode():
        paddle.disable_static()


def random_arrays(config, seed=0):
    """``{1.x name: float32 array}`` of random weights shaped for ``config``."""
    from bert_cased_L_24_H_1024_A_16.weights.names import legacy_parameter_shapes

    rng = np.random.default_rng(seed)
    return {name: rng.normal(0.0, 0.2, size=shape).astype(np.float32)
            for name, shape in legacy_parameter_shapes(config).items()}


def hf_model(config, seed=0):
    """A random-init Hugging Face ``BertModel`` (eval mode) with ``config``'s sizes."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    hf_config = transformers.BertConfig(**config.to_dict())
    model = transformers.BertModel(hf_config).eval()
    # Random layer norms too, so a swapped scale/bias cannot pass unnoticed.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def hf_arrays(model, config):
    """The weights of a Hugging Face ``BertModel`` under 1.x names, Linear weights transposed."""
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return {name: (state[foreign].T if transpose else state[foreign]).copy()
            for name, (foreign, transpose) in huggingface_names(config).items()}


def install_weights(arrays, config, dest):
    """Installs ``arrays`` as a weights folder at ``dest`` with the package vocabulary."""
    from bert_cased_L_24_H_1024_A_16 import weights

    weights.install(arrays, config, str(PACKAGE_VOCAB), str(dest), {"format": "test"})
    return str(dest)


@pytest.fixture
def tiny_weights_dir(tmp_path, monkeypatch):
    """A weights folder with the ``tiny`` config and random weights, found through the env var."""
    config = TINY_CONFIGS["tiny"]
    dest = install_weights(random_arrays(config), config, tmp_path / "weights")
    monkeypatch.setenv("BERT_CASED_L_24_H_1024_A_16_WEIGHTS", dest)
    return dest


def install_leftovers(dest):
    """What installs into ``dest`` left beside it, other than their lock file ``.<name>.lock`` (which stays)."""
    dest = pathlib.Path(dest)
    return [p for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.") and p.name != f".{dest.name}.lock"]


def tree_digest(folder):
    """sha256 over every path and file content under ``folder``: equal digests mean an untouched tree."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(folder).rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def feeds_with_padding(config, lengths, seq_len, seed=0):
    """Pair-style feeds: random ids, segment 1 on the second half of each row, padding past ``lengths``."""
    rng = np.random.default_rng(seed)
    batch = len(lengths)
    input_ids = rng.integers(1, config.vocab_size, (batch, seq_len))
    mask = (np.arange(seq_len)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    segment_ids = ((np.arange(seq_len)[None, :] >= (np.asarray(lengths)[:, None] // 2)) * mask).astype(np.int64)
    input_ids = input_ids * mask
    position_ids = np.tile(np.arange(seq_len, dtype=np.int64), (batch, 1))
    return {"input_ids": input_ids.astype(np.int64), "position_ids": position_ids,
            "segment_ids": segment_ids, "input_mask": mask}



# -- PaddleHub, offline ------------------------------------------------------------------------

# What `git clone` gives a user: the tracked tree, without local environments and caches.
NOT_IN_A_CLONE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", "*.egg-info", "build", "dist",
                                        ".pytest_cache")


def clean_clone(dest):
    """Copies the repository to ``dest`` as a user's clone holds it (``hub install`` copies the whole folder)."""
    shutil.copytree(REPO_ROOT, dest, ignore=NOT_IN_A_CLONE)
    return dest


def offline_hub_home(path):
    """A PaddleHub home whose server is a closed port on this machine (refused at once, never waited on)."""
    (path / "conf").mkdir(parents=True)
    (path / "conf" / "config.yaml").write_text("server: http://127.0.0.1:9\nlog:\n  enable: true\n  level: INFO\n")
    return path


def hub_executable():
    return os.path.join(os.path.dirname(sys.executable), "hub")


def run_hub(env, *args, **kwargs):
    """Runs ``hub ARGS`` in a subprocess with ``env`` (which carries its HUB_HOME), no stdin, 300 s at most."""
    return subprocess.run([hub_executable(), *args], env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, **kwargs)


def hub_installed_with_weights(root, arrays, config):
    """Under ``root``: an offline hub home where a clean clone is hub-installed, and ``arrays`` installed as weights;
    returns the environment that uses them (HUB_HOME, the weights env var)."""
    home = offline_hub_home(root / "hub_home")
    clone = clean_clone(root / "bert_cased_L_24_H_1024_A_16")
    weights = install_weights(arrays, config, root / "weights")
    env = dict(os.environ, HUB_HOME=str(home), BERT_CASED_L_24_H_1024_A_16_WEIGHTS=weights)
    installed = run_hub(env, "install", str(clone), cwd=root)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return env
