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
from typing import Any, Optional

import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from tensorflow_model_analysis.proto import config_pb2

from components import features
from components.evaluator.eval_config import ACCURACY_METRIC, CONFUSION_MATRIX_PLOT

VERDICT_JSON = "verdict.json"
VERDICT_HTML = "verdict.html"
OVERALL = "overall"


def _slice_name(slice_key) -> str:
    keys = list(slice_key.single_slice_keys)
    if not keys:
        return OVERALL
    return ", ".join(f"{k.column}={k.bytes_value.decode() if k.HasField('bytes_value') else k.int64_value}"
                     for k in keys)


def _class_of(slice_name: str) -> Optional[str]:
    prefix = f"{features.LABEL_NAME_KEY}="
    return slice_name[len(prefix):] if slice_name.startswith(prefix) else None


def load_metrics(evaluation_uri: str) -> dict[str, dict[str, dict[str, float]]]:
    """slice -> model ('candidate'/'baseline'/'diff') -> metric -> value."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for metrics in tfma.load_metrics(evaluation_uri):
        by_model = out.setdefault(_slice_name(metrics.slice_key), {})
        for kv in metrics.metric_keys_and_values:
            if not kv.value.HasField("double_value"):
                continue
            model = "diff" if kv.key.is_diff else ("baseline" if kv.key.model_name == "baseline"
                                                   else "candidate")
            by_model.setdefault(model, {})[kv.key.name] = kv.value.double_value.value
    return out


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


def per_class_scores(matrix: list[list[float]], names: list[str]) -> dict[str, dict[str, float]]:
    scores = {}
    for i, name in enumerate(names):
        tp = matrix[i][i]
        support = sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return scores


def _eval_config(evaluation_uri: str) -> config_pb2.EvalConfig:
    with open(os.path.join(evaluation_uri, "eval_config.json")) as fh:
        raw = json.load(fh)["evalConfig"]
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
                            bound = t.value_threshold.lower_bound.value
                            checks.append({
                                "slice": slice_name, "metric": name, "kind": "value",
                                "rule": f"{name} >= {bound:g}", "value": value, "bound": bound,
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
        "per_class": per_class_scores(matrix, class_names),
        "class_names": class_names,
        "confusion_matrix": matrix,
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
            detail = f"{check['value']:.4f}" if check["value"] is not None else "missing"
        else:
            detail = (f"{check['value']:.4f} vs baseline {check['baseline']:.4f}"
                      if check["value"] is not None and check["baseline"] is not None else "missing")
        lines.append(f"  {mark}: {check['rule']}{where}: {detail}")
    return lines


def write_verdict(verdict: dict[str, Any], directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, VERDICT_JSON), "w") as fh:
        json.dump(verdict, fh, indent=2, sort_keys=True)
    with open(os.path.join(directory, VERDICT_HTML), "w") as fh:
        fh.write(render_html(verdict))


def render_html(verdict: dict[str, Any]) -> str:
    """One self-contained page: gate checks, overall metrics, per-class table, confusion matrix."""
    esc = html.escape
    status = "BLESSED" if verdict["blessed"] else "NOT BLESSED"
    colour = "#1a7f37" if verdict["blessed"] else "#cf222e"
    rows = "".join(
        f"<tr><td class={'ok' if c['passed'] else 'bad'}>{'pass' if c['passed'] else 'FAIL'}"
        f"{' (no baseline)' if c.get('skipped') else ''}</td><td>{esc(c['rule'])}</td>"
        f"<td>{esc(c['slice'])}</td><td>{_fmt(c.get('value'))}</td>"
        f"<td>{_fmt(c.get('baseline'))}</td></tr>" for c in verdict["checks"])
    overall = "".join(f"<tr><td>{esc(k)}</td><td>{_fmt(v)}</td><td>{_fmt((verdict['baseline_overall'] or {}).get(k))}</td></tr>"
                      for k, v in sorted(verdict["overall"].items()))
    per_class = "".join(
        f"<tr><td>{esc(n)}</td><td>{_fmt(s['precision'])}</td><td>{_fmt(s['recall'])}</td>"
        f"<td>{_fmt(s['f1'])}</td><td>{s['support']:.0f}</td></tr>"
        for n, s in verdict["per_class"].items())
    names, matrix = verdict["class_names"], verdict["confusion_matrix"]
    peak = max((v for row in matrix for v in row), default=0) or 1
    cells = "".join(
        "<tr><th>" + esc(names[i]) + "</th>" + "".join(
            f"<td style='background:rgba(9,105,218,{v / peak:.2f});color:{'#fff' if v / peak > .5 else '#000'}'>{v:.0f}</td>"
            for v in row) + "</tr>" for i, row in enumerate(matrix))
    header = "".join(f"<th>{esc(n)}</th>" for n in names)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tlpipe verdict: {status}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#1f2328}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #d0d7de;padding:4px 10px;text-align:right}}td:nth-child(2),th{{text-align:left}}
.ok{{color:#1a7f37;font-weight:600}}.bad{{color:#cf222e;font-weight:600}}h1{{color:{colour}}}</style></head><body>
<h1>{status}</h1>
<p>{'First blessed model: there was no baseline, so change thresholds were not applied.' if verdict['first_run'] else 'Compared with the last blessed model.'}</p>
<h2>Gate</h2><table><tr><th>result</th><th>rule</th><th>slice</th><th>candidate</th><th>baseline</th></tr>{rows}</table>
<h2>Overall metrics</h2><table><tr><th>metric</th><th>candidate</th><th>baseline</th></tr>{overall}</table>
<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{per_class}</table>
<h2>Confusion matrix</h2><p>rows: true class; columns: predicted class (argmax)</p>
<table><tr><th></th>{header}</tr>{cells}</table></body></html>"""


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}"
