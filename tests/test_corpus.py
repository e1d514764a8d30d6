"""The corpus job (:mod:`corpus`, ``embed``): every input format against ``get_embedding``, shards, resumption
after SIGKILL, refusals of bad input and of foreign output folders, and Ray Data against the local run."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bert_cased_L_24_H_1024_A_16.corpus import CorpusError, embed_corpus
from bert_cased_L_24_H_1024_A_16.corpus.output import METADATA_KEY, weights_sha256
from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge

from conftest import TINY_CONFIGS, install_weights, random_arrays

PAIRS = [
    ("Paris is the capital of France.", "It is."),
    ("A comma, a \"quote\" and\na newline", "second part"),
    ("Ünïcödé, CJK 中文 and émojis 🙂", "fine"),
    (" ".join(f"word{i} and, more" for i in range(30)), "a long first part is truncated"),
    ("short", ""),
    ("The quick brown fox", "jumps over the lazy dog, twice!"),
    ("One more", "for an odd count"),
]
SINGLES = ["Hello world.", "Another line", "x " * 40, "Mixed case Text", "tabs\tmake pairs"]
MAX_SEQ_LEN = 24


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    config = TINY_CONFIGS["tiny"]
    return install_weights(random_arrays(config, seed=3), config, tmp_path_factory.mktemp("corpus") / "weights")


@pytest.fixture(scope="module")
def reference(weights_dir):
    """``get_embedding`` of the module, one sample per pass: what every corpus run must reproduce."""
    module = BertCasedLarge(weights_dir=weights_dir)

    def embed(samples):
        return module.get_embedding([list(s) for s in samples], batch_size=1, max_seq_len=MAX_SEQ_LEN)
    return embed


def _embed(inputs, output, weights_dir, **options):
    options.setdefault("max_seq_len", MAX_SEQ_LEN)
    options.setdefault("progress", False)
    return embed_corpus(inputs, output, weights_dir=weights_dir, **options)


def _read(output):
    table = pq.read_table(str(output))
    return table.to_pydict(), table


def _write_inputs(folder, fmt):
    """PAIRS as a ``fmt`` file with fields text/other/key; returns (path, expected ids)."""
    ids = [f"k{i}" for i in range(len(PAIRS))]
    if fmt == "jsonl":
        path = folder / "pairs.jsonl"
        path.write_text("".join(json.dumps({"key": key, "text": a, "other": b}) + "\n"
                                for key, (a, b) in zip(ids, PAIRS)), encoding="utf-8")
    elif fmt in ("csv", "tsv"):
        path = folder / f"pairs.{fmt}"
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
            writer.writerow(["key", "text", "other"])
            writer.writerows([key, a, b] for key, (a, b) in zip(ids, PAIRS))
    else:
        path = folder / "pairs.parquet"
        pq.write_table(pa.table({"key": ids, "text": [a for a, _ in PAIRS], "other": [b for _, b in PAIRS]}),
                       path, row_group_size=2)  # Shards of 3 rows start inside row groups.
    return path, ids


def _assert_matches(rows, samples, reference):
    expected = reference(samples)
    assert len(rows["pooled"]) == len(expected)
    for pooled, num_tokens, (ref_pooled, ref_sequence) in zip(rows["pooled"], rows["num_tokens"], expected):
        np.testing.assert_allclose(np.asarray(pooled, np.float32), ref_pooled, atol=1e-5, rtol=0)
        assert num_tokens == ref_sequence.shape[0]


# -- formats and output ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv", "parquet"])
def test_field_formats_equal_get_embedding(tmp_path, weights_dir, reference, fmt):
    path, ids = _write_inputs(tmp_path, fmt)
    report = _embed([str(path)], tmp_path / "out", weights_dir, text_field="text", text_b_field="other",
                    id_field="key", shard_size=3, batch_size=4)
    rows, table = _read(tmp_path / "out")
    assert rows["id"] == ids
    _assert_matches(rows, PAIRS, reference)
    assert (report.shards_total, report.shards_written, report.rows_written) == (3, 3, len(PAIRS))
    assert table.schema.field("pooled").type == pa.list_(pa.float32(), TINY_CONFIGS["tiny"].hidden_size)


def test_text_files_glob_ids_shards_and_metadata(tmp_path, weights_dir, reference):
    inputs = tmp_path / "in"
    inputs.mkdir()
    pairs = [pair for pair in PAIRS if "\n" not in pair[0]][:3]
    (inputs / "b.txt").write_text("\n".join("\t".join(p) for p in pairs) + "\n", encoding="utf-8")
    (inputs / "a.txt").write_text("\n".join(s.replace("\t", " ") for s in SINGLES) + "\n\n", encoding="utf-8")
    report = _embed([str(inputs / "*.txt")], tmp_path / "out", weights_dir, shard_size=2, batch_size=3)
    rows, table = _read(tmp_path / "out")
    a, b = str(inputs / "a.txt"), str(inputs / "b.txt")
    assert rows["id"] == [f"{a}:{n}" for n in range(1, 6)] + [f"{b}:{n}" for n in range(1, 4)]
    _assert_matches(rows, [(s.replace("\t", " "),) for s in SINGLES] + pairs, reference)
    assert sorted(os.listdir(tmp_path / "out")) == [".embed.lock", "_embed.json"] + [
        f"part-{i:06d}.parquet" for i in range(4)]
    assert report.rows_left_out == {"blank lines": 1}
    identity = json.loads(pq.read_schema(tmp_path / "out" / "part-000003.parquet").metadata[METADATA_KEY])
    assert identity["weights_sha256"] == weights_sha256(weights_dir)
    assert (identity["max_seq_len"], identity["precision"], identity["pooling"], identity["shard"]) == \
        (MAX_SEQ_LEN, "fp32", "pooler", 3)
    assert identity["model"].startswith("bert_cased_L-24_H-1024_A-16")
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_parquet(tmp_path / "out")
    assert list(frame["id"]) == rows["id"] and len(frame["pooled"][0]) == TINY_CONFIGS["tiny"].hidden_size


def test_token_features_and_poolings(tmp_path, weights_dir, reference):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(SINGLES[:4]) + "\n", encoding="utf-8")
    expected = reference([(s,) for s in SINGLES[:4]])
    _embed([str(path)], tmp_path / "mean", weights_dir, pooling="mean", token_features=True, shard_size=3)
    _embed([str(path)], tmp_path / "cls", weights_dir, pooling="cls", shard_size=3)
    mean, _ = _read(tmp_path / "mean")
    cls, _ = _read(tmp_path / "cls")
    for i, (_, sequence) in enumerate(expected):
        np.testing.assert_allclose(np.asarray(mean["token_features"][i], np.float32), sequence, atol=1e-5, rtol=0)
        np.testing.assert_allclose(mean["pooled"][i], sequence.mean(axis=0), atol=1e-5, rtol=0)
        np.testing.assert_allclose(cls["pooled"][i], sequence[0], atol=1e-5, rtol=0)


# -- reruns and refusals --------------------------------------------------------------------------

def test_rerun_skips_finished_shards_and_other_settings_are_refused(tmp_path, weights_dir):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(SINGLES) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    _embed([str(path)], out, weights_dir, shard_size=2)
    os.remove(out / "part-000001.parquet")
    before = {name: (out / name).stat().st_mtime_ns for name in os.listdir(out) if name.startswith("part-")}
    report = _embed([str(path)], out, weights_dir, shard_size=2, batch_size=5)  # batch size is no setting
    assert (report.shards_skipped, report.shards_written, report.rows_written) == (2, 1, 2)
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in before.items())
    with pytest.raises(CorpusError, match=r"other weights or settings \(max_seq_len: 24 there, 16 now"):
        _embed([str(path)], out, weights_dir, shard_size=2, max_seq_len=16)
    other = install_weights(random_arrays(TINY_CONFIGS["tiny"], seed=4), TINY_CONFIGS["tiny"], tmp_path / "w2")
    with pytest.raises(CorpusError, match="weights_sha256"):
        _embed([str(path)], out, other, shard_size=2)
    path.write_text("\n".join(SINGLES + ["appended"]) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="inputs"):
        _embed([str(path)], out, weights_dir, shard_size=2)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.parquet").write_bytes(b"")
    with pytest.raises(CorpusError, match="not made by embed"):
        _embed([str(path)], foreign, weights_dir)


def test_a_second_job_into_a_folder_in_use_is_refused(tmp_path, weights_dir):
    from bert_cased_L_24_H_1024_A_16.corpus.output import claim_output

    path = tmp_path / "t.txt"
    path.write_text("a\n", encoding="utf-8")
    with claim_output(str(tmp_path / "out"), {}):
        with pytest.raises(CorpusError, match="another embed job is writing to"):
            _embed([str(path)], tmp_path / "out", weights_dir)


@pytest.mark.parametrize("name, content, message", [
    ("bad.txt", b"fine\nbad \xff byte\n", r"bad.txt line 2: not UTF-8"),
    ("bad.jsonl", b'{"text": "a"}\n[1, 2]\n', r"bad.jsonl line 2: a JSON list, not an object"),
    ("bad.jsonl", b'{"text": "a"}\n\n{"body": "b"}\n', r"bad.jsonl line 3: no field 'text'"),
    ("bad.jsonl", b'{"text": "a"}\n{"text": null}\n', r"bad.jsonl line 2: field 'text' is null"),
    ("bad.csv", b"text\nok\n\"open quote\n", r"bad.csv line 3: .*cannot be read past it"),
    ("empty.txt", b"", r"empty.txt holds no samples"),
    ("blank.jsonl", b"\n \n", r"blank.jsonl holds no samples"),
])
def test_bad_input_names_file_and_line_and_writes_nothing(tmp_path, weights_dir, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        _embed([str(path)], tmp_path / "out", weights_dir)
    assert not (tmp_path / "out").exists()


def test_null_text_in_a_parquet_column_is_refused_or_counted(tmp_path, weights_dir, reference):
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["a", None, "c", None]}), path)
    with pytest.raises(CorpusError, match=r"nulls.parquet row 1: field 'text' is null.*--skip-bad-rows"):
        _embed([str(path)], tmp_path / "out", weights_dir)
    report = _embed([str(path)], tmp_path / "out", weights_dir, skip_bad_rows=True)
    rows, _ = _read(tmp_path / "out")
    assert rows["id"] == [f"{path}:0", f"{path}:2"]
    _assert_matches(rows, [("a",), ("c",)], reference)
    assert report.rows_left_out == {"rows whose 'text' is not text": 2}


def test_skip_bad_rows_counts_each_reason(tmp_path, weights_dir):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"text": "a"}\n[1]\n{"text": 3}\n\xff\n{"body": "x"}\n{"text": "b"}\n')
    report = _embed([str(path)], tmp_path / "out", weights_dir, skip_bad_rows=True)
    assert report.rows_written == 2
    assert report.rows_left_out == {"rows that are not JSON objects": 1, "rows whose 'text' is not text": 1,
                                    "rows of invalid UTF-8": 1, "rows without the field 'text'": 1}


def test_unwritable_output_and_missing_inputs(tmp_path, weights_dir):
    path = tmp_path / "t.txt"
    path.write_text("a\n", encoding="utf-8")
    (tmp_path / "file").write_text("")
    with pytest.raises(CorpusError, match=r"cannot write to --output .*file/out"):
        _embed([str(path)], tmp_path / "file" / "out", weights_dir)
    with pytest.raises(CorpusError, match=r"matches no file"):
        _embed([str(tmp_path / "*.jsonl")], tmp_path / "out", weights_dir)
    with pytest.raises(CorpusError, match=r"cannot tell the format .*--input-format"):
        _embed([str(tmp_path / "file")], tmp_path / "out", weights_dir)


def test_ray_missing_says_how_to_install(tmp_path, weights_dir, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text("a\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(CorpusError, match=r'pip install -e "\.\[ray\]"'):
        _embed([str(path)], tmp_path / "out", weights_dir, ray=True)


# -- the command line: SIGKILL and rerun, Ray -------------------------------------------------------

def _command(weights_dir, *args):
    env = dict(os.environ, BERT_CASED_L_24_H_1024_A_16_WEIGHTS=weights_dir)
    return [sys.executable, "-m", "bert_cased_L_24_H_1024_A_16", "embed", *args,
            "--max-seq-len", str(MAX_SEQ_LEN), "--no-progress"], env


def _corpus_file(path, count):
    words = ["alpha", "beta", "Gamma", "delta,", "epsilon.", "zeta", "ETA", "theta"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            f.write(" ".join(words[(i + j) % len(words)] for j in range(3 + i % 17)) + f" {i}\n")
    return path


def test_sigkilled_run_resumes_with_every_id_once(tmp_path, weights_dir):
    source = _corpus_file(tmp_path / "corpus.txt", 3000)
    out = tmp_path / "out"
    command, env = _command(weights_dir, str(source), "--output", str(out), "--shard-size", "100")
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if out.is_dir() and any(name.startswith("part-") for name in os.listdir(out)):
            job.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    job.communicate(timeout=60)
    assert job.returncode == -signal.SIGKILL, "the job ended before it could be killed"
    finished = sorted(name for name in os.listdir(out) if name.startswith("part-"))
    assert 0 < len(finished) < 30
    assert all(pq.read_metadata(out / name).num_rows == 100 for name in finished)  # only whole shards
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {len(finished)} of 30 shard(s)" in rerun.stdout
    assert not [name for name in os.listdir(out) if ".tmp" in name]
    ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    assert ids == [f"{source}:{n}" for n in range(1, 3001)]


def test_ray_with_two_actors_gives_the_local_rows(tmp_path, weights_dir):
    pytest.importorskip("ray")
    source = _corpus_file(tmp_path / "corpus.txt", 90)
    _embed([str(source)], tmp_path / "local", weights_dir, shard_size=20, batch_size=5)
    ray_command, env = _command(weights_dir, str(source), "--output", str(tmp_path / "ray"), "--shard-size", "20",
                              "--ray", "--actors", "2")
    env["RAY_AUTH_MODE"] = "disabled"
    ray = subprocess.run(ray_command, env=env, capture_output=True, text=True, timeout=300)
    assert ray.returncode == 0, ray.stderr
    assert "wrote 5 shard(s), 90 rows" in ray.stdout
    assert " x 1 thread(s) computed" in ray.stdout  # 2 CPUs shared by 2 actors: one math thread each
    local_rows, ray_rows = _read(tmp_path / "local")[0], _read(tmp_path / "ray")[0]
    assert ray_rows["id"] == local_rows["id"] and ray_rows["num_tokens"] == local_rows["num_tokens"]
    np.testing.assert_allclose(np.asarray(ray_rows["pooled"]), np.asarray(local_rows["pooled"]), atol=1e-5, rtol=0)
    rerun = subprocess.run(ray_command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "skipped 5 of 5 shard(s)" in rerun.stdout, rerun.stderr


def test_command_line_help_and_errors(tmp_path, weights_dir):
    command, env = _command(weights_dir, "--help")
    shown = subprocess.run(command[:5], env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--shard-size" in shown.stdout and "--ray" in shown.stdout
    command, env = _command(weights_dir, str(tmp_path / "missing.txt"), "--output", str(tmp_path / "out"))
    failed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "missing.txt: no such file" in failed.stderr
    assert "Traceback" not in failed.stderr
