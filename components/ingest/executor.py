"""The TFX executor of the image ExampleGen: runs the ingest Beam pipeline (graph.py), commits
its shards (shards.py), records the outputs' properties and fails loudly on bad data (tally.py).

TFX's ImportExampleGen cannot read `root/<class>/*.jpg` (tensorflow/tfx#80). Span resolution and
input fingerprinting (the cache key) come from TFX's FileBasedDriver (components/ingest/driver.py
adds a rolling window of spans); everything else happens on Beam, so no process holds the list of
all files: class folders are listed one per element, manifests are read as text shards.
"""
from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
from absl import logging
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tlpipe.components.config import DataConfig, PipelineConfig
from tlpipe.components.errors import TlpipeError
from tlpipe.components.ingest.graph import build_ingest, write_outputs
from tlpipe.components.ingest.listing import join
from tlpipe.components.ingest.report import LABEL_VOCABULARY_FILE, QUARANTINE_FILE, SUMMARY_FILE
from tlpipe.components.ingest.shards import STAGING_DIR, commit_shards, prepare_staging
from tlpipe.components.ingest.splits import SplitRatios
from tlpipe.components.ingest.tally import problems

EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
VOCABULARY_KEY = "label_vocabulary"
QUARANTINE_KEY = "quarantine_report"
DATA_SETTINGS_KEY = "data"  # in the CustomConfig struct: the DataConfig fields below
# The data settings the executor reads; only these go into the node's cache key (others, such as
# on_class_change, change nothing ingest writes).
DATA_FIELDS = ("manifest", "extensions", "max_pixels", "max_rejected_share", "min_images_per_class")


class IngestError(TlpipeError, RuntimeError):
    """The input cannot make a trustworthy dataset; the message says why and where to look."""


def custom_settings(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """The struct packed into ExampleGen's CustomConfig (an Any holding a Struct)."""
    raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not raw:
        return {}
    custom = example_gen_pb2.CustomConfig()
    json_format.Parse(raw, custom) if isinstance(raw, str) else custom.CopyFrom(raw)
    struct = struct_pb2.Struct()
    custom.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


def data_config(exec_properties: dict[str, Any]) -> DataConfig:
    """The typed data section, rebuilt by the config's own loader from the JSON the node packed
    (DATA_FIELDS; the other fields keep their defaults and are not read here)."""
    packed = custom_settings(exec_properties).get(DATA_SETTINGS_KEY)
    return PipelineConfig.from_dict({"data": json.loads(packed) if packed else {}}).data


def _spans(exec_properties: dict[str, Any], input_config: example_gen_pb2.Input) -> list[int]:
    names = [s.name for s in input_config.splits]
    if all(n.startswith("span-") for n in names):
        return sorted(int(n[len("span-"):]) for n in names)
    span = exec_properties.get("span")
    return [int(span)] if span is not None else []


class ImageExampleGenExecutor(base_beam_executor.BaseBeamExecutor):
    """Writes the splits, the quarantine report and the vocabulary; fails loudly on bad data."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config = example_gen_pb2.Input()
        json_format.Parse(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                          input_config)
        output_config = example_gen_pb2.Output()
        json_format.Parse(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                          output_config)
        ratios = SplitRatios.from_buckets(
            {s.name: s.hash_buckets for s in output_config.split_config.splits})
        data = data_config(exec_properties)
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        patterns = [s.pattern for s in input_config.splits]
        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        quarantine = artifact_utils.get_single_instance(output_dict[QUARANTINE_KEY])
        vocabulary = artifact_utils.get_single_instance(output_dict[VOCABULARY_KEY])
        split_names = ratios.names
        examples.split_names = artifact_utils.encode_split_names(split_names)
        split_uris = {s: artifact_utils.get_split_uri([examples], s) for s in split_names}
        spans = _spans(exec_properties, input_config)
        logging.info("ingest: %s from %s, patterns %s, splits %s",
                     "manifest" if data.manifest else "folders", input_base, patterns, split_names)

        staging = join(examples.uri, STAGING_DIR)
        prepare_staging(staging, split_names)
        with self._make_beam_pipeline() as pipeline:
            collections = build_ingest(pipeline, input_base, patterns, data, ratios, staging)
            write_outputs(collections, staging, quarantine.uri, vocabulary.uri, data,
                          split_names, spans)
        records = commit_shards(staging, split_uris)

        with tf.io.gfile.GFile(os.path.join(quarantine.uri, SUMMARY_FILE)) as fh:
            summary = json.loads(fh.read())
        # The id -> name table also travels with the examples, as before.
        names_json = json.dumps(summary["class_names"], ensure_ascii=False)
        with tf.io.gfile.GFile(os.path.join(examples.uri, LABEL_VOCABULARY_FILE), "w") as fh:
            fh.write(names_json)

        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, write_split.to_file_format_str(
            example_gen_pb2.FORMAT_TFRECORDS_GZIP))
        examples.set_string_custom_property("label_names", names_json)
        examples.set_string_custom_property("spans", ",".join(map(str, spans)))
        vocabulary.set_string_custom_property("label_names", names_json)
        vocabulary.set_int_custom_property("num_classes", len(summary["class_names"]))
        for artifact in (quarantine, examples):
            artifact.set_int_custom_property("num_inputs", summary["inputs"])
            artifact.set_int_custom_property("num_quarantined", summary["quarantined"])
        quarantine.set_float_custom_property("rejected_share", summary["rejected_share"])

        report_path = os.path.join(quarantine.uri, QUARANTINE_FILE)
        logging.info("ingest: %d inputs, %d written %s, %d quarantined %s (report %s)",
                     summary["inputs"], summary["written"], summary["written_by_split"],
                     summary["quarantined"], summary["quarantined_by_reason"], report_path)
        found = problems(summary, data, report_path)
        if records != summary["written_by_split"]:  # what the files hold = what was counted
            found.insert(0, f"internal error: the split files hold {records} records but "
                            f"{summary['written_by_split']} were written")
        if found:
            raise IngestError("ingest: " + "; ".join(found))
