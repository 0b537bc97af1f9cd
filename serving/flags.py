"""tensorflow_model_server's flags, all 48 of them, for `tlpipe serve`.

Every flag TF Serving's `main.cc` defines is accepted with its own spelling (`--flag value`,
`--flag=value`, booleans as `--flag` or `--flag=false`), so a launch script moves between the two
servers unchanged. A flag with a meaning here is applied; one without (TFLite, TPU, XLA, GPU,
the profiler...) is accepted and named in one log line at start-up. Flags of our own follow.
"""
from __future__ import annotations

import argparse
import logging

from tlpipe.serving.limits import DEFAULT_LIMITS

log = logging.getLogger(__name__)

# Accepted, no effect here: flag -> why (one log line each when given).
IGNORED = {
    "rest_api_enable_cors_support": "no CORS headers are sent",
    "allow_version_labels_for_unavailable_models": "labels may name any version here",
    "enable_per_model_batching_parameters": "one batching configuration for all models",
    "num_load_threads": "versions load one at a time",
    "num_unload_threads": "versions unload one at a time",
    "max_num_load_retries": "a failed version is retried when its directory changes",
    "load_retry_interval_micros": "a failed version is retried when its directory changes",
    "flush_filesystem_caches": "no file-system caches to flush",
    "tensorflow_session_config_file": "use --tensorflow_*_parallelism",
    "use_alts_credentials": "ALTS is not supported; use --ssl_config_file",
    "platform_config_file": "only the tensorflow platform is served",
    "per_process_gpu_memory_fraction": "CPU only",
    "num_request_iterations_for_warmup": "each warmup record runs once",
    "remove_unused_fields_from_bundle_metagraph": "the MetaGraph is not kept",
    "prefer_tflite_model": "TFLite models are not served",
    "num_tflite_pools": "TFLite models are not served",
    "num_tflite_interpreters_per_pool": "TFLite models are not served",
    "enable_signature_method_name_check": "method names are never checked (TF Serving's default)",
    "xla_cpu_compilation_enabled": "XLA is TensorFlow's default choice",
    "xla_gpu_compilation_enabled": "CPU only",
    "enable_profiler": "no profiler service",
    "thread_pool_factory_config_file": "TensorFlow's own thread pools are used",
    "mixed_precision": "models run as saved",
    "skip_initialize_tpu": "no TPU",
    "enable_grpc_healthcheck_service": "grpc.health.v1 is always served",
}


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def _channel_arguments(value: str) -> tuple[tuple[str, str | int], ...]:
    """`key=value,key2=value2` (TF Serving's --grpc_channel_arguments); integers stay integers."""
    pairs = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected key=value, got '{item}'")
        pairs.append((key, int(raw) if raw.lstrip("-").isdigit() else raw))
    return tuple(pairs)


def _flag_bool(group, name: str, default: bool, help: str) -> None:
    group.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=default, help=help)


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    tfs = serve.add_argument_group("tensorflow_model_server flags")
    tfs.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500; 0: any "
                     "free port)")
    tfs.add_argument("--grpc_socket_path", help="also serve gRPC on this Unix socket")
    tfs.add_argument("--rest_api_port", type=int, default=8501,
                     help="REST port (default 8501; 0 disables REST, as in TF Serving)")
    tfs.add_argument("--rest_api_num_threads", type=int, default=64,
                     help="REST connections served at once")
    tfs.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                     help="REST socket timeout: TLS handshake, body read, idle keep-alive")
    tfs.add_argument("--model_name", default="flowers", help="with --model_base_path")
    tfs.add_argument("--model_base_path", help="a model's directory of integer versions, "
                     "e.g. tlpipe-work/serving/flowers")
    tfs.add_argument("--model_config_file", help="ModelServerConfig text proto (several "
                     "models, version policies, labels); replaces the two flags above")
    tfs.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                     help="re-read --model_config_file this often (0: never)")
    tfs.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                     help="look for new versions this often (default 1; 0 or less: only at "
                          "start-up)")
    _flag_bool(tfs, "enable_batching", False, "merge concurrent requests into one model call")
    tfs.add_argument("--batching_parameters_file", help="BatchingParameters text proto")
    tfs.add_argument("--monitoring_config_file", help="MonitoringConfig text proto")
    tfs.add_argument("--ssl_config_file", help="SSLConfig text proto (server_key, server_cert, "
                     "custom_ca, client_verify), applied to gRPC and REST alike")
    tfs.add_argument("--saved_model_tags", default="serve",
                     help="comma-separated MetaGraph tags to load (default serve)")
    tfs.add_argument("--grpc_channel_arguments", type=_channel_arguments, default=(),
                     help="gRPC server arguments, key=value,key2=value2")
    tfs.add_argument("--grpc_max_threads", type=int, default=32,
                     help="gRPC request threads")
    _flag_bool(tfs, "enable_model_warmup", True,
               "replay assets.extra/tf_serving_warmup_requests before serving a version")
    tfs.add_argument("--tensorflow_session_parallelism", type=int, default=0,
                     help="intra- and inter-op threads of TF1 sessions (0: TensorFlow picks)")
    tfs.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    tfs.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0)
    _flag_bool(tfs, "enable_serialization_as_tensor_content", False,
               "numeric outputs in tensor_content instead of the typed *_val fields")
    tfs.add_argument("--version", action="store_true", help="print the version and exit")
    for name in IGNORED:
        tfs.add_argument(f"--{name}", nargs="?", const="true", default=None,
                         help=f"accepted, no effect: {IGNORED[name]}")

    own = serve.add_argument_group("tlpipe flags")
    own.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1; TF Serving binds all)")
    own.add_argument("--tls_cert_file", help="PEM certificate file (TLS without an SSLConfig)")
    own.add_argument("--tls_key_file", help="PEM private key file for --tls_cert_file")
    own.add_argument("--max_input_bytes", type=int, default=DEFAULT_LIMITS.max_string_bytes,
                     help="largest string element (one image) accepted")
    own.add_argument("--max_image_pixels", type=int, default=DEFAULT_LIMITS.max_image_pixels,
                     help="largest image (width x height, read from its header) accepted")
    own.add_argument("--max_request_bytes", type=int, default=DEFAULT_LIMITS.max_request_bytes,
                     help="largest request, its tensors expanded")
    own.add_argument("--max_batch_rows", type=int, default=DEFAULT_LIMITS.max_batch_rows,
                     help="most rows (instances, examples) in one request")
    own.add_argument("--max_json_bytes", type=int, default=DEFAULT_LIMITS.max_json_bytes,
                     help="largest REST request body")
    _flag_bool(own, "allow_reload_config", True,
               "serve ModelService.HandleReloadConfigRequest (unauthenticated)")
    own.add_argument("--grace_seconds", type=float, default=10.0,
                     help="on SIGTERM/SIGINT, how long in-flight requests may take")


