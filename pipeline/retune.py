"""Whether this run tunes, or reuses the latest tuned hyperparameters (`tuner.retune_every`).

Read from ML Metadata before the DAG is built: the Tuner node is in the DAG only when this run
tunes; otherwise a Resolver hands the Trainer the latest HyperParameters artifact.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

from pipeline.config import PipelineConfig

TUNER_NODE = "tuner"
_DONE = ("COMPLETE", "CACHED")


@dataclass
class TuningDecision:
    tune: bool
    reason: str


def decide(config: PipelineConfig, tuner_custom_config: dict[str, Any], force: bool = False
           ) -> TuningDecision:
    """Tune when forced, when never tuned with these settings, or every `retune_every` runs."""
    every = config.tuner.retune_every
    if force:
        return TuningDecision(True, "re-tuning on demand (--retune)")
    if every <= 1:
        return TuningDecision(True, "tuning every run (tuner.retune_every: 1)")
    history = _tuner_history(config)
    if history is None:
        return TuningDecision(True, "no earlier tuning in this work dir")
    runs_since, last_config = history
    if last_config != json.loads(json.dumps(tuner_custom_config)):
        return TuningDecision(True, "the model or tuner settings changed since the last tuning")
    if runs_since + 1 >= every:
        return TuningDecision(True, f"{runs_since} runs since the last tuning "
                                    f"(tuner.retune_every: {every})")
    return TuningDecision(False, f"reusing the latest tuned hyperparameters ({runs_since} runs "
                                 f"since tuning; re-tunes every {every})")


def _tuner_history(config: PipelineConfig) -> Optional[tuple[int, dict]]:
    """(runs since the last successful tuner execution, that execution's custom_config)."""
    if not os.path.exists(config.metadata_path):
        return None
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.summary import _store

    store = _store(config)
    states = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
    node = store.get_context_by_type_and_name("node", f"{config.pipeline_name}.{TUNER_NODE}")
    if node is None:
        return None
    tuned = [e for e in store.get_executions_by_context(node.id)
             if states.get(e.last_known_state) in _DONE]
    if not tuned:
        return None
    last = max(tuned, key=lambda e: (e.create_time_since_epoch, e.id))
    runs = sorted(store.get_contexts_by_type("pipeline_run"),
                  key=lambda c: (c.create_time_since_epoch, c.id))
    tuned_run = next((c for c in store.get_contexts_by_execution(last.id)
                      if c.type_id == runs[0].type_id), None) if runs else None
    if tuned_run is None:
        return None
    runs_since = sum(1 for c in runs if (c.create_time_since_epoch, c.id)
                     > (tuned_run.create_time_since_epoch, tuned_run.id))
    raw = last.custom_properties.get("custom_config")
    return runs_since, json.loads(raw.string_value) if raw is not None else {}
