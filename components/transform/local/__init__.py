"""Runs TFX's Transform executor in this process, without ML Metadata: for tests and the benchmark.

The executor, module file and custom_config are the pipeline's; the artifacts go to a folder of
your choice, and the outputs are what the Tuner and Trainer read (`TFTransformOutput` on
`transform_graph`, gzipped tf.Examples under `transformed_examples/Split-*`). Pipelines run the
Transform component through TFX instead.

A package, not a module beside preprocessing.py: TFX packages (and hashes into Transform's cache
key) every .py file in the module file's folder, and this runner is no part of the module.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils
from tfx.components.transform.executor import Executor
from tfx.dsl.components.base import base_beam_executor
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as specs
from tlpipe.components import features
from tlpipe.components.beam_args import with_runner

MODULE_FILE = str(Path(__file__).resolve().parents[1] / "preprocessing.py")
# The raw features preprocessing_fn reads, shaped as SchemaGen infers them (one value each).
RAW_FEATURE_SPEC = {
    features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
    features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64),
    features.LABEL_NAME_KEY: tf.io.FixedLenFeature([1], tf.string),
}


@dataclass
class TransformRun:
    transform_graph_uri: str
    transformed_examples_uri: str
    artifacts: dict[str, Any]

    def split_pattern(self, split: str) -> str:
        return os.path.join(self.transformed_examples_uri, f"Split-{split}", "*")


def write_raw_schema(uri: str) -> str:
    """A schema.pbtxt for RAW_FEATURE_SPEC (ingest's other features are not read)."""
    os.makedirs(uri, exist_ok=True)
    path = os.path.join(uri, "schema.pbtxt")
    with tf.io.gfile.GFile(path, "w") as fh:
        fh.write(str(schema_utils.schema_from_feature_spec(RAW_FEATURE_SPEC)))
    return uri


def examples_artifact(uri: str, splits: list[str]) -> standard_artifacts.Examples:
    artifact = standard_artifacts.Examples()
    artifact.uri = uri
    artifact.split_names = json.dumps(splits)
    return artifact


def run_transform(examples_uri: str, splits: list[str], schema_uri: str, output_dir: str,
                  custom_config: dict[str, Any], beam_pipeline_args: list[str] | None = None,
                  disable_statistics: bool = True) -> TransformRun:
    """Transform executor: analyze the train split, transform every split, into `output_dir`."""
    schema = standard_artifacts.Schema()
    schema.uri = schema_uri
    outputs: dict[str, Any] = {
        specs.TRANSFORM_GRAPH_KEY: standard_artifacts.TransformGraph(),
        specs.TRANSFORMED_EXAMPLES_KEY: standard_artifacts.Examples(),
    }
    if not disable_statistics:
        for key, kind in ((specs.PRE_TRANSFORM_SCHEMA_KEY, standard_artifacts.Schema),
                          (specs.PRE_TRANSFORM_STATS_KEY, standard_artifacts.ExampleStatistics),
                          (specs.POST_TRANSFORM_SCHEMA_KEY, standard_artifacts.Schema),
                          (specs.POST_TRANSFORM_STATS_KEY, standard_artifacts.ExampleStatistics),
                          (specs.POST_TRANSFORM_ANOMALIES_KEY,
                           standard_artifacts.ExampleAnomalies)):
            outputs[key] = kind()
    for key, artifact in outputs.items():
        artifact.uri = os.path.join(output_dir, key)
        os.makedirs(artifact.uri, exist_ok=True)
    args = beam_pipeline_args if beam_pipeline_args is not None else with_runner([
        "--direct_running_mode=in_memory", "--direct_num_workers=1"])
    # A pipeline factory skips TFX's packaging of itself for remote workers (local runs only).
    executor = Executor(base_beam_executor.BaseBeamExecutor.Context(
        tmp_dir=os.path.join(output_dir, ".tmp"),
        make_beam_pipeline_fn=lambda: beam.Pipeline(argv=args)))
    output_dict = {key: [artifact] for key, artifact in outputs.items()}
    executor.Do(
        {specs.EXAMPLES_KEY: [examples_artifact(examples_uri, splits)],
         specs.SCHEMA_KEY: [schema]},
        output_dict,
        {specs.MODULE_FILE_KEY: MODULE_FILE,
         specs.CUSTOM_CONFIG_KEY: json.dumps(custom_config),
         specs.DISABLE_STATISTICS_KEY: int(disable_statistics)})
    return TransformRun(outputs[specs.TRANSFORM_GRAPH_KEY].uri,
                        outputs[specs.TRANSFORMED_EXAMPLES_KEY].uri, output_dict)
