"""Reading TFMA's output (the Evaluator's ModelEvaluation artifact)."""
from __future__ import annotations

from typing import Optional

import tensorflow_model_analysis as tfma


def overall_metrics(evaluation_uri: str) -> tuple[dict[str, float], Optional[dict[str, float]]]:
    """Overall-slice metrics of the candidate, and of the baseline when there was one."""
    candidate: dict[str, float] = {}
    baseline: Optional[dict[str, float]] = None
    for metrics in tfma.load_metrics(evaluation_uri):
        if metrics.slice_key.single_slice_keys:
            continue
        for kv in metrics.metric_keys_and_values:
            if kv.key.HasField("sub_key") or kv.key.aggregation_type.ByteSize():
                continue
            value = kv.value
            if not value.HasField("double_value"):
                continue
            if kv.key.is_diff:
                continue
            if kv.key.model_name.endswith("baseline") or kv.key.model_name == "baseline":
                baseline = baseline or {}
                baseline[kv.key.name] = value.double_value.value
            else:
                candidate[kv.key.name] = value.double_value.value
    return candidate, baseline
