"""A small client for any TF Serving server (this one or tensorflow_model_server).

It speaks only TF Serving's public API (gRPC PredictionService.Predict, or REST :predict) on
the `serving_default` signature: raw image bytes in, `probabilities`/`class_id`/`class_name`
and `classes` (every class name in id order) out. For a model without `classes`, names beyond
the top class come from `class_name` values seen in the same response; others print as `#<id>`.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
IMAGE_INPUT = "image_bytes"


class ClientError(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Prediction:
    class_id: int
    class_name: str
    probability: float
    top: list[tuple[str, float]]  # (name, probability), best first, top_k long
    version: int | None  # the version that answered (gRPC echoes it; REST does not)


def _top(probabilities: np.ndarray, names: dict[int, str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probabilities, kind="stable")[:max(1, k)]
    return [(names.get(int(i), f"#{int(i)}"), float(probabilities[i])) for i in order]


def _predictions(probabilities: np.ndarray, class_ids, class_names, top_k: int,
                 version: int | None, all_names: list[str] | None = None
                 ) -> list[Prediction]:
    """`all_names`: the model's `classes` output (every name in id order), when it has one."""
    names = {int(i): n for i, n in zip(class_ids, class_names)}
    names.update(enumerate(all_names or []))
    return [Prediction(int(class_ids[row]), class_names[row],
                       float(probabilities[row][int(class_ids[row])]),
                       _top(np.asarray(probabilities[row]), names, top_k), version)
            for row in range(len(class_ids))]


def predict_request(images: Sequence[bytes], model: str = "flowers",
                    version: int | None = None, label: str | None = None,
                    signature: str = DEFAULT_SIGNATURE):
    """A PredictRequest carrying raw image bytes, for any TF Serving server."""
    from tensorflow_serving.apis import predict_pb2
    from tlpipe.serving.tensors import to_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    elif label is not None:
        request.model_spec.version_label = label
    batch = np.empty(len(images), dtype=object)
    batch[:] = list(images)
    request.inputs[IMAGE_INPUT].CopyFrom(to_tensor_proto(batch))
    return request


class ServingClient:
    """`ServingClient("localhost:8500").predict([jpeg_bytes])`; `rest=True` for port 8501."""

    def __init__(self, server: str, *, rest: bool = False, timeout: float = 30.0,
                 root_certificates: bytes | None = None):
        self.server = server
        self.rest = rest
        self.timeout = timeout
        self._tls = root_certificates is not None
        self._channel = None
        self._ssl_context = None
        if rest and self._tls:
            import ssl

            self._ssl_context = ssl.create_default_context(cadata=root_certificates.decode())
        if not rest:
            import grpc
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            options = [("grpc.max_send_message_length", 2 ** 31 - 1),
                       ("grpc.max_receive_message_length", 2 ** 31 - 1)]
            if self._tls:
                self._channel = grpc.secure_channel(
                    server, grpc.ssl_channel_credentials(root_certificates), options)
            else:
                self._channel = grpc.insecure_channel(server, options)
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def predict(self, images: Sequence[bytes], model: str = "flowers",
                version: int | None = None, label: str | None = None,
                top_k: int = 1) -> list[Prediction]:
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        if not images:
            return []
        if self.rest:
            return self._predict_rest(images, model, version, label, top_k)
        return self._predict_grpc(images, model, version, label, top_k)

    def _predict_grpc(self, images, model, version, label, top_k) -> list[Prediction]:
        import grpc
        from tlpipe.serving.tensors import to_ndarray

        request = predict_request(images, model, version, label)
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise ClientError(err.code().name, err.details() or "") from None
        outputs = {k: to_ndarray(v) for k, v in response.outputs.items()}
        names = [n.decode("utf-8", "replace") for n in outputs["class_name"].tolist()]
        every = ([n.decode("utf-8", "replace") for n in outputs["classes"][0].tolist()]
                 if "classes" in outputs and len(outputs["classes"]) else None)
        return _predictions(outputs["probabilities"], outputs["class_id"].tolist(), names,
                            top_k, response.model_spec.version.value or None, every)

    def _predict_rest(self, images, model, version, label, top_k) -> list[Prediction]:
        path = f"/v1/models/{model}"
        if version is not None:
            path += f"/versions/{version}"
        elif label is not None:
            path += f"/labels/{label}"
        scheme = "https" if self._tls else "http"
        body = json.dumps({"signature_name": DEFAULT_SIGNATURE,
                           "instances": [{"b64": base64.b64encode(i).decode()} for i in images]})
        request = urllib.request.Request(f"{scheme}://{self.server}{path}:predict",
                                         data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self._ssl_context) as reply:
                payload = json.loads(reply.read())
        except urllib.error.HTTPError as err:
            try:
                message = json.loads(err.read()).get("error", "")
            except ValueError:
                message = err.reason
            raise ClientError(f"HTTP {err.code}", message) from None
        except urllib.error.URLError as err:
            raise ClientError("UNAVAILABLE", str(err.reason)) from None
        rows = payload["predictions"]
        return _predictions(np.asarray([r["probabilities"] for r in rows], dtype=np.float32),
                            [int(r["class_id"]) for r in rows],
                            [str(r["class_name"]) for r in rows], top_k, version,
                            [str(n) for n in rows[0]["classes"]] if rows and "classes" in rows[0]
                            else None)
