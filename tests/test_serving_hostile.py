"""Hostile clients: each request from issue 18's probes gets a clean error, memory stays
bounded, and the server answers correctly afterwards.

The server runs in a child process (`tlpipe serve`, as deployed), so its peak resident memory
(VmHWM) is its own; TLS cases run in-process with a throwaway CA.
"""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import tfs_models
from serving_helpers import self_signed_certificate
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2
from tfs_support import RPC_TIMEOUT, half_plus_request, rest, start, stubs
from tlpipe.serving.config import TlsOptions

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def _free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


class _Child:
    def __init__(self, base: Path):
        self.grpc_port, self.rest_port = _free_ports(2)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tlpipe.pipeline.cli", "serve", "--model_name=default",
             f"--model_base_path={base}", f"--port={self.grpc_port}",
             f"--rest_api_port={self.rest_port}", "--file_system_poll_wait_seconds=0"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = ""
        while not line.startswith("tlpipe serve: gRPC"):
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError("tlpipe serve did not start")

    def peak_rss(self) -> int:
        """Peak resident bytes of the server process so far (VmHWM)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile") / "half_plus_two"
    tfs_models.half_plus_two_tf1(base)
    server = _Child(base)
    yield server
    server.close()


def _still_answers(server) -> None:
    channel, prediction, _ = stubs(f"127.0.0.1:{server.grpc_port}")
    with channel:
        assert list(prediction.Predict(half_plus_request(), RPC_TIMEOUT).outputs["y"].float_val) == [3.0]
    assert rest(server.rest_port, "/v1/models/default:predict", {"instances": [[2.0]]}) == \
        (200, {"predictions": [[3.0]]})


def test_a_46_byte_fill_tensor_is_refused_before_it_is_expanded(child):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add().size = 300_000_000
    request.inputs["x"].float_val.append(1.0)
    assert request.ByteSize() < 64
    _still_answers(child)
    before = child.peak_rss()
    channel, prediction, _ = stubs(f"127.0.0.1:{child.grpc_port}")
    with channel, pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(request, RPC_TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit" in raised.value.details()
    assert child.peak_rss() - before < 100 * MB
    _still_answers(child)


def test_a_fill_encoded_batch_beyond_the_row_cap_is_refused(child):
    request = half_plus_request(specify_output=False)
    request.inputs["x"].tensor_shape.dim[0].size = 2000  # one value, 2,000 rows
    request.inputs["x"].tensor_shape.dim.add().size = 1
    channel, prediction, _ = stubs(f"127.0.0.1:{child.grpc_port}")
    with channel, pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(request, RPC_TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1024" in raised.value.details()
    _still_answers(child)


def _raw_http(port: int, head: str, body: bytes = b"", timeout: float = 10.0) -> bytes:
    """Sends exactly these bytes; returns all the server answers until it closes or idles."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not _complete(answer):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
        return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _status_and_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


@pytest.mark.parametrize("length", ["-1", "abc", " 12x", "99999999999999999999"])
@pytest.mark.parametrize("path", ["/v1/models/default:predict", "/v1/nowhere"])
def test_bad_content_length_is_400_at_once(child, path, length):
    started = time.monotonic()
    answer = _raw_http(child.rest_port, f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                                        f"Content-Length: {length}\r\n")
    assert time.monotonic() - started < 5  # never held until the client hangs up
    status, error = _status_and_error(answer)
    assert status == 400 and error
    _still_answers(child)


@pytest.mark.parametrize("version", ["18446744073709551615", "1111111111111111111111111",
                                     "9223372036854775808"])
def test_huge_versions_are_400(child, version):
    for suffix, body in ((":predict", {"instances": [[2.0]]}), ("", None), ("/metadata", None)):
        code, payload = rest(child.rest_port, f"/v1/models/default/versions/{version}{suffix}", body)
        assert code == 400 and "Failed to convert version" in payload["error"]
    _still_answers(child)


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deep_json_is_400(child, depth):
    body = b'{"instances": ' + b"[" * depth + b"2.0" + b"]" * depth + b"}"
    code, payload = rest(child.rest_port, "/v1/models/default:predict", body)
    assert code == 400 and "nesting" in payload["error"]
    _still_answers(child)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    cert, key = self_signed_certificate()
    folder = tmp_path_factory.mktemp("pki")
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    return cert, key, folder


@pytest.fixture(scope="module")
def mutual_tls(tmp_path_factory, pki):
    cert, key, _ = pki
    base = tmp_path_factory.mktemp("mtls") / "half_plus_two"
    tfs_models.half_plus_two_tf1(base)
    with start({"default": base}, tls=TlsOptions(cert, key, cert, client_verify=True),
               rest_timeout_seconds=2.0) as server:
        yield server


