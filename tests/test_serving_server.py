"""Server-wide behaviour: dynamic batching, graceful shutdown, TLS, loopback binding."""
from __future__ import annotations

import socket
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from serving_helpers import copy_model, model, predict_request, sample_images, self_signed_certificate, start_server
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tlpipe.serving.client import ServingClient
from tlpipe.serving.config import BatchingOptions, TlsOptions


@pytest.fixture(scope="module")
def base(toy_model_dir, tmp_path_factory):
    return copy_model(toy_model_dir, tmp_path_factory.mktemp("server") / "flowers")


@pytest.fixture(scope="module")
def images(tiny_images) -> list[bytes]:
    return list(sample_images(tiny_images).values())


def test_batching_merges_concurrent_requests_into_fewer_model_calls(base, images):
    options = BatchingOptions(max_batch_size=16, batch_timeout_micros=20_000, num_batch_threads=1)
    with start_server([model(base)], batching=options, rest_port=None) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        expected = {i: tf.make_ndarray(stub.Predict(predict_request([images[i]]))
                                       .outputs["probabilities"]) for i in range(len(images))}
        loaded = server.manager.resolve_version("flowers")
        calls_before = len(loaded.batch_sizes)
        answers, barrier = {}, threading.Barrier(12)

        def one(i):
            barrier.wait(30)
            reply = stub.Predict(predict_request([images[i % len(images)]]), timeout=60)
            answers[i] = tf.make_ndarray(reply.outputs["probabilities"])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        sizes = loaded.batch_sizes[calls_before:]
    assert sum(sizes) == 12 and len(sizes) < 12 and max(sizes) > 1
    for i, probabilities in answers.items():  # merged or not, each gets its own row back
        np.testing.assert_allclose(probabilities, expected[i % len(images)], rtol=1e-5, atol=1e-6)


def test_stop_finishes_requests_in_flight(base, images):
    server = start_server([model(base)], rest_port=None)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    outcome = {}

    def slow_request():
        try:
            reply = stub.Predict(predict_request(images * 16), timeout=120)  # 96 images
            outcome["rows"] = tf.make_ndarray(reply.outputs["class_id"]).shape[0]
        except grpc.RpcError as err:
            outcome["error"] = err.code()

    loaded = server.manager.resolve_version("flowers")
    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + 30
    while loaded._in_flight == 0:
        assert time.monotonic() < deadline, "the request never reached the model"
        time.sleep(0.001)
    server.stop(grace=60)
    thread.join(60)
    channel.close()
    assert outcome == {"rows": 96}
    with pytest.raises(grpc.RpcError):  # and the port is closed now
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as again:
            prediction_service_pb2_grpc.PredictionServiceStub(again).Predict(
                predict_request(images[:1]), timeout=5)


def test_tls_on_grpc_and_rest_and_binding_to_loopback_only(base, images):
    cert, key = self_signed_certificate()
    with start_server([model(base)], tls=TlsOptions(cert, key)) as server:
        for rest, port in ((False, server.grpc_port), (True, server.rest_port)):
            with ServingClient(f"127.0.0.1:{port}", rest=rest, root_certificates=cert) as client:
                assert client.predict(images[:1])[0].class_name.startswith("class_")
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as plain:
            with pytest.raises(grpc.RpcError):
                prediction_service_pb2_grpc.PredictionServiceStub(plain).Predict(
                    predict_request(images[:1]), timeout=5)
        assert _listening_addresses(server.grpc_port) == {"127.0.0.1"}
        assert _listening_addresses(server.rest_port) == {"127.0.0.1"}


def _listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on `port`, read from /proc (no traffic sent)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            if len(address) == 32 and address.startswith("0000000000000000FFFF0000"):
                address = address[24:]  # an IPv4-mapped IPv6 socket (how gRPC binds)
            if len(address) == 8:
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
            else:
                found.add("ipv6:" + address)
    return found
