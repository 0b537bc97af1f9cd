"""Helpers for the tests that hold `tlpipe serve` to TF Serving's own tests: start a server on
free ports over models from `tfs_models`, call it over gRPC and REST, build TF Serving's
request shapes."""
from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

import grpc
import tfs_models
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tlpipe.serving.cli import register
from tlpipe.serving.config import ModelConfig, VersionPolicy
from tlpipe.serving.server import ModelServer, ServerOptions

RPC_TIMEOUT = 10.0


def start(models: dict[str, str], **options) -> ModelServer:
    """A started server: model name -> base path; `policy` and `labels` (label -> version)
    apply to every model; any ServerOptions field as keyword."""
    options.setdefault("grpc_port", 0)
    options.setdefault("rest_port", 0)
    options.setdefault("file_system_poll_wait_seconds", 0)
    policy, labels = options.pop("policy", VersionPolicy()), options.pop("labels", {})
    configs = [ModelConfig(name, str(path), policy, labels) for name, path in models.items()]
    return ModelServer(ServerOptions(models=configs, **options)).start()


def stubs(target: str):
    channel = grpc.insecure_channel(target)
    return (channel, prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


def half_plus_request(model_name: str = "default", signature_name: str = "serving_default",
                      specify_output: bool = True, batch_input: bool = False):
    """TF Serving's VerifyPredictRequest request: x = [2.0] (shape [1], or [1, 1] batched)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    return request


def rest(port: int, path: str, body=None, method: str | None = None) -> tuple[int, dict]:
    """(HTTP status, decoded JSON) of one REST call; a dict or raw bytes as the body."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=RPC_TIMEOUT) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def predict_half(server, **request_options):
    channel, prediction, _ = stubs(f"localhost:{server.grpc_port}")
    with channel:
        return prediction.Predict(half_plus_request(**request_options), RPC_TIMEOUT)


def verify_prediction(result, expected: float, model_name: str = "default",
                       signature_name: str = "serving_default") -> None:
    """VerifyPredictRequest's checks: typed float_val, one value, model spec echoed."""
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs["y"].float_val) == [expected]
    assert (result.model_spec.name, result.model_spec.signature_name,
            result.model_spec.version.value) == (model_name, signature_name, tfs_models.VERSION)


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tlpipe")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])
