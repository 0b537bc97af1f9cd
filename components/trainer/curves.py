"""Training curves as a PNG: loss and accuracy per epoch, both phases, the boundary marked."""
from __future__ import annotations

import io


def plot_training_curves(history: dict[str, list[float]], phase1_epochs: int,
                         title: str = "") -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            values = history.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=key, markersize=3)
        if 0 < phase1_epochs < len(history.get(metric, [])):
            ax.axvline(phase1_epochs + 0.5, color="grey", linestyle=":")
            ax.text(phase1_epochs + 0.6, ax.get_ylim()[1], "fine-tune", va="top", fontsize=8,
                    color="grey")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
