"""TF Serving's `saved_model_counter` shape: stateful TF1 signatures with no inputs (Predict
with an empty input map), served by the session loader, which keeps state across requests."""
from __future__ import annotations

import pytest
import tfs_models
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2
from tfs_support import RPC_TIMEOUT, rest, start, stubs


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("counter") / "counter"
    tfs_models.counter_tf1(base)
    with start({"counter": base}) as running:
        yield running


def _call(server, signature: str, delta: float | None = None) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "counter"
    request.model_spec.signature_name = signature
    if delta is not None:
        request.inputs["delta"].dtype = types_pb2.DT_FLOAT
        request.inputs["delta"].float_val.append(delta)
    channel, prediction, _ = stubs(f"127.0.0.1:{server.grpc_port}")
    with channel:
        output = prediction.Predict(request, RPC_TIMEOUT).outputs["output"]
    assert output.dtype == types_pb2.DT_FLOAT and not output.tensor_shape.dim
    return output.float_val[0]


def test_counter_signatures_keep_state(server):
    assert _call(server, "reset_counter") == 0.0
    assert _call(server, "incr_counter") == 1.0
    assert _call(server, "incr_counter") == 2.0
    assert _call(server, "incr_counter_by", 3.0) == 5.0
    assert _call(server, "get_counter") == 5.0
    assert _call(server, "reset_counter") == 0.0


def test_counter_over_rest_columnar_scalar(server):
    rest(server.rest_port, "/v1/models/counter:predict",
         {"signature_name": "reset_counter", "inputs": {}})
    assert rest(server.rest_port, "/v1/models/counter:predict",
                {"signature_name": "incr_counter_by", "inputs": {"delta": 4.0}}) == (
        200, {"outputs": 4.0})
