"""What a run produced, read back from ML Metadata: the end-of-run summary."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.config import PipelineConfig

_EXECUTION_STATES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


@dataclass
class NodeResult:
    node: str
    state: str  # COMPLETE, CACHED, FAILED, RUNNING, ...

    @property
    def ok(self) -> bool:
        return self.state in ("COMPLETE", "CACHED")


@dataclass
class RunSummary:
    run_id: str
    nodes: list[NodeResult] = field(default_factory=list)
    accuracy: Optional[float] = None
    baseline_accuracy: Optional[float] = None
    blessed: Optional[bool] = None
    pushed: Optional[bool] = None
    newly_pushed: Optional[bool] = None
    pushed_path: Optional[str] = None
    pushed_version: Optional[int] = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    verdict: Optional[dict[str, Any]] = None
    ingest_lines: list[str] = field(default_factory=list)
    verdict_html: Optional[str] = None

    def lines(self) -> list[str]:
        out = [f"run {self.run_id}"]
        out.extend("  " + line for line in self.ingest_lines)
        if self.accuracy is not None:
            base = (f" (baseline {self.baseline_accuracy:.4f})"
                    if self.baseline_accuracy is not None else "")
            out.append(f"  eval accuracy : {self.accuracy:.4f}{base}")
        if self.hyperparameters:
            out.append("  hyperparameters: " + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(self.hyperparameters.items())))
        if self.blessed is not None:
            out.append(f"  blessed       : {'yes' if self.blessed else 'NO'}")
        if self.verdict is not None:
            from components.evaluator.verdict import verdict_lines

            out.extend(verdict_lines(self.verdict))
            out.append(f"  verdict page  : {self.verdict_html}")
        if self.pushed:
            how = "pushed" if self.newly_pushed else "already serving, not pushed again"
            out.append(f"  {how}: version {self.pushed_version} at {self.pushed_path}")
        elif self.pushed is not None:
            out.append("  pushed        : no (model not blessed)")
        return out


def _store(config: PipelineConfig) -> metadata_store.MetadataStore:
    conn = metadata_store_pb2.ConnectionConfig()
    conn.sqlite.filename_uri = config.metadata_path
    conn.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(conn)


def latest_run_summary(config: PipelineConfig) -> Optional[RunSummary]:
    if not os.path.exists(config.metadata_path):
        return None
    store = _store(config)
    runs = store.get_contexts_by_type("pipeline_run")  # one pipeline per metadata file
    if not runs:
        return None
    run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    summary = RunSummary(run_id=run.name)
    executions = sorted(store.get_executions_by_context(run.id), key=lambda e: e.id)
    outputs: dict[str, list] = {}
    for execution in executions:
        node_id = next((c.name.split(".", 1)[-1] for c in store.get_contexts_by_execution(
            execution.id) if c.name.startswith(config.pipeline_name + ".")), "?")
        summary.nodes.append(NodeResult(node_id, _EXECUTION_STATES.get(
            execution.last_known_state, str(execution.last_known_state))))
        events = store.get_events_by_execution_ids([execution.id])
        ids = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
        outputs[node_id] = store.get_artifacts_by_id(ids) if ids else []
    _fill_ingest(summary, outputs.get("ingest", []))
    _fill_evaluation(summary, outputs.get("evaluator", []))
    _fill_push(summary, outputs.get("pusher", []))
    for artifact in outputs.get("tuner", []):
        path = os.path.join(artifact.uri, "best_hyperparameters.txt")
        if os.path.exists(path):
            with open(path) as fh:
                summary.hyperparameters = json.load(fh).get("values", {})
    return summary


def _prop(artifact, name):
    value = artifact.custom_properties.get(name)
    if value is None:
        return None
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _fill_ingest(summary: RunSummary, artifacts) -> None:
    from components.ingest.report import SUMMARY_FILE, quarantine_summary

    for artifact in artifacts:
        if os.path.exists(os.path.join(artifact.uri, SUMMARY_FILE)):
            summary.ingest_lines = quarantine_summary(artifact.uri)["lines"]


def _fill_evaluation(summary: RunSummary, artifacts) -> None:
    for artifact in artifacts:
        blessed = _prop(artifact, "blessed")
        if blessed is not None:
            summary.blessed = bool(blessed)


def _fill_push(summary: RunSummary, artifacts) -> None:
    for artifact in artifacts:
        from components.evaluator.verdict import VERDICT_HTML, VERDICT_JSON

        verdict_path = os.path.join(artifact.uri, VERDICT_JSON)
        if os.path.exists(verdict_path):
            with open(verdict_path) as fh:
                summary.verdict = json.load(fh)
            summary.verdict_html = os.path.join(artifact.uri, VERDICT_HTML)
            summary.accuracy = summary.verdict["overall"].get("accuracy")
            summary.baseline_accuracy = (summary.verdict["baseline_overall"] or {}).get("accuracy")
        summary.pushed = bool(_prop(artifact, "pushed"))
        summary.newly_pushed = bool(_prop(artifact, "newly_pushed"))
        summary.pushed_path = _prop(artifact, "pushed_destination")
        summary.pushed_version = _prop(artifact, "pushed_version")
