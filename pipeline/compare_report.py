"""The comparison as text (a table, a head to head), and as one self-contained HTML page (charts
inline as base64 PNG) with the same charts as PNG files beside it, for people who paste them
into chat. The rows and statistics come from pipeline/compare.py."""
from __future__ import annotations

import base64
import html
import io
import os
import time
from collections.abc import Callable
from typing import Any

from tlpipe.pipeline.compare import HEADLINE_METRICS, VersionRow

REPORT_FILE = "compare.html"
CHART_METRICS = (*HEADLINE_METRICS, "expected_calibration_error")
MAX_MATRICES = 6  # confusion matrices side by side: the newest this many


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) if isinstance(value, float) else str(value)


def table(rows: list[VersionRow]) -> tuple[list[str], list[list[str]]]:
    """The comparison table's header and cells, shared by the text and HTML outputs."""
    classes = sorted({name for row in rows for name in row.class_names})
    header = ["version", "created", "span", "base", "size", "lr1", "lr2", "epochs", "train s",
              *HEADLINE_METRICS, *(f"recall {c}" for c in classes), "blessed", "pushed", "labels"]
    body = []
    for r in rows:
        epochs = f"{r.phase1_epochs}+{r.phase2_epochs}" if r.phase1_epochs is not None else "-"
        blessed = "forced" if r.forced and not r.blessed else _fmt(r.blessed)
        body.append([r.key, r.created or "-", _fmt(r.data_span), r.base or "-", _fmt(r.input_size),
                     _fmt(r.phase1_learning_rate, ".2e"), _fmt(r.phase2_learning_rate, ".2e"),
                     epochs, _fmt(r.training_seconds, ".0f"),
                     *(_fmt(r.metrics.get(m)) for m in HEADLINE_METRICS),
                     *(_fmt(r.per_class.get(c, {}).get("recall")) for c in classes),
                     blessed, _fmt(r.pushed), ",".join(r.labels) or "-"])
    return header, body


def table_lines(rows: list[VersionRow]) -> list[str]:
    header, body = table(rows)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body)]
    return ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip()
            for line in [header, *body]]


def head_to_head_lines(h2h: dict[str, Any]) -> list[str]:
    a, b = h2h["a"], h2h["b"]
    lines = [f"head to head: {b} vs {a} (delta = {b} - {a})",
             f"  {'metric':28} {a:>8} {b:>8} {'delta':>8}"]
    lines += [f"  {k:28} {v['a']:8.4f} {v['b']:8.4f} {v['delta']:+8.4f}"
              for k, v in h2h["metrics"].items()]
    for name, d in h2h["per_class"].items():
        lines.append(f"  class {name}: " + ", ".join(
            f"{k} {v:+.4f}" for k, v in d.items() if k != "support"))
    test = h2h["paired_test"]
    if "skipped" in test:
        lines.append(f"  paired test skipped: {test['skipped']}")
    else:
        verdict = "significant" if test["significant"] else "not significant"
        lines.append(
            f"  McNemar exact test on the {test['examples']} {test['split']} examples of {b}'s run: "
            f"only {a} right {test['only_a_right']}, only {b} right {test['only_b_right']}, "
            f"p = {test['p_value']:.4g}: {verdict} at {test['alpha']}")
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    from matplotlib import pyplot

    return pyplot


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    _pyplot().close(fig)
    return buffer.getvalue()