def log_ignored(args: argparse.Namespace) -> None:
    for name, why in IGNORED.items():
        value = getattr(args, name)
        if value is not None:
            log.info("--%s=%s accepted, no effect here: %s", name, value, why)


def server_options(args: argparse.Namespace):
    """Flags into ServerOptions; ConfigError for anything inconsistent."""
    from tlpipe.serving import config
    from tlpipe.serving.limits import InputLimits
    from tlpipe.serving.loader import SessionOptions
    from tlpipe.serving.server import ServerOptions

    if args.model_config_file:
        models = config.read_model_config_file(args.model_config_file)
    elif args.model_base_path:
        models = config.from_flags(args.model_name, args.model_base_path)
    else:
        raise config.ConfigError("give --model_base_path (with --model_name) or "
                                 "--model_config_file")
    if args.batching_parameters_file and not args.enable_batching:
        raise config.ConfigError("--batching_parameters_file needs --enable_batching")
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        raise config.ConfigError("--tls_cert_file and --tls_key_file go together")
    for name in ("grpc_max_threads", "rest_api_num_threads", "rest_api_timeout_in_ms",
                 "max_batch_rows", "max_request_bytes", "max_json_bytes"):
        if getattr(args, name) < 1:
            raise config.ConfigError(f"--{name} must be at least 1")
    tls = None
    if args.ssl_config_file:
        tls = config.read_ssl_config(args.ssl_config_file)
    elif args.tls_cert_file:
        tls = config.tls_from_files(args.tls_cert_file, args.tls_key_file)
    tags = tuple(t.strip() for t in args.saved_model_tags.split(",") if t.strip())
    if not tags:
        raise config.ConfigError("--saved_model_tags is empty")
    parallelism = args.tensorflow_session_parallelism
    return ServerOptions(
        models=models, host=args.host, grpc_port=args.port,
        rest_port=args.rest_api_port or None,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        batching=(config.read_batching_parameters(args.batching_parameters_file)
                  if args.enable_batching else None),
        monitoring=config.read_monitoring_config(args.monitoring_config_file),
        tls=tls,
        limits=InputLimits(args.max_input_bytes, args.max_image_pixels, args.max_request_bytes,
                           args.max_batch_rows, args.max_json_bytes),
        grpc_max_workers=args.grpc_max_threads, rest_max_threads=args.rest_api_num_threads,
        rest_timeout_seconds=args.rest_api_timeout_in_ms / 1000.0,
        grpc_socket_path=args.grpc_socket_path,
        grpc_channel_arguments=args.grpc_channel_arguments,
        tensor_content=args.enable_serialization_as_tensor_content,
        allow_reload_config=args.allow_reload_config,
        enable_model_warmup=args.enable_model_warmup,
        session=SessionOptions(tags, args.tensorflow_intra_op_parallelism or parallelism,
                               args.tensorflow_inter_op_parallelism or parallelism))


def version_text() -> str:
    """What --version prints: TF Serving prints its own and TensorFlow's version."""
    from importlib import metadata

    import tensorflow as tf

    try:
        ours = metadata.version("tlpipe")
    except metadata.PackageNotFoundError:
        ours = "unknown"
    return f"TensorFlow ModelServer: tlpipe-serve-{ours}\nTensorFlow Library: {tf.__version__}"
