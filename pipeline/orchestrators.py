"""Production orchestrators over the same `create_pipeline`: TFX's own runners, no home-made
machinery. `tlpipe compile --kubeflow FILE` writes a Kubeflow Pipelines v2 / Vertex AI
Pipelines spec with TFX's KubeflowV2DagRunner (recurring runs are scheduled there); Airflow
gets a DAG file, pipeline/airflow_dag.py. Beam work goes where `beam.extra_args` sends it
(Dataflow, Flink, Spark), for every orchestrator alike.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from tlpipe.components import storage
from tlpipe.components.config import ConfigError, PipelineConfig


@contextlib.contextmanager
def _output_to_log() -> Iterator[None]:
    """Building the user-module wheels prints setuptools' chatter on fds 1 and 2: shown only
    when compiling fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if not ok:
                log.seek(0)
                os.write(2, log.read())


def check_kubeflow(config: PipelineConfig) -> None:
    """What a Kubeflow run cannot do, refused before compiling: locations on this machine's disk
    (the module wheels and every output go under the pipeline root, which the pods must reach),
    and several spans (TFX's ExampleGen driver on Kubeflow takes one span per run: "ExampleGen
    only support single span for RollingRange")."""
    if not config.data.root:
        raise ConfigError("compile needs the images' location as the cluster sees it: "
                          "--data gs://bucket/images (or data.root)")
    local = [f"{name} {where}" for name, where in (
        ("pipeline root", config.pipeline_root), ("serving dir", config.serving_base),
        ("feature cache", config.feature_cache_dir)) if not storage.is_url(where)]
    if local:
        raise ConfigError(f"compile needs locations the cluster reaches, not this machine's disk: "
                          f"{'; '.join(local)}; use --work-dir gs://bucket/work (or storage.*)")
    if config.data.num_spans > 1:
        raise ConfigError(f"data.num_spans={config.data.num_spans} cannot run on Kubeflow: TFX's "
                          "ExampleGen driver there ingests a single span per run; set "
                          "data.num_spans=1 (several spans run locally only)")


def compile_kubeflow(config: PipelineConfig, data_root: str, output_file: str,
                     image: str) -> dict[str, Any]:
    """Writes the pipeline spec JSON to `output_file` and returns it as a dict.

    Builds the user-module wheels into the pipeline root (a URL, see check_kubeflow) as TFX's
    runner does; the cluster must reach that root, the data root and the serving dir.
    """
    from tfx import v1 as tfx
    from tlpipe.pipeline.pipeline import create_pipeline

    output_file = os.path.abspath(output_file)
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(output_file), output_filename=os.path.basename(output_file))
    with _output_to_log():
        runner.run(create_pipeline(config, data_root, with_metadata=False), write_out=True)
    with open(output_file) as fh:
        return json.load(fh)
