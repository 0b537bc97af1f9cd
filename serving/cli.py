"""`tlpipe serve` and `tlpipe predict`.

`serve` takes tensorflow_model_server's own flag names for what it implements (both `--flag
value` and `--flag=value`, booleans as `--flag` or `--flag=true`), so a launch script moves
between the two servers unchanged. `predict` is the client.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve", help="serve pushed models over TF Serving's gRPC and REST APIs",
        description="An embedded TF Serving-compatible server for the pusher's directory. "
                    "Flags are tensorflow_model_server's names for what it implements.")
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500; 0: any "
                       "free port)")
    serve.add_argument("--rest_api_port", type=int, default=8501,
                       help="REST port (default 8501; 0 disables REST, as in TF Serving)")
    serve.add_argument("--model_name", default="flowers", help="with --model_base_path")
    serve.add_argument("--model_base_path", help="a model's directory of integer versions, "
                       "e.g. tlpipe-work/serving/flowers")
    serve.add_argument("--model_config_file", help="ModelServerConfig text proto (several "
                       "models, version policies, labels); replaces the two flags above")
    serve.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                       help="re-read --model_config_file this often (0: never)")
    serve.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                       help="look for new versions this often (default 1; 0: load once)")
    serve.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False,
                       help="merge concurrent requests into one model call")
    serve.add_argument("--batching_parameters_file", help="BatchingParameters text proto "
                       "(max_batch_size, batch_timeout_micros, num_batch_threads, "
                       "max_enqueued_batches)")
    serve.add_argument("--monitoring_config_file", help="MonitoringConfig text proto "
                       "(prometheus_config { enable: true path: ... })")
    serve.add_argument("--ssl_config_file", help="SSLConfig text proto (server_key, "
                       "server_cert, custom_ca, client_verify)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; TF Serving binds all)")
    serve.add_argument("--tls_cert_file", help="PEM certificate file (TLS without an "
                       "SSLConfig file)")
    serve.add_argument("--tls_key_file", help="PEM private key file for --tls_cert_file")
    serve.add_argument("--max_input_bytes", type=int, default=32 * 1024 * 1024,
                       help="largest string element (one image) accepted")
    serve.add_argument("--max_image_pixels", type=int, default=40_000_000,
                       help="largest image (width x height, read from its header) accepted")
    serve.add_argument("--grace_seconds", type=float, default=10.0,
                       help="on SIGTERM/SIGINT, how long in-flight requests may take")
    serve.set_defaults(func=cmd_serve)

    predict = subparsers.add_parser(
        "predict", help="classify images through a TF Serving server (gRPC or REST)",
        description="Sends images to any TF Serving server (this one or tensorflow/serving) "
                    "and prints label and probability per image.")
    predict.add_argument("images", nargs="+", metavar="IMG")
    predict.add_argument("--server", default=None,
                         help="HOST:PORT (default localhost:8500, or localhost:8501 with --rest)")
    predict.add_argument("--model", default="flowers")
    choice = predict.add_mutually_exclusive_group()
    choice.add_argument("--version", type=int)
    choice.add_argument("--label")
    predict.add_argument("--top-k", type=int, default=1, dest="top_k")
    predict.add_argument("--rest", action="store_true", help="use the REST API")
    predict.add_argument("--timeout", type=float, default=30.0)
    predict.add_argument("--ca-file", help="PEM root certificate: connect with TLS")
    predict.set_defaults(func=cmd_predict)


def _error(message: str, code: int = 2) -> int:
    print(f"tlpipe: error: {message}", file=sys.stderr)
    return code


def server_options(args: argparse.Namespace):
    """Flags into ServerOptions; ConfigError for anything inconsistent."""
    from tlpipe.serving import config
    from tlpipe.serving.inference import InputLimits
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
    tls = None
    if args.ssl_config_file:
        tls = config.read_ssl_config(args.ssl_config_file)
    elif args.tls_cert_file:
        tls = config.tls_from_files(args.tls_cert_file, args.tls_key_file)
    return ServerOptions(
        models=models, host=args.host, grpc_port=args.port,
        rest_port=args.rest_api_port or None,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        batching=(config.read_batching_parameters(args.batching_parameters_file)
                  if args.enable_batching else None),
        monitoring=config.read_monitoring_config(args.monitoring_config_file),
        tls=tls, limits=InputLimits(args.max_input_bytes, args.max_image_pixels))


def cmd_serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tlpipe.serving.config import ConfigError
    from tlpipe.serving.server import ModelServer, ServerError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        options = server_options(args)
    except ConfigError as err:
        return _error(str(err))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    server = ModelServer(options)
    try:
        server.start()
    except ServerError as err:
        server.stop(0)
        return _error(str(err), 1)
    loaded = ", ".join(f"{name} {versions}" for name, versions in server.manager.loaded().items())
    rest = f", REST on {options.host}:{server.rest_port}" if server.rest_port else ""
    print(f"tlpipe serve: gRPC on {options.host}:{server.grpc_port}{rest}; serving "
          f"{loaded or 'nothing yet'}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        print("tlpipe serve: stopping (finishing in-flight requests)", flush=True)
        server.stop(args.grace_seconds)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tlpipe.serving.client import ClientError, ServingClient

    if args.top_k < 1:
        return _error("--top-k must be at least 1")
    images = []
    for path in args.images:
        try:
            with open(path, "rb") as fh:
                images.append(fh.read())
        except OSError as err:
            return _error(f"cannot read {path}: {err.strerror}")
    server = args.server or ("localhost:8501" if args.rest else "localhost:8500")
    root = None
    if args.ca_file:
        with open(args.ca_file, "rb") as fh:
            root = fh.read()
    try:
        with ServingClient(server, rest=args.rest, timeout=args.timeout,
                           root_certificates=root) as client:
            predictions = client.predict(images, model=args.model, version=args.version,
                                         label=args.label, top_k=args.top_k)
    except ClientError as err:
        return _error(f"{server}: {err}", 1)
    width = max(len(p) for p in args.images)
    for path, prediction in zip(args.images, predictions):
        ranked = "  ".join(f"{name} {probability:.4f}" for name, probability in prediction.top)
        version = f"  (version {prediction.version})" if prediction.version else ""
        print(f"{path:<{width}}  {ranked}{version}")
    return 0
