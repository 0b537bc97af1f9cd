"""TF Serving's REST API on a second port: status, metadata, :predict, :classify, :regress,
metrics.

Routes are TF Serving's (`/v1/models/{name}[/versions/{v}|/labels/{l}][/metadata|:predict|
:classify|:regress]`); errors are `{"error": "..."}` with TF Serving's HTTP codes ("Malformed
request" 400 under /v1/, 404 elsewhere), and every parse error is answered, never a dropped
connection. Standard library threading HTTP server: one thread per connection up to
--rest_api_num_threads, each with --rest_api_timeout_in_ms (TLS handshakes run there too, not on
the accept thread), keep-alive, joined on shutdown so in-flight requests finish. What each
route does with its body is `rest_actions`.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tlpipe.serving import json_codec, rest_actions
from tlpipe.serving.config import MonitoringOptions, TlsOptions
from tlpipe.serving.layout import MAX_VERSION
from tlpipe.serving.limits import InputLimits
from tlpipe.serving.manager import STATE_NAMES, ModelManager, spec_choice
from tlpipe.serving.metrics import CONTENT_TYPE, Metrics
from tlpipe.serving.status import ServingError, from_exception, http_status, invalid_argument, not_found

log = logging.getLogger(__name__)

ENTRYPOINT = "REST"
API_PREFIX = "/v1/"  # TF Serving's REST handler owns /v1/...; anything else is 404
_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
                    r"(?P<action>/metadata|:predict|:classify|:regress)?$")


def _spec(name: str, version: str | None, label: str | None):
    """The ModelSpec a route names; INVALID_ARGUMENT for a version beyond int64."""
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=name)
    if version is not None:
        if len(version) > len(str(MAX_VERSION)) or int(version) > MAX_VERSION:
            raise invalid_argument(f"Failed to convert version: {version[:40]} to numeric.")
        spec.version.value = int(version)
    elif label is not None:
        spec.version_label = label
    return spec


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def setup(self):
        self.timeout = self.server.owner.timeout  # idle keep-alive and slow bodies end here
        super().setup()

    def log_message(self, format, *args):  # access logs off, as TF Serving's REST
        return

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload) -> None:
        self._send(status, json.dumps(payload).encode())

    def _error(self, error: ServingError) -> None:
        self._json(http_status(error.code), {"error": error.message})

    def _content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        if not (raw.isascii() and raw.strip().isdigit()):
            self.close_connection = True  # the body's end is unknown: the stream is unusable
            raise invalid_argument(f"Invalid Content-Length: {raw[:40]}")
        length = int(raw)
        limit = self.server.owner.limits.max_json_bytes
        if length > limit:
            self.close_connection = True
            raise invalid_argument(f"request body of {length} bytes exceeds the limit of {limit}")
        return length

    def _body(self) -> dict:
        length = self._content_length()
        raw = self.rfile.read(length) if length else b""
        if len(raw) != length:
            self.close_connection = True
            raise invalid_argument("request body ended before Content-Length bytes")
        return json_codec.parse_body(raw)

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
        """Every failure from here on is an HTTP error with a JSON body, never a dropped
        connection."""
        try:
            match = _ROUTE.match(path)
            action = match.group("action") if match else None
            expected = "GET" if action in (None, "/metadata") else "POST"
            if not match or method != expected:
                if method == "POST":
                    self._discard_body()
                if not path.startswith(API_PREFIX):
                    raise not_found(f"Not found: {method} {path}"[:300])
                if path.rstrip("/") == "/v1/models" and method == "GET":
                    raise invalid_argument("Missing model name in request.")
                raise invalid_argument(f"Malformed request: {method} {path}"[:300])
            spec = _spec(match.group("name"), match.group("version"), match.group("label"))
        except Exception as err:
            self._error(from_exception(err))
            return
        if action is None:
            self._status(spec)
            return
        api = {"/metadata": "get_model_metadata", ":predict": "predict",
               ":classify": "classify", ":regress": "regress"}[action]
        self._serve(api, spec, action)

    def _discard_body(self) -> None:
        length = self._content_length()
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def _status(self, spec) -> None:
        try:
            statuses = self.server.owner.manager.version_status(*spec_choice(spec))
        except ServingError as err:
            self._error(err)
            return
        self._json(200, {"model_version_status": [
            {"version": str(s.version), "state": STATE_NAMES[s.state],
             "status": {"error_code": s.error_code.name, "error_message": s.error_message}}
            for s in statuses]})

    def _serve(self, api: str, spec, action: str) -> None:
        owner = self.server.owner
        started = time.perf_counter()
        version, error = "", None
        try:
            body = self._body() if action != "/metadata" else {}
            with owner.manager.serving(spec) as model:
                version = str(model.version)
                payload = rest_actions.ACTIONS[action](model, spec, body, owner.limits)
            reply = json.dumps(payload).encode()
        except Exception as err:
            error = from_exception(err)
        # Counted before the reply leaves: a client that reads the metrics right after its reply
        # sees its own request (as with TF Serving, whose handler records before it responds).
        owner.metrics.observe(spec.name, version, api, ENTRYPOINT, error.code.name if error else "OK",
                              time.perf_counter() - started)
        if error is None:
            self._send(200, reply)
        else:
            self._error(error)


class _HttpServer(ThreadingHTTPServer):
    """One thread per connection (at most `max_threads`); with TLS the handshake runs in that
    thread under the timeout, so a client that never sends a ClientHello holds only its own."""

    daemon_threads = False  # joined on close: in-flight requests finish
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address, owner: RestServer, tls: ssl.SSLContext | None, max_threads: int):
        self.owner = owner
        self.tls = tls
        self.connections: set = set()
        self._connections_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_threads)
        super().__init__(address, _Handler)

    def get_request(self):
        connection, address = super().get_request()
        connection.settimeout(self.owner.timeout)
        with self._connections_lock:
            self.connections.add(connection)
        return connection, address

    def process_request(self, request, client_address):
        self._slots.acquire()  # at the thread cap, accept waits for a connection to end
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request, client_address):
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            secure = self.tls.wrap_socket(request, server_side=True)  # request is detached
        except (OSError, ssl.SSLError) as err:  # no certificate, bad hello, timeout
            log.info("REST TLS handshake with %s failed: %s", client_address[0], err)
            return
        self._track(request, secure)
        try:
            super().finish_request(secure, client_address)
        finally:
            self._track(secure, None)
            try:
                secure.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            secure.close()

    def _track(self, old, new) -> None:
        with self._connections_lock:
            self.connections.discard(old)
            if new is not None:
                self.connections.add(new)

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
                 tls: TlsOptions | None = None, max_threads: int = 64, timeout: float = 30.0):
        self.manager = manager
        self.metrics = metrics
        self.limits = limits
        self.monitoring = monitoring
        self.timeout = timeout
        self._http = _HttpServer((host, port), self,
                                 _tls_context(tls) if tls is not None else None, max_threads)
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
    """The SSLConfig applied as gRPC applies it: client_verify needs a certificate signed by
    custom_ca."""
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
    if tls.custom_ca:
        context.load_verify_locations(cadata=tls.custom_ca.decode())
    if tls.client_verify:
        if not tls.custom_ca:
            raise ValueError("client_verify needs custom_ca")
        context.verify_mode = ssl.CERT_REQUIRED
    return context
