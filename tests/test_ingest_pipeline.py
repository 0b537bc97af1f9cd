"""The `ingest` node inside a real TFX run (LocalDagRunner + SQLite ML Metadata).

Checks what the orchestrator adds to the executor: the node id and output keys the DAG uses,
the custom artifact types registered in ML Metadata, the driver's span and input fingerprint,
and caching: an unchanged tree reuses the execution, an added file re-runs it.
"""
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
from tfx import v1 as tfx
from tlpipe.components.config import PipelineConfig
from tlpipe.components.ingest.report import quarantine_summary
from tlpipe.pipeline.pipeline import create_pipeline


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _store(config: PipelineConfig) -> metadata_store.MetadataStore:
    conn = metadata_store_pb2.ConnectionConfig()
    conn.sqlite.filename_uri = config.metadata_path
    return metadata_store.MetadataStore(conn)


def _ingest_outputs(store, execution_id: int) -> dict[str, metadata_store_pb2.Artifact]:
    events = [e for e in store.get_events_by_execution_ids([execution_id])
              if e.type in (metadata_store_pb2.Event.OUTPUT,
                            metadata_store_pb2.Event.INTERNAL_OUTPUT)]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    return {e.path.steps[0].key: artifacts[e.artifact_id] for e in events}


def _ingest_executions(store):
    ingest_type = next(t for t in store.get_execution_types() if t.name.endswith("ImageExampleGen"))
    return sorted(store.get_executions_by_type(ingest_type.name), key=lambda e: e.id)


@pytest.mark.e2e  # LocalDagRunner
def test_ingest_node_in_a_local_dag_run(tmp_path: Path):
    data = tmp_path / "data"
    for n, label in enumerate(("ant", "bee")):  # distinct seeds: no byte-identical images
        (data / label).mkdir(parents=True)
        for i in range(5):
            (data / label / f"{i}.jpg").write_bytes(_jpeg(1000 * n + i))
    (data / "bee" / "broken.jpg").write_bytes(b"")
    config = PipelineConfig(work_dir=str(tmp_path / "work"))
    config.data.max_rejected_share = 0.5

    def run():
        tfx.orchestration.LocalDagRunner().run(
            create_pipeline(config, str(data), to_node="ingest"))

    run()
    store = _store(config)
    first = _ingest_executions(store)[-1]
    assert first.last_known_state == metadata_store_pb2.Execution.COMPLETE
    outputs = _ingest_outputs(store, first.id)
    assert set(outputs) == {"examples", "label_vocabulary", "quarantine_report"}
    examples = outputs["examples"]
    assert json.loads(examples.properties["split_names"].string_value) == ["train", "eval", "test"]
    assert os.listdir(os.path.join(examples.uri, "Split-train"))
    assert json.loads(Path(outputs["label_vocabulary"].uri, "label_vocabulary.json")
                      .read_text()) == ["ant", "bee"]
    report = quarantine_summary(outputs["quarantine_report"].uri)
    assert report["inputs"] == 11 and report["written"] == 10
    assert report["by_reason"] == {"empty_file": 1}
    assert report["rows"][0]["path"] == "bee/broken.jpg"
    assert report["lines"][0].startswith("ingest: 11 inputs -> 10 examples")
    types = {t.name for t in store.get_artifact_types()}
    assert {"tlpipe.LabelVocabulary", "tlpipe.QuarantineReport"} <= types

    run()  # nothing changed: TFX reuses the execution
    assert _ingest_executions(store)[-1].last_known_state == \
        metadata_store_pb2.Execution.CACHED

    (data / "ant" / "new.jpg").write_bytes(_jpeg(4242))  # the fingerprint changes: re-run
    run()
    latest = _ingest_executions(store)[-1]
    assert latest.last_known_state == metadata_store_pb2.Execution.COMPLETE
    assert quarantine_summary(_ingest_outputs(store, latest.id)["quarantine_report"].uri)[
        "written"] == 11
