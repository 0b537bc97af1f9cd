"""TF Serving's REST API on the embedded server: routes, JSON formats, errors, metrics."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from serving_helpers import model, sample_images, start_server, two_versions
from tlpipe.serving.config import VersionPolicy


@pytest.fixture(scope="module")
def images(tiny_images) -> dict[str, bytes]:
    return sample_images(tiny_images)


@pytest.fixture(scope="module")
def server(toy_model_dir, tmp_path_factory):
    base = two_versions(toy_model_dir, tmp_path_factory.mktemp("rest"))
    with start_server([model(base, policy=VersionPolicy("specific", versions=(1, 2)),
                             labels={"stable": 1})]) as running:
        yield running


def _call(server, path: str, body=None) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{server.rest_port}{path}"
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _b64(blob: bytes) -> dict:
    return {"b64": base64.b64encode(blob).decode()}


def test_model_status_routes(server):
    code, body = _call(server, "/v1/models/flowers")
    assert code == 200
    assert [(s["version"], s["state"], s["status"]["error_code"])
            for s in body["model_version_status"]] == [("2", "AVAILABLE", "OK"),
                                                        ("1", "AVAILABLE", "OK")]
    assert _call(server, "/v1/models/flowers/versions/1")[1]["model_version_status"][0][
        "version"] == "1"
    assert _call(server, "/v1/models/flowers/labels/stable")[1]["model_version_status"][0][
        "version"] == "1"
    assert _call(server, "/v1/models/tulips")[0] == 404
    assert _call(server, "/v1/models/flowers/labels/nightly")[0] == 400


def test_metadata_route(server):
    code, body = _call(server, "/v1/models/flowers/versions/1/metadata")
    assert code == 200
    assert body["model_spec"] == {"name": "flowers", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures["serving_default"]["inputs"]) == {"image_bytes"}
    assert signatures["serving_default"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"


def test_predict_row_and_columnar_formats_agree(server, images):
    blobs = [images["class_a.jpg"], images["class_b.png"]]
    code, rows = _call(server, "/v1/models/flowers:predict",
                       {"instances": [_b64(b) for b in blobs]})
    assert code == 200 and len(rows["predictions"]) == 2
    assert set(rows["predictions"][0]) == {"probabilities", "class_id", "class_name", "classes"}
    assert rows["predictions"][0]["classes"] == ["class_a", "class_b", "class_c"]
    code, columns = _call(server, "/v1/models/flowers/versions/2:predict",
                          {"signature_name": "serving_default",
                           "inputs": {"image_bytes": [_b64(b) for b in blobs]}})
    assert code == 200
    np.testing.assert_allclose([r["probabilities"] for r in rows["predictions"]],
                               columns["outputs"]["probabilities"], rtol=1e-6)
    assert [r["class_name"] for r in rows["predictions"]] == columns["outputs"]["class_name"]
    assert all(name.startswith("class_") for name in columns["outputs"]["class_name"])


def test_classify_route(server, images):
    code, body = _call(server, "/v1/models/flowers/labels/stable:classify",
                       {"examples": [{"image": _b64(images["class_c.jpg"])}]})
    assert code == 200
    [[first, second, third]] = body["results"]
    assert [first[0], second[0], third[0]] == ["class_a", "class_b", "class_c"]
    assert abs(first[1] + second[1] + third[1] - 1.0) < 1e-4


@pytest.mark.parametrize("path, body, code", [
    ("/v1/models/tulips:predict", {"instances": []}, 404),
    ("/v1/models/flowers/versions/9:predict", {"instances": []}, 404),
    ("/v1/models/flowers/labels/nightly:predict", {"instances": []}, 400),
    ("/v1/models/flowers:predict", {"signature_name": "nope", "instances": [{"b64": ""}]}, 400),
    ("/v1/models/flowers:predict", {"instances": [{"b64": "###"}]}, 400),
    ("/v1/models/flowers:predict", {"instances": []}, 400),
    ("/v1/models/flowers:predict", {"instances": [1.5]}, 400),
    ("/v1/models/flowers:predict", {"instances": [_b64(b"not an image")]}, 400),
    ("/v1/models/flowers:predict", b"{not json", 400),
    ("/v1/models/flowers:predict", {"instances": [], "inputs": []}, 400),
    ("/v1/models/flowers:regress", {"examples": [{}]}, 400),  # no regression signature
    ("/v1/nothing", {}, 400),  # TF Serving: "Malformed request"
    ("/nothing", {}, 404),
])
def test_errors_are_json_with_tf_servings_http_codes(server, images, path, body, code):
    status, payload = _call(server, path, body)
    assert status == code
    assert set(payload) == {"error"} and payload["error"]


def test_prometheus_metrics_count_rest_requests(server, images):
    code, body = _call(server, "/v1/models/flowers/versions/1:predict",
                       {"instances": [_b64(images["class_a.jpg"])]})
    assert code == 200, body
    with urllib.request.urlopen(
            f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics") as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    assert ':tensorflow:serving:request_count{model_name="flowers",version="1",' \
           'API="predict",entrypoint="REST",status="OK"}' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="flowers",version="1",' \
           'API="predict",entrypoint="REST",le="+Inf"}' in text
