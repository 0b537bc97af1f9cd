"""The gate's verdict, explained: every threshold with its values, pass or fail, and the
per-class picture, read from TFMA's own output (ModelEvaluation artifact).

TFMA's validation result lists only failures; the checks here enumerate every configured
threshold (from the eval_config.json TFMA wrote) so a passing gate also says what passed, and
TFMA's failure list stays the authority on pass/fail.
"""
from __future__ import annotations

import html
import json
import os
from typing import Any

import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from tensorflow_model_analysis.metrics.example_count import EXAMPLE_COUNT_NAME
from tensorflow_model_analysis.proto import config_pb2
from tlpipe.components import features, storage
from tlpipe.components.evaluator.eval_config import (
    ACCURACY_METRIC,
    CONFUSION_MATRIX_PLOT,
    LOG_LOSS_METRIC,
    TOP_K_METRIC,
)
from tlpipe.components.evaluator.metrics import (
    CALIBRATION_PLOT,
    CLASS_AUC_METRIC,
    CLASS_CALIBRATION_METRIC,
    ECE_METRIC,
    INVALID_OUTPUTS_METRIC,
    MACRO_AUC_METRIC,
)
from tlpipe.components.features import VERDICT_HTML, VERDICT_JSON

# What each overall metric means, for the verdict page.
METRIC_MEANINGS = {
    EXAMPLE_COUNT_NAME: "eval examples",
    ACCURACY_METRIC: "share of examples whose top class is right",
    TOP_K_METRIC: "share whose true class is among the top k",
    LOG_LOSS_METRIC: "cross-entropy of the true class's probability (lower is better)",
    MACRO_AUC_METRIC: "mean over classes of one-vs-rest ROC AUC",
    ECE_METRIC: "expected calibration error of the top label (lower is better)",
    INVALID_OUTPUTS_METRIC: "eval examples whose outputs are not finite probabilities summing to 1",
}
COUNT_METRICS = (EXAMPLE_COUNT_NAME, INVALID_OUTPUTS_METRIC)
OVERALL = "overall"


def _slice_name(slice_key) -> str:
    keys = list(slice_key.single_slice_keys)
    if not keys:
        return OVERALL
    return ", ".join(f"{k.column}={k.bytes_value.decode() if k.HasField('bytes_value') else k.int64_value}"
                     for k in keys)


def _class_of(slice_name: str) -> str | None:
    prefix = f"{features.LABEL_NAME_KEY}="
    return slice_name[len(prefix):] if slice_name.startswith(prefix) else None


def _metric_values(evaluation_uri: str):
    """(slice, model, metric name, class id or None, value) of every scalar TFMA wrote."""
    for metrics in tfma.load_metrics(evaluation_uri):
        slice_name = _slice_name(metrics.slice_key)
        for kv in metrics.metric_keys_and_values:
            if not kv.value.HasField("double_value"):
                continue
            model = "diff" if kv.key.is_diff else ("baseline" if kv.key.model_name == "baseline"
                                                   else "candidate")
            class_id = (kv.key.sub_key.class_id.value if kv.key.sub_key.HasField("class_id")
                        else None)
            yield slice_name, model, kv.key.name, class_id, kv.value.double_value.value


