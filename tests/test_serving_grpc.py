"""The embedded server over gRPC, called with the official tensorflow-serving-api stubs.

One server for the module, on a private copy of the toy pushed model with a second
version and labels stable=1, canary=2.
"""
from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from serving_helpers import (
    flat_png,
    model,
    noise_png,
    predict_request,
    sample_images,
    start_server,
    two_versions,
)
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tlpipe.serving.config import VersionPolicy
from tlpipe.serving.inference import InputLimits
from tlpipe.serving.manager import AVAILABLE
from tlpipe.serving.server import service_descriptors_available

MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def server(toy_model_dir, tmp_path_factory):
    base = two_versions(toy_model_dir, tmp_path_factory.mktemp("grpc"))
    (base / "not-a-version").mkdir()
    with start_server([model(base, policy=VersionPolicy("all"),
                             labels={"stable": 1, "canary": 2})],
                      limits=InputLimits(max_string_bytes=16 * 1024 * 1024,
                                         max_image_pixels=MAX_PIXELS)) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}",
                               options=[("grpc.max_send_message_length", 2 ** 31 - 1),
                                        ("grpc.max_receive_message_length", 2 ** 31 - 1)]) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def _outputs(response) -> dict[str, np.ndarray]:
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code()


def _in_process(server, blobs: list[bytes]) -> dict[str, np.ndarray]:
    """The same SavedModel (version 1 of the served copy) called directly."""
    loaded = tf.saved_model.load(str(Path(server.manager.models()[0].base_path) / "1"))
    result = loaded.signatures["serving_default"](image_bytes=tf.constant(blobs))
    return {k: v.numpy() for k, v in result.items()}


@pytest.fixture(scope="module")
def images(tiny_images) -> dict[str, bytes]:
    return sample_images(tiny_images)


def test_predict_jpeg_and_png_match_the_savedmodel_in_process(stub, images, server):
    blobs = list(images.values())
    response = stub.Predict(predict_request(blobs))
    got = _outputs(response)
    want = _in_process(server, blobs)
    assert got["probabilities"].shape == (len(blobs), 3)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6)
    assert got["class_id"].tolist() == want["class_id"].tolist()
    assert set(got["class_name"].tolist()) <= {b"class_a", b"class_b", b"class_c"}
    # the resolved version is echoed: the latest of the two served
    assert response.model_spec.name == "flowers"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"


def test_output_filter_returns_only_the_named_outputs(stub, images):
    request = predict_request([images["class_a.jpg"]])
    request.output_filter.append("class_name")
    assert set(stub.Predict(request).outputs) == {"class_name"}
    request.output_filter.append("logits")
    assert _code(lambda: stub.Predict(request)) == grpc.StatusCode.INVALID_ARGUMENT


def test_version_and_label_selection(stub, images):
    blob = [images["class_b.png"]]
    assert stub.Predict(predict_request(blob, version=1)).model_spec.version.value == 1
    assert stub.Predict(predict_request(blob, version=2)).model_spec.version.value == 2
    assert stub.Predict(predict_request(blob, label="stable")).model_spec.version.value == 1
    assert stub.Predict(predict_request(blob, label="canary")).model_spec.version.value == 2


@pytest.mark.parametrize("request_kwargs, code", [
    ({"model": "tulips"}, grpc.StatusCode.NOT_FOUND),
    ({"version": 7}, grpc.StatusCode.NOT_FOUND),
    ({"label": "nightly"}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"signature": "serving_nothing"}, grpc.StatusCode.FAILED_PRECONDITION),
])
def test_resolution_errors_use_tf_servings_codes(stub, images, request_kwargs, code):
    assert _code(lambda: stub.Predict(predict_request([images["class_a.jpg"]],
                                                      **request_kwargs))) == code


def _malformed_requests(images) -> dict:
    wrong_dtype = predict_request([images["class_a.jpg"]])
    wrong_dtype.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(np.zeros(2, np.float32)))
    wrong_name = predict_request([images["class_a.jpg"]])
    wrong_name.inputs["pixels"].CopyFrom(wrong_name.inputs.pop("image_bytes"))
    wrong_rank = predict_request([images["class_a.jpg"]])
    wrong_rank.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto([[images["class_a.jpg"]]]))
    return {
        "non-image bytes": predict_request([b"this is not an image"]),
        "one bad image in a batch": predict_request([images["class_a.jpg"], b"\x89PNG junk"]),
        "empty batch": predict_request([]),
        "wrong dtype": wrong_dtype,
        "wrong input name": wrong_name,
        "wrong rank": wrong_rank,
        "too many pixels": predict_request([flat_png(2000, 1000)]),
        "too many bytes": predict_request([b"\xff\xd8" + b"\0" * (17 * 1024 * 1024)]),
    }


def test_malformed_input_is_invalid_argument_and_the_server_keeps_serving(stub, images):
    for what, request in _malformed_requests(images).items():
        assert _code(lambda request=request: stub.Predict(request)) == grpc.StatusCode.INVALID_ARGUMENT, what
        ok = stub.Predict(predict_request([images["class_c.jpg"]]))
        assert _outputs(ok)["probabilities"].shape == (1, 3), what


def test_a_batch_over_grpcio_default_4mb_is_accepted(stub):
    big = [noise_png(700, 700, seed=i) for i in range(3)]  # ~4.4 MB of PNG
    assert sum(map(len, big)) > 4 * 1024 * 1024
    assert _outputs(stub.Predict(predict_request(big)))["class_id"].shape == (3,)


def _example(blob: bytes) -> example_pb2.Example:
    example = example_pb2.Example()
    example.features.feature["image"].bytes_list.value.append(blob)
    return example


