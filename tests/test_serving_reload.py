"""Versions come and go while clients keep predicting: hot reload, warmup, broken versions."""
from __future__ import annotations

import logging
import shutil
import threading
import time

import grpc
import pytest
from serving_helpers import add_version, copy_model, model, predict_request, sample_images, start_server
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc
from tlpipe.serving import layout
from tlpipe.serving.config import VersionPolicy
from tlpipe.serving.manager import AVAILABLE, END

POLL_SECONDS = 0.2
LOAD_DEADLINE_SECONDS = 90


def _statuses(channel, name="flowers") -> dict[int, tuple[int, int, str]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request)
    return {s.version: (s.state, s.status.error_code, s.status.error_message)
            for s in reply.model_version_status}


def _wait_for(condition, what: str, deadline_seconds: float = LOAD_DEADLINE_SECONDS):
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_hot_reload_under_load_fails_no_request_and_switches_version(
        toy_model_dir, tiny_images, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tlpipe.serving")
    images = list(sample_images(tiny_images).values())
    base = copy_model(toy_model_dir, tmp_path / "flowers")
    with start_server([model(base)], file_system_poll_wait_seconds=POLL_SECONDS) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        served: list[int] = []
        failures: list[str] = []
        stop = threading.Event()

        def client_loop():
            deadline = time.monotonic() + LOAD_DEADLINE_SECONDS + 30
            i = 0
            while not stop.is_set() and time.monotonic() < deadline and i < 20000:
                try:
                    reply = stub.Predict(predict_request([images[i % len(images)]]), timeout=30)
                    served.append(reply.model_spec.version.value)
                except grpc.RpcError as err:
                    failures.append(f"{err.code().name}: {err.details()}")
                i += 1

        clients = [threading.Thread(target=client_loop) for _ in range(2)]
        for thread in clients:
            thread.start()
        try:
            _wait_for(lambda: len(served) >= 5, "first predictions")
            warmup = [predict_request([images[0]], version=2)]
            add_version(base, 2, warmup=warmup)  # a push: new integer version, renamed in
            _wait_for(lambda: served and served[-1] == 2, "version 2 to take traffic")
            switch = len(served)
            _wait_for(lambda: len(served) >= switch + 10, "predictions after the switch")
        finally:
            stop.set()
            for thread in clients:
                thread.join(60)
        assert failures == []
        assert served[0] == 1 and served[-1] == 2
        first_two = served.index(2)
        assert set(served[first_two + 20:]) <= {2}  # no flapping back once retired
        statuses = _wait_for(lambda: (s := _statuses(channel))[1][0] == END and s, "unload")
        assert statuses[2][0] == AVAILABLE and statuses[1][0] == END
        assert server.manager.loaded() == {"flowers": [2]}
    assert "flowers version 2: replayed 1 warmup requests" in caplog.text


def test_a_broken_version_is_reported_and_the_old_one_keeps_serving(
        toy_model_dir, tiny_images, tmp_path):
    images = list(sample_images(tiny_images).values())
    base = copy_model(toy_model_dir, tmp_path / "flowers")
    with start_server([model(base)], file_system_poll_wait_seconds=POLL_SECONDS) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        # version 2: a SavedModel whose graph file is garbage
        broken = add_version(base, 2)
        (broken / "saved_model.pb").write_bytes(b"not a protobuf")
        status = _wait_for(lambda: _statuses(channel).get(2, (0,))[0] == END
                           and _statuses(channel)[2], "version 2 to fail")
        assert status[1] != 0 and status[2]
        # version 3: loads, but its warmup request fails, so it must never take traffic
        add_version(base, 3, warmup=[predict_request([b"not an image"])])
        status = _wait_for(lambda: _statuses(channel).get(3, (0,))[0] == END
                           and _statuses(channel)[3], "version 3 to fail")
        assert status[1] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "image" in status[2].lower()
        reply = stub.Predict(predict_request([images[0]]))
        assert reply.model_spec.version.value == 1
        assert _statuses(channel)[1][0] == AVAILABLE
        # a good version 4 then takes over, and only then is version 1 retired
        add_version(base, 4)
        _wait_for(lambda: stub.Predict(predict_request([images[0]])).model_spec.version.value == 4,
                  "version 4")
        _wait_for(lambda: _statuses(channel)[1][0] == END, "version 1 to unload")
        assert server.manager.loaded() == {"flowers": [4]}


def test_labels_file_moves_and_a_deleted_version_unloads(toy_model_dir, tiny_images,
                                                          tmp_path):
    images = list(sample_images(tiny_images).values())
    base = copy_model(toy_model_dir, tmp_path / "flowers")
    add_version(base, 2)
    layout.write_labels(str(base), {"stable": 1, "canary": 2})
    with start_server([model(base, policy=VersionPolicy("all"))],
                      file_system_poll_wait_seconds=POLL_SECONDS) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        assert server.manager.loaded() == {"flowers": [1, 2]}
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        label_version = lambda label: stub.Predict(  # noqa: E731
            predict_request(images[:1], label=label)).model_spec.version.value
        assert (label_version("stable"), label_version("canary")) == (1, 2)
        layout.write_labels(str(base), {"stable": 2})  # promoted on disk, no restart
        _wait_for(lambda: server.manager.labels("flowers") == {"stable": 2}, "the labels file")
        assert label_version("stable") == 2
        shutil.rmtree(base / "2")
        _wait_for(lambda: _statuses(channel)[2][0] == END, "version 2 to unload")
        assert server.manager.loaded() == {"flowers": [1]}


def test_model_config_file_is_reread_when_it_changes(toy_model_dir, tiny_images, tmp_path):
    from tlpipe.serving.config import read_model_config_file

    images = list(sample_images(tiny_images).values())
    base = copy_model(toy_model_dir, tmp_path / "flowers")
    add_version(base, 2)
    config_file = tmp_path / "models.config"
    entry = ('model_config_list {{ config {{ name: "flowers" base_path: "{base}" '
             'model_version_policy {{ all {{}} }} {labels} }} }}')
    config_file.write_text(entry.format(base=base, labels=""))
    with start_server(read_model_config_file(str(config_file)),
                      model_config_file=str(config_file),
                      model_config_file_poll_wait_seconds=POLL_SECONDS) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(predict_request(images[:1], label="stable"))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        time.sleep(0.05)  # a distinct modification time
        config_file.write_text(entry.format(
            base=base, labels='version_labels { key: "stable" value: 1 }'))
        _wait_for(lambda: server.manager.labels("flowers") == {"stable": 1}, "the new labels")
        reply = stub.Predict(predict_request(images[:1], label="stable"))
        assert reply.model_spec.version.value == 1
