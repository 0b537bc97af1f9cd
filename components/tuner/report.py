"""The trials report: a table for the run summary and a PNG of score against input size and
learning rate, from the rows the tuner records per trial."""
from __future__ import annotations

import io
from typing import Any

from tlpipe.components.features import HP_INPUT_SIZE, HP_LEARNING_RATE


def trial_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Fixed-width table: trial, input size, learning rates, score, seconds, status."""
    extra = sorted({k for r in rows for k in r["hyperparameters"]}
                   - {HP_INPUT_SIZE, HP_LEARNING_RATE})
    header = ["trial", "size", "lr", *extra, "val_acc", "seconds", "rss MB", "status"]
    table = [header]
    for row in rows:
        hp = row["hyperparameters"]
        table.append([str(row["trial"]), str(hp.get(HP_INPUT_SIZE, "")),
                      _num(hp.get(HP_LEARNING_RATE)), *[_num(hp.get(k)) for k in extra],
                      _num(row["score"], 4), f"{row['seconds']:.0f}", f"{row['rss_mb']:.0f}",
                      row["status"] + (f": {row['error']}" if row.get("error") else "")])
    widths = [max(len(r[i]) for r in table[:]) for i in range(len(header) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in table]


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def plot_trials(rows: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = sorted({r["hyperparameters"].get(HP_INPUT_SIZE) for r in rows} - {None})
    for size in sizes:
        done = [r for r in rows if r["hyperparameters"].get(HP_INPUT_SIZE) == size
                and r["score"] is not None]
        ax.scatter([r["hyperparameters"][HP_LEARNING_RATE] for r in done],
                   [r["score"] for r in done], label=f"{size} px", s=50)
        for r in done:
            ax.annotate(str(r["trial"]), (r["hyperparameters"][HP_LEARNING_RATE], r["score"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    failed = [r for r in rows if r["score"] is None and HP_LEARNING_RATE in r["hyperparameters"]]
    if failed:
        ax.scatter([r["hyperparameters"][HP_LEARNING_RATE] for r in failed], [0] * len(failed),
                   marker="x", color="red", label="failed")
    ax.set_xscale("log")
    ax.set_xlabel("phase-1 learning rate")
    ax.set_ylabel("val accuracy")
    ax.set_title("tuner trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
