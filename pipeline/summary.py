"""What a run produced, read back from ML Metadata: the end-of-run summary."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tlpipe.components import storage
from tlpipe.components.config import PipelineConfig
from tlpipe.components.features import (
    TRAINING_CURVES_FILE,
    TRAINING_SUMMARY_FILE,
    TRIALS_JSON,
    TRIALS_PNG,
    VERDICT_HTML,
    VERDICT_JSON,
)
from tlpipe.pipeline.events import Event
from tlpipe.pipeline.lineage import INPUT, OUTPUT, Lineage, custom_property, execution_state
from tlpipe.pipeline.nodes import HYPERPARAMETERS_NODE


@dataclass
class RunSummary:
    run_id: str
    # Each node's end: the runner's events for the run just made, ML Metadata's for older runs.
    nodes: list[Event] = field(default_factory=list)
    accuracy: float | None = None
    baseline_accuracy: float | None = None
    blessed: bool | None = None
    pushed: bool | None = None
    newly_pushed: bool | None = None
    pushed_path: str | None = None
    pushed_version: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None
    ingest_lines: list[str] = field(default_factory=list)
    verdict_html: str | None = None
    # "tuned" (this run's tuner, or its cached result) or "reused" (imported earlier values).
    hyperparameters_source: str | None = None
    trial_lines: list[str] = field(default_factory=list)
    training_lines: list[str] = field(default_factory=list)
    transform_lines: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"run {self.run_id}"]
        out.extend("  " + line for line in self.ingest_lines)
        out.extend("  " + line for line in self.transform_lines)
        if self.trial_lines:
            out.append("  tuner trials:")
            out.extend("    " + line for line in self.trial_lines)
        out.extend("  " + line for line in self.training_lines)
        if self.accuracy is not None:
            base = (f" (baseline {self.baseline_accuracy:.4f})"
                    if self.baseline_accuracy is not None else "")
            out.append(f"  test accuracy : {self.accuracy:.4f}{base}")
        if self.hyperparameters:
            source = f" ({self.hyperparameters_source})" if self.hyperparameters_source else ""
            out.append("  hyperparameters: " + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(self.hyperparameters.items())) + source)
        if self.blessed is not None:
            out.append(f"  blessed       : {'yes' if self.blessed else 'NO'}")
        if self.verdict is not None:
            from tlpipe.components.evaluator.verdict import verdict_lines

            out.extend(verdict_lines(self.verdict))
            out.append(f"  verdict page  : {self.verdict_html}")
        if self.pushed:
            how = "pushed" if self.newly_pushed else "already serving, not pushed again"
            out.append(f"  {how}: version {self.pushed_version} at {self.pushed_path}")
        elif self.pushed is not None:
            out.append("  pushed        : no (model not blessed)")
        return out


def latest_run_summary(config: PipelineConfig, node_events: list[Event] | None = None
                       ) -> RunSummary | None:
    """The summary printed after a run: the latest run, with the transform's means; its nodes
    are the runner's end events when given."""
    lineage = Lineage.open(config)
    runs = lineage.runs() if lineage else []  # one pipeline per metadata file
    if not runs:
        return None
    summary = summarize_run(lineage, runs[-1], with_transform=True)
    if node_events is not None:
        summary.nodes = list(node_events)
    return summary


def _fill_ingest(summary: RunSummary, artifacts) -> None:
    from tlpipe.components.ingest.report import SUMMARY_FILE, quarantine_summary

    for artifact in artifacts:
        if storage.exists(os.path.join(artifact.uri, SUMMARY_FILE)):
            summary.ingest_lines = quarantine_summary(artifact.uri)["lines"]


def _fill_label_domain(summary: RunSummary, artifacts) -> None:
    from tlpipe.components.schema.report import LABEL_DOMAIN_FILE, label_domain_lines

    for artifact in artifacts:
        if storage.exists(os.path.join(artifact.uri, LABEL_DOMAIN_FILE)):
            summary.ingest_lines += label_domain_lines(artifact.uri)


def _fill_evaluation(summary: RunSummary, artifacts) -> None:
    for artifact in artifacts:
        blessed = custom_property(artifact, "blessed")
        if blessed is not None:
            summary.blessed = bool(blessed)


def _fill_push(summary: RunSummary, artifacts) -> None:
    for artifact in artifacts:
        verdict_path = os.path.join(artifact.uri, VERDICT_JSON)
        if storage.exists(verdict_path):
            summary.verdict = storage.read_json(verdict_path)
            summary.verdict_html = os.path.join(artifact.uri, VERDICT_HTML)
            summary.accuracy = summary.verdict["overall"].get("accuracy")
            summary.baseline_accuracy = (summary.verdict["baseline_overall"] or {}).get("accuracy")
        summary.pushed = bool(custom_property(artifact, "pushed"))
        summary.newly_pushed = bool(custom_property(artifact, "newly_pushed"))
        summary.pushed_path = custom_property(artifact, "pushed_destination")
        summary.pushed_version = custom_property(artifact, "pushed_version")


