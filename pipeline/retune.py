"""Whether this run tunes, or reuses earlier tuned hyperparameters (`tuner.retune_every`).

Decided from ML Metadata before the DAG is built: the Tuner node is in the DAG only when this
run tunes; otherwise an Importer hands the Trainer the HyperParameters artifact of the latest
tuning done with the same model and tuner settings (a plain "latest artifact" Resolver could
pick values tuned for another base or other input sizes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tlpipe.components.config import PipelineConfig

TUNER_NODE = "tuner"
TUNER_OUTPUT = "best_hyperparameters"
# What makes earlier tuning reusable: the same settings and model code (not where caches live).
_COMPARED_KEYS = ("settings", "code")


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
    from tlpipe.pipeline.lineage import OK_STATES, OUTPUT, Lineage, execution_state

    lineage = Lineage.open(config)
    if lineage is None:
        return None
    matching = []
    for execution in lineage.node_executions(TUNER_NODE):
        raw = execution.custom_properties.get("custom_config")
        if (execution_state(execution) in OK_STATES and raw is not None
                and _compared(json.loads(raw.string_value)) == wanted):
            matching.append(execution)
    if not matching:
        return None
    last = max(matching, key=lambda e: (e.create_time_since_epoch, e.id))
    artifacts = lineage.artifacts(last.id, OUTPUT, TUNER_OUTPUT)
    if not artifacts:
        return None
    run_ids = [c.id for c in lineage.runs()]
    tuned_in = lineage.runs_of(last)
    if not tuned_in:
        return None
    runs_since = len(run_ids) - 1 - run_ids.index(tuned_in[0])
    return runs_since, artifacts[0].uri
