"""TFMA configuration of the quality gate.

Thresholds are scoped on purpose: an unscoped TFMA threshold applies to every slice, so one
weak class would block a model whose overall accuracy passes. The overall slice carries the
accuracy gate (value, and change against the last blessed model); the optional per-class
recall floor is accuracy on each true-label slice, which is that class's recall. With no
baseline (the first run) TFX ignores change thresholds (rubber stamp); TFX writes no blessing
at all without any threshold (tfx#5148), and the value threshold is always there.

Macro one-vs-rest AUC and calibration come from our own TFMA metrics (metrics.py): TFMA's
binarization needs the class ids here, before ingest has decided which classes exist.

A model whose outputs are not finite probabilities on any eval example is never blessed,
whatever the accuracy bounds: NaN outputs argmax to class 0, which a low accuracy gate passes.
"""
from __future__ import annotations

import json

from tensorflow_model_analysis.proto import config_pb2 as tfma
from tlpipe.components import features
from tlpipe.components.config import EvaluatorConfig
from tlpipe.components.evaluator import metrics as custom_metrics

ACCURACY_METRIC = "accuracy"
TOP_K_METRIC = "top_k_accuracy"
LOG_LOSS_METRIC = "log_loss"
CONFUSION_MATRIX_PLOT = "multi_class_confusion_matrix_plot"
OVERALL = tfma.SlicingSpec()
PER_CLASS = tfma.SlicingSpec(feature_keys=[features.LABEL_NAME_KEY])
ONLY_PROBABILITIES = tfma.PerSliceMetricThreshold(slicing_specs=[OVERALL], threshold=tfma.MetricThreshold(
    value_threshold=tfma.GenericValueThreshold(upper_bound={"value": 0})))


def make_eval_config(gate: EvaluatorConfig) -> tfma.EvalConfig:
    accuracy_thresholds = [tfma.PerSliceMetricThreshold(slicing_specs=[OVERALL], threshold=tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": gate.min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -gate.max_accuracy_drop})))]
    if gate.min_class_recall > 0:
        accuracy_thresholds.append(tfma.PerSliceMetricThreshold(
            slicing_specs=[PER_CLASS], threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(
                    lower_bound={"value": gate.min_class_recall}))))

    def metric(class_name, name, thresholds=(), **extra):
        return tfma.MetricConfig(class_name=class_name, config=json.dumps({"name": name, **extra}),
                                 per_slice_thresholds=list(thresholds))

    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=features.EXAMPLES_SIGNATURE,
                                    label_key=features.LABEL_KEY,
                                    prediction_key=features.PROBABILITIES_KEY)],
        slicing_specs=[OVERALL, PER_CLASS],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            metric("SparseCategoricalAccuracy", ACCURACY_METRIC, accuracy_thresholds),
            metric("SparseTopKCategoricalAccuracy", TOP_K_METRIC, k=gate.top_k),
            metric("SparseCategoricalCrossentropy", LOG_LOSS_METRIC),
            # Argmax confusion matrix (threshold 0): per-class precision, recall and F1 come
            # from it, for any number of classes, without knowing the class count up front.
            tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot",
                              config=json.dumps({"thresholds": [0.0],
                                                 "name": CONFUSION_MATRIX_PLOT})),
            tfma.MetricConfig(class_name=custom_metrics.MacroOneVsRestAUC.__name__,
                              module=custom_metrics.__name__,
                              config=json.dumps({"name": custom_metrics.MACRO_AUC_METRIC})),
            tfma.MetricConfig(class_name=custom_metrics.TopLabelCalibration.__name__,
                              module=custom_metrics.__name__,
                              config=json.dumps({"name": custom_metrics.ECE_METRIC})),
            tfma.MetricConfig(class_name=custom_metrics.InvalidOutputExamples.__name__,
                              module=custom_metrics.__name__,
                              config=json.dumps({"name": custom_metrics.INVALID_OUTPUTS_METRIC}),
                              per_slice_thresholds=[ONLY_PROBABILITIES]),
        ])],
    )
