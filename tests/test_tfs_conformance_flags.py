"""TF Serving's flag checks (tensorflow_model_server_test.py: testBadModelConfig,
testGoodGrpcChannelArgs; main.cc's flag list) and start-up behaviour, against `tlpipe serve`."""
from __future__ import annotations

import pytest
import tfs_models
from tfs_support import predict_half, serve_args, verify_prediction
from tlpipe.serving.cli import server_options
from tlpipe.serving.server import ModelServer


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfs_models")
    tfs_models.half_plus_two_tf1(root / "half_plus_two")
    return root


def test_bad_model_config(tmp_path, capsys):  # testBadModelConfig
    config = tmp_path / "bad_model_config.txt"
    config.write_text("improperly formatted file\n")
    args = serve_args("--model_config_file", str(config))
    assert args.func(args) != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in capsys.readouterr().err


def test_good_grpc_channel_args(models):  # testGoodGrpcChannelArgs
    args = serve_args("--model_base_path", str(models / "half_plus_two"), "--model_name=default",
                       "--port=0", "--rest_api_port=0",
                       "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,"
                       "grpc.lb_policy_name=grpclb")

    options = server_options(args)
    assert dict(options.grpc_channel_arguments) == {"grpc.max_connection_age_ms": 2000,
                                                    "grpc.lb_policy_name": "grpclb"}
    with ModelServer(options).start() as server:
        verify_prediction(predict_half(server, specify_output=False), 3.0)


def test_version_flag_prints_and_exits(capsys):
    args = serve_args("--version")
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith("TensorFlow ModelServer: ")


def test_start_refused_when_a_configured_model_cannot_load(tmp_path, capsys):
    broken = tmp_path / "broken" / "00000001"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    args = serve_args("--model_base_path", str(tmp_path / "broken"), "--port=0",
                       "--rest_api_port=0")
    assert args.func(args) == 1
    assert "version 1 failed to load" in capsys.readouterr().err


# tensorflow_model_server's 48 flags (main.cc), each with a value it accepts
ALL_FLAGS = {
    "port": "0", "grpc_socket_path": "/tmp/tlpipe-test.sock", "rest_api_port": "0",
    "rest_api_num_threads": "8", "rest_api_timeout_in_ms": "5000",
    "rest_api_enable_cors_support": "true", "enable_batching": "true",
    "allow_version_labels_for_unavailable_models": "false", "batching_parameters_file": None,
    "enable_per_model_batching_parameters": "false", "model_config_file": None,
    "model_config_file_poll_wait_seconds": "0", "model_name": "default", "model_base_path": None,
    "num_load_threads": "0", "num_unload_threads": "0", "max_num_load_retries": "5",
    "load_retry_interval_micros": "60000000", "file_system_poll_wait_seconds": "1",
    "flush_filesystem_caches": "true", "tensorflow_session_parallelism": "0",
    "tensorflow_session_config_file": "", "tensorflow_intra_op_parallelism": "2",
    "tensorflow_inter_op_parallelism": "1", "use_alts_credentials": "false",
    "ssl_config_file": None, "platform_config_file": "", "per_process_gpu_memory_fraction": "0",
    "saved_model_tags": "serve", "grpc_channel_arguments": "grpc.max_connection_age_ms=2000",
    "grpc_max_threads": "4", "enable_model_warmup": "true",
    "num_request_iterations_for_warmup": "1", "version": None, "monitoring_config_file": None,
    "remove_unused_fields_from_bundle_metagraph": "true", "prefer_tflite_model": "false",
    "num_tflite_pools": "1", "num_tflite_interpreters_per_pool": "1",
    "enable_signature_method_name_check": "false", "xla_cpu_compilation_enabled": "false",
    "xla_gpu_compilation_enabled": "false", "enable_profiler": "true",
    "thread_pool_factory_config_file": "", "mixed_precision": "", "skip_initialize_tpu": "true",
    "enable_grpc_healthcheck_service": "true", "enable_serialization_as_tensor_content": "false",
}


def test_every_tensorflow_model_server_flag_is_accepted(models, tmp_path, caplog):
    assert len(ALL_FLAGS) == 48
    batching = tmp_path / "batching.txt"
    batching.write_text("max_batch_size { value: 4 }")
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }")
    files = {"batching_parameters_file": batching, "monitoring_config_file": monitoring,
             "model_base_path": models / "half_plus_two"}
    argv = [f"--{name}={files.get(name, value)}" for name, value in ALL_FLAGS.items()
            if name not in ("version", "model_config_file", "ssl_config_file")]
    args = serve_args(*argv)
    from tlpipe.serving.flags import log_ignored

    options = server_options(args)
    assert (options.grpc_max_workers, options.rest_max_threads, options.rest_timeout_seconds) == \
        (4, 8, 5.0)
    assert (options.session.tags, options.session.intra_op_threads,
            options.session.inter_op_threads) == (("serve",), 2, 1)
    assert options.batching.max_batch_size == 4 and options.monitoring.enable
    with caplog.at_level("INFO"):
        log_ignored(args)
    ignored = [r.getMessage() for r in caplog.records if "no effect here" in r.getMessage()]
    assert len(ignored) == 25 and all(m.count("\n") == 0 for m in ignored)
    assert any(m.startswith("--enable_profiler=true accepted") for m in ignored)
