"""Whether this run tunes, or reuses earlier tuned hyperparameters (`tuner.retune_every`).

Decided from ML Metadata before the DAG is built: the Tuner node is in the DAG only when this
run tunes; otherwise an Importer hands the Trainer the HyperParameters artifact of the latest
tuning done with the same model and tuner settings (a plain "latest artifact" Resolver could
pick values tuned for another base or other input sizes).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from components.config import PipelineConfig

TUNER_NODE = "tuner"
TUNER_OUTPUT = "best_hyperparameters"
# What makes earlier tuning reusable: the same settings and model code (not where caches live).
_COMPARED_KEYS = ("settings", "code")
_DONE = ("COMPLETE", "CACHED")


@dataclass
class TuningDecision:
    tune: bool
    reason: str
    hyperparameters_uri: str | None = None  # what to reuse when not tuning


def decide(config: PipelineConfig, tuner_custom_config: dict[str, Any], force: bool = False
           ) -> TuningDecision:
    """Tune when forced, when never tuned with these settings, or every `retune_every` runs."""
    every = config.tuner.retune_every
    if force:
        return TuningDecision(True, "tuning on demand")
    if every <= 1:
        return TuningDecision(True, "tuning every run (tuner.retune_every: 1)")
    found = _latest_matching_tuning(config, _compared(tuner_custom_config))
    if found is None:
        return TuningDecision(True, "no earlier tuning with these settings")
    runs_since, uri = found
    if runs_since + 1 >= every:
        return TuningDecision(True, f"{runs_since} runs since the last tuning "
                                    f"(tuner.retune_every: {every})")
    return TuningDecision(False, f"reusing the hyperparameters tuned {runs_since} run(s) ago "
                                 f"(re-tunes every {every} runs; --retune forces it)", uri)


def _compared(custom_config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: custom_config.get(k) for k in _COMPARED_KEYS}))


def _latest_matching_tuning(config: PipelineConfig, wanted: dict[str, Any]
                            ) -> tuple[int, str] | None:
    """(runs since the latest tuner execution with these settings, its hyperparameters URI)."""
    if not os.path.exists(config.metadata_path):
        return None
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.summary import open_store

    store = open_store(config)
    states = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
    node = store.get_context_by_type_and_name("node", f"{config.pipeline_name}.{TUNER_NODE}")
    if node is None:
        return None
    matching = []
    for execution in store.get_executions_by_context(node.id):
        raw = execution.custom_properties.get("custom_config")
        if (states.get(execution.last_known_state) in _DONE and raw is not None
                and _compared(json.loads(raw.string_value)) == wanted):
            matching.append(execution)
    if not matching:
        return None
    last = max(matching, key=lambda e: (e.create_time_since_epoch, e.id))
    outputs = [e.artifact_id for e in store.get_events_by_execution_ids([last.id])
               if e.type == metadata_store_pb2.Event.OUTPUT
               and any(step.key == TUNER_OUTPUT for step in e.path.steps)]
    artifacts = store.get_artifacts_by_id(outputs) if outputs else []
    if not artifacts:
        return None
    runs = sorted(store.get_contexts_by_type("pipeline_run"),
                  key=lambda c: (c.create_time_since_epoch, c.id))
    run_ids = [c.id for c in runs]
    tuned_in = [c.id for c in store.get_contexts_by_execution(last.id) if c.id in run_ids]
    if not tuned_in:
        return None
    runs_since = len(run_ids) - 1 - run_ids.index(tuned_in[0])
    return runs_since, artifacts[0].uri
