"""The pinned label domain (components/schema/): the first run pins its classes, later spans are
checked against them. Unit tests of the rules, then a real LocalDagRunner pipeline (ingest ->
statistics_gen -> schema_gen -> latest_label_domain -> label_domain -> example_validator, the
wiring pipeline.py uses) over spans that add an unknown class and drop one."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from PIL import Image
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2
from tfx import v1 as tfx
from tlpipe.components import features
from tlpipe.components.config import PipelineConfig
from tlpipe.components.ingest.component import make_ingest
from tlpipe.components.schema import domain
from tlpipe.components.schema.component import make_label_domain
from tlpipe.components.schema.report import label_domain_lines, read_label_domain

# --- the rules -----------------------------------------------------------------------------------


def test_compare_names_unknown_and_dropped_classes():
    check = domain.compare(["ant", "bee", "cat"], ["bee", "ant", "dog"], {"dog": 7},
                           unusable=["cat"])
    assert (check.unknown, check.dropped, check.changed) == (["dog"], ["cat"], True)
    text = domain.describe(check)
    assert "'dog' (7 examples) not in the pinned domain" in text
    assert "'cat' (folder present, no usable image) without examples" in text
    assert not domain.compare(["a", "b"], ["b", "a"]).changed


def test_decide_fail_warn_accept():
    same = domain.compare(["a", "b"], ["a", "b"])
    assert domain.decide(same, "fail", first=True)[:2] == (domain.FIRST_PIN, ["a", "b"])
    assert domain.decide(same, "fail", first=False)[:2] == (domain.UNCHANGED, ["a", "b"])
    grown = domain.compare(["a", "b"], ["a", "b", "c"])
    with pytest.raises(domain.LabelDomainError, match="unknown class 'c'.*on_class_change=accept"):
        domain.decide(grown, "fail", first=False)
    status, pinned, line = domain.decide(grown, "warn", first=False)
    assert (status, pinned) == (domain.WARNED, ["a", "b"]) and "WARNING" in line
    assert domain.decide(grown, "accept", first=False)[:2] == (domain.ACCEPTED, ["a", "b", "c"])
    with pytest.raises(ValueError, match="on_class_change"):
        domain.decide(same, "ignore", first=False)


def test_pin_schema_sets_both_label_domains_and_keeps_the_rest():
    inferred = schema_pb2.Schema()
    inferred.feature.add(name=features.LABEL_NAME_KEY, type=schema_pb2.BYTES,
                         domain=features.LABEL_NAME_KEY)
    inferred.string_domain.add(name=features.LABEL_NAME_KEY, value=["a", "b", "c"])
    inferred.feature.add(name=features.LABEL_KEY, type=schema_pb2.INT)
    fmt = inferred.feature.add(name=features.FORMAT_KEY, type=schema_pb2.BYTES, domain="format")
    inferred.string_domain.add(name="format", value=["jpeg"])
    pinned = domain.pin_schema(inferred, ["b", "a"])
    domains = {d.name: list(d.value) for d in pinned.string_domain}
    assert domains == {"format": ["jpeg"], features.LABEL_NAME_KEY: ["a", "b"]}
    label = next(f for f in pinned.feature if f.name == features.LABEL_KEY)
    assert (label.int_domain.min, label.int_domain.max) == (0, 1)
    assert next(f for f in pinned.feature if f.name == features.FORMAT_KEY) == fmt
    assert len(inferred.string_domain[0].value) == 3  # the input is not modified


# --- a real pipeline over spans ------------------------------------------------------------------


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _span(root: Path, span: int, classes: list[str], per_class: int = 4) -> None:
    for c, label in enumerate(classes):
        folder = root / f"span-{span}" / label
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"{i}.jpg").write_bytes(_jpeg(span * 1000 + c * 100 + i))


def _pipeline(config: PipelineConfig, data_root: str, on_class_change: str):
    ingest = make_ingest(config.data, data_root)
    statistics_gen = tfx.components.StatisticsGen(
        examples=ingest.outputs["examples"]).with_id("statistics_gen")
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"],
        infer_feature_shape=True).with_id("schema_gen")
    latest_label_domain, label_domain = make_label_domain(ingest, schema_gen, on_class_change)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=label_domain.outputs["schema"]).with_id("example_validator")
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name, pipeline_root=config.pipeline_root,
        components=[ingest, statistics_gen, schema_gen, latest_label_domain, label_domain,
                    example_validator],
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path),
        beam_pipeline_args=[])  # DirectRunner in_memory, without TFX's per-node packaging


class _Runs:
    def __init__(self, tmp_path: Path):
        self.data = tmp_path / "incoming"
        self.config = PipelineConfig(work_dir=str(tmp_path / "work"))
        self.config.data.pattern = "span-{SPAN}/*/*"

    def run(self, on_class_change: str) -> None:
        tfx.orchestration.LocalDagRunner().run(
            _pipeline(self.config, str(self.data), on_class_change))

    def store(self) -> metadata_store.MetadataStore:
        conn = metadata_store_pb2.ConnectionConfig()
        conn.sqlite.filename_uri = self.config.metadata_path
        return metadata_store.MetadataStore(conn)

    def latest(self, type_suffix: str):
        store = self.store()
        kind = next(t.name for t in store.get_execution_types() if t.name.endswith(type_suffix))
        return store, max(store.get_executions_by_type(kind), key=lambda e: e.id)

    def outputs(self, type_suffix: str) -> dict[str, metadata_store_pb2.Artifact]:
        store, execution = self.latest(type_suffix)
        assert execution.last_known_state in (metadata_store_pb2.Execution.COMPLETE,
                                              metadata_store_pb2.Execution.CACHED)
        events = [e for e in store.get_events_by_execution_ids([execution.id])
                  if e.type == metadata_store_pb2.Event.OUTPUT]
        by_id = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        return {e.path.steps[0].key: by_id[e.artifact_id] for e in events}

    def domain(self) -> dict:
        return read_label_domain(self.outputs("LabelDomainGate")["label_domain"].uri)

    def label_anomalies(self) -> dict[str, set[str]]:
        """feature -> anomaly type names, over every split ExampleValidator checked."""
        uri = self.outputs("ExampleValidator")["anomalies"].uri
        found: dict[str, set[str]] = {}
        for split in os.listdir(uri):
            anomalies = anomalies_pb2.Anomalies()
            anomalies.ParseFromString(Path(uri, split, "SchemaDiff.pb").read_bytes())
            for name, info in anomalies.anomaly_info.items():
                if name in (features.LABEL_KEY, features.LABEL_NAME_KEY):
                    found.setdefault(name, set()).update(
                        anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in info.reason)
        return found


@pytest.mark.e2e  # LocalDagRunner: ingest through the label domain gate, several runs
def test_spans_that_add_or_drop_a_class_are_reported_or_stop_the_run(tmp_path):
    runs = _Runs(tmp_path)
    _span(runs.data, 1, ["ant", "bee", "cat"])
    runs.run("fail")  # the first run pins its classes
    first = runs.domain()
    assert (first["classes"], first["status"], first["previous"]) == (
        ["ant", "bee", "cat"], domain.FIRST_PIN, None)
    assert runs.label_anomalies() == {}
    pinned_schema = runs.outputs("LabelDomainGate")["schema"].uri
    assert os.listdir(pinned_schema) == ["schema.pbtxt"]  # ExampleValidator reads the only file

    # Span 2 adds a class: the default stops the run at label_domain, before anything else.
    _span(runs.data, 2, ["ant", "bee", "cat", "dog"])
    with pytest.raises(Exception, match="unknown class 'dog' \\(4 examples\\)"):
        runs.run("fail")
    _, failed = runs.latest("LabelDomainGate")
    assert failed.last_known_state == metadata_store_pb2.Execution.FAILED

    # warn: the run goes on, ExampleValidator flags the unknown name and id, the domain stays.
    runs.run("warn")
    warned = runs.domain()
    assert (warned["classes"], warned["previous"], warned["status"]) == (
        ["ant", "bee", "cat"], ["ant", "bee", "cat"], domain.WARNED)  # run 1's, not the failed
    assert (warned["unknown"], warned["dropped"]) == (["dog"], [])
    assert warned["pinned_at"] == first["pinned_at"]
    anomalies = runs.label_anomalies()
    assert "ENUM_TYPE_UNEXPECTED_STRING_VALUES" in anomalies[features.LABEL_NAME_KEY]
    assert "INT_TYPE_BIG_INT" in anomalies[features.LABEL_KEY]
    assert label_domain_lines(runs.outputs("LabelDomainGate")["label_domain"].uri)[1] == (
        "  classes changed: unknown dog; without examples - (data.on_class_change=warn)")

    # Span 3 drops 'cat': TFDV cannot see a missing value, label_domain does.
    _span(runs.data, 3, ["ant", "bee"])
    with pytest.raises(Exception, match="pinned class 'cat' without examples"):
        runs.run("fail")

    # accept: the change is deliberate; this data's classes become the pinned domain.
    runs.run("accept")
    accepted = runs.domain()
    assert (accepted["classes"], accepted["status"], accepted["dropped"]) == (
        ["ant", "bee"], domain.ACCEPTED, ["cat"])
    assert runs.label_anomalies() == {}

    runs.run("fail")  # the next scheduled run checks against the accepted domain
    again = runs.domain()
    assert (again["classes"], again["status"]) == (["ant", "bee"], domain.UNCHANGED)
    artifact = runs.outputs("LabelDomainGate")["label_domain"]
    assert json.loads(artifact.custom_properties["label_names"].string_value) == ["ant", "bee"]
