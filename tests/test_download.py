"""``download``: every source, fetched from a local HTTP server that serves small checkpoints built here.

The server (127.0.0.1, a free port, one thread per request) serves files with ``Range``/``If-Range``
support and can misbehave per path: cut the connection midway, ignore ``Range``, answer 404, stall before
or during the body, serve an HTML page. Timeouts are 1 s so that the failure tests stay quick.
"""

import hashlib
import http.server
import io
import json
import os
import pathlib
import re
import socket
import tarfile
import threading
import time
import urllib.parse

import numpy as np
import pytest

from bert_cased_L_24_H_1024_A_16 import cli, download, weights
from bert_cased_L_24_H_1024_A_16.download import DownloadError, fetch, source_files
from bert_cased_L_24_H_1024_A_16.weights import legacy
from bert_cased_L_24_H_1024_A_16.weights.names import paddlenlp_names

from conftest import PACKAGE_VOCAB, TINY_CONFIGS, hf_arrays, hf_model, install_leftovers, random_arrays, tree_digest

CONFIG = TINY_CONFIGS["tiny"]
FAST = dict(timeout=1.0, backoff=0.05, progress=False, log=lambda message: None)


# -- the local server ---------------------------------------------------------------------------------------------

class _State:
    def __init__(self):
        self.files = {}  # path -> bytes
        self.modes = {}  # path -> misbehaviour
        self.log = []  # (path, Range header, status)
        self.cut_times = {}  # path -> how many more requests to cut
        self.release = threading.Event()  # ends stalls early at teardown

    def reset(self):
        self.files.clear()
        self.modes.clear()
        self.log.clear()
        self.cut_times.clear()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        state = self.server.state
        path = urllib.parse.urlsplit(self.path).path
        mode = state.modes.get(path, "ok")
        requested = self.headers.get("Range")
        if mode == "404" or path not in state.files:
            state.log.append((path, requested, 404))
            return self._send(404, b"not found\n", "text/plain")
        if mode == "stall-headers":
            state.log.append((path, requested, None))
            state.release.wait(10)
            self.close_connection = True
            return None
        data = state.files[path]
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", requested or "")
        if_range = self.headers.get("If-Range")
        if match and mode != "ignore-range" and (if_range is None or if_range == etag):
            start = int(match.group(1))
            if start >= len(data):
                state.log.append((path, requested, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
        status = 206 if start else 200
        state.log.append((path, requested, status))
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if mode == "cut" and state.cut_times.get(path, 0) > 0:
            state.cut_times[path] -= 1
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if mode == "trickle":  # A byte at a time, each well within the read timeout.
            for byte in body:
                if state.release.wait(0.2):
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            self.close_connection = True
            return None
        if mode == "stall-body":
            self.wfile.write(body[:len(body) // 3])
            self.wfile.flush()
            state.release.wait(10)
            self.close_connection = True
            return None
        self.wfile.write(body)
        return None

    def _send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@pytest.fixture(scope="module")
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = _State()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield httpd
    finally:
        httpd.state.release.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def served(server):
    """The server with nothing served and no misbehaviour; returns (server, state)."""
    server.state.reset()
    yield server, server.state
    server.state.reset()


# -- small checkpoints in each format -----------------------------------------------------------------------------

# The pretraining heads in Paddle's release archive, which the converter skips (tiny config's sizes).
PRETRAINING_HEADS = {"mask_lm_trans_fc.w_0": (CONFIG.hidden_size, CONFIG.hidden_size),
                     "mask_lm_trans_fc.b_0": (CONFIG.hidden_size,),
                     "mask_lm_trans_layer_norm_scale": (CONFIG.hidden_size,),
                     "mask_lm_trans_layer_norm_bias": (CONFIG.hidden_size,), "mask_lm_out_fc.b_0": (CONFIG.vocab_size,),
                     "next_sent_fc.w_0": (CONFIG.hidden_size, 2), "next_sent_fc.b_0": (2,)}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``{source: (bytes per file name, expected 1.x arrays)}`` for the three sources, tiny config."""
    root = tmp_path_factory.mktemp("checkpoints")
    built = {}

    # Paddle's release archive (SPEC section 4): unprefixed names, plus pretraining heads that are not ours.
    arrays = random_arrays(CONFIG, seed=1)
    release = root / "release" / "cased_L-24_H-1024_A-16"
    heads = {name: np.ones(shape, np.float32) for name, shape in PRETRAINING_HEADS.items()}
    legacy.write_params_dir(str(release / "params"), {**arrays, **heads})
    CONFIG.to_json_file(str(release / "bert_config.json"))
    (release / "vocab.txt").write_bytes(PACKAGE_VOCAB.read_bytes())
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(str(release), arcname="cased_L-24_H-1024_A-16")
    built["paddlehub"] = ({"cased_L-24_H-1024_A-16.tar.gz": archive.getvalue()}, arrays)

    import paddle

    arrays = random_arrays(CONFIG, seed=2)
    state = {"bert." + nlp_name: paddle.to_tensor(arrays[name])
             for name, (nlp_name, _) in paddlenlp_names(CONFIG).items()}
    pdparams = root / "bert-large-cased.pdparams"
    paddle.save(state, str(pdparams))
    built["paddlenlp"] = ({"bert-large-cased.pdparams": pdparams.read_bytes()}, arrays)

    model = hf_model(CONFIG, seed=3)
    folder = root / "hf"
    model.save_pretrained(str(folder), safe_serialization=True)
    built["huggingface"] = ({"config.json": (folder / "config.json").read_bytes(),
                             "vocab.txt": PACKAGE_VOCAB.read_bytes(),
                             "model.safetensors": (folder / "model.safetensors").read_bytes()},
                            hf_arrays(model, CONFIG))
    return built


def _serve(state, files, prefix="/mirror/"):
    for name, data in files.items():
        state.files[prefix + name] = data
    return prefix


def _assert_installed(dest, expected):
    config, arrays = weights.load_weights(str(dest))
    assert config == CONFIG
    assert sorted(arrays) == sorted(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(arrays[name], array, err_msg=name)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny_config.json"
    CONFIG.to_json_file(str(path))
    return str(path)


# -- sources and mirrors ------------------------------------------------------------------------------------------

def test_default_urls_are_the_ones_of_spec_section_4():
    assert [f.url for f in source_files("paddlehub")] == [
        "https://bert-models.bj.bcebos.com/cased_L-24_H-1024_A-16.tar.gz"]
    assert [f.url for f in source_files("paddlenlp")] == [
        "http://bj.bcebos.com/paddlenlp/models/transformers/bert/bert-large-cased.pdparams"]
    assert [f.url for f in source_files("huggingface")] == [
        f"https://huggingface.co/bert-large-cased/resolve/main/{name}"
        for name in ("config.json", "vocab.txt", "model.safetensors")]


def test_a_mirror_url_replaces_the_base_or_names_the_file():
    assert [f.url for f in source_files("huggingface", "http://m.example/bert")] == [
        f"http://m.example/bert/{name}" for name in ("config.json", "vocab.txt", "model.safetensors")]
    archive = "cased_L-24_H-1024_A-16.tar.gz"
    assert source_files("paddlehub", "https://m.example/x/")[0].url == f"https://m.example/x/{archive}"
    assert source_files("paddlehub", f"https://m.example/y/{archive}")[0].url == f"https://m.example/y/{archive}"
    with pytest.raises(DownloadError, match="http:// or https://"):
        source_files("huggingface", "ftp://m.example/")
    with pytest.raises(DownloadError, match="unknown source"):
        source_files("nowhere")


# -- full downloads ------------------------------------------------------------------------------------------------

def test_the_release_archive_converts_from_a_local_file_without_its_pretraining_heads(checkpoints, tmp_path,
                                                                                   caplog):
    files, expected = checkpoints["paddlehub"]
    (name, data), = files.items()
    (tmp_path / name).write_bytes(data)
    assert cli.main(["convert", str(tmp_path / name), "--dest", str(tmp_path / "weights")]) == 0
    _assert_installed(tmp_path / "weights", expected)  # exactly the network's parameters: no mask_lm_*, next_sent_*
    assert "skipping 7 file(s) that are not parameters of this network: mask_lm_out_fc.b_0" in caplog.text


@pytest.mark.parametrize("source", ["paddlehub", "paddlenlp", "huggingface"])
def test_full_download_of_each_source_through_the_command_line(served, checkpoints, tmp_path, config_file,
                                                               capsys, source):
    server, state = served
    files, expected = checkpoints[source]
    prefix = _serve(state, files)
    dest = tmp_path / "weights"
    argv = ["download", "--source", source, "--url", server.base + prefix, "--dest", str(dest),
            "--timeout", "5", "--no-progress"]
    if source == "paddlenlp":
        argv += ["--config", config_file]
    assert cli.main(argv) == 0, capsys.readouterr().err
    _assert_installed(dest, expected)
    manifest = weights.read_manifest(str(dest))
    assert manifest["source"]["source"] == source
    for name, data in files.items():
        record = manifest["source"]["files"][name]
        assert record["url"] == server.base + prefix + name
        assert record["size"] == len(data)
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert not os.path.exists(download.default_cache_dir(str(dest)))  # downloads removed once installed
    assert sorted(p for p, _, _ in state.log) == sorted(prefix + name for name in files)
    out = capsys.readouterr().out
    assert f"installed the {source} weights in {dest}" in out

    assert cli.main(["info", "--dest", str(dest)]) == 0
    info = capsys.readouterr().out
    assert f"{source} download" in info and server.base + prefix in info
    assert "checks passed at install: names, shapes, dtypes, finite, vocab_size, special_tokens" in info


def test_keep_download_keeps_the_files(served, checkpoints, tmp_path):
    server, state = served
    files, expected = checkpoints["huggingface"]
    prefix = _serve(state, files)
    dest = tmp_path / "weights"
    download.download_and_install("huggingface", url=server.base + prefix, dest_dir=str(dest), keep_download=True,
                                  **FAST)
    _assert_installed(dest, expected)
    cached = pathlib.Path(download.default_cache_dir(str(dest))) / "huggingface"
    assert (cached / "model.safetensors").read_bytes() == files["model.safetensors"]
    # A second run uses what is cached: no request at all.
    state.log.clear()
    download.download_and_install("huggingface", url=server.base + prefix, dest_dir=str(dest), **FAST)
    assert state.log == []
    _assert_installed(dest, expected)


# -- interrupted downloads ------------------------------------------------------------------------------------------

def test_download_cut_midway_is_kept_and_resumed_by_the_next_run(served, checkpoints, tmp_path):
    server, state = served
    files, expected = checkpoints["paddlehub"]
    prefix = _serve(state, files)
    path = prefix + "cased_L-24_H-1024_A-16.tar.gz"
    state.modes[path], state.cut_times[path] = "cut", 1
    dest = tmp_path / "weights"
    with pytest.raises(DownloadError) as error:
        download.download_and_install("paddlehub", url=server.base + prefix, dest_dir=str(dest), retries=0, **FAST)
    message = str(error.value)
    half = len(files["cased_L-24_H-1024_A-16.tar.gz"]) // 2
    assert f"the connection closed after {half} of {len(files['cased_L-24_H-1024_A-16.tar.gz'])} bytes" in message
    assert "the next run resumes" in message
    assert not dest.exists()
    part = pathlib.Path(download.default_cache_dir(str(dest))) / "paddlehub" / "cased_L-24_H-1024_A-16.tar.gz.part"
    assert part.stat().st_size == half

    download.download_and_install("paddlehub", url=server.base + prefix, dest_dir=str(dest), retries=0, **FAST)
    assert state.log == [(path, None, 200), (path, f"bytes={half}-", 206)]
    _assert_installed(dest, expected)


def test_a_cut_is_retried_within_one_run(served, checkpoints, tmp_path):
    server, state = served
    files, expected = checkpoints["huggingface"]
    prefix = _serve(state, files)
    path = prefix + "model.safetensors"
    state.modes[path], state.cut_times[path] = "cut", 2
    dest = tmp_path / "weights"
    download.download_and_install("huggingface", url=server.base + prefix, dest_dir=str(dest), retries=3, **FAST)
    _assert_installed(dest, expected)
    requests = [(ranged, status) for p, ranged, status in state.log if p == path]
    size = len(files["model.safetensors"])
    assert requests == [(None, 200), (f"bytes={size // 2}-", 206),
                        (f"bytes={size // 2 + (size - size // 2) // 2}-", 206)]


def test_a_server_that_ignores_range_is_read_again_from_the_start(served, tmp_path):
    server, state = served
    data = os.urandom(200_000)
    url, target = server.base + "/f.bin", tmp_path / "f.bin"
    state.files["/f.bin"], state.modes["/f.bin"], state.cut_times["/f.bin"] = data, "cut", 1
    with pytest.raises(DownloadError):
        fetch(url, str(target), timeout=1, retries=0, progress=False)
    state.modes["/f.bin"] = "ignore-range"
    info = fetch(url, str(target), timeout=1, retries=0, progress=False)
    assert target.read_bytes() == data and info["resumed_from"] == 100_000
    assert state.log[-1] == ("/f.bin", "bytes=100000-", 200)


def test_a_part_of_another_url_is_not_resumed(served, tmp_path):
    server, state = served
    data = os.urandom(20_000)
    state.files["/e.bin"] = data
    (tmp_path / "e.bin.part").write_bytes(b"x" * 5000)  # no record of where it came from
    fetch(server.base + "/e.bin", str(tmp_path / "e.bin"), timeout=1, retries=0, progress=False)
    assert (tmp_path / "e.bin").read_bytes() == data
    assert state.log == [("/e.bin", None, 200)]


def test_a_file_changed_on_the_server_is_not_spliced_onto_the_old_part(served, tmp_path):
    server, state = served
    old, new = os.urandom(100_000), os.urandom(120_000)
    url, target = server.base + "/g.bin", tmp_path / "g.bin"
    state.files["/g.bin"], state.modes["/g.bin"], state.cut_times["/g.bin"] = old, "cut", 1
    with pytest.raises(DownloadError):
        fetch(url, str(target), timeout=1, retries=0, progress=False)
    assert (tmp_path / "g.bin.part").stat().st_size == 50_000
    state.files["/g.bin"], state.modes["/g.bin"] = new, "ok"
    fetch(url, str(target), timeout=1, retries=0, progress=False)
    assert target.read_bytes() == new  # If-Range did not match: the server sent the new file whole
    assert state.log[-1] == ("/g.bin", "bytes=50000-", 200)


def test_a_complete_part_is_finished_by_a_416(served, tmp_path):
    server, state = served
    data = os.urandom(10_000)
    state.files["/h.bin"] = data
    # What a run killed after the last byte but before the rename leaves: the part and its record.
    (tmp_path / "h.bin.part").write_bytes(data)
    (tmp_path / "h.bin.part.json").write_text(json.dumps({"url": server.base + "/h.bin", "total": 10_000}))
    fetch(server.base + "/h.bin", str(tmp_path / "h.bin"), timeout=1, retries=0, progress=False)
    assert (tmp_path / "h.bin").read_bytes() == data
    assert state.log == [("/h.bin", "bytes=10000-", 416)]


# -- rejected downloads: nothing installed, the previous install intact ---------------------------------------------

@pytest.fixture
def previous_install(tmp_path):
    """A weights dir installed before the download under test, and the digest of its files."""
    dest = tmp_path / "weights"
    weights.install(random_arrays(CONFIG, seed=9), CONFIG, str(PACKAGE_VOCAB), str(dest), {"format": "test"})
    return dest, tree_digest(dest)


def _corrupt(data):
    data = bytearray(data)
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    return bytes(data)


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_damaged_archive_is_rejected_and_nothing_is_installed(served, checkpoints, previous_install, damage):
    server, state = served
    dest, digest = previous_install
    good = checkpoints["paddlehub"][0]["cased_L-24_H-1024_A-16.tar.gz"]
    bad = _corrupt(good) if damage == "corrupt" else good[:len(good) * 2 // 3]
    prefix = _serve(state, {"cased_L-24_H-1024_A-16.tar.gz": bad})
    with pytest.raises(DownloadError) as error:
        download.download_and_install("paddlehub", url=server.base + prefix, dest_dir=str(dest), **FAST)
    message = str(error.value)
    assert f"cased_L-24_H-1024_A-16.tar.gz is a {damage} gzip archive" in message
    assert f"Nothing was installed (the weights in {dest} are as they were)" in message
    assert tree_digest(dest) == digest
    assert weights.read_manifest(str(dest))["source"] == {"format": "test"}
    cached = pathlib.Path(download.default_cache_dir(str(dest))) / "paddlehub"
    assert not any(cached.iterdir())  # the bad download is deleted, not resumed next time
    assert not install_leftovers(dest)


def test_a_truncated_safetensors_file_is_rejected_before_reading(served, checkpoints, tmp_path):
    server, state = served
    files = dict(checkpoints["huggingface"][0])
    files["model.safetensors"] = files["model.safetensors"][:-1000]
    prefix = _serve(state, files)
    dest = tmp_path / "weights"
    with pytest.raises(DownloadError, match=r"model.safetensors is truncated: its tensors need \d+ data bytes"):
        download.download_and_install("huggingface", url=server.base + prefix, dest_dir=str(dest), **FAST)
    assert not dest.exists()


def test_an_html_page_instead_of_the_archive_is_rejected(served, tmp_path, capsys):
    server, state = served
    prefix = _serve(state, {"cased_L-24_H-1024_A-16.tar.gz": b"<!DOCTYPE html><html><body>Moved</body></html>\n"})
    dest = tmp_path / "weights"
    argv = ["download", "--source", "paddlehub", "--url", server.base + prefix, "--dest", str(dest), "--no-progress"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "is not a gzip archive" in err and "Nothing was installed" in err and "Traceback" not in err
    assert not dest.exists()


def test_a_wrong_checkpoint_for_the_source_is_rejected(served, checkpoints, previous_install):
    """A PaddleNLP file of another configuration: read, found not to fit, nothing installed."""
    server, state = served
    dest, digest = previous_install
    prefix = _serve(state, checkpoints["paddlenlp"][0])
    with pytest.raises(weights.WeightsError, match="do not fit the configuration"):
        # no config given: the bert-large-cased one, which the tiny file does not fit
        download.download_and_install("paddlenlp", url=server.base + prefix, dest_dir=str(dest), **FAST)
    assert tree_digest(dest) == digest


# -- servers that fail ------------------------------------------------------------------------------------------------

def test_404_is_a_clear_error_without_retries(served, tmp_path, capsys):
    server, state = served
    dest = tmp_path / "weights"
    url = server.base + "/missing/"
    argv = ["download", "--source", "huggingface", "--url", url, "--dest", str(dest), "--no-progress"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"error: could not download {url}config.json: HTTP 404 Not Found" in err
    assert "Traceback" not in err
    assert len(state.log) == 1  # a 404 is not retried
    assert not dest.exists()


@pytest.mark.parametrize("where", ["stall-headers", "stall-body", "trickle"])
def test_a_stalled_server_gives_a_clear_error_within_a_bounded_time(served, tmp_path, where):
    server, state = served
    data = os.urandom(300_000)
    state.files["/slow/cased_L-24_H-1024_A-16.tar.gz"], state.modes["/slow/cased_L-24_H-1024_A-16.tar.gz"] = data, where
    dest = tmp_path / "weights"
    started = time.monotonic()
    with pytest.raises(DownloadError) as error:
        download.download_and_install("paddlehub", url=server.base + "/slow/", dest_dir=str(dest), retries=1,
                                      **FAST)
    elapsed = time.monotonic() - started
    assert elapsed < 2 * 2 * 1.0 + 3.0  # two attempts of at most 2 timeouts each, plus slack
    message = str(error.value)
    assert f"could not download {server.base}/slow/cased_L-24_H-1024_A-16.tar.gz after 2 attempts" in message
    if where == "stall-headers":
        assert "no answer within 1 s (the timeout)" in message
    elif where == "trickle":
        assert "the server is too slow:" in message and "(under 1024 bytes/s)" in message
        assert "the next run resumes" in message
    else:
        assert "the server stalled: no data for 1 s (the timeout)" in message
        assert "the next run resumes" in message
    assert not dest.exists()


def test_a_refused_connection_is_a_clear_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(DownloadError, match=rf"could not download http://127.0.0.1:{port}/cased_L-24_H-1024_A-16"
                                            r"\.tar\.gz after 2 attempts: cannot connect: .*[Rr]efused"):
        download.download_and_install("paddlehub", url=f"http://127.0.0.1:{port}/", dest_dir=str(tmp_path / "w"),
                                      retries=1, **FAST)


def test_download_refuses_a_destination_that_is_not_a_weights_dir(tmp_path):
    dest = tmp_path / "precious"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(DownloadError, match="neither a weights dir nor an empty folder"):
        download.download_and_install("paddlehub", url="http://127.0.0.1:9/", dest_dir=str(dest), **FAST)
    assert (dest / "notes.txt").read_text() == "keep me"
