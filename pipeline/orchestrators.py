"""Production orchestrators over the same `create_pipeline`: TFX's own runners, no home-made
machinery. `tlpipe compile --kubeflow FILE` writes a Kubeflow Pipelines v2 / Vertex AI
Pipelines spec with TFX's KubeflowV2DagRunner (recurring runs are scheduled there); Airflow
gets a DAG file, pipeline/airflow_dag.py. Beam work goes where `beam.extra_args` sends it
(Dataflow, Flink, Spark), for every orchestrator alike.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from tlpipe.components.config import ConfigError, PipelineConfig
from tlpipe.components.config_loading import load_config, validate

DEFAULT_IMAGE = "tlpipe:latest"  # an image with this project installed (README: Kubeflow)


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


def compile_kubeflow(config: PipelineConfig, data_root: str, output_file: str,
                     image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    """Writes the pipeline spec JSON to `output_file` and returns it as a dict.

    Builds the user-module wheels into the pipeline root as TFX's runner does; the cluster
    must reach that root, the data root and the serving dir (gs://... in production).
    """
    from tfx import v1 as tfx

    from tlpipe.pipeline.pipeline import create_pipeline

    output_file = os.path.abspath(output_file)
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(output_file), output_filename=os.path.basename(output_file))
    with _output_to_log():
        runner.run(create_pipeline(config, data_root), write_out=True)
    with open(output_file) as fh:
        return json.load(fh)


def cmd_compile(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.set, work_dir=args.work_dir,
                             data__root=args.data)
        validate(config)
        if not config.data.root:
            raise ConfigError("compile needs the images' location as the cluster sees it: "
                              "--data gs://bucket/images (or data.root)")
    except ConfigError as err:
        print(f"tlpipe: error: {err}", file=sys.stderr)
        return 2
    from tlpipe.pipeline.cli import resolve_data_root  # a local root made absolute, a URL kept

    spec = compile_kubeflow(config, resolve_data_root(config, None), args.kubeflow, args.image)
    tasks = spec.get("pipelineSpec", spec).get("root", {}).get("dag", {}).get("tasks", {})
    print(f"tlpipe: wrote the Kubeflow V2 pipeline spec {os.path.abspath(args.kubeflow)} "
          f"({len(tasks)} tasks: {', '.join(tasks)}; image {args.image}; pipeline root "
          f"{config.pipeline_root})")
    return 0


def register(sub) -> None:
    parser = sub.add_parser(
        "compile", help="compile the pipeline for Kubeflow Pipelines / Vertex AI",
        description="Compile the same DAG with TFX's KubeflowV2DagRunner to a pipeline spec "
                    "JSON (upload it to Kubeflow Pipelines or Vertex AI Pipelines and schedule "
                    "recurring runs there). Needs the kfp package (requirements-kfp.lock).")
    parser.add_argument("--kubeflow", required=True, metavar="FILE",
                        help="where to write the pipeline spec JSON")
    parser.add_argument("--image", default=DEFAULT_IMAGE,
                        help=f"container image with tlpipe installed (default {DEFAULT_IMAGE})")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--data", help="image root as the cluster sees it (gs://...)")
    parser.add_argument("--work-dir", help="work dir: pipeline root and serving dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.set_defaults(func=cmd_compile)
