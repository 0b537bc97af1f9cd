"""TFMA metrics for any number of classes: macro one-vs-rest AUC, calibration, and the count of
eval examples whose outputs are not probabilities (the gate refuses a model with any).

TFMA's own multi-class route (`binarize` with `class_ids`, `aggregate` with `class_weights`)
needs the class ids in the EvalConfig, which is fixed when the pipeline is built, before ingest
has decided which classes exist (a folder whose every image is quarantined is not a class, and
an id past the model's outputs makes TFMA raise). These combiners learn the class count from
the prediction vector instead, as MultiClassConfusionMatrixPlot does, and emit per-class values
under TFMA's usual `SubKey(class_id=...)`, so `tfma.load_metrics` reads them like any other.

Both accumulate fixed-size histograms per class, so memory stays bounded on any eval split.
"""
from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import metrics_for_slice_pb2

MACRO_AUC_METRIC = "macro_auc"               # mean of the per-class one-vs-rest AUCs
CLASS_AUC_METRIC = "one_vs_rest_auc"         # per class (SubKey class_id)
ECE_METRIC = "expected_calibration_error"    # top-label: sum_b n_b/N * |accuracy_b - confidence_b|
CLASS_CALIBRATION_METRIC = "calibration"     # per class: mean probability / label frequency
CALIBRATION_PLOT = "top_label_calibration_plot"  # reliability diagram of the top label
INVALID_OUTPUTS_METRIC = "invalid_output_examples"  # examples whose outputs are not probabilities
# How far from 1 a float32 softmax may sum (it is within ~1e-6 per class).
PROBABILITY_SUM_TOLERANCE = 1e-3


def _examples(element, key: metric_types.MetricKey, eval_config):
    """(label id, probability vector, weight) of one example, unflattened."""
    for label, prediction, weight in metric_util.to_label_prediction_example_weight(
            element, eval_config=eval_config, model_name=key.model_name,
            output_name=key.output_name, example_weighted=key.example_weighted, flatten=False):
        yield (int(np.asarray(label).reshape(-1)[0]), np.asarray(prediction, float).reshape(-1),
               float(np.asarray(weight).reshape(-1)[0]))


def _grow(array: np.ndarray, rows: int) -> np.ndarray:
    """The accumulator's per-class rows, extended when a wider prediction vector shows up."""
    if array.shape[0] >= rows:
        return array
    return np.concatenate([array, np.zeros((rows - array.shape[0],) + array.shape[1:])])


def _bucket(values: np.ndarray, buckets: int) -> np.ndarray:
    return np.clip((values * buckets).astype(int), 0, buckets - 1)


def _class_key(key: metric_types.MetricKey, name: str, class_id: int) -> metric_types.MetricKey:
    return key._replace(name=name, sub_key=metric_types.SubKey(class_id=class_id))


class _HistogramCombiner(beam.CombineFn):
    """Per-class arrays (rows grow with the class count) summed across examples."""

    def __init__(self, key: metric_types.MetricKey, eval_config, buckets: int):
        self._key, self._eval_config, self._buckets = key, eval_config, buckets

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        accumulators = list(accumulators)
        merged = accumulators[0]
        for other in accumulators[1:]:
            for name, array in other.items():
                rows = max(merged[name].shape[0], array.shape[0])
                merged[name] = _grow(merged[name], rows) + _grow(array, rows)
        return merged


class _AUCCombiner(_HistogramCombiner):
    """Histograms of each class's probability over its positives and over its negatives."""

    def create_accumulator(self) -> dict:
        return {"positive": np.zeros((0, self._buckets)), "negative": np.zeros((0, self._buckets))}

    def add_input(self, acc: dict, element) -> dict:
        for label, probabilities, weight in _examples(element, self._key, self._eval_config):
            classes = len(probabilities)
            acc["positive"] = _grow(acc["positive"], classes)
            acc["negative"] = _grow(acc["negative"], classes)
            buckets = _bucket(probabilities, self._buckets)
            is_positive = np.arange(classes) == label
            acc["positive"][is_positive, buckets[is_positive]] += weight
            acc["negative"][~is_positive, buckets[~is_positive]] += weight
        return acc

    def extract_output(self, acc: dict) -> dict:
        out = {}
        for class_id, (pos, neg) in enumerate(zip(acc["positive"], acc["negative"])):
            if pos.sum() and neg.sum():  # undefined without both (e.g. on a true-label slice)
                out[_class_key(self._key, CLASS_AUC_METRIC, class_id)] = auc_from_histograms(pos, neg)
        if out:
            out[self._key] = float(np.mean(list(out.values())))
        return out


