"""The PaddleHub integration: ``hub install`` of the repository, ``hub show``, ``hub.Module``.

Every command runs in a subprocess with its own ``HUB_HOME`` (PaddleHub reads it at import) and
with the hub server pointed at a closed local port, so nothing reaches the network.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import clean_clone, offline_hub_home, run_hub

pytest.importorskip("paddlehub")

HUB_NAME = "bert_cased_L-24_H-1024_A-16"
@pytest.fixture(scope="module")
def hub_env(tmp_path_factory):
    """Environment with an isolated, offline HUB_HOME in which the repository is hub-installed."""
    root = tmp_path_factory.mktemp("hub")
    clone = clean_clone(root / "clone")
    env = dict(os.environ, HUB_HOME=str(offline_hub_home(root / "home")))
    env.pop("BERT_CASED_L_24_H_1024_A_16_WEIGHTS", None)
    result = run_hub(env, "install", str(clone))
    assert result.returncode == 0, result.stdout + result.stderr
    return env, clone


def _python(env, code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_hub_install_puts_the_module_under_hub_home(hub_env):
    env, _ = hub_env
    installed = os.path.join(env["HUB_HOME"], "modules", "bert_cased_L_24_H_1024_A_16")
    assert os.path.isfile(os.path.join(installed, "module.py"))
    assert os.path.isfile(os.path.join(installed, "assets", "vocab.txt"))


def test_hub_show_prints_name_and_version(hub_env):
    env, _ = hub_env
    result = run_hub(env, "show", HUB_NAME)
    assert result.returncode == 0, result.stdout + result.stderr
    assert HUB_NAME in result.stdout and "1.1.0" in result.stdout
    # module.py's literals (which PaddleHub reads) agree with the package's constants.
    import bert_cased_L_24_H_1024_A_16 as package

    assert (package.HUB_NAME, package.__version__) == (HUB_NAME, "1.1.0")


def test_hub_module_by_name_and_by_directory(hub_env):
    env, clone = hub_env
    result = _python(env, f"""
        import paddlehub as hub
        by_name = hub.Module(name="{HUB_NAME}")
        by_dir = hub.Module(directory={str(clone)!r})
        for module in (by_name, by_dir):
            print(type(module).__name__, module.name, module.version, module.type)
            print(module.tokenizer.tokenize("Hello, PaddleHub!"))
        print(len(by_name.get_params_layer()))
    """)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"BertCasedLarge {HUB_NAME} 1.1.0 nlp/semantic_model"
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertTokenizer(str(clone / "assets" / "vocab.txt"), do_lower_case=False)
    assert lines[1] == str(reference.tokenize("Hello, PaddleHub!"))
    assert lines[2] == lines[0] and lines[3] == lines[1]
    assert lines[4] == str(5 + 24 * 16 + 2)


def test_a_failing_method_does_not_leave_the_process_in_static_mode(hub_env):
    env, _ = hub_env
    result = _python(env, f"""
        import paddle, paddlehub as hub
        module = hub.Module(name="{HUB_NAME}")
        try:
            module.context(max_seq_len=9999)
        except ValueError as error:
            print("raised:", error)
        print("dynamic:", paddle.in_dynamic_mode())
    """)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "raised: max_seq_len must be an int from 1 to 512, got 9999" in result.stdout
    assert "dynamic: True" in result.stdout
