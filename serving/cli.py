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

from tlpipe.serving.flags import add_serve_flags, log_ignored, server_options, version_text

__all__ = ["register", "server_options"]


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve", help="serve pushed models over TF Serving's gRPC and REST APIs",
        description="An embedded TF Serving-compatible server for the pusher's directory. "
                    "Flags are tensorflow_model_server's names for what it implements.")
    add_serve_flags(serve)
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


def cmd_serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tlpipe.serving.config import ConfigError
    from tlpipe.serving.server import ModelServer, ServerError

    if args.version:
        print(version_text())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log_ignored(args)
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
