"""Figures: one bar panel per temperature, same token order in every panel, so the flattening
with temperature is visible at a glance. matplotlib with the headless Agg backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Panel:
    """One bar chart: a title, token labels and their probabilities (same order everywhere)."""

    title: str
    labels: Sequence[str]
    probabilities: Sequence[float]


def plot_panels(panels: Sequence[Panel], path: str | Path, *, suptitle: str = "") -> Path:
    """Draw ``panels`` side by side (wrapping after 3) into a PNG at ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("nothing to plot: give at least one panel")
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"plot file must end in .png, got {str(out)!r}")
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    width = max(4.0, 0.45 * max(len(p.labels) for p in panels) + 1.5)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        xs = range(len(panel.labels))
        bars = ax.bar(xs, panel.probabilities, color="#3b7dd8")
        best = max(range(len(panel.probabilities)), key=lambda i: panel.probabilities[i])
        bars[best].set_color("#e4572e")
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.set_xticks(list(xs), list(panel.labels), rotation=60, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