def load_metrics(evaluation_uri: str) -> dict[str, dict[str, dict[str, float]]]:
    """slice -> model ('candidate'/'baseline'/'diff') -> metric -> value (not per class)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for slice_name, model, name, class_id, value in _metric_values(evaluation_uri):
        by_model = out.setdefault(slice_name, {})
        if class_id is None:
            by_model.setdefault(model, {})[name] = value
    return out


def class_metrics(evaluation_uri: str) -> dict[int, dict[str, float]]:
    """class id -> metric -> value of the candidate's per-class metrics, overall slice
    (one-vs-rest AUC and calibration)."""
    out: dict[int, dict[str, float]] = {}
    for slice_name, model, name, class_id, value in _metric_values(evaluation_uri):
        if slice_name == OVERALL and model == "candidate" and class_id is not None:
            out.setdefault(class_id, {})[name] = value
    return out


def calibration_buckets(evaluation_uri: str) -> list[dict[str, float]]:
    """The candidate's reliability diagram on the overall slice: per confidence bucket, its
    examples, mean top-label confidence and accuracy (empty buckets left out)."""
    for plots in tfma.load_plots(evaluation_uri):
        if _slice_name(plots.slice_key) != OVERALL:
            continue
        for kv in plots.plot_keys_and_values:
            if kv.key.name != CALIBRATION_PLOT or kv.key.model_name == "baseline":
                continue
            return [{"lower": b.lower_threshold_inclusive, "upper": b.upper_threshold_exclusive,
                     "examples": b.num_weighted_examples.value,
                     "confidence": b.total_weighted_refined_prediction.value / b.num_weighted_examples.value,
                     "accuracy": b.total_weighted_label.value / b.num_weighted_examples.value}
                    for b in kv.value.calibration_histogram_buckets.buckets
                    if b.num_weighted_examples.value]
    return []


def confusion_matrix(evaluation_uri: str, num_classes: int) -> list[list[float]]:
    """matrix[actual][predicted] (argmax) of the candidate on the overall slice."""
    matrix = [[0.0] * num_classes for _ in range(num_classes)]
    for plots in tfma.load_plots(evaluation_uri):
        if _slice_name(plots.slice_key) != OVERALL:
            continue
        for kv in plots.plot_keys_and_values:
            if kv.key.name != CONFUSION_MATRIX_PLOT or kv.key.model_name == "baseline":
                continue
            for m in kv.value.multi_class_confusion_matrix_at_thresholds.matrices[:1]:
                for e in m.entries:
                    if 0 <= e.actual_class_id < num_classes and 0 <= e.predicted_class_id < num_classes:
                        matrix[e.actual_class_id][e.predicted_class_id] += e.num_weighted_examples
    return matrix


def per_class_scores(matrix: list[list[float]], names: list[str],
                     by_class: dict[int, dict[str, float]] | None = None,
                     ) -> dict[str, dict[str, float | None]]:
    """Precision, recall, F1 and support from the argmax confusion matrix, plus each class's
    one-vs-rest AUC and calibration (mean probability / frequency) when TFMA computed them."""
    scores = {}
    for i, name in enumerate(names):
        tp = matrix[i][i]
        support = sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        extra = (by_class or {}).get(i, {})
        scores[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support,
                        "auc": extra.get(CLASS_AUC_METRIC),
                        "calibration": extra.get(CLASS_CALIBRATION_METRIC)}
    return scores


def _eval_config(evaluation_uri: str) -> config_pb2.EvalConfig:
    raw = storage.read_json(os.path.join(evaluation_uri, "eval_config.json"))["evalConfig"]
    return json_format.ParseDict(raw, config_pb2.EvalConfig(), ignore_unknown_fields=True)


def _slices_for(spec: config_pb2.SlicingSpec, slices: list[str]) -> list[str]:
    if not spec.feature_keys and not spec.feature_values:
        return [OVERALL]
    keys = list(spec.feature_keys)
    return [s for s in slices if s != OVERALL and [p.split("=")[0] for p in s.split(", ")] == keys]


def _failed(validation) -> set[tuple[str, str, str]]:
    """(slice, metric, 'value'|'change') of every failure TFMA recorded."""
    failed = set()
    for per_slice in validation.metric_validations_per_slice:
        name = _slice_name(per_slice.slice_key)
        for failure in per_slice.failures:
            kind = "change" if failure.metric_threshold.HasField("change_threshold") else "value"
            failed.add((name, failure.metric_key.name, kind))
    return failed


def _value_rule(name: str, threshold) -> str:
    bounds = [f"{name} >= {threshold.lower_bound.value:g}"] if threshold.HasField("lower_bound") else []
    if threshold.HasField("upper_bound"):
        bounds.append(f"{name} <= {threshold.upper_bound.value:g}")
    return " and ".join(bounds)


def build_verdict(evaluation_uri: str, blessed: bool, class_names: list[str]) -> dict[str, Any]:
    metrics = load_metrics(evaluation_uri)
    has_baseline = any("baseline" in m for m in metrics.values())
    validation = tfma.load_validation_result(evaluation_uri)
    failed = _failed(validation)
    checks = []
    for spec in _eval_config(evaluation_uri).metrics_specs:
        for metric in spec.metrics:
            name = json.loads(metric.config or "{}").get("name", metric.class_name)
            for per_slice in metric.per_slice_thresholds:
                for slicing in per_slice.slicing_specs:
                    for slice_name in _slices_for(slicing, sorted(metrics)):
                        values = metrics.get(slice_name, {})
                        value = values.get("candidate", {}).get(name)
                        t = per_slice.threshold
                        if t.HasField("value_threshold"):
                            checks.append({
                                "slice": slice_name, "metric": name, "kind": "value",
                                "rule": _value_rule(name, t.value_threshold), "value": value,
                                "passed": (slice_name, name, "value") not in failed})
                        if t.HasField("change_threshold"):
                            allowed = -t.change_threshold.absolute.value
                            baseline = values.get("baseline", {}).get(name)
                            checks.append({
                                "slice": slice_name, "metric": name, "kind": "change",
                                "rule": f"{name} not below the last blessed model by more than {allowed:g}",
                                "value": value, "baseline": baseline,
                                "change": values.get("diff", {}).get(name),
                                "skipped": not has_baseline,
                                "passed": (slice_name, name, "change") not in failed})
    matrix = confusion_matrix(evaluation_uri, len(class_names))
    overall = metrics.get(OVERALL, {})
    return {
        "blessed": blessed,
        "validation_ok": bool(validation.validation_ok),
        "first_run": not has_baseline,
        "checks": checks,
        "overall": overall.get("candidate", {}),
        "baseline_overall": overall.get("baseline"),
        "per_class": per_class_scores(matrix, class_names, class_metrics(evaluation_uri)),
        "class_names": class_names,
        "confusion_matrix": matrix,
        "calibration": calibration_buckets(evaluation_uri),
    }


def verdict_lines(verdict: dict[str, Any]) -> list[str]:
    """The verdict as the run summary prints it."""
    lines = []
    if verdict["first_run"]:
        lines.append("  first blessed model: no baseline, change thresholds not applied")
    for check in verdict["checks"]:
        if check.get("skipped"):
            continue
        mark = "pass" if check["passed"] else "FAIL"
        where = "" if check["slice"] == OVERALL else f" [{check['slice']}]"
        if check["kind"] == "value":
            detail = _fmt(check["value"], check["metric"]) if check["value"] is not None else "missing"
        else:
            detail = (f"{check['value']:.4f} vs baseline {check['baseline']:.4f}"
                      if check["value"] is not None and check["baseline"] is not None else "missing")
        if not check["passed"] and check["metric"] in METRIC_MEANINGS:
            detail += f" ({METRIC_MEANINGS[check['metric']]})"
        lines.append(f"  {mark}: {check['rule']}{where}: {detail}")
    return lines


def write_verdict(verdict: dict[str, Any], directory: str) -> None:
    storage.write_json(os.path.join(directory, VERDICT_JSON), verdict)
    storage.write_text(os.path.join(directory, VERDICT_HTML), render_html(verdict))


def render_html(verdict: dict[str, Any]) -> str:
    """One self-contained page: gate checks, overall metrics, per-class table, confusion
    matrix, reliability diagram."""
    esc = html.escape
    status = "BLESSED" if verdict["blessed"] else "NOT BLESSED"
    colour = "#1a7f37" if verdict["blessed"] else "#cf222e"
    rows = "".join(
        f"<tr><td class={'ok' if c['passed'] else 'bad'}>{'pass' if c['passed'] else 'FAIL'}"
        f"{' (no baseline)' if c.get('skipped') else ''}</td><td>{esc(c['rule'])}</td>"
        f"<td>{esc(c['slice'])}</td><td>{_fmt(c.get('value'))}</td>"
        f"<td>{_fmt(c.get('baseline'))}</td></tr>" for c in verdict["checks"])
    overall = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(METRIC_MEANINGS.get(k, ''))}</td><td>{_fmt(v, k)}</td>"
        f"<td>{_fmt((verdict['baseline_overall'] or {}).get(k), k)}</td></tr>"
        for k, v in sorted(verdict["overall"].items()))
    per_class = "".join(
        f"<tr><td>{esc(n)}</td><td>{_fmt(s['precision'])}</td><td>{_fmt(s['recall'])}</td>"
        f"<td>{_fmt(s['f1'])}</td><td>{_fmt(s.get('auc'))}</td><td>{_fmt(s.get('calibration'))}</td>"
        f"<td>{s['support']:.0f}</td></tr>"
        for n, s in verdict["per_class"].items())
    buckets = verdict.get("calibration") or []
    reliability = "".join(
        f"<tr><td>{b['lower']:.1f}-{b['upper']:.1f}</td><td>{b['examples']:.0f}</td>"
        f"<td>{_fmt(b['confidence'])}</td><td>{_fmt(b['accuracy'])}</td></tr>" for b in buckets)
    names, matrix = verdict["class_names"], verdict["confusion_matrix"]
    peak = max((v for row in matrix for v in row), default=0) or 1
    cells = "".join(
        "<tr><th>" + esc(names[i]) + "</th>" + "".join(
            f"<td style='background:rgba(9,105,218,{v / peak:.2f});"
            f"color:{'#fff' if v / peak > .5 else '#000'}'>{v:.0f}</td>"
            for v in row) + "</tr>" for i, row in enumerate(matrix))
    header = "".join(f"<th>{esc(n)}</th>" for n in names)
    intro = ("First blessed model: there was no baseline, so change thresholds were not applied."
             if verdict['first_run'] else "Compared with the last blessed model.")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tlpipe verdict: {status}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#1f2328}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #d0d7de;padding:4px 10px;text-align:right}}td:first-child,td:nth-child(2),th{{text-align:left}}
.ok{{color:#1a7f37;font-weight:600}}.bad{{color:#cf222e;font-weight:600}}h1{{color:{colour}}}</style></head><body>
<h1>{status}</h1>
<p>{intro}</p>
<h2>Gate</h2><table><tr><th>result</th><th>rule</th><th>slice</th><th>candidate</th><th>baseline</th></tr>{rows}</table>
<h2>Overall metrics</h2>
<table><tr><th>metric</th><th>meaning</th><th>candidate</th><th>baseline</th></tr>{overall}</table>
<h2>Per class</h2><p>AUC: this class against the rest, on its predicted probability. Calibration:
mean predicted probability of the class / its share of the examples (1 is calibrated, above 1
over-predicts).</p>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>AUC</th><th>calibration</th><th>support</th></tr>{per_class}</table>
<h2>Confusion matrix</h2><p>rows: true class; columns: predicted class (argmax)</p>
<table><tr><th></th>{header}</tr>{cells}</table>
<h2>Calibration</h2><p>Top-label reliability: per confidence bucket, how often the predicted class
was right. A calibrated model sits on the diagonal; the expected calibration error is the
examples-weighted mean gap.</p>
{_reliability_svg(buckets)}
<table><tr><th>confidence</th><th>examples</th><th>mean confidence</th><th>accuracy</th></tr>{reliability}</table>
</body></html>"""


