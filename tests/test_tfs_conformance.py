"""TF Serving's own end-to-end checks (tensorflow_model_server_test.py and its test base),
re-expressed against `tlpipe serve` with look-alike models built by `tfs_models`.

Each test names the upstream test it ports (flag checks: test_tfs_conformance_flags.py; the
REST handler's: test_tfs_conformance_rest.py). Not ported (see the issue's closing note):
testPredictOnTfLite / testPredictWithSignatureDefOnTfLite (TFLite), test_profiler_service_*
(profiler service), test_tf_text (needs the tensorflow_text op library), _TestBadModel (not
run upstream either: no test method calls it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import urllib.request

import grpc
import pytest
import tensorflow as tf
import tfs_models
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    regression_pb2,
)
from tfs_support import (
    RPC_TIMEOUT,
    half_plus_request,
    predict_half,
    rest,
    serve_args,
    start,
    stubs,
    verify_prediction,
)

VERSION = tfs_models.VERSION


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfs_models")
    tfs_models.half_plus_two_tf1(root / "half_plus_two")
    tfs_models.half_plus_two_tf2(root / "half_plus_two_tf2")
    tfs_models.half_plus_three_tf1(root / "half_plus_three")
    return root


@pytest.fixture(scope="module")
def tf1(models):
    with start({"default": models / "half_plus_two"}) as server:
        yield server


@pytest.fixture(scope="module")
def tf2(models):
    with start({"default": models / "half_plus_two_tf2"}) as server:
        yield server


@pytest.fixture(params=["tf1", "tf2"])
def either(request):
    return request.getfixturevalue(request.param)


def test_get_model_status(tf1):  # testGetModelStatus
    channel, _, model_service = stubs(f"localhost:{tf1.grpc_port}")
    with channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "default"
        result = model_service.GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    status = result.model_version_status[0]
    assert (status.version, status.state, status.status.error_code) == (
        VERSION, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)


def test_get_model_metadata(tf1):  # testGetModelMetadata
    channel, prediction, _ = stubs(f"localhost:{tf1.grpc_port}")
    with channel:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "default"
        result = prediction.GetModelMetadata(request, RPC_TIMEOUT)
    assert (result.model_spec.name, result.model_spec.version.value) == ("default", VERSION)
    assert list(result.metadata) == ["signature_def"]


def test_classify(either):  # testClassify, testClassifyTf2
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
    channel, prediction, _ = stubs(f"localhost:{either.grpc_port}")
    with channel:
        result = prediction.Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    assert (result.model_spec.name, result.model_spec.signature_name,
            result.model_spec.version.value) == ("default", "classify_x_to_y", VERSION)


def test_regress(either):  # testRegress, testRegressTf2
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
    channel, prediction, _ = stubs(f"localhost:{either.grpc_port}")
    with channel:
        result = prediction.Regress(request, RPC_TIMEOUT)
    assert [r.value for r in result.result.regressions] == [3.0]
    assert (result.model_spec.name, result.model_spec.signature_name,
            result.model_spec.version.value) == ("default", "regress_x_to_y", VERSION)


def test_multi_inference(either):  # testMultiInference, testMultiInferenceTf2
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                              ("classify_x_to_y", "tensorflow/serving/classify")):
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
    channel, prediction, _ = stubs(f"localhost:{either.grpc_port}")
    with channel:
        result = prediction.MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for task, answer in zip(request.tasks, result.results):
        assert (answer.model_spec.name, answer.model_spec.signature_name,
                answer.model_spec.version.value) == ("default", task.model_spec.signature_name,
                                                     VERSION)


@pytest.mark.parametrize("specify_output", [True, False])
def test_predict_saved_model(either, specify_output):  # testPredictSavedModel (_TestPredict)
    verify_prediction(predict_half(either, specify_output=specify_output), 3.0)


def test_good_model_config(models, tmp_path):  # testGoodModelConfig
    config = tmp_path / "good_model_config.txt"
    config.write_text(f'model_config_list: {{ config: {{ name: "half_plus_two", base_path: '
                      f'"{models / "half_plus_two"}", model_platform: "tensorflow" }}, '
                      f'config: {{ name: "half_plus_three", base_path: '
                      f'"{models / "half_plus_three"}", model_platform: "tensorflow" }} }}')
    args = serve_args("--model_config_file", str(config), "--port=0", "--rest_api_port=0",
                       "--file_system_poll_wait_seconds=0")
    from tlpipe.serving.cli import server_options
    from tlpipe.serving.server import ModelServer

    with ModelServer(server_options(args)).start() as server:
        for specify_output in (True, False):
            verify_prediction(predict_half(server, model_name="half_plus_two",
                                           specify_output=specify_output), 3.0, "half_plus_two")
            verify_prediction(predict_half(server, model_name="half_plus_three",
                                           specify_output=specify_output), 4.0, "half_plus_three")


def _config_text(name: str, path) -> str:
    return (f'model_config_list: {{ config: {{ name: "{name}", base_path: "{path}", '
            f'model_platform: "tensorflow" }} }}')


@pytest.mark.parametrize("poll_seconds", [1, 0])
def test_model_config_reload(models, tmp_path, poll_seconds):
    # testModelConfigReload (poll 1 s: the new config is served) and
    # testModelConfigReloadWithZeroPollPeriod (poll 0: the old one still is)
    config = tmp_path / "model_config.txt"
    config.write_text(_config_text("half_plus_two", models / "half_plus_two"))
    args = serve_args("--model_config_file", str(config), "--port=0", "--rest_api_port=0",
                       f"--model_config_file_poll_wait_seconds={poll_seconds}")
    from tlpipe.serving.cli import server_options
    from tlpipe.serving.server import ModelServer

    with ModelServer(server_options(args)).start() as server:
        verify_prediction(predict_half(server, model_name="half_plus_two", specify_output=False),
                           3.0, "half_plus_two")
        time.sleep(0.05)  # a distinct mtime for the rewrite
        config.write_text(_config_text("half_plus_three", models / "half_plus_three"))
        os.utime(config, ns=(time.time_ns(), time.time_ns() + 10**9))
        if poll_seconds:
            deadline = time.monotonic() + 20
            while "half_plus_three" not in server.manager.loaded() and time.monotonic() < deadline:
                time.sleep(0.2)
            verify_prediction(predict_half(server, model_name="half_plus_three",
                                           specify_output=False), 4.0, "half_plus_three")
        else:
            time.sleep(poll_seconds + 1)
            verify_prediction(predict_half(server, model_name="half_plus_two",
                                           specify_output=False), 3.0, "half_plus_two")


def test_classify_rest(tf1):  # testClassifyREST
    assert rest(tf1.rest_port, "/v1/models/default:classify",
                {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}) == \
        (200, {"results": [[["", 3.0]]]})


def test_regress_rest(tf1):  # testRegressREST
    assert rest(tf1.rest_port, "/v1/models/default:regress",
                {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}) == \
        (200, {"results": [3.0]})


def test_predict_rest(tf1):  # testPredictREST
    assert rest(tf1.rest_port, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]}) == \
        (200, {"predictions": [3.0, 3.5, 4.0]})


def test_predict_columnar_rest(tf1):  # testPredictColumnarREST
    assert rest(tf1.rest_port, "/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]}) == \
        (200, {"outputs": [3.0, 3.5, 4.0]})


def test_get_status_rest(tf1):  # testGetStatusREST
    assert rest(tf1.rest_port, "/v1/models/default") == (200, {"model_version_status": [
        {"version": str(VERSION), "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]})


def test_get_model_metadata_rest(tf1):  # testGetModelMetadataREST
    code, body = rest(tf1.rest_port, "/v1/models/default/metadata")
    assert code == 200
    assert body["model_spec"] == {"name": "default", "signature_name": "", "version": str(VERSION)}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "regress_x_to_y", "regress_x_to_y2",
                               "regress_x2_to_y3", "classify_x_to_y"}
    regress = signatures["regress_x2_to_y3"]
    assert regress["method_name"] == "tensorflow/serving/regress"
    assert regress["defaults"] == {}  # default-valued fields printed, as TF Serving does
    assert regress["inputs"]["inputs"] == {
        "dtype": "DT_FLOAT", "name": "x2:0", "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}],
            "unknown_rank": False}}


def test_prometheus_endpoint(models, tmp_path):  # testPrometheusEndpoint
    monitoring = tmp_path / "monitoring_config.txt"
    monitoring.write_text('prometheus_config: { enable: true, path: "/monitoring/prometheus/metrics" }')
    args = serve_args("--model_base_path", str(models / "half_plus_two"), "--model_name=default",
                       "--port=0", f"--monitoring_config_file={monitoring}")
    from tlpipe.serving.cli import server_options
    from tlpipe.serving.server import ModelServer

    options = dataclasses.replace(server_options(args), rest_port=0)  # any free port
    with ModelServer(options).start() as server:
        predict_half(server)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}"
                                    "/monitoring/prometheus/metrics", timeout=10) as reply:
            assert "# TYPE" in reply.read().decode()


def test_predict_uds(models, tmp_path):  # testPredictUDS
    socket_path = tmp_path / "server.sock"
    with start({"default": models / "half_plus_two"}, grpc_socket_path=str(socket_path)):
        channel, prediction, _ = stubs(f"unix:{socket_path}")
        with channel:
            result = prediction.Predict(half_plus_request(specify_output=False), RPC_TIMEOUT)
        verify_prediction(result, 3.0)


def _save_and_serve(path, obj, signatures=None):
    tf.saved_model.save(obj, str(tfs_models.version_dir(path)), signatures=signatures)
    return start({"default": path})


def test_tf_saved_model_save(tmp_path):  # test_tf_saved_model_save
    root = tf.train.Checkpoint()
    root.v1 = tf.Variable(3.0)
    root.v2 = tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    with _save_and_serve(tmp_path / "saved", root,
                         root.f.get_concrete_function(tf.TensorSpec(None, tf.float32))) as server:
        verify_prediction(predict_half(server, specify_output=False), 12.0)


def test_tf_saved_model_save_multiple_signatures(tmp_path):
    # test_tf_saved_model_save_multiple_signatures
    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {"y": 1.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {"y": 2.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    with _save_and_serve(tmp_path / "saved", root, {"serving_default": root.f,
                                                    "custom_signature_key": root.g}) as server:
        verify_prediction(predict_half(server, signature_name="custom_signature_key"), 2.0,
                           signature_name="custom_signature_key")
        verify_prediction(predict_half(server), 1.0)


@pytest.mark.parametrize("distributed", [False, True])
def test_sequential_keras_saved_model_save(tmp_path, distributed):
    # test_sequential_keras_saved_model_save, test_distrat_sequential_keras_saved_model_save:
    # a Keras Sequential identity model with input `x`; Keras 3 exports it with model.export
    # (the output alias becomes `output_0`, so `y` is named in the export's signature here).
    import keras

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"]) if distributed else None
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = keras.Sequential([keras.Input(shape=(1,), name="x", dtype="float32"),
                                  keras.layers.Identity(name="y")])
    module = tf.Module()
    module.model = model
    module.f = tf.function(lambda x: {"y": model(x)},
                           input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    with _save_and_serve(tmp_path / "keras", module, {"serving_default": module.f}) as server:
        verify_prediction(predict_half(server, batch_input=True, specify_output=False), 2.0)


def test_predict_grpc_and_rest_agree_on_rank(tf1):
    """Issue 18 §2: an input of rank 1 where the signature says [-1, 1] reaches the model over
    both APIs (TF Serving's session does not check it), with the same answer."""
    request = half_plus_request(specify_output=False)
    request.inputs["x"].ClearField("float_val")
    request.inputs["x"].float_val.extend([2.0, 3.0, 4.0])
    request.inputs["x"].tensor_shape.dim[0].size = 3
    channel, prediction, _ = stubs(f"localhost:{tf1.grpc_port}")
    with channel:
        result = prediction.Predict(request, RPC_TIMEOUT)
    assert list(result.outputs["y"].float_val) == [3.0, 3.5, 4.0]
    assert rest(tf1.rest_port, "/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]})[1] == \
        {"outputs": list(result.outputs["y"].float_val)}


def test_tensor_content_only_with_the_flag(models):
    with start({"default": models / "half_plus_two"}, tensor_content=True) as server:
        result = predict_half(server)
    assert not result.outputs["y"].float_val
    assert tf.make_ndarray(result.outputs["y"]).tolist() == [3.0]


def test_classify_on_a_predict_method_signature_uses_scores(tf2):
    """Issue 18 §4: TF2 signatures all carry method predict; Classify reads `scores`."""
    assert tf2.manager.resolve_version("default").signatures["classify_x_to_y"].method_name == \
        "tensorflow/serving/predict"
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"  # no classes/scores output
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
    channel, prediction, _ = stubs(f"localhost:{tf2.grpc_port}")
    with channel, pytest.raises(grpc.RpcError) as raised:
        prediction.Classify(request, RPC_TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "classes" in raised.value.details() and "scores" in raised.value.details()
