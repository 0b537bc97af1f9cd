"""What the server serves and how: models, version policies, labels, batching, monitoring, TLS.

Read from `tensorflow_model_server`'s own inputs (the --model_name/--model_base_path pair, or a
ModelServerConfig text proto; BatchingParameters, MonitoringConfig and SSLConfig files) so a
deployment's files work with either server.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from google.protobuf import text_format
from tlpipe.serving import config_protos


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ServableVersionPolicy: the latest N, all, or specific versions."""

    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, on_disk: list[int]) -> list[int]:
        """The versions to serve out of those present, oldest first."""
        present = sorted(on_disk)
        if self.kind == "all":
            return present
        if self.kind == "specific":
            wanted = set(self.versions)
            return [v for v in present if v in wanted]
        return present[-self.num_versions:] if self.num_versions > 0 else []


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = field(default_factory=dict)


def from_flags(model_name: str, model_base_path: str) -> list[ModelConfig]:
    if not model_name:
        raise ConfigError("--model_name is empty")
    return [ModelConfig(model_name, os.path.abspath(model_base_path))]


def from_model_server_config(config) -> list[ModelConfig]:
    """A `tensorflow.serving.ModelServerConfig` message into our model list."""
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError("only model_config_list is supported (no custom_model_config)")
    models = []
    for entry in config.model_config_list.config:
        if not entry.name or not entry.base_path:
            raise ConfigError(f"model config needs name and base_path: {entry}")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"model {entry.name}: platform '{entry.model_platform}' unsupported")
        models.append(ModelConfig(entry.name, os.path.abspath(entry.base_path),
                                  _policy(entry.model_version_policy), dict(entry.version_labels)))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate model names in config: {names}")
    return models


def _policy(proto) -> VersionPolicy:
    kind = proto.WhichOneof("policy_choice")
    if kind == "all":
        return VersionPolicy("all")
    if kind == "specific":
        if not proto.specific.versions:
            raise ConfigError("specific version policy lists no versions")
        return VersionPolicy("specific", versions=tuple(proto.specific.versions))
    if kind == "latest":
        return VersionPolicy("latest", num_versions=proto.latest.num_versions or 1)
    return VersionPolicy()


def parse_model_server_config(text: str):
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ConfigError(f"Error parsing text-format tensorflow.serving.ModelServerConfig: {err}") from None
    return config


def read_model_config_file(path: str) -> list[ModelConfig]:
    return from_model_server_config(parse_model_server_config(_read(path)))


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's BatchingParameters, with its defaults (timeout 0: take what is queued)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = max(1, os.cpu_count() or 1)
    max_enqueued_batches: int = 10


_BATCHING_KEYS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                  "max_enqueued_batches")


def read_batching_parameters(path: str | None) -> BatchingOptions:
    """TF Serving's BatchingParameters file; fields with no effect here (allowed_batch_sizes,
    padding, thread pool, large-batch splitting) parse but are not applied."""
    if not path:
        return BatchingOptions()
    parameters = _parse_file(path, config_protos.BatchingParameters())
    values = {}
    for key in _BATCHING_KEYS:
        if parameters.HasField(key):
            value = getattr(parameters, key).value
            if value < 0:
                raise ConfigError(f"{path}: {key} must be a non-negative integer")
            values[key] = value
    options = BatchingOptions(**values)
    if options.max_batch_size < 1 or options.num_batch_threads < 1:
        raise ConfigError(f"{path}: max_batch_size and num_batch_threads must be at least 1")
    return options


@dataclass(frozen=True)
class MonitoringOptions:
    """MonitoringConfig's prometheus_config. Unlike TF Serving, on by default (documented)."""

    enable: bool = True
    path: str = "/monitoring/prometheus/metrics"


def read_monitoring_config(path: str | None) -> MonitoringOptions:
    if not path:
        return MonitoringOptions()
    prometheus = _parse_file(path, config_protos.MonitoringConfig()).prometheus_config
    return MonitoringOptions(prometheus.enable, prometheus.path or MonitoringOptions.path)


@dataclass(frozen=True)
class TlsOptions:
    server_cert: bytes
    server_key: bytes
    custom_ca: bytes = b""
    client_verify: bool = False


def read_ssl_config(path: str) -> TlsOptions:
    """TF Serving's SSLConfig: PEM text inline in the file."""
    ssl = _parse_file(path, config_protos.SSLConfig())
    if not ssl.server_cert or not ssl.server_key:
        raise ConfigError(f"{path}: server_cert and server_key are required")
    if ssl.client_verify and not ssl.custom_ca:
        raise ConfigError(f"{path}: client_verify needs custom_ca (the clients' CA)")
    return TlsOptions(ssl.server_cert.encode(), ssl.server_key.encode(), ssl.custom_ca.encode(),
                      ssl.client_verify)


def tls_from_files(cert_file: str, key_file: str) -> TlsOptions:
    return TlsOptions(_read(cert_file).encode(), _read(key_file).encode())


def _parse_file(path: str, message):
    try:
        return text_format.Parse(_read(path), message)
    except text_format.ParseError as err:
        raise ConfigError(f"{path}: {err}") from None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
