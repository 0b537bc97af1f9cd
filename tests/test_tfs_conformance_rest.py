"""TF Serving's REST handler checks (http_rest_api_handler_test.cc), re-expressed against
`tlpipe serve` over HTTP, with the half_plus_two look-alike at versions 123 and 124 and the
label `stable` -> 124 (the upstream fixture's shape)."""
from __future__ import annotations

import json
import urllib.request

import pytest
import tfs_models
from tfs_support import rest, start
from tlpipe.serving.config import VersionPolicy

MODEL = "/v1/models/default"
UINT64_MAX = str(2 ** 64 - 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("rest") / "half_plus_two"
    tfs_models.two_versions_tf1(base)
    with start({"default": base}, policy=VersionPolicy("all"), labels={"stable": 124}) as running:
        yield running


@pytest.mark.parametrize("method,path,message", [  # UnsupportedApiCalls
    ("GET", "/v1/foo", "Malformed request"),
    ("POST", "/v1/foo", "Malformed request"),
    ("GET", "/v1/models", "Missing model name"),
    ("GET", "/v1/models/debug/model_name", "Malformed request"),
    ("POST", "/v1/models", "Malformed request"),
    ("GET", "/v1/models/foo:predict", "Malformed request"),
    ("GET", "/v1/models/foo/version/50:predict", "Malformed request"),
    ("POST", "/v1/models/foo/version/50:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/HELLO:regress", "Malformed request"),
    ("POST", f"/v1/models/foo/versions/{UINT64_MAX}:regress", "Failed to convert version"),
    ("POST", "/v1/models/foo/metadata", "Malformed request"),
    ("POST", "/v1/models/foo/label/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/some_label:regress", "Malformed request"),
])
def test_unsupported_api_calls(server, method, path, message):
    code, body = rest(server.rest_port, path, b"" if method == "POST" else None, method)
    assert code == 400 and message in body["error"]


@pytest.mark.parametrize("path", ["/v1/models/foo:predict", "/v1/models/foo/versions/50:predict",
                                  f"{MODEL}/versions/99:predict"])
def test_predict_model_name_version_errors(server, path):  # PredictModelNameVersionErrors
    assert rest(server.rest_port, path, {"instances": [1]})[0] == 404


@pytest.mark.parametrize("path,body,message", [  # PredictRequestErrors
    (f"{MODEL}:predict", b"", "JSON Parse error: The document is empty"),
    (f"{MODEL}:predict", b"instances = [1, 2]", "JSON Parse error: Invalid value"),
    (f"{MODEL}:predict", {"instances": ["x", "y"]}, "not of expected type: float"),
    (f"{MODEL}/labels/nonexistent:predict", {"instances": ["x", "y"]},
     "Unrecognized servable version label"),
    (f"{MODEL}:predict", {"signature_name": 100}, "'signature_name' key must be a string value."),
])
def test_predict_request_errors(server, path, body, message):
    code, payload = rest(server.rest_port, path, body)
    assert code == 400 and message in payload["error"]


@pytest.mark.parametrize("path,body,expected", [  # Predict
    (f"{MODEL}:predict", {"instances": [[1.0, 2.0], [3.0, 4.0]]},
     {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
    (f"{MODEL}/versions/123:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
    (f"{MODEL}/labels/stable:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
    (f"{MODEL}:predict", {"signature_name": "serving_default", "instances": [3.0, 4.0]},
     {"predictions": [3.5, 4.0]}),
    (f"{MODEL}:predict", {"signature_name": "serving_default", "inputs": [3.0, 4.0]},
     {"outputs": [3.5, 4.0]}),
    # Regress
    (f"{MODEL}:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]},
     {"results": [42]}),
    (f"{MODEL}/versions/123:regress", {"signature_name": "regress_x_to_y",
                                       "examples": [{"x": 80.0}]}, {"results": [42]}),
    (f"{MODEL}/labels/stable:regress", {"signature_name": "regress_x_to_y",
                                        "examples": [{"x": 80.0}]}, {"results": [42]}),
    # Classify
    (f"{MODEL}:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]},
     {"results": [[["", 12]]]}),
    (f"{MODEL}/versions/123:classify", {"signature_name": "classify_x_to_y",
                                        "examples": [{"x": 10.0}]}, {"results": [[["", 7]]]}),
])
def test_predict_regress_classify(server, path, body, expected):
    data = json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=data)
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.headers["Content-Type"] == "application/json"
        assert json.loads(reply.read()) == expected


def test_get_status(server):  # GetStatus
    ok = {"error_code": "OK", "error_message": ""}
    assert rest(server.rest_port, MODEL) == (200, {"model_version_status": [
        {"version": "124", "state": "AVAILABLE", "status": ok},
        {"version": "123", "state": "AVAILABLE", "status": ok}]})
    assert rest(server.rest_port, f"{MODEL}/versions/123") == (200, {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": ok}]})
    assert rest(server.rest_port, f"{MODEL}/labels/stable") == (200, {"model_version_status": [
        {"version": "124", "state": "AVAILABLE", "status": ok}]})


def test_get_model_metadata(server):  # GetModelMetadata
    for path, version in ((f"{MODEL}/metadata", "124"), (f"{MODEL}/versions/123/metadata", "123")):
        code, body = rest(server.rest_port, path)
        assert code == 200
        assert body["model_spec"] == {"name": "default", "signature_name": "", "version": version}
        default = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert default["method_name"] == "tensorflow/serving/predict"
        assert default["inputs"]["x"]["dtype"] == "DT_FLOAT"