def metrics_chart(rows: list[VersionRow]) -> bytes:
    """Each headline metric across versions, oldest first."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CHART_METRICS), figsize=(4 * len(CHART_METRICS), 3.2))
    keys = [r.key for r in rows]
    for ax, metric in zip(axes, CHART_METRICS):
        values = [r.metrics.get(metric, float("nan")) for r in rows]
        ax.plot(keys, values, "-o")
        for x, y in zip(keys, values):
            ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=8)
        ax.set_title(metric)
        ax.set_xlabel("version")
        ax.grid(alpha=0.3)
    return _png(fig)


def per_class_chart(rows: list[VersionRow]) -> bytes:
    """Recall per class, one bar per version."""
    import numpy as np

    plt = _pyplot()
    classes = sorted({c for r in rows for c in r.class_names})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(classes) * max(1, len(rows)) / 2), 3.5))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        recalls = [row.per_class.get(c, {}).get("recall") or 0.0 for c in classes]
        ax.bar(np.arange(len(classes)) + i * width, recalls, width, label=f"version {row.key}")
    ax.set_xticks(np.arange(len(classes)) + width * (len(rows) - 1) / 2, classes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def confusion_chart(rows: list[VersionRow]) -> bytes:
    """Confusion matrices side by side (rows: true class, columns: predicted)."""
    plt = _pyplot()
    shown = [r for r in rows if r.confusion_matrix][-MAX_MATRICES:]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(3.6 * max(1, len(shown)), 3.6),
                             squeeze=False)
    for ax, row in zip(axes[0], shown):
        matrix = row.confusion_matrix
        ax.imshow(matrix, cmap="Blues")
        peak = max(max(r) for r in matrix) or 1
        for i, line in enumerate(matrix):
            for j, value in enumerate(line):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if value > peak / 2 else "black")
        ticks = range(len(row.class_names))
        ax.set_xticks(ticks, row.class_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, row.class_names, fontsize=8)
        ax.set_title(f"version {row.key}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    return _png(fig)


def training_chart(rows: list[VersionRow]) -> bytes:
    """Validation loss and accuracy per epoch of each version (training_summary.json)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for row in rows:
            values = row.history.get(f"val_{metric}") or row.history.get(metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, "-o", markersize=3,
                        label=f"version {row.key}")
        ax.set_title(f"validation {metric}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _png(fig)


CHARTS: dict[str, tuple[str, Callable[[list[VersionRow]], bytes]]] = {
    "metrics.png": ("Metrics over versions", metrics_chart),
    "per_class.png": ("Recall per class", per_class_chart),
    "confusion.png": ("Confusion matrices", confusion_chart),
    "training.png": ("Training curves", training_chart),
}


def _head_to_head_html(h2h: dict[str, Any]) -> str:
    esc = html.escape
    a, b = esc(h2h["a"]), esc(h2h["b"])
    metrics = "".join(f"<tr><td>{esc(k)}</td><td>{v['a']:.4f}</td><td>{v['b']:.4f}</td>"
                      f"<td>{v['delta']:+.4f}</td></tr>" for k, v in h2h["metrics"].items())
    keys = sorted({k for d in h2h["per_class"].values() for k in d if k != "support"})
    per_class = "".join("<tr><td>" + esc(name) + "</td>" + "".join(
        f"<td>{d[k]:+.4f}</td>" if k in d else "<td></td>" for k in keys) + "</tr>"
        for name, d in h2h["per_class"].items())
    test = esc(head_to_head_lines(h2h)[-1].strip())
    return (f"<h2>Head to head: {b} vs {a}</h2><p>delta = {b} - {a}</p>"
            f"<table><tr><th>metric</th><th>{a}</th><th>{b}</th><th>delta</th></tr>{metrics}</table>"
            f"<table><tr><th>class</th>{''.join(f'<th>{esc(k)} delta</th>' for k in keys)}</tr>"
            f"{per_class}</table><p class=test>{test}</p>")


def render_html(rows: list[VersionRow], h2h: dict[str, Any] | None,
                charts: dict[str, bytes]) -> str:
    esc = html.escape
    header, body = table(rows)
    cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in line) + "</tr>" for line in body)
    images = "".join(
        f"<h2>{esc(CHARTS[name][0])}</h2><img alt='{esc(name)}' "
        f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        for name, png in charts.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tlpipe compare</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#1f2328}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #d0d7de;padding:4px 8px;text-align:right;white-space:nowrap}}
.wide{{overflow-x:auto}}th{{background:#f6f8fa}}
td:first-child{{font-weight:600}}img{{max-width:100%;display:block;margin:0.5em 0}}.test{{font-weight:600}}</style>
</head><body><h1>Model versions compared</h1>
<p>{len(rows)} version(s), generated {esc(time.strftime('%Y-%m-%d %H:%M:%S'))}. m&lt;id&gt;: trained,
not pushed (ML Metadata model id). Metrics from TFMA on each version's test split (the gate's).</p>
<div class=wide><table><tr>{''.join(f'<th>{esc(h)}</th>' for h in header)}</tr>{cells}</table></div>
{_head_to_head_html(h2h) if h2h else ''}{images}</body></html>"""


def write_report(rows: list[VersionRow], h2h: dict[str, Any] | None, out_dir: str) -> str:
    """Writes the PNG charts and the HTML page into out_dir; returns the page's path."""
    os.makedirs(out_dir, exist_ok=True)
    charts = {name: draw(rows) for name, (_, draw) in CHARTS.items()}
    for name, png in charts.items():
        with open(os.path.join(out_dir, name), "wb") as fh:
            fh.write(png)
    path = os.path.join(out_dir, REPORT_FILE)
    with open(path, "w") as fh:
        fh.write(render_html(rows, h2h, charts))
    return path
