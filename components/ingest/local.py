"""Runs the ingest node's driver and executor in this process, without ML Metadata.

Exactly what the orchestrator runs (the component's execution properties, the span-resolving
driver, the Beam executor), with output artifacts in a folder of your choice: for tests, the
benchmark and debugging a dataset. Pipelines use `make_ingest` through TFX instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from google.protobuf import message
from tfx.components.example_gen.driver import update_output_artifact
from tfx.dsl.components.base import base_beam_executor
from tfx.orchestration import data_types
from tfx.utils import proto_utils
from tlpipe.components.config import PipelineConfig
from tlpipe.components.ingest.component import make_ingest
from tlpipe.components.ingest.driver import SpanWindowDriver
from tlpipe.components.ingest.executor import ImageExampleGenExecutor
from tlpipe.components.ingest.report import LABEL_VOCABULARY_FILE, QUARANTINE_FILE, SUMMARY_FILE


@dataclass
class IngestRun:
    examples_uri: str
    vocabulary_path: str
    quarantine_path: str
    summary_path: str
    exec_properties: dict[str, Any]
    artifacts: dict[str, Any]


def resolved_exec_properties(config: PipelineConfig, data_root: str) -> dict[str, Any]:
    """The ingest node's execution properties after the driver: spans and fingerprint filled."""
    node = make_ingest(config.data, data_root)
    props = {k: proto_utils.proto_to_json(v) if isinstance(v, message.Message) else v
             for k, v in node.exec_properties.items() if v is not None}
    info = data_types.PipelineInfo("local", "")
    return SpanWindowDriver(None).resolve_exec_properties(
        props, info, data_types.ComponentInfo("ImageExampleGen", "ingest", info))


def run_ingest(config: PipelineConfig, data_root: str, output_dir: str,
               beam_pipeline_args: list[str] | None = None) -> IngestRun:
    """Driver + executor into `output_dir/<output key>/`; raises the executor's errors."""
    props = resolved_exec_properties(config, data_root)
    node = make_ingest(config.data, data_root)
    artifacts = {}
    for key, channel in node.outputs.items():
        artifact = channel.type()
        artifact.uri = os.path.join(output_dir, key)
        os.makedirs(artifact.uri, exist_ok=True)
        artifacts[key] = [artifact]
    update_output_artifact(props, artifacts["examples"][0].mlmd_artifact)  # as the driver does
    artifacts["examples"][0].span = int(props["span"])  # what MLMD shows as the span property
    args = beam_pipeline_args if beam_pipeline_args is not None else config.beam_pipeline_args()
    # Handing TFX a pipeline factory skips its per-executor packaging of TFX for remote workers
    # (a few seconds, see tfx.utils.dependency_utils); only local runners are meant here.
    executor = ImageExampleGenExecutor(base_beam_executor.BaseBeamExecutor.Context(
        tmp_dir=os.path.join(output_dir, ".tmp"),
        make_beam_pipeline_fn=lambda: beam.Pipeline(argv=args)))
    executor.Do({}, artifacts, props)
    return IngestRun(
        examples_uri=artifacts["examples"][0].uri,
        vocabulary_path=os.path.join(artifacts["label_vocabulary"][0].uri, LABEL_VOCABULARY_FILE),
        quarantine_path=os.path.join(artifacts["quarantine_report"][0].uri, QUARANTINE_FILE),
        summary_path=os.path.join(artifacts["quarantine_report"][0].uri, SUMMARY_FILE),
        exec_properties=props, artifacts=artifacts)