def auc_from_histograms(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties (same bucket) counted half."""
    negatives_below = np.cumsum(negative) - negative
    wins = np.sum(positive * (negatives_below + 0.5 * negative))
    return float(wins / (positive.sum() * negative.sum()))


class _CalibrationCombiner(_HistogramCombiner):
    """Per class: summed probability and label count; top label: reliability buckets."""

    def create_accumulator(self) -> dict:
        return {"probability": np.zeros((0,)), "labels": np.zeros((0,)),
                "top": np.zeros((3, self._buckets))}  # rows: examples, correct, confidence

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        accumulators = list(accumulators)
        merged = accumulators[0]
        for other in accumulators[1:]:
            merged["top"] = merged["top"] + other["top"]
            for name in ("probability", "labels"):
                rows = max(len(merged[name]), len(other[name]))
                merged[name] = _grow(merged[name], rows) + _grow(other[name], rows)
        return merged

    def add_input(self, acc: dict, element) -> dict:
        for label, probabilities, weight in _examples(element, self._key, self._eval_config):
            classes = len(probabilities)
            acc["probability"] = _grow(acc["probability"], classes)
            acc["labels"] = _grow(acc["labels"], max(classes, label + 1))
            acc["probability"][:classes] += weight * probabilities
            acc["labels"][label] += weight
            top = int(np.argmax(probabilities))
            bucket = int(_bucket(probabilities[top:top + 1], self._buckets)[0])
            acc["top"][:, bucket] += weight * np.array([1.0, top == label, probabilities[top]])
        return acc

    def extract_output(self, acc: dict) -> dict:
        examples, correct, confidence = acc["top"]
        total = examples.sum()
        if not total:
            return {}
        out = {self._key: float(np.sum(np.abs(correct - confidence)) / total)}
        for class_id, (probability, labels) in enumerate(zip(acc["probability"], acc["labels"])):
            if labels:
                out[_class_key(self._key, CLASS_CALIBRATION_METRIC, class_id)] = float(probability / labels)
        plot = metrics_for_slice_pb2.CalibrationHistogramBuckets()
        for b in range(self._buckets):
            plot.buckets.add(lower_threshold_inclusive=b / self._buckets,
                             upper_threshold_exclusive=(b + 1) / self._buckets,
                             num_weighted_examples={"value": examples[b]},
                             total_weighted_label={"value": correct[b]},
                             total_weighted_refined_prediction={"value": confidence[b]})
        out[metric_types.PlotKey(CALIBRATION_PLOT, model_name=self._key.model_name,
                                 output_name=self._key.output_name,
                                 example_weighted=self._key.example_weighted)] = plot
        return out


def is_probability_vector(values: np.ndarray) -> bool:
    """Finite, each in [0, 1], summing to 1: what a classifier's softmax output must be."""
    values = np.asarray(values, float).reshape(-1)
    return bool(values.size and np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= 1))
                and abs(values.sum() - 1) <= PROBABILITY_SUM_TOLERANCE)


class _InvalidOutputsCombiner(beam.CombineFn):
    """Counts examples whose prediction is not a probability vector (NaN or inf weights give
    NaN everywhere, and argmax of NaNs says class 0: accuracy alone cannot see it)."""

    def __init__(self, key: metric_types.MetricKey, eval_config, buckets: int = 0):
        self._key, self._eval_config = key, eval_config

    def create_accumulator(self) -> float:
        return 0.0

    def add_input(self, acc: float, element) -> float:
        for _label, probabilities, _weight in _examples(element, self._key, self._eval_config):
            acc += not is_probability_vector(probabilities)
        return acc

    def merge_accumulators(self, accumulators: Iterable[float]) -> float:
        return float(sum(accumulators))

    def extract_output(self, acc: float) -> dict:
        return {self._key: acc}


def _computations(combiner_class):
    def create(name: str, buckets: int = 0, eval_config=None, model_name: str = "",
               output_name: str = "", example_weighted: bool = False):
        key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                     example_weighted=example_weighted)
        return [metric_types.MetricComputation(
            keys=[key], preprocessors=None, combiner=combiner_class(key, eval_config, buckets))]
    return metric_util.merge_per_key_computations(create)


class MacroOneVsRestAUC(metric_types.Metric):
    """Macro one-vs-rest ROC AUC, and each class's AUC (probability buckets of 1/`buckets`)."""

    def __init__(self, name: str = MACRO_AUC_METRIC, buckets: int = 1000):
        super().__init__(_computations(_AUCCombiner), name=name, buckets=buckets)


class TopLabelCalibration(metric_types.Metric):
    """Expected calibration error of the top label over `buckets` equal-width confidence
    buckets, its reliability diagram (a plot), and each class's mean probability / frequency."""

    def __init__(self, name: str = ECE_METRIC, buckets: int = 10):
        super().__init__(_computations(_CalibrationCombiner), name=name, buckets=buckets)


class InvalidOutputExamples(metric_types.Metric):
    """Eval examples (unweighted) whose outputs are not finite probabilities summing to 1."""

    def __init__(self, name: str = INVALID_OUTPUTS_METRIC):
        super().__init__(_computations(_InvalidOutputsCombiner), name=name)
