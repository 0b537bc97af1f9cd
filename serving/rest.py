"""TF Serving's REST API on a second port: status, metadata, :predict, :classify, metrics.

Routes are TF Serving's (`/v1/models/{name}[/versions/{v}|/labels/{l}][/metadata|:predict|
:classify]`); errors are `{"error": "..."}` with TF Serving's HTTP codes. Standard library
threading HTTP server: one thread per connection, keep-alive, joined on shutdown so in-flight
requests finish.
"""
from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2

from tlpipe.serving import inference, json_codec
from tlpipe.serving.config import MonitoringOptions, TlsOptions
from tlpipe.serving.inference import InputLimits
from tlpipe.serving.manager import STATE_NAMES, ModelManager, spec_choice
from tlpipe.serving.metrics import CONTENT_TYPE, Metrics
from tlpipe.serving.status import ServingError, from_exception, http_status, invalid_argument, not_found

ENTRYPOINT = "REST"
MAX_BODY_BYTES = 256 * 1024 * 1024
_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                    r"(?P<action>/metadata|:predict|:classify|:regress)?$")


class _Spec:
    """The ModelSpec fields a route names, in the shape the manager reads."""

    def __init__(self, name: str, version: str | None, label: str | None):
        from tensorflow_serving.apis import model_pb2

        self.proto = model_pb2.ModelSpec(name=name)
        if version is not None:
            self.proto.version.value = int(version)
        elif label is not None:
            self.proto.version_label = label


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    server: _HttpServer

    def log_message(self, format, *args):  # access logs off, as TF Serving's REST
        return

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload) -> None:
        self._send(status, json.dumps(payload).encode())

    def _error(self, error: ServingError) -> None:
        self._json(http_status(error.code), {"error": error.message})

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise invalid_argument(f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError as err:
            raise invalid_argument(f"JSON Parse error: {err}") from None
        if not isinstance(body, dict):
            raise invalid_argument("JSON Parse error: the request body must be an object")
        return body

    def do_GET(self):
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if owner.monitoring.enable and path == owner.monitoring.path:
            self._send(200, owner.metrics.render().encode(), CONTENT_TYPE)
            return
        self._route("GET", path)

    def do_POST(self):
        self._route("POST", self.path.split("?", 1)[0])

    def _route(self, method: str, path: str) -> None:
        match = _ROUTE.match(path)
        action = match.group("action") if match else None
        expected = "GET" if action in (None, "/metadata") else "POST"
        if not match or method != expected:
            if method == "POST":
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._error(not_found(f"Malformed request: {method} {path}"))
            return
        spec = _Spec(match.group("name"), match.group("version"), match.group("label"))
        if action is None:
            self._status(spec)
            return
        api = {"/metadata": "get_model_metadata", ":predict": "predict",
               ":classify": "classify", ":regress": "regress"}[action]
        self._serve(api, spec, action)

    def _status(self, spec: _Spec) -> None:
        try:
            statuses = self.server.owner.manager.version_status(*spec_choice(spec.proto))
        except ServingError as err:
            self._error(err)
            return
        self._json(200, {"model_version_status": [
            {"version": str(s.version), "state": STATE_NAMES[s.state],
             "status": {"error_code": s.error_code.name, "error_message": s.error_message}}
            for s in statuses]})

    def _serve(self, api: str, spec: _Spec, action: str) -> None:
        owner = self.server.owner
        started = time.perf_counter()
        version, status = "", "OK"
        try:
            body = self._body() if action != "/metadata" else {}
            with owner.manager.serving(spec.proto) as model:
                version = str(model.version)
                payload = _ACTIONS[action](model, spec, body, owner.limits)
            self._json(200, payload)
        except Exception as err:
            error = from_exception(err)
            status = error.code.name
            self._error(error)
        finally:
            owner.metrics.observe(spec.proto.name, version, api, ENTRYPOINT, status,
                                  time.perf_counter() - started)


def _predict(model, spec, body, limits):
    signature = model.signature(body.get("signature_name", ""))
    arrays, row_format = json_codec.request_arrays(signature, body)
    inference.check_arrays(signature, arrays, limits)
    outputs = inference.run_signature(signature, arrays)
    return json_codec.response_body(outputs, row_format)


def _classify(model, spec, body, limits):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.CopyFrom(spec.proto)
    request.model_spec.signature_name = body.get("signature_name", "")
    examples = body.get("examples")
    if not isinstance(examples, list):
        raise invalid_argument("'examples' must be a list of objects")
    if "context" in body:
        listed = request.input.example_list_with_context
        listed.context.CopyFrom(json_codec.example_from_json(body["context"]))
    else:
        listed = request.input.example_list
    for features in examples:
        listed.examples.add().CopyFrom(json_codec.example_from_json(features))
    response = inference.classify(model, request, limits)
    return {"results": [[[c.label, c.score] for c in result.classes]
                        for result in response.result.classifications]}


def _regress(model, spec, body, limits):
    from tlpipe.serving.status import unimplemented

    raise unimplemented("Regress is not implemented by this server; use :predict")


def _metadata(model, spec, body, limits):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.CopyFrom(spec.proto)
    response = inference.model_metadata(model, request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    return {"model_spec": {"name": model.name, "signature_name": "",
                           "version": str(model.version)},
            "metadata": {"signature_def": json_format.MessageToDict(
                signature_map, preserving_proto_field_name=True)}}


_ACTIONS = {":predict": _predict, ":classify": _classify, ":regress": _regress,
            "/metadata": _metadata}


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = False  # joined on close: in-flight requests finish
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address, owner: RestServer):
        self.owner = owner
        self.connections: set = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self):
        connection, address = super().get_request()
        with self._connections_lock:
            self.connections.add(connection)
        return connection, address

    def shutdown_request(self, request):
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def end_idle_reads(self) -> None:
        """Idle keep-alive connections see end-of-file; a request in flight still answers."""
        with self._connections_lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RD)
            except OSError:
                pass


class RestServer:
    def __init__(self, host: str, port: int, manager: ModelManager, metrics: Metrics,
                 limits: InputLimits, monitoring: MonitoringOptions,
                 tls: TlsOptions | None = None):
        self.manager = manager
        self.metrics = metrics
        self.limits = limits
        self.monitoring = monitoring
        self._http = _HttpServer((host, port), self)
        if tls is not None:
            self._http.socket = _tls_context(tls).wrap_socket(self._http.socket,
                                                              server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._http.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._http.serve_forever, name="rest",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops accepting, then waits for the requests being handled."""
        self._http.shutdown()
        self._http.end_idle_reads()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _tls_context(tls: TlsOptions) -> ssl.SSLContext:
    import os
    import tempfile

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:  # ssl loads PEM from files only
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert, "wb") as fh:
            fh.write(tls.server_cert)
        with open(key, "wb") as fh:
            fh.write(tls.server_key)
        os.chmod(key, 0o600)
        context.load_cert_chain(cert, key)
    return context