def _reliability_svg(buckets: list[dict[str, float]], size: int = 240) -> str:
    """Inline SVG reliability diagram: accuracy bars per confidence bucket, and the diagonal."""
    pad = 30
    bars = "".join(
        f"<rect x='{pad + b['lower'] * size:.1f}' y='{pad + (1 - b['accuracy']) * size:.1f}' "
        f"width='{(b['upper'] - b['lower']) * size - 1:.1f}' height='{b['accuracy'] * size:.1f}' "
        f"fill='#0969da' fill-opacity='0.7'><title>{b['examples']:.0f} examples, confidence "
        f"{b['confidence']:.3f}, accuracy {b['accuracy']:.3f}</title></rect>" for b in buckets)
    end = pad + size
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{end + 10}' height='{end + pad}'>"
            f"<rect x='{pad}' y='{pad}' width='{size}' height='{size}' fill='none' stroke='#d0d7de'/>"
            f"{bars}<line x1='{pad}' y1='{end}' x2='{end}' y2='{pad}' stroke='#cf222e' "
            f"stroke-dasharray='4 3'/><text x='{pad}' y='{end + 18}' font-size='12'>confidence 0"
            f"</text><text x='{end - 12}' y='{end + 18}' font-size='12'>1</text>"
            f"<text x='2' y='{pad + 4}' font-size='12'>1</text>"
            f"<text x='{pad}' y='{pad - 8}' font-size='12'>accuracy</text></svg>")


def _fmt(value, metric: str = "") -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if metric in COUNT_METRICS else f"{value:.4f}"
