"""``hub serving``: the request checks in process, then ``hub serving start -m bert_cased_L-24_H-1024_A-16`` in a
subprocess (isolated HUB_HOME, tiny weights, 127.0.0.1 on a free port) answering real HTTP requests."""

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from bert_cased_L_24_H_1024_A_16.device import gpu_available
from bert_cased_L_24_H_1024_A_16.serving import MAX_TEXTS, RequestError, serve_request, validate_request
from bert_cased_L_24_H_1024_A_16.weights import MissingWeightsError

from conftest import hub_executable
from test_cli import HUB_NAME, hub_installation

# -- the checks, in process ----------------------------------------------------------------------------------------


def test_a_good_request_is_completed_with_defaults():
    assert validate_request({"texts": ["plain", ["a"], ["a", "b"]]}) == {
        "texts": [("plain",), ("a",), ("a", "b")], "batch_size": 1, "max_seq_len": 512, "use_gpu": False,
        "precision": "fp32", "return_sequence": True, "return_tokens": False}
    assert validate_request({"texts": [["x"]], "batch_size": 8, "max_seq_len": 1, "use_gpu": False,
                             "return_sequence": False, "return_tokens": True})["batch_size"] == 8


@pytest.mark.parametrize("kwargs, message", [
    ({}, 'missing "texts"'),
    ({"text": [["a"]]}, "unknown key 'text'; accepted: texts, batch_size, max_seq_len, use_gpu, precision"),
    ({"texts": [["a"]], "sign_name": "x", "data": 1}, "unknown keys 'data', 'sign_name'"),
    ({"texts": "a"}, "texts must be an array of samples, got string"),
    ({"texts": {"a": 1}}, "texts must be an array of samples, got object"),
    ({"texts": []}, "texts is empty"),
    ({"texts": [[]]}, "texts[0] must be a string, [text_a] or [text_a, text_b]; got an array of 0"),
    ({"texts": [["a", "b", "c"]]}, "got an array of 3"),
    ({"texts": [["a"], 5]}, "texts[1] must be a string, [text_a] or [text_a, text_b]; got integer"),
    ({"texts": [["a", None]]}, "texts[0][1] must be a string, got null"),
    ({"texts": [["a"]], "batch_size": 0}, "batch_size must be an integer from 1 to 256, got 0"),
    ({"texts": [["a"]], "batch_size": "8"}, "batch_size must be an integer from 1 to 256, got '8'"),
    ({"texts": [["a"]], "batch_size": True}, "batch_size must be an integer"),
    ({"texts": [["a"]], "batch_size": 2.0}, "batch_size must be an integer"),
    ({"texts": [["a"]], "max_seq_len": 513}, "max_seq_len must be an integer from 1 to 512, got 513"),
    ({"texts": [["a"]], "use_gpu": "yes"}, "use_gpu must be true or false, got 'yes'"),
    ({"texts": [["a"]], "return_tokens": 1}, "return_tokens must be true or false, got 1"),
    ({"texts": [["a"]], "precision": "fp16"}, 'precision must be one of "fp32", "bf16", "int8", got \'fp16\''),
    ({"texts": [["a"]], "precision": ["bf16"]}, "precision must be one of"),
])
def test_malformed_requests_are_refused_with_a_message(kwargs, message):
    with pytest.raises(RequestError) as error:
        validate_request(kwargs)
    assert message in str(error.value) and error.value.status == 400


def test_too_large_a_reply_is_a_413():
    with pytest.raises(RequestError, match="at most 1024") as error:
        validate_request({"texts": [["a"]] * (MAX_TEXTS + 1), "return_sequence": False})
    assert error.value.status == 413
    assert validate_request({"texts": [["a"]] * MAX_TEXTS, "return_sequence": False})
    with pytest.raises(RequestError, match='token features exceed 16384; .* "return_sequence": false') as error:
        validate_request({"texts": [["a"]] * 33})  # 33 x 512
    assert error.value.status == 413
    assert validate_request({"texts": [["a"]] * 33, "max_seq_len": 128})


class _FakeModule:
    def __init__(self, error=None):
        self.error = error

    def get_embedding(self, texts, use_gpu=False, batch_size=1, max_seq_len=512):
        if self.error:
            raise self.error
        return [[np.ones(2, np.float32), np.zeros((3, 2), np.float32)] for _ in texts]


@pytest.mark.parametrize("module, body, status, message", [
    (_FakeModule(), {"texts": ["a", ["b", "c"]]}, 200, None),
    (_FakeModule(), {"texts": [["a"]], "batch_size": -1}, 400, "batch_size must be an integer"),
    (_FakeModule(MissingWeightsError("No pretrained weights found; `python -m x download`")), {"texts": ["a"]},
     503, "No pretrained weights found"),
    (_FakeModule(ValueError("max_seq_len is more than the 64 positions")), {"texts": ["a"]}, 400, "64 positions"),
    (_FakeModule(RuntimeError("out of memory")), {"texts": ["a"]}, 500, "out of memory"),
])
def test_the_reply_status_is_set_inside_a_catch_all_like_paddlehubs(module, body, status, message):
    """PaddleHub's predict_v2 turns every exception into a 200 reply; the serving method still sets the status."""
    flask = pytest.importorskip("flask")
    app = flask.Flask("paddlehub_like")

    @app.route("/predict", methods=["POST"])
    def predict():
        try:
            return {"status": "000", "msg": "", "results": serve_request(module, flask.request.json)}
        except Exception as e:  # what paddlehub.serving.app_compat.predict_v2 does
            return {"status": "101", "msg": str(e), "results": ""}

    reply = app.test_client().post("/predict", json=body)
    assert reply.status_code == status
    if message:
        assert reply.json["status"] == "101" and message in reply.json["msg"]
    else:
        assert reply.json["results"] == [{"pooled_output": [1.0, 1.0], "num_tokens": 3,
                                          "sequence_output": [[0.0, 0.0]] * 3}] * 2


