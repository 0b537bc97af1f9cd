"""The model server: manager + gRPC services + REST, started and stopped as one.

Start-up loads every model's aspired versions before the ports open (as tensorflow_model_server
does), then polls the file system. Stop is graceful: health turns NOT_SERVING, the ports stop
accepting, in-flight requests finish (within `grace` seconds), then models unload.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
from tlpipe.serving import config as server_config
from tlpipe.serving import loader, warmup
from tlpipe.serving.config import BatchingOptions, ModelConfig, MonitoringOptions, TlsOptions
from tlpipe.serving.grpc_services import ModelServicer, PredictionServicer
from tlpipe.serving.limits import DEFAULT_LIMITS, InputLimits
from tlpipe.serving.loader import SessionOptions
from tlpipe.serving.manager import ModelManager
from tlpipe.serving.metrics import Metrics
from tlpipe.serving.rest import RestServer

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 2 ** 31 - 1  # TF Serving's; grpcio's 4 MB default rejects image batches
SERVICE_NAMES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def service_descriptors_available() -> bool:
    """Whether the service descriptors import, which reflection needs.

    tensorflow-serving-api 2.19.1 (the version tfx-bsl 1.21 declares) fails to import
    prediction_service_pb2/model_service_pb2 under protobuf 6 ('has_options' is not writable);
    2.21.0 imports them. The servicers themselves work with either.
    """
    try:
        from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2  # noqa: F401
    except (AttributeError, TypeError):
        return False
    return True


@dataclass
class ServerOptions:
    models: list[ModelConfig]
    host: str = "127.0.0.1"
    grpc_port: int = 8500  # 0: any free port
    rest_port: int | None = 8501  # None: no REST; 0: any free port
    file_system_poll_wait_seconds: float = 1.0
    model_config_file: str | None = None
    model_config_file_poll_wait_seconds: float = 0.0
    batching: BatchingOptions | None = None
    monitoring: MonitoringOptions = field(default_factory=MonitoringOptions)
    tls: TlsOptions | None = None
    limits: InputLimits = DEFAULT_LIMITS
    grpc_max_workers: int = 32  # --grpc_max_threads
    rest_max_threads: int = 64  # --rest_api_num_threads: connections served at once
    rest_timeout_seconds: float = 30.0  # --rest_api_timeout_in_ms: idle/handshake/read timeout
    grpc_socket_path: str | None = None  # also serve gRPC on this Unix socket
    grpc_channel_arguments: tuple[tuple[str, str | int], ...] = ()
    tensor_content: bool = False  # --enable_serialization_as_tensor_content
    allow_reload_config: bool = True  # HandleReloadConfigRequest (unauthenticated)
    enable_model_warmup: bool = True
    session: SessionOptions = field(default_factory=SessionOptions)


class ServerError(RuntimeError):
    pass


class ModelServer:
    def __init__(self, options: ServerOptions):
        self.options = options
        self.metrics = Metrics()
        self.manager = ModelManager(options.models, self._load)
        self._grpc: grpc.Server | None = None
        self._rest: RestServer | None = None
        self._health = health.HealthServicer()
        self._config_poller: threading.Thread | None = None
        self._stopping = threading.Event()
        self.grpc_port = 0
        self.rest_port: int | None = None

    def _load(self, name: str, version: int, path: str):
        model = loader.load(name, version, path, batching=self.options.batching,
                            session=self.options.session)
        if not self.options.enable_model_warmup:
            return model
        try:
            replayed = warmup.replay_warmup(model)
        except Exception:
            model.close()
            raise
        if replayed:
            log.info("model %s version %d: replayed %d warmup requests", name, version, replayed)
        return model

    def start(self) -> ModelServer:
        """Loads every configured model, then opens the ports; ServerError if a model failed
        to load (TF Serving does not start with a configured model it cannot load)."""
        options = self.options
        self.manager.reconcile()
        failures = self.manager.load_failures()
        if failures:
            raise ServerError("; ".join(failures))
        channel_args = {"grpc.max_send_message_length": MAX_MESSAGE_BYTES,
                        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
                        "grpc.so_reuseport": 0}
        channel_args.update(dict(options.grpc_channel_arguments))  # the user's win
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=options.grpc_max_workers,
                                       thread_name_prefix="grpc"),
            options=list(channel_args.items()))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.manager, self.metrics, options.limits,
                               options.tensor_content), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.manager, options.allow_reload_config), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if service_descriptors_available():
            reflection.enable_server_reflection(
                SERVICE_NAMES + (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                 reflection.SERVICE_NAME), server)
        else:
            log.warning("server reflection off: this tensorflow-serving-api cannot import its "
                        "service descriptors (install tensorflow-serving-api==2.21.0)")
        address = f"{_bracket(options.host)}:{options.grpc_port}"
        try:
            if options.tls is not None:
                credentials = grpc.ssl_server_credentials(
                    [(options.tls.server_key, options.tls.server_cert)],
                    root_certificates=options.tls.custom_ca or None,
                    require_client_auth=options.tls.client_verify)
                self.grpc_port = server.add_secure_port(address, credentials)
            else:
                self.grpc_port = server.add_insecure_port(address)
        except RuntimeError as err:
            raise ServerError(f"cannot listen for gRPC on {address}: {err}") from None
        if not self.grpc_port:
            raise ServerError(f"cannot listen for gRPC on {address}")
        if options.grpc_socket_path:
            try:
                bound = server.add_insecure_port(f"unix:{options.grpc_socket_path}")
            except RuntimeError as err:
                raise ServerError(f"cannot listen on unix:{options.grpc_socket_path}: {err}") from None
            if not bound:
                raise ServerError(f"cannot listen on unix:{options.grpc_socket_path}")
        if options.rest_port is not None:
            try:
                self._rest = RestServer(options.host, options.rest_port, self.manager,
                                        self.metrics, options.limits, options.monitoring,
                                        options.tls, max_threads=options.rest_max_threads,
                                        timeout=options.rest_timeout_seconds)
            except OSError as err:
                raise ServerError(f"cannot listen for REST on {options.host}:"
                                  f"{options.rest_port}: {err.strerror}") from None
            self.rest_port = self._rest.port
            self._rest.start()
        server.start()
        self._grpc = server
        for service in ("",) + SERVICE_NAMES:
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.manager.start_polling(options.file_system_poll_wait_seconds)
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self._config_poller = threading.Thread(target=self._poll_config_file,
                                                   name="config-poll", daemon=True)
            self._config_poller.start()
        log.info("serving gRPC on %s:%d%s", options.host, self.grpc_port,
                 f", REST on {options.host}:{self.rest_port}" if self._rest else "")
        return self

    def _poll_config_file(self) -> None:
        """Re-reads --model_config_file when it changes (model_config_file_poll_wait_seconds)."""
        path = self.options.model_config_file
        last = os.stat(path).st_mtime_ns
        while not self._stopping.wait(self.options.model_config_file_poll_wait_seconds):
            try:
                mtime = os.stat(path).st_mtime_ns
                if mtime != last:
                    last = mtime
                    self.manager.reload_config(server_config.read_model_config_file(path))
            except (OSError, server_config.ConfigError) as err:
                log.error("model config file %s not reloaded: %s", path, err)

    def stop(self, grace: float = 10.0) -> None:
        self._stopping.set()
        self._health.enter_graceful_shutdown()
        if self._rest is not None:
            self._rest.stop()
        if self._grpc is not None:
            self._grpc.stop(grace).wait(grace + 5)
        self.manager.stop()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
