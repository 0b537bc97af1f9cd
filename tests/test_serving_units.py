"""The serving parts on their own, without a model: config, source, manager, batching, codecs."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tlpipe.serving import config, json_codec, layout, source, tensors
from tlpipe.serving.batching import BatchScheduler
from tlpipe.serving.config import BatchingOptions, ModelConfig, VersionPolicy
from tlpipe.serving.manager import AVAILABLE, END, ModelManager
from tlpipe.serving.metrics import Metrics
from tlpipe.serving.servable import LoadedModel, Signature, TensorSpec
from tlpipe.serving.status import ServingError, http_status


def _until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_version_policies_select_like_tf_serving():
    on_disk = [3, 1, 7, 5]
    assert VersionPolicy().select(on_disk) == [7]
    assert VersionPolicy("latest", num_versions=2).select(on_disk) == [5, 7]
    assert VersionPolicy("all").select(on_disk) == [1, 3, 5, 7]
    assert VersionPolicy("specific", versions=(3, 9)).select(on_disk) == [3]


def test_model_server_config_file_with_policies_and_labels(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("""
model_config_list {
  config { name: "flowers" base_path: "/srv/flowers" model_platform: "tensorflow"
           model_version_policy { specific { versions: 1 versions: 2 } }
           version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } }
  config { name: "cars" base_path: "/srv/cars"
           model_version_policy { latest { num_versions: 3 } } }
  config { name: "birds" base_path: "/srv/birds" model_version_policy { all {} } }
}""")
    flowers, cars, birds = config.read_model_config_file(str(path))
    assert flowers == ModelConfig("flowers", "/srv/flowers", VersionPolicy("specific", versions=(1, 2)),
                                  {"stable": 1, "canary": 2})
    assert cars.policy == VersionPolicy("latest", num_versions=3)
    assert birds.policy == VersionPolicy("all")
    path.write_text('model_config_list { config { name: "a" base_path: "/a" } '
                    'config { name: "a" base_path: "/b" } }')
    with pytest.raises(config.ConfigError, match="duplicate"):
        config.read_model_config_file(str(path))


def test_side_config_files_in_text_proto(tmp_path):
    batching = tmp_path / "batching"
    batching.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 500 }\n"
                        "allowed_batch_sizes: 4 allowed_batch_sizes: 8\n")
    assert config.read_batching_parameters(str(batching)) == BatchingOptions(
        max_batch_size=8, batch_timeout_micros=500)
    batching.write_text("max_batch_size { value: 8 } warp_speed { value: 9 }")
    with pytest.raises(config.ConfigError, match="warp_speed"):
        config.read_batching_parameters(str(batching))
    monitoring = tmp_path / "monitoring"
    monitoring.write_text("prometheus_config {\n  enable: false\n}\n")
    assert not config.read_monitoring_config(str(monitoring)).enable
    ssl = tmp_path / "ssl"
    ssl.write_text('server_key: "-----BEGIN KEY-----\\nabc\\n" server_cert: "CERT" '
                   'client_verify: true')
    with pytest.raises(config.ConfigError, match="custom_ca"):
        config.read_ssl_config(str(ssl))
    ssl.write_text(ssl.read_text() + ' custom_ca: "CA"')
    tls = config.read_ssl_config(str(ssl))
    assert tls.server_key == b"-----BEGIN KEY-----\nabc\n" and tls.client_verify


def test_source_lists_only_integer_versions_through_layout(tmp_path):
    base = tmp_path / "flowers"
    for name in ("1", "3", ".tmp-4-abcd", "notes", "10"):
        (base / name).mkdir(parents=True)
    assert [v.number for v in layout.versions(str(base))] == [1, 3, 10]
    model = ModelConfig("flowers", str(base), VersionPolicy("latest", num_versions=2))
    assert source.aspired_versions(model) == {3: str(base / "3"), 10: str(base / "10")}
    assert source.aspired_versions(ModelConfig("x", str(tmp_path / "absent"))) == {}


class _FakeModels:
    """A loader that records the order of loads and can be told to fail."""

    def __init__(self):
        self.events: list[str] = []
        self.fail: set[int] = set()

    def __call__(self, name, version, path):
        self.events.append(f"load {version}")
        if version in self.fail:
            raise ValueError(f"version {version} is broken")
        model = LoadedModel(name, version, path, {}, {}, None)
        original = model.close
        model.close = lambda: (self.events.append(f"unload {version}"), original())
        return model


def _spec(name="flowers", version=None, label=None):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=name)
    if version is not None:
        spec.version.value = version
    if label is not None:
        spec.version_label = label
    return spec


def test_manager_loads_new_before_unloading_old_and_keeps_serving_past_a_broken_version(tmp_path):
    base = tmp_path / "flowers"
    (base / "1").mkdir(parents=True)
    loads = _FakeModels()
    manager = ModelManager([ModelConfig("flowers", str(base), labels={"stable": 1})], loads)
    manager.reconcile()
    with manager.serving(_spec()) as served:
        assert served.version == 1
        (base / "2").mkdir()
        loads.fail.add(2)
        manager.reconcile()  # 2 fails: 1 keeps serving, 2 is END with its error
        assert manager.version_status("flowers", 2)[0].state == END
        assert "broken" in manager.version_status("flowers", 2)[0].error_message
        assert manager.resolve_version("flowers").version == 1
        manager.reconcile()  # a failed directory is not retried on every poll
        assert loads.events.count("load 2") == 1
    (base / "3").mkdir()
    holder = manager.resolve_version("flowers")
    holder.acquire()  # a request still running on version 1
    reconciled = threading.Thread(target=manager.reconcile)
    reconciled.start()
    _until(lambda: manager.version_status("flowers", 1)[0].state != AVAILABLE)
    assert manager.resolve_version("flowers").version == 3  # traffic moved before the unload
    assert "unload 1" not in loads.events  # waits for the request in flight
    holder.release()
    reconciled.join(10)
    assert loads.events == ["load 1", "load 2", "load 3", "unload 1"]
    assert manager.version_status("flowers", 1)[0].state == END
    with pytest.raises(ServingError) as raised:
        manager.resolve_version("flowers", label="stable")  # label points at an unloaded version
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServingError) as raised:
        manager.resolve_version("flowers", label="beta")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    manager.stop()
    assert loads.events[-1] == "unload 3"


def test_a_listing_that_fails_mid_poll_unloads_nothing(tmp_path):
    base = tmp_path / "flowers"
    (base / "1").mkdir(parents=True)
    manager = ModelManager([ModelConfig("flowers", str(base))], _FakeModels())
    manager.reconcile()
    (base / "2").mkdir()
    (base / "2" / layout.METADATA_FILE).write_text("{half written")  # listing raises
    assert source.aspired_versions(manager.models()[0]) is None
    manager.reconcile()
    assert manager.loaded() == {"flowers": [1]}
    (base / "2" / layout.METADATA_FILE).write_text("{}")
    manager.reconcile()
    assert manager.loaded() == {"flowers": [2]}


def test_reload_config_adds_and_removes_models(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name / "1").mkdir(parents=True)
    loads = _FakeModels()
    manager = ModelManager([ModelConfig("a", str(tmp_path / "a"))], loads)
    manager.reconcile()
    manager.reload_config([ModelConfig("b", str(tmp_path / "b"))])
    assert manager.loaded() == {"b": [1]}
    with pytest.raises(ServingError) as raised:
        manager.resolve_version("a")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND


def test_batch_scheduler_merges_concurrent_calls_and_isolates_a_bad_row():
    calls = []
    gate = threading.Event()

    def run(inputs):
        calls.append(len(inputs["x"]))
        gate.wait(5)
        if b"bad" in inputs["x"].tolist():
            raise ValueError("bad row")
        return {"y": np.array([len(v) for v in inputs["x"]], dtype=np.int64)}

    scheduler = BatchScheduler(run, BatchingOptions(max_batch_size=8, batch_timeout_micros=0,
                                                    num_batch_threads=1), "test")
    results, errors = {}, {}

    def request(i, value):
        try:
            results[i] = scheduler({"x": np.array([value, value + b"!"], dtype=object)})
        except Exception as err:
            errors[i] = err

    first = threading.Thread(target=request, args=(0, b"a"))
    first.start()
    _until(lambda: calls)
    # while the first call runs, four more requests queue up: one of them bad
    others = [threading.Thread(target=request, args=(i, v))
              for i, v in enumerate([b"bb", b"bad", b"cccc", b"ddd"], start=1)]
    for thread in others:
        thread.start()
    _until(lambda: scheduler._queued_rows == 8)
    gate.set()
    for thread in [first] + others:
        thread.join(10)
    scheduler.close()
    assert calls[:2] == [2, 8]  # the four queued requests went in as one call...
    assert calls[2:] == [2, 2, 2, 2]  # ...which failed, so each was retried alone
    assert set(errors) == {2} and "bad row" in str(errors[2])
    assert results[3]["y"].tolist() == [4, 5] and results[1]["y"].tolist() == [2, 3]


def test_an_unloaded_batch_scheduler_runs_a_lone_request_in_its_own_thread():
    threads = []

    def run(inputs):
        threads.append(threading.current_thread())
        return {"y": inputs["x"] * 2}

    immediate = BatchScheduler(run, BatchingOptions(max_batch_size=8, batch_timeout_micros=0,
                                                    num_batch_threads=1), "immediate")
    waiting = BatchScheduler(run, BatchingOptions(max_batch_size=8, batch_timeout_micros=1000,
                                                  num_batch_threads=1), "waiting")
    try:
        assert immediate({"x": np.array([1, 2])})["y"].tolist() == [2, 4]
        assert waiting({"x": np.array([3])})["y"].tolist() == [6]
    finally:
        immediate.close()
        waiting.close()
    assert threads[0] is threading.current_thread()  # no hand-off when nothing is queued
    assert threads[1] is not threading.current_thread()  # a timeout means: wait for company
    assert (immediate.batch_sizes, waiting.batch_sizes) == ([2], [1])


def test_tensor_protos_round_trip_and_are_checked_against_the_signature():
    import tensorflow as tf

    floats = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(tensors.to_ndarray(tensors.to_tensor_proto(floats)), floats)
    assert np.array_equal(tf.make_ndarray(tensors.to_tensor_proto(floats)), floats)
    strings = np.array([b"a", b"bc"], dtype=object)
    assert tensors.to_ndarray(tf.make_tensor_proto([b"a", b"bc"])).tolist() == [b"a", b"bc"]
    assert tf.make_ndarray(tensors.to_tensor_proto(strings)).tolist() == [b"a", b"bc"]
    assert tensors.to_ndarray(tf.make_tensor_proto([1.5, 2.5])).tolist() == [1.5, 2.5]
    tensors.check_dtype("image_bytes", types_pb2.DT_STRING, types_pb2.DT_STRING)
    with pytest.raises(ServingError, match="to be string but float"):
        tensors.check_dtype("image_bytes", types_pb2.DT_FLOAT, types_pb2.DT_STRING)
    # shapes are the model's to check (TF Serving's behaviour); outputs use the typed fields
    assert list(tensors.to_tensor_proto(floats).float_val) == floats.ravel().tolist()


def test_json_codec_reads_b64_instances_and_writes_tf_serving_shapes():
    signature = Signature("serving_default", "tensorflow/serving/predict",
                          {"image_bytes": TensorSpec(types_pb2.DT_STRING, (-1,))}, {}, None)
    arrays, row = json_codec.request_arrays(signature, {"instances": [{"b64": "aGk="}, "yo"]})
    assert row and arrays["image_bytes"].tolist() == [b"hi", b"yo"]
    arrays, row = json_codec.request_arrays(signature, {"inputs": {"image_bytes": [{"b64": "aGk="}]}})
    assert not row and arrays["image_bytes"].tolist() == [b"hi"]
    outputs = {"class_name": np.array([b"a", b"b"], dtype=object),
               "probabilities": np.array([[0.5, 0.5], [1.0, 0.0]], dtype=np.float32)}
    assert json_codec.response_body(outputs, True)["predictions"][1] == {
        "class_name": "b", "probabilities": [1.0, 0.0]}
    assert json_codec.response_body({"thumb_bytes": np.array([b"hi"], dtype=object)},
                                    False) == {"outputs": [{"b64": "aGk="}]}
    example = json_codec.example_from_json({"image": {"b64": "aGk="}, "n": 3, "w": [0.5, 1]})
    assert example.features.feature["image"].bytes_list.value == [b"hi"]
    assert example.features.feature["n"].int64_list.value == [3]
    assert list(example.features.feature["w"].float_list.value) == [0.5, 1.0]


def test_status_codes_map_to_tf_servings_http_codes_and_metrics_render():
    assert [http_status(c) for c in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                     grpc.StatusCode.FAILED_PRECONDITION,
                                     grpc.StatusCode.UNIMPLEMENTED,
                                     grpc.StatusCode.UNAVAILABLE)] == [400, 404, 400, 501, 503]
    metrics = Metrics()
    metrics.observe("m", "1", "predict", "GRPC", "OK", 0.00015)
    metrics.observe("m", "1", "predict", "GRPC", "OK", 0.5)
    text = metrics.render()
    assert ':tensorflow:serving:request_count{model_name="m",version="1",API="predict",' \
           'entrypoint="GRPC",status="OK"} 2' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="m",version="1",' \
           'API="predict",entrypoint="GRPC",le="200"} 1' in text
    assert 'le="+Inf"} 2' in text


def test_batch_sizes_keep_only_the_latest_model_calls(monkeypatch):
    """A long-running server must not grow a list by one entry per model call."""
    from tlpipe.serving import batching

    monkeypatch.setattr(batching, "RECENT_BATCHES", 3)
    scheduler = BatchScheduler(lambda inputs: {"y": inputs["x"]},
                               BatchingOptions(max_batch_size=8, batch_timeout_micros=0,
                                               num_batch_threads=1), "bounded")
    try:
        for rows in range(1, 6):
            scheduler({"x": np.zeros(rows)})
    finally:
        scheduler.close()
    assert scheduler.batch_sizes == [3, 4, 5]