def test_outside_a_request_errors_just_raise():
    with pytest.raises(RequestError):
        serve_request(_FakeModule(), {"texts": []})


# -- the server ----------------------------------------------------------------------------------------------------

def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(base URL, weights dir)`` of a running ``hub serving`` with the module and tiny weights."""
    pytest.importorskip("paddlehub")
    env, root = hub_installation(tmp_path_factory)
    port = _free_port()
    log = open(tmp_path_factory.mktemp("serving") / "server.log", "w+")
    process = subprocess.Popen([hub_executable(), "serving", "start", "-m", HUB_NAME, "-p", str(port)], env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"hub serving exited with {process.returncode}:\n{log.read()}")
            try:
                with urllib.request.urlopen(base + "/", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"hub serving did not answer within 180 s:\n{log.read()}")
            time.sleep(0.5)
        yield base, root / "weights"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


def _post(base, body, content_type="application/json", path=f"/predict/{HUB_NAME}"):
    """``(HTTP status, parsed JSON reply or the raw text)`` of a POST."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """The module class in this process, on the server's weights (its caches in a temporary HUB_HOME)."""
    from bert_cased_L_24_H_1024_A_16.module import BertCasedLarge

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HUB_HOME", str(tmp_path_factory.mktemp("reference_home")))
        yield BertCasedLarge(weights_dir=str(server[1]))


def test_a_good_request_gets_features_of_the_right_shapes(server, reference):
    base, _ = server
    texts = [["Hello world!"], ["A question?", "An answer."], "A bare string."]
    status, reply = _post(base, {"texts": texts, "batch_size": 2, "return_tokens": True})
    assert status == 200, reply
    assert reply["status"] == "000" and reply["msg"] == ""
    results = reply["results"]
    assert [item["num_tokens"] for item in results] == [5, 9, 6]
    assert results[1]["tokens"] == ["[CLS]", "A", "question", "?", "[SEP]", "An", "answer", ".", "[SEP]"]
    expected = reference.get_embedding([["Hello world!"], ["A question?", "An answer."], ["A bare string."]])
    for item, (pooled, sequence) in zip(results, expected):
        assert len(item["pooled_output"]) == 32
        assert np.asarray(item["sequence_output"]).shape == (item["num_tokens"], 32)
        np.testing.assert_allclose(item["pooled_output"], pooled, atol=1e-5)
        np.testing.assert_allclose(item["sequence_output"], sequence, atol=1e-5)

    status, reply = _post(base, {"texts": [["Hello world!"]], "return_sequence": False, "max_seq_len": 3})
    assert status == 200 and reply["status"] == "000"
    assert set(reply["results"][0]) == {"pooled_output", "num_tokens"} and reply["results"][0]["num_tokens"] == 3


def test_bf16_is_served_where_the_cpu_has_it(server, reference):
    from bert_cased_L_24_H_1024_A_16.embedding import cpu_supports_bf16

    base, _ = server
    status, reply = _post(base, {"texts": [["Hello world!"]], "precision": "bf16"})
    if not cpu_supports_bf16():
        assert status == 400 and reply["status"] == "101", reply
        return
    assert status == 200 and reply["status"] == "000", reply
    (pooled, _), = reference.get_embedding([["Hello world!"]])
    got = np.asarray(reply["results"][0]["pooled_output"])
    assert np.dot(got, pooled) / (np.linalg.norm(got) * np.linalg.norm(pooled)) > 0.999


@pytest.mark.parametrize("body, content_type, status, message", [
    (b'{"texts": [["a"]', "application/json", 400, None),  # not JSON: Flask's own 400
    (b'{"texts": [["a"]]}', "text/plain", 415, None),  # not declared as JSON: Flask's own 415
    ([["a"]], "application/json", 400, "the request body must be a JSON object"),
    ("texts", "application/json", 400, "got a JSON string"),
    (None, "application/json", 400, "got a JSON null"),  # PaddleHub alone answers 200, "112"
    ({"texts": []}, "application/json", 400, "texts is empty"),
    ({"texts": "a"}, "application/json", 400, "texts must be an array of samples"),
    ({"texts": [[1, 2]]}, "application/json", 400, "texts[0][0] must be a string, got integer"),
    ({"texts": [["a"]], "batch_size": "big"}, "application/json", 400, "batch_size must be an integer"),
    ({"texts": [["a"]], "module_info": {}}, "application/json", 400, "unknown key 'module_info'"),
    ({"texts": [["a"]], "use_gpu": True}, "application/json", 400, "this server has no GPU"),
])
def test_malformed_requests_get_a_4xx_and_the_server_keeps_serving(server, body, content_type, status, message):
    base, _ = server
    if message == "this server has no GPU" and gpu_available():
        pytest.skip("this machine has a GPU")
    got_status, reply = _post(base, body, content_type)
    assert got_status == status, reply
    if message is not None:
        assert reply["status"] == "101" and message in reply["msg"], reply
    else:
        assert reply  # Flask's page says why
    got_status, reply = _post(base, {"texts": [["Still serving?"]]})
    assert got_status == 200 and reply["status"] == "000" and len(reply["results"]) == 1
