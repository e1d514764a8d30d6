"""Data-parallel fine-tuning with ``hub.Trainer`` under ``paddle.distributed.launch`` on this CPU machine.

Real launcher runs of tests/data_parallel_train.py (tiny weights without dropout, SGD with momentum,
whose velocity must travel to rank 1 on resume; Adam would amplify the rounding noise of gradients
that are zero in exact arithmetic, such as attention key biases', past the tolerance):
two processes on one node, and two "machines" emulated on loopback (one launcher each, ranks 0
and 1, each in its own folder with its own copies of weights and data, as if no file system were
shared). Each must end where one process ends over the same global batches. The reference is a
plain single-process ``hub.Trainer`` run of the same script, in this process, with the per-process
batch size times two:
``DistributedBatchSampler`` deals the same permutation to the ranks batch by batch.
"""

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TINY_CONFIGS, install_weights, random_arrays

pytest.importorskip("paddlehub")

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_parallel_train.py")
TOLERANCE = 1e-5
COMMON = ["--weights", "weights", "--data", "data", "--checkpoint_dir", "ckpt", "--optimizer", "momentum",
          "--learning_rate", "0.05"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A folder with ``weights/`` (tiny, no dropout) and ``data/`` (16 training and 4 dev samples)."""
    root = tmp_path_factory.mktemp("dp_source")
    config = dataclasses.replace(TINY_CONFIGS["tiny"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    install_weights(random_arrays(config, seed=5), config, root / "weights")
    (root / "data").mkdir()
    words = ["good", "bad", "nice", "awful", "great", "poor", "fine", "terrible"]
    rng = np.random.default_rng(0)
    for mode, count in (("train", 16), ("dev", 4)):
        lines = []
        for _ in range(count):
            picked = rng.choice(8, size=rng.integers(2, 6))
            lines.append(f"{int((picked % 2 == 0).mean() > 0.5)}\t{' '.join(words[i] for i in picked)}\n")
        (root / "data" / f"{mode}.tsv").write_text("".join(lines))
    return root


def _machine(source, folder):
    """``folder`` as one machine: its own copies of weights and data, its own PaddleHub home."""
    folder.mkdir()
    for name in ("weights", "data"):
        shutil.copytree(source / name, folder / name)
    env = dict(os.environ, HUB_HOME=str(folder / "hub_home"))
    env.pop("BERT_CASED_L_24_H_1024_A_16_WEIGHTS", None)
    return folder, env


def _launcher(folder, env, launch_args, script_args):
    return subprocess.Popen([sys.executable, "-m", "paddle.distributed.launch", *launch_args, "--log_dir", "log",
                             SCRIPT, *COMMON, *script_args], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)


def _finish(process, timeout=240):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def _single(folder, script_args, monkeypatch):
    """The training script run in this process (PaddleHub and Paddle already imported: seconds, not ten)."""
    import runpy

    import paddle

    monkeypatch.chdir(folder)
    with paddle.utils.unique_name.guard():  # Optimizer state names as a fresh process makes them.
        runpy.run_path(SCRIPT)["main"]([*COMMON, *script_args])


def _params(path):
    with np.load(path) as arrays:
        return dict(arrays)


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[name] - b[name]).max()) for name in a)


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    """One process, global batch 4: parameters after epoch 1, after a resumed epoch 2, after 2 epochs in one run."""
    folders = [_machine(source, tmp_path_factory.mktemp("dp") / name)[0] for name in ("resumed", "straight")]
    with pytest.MonkeyPatch.context() as monkeypatch:
        _single(folders[0], ["--batch_size", "4", "--out", "epoch1"], monkeypatch)
        _single(folders[0], ["--batch_size", "4", "--out", "epoch2"], monkeypatch)  # Resumes from ckpt/epoch_1.
        _single(folders[1], ["--batch_size", "4", "--out", "two_epochs", "--epochs", "2"], monkeypatch)
    epoch1, epoch2 = _params(folders[0] / "epoch1.rank0.npz"), _params(folders[0] / "epoch2.rank0.npz")
    assert _max_difference(epoch1, epoch2) > 20 * TOLERANCE  # Training moves parameters well past the tolerance.
    return epoch1, epoch2, _params(folders[1] / "two_epochs.rank0.npz")


@pytest.mark.usefixtures("dying_job")
def test_two_processes_on_one_node_train_one_model_through_a_slow_evaluation(source, reference, tmp_path):
    """Rank 0 evaluates for over 30 s (gloo's limit for a collective) while rank 1 starts epoch 2."""
    folder, env = _machine(source, tmp_path / "node")
    code, output = _finish(_launcher(folder, env, ["--nproc_per_node", "2"],
                                     ["--batch_size", "2", "--out", "dp", "--epochs", "2", "--eval_delay", "32"]))
    assert code == 0, output
    rank0, rank1 = _params(folder / "dp.rank0.npz"), _params(folder / "dp.rank1.npz")
    assert _max_difference(rank0, rank1) <= 1e-7
    assert _max_difference(rank0, reference[2]) <= TOLERANCE
    assert sorted(os.listdir(folder / "ckpt")) == ["best_model", "epoch_1", "epoch_2", "metrics.pkl"]


def _start_two_machines(machines, script_args):
    """Starts one launcher per emulated machine (``(folder, env)`` each, rank = position)."""
    port = _free_port()
    return [_launcher(folder, env, ["--nnodes", "2", "--master", f"127.0.0.1:{port}", "--rank", str(rank),
                                    "--nproc_per_node", "1"], script_args)
            for rank, (folder, env) in enumerate(machines)]


def _two_machines(machines, script_args):
    """Runs one launcher per emulated machine; ``(code, output)`` each."""
    return [_finish(p) for p in _start_two_machines(machines, script_args)]


@pytest.fixture(scope="module")
def dying_job(source, tmp_path_factory):
    """Two loopback machines whose rank 1 dies in its 2nd step: ``(machines, start time, launchers)``.

    Started by the first test, so that it runs while that test's rank 0 sleeps through its evaluation.
    """
    machines = [_machine(source, tmp_path_factory.mktemp("dying") / f"machine{rank}") for rank in (0, 1)]
    start = time.monotonic()
    return machines, start, _start_two_machines(machines, ["--batch_size", "2", "--out", "dead", "--die_at_step", "2"])


def test_a_dying_worker_brings_both_machines_down_with_a_clear_message(dying_job):
    # Runs before the next two-machine job starts, so that two jobs' launchers never run at once: in one CI
    # run that overlapped, the other job's rank-0 launcher exited 250.
    machines, start, launchers = dying_job
    (code0, _), (code1, output1) = [_finish(p) for p in launchers]
    assert time.monotonic() - start < 150  # Including the slow test it overlapped with (32 s asleep).
    assert code1 != 0 and "code 3" in output1  # The launcher of the dead worker names it.
    assert code0 != 0
    worker0 = (machines[0][0] / "log" / "workerlog.0").read_text()
    assert "rank 0 of 2: the gradient all-reduce failed (" in worker0
    assert "most likely another worker died, see its log" in worker0


def test_two_machines_without_a_shared_file_system_train_and_resume_one_model(source, reference, tmp_path):
    machines = [_machine(source, tmp_path / f"machine{rank}") for rank in (0, 1)]
    folders = [folder for folder, _ in machines]
    results = _two_machines(machines, ["--batch_size", "2", "--out", "epoch1"])
    assert [code for code, _ in results] == [0, 0], results
    assert _max_difference(_params(folders[0] / "epoch1.rank0.npz"), reference[0]) <= TOLERANCE
    assert _max_difference(_params(folders[1] / "epoch1.rank1.npz"), reference[0]) <= TOLERANCE
    assert (folders[0] / "ckpt" / "epoch_1" / "model.pdparams").is_file()
    assert not (folders[1] / "ckpt").exists()  # Only rank 0 writes checkpoints.
    # Resume: rank 0 alone has the checkpoint and hands epoch, parameters and momentum velocities to rank 1.
    results = _two_machines(machines, ["--batch_size", "2", "--out", "epoch2"])
    assert [code for code, _ in results] == [0, 0], results
    assert "checkpoint loaded. current_epoch=1" in results[0][1]
    for rank in (0, 1):
        assert _max_difference(_params(folders[rank] / f"epoch2.rank{rank}.npz"), reference[1]) <= TOLERANCE
    assert not (folders[1] / "ckpt").exists()
