"""TFMA configuration of the quality gate.

Thresholds are scoped to the overall slice on purpose: an unscoped TFMA threshold applies to
every slice, so one weak class would block a model whose overall accuracy passes. With no
baseline (the first run) TFX ignores the change threshold (rubber stamp) and the value
threshold alone decides; TFX writes no blessing at all without any threshold (tfx#5148).
"""
from __future__ import annotations

from tensorflow_model_analysis.proto import config_pb2 as tfma

from components import features
from pipeline.config import PipelineConfig

ACCURACY_METRIC = "accuracy"


def make_eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    overall = tfma.SlicingSpec()
    gate = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(
            lower_bound={"value": config.evaluator.min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -config.evaluator.max_accuracy_drop}))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=features.EXAMPLES_SIGNATURE,
                                    label_key=features.LABEL_KEY,
                                    prediction_key=features.PROBABILITIES_KEY)],
        slicing_specs=[overall, tfma.SlicingSpec(feature_keys=[features.LABEL_NAME_KEY])],
        metrics_specs=[tfma.MetricsSpec(
            metrics=[
                tfma.MetricConfig(class_name="ExampleCount"),
                tfma.MetricConfig(
                    class_name="SparseCategoricalAccuracy",
                    config='{"name": "%s"}' % ACCURACY_METRIC,
                    per_slice_thresholds=[tfma.PerSliceMetricThreshold(
                        slicing_specs=[overall], threshold=gate)]),
                tfma.MetricConfig(class_name="SparseCategoricalCrossentropy",
                                  config='{"name": "log_loss"}'),
            ],
        )],
    )
