"""Serving benchmark: the embedded server's overhead and throughput, with their baselines.

In one run:
  1. single-image (raw JPEG) Predict latency over gRPC (server in a child process) vs calling
     the same SavedModel signature in this process: p50/p99 and the overhead at p50 seen by the
     client; and, timed inside the server, the Predict handler minus the model call within it
     (the server's own time: decode, checks, encode, metrics);
  2. throughput with 1, 4 and 16 concurrent clients, without and with --enable_batching
     (closed loop: each client sends its next request when the last one answered; the two
     servers run side by side and are measured in alternating rounds).
Targets (issue 8): overhead <= 1 ms at p50; batching >= 1.5x at 16 clients.

    .venv/bin/python bench/serving_bench.py --model_base_path tlpipe-work/serving/flowers \\
        --images DIR_WITH_JPEGS
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _serve_child(args) -> int:
    """Runs the server in this (child) process until stdin closes; prints the gRPC port, then
    the server-side times of each Predict: whole handler and model call (seconds)."""
    from tlpipe.serving import grpc_services, inference
    from tlpipe.serving.config import from_flags, read_batching_parameters
    from tlpipe.serving.server import ModelServer, ServerOptions

    model_times, handler_times = {}, []
    run_signature = inference.run_signature
    predict = grpc_services.PredictionServicer.Predict

    def timed_run(signature, inputs):
        started = time.perf_counter()
        try:
            return run_signature(signature, inputs)
        finally:
            model_times[threading.get_ident()] = time.perf_counter() - started

    def timed_predict(self, request, context):
        started = time.perf_counter()
        try:
            return predict(self, request, context)
        finally:
            handler = time.perf_counter() - started
            handler_times.append((handler, model_times.pop(threading.get_ident(), handler)))

    inference.run_signature = timed_run
    grpc_services.PredictionServicer.Predict = timed_predict
    batching = read_batching_parameters(args.batching_parameters_file) if args.batching else None
    server = ModelServer(ServerOptions(from_flags("flowers", args.model_base_path), grpc_port=0,
                                       rest_port=None, file_system_poll_wait_seconds=0,
                                       batching=batching)).start()
    print(f"PORT {server.grpc_port}", flush=True)
    sys.stdin.read()
    server.stop(5)
    for handler, model in handler_times:
        print(f"TIME {handler:.9f} {model:.9f}", flush=True)
    return 0


class _Child:
    def __init__(self, model_base_path: str, batching_file: str | None):
        command = [sys.executable, __file__, "--serve-child", "--model_base_path",
                   model_base_path]
        if batching_file:
            command += ["--batching", "--batching_parameters_file", batching_file]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.process.kill()
            raise RuntimeError(f"server child did not start: {line!r}")
        self.port = int(line.split()[1])

    def close(self) -> list[tuple[float, float]]:
        """Stops the child; its (handler, model) seconds for every Predict it served."""
        self.process.stdin.close()
        times = [tuple(map(float, line.split()[1:])) for line in self.process.stdout
                 if line.startswith("TIME ")]
        self.process.wait(timeout=60)
        return times


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    import numpy as np

    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _stub(port: int):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _request(image: bytes):
    from tlpipe.serving.client import predict_request

    return predict_request([image])


def _latency_pairs(version_dir: str, port: int, image: bytes, n: int):
    """Alternates an in-process call and a gRPC call, so both see the same machine load."""
    import tensorflow as tf

    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    channel, stub = _stub(port)
    request = _request(image)

    def in_process():
        result = signature(image_bytes=tf.constant([image]))
        return {k: v.numpy() for k, v in result.items()}

    def over_grpc():
        reply = stub.Predict(request)
        return {k: tf.make_ndarray(v) for k, v in reply.outputs.items()}

    for _ in range(20):
        in_process()
        over_grpc()
    local, remote = [], []
    for _ in range(n):
        for call, times in ((in_process, local), (over_grpc, remote)):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
    channel.close()
    return local, remote


def _throughput(port: int, images: list[bytes], clients: int, seconds: float) -> float:
    """Requests per second with `clients` requests always in flight (asynchronous stubs)."""
    channel, stub = _stub(port)
    requests = [_request(image) for image in images]
    for request in requests[:4]:
        stub.Predict(request)
    lock = threading.Lock()
    done = threading.Event()
    state = {"completed": 0, "failed": 0, "in_flight": 0}
    deadline = time.perf_counter() + seconds

    def send(i: int) -> None:
        future = stub.Predict.future(requests[i % len(requests)], timeout=60)
        future.add_done_callback(lambda f: finished(f, i))

    def finished(future, i: int) -> None:
        with lock:
            if future.exception() is None:
                state["completed"] += 1
            else:
                state["failed"] += 1
            again = time.perf_counter() < deadline
            if not again:
                state["in_flight"] -= 1
                if state["in_flight"] == 0:
                    done.set()
        if again:
            send(i + clients)

    started = time.perf_counter()
    with lock:
        state["in_flight"] = clients
    for i in range(clients):
        send(i)
    done.wait(seconds + 120)
    elapsed = time.perf_counter() - started
    channel.close()
    if state["failed"]:
        raise RuntimeError(f"{state['failed']} requests failed")
    return state["completed"] / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_base_path", required=True)
    parser.add_argument("--images", help="folder searched for *.jpg (default: synthetic)")
    parser.add_argument("--requests", type=int, default=500, help="latency samples")
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per point")
    parser.add_argument("--max_batch_size", type=int, default=16)
    parser.add_argument("--batch_timeout_micros", type=int, default=0)
    parser.add_argument("--num_batch_threads", type=int, default=1)
    parser.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batching", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batching_parameters_file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:
        return _serve_child(args)

    from tlpipe.serving import layout

    versions = layout.versions(os.path.abspath(args.model_base_path))
    if not versions:
        parser.error(f"no versions under {args.model_base_path}")
    if args.images:
        paths = sorted(Path(args.images).rglob("*.jpg"))[:32]
    else:
        from tlpipe.data.synthetic import make_image_folder

        folder = tempfile.mkdtemp(prefix="serving-bench-")
        make_image_folder(folder, classes=3, per_class=8, size=96, seed=3)
        paths = sorted(Path(folder).rglob("*.jpg"))
    images = [p.read_bytes() for p in paths]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"model {versions[-1].path}; {len(images)} JPEGs, median {sorted(map(len, images))[len(images) // 2]} bytes")

    with tempfile.NamedTemporaryFile("w", suffix=".config", delete=False) as fh:
        fh.write(f"max_batch_size {{ value: {args.max_batch_size} }}\n"
                 f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
                 f"num_batch_threads {{ value: {args.num_batch_threads} }}\n")
    plain_child = _Child(args.model_base_path, None)
    batched_child = _Child(args.model_base_path, fh.name)
    try:
        local, remote = _latency_pairs(versions[-1].path, plain_child.port, images[0],
                                       args.requests)
        latency_requests = len(remote) + 20
        in_process, over_grpc = _percentiles(local), _percentiles(remote)
        print(f"\nsingle-image Predict latency, {args.requests} sequential requests each, "
              "interleaved")
        print(f"  in-process signature call (baseline): p50 {in_process[0]:.2f} ms  "
              f"p99 {in_process[1]:.2f} ms")
        print(f"  gRPC to the embedded server         : p50 {over_grpc[0]:.2f} ms  "
              f"p99 {over_grpc[1]:.2f} ms")
        print(f"  server overhead at p50: {over_grpc[0] - in_process[0]:.2f} ms "
              f"(target <= 1 ms); ratio {over_grpc[0] / in_process[0]:.2f}x")
        # both servers up at once (an idle one costs no CPU), measured in alternation, so a
        # change in machine load between points biases neither side; median of the rounds
        plain, batched = {}, {}
        for n in (1, 4, 16):
            rounds = [(_throughput(plain_child.port, images, n, args.seconds),
                       _throughput(batched_child.port, images, n, args.seconds))
                      for _ in range(args.rounds)]
            plain[n] = statistics.median(r[0] for r in rounds)
            batched[n] = statistics.median(r[1] for r in rounds)
    finally:
        server_times = plain_child.close()
        batched_child.close()
        os.unlink(fh.name)
    # the sequential latency requests are the plain server's first ones (after 20 warm-ups)
    sequential = server_times[20:latency_requests]
    handler_p50 = statistics.median(h for h, _ in sequential) * 1e3
    model_p50 = statistics.median(m for _, m in sequential) * 1e3
    own_p50 = statistics.median(h - m for h, m in sequential) * 1e3
    print(f"  server side (Predict handler vs the model call inside it, {len(sequential)} "
          f"requests): handler p50 {handler_p50:.2f} ms, model p50 {model_p50:.2f} ms, "
          f"server's own time p50 {own_p50:.3f} ms (target <= 1 ms)")
    print(f"\nthroughput, single-image requests, median of {args.rounds} alternating rounds of "
          f"{args.seconds:.0f} s "
          f"(batching: max_batch_size {args.max_batch_size}, batch_timeout_micros "
          f"{args.batch_timeout_micros}, num_batch_threads {args.num_batch_threads})")
    print("  clients  no batching (baseline)  batching   ratio")
    for n in (1, 4, 16):
        print(f"  {n:7d}  {plain[n]:14.1f} req/s  {batched[n]:7.1f} req/s  "
              f"{batched[n] / plain[n]:.2f}x")
    print(f"  target: batching >= 1.5x at 16 clients -> "
          f"{'met' if batched[16] >= 1.5 * plain[16] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
