"""The label-domain node: pins the label domain of the schema across runs (see domain.py).

    ingest ─ statistics_gen ─ schema_gen ─┐ (inferred schema)
    ingest.label_vocabulary ──────────────┤ (this run's classes)
    ingest.quarantine_report ─────────────┤ (examples per class, folders without usable images)
    latest_label_domain (Resolver) ───────┴─ label_domain ─ schema (pinned) ─ example_validator
                                                          └ label_domain (LabelDomain artifact)

`latest_label_domain` is a Resolver with TFX's LatestArtifactStrategy on this node's
`label_domain` output (Kubeflow V2 resolvers filter by artifact type only: there, the latest
artifact of that type; see LabelDomain below). A failed `label_domain` publishes nothing, so the
pinned domain stays the last good one. The first run finds none and pins its own classes.

Caching: the node's input is the previous run's LabelDomain, so it (and example_validator, which
reads its schema) runs on every pipeline run, about a second each. Transform, the tuner and the
trainer keep reading schema_gen's schema, which is the same but for the label domains, and they
stay cached when nothing changed; they must run after this node (pipeline.py:
`transform.add_upstream_node(label_domain)`), so a `fail` stops the run before them.
"""
import datetime as dt
import json
import os

from absl import logging
from tfx import v1 as tfx
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.types.experimental.simple_artifacts import File
from tlpipe.components.ingest.component import LabelVocabulary, QuarantineReport
from tlpipe.components.schema import domain as label_domain_lib
from tlpipe.components.schema.report import LABEL_DOMAIN_FILE, read_label_domain

SCHEMA_FILE = "schema.pbtxt"  # SchemaGen's file name; ExampleValidator reads the only file
NODE_ID = "label_domain"
RESOLVER_ID = "latest_label_domain"


# The pinned class list and this run's check against it (`label_domain.json`). A standard type,
# not a custom one: Kubeflow V2 compiles a LatestArtifactStrategy Resolver into a query on the
# type's schema title only, and gives every custom type the title `tfx.Artifact`, which matches
# nothing; `File` compiles to `tfx.File`, which nothing else in this pipeline produces. On the
# IR-based runners (local, Airflow) the Resolver also filters by producer node and output key.
LabelDomain = File


def _read_text(path: str) -> str:
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as fh:
        return fh.read()


def _write_text(path: str, text: str) -> None:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as fh:
        fh.write(text)


@component
def LabelDomainGate(
    inferred_schema: InputArtifact[standard_artifacts.Schema],
    label_vocabulary: InputArtifact[LabelVocabulary],
    schema: OutputArtifact[standard_artifacts.Schema],
    label_domain: OutputArtifact[LabelDomain],
    quarantine_report: InputArtifact[QuarantineReport] = None,
    previous_domain: InputArtifact[LabelDomain] = None,
    on_class_change: Parameter[str] = "fail",
) -> None:
    """Compares this run's classes with the pinned domain; writes the pinned schema and the
    LabelDomain record, or fails (on_class_change=fail) naming the changed classes."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tlpipe.components.ingest.report import LABEL_VOCABULARY_FILE, SUMMARY_FILE

    current = json.loads(_read_text(os.path.join(label_vocabulary.uri, LABEL_VOCABULARY_FILE)))
    summary = {}
    if quarantine_report is not None:
        summary = json.loads(_read_text(os.path.join(quarantine_report.uri, SUMMARY_FILE)))
    previous = read_label_domain(previous_domain.uri) if previous_domain is not None else None
    pinned = previous["classes"] if previous else current
    check = label_domain_lib.compare(
        pinned, current, label_domain_lib.examples_by_class(summary),
        summary.get("classes_without_examples", [])
        + [folder.rstrip("/").rsplit("/", 1)[-1] for folder in summary.get("empty_folders", [])])
    status, domain, line = label_domain_lib.decide(check, on_class_change, previous is None)
    (logging.warning if check.changed else logging.info)("%s", line)

    inferred = text_format.Parse(_read_text(os.path.join(inferred_schema.uri, SCHEMA_FILE)),
                                 schema_pb2.Schema())
    _write_text(os.path.join(schema.uri, SCHEMA_FILE), text_format.MessageToString(
        label_domain_lib.pin_schema(inferred, domain)))

    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    pinned_at = previous["pinned_at"] if previous and domain == previous["classes"] else now
    record = {
        "classes": domain,
        "status": status,
        "pinned_at": pinned_at,
        "previous": previous["classes"] if previous else None,
        "current": check.current,
        "unknown": check.unknown,
        "dropped": check.dropped,
        "examples_by_class": check.examples,
        "on_class_change": on_class_change,
        "message": line,
    }
    _write_text(os.path.join(label_domain.uri, LABEL_DOMAIN_FILE),
                json.dumps(record, indent=2, ensure_ascii=False))
    label_domain.set_string_custom_property("label_names", json.dumps(domain, ensure_ascii=False))
    label_domain.set_int_custom_property("num_classes", len(domain))
    label_domain.set_string_custom_property("status", status)
    label_domain.set_string_custom_property("unknown_classes", ",".join(check.unknown))
    label_domain.set_string_custom_property("dropped_classes", ",".join(check.dropped))
    schema.set_string_custom_property("label_names", json.dumps(domain, ensure_ascii=False))


def make_label_domain(ingest, schema_gen, on_class_change: str = "fail"):
    """(latest_label_domain Resolver, label_domain node). `label_domain.outputs["schema"]` is
    the pinned schema for ExampleValidator."""
    if on_class_change not in label_domain_lib.ON_CHANGE:
        raise ValueError(f"data.on_class_change must be one of "
                         f"{', '.join(label_domain_lib.ON_CHANGE)}, got '{on_class_change}'")
    resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        label_domain=tfx.dsl.Channel(type=LabelDomain, producer_component_id=NODE_ID,
                                     output_key="label_domain"),
    ).with_id(RESOLVER_ID)
    gate = LabelDomainGate(
        inferred_schema=schema_gen.outputs["schema"],
        label_vocabulary=ingest.outputs["label_vocabulary"],
        quarantine_report=ingest.outputs["quarantine_report"],
        previous_domain=resolver.outputs["label_domain"],
        on_class_change=on_class_change,
    ).with_id(NODE_ID)
    return resolver, gate