# Readers for any run, not only the latest one (`tlpipe runs`, `tlpipe run --if-new-data`).

BEST_HYPERPARAMETERS_FILE = "best_hyperparameters.txt"  # what TFX's Tuner writes


def read_hyperparameters(artifact) -> dict[str, Any]:
    """The values of a HyperParameters artifact (tuned by this run or reused)."""
    path = os.path.join(artifact.uri, BEST_HYPERPARAMETERS_FILE)
    if not storage.exists(path):
        return {}
    return storage.read_json(path).get("values", {})


def summarize_run(lineage: Lineage, run, with_transform: bool = False) -> RunSummary:
    """The end-of-run summary of any run; hyperparameters are the ones the trainer used.

    `with_transform` adds the transform's per-channel constants (runs a tiny TF graph)."""
    summary = RunSummary(run_id=run.name)
    outputs: dict[str, list] = {}
    for node_id, execution in lineage.run_executions(run):
        summary.nodes.append(Event(execution_state(execution), node_id, (
            execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000,
            execution.id, at=execution.create_time_since_epoch / 1000))
        outputs[node_id] = lineage.artifacts(execution.id, OUTPUT)
        if node_id == "trainer":
            for artifact in lineage.artifacts(execution.id, INPUT):
                if storage.exists(os.path.join(artifact.uri, BEST_HYPERPARAMETERS_FILE)):
                    summary.hyperparameters = read_hyperparameters(artifact)
    if not summary.hyperparameters:  # a cached trainer records no inputs: use the producer's
        for artifact in outputs.get("tuner", []) + outputs.get(HYPERPARAMETERS_NODE, []):
            summary.hyperparameters = summary.hyperparameters or read_hyperparameters(artifact)
    if "tuner" in outputs:
        summary.hyperparameters_source = "tuned"
    elif HYPERPARAMETERS_NODE in outputs:
        summary.hyperparameters_source = "reused from an earlier tuning"
    _fill_ingest(summary, outputs.get("ingest", []))
    _fill_label_domain(summary, outputs.get("label_domain", []))
    _fill_trials(summary, outputs.get("tuner", []))
    _fill_training(summary, outputs.get("trainer", []))
    if with_transform:
        _fill_transform(summary, outputs.get("transform", []))
    _fill_evaluation(summary, outputs.get("evaluator", []))
    _fill_push(summary, outputs.get("pusher", []))
    return summary


def _fill_trials(summary: RunSummary, artifacts) -> None:
    from tlpipe.components.tuner.report import trial_lines

    for artifact in artifacts:
        path = os.path.join(artifact.uri, TRIALS_JSON)
        if storage.exists(path):
            summary.trial_lines = trial_lines(storage.read_json(path))
            summary.trial_lines.append(f"(chart: {os.path.join(artifact.uri, TRIALS_PNG)})")


def _fill_training(summary: RunSummary, artifacts) -> None:
    """Epochs actually run, speed, and whether phase 1 trained on cached features."""
    for artifact in artifacts:
        path = os.path.join(artifact.uri, TRAINING_SUMMARY_FILE)
        if not storage.exists(path):
            continue
        training = storage.read_json(path)
        for name, phase in sorted(training.get("phases", {}).items()):
            if not isinstance(phase, dict):
                continue
            speed = (f", {phase['images_per_second']:.0f} images/s"
                     if phase.get("images_per_second") else "")
            best = (f", best selection (eval) accuracy {phase['best_val_accuracy']:.4f}"
                    if "best_val_accuracy" in phase else "")
            summary.training_lines.append(
                f"trainer {name}: {phase['epochs']} epochs in {phase['seconds']:.0f}s{speed}{best}")
        if training.get("phase1_features") == "cached":
            summary.training_lines.append(
                "trainer phase1 trained on cached base features: no augmentation in phase 1")
        if training.get("devices"):
            summary.training_lines.append(
                f"trainer devices: {', '.join(training['devices'])} (global batch "
                f"{training.get('global_batch_size')})")
        if training.get("warm_start") not in (None, "off"):
            summary.training_lines.append(f"trainer warm start: {training['warm_start']}")
        summary.training_lines.append(
            f"training curves: {os.path.join(artifact.uri, TRAINING_CURVES_FILE)}")


def _fill_transform(summary: RunSummary, artifacts) -> None:
    for artifact in artifacts:
        if artifact.uri.rstrip("/").split("/")[-2] != "transform_graph":
            continue
        from tlpipe.components.transform.preprocessing import channel_stats

        stats = channel_stats(artifact.uri)
        summary.transform_lines.append(
            "transform channel mean (RGB): " + ", ".join(f"{v:.2f}" for v in stats["mean"])
            + "; std: " + ", ".join(f"{v:.2f}" for v in stats["std"]))
