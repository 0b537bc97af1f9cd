"""`tlpipe serve` and `tlpipe predict` through argparse, as pipeline/cli.py wires them."""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serving_helpers import copy_model, model, start_server
from tlpipe.serving.cli import register, server_options
from tlpipe.serving.client import ClientError, ServingClient
from tlpipe.serving.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlpipe")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(*argv: str) -> int:
    args = _parser().parse_args(list(argv))
    return args.func(args)


def test_serve_accepts_tensorflow_model_server_flag_spellings(tmp_path):
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
                        "num_batch_threads { value: 2 }\n")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    args = _parser().parse_args([
        "serve", "--port=9000", "--rest_api_port=0", "--model_name=flowers",
        f"--model_base_path={tmp_path}", "--enable_batching=true",
        f"--batching_parameters_file={batching}", f"--monitoring_config_file={monitoring}",
        "--file_system_poll_wait_seconds=5"])
    options = server_options(args)
    assert (options.grpc_port, options.rest_port, options.host) == (9000, None, "127.0.0.1")
    assert options.models[0].name == "flowers" and options.models[0].base_path == str(tmp_path)
    assert (options.batching.max_batch_size, options.batching.batch_timeout_micros,
            options.batching.num_batch_threads) == (16, 2000, 2)
    assert options.monitoring.path == "/metrics"
    assert options.file_system_poll_wait_seconds == 5
    plain = server_options(_parser().parse_args(
        ["serve", "--model_base_path", str(tmp_path), "--enable_batching"]))
    assert plain.batching is not None and plain.rest_port == 8501


def test_serve_rejects_inconsistent_flags_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError):
        server_options(_parser().parse_args(["serve"]))
    assert _run("serve", "--model_config_file", str(tmp_path / "absent.config")) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { config { name: 'x' base_path: '/m' bogus: 1 } }")
    assert _run("serve", "--model_config_file", str(bad)) == 2


@pytest.fixture(scope="module")
def served(toy_model_dir, tmp_path_factory):
    base = copy_model(toy_model_dir, tmp_path_factory.mktemp("cli") / "flowers")
    with start_server([model(base)]) as server:
        yield server


@pytest.mark.parametrize("transport", [[], ["--rest"]])
def test_predict_prints_label_and_probability_per_image(served, tiny_images, capsys,
                                                        transport):
    paths = [str(next((tiny_images / c).glob("*.jpg"))) for c in ("class_a", "class_b")]
    port = served.rest_port if transport else served.grpc_port
    code = _run("predict", *paths, "--server", f"127.0.0.1:{port}", "--top-k", "2",
                *transport)
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.strip().splitlines()
    assert len(lines) == 2
    for path, line in zip(paths, lines):
        assert line.startswith(path)
        ranked = re.findall(r"(class_[abc]) (\d\.\d{4})", line)  # every rank named
        assert len(ranked) == 2 and float(ranked[0][1]) >= float(ranked[1][1])
    if not transport:
        assert all(line.endswith("(version 1)") for line in lines)


def test_predict_reports_server_errors_with_exit_1(served, tiny_images, capsys):
    image = str(next((tiny_images / "class_a").glob("*.png")))
    assert _run("predict", image, "--server", f"127.0.0.1:{served.grpc_port}",
                "--version", "5") == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert _run("predict", image, "--server", f"127.0.0.1:{served.rest_port}", "--rest",
                "--model", "tulips") == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert _run("predict", str(Path(image).with_suffix(".none")),
                "--server", f"127.0.0.1:{served.grpc_port}") == 2


def test_client_api_matches_between_grpc_and_rest(served, tiny_images):
    blobs = [p.read_bytes() for p in sorted((tiny_images / "class_c").iterdir())[:3]]
    with ServingClient(f"127.0.0.1:{served.grpc_port}") as over_grpc, \
            ServingClient(f"127.0.0.1:{served.rest_port}", rest=True) as over_rest:
        a = over_grpc.predict(blobs, top_k=3)
        b = over_rest.predict(blobs, top_k=3)
        with pytest.raises(ClientError) as raised:
            over_grpc.predict([b"junk"])
        assert raised.value.code == "INVALID_ARGUMENT"
    assert [p.class_name for p in a] == [p.class_name for p in b]
    for x, y in zip(a, b):
        assert abs(x.probability - y.probability) < 1e-6
        assert len(x.top) == 3 and x.top[0] == (x.class_name, pytest.approx(x.probability))
        assert sorted(name for name, _ in x.top) == ["class_a", "class_b", "class_c"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_subcommand_runs_and_stops_gracefully_on_sigterm(toy_model_dir, tmp_path,
                                                               tiny_images):
    base = copy_model(toy_model_dir, tmp_path / "flowers")
    rest_port = _free_port()
    child = subprocess.Popen(  # the `tlpipe serve` a user starts
        [sys.executable, "-m", "tlpipe.pipeline.cli", "serve", "--port=0", f"--rest_api_port={rest_port}",
         "--model_name=flowers", f"--model_base_path={base}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        line = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "gRPC on" not in line:
            line = child.stdout.readline()
            if not line and child.poll() is not None:
                break
        match = re.search(r"gRPC on 127\.0\.0\.1:(\d+), REST on 127\.0\.0\.1:(\d+); "
                          r"serving flowers \[1\]", line)
        assert match, line + child.stderr.read()
        assert int(match.group(2)) == rest_port
        image = next((tiny_images / "class_b").glob("*.jpg")).read_bytes()
        with ServingClient(f"127.0.0.1:{match.group(1)}") as client:
            assert client.predict([image])[0].version == 1
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert "stopping" in out
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