def _https_predict(server, pki, with_certificate: bool) -> tuple[int, dict]:
    cert, _, folder = pki
    context = ssl.create_default_context(cadata=cert.decode())
    if with_certificate:
        context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    body = json.dumps({"instances": [[2.0]]}).encode()
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as conn:
        conn.sendall(b"POST /v1/models/default:predict HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        answer = b""
        while not _complete(answer):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_rest_refuses_a_client_without_certificate_under_client_verify(mutual_tls, pki):
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _https_predict(mutual_tls, pki, with_certificate=False)
    assert _https_predict(mutual_tls, pki, with_certificate=True) == (200, {"predictions": [[3.0]]})


def test_an_idle_tls_connection_does_not_block_rest(mutual_tls, pki):
    idle = [socket.create_connection(("127.0.0.1", mutual_tls.rest_port)) for _ in range(3)]
    try:  # never send a ClientHello
        started = time.monotonic()
        assert _https_predict(mutual_tls, pki, with_certificate=True) == (
            200, {"predictions": [[3.0]]})
        assert time.monotonic() - started < 1.5  # not after the 2 s handshake timeout
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b""  # the server hung up on it after its timeout
    finally:
        for conn in idle:
            conn.close()


def test_a_half_written_version_is_served_once_complete(tmp_path):
    base = tmp_path / "half_plus_two"
    tfs_models.half_plus_two_tf1(base, 1)
    complete = tmp_path / "complete"
    tfs_models.half_plus_three_tf1(complete, 2)
    with start({"default": base}, file_system_poll_wait_seconds=0.2) as server:
        partial = base / "00000002"
        partial.mkdir()
        (partial / "saved_model.pb").write_bytes(
            (complete / "00000002" / "saved_model.pb").read_bytes()[:100])  # copy under way
        deadline = time.monotonic() + 30
        statuses = {}
        while time.monotonic() < deadline:
            statuses = {s.version: s for s in server.manager.version_status("default")}
            if 2 in statuses and statuses[2].error_message:
                break
            time.sleep(0.1)
        assert statuses[2].error_message, "the half-written version was never tried"
        assert server.manager.loaded()["default"] == [1]
        for item in (complete / "00000002").rglob("*"):  # the copy completes
            target = partial / item.relative_to(complete / "00000002")
            if item.is_dir():
                target.mkdir(exist_ok=True)
            else:
                target.write_bytes(item.read_bytes())
        while time.monotonic() < deadline and server.manager.loaded()["default"] != [2]:
            time.sleep(0.1)
        assert server.manager.loaded()["default"] == [2]
        status = server.manager.version_status("default", 2)[0]
        assert not status.error_message
        channel, prediction, _ = stubs(f"127.0.0.1:{server.grpc_port}")
        with channel:
            result = prediction.Predict(half_plus_request(), RPC_TIMEOUT)
        assert list(result.outputs["y"].float_val) == [4.0]
        assert result.model_spec.version.value == 2


def test_a_non_ascii_digit_directory_is_not_a_version(tmp_path):
    from tlpipe.serving import layout

    tfs_models.half_plus_two_tf1(tmp_path, 1)
    (tmp_path / "٥").mkdir()
    (tmp_path / "²").mkdir()
    (tmp_path / ("9" * 30)).mkdir()
    assert [v.number for v in layout.versions(str(tmp_path))] == [1]


def _reload_request(models: dict[str, Path]):
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    for name, base in models.items():
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, str(base), "tensorflow"
    return request


def test_reload_config_can_be_switched_off(tmp_path):
    base = tmp_path / "half_plus_two"
    tfs_models.half_plus_two_tf1(base)
    with start({"default": base}, allow_reload_config=False) as server:
        channel, _, model_service = stubs(f"127.0.0.1:{server.grpc_port}")
        with channel, pytest.raises(grpc.RpcError) as raised:
            model_service.HandleReloadConfigRequest(_reload_request({"other": tmp_path}),
                                                    RPC_TIMEOUT)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert server.manager.loaded() == {"default": [tfs_models.VERSION]}


def test_a_failed_reload_is_cleared_by_the_next_good_one(tmp_path):
    from tensorflow_serving.apis import get_model_status_pb2

    good = tmp_path / "good"
    tfs_models.half_plus_two_tf1(good)
    bad = tmp_path / "bad" / "00000123"
    bad.mkdir(parents=True)
    (bad / "saved_model.pb").write_bytes(b"not a SavedModel")
    with start({"default": good}) as server:
        channel, _, model_service = stubs(f"127.0.0.1:{server.grpc_port}")

        def reload(models):
            return model_service.HandleReloadConfigRequest(_reload_request(models), RPC_TIMEOUT)

        def status_of(name):
            return [(s.version, s.status.error_message) for s in model_service.GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec={"name": name}),
                RPC_TIMEOUT).model_version_status]

        with channel:
            failed = reload({"default": good, "second": bad.parent})
            assert failed.status.error_code != 0 and "second" in failed.status.error_message
            assert status_of("second")[0][1]
            dropped = reload({"default": good})
            assert dropped.status.error_code == 0, dropped.status.error_message
            with pytest.raises(grpc.RpcError) as raised:  # its old failure does not linger
                status_of("second")
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            reload({"default": good, "second": bad.parent})
            fixed = reload({"default": good, "second": good})
            assert fixed.status.error_code == 0, fixed.status.error_message
            assert status_of("second") == [(tfs_models.VERSION, "")]
        _still_answers(server)
