"""The evaluator's own TFMA metrics (macro one-vs-rest AUC, calibration) and the verdict that
shows them: checked against scikit-learn / numpy, and through a real TFMA run on raw data."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from tlpipe.components.evaluator import metrics as custom_metrics

CLASSES = ["a", "b", "c"]


def _data(n=90, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), labels] += 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probabilities


def _combine(metric, labels, probabilities):
    """Runs a metric's combiner as Beam would: two shards, merged."""
    from tensorflow_model_analysis.metrics import metric_types

    [computation] = metric.computations()
    combiner = computation.combiner
    shards = []
    for part in (slice(0, len(labels) // 2), slice(len(labels) // 2, None)):
        acc = combiner.create_accumulator()
        for label, p in zip(labels[part], probabilities[part]):
            acc = combiner.add_input(acc, metric_types.StandardMetricInputs(
                labels=np.array([label]), predictions=p, example_weights=np.array([1.0])))
        shards.append(acc)
    return {(k.name, k.sub_key.class_id if k.sub_key else None): v
            for k, v in combiner.extract_output(combiner.merge_accumulators(shards)).items()}


def test_macro_auc_matches_scikit_learn():
    labels, probabilities = _data()
    out = _combine(custom_metrics.MacroOneVsRestAUC(), labels, probabilities)
    expected = roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    assert out[(custom_metrics.MACRO_AUC_METRIC, None)] == pytest.approx(expected, abs=2e-3)
    for c in range(3):
        assert out[(custom_metrics.CLASS_AUC_METRIC, c)] == pytest.approx(
            roc_auc_score(labels == c, probabilities[:, c]), abs=2e-3)


def test_macro_auc_is_left_out_where_undefined():
    """On a true-label slice every example is positive for one class: no AUC at all."""
    labels, probabilities = _data()
    one_class = labels == 1
    assert _combine(custom_metrics.MacroOneVsRestAUC(), labels[one_class],
                    probabilities[one_class]) == {}


def test_calibration_matches_numpy():
    labels, probabilities = _data()
    out = _combine(custom_metrics.TopLabelCalibration(), labels, probabilities)
    top, confidence = probabilities.argmax(1), probabilities.max(1)
    bucket = np.minimum((confidence * 10).astype(int), 9)
    ece = sum(abs((top[bucket == b] == labels[bucket == b]).sum() - confidence[bucket == b].sum())
              for b in range(10)) / len(labels)
    assert out[(custom_metrics.ECE_METRIC, None)] == pytest.approx(ece)
    for c in range(3):
        assert out[(custom_metrics.CLASS_CALIBRATION_METRIC, c)] == pytest.approx(
            probabilities[:, c].mean() / (labels == c).mean())
    [plot] = [v for (name, _), v in out.items() if name == custom_metrics.CALIBRATION_PLOT]
    assert sum(b.num_weighted_examples.value for b in plot.buckets) == len(labels)


def test_tfma_computes_every_listed_metric_and_the_verdict_shows_them(tmp_path):
    """The pipeline's EvalConfig through real TFMA (raw predictions, no model), then the
    verdict read back from TFMA's output."""
    import pandas as pd
    import tensorflow_model_analysis as tfma
    from tlpipe.components.config import EvaluatorConfig
    from tlpipe.components.evaluator import verdict as verdict_lib
    from tlpipe.components.evaluator.eval_config import make_eval_config

    labels, probabilities = _data()
    eval_config = make_eval_config(EvaluatorConfig())
    for metric in eval_config.metrics_specs[0].metrics:  # no baseline here: value gates only
        for per_slice in metric.per_slice_thresholds:
            per_slice.threshold.ClearField("change_threshold")
    frame = pd.DataFrame({"label": labels, "label_name": [CLASSES[i] for i in labels],
                          "probabilities": list(probabilities)})
    tfma.analyze_raw_data(frame, eval_config, output_path=str(tmp_path))

    verdict = verdict_lib.build_verdict(str(tmp_path), True, CLASSES)
    overall = verdict["overall"]
    assert set(overall) >= {"accuracy", "top_k_accuracy", "log_loss", "example_count",
                            custom_metrics.MACRO_AUC_METRIC, custom_metrics.ECE_METRIC}
    assert overall["example_count"] == len(labels)
    assert overall["accuracy"] == pytest.approx(np.mean(probabilities.argmax(1) == labels))
    assert overall[custom_metrics.MACRO_AUC_METRIC] == pytest.approx(
        roc_auc_score(labels, probabilities, multi_class="ovr"), abs=2e-3)
    for i, name in enumerate(CLASSES):
        scores = verdict["per_class"][name]
        assert scores["support"] == np.sum(labels == i)
        assert scores["recall"] == pytest.approx(np.mean(probabilities[labels == i].argmax(1) == i))
        assert scores["auc"] == pytest.approx(roc_auc_score(labels == i, probabilities[:, i]), abs=2e-3)
        assert scores["calibration"] > 0
    assert sum(b["examples"] for b in verdict["calibration"]) == len(labels)
    page = verdict_lib.render_html(verdict)
    for text in ("macro_auc", "expected_calibration_error", "<h2>Calibration</h2>", "<svg",
                 "<th>AUC</th>", "<th>calibration</th>"):
        assert text in page