def test_classify_with_tf_examples_scores_every_class(stub, images, server):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "flowers"
    request.model_spec.version.value = 1
    request.input.example_list.examples.extend(
        [_example(images["class_a.jpg"]), _example(images["class_b.png"])])
    response = stub.Classify(request)
    want = _in_process(server, [images["class_a.jpg"], images["class_b.png"]])
    assert response.model_spec.signature_name == "serving_examples"
    assert response.model_spec.version.value == 1
    assert len(response.result.classifications) == 2
    for row, classification in enumerate(response.result.classifications):
        assert [c.label for c in classification.classes] == ["class_a", "class_b", "class_c"]
        np.testing.assert_allclose([c.score for c in classification.classes],
                                   want["probabilities"][row], rtol=1e-5, atol=1e-6)


def test_classify_with_context_and_its_errors(stub, images):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "flowers"
    listed = request.input.example_list_with_context
    listed.context.CopyFrom(_example(images["class_c.jpg"]))
    listed.examples.add()  # every example takes its image from the context
    assert len(stub.Classify(request).result.classifications[0].classes) == 3
    empty = classification_pb2.ClassificationRequest()
    empty.model_spec.name = "flowers"
    assert _code(lambda: stub.Classify(empty)) == grpc.StatusCode.INVALID_ARGUMENT
    bad = classification_pb2.ClassificationRequest()
    bad.model_spec.name = "flowers"
    bad.input.example_list.examples.append(_example(b"not an image"))
    assert _code(lambda: stub.Classify(bad)) == grpc.StatusCode.INVALID_ARGUMENT


def test_multi_inference_classifies_and_regress_needs_a_regression_signature(stub, images):
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add()
    task.model_spec.name = "flowers"
    task.method_name = "tensorflow/serving/classify"
    request.input.example_list.examples.append(_example(images["class_a.png"]))
    response = stub.MultiInference(request)
    assert len(response.results[0].classification_result.classifications[0].classes) == 3
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "flowers"
    regress.input.example_list.examples.append(_example(images["class_a.png"]))
    # Regress is served (issue 18); this model has no `outputs` regression signature
    assert _code(lambda: stub.Regress(regress)) == grpc.StatusCode.INVALID_ARGUMENT


def test_get_model_metadata_reports_both_signatures(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "flowers"
    request.model_spec.version_label = "stable"
    response = stub.GetModelMetadata(request)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert list(default.inputs) == ["image_bytes"]
    assert set(default.outputs) == {"probabilities", "class_id", "class_name", "classes"}
    assert list(signatures.signature_def["serving_examples"].inputs) == ["examples"]
    request.metadata_field[:] = ["graph_def"]
    assert _code(lambda: stub.GetModelMetadata(request)) == grpc.StatusCode.INVALID_ARGUMENT


def test_get_model_status(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "flowers"
    statuses = model_stub.GetModelStatus(request).model_version_status
    assert [(s.version, s.state, s.status.error_code) for s in statuses] == [
        (2, AVAILABLE, 0), (1, AVAILABLE, 0)]  # the non-numeric directory is no version
    request.model_spec.version_label = "stable"
    assert [s.version for s in model_stub.GetModelStatus(request).model_version_status] == [1]
    request.model_spec.name = "tulips"
    assert _code(lambda: model_stub.GetModelStatus(request)) == grpc.StatusCode.NOT_FOUND


def test_reload_config_moves_a_label(model_stub, stub, images, server):
    from tensorflow_serving.config import model_server_config_pb2

    base = server.manager.models()[0].base_path
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(name="flowers", base_path=base,
                                                model_platform="tensorflow")
    entry.model_version_policy.all.SetInParent()
    entry.version_labels["stable"] = 2
    entry.version_labels["canary"] = 2
    try:
        response = model_stub.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config))
        assert response.status.error_code == 0
        request = predict_request([images["class_a.jpg"]], label="stable")
        assert stub.Predict(request).model_spec.version.value == 2
    finally:
        entry.version_labels["stable"] = 1
        model_stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config))
    bad = model_server_config_pb2.ModelServerConfig()
    bad.model_config_list.config.add(name="flowers")  # no base_path
    assert _code(lambda: model_stub.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=bad))) == grpc.StatusCode.INVALID_ARGUMENT


def test_health_checking(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService",
                    "tensorflow.serving.ModelService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.skipif(not service_descriptors_available(),
                    reason="tensorflow-serving-api 2.19.1 cannot import its service "
                           "descriptors under protobuf 6; reflection needs 2.21.0")
def test_reflection_lists_and_describes_the_services(channel):
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    reply = next(iter(reflection.ServerReflectionInfo(iter([request]))))
    names = {s.name for s in reply.list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "grpc.health.v1.Health"} <= names
    symbol = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="tensorflow.serving.PredictionService")
    reply = next(iter(reflection.ServerReflectionInfo(iter([symbol]))))
    assert reply.file_descriptor_response.file_descriptor_proto  # the service's descriptors


def test_requests_are_counted_by_model_version_and_status(server, stub, images):
    before = server.metrics.count("flowers", "INVALID_ARGUMENT")
    with pytest.raises(grpc.RpcError):
        stub.Predict(predict_request([b"junk"], version=1))
    assert server.metrics.count("flowers", "INVALID_ARGUMENT") == before + 1
    text = server.metrics.render()
    assert ':tensorflow:serving:request_count{model_name="flowers",version="1",API="predict",' \
           'entrypoint="GRPC",status="INVALID_ARGUMENT"}' in text
