"""The benchmarks' figures: a heat map of success rates, and success against compute with the Pareto front.

Figures are drawn off-screen (matplotlib's Agg canvas, no display needed) and written as PNG.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _figure(width: float, height: float, columns: int = 1, rows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def heatmap(grid: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str], title: str,
            colorbar_label: str, path: str) -> None:
    """`grid` (rows x columns of percentages, NaN for no value) as a 0-100 colour map, each cell written in."""
    grid = np.asarray(grid, dtype=float)
    figure, axes = _figure(1.2 * len(column_labels) + 3, 0.4 * len(row_labels) + 1.5)
    ax = axes[0, 0]
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(column_labels)), column_labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    for i, j in zip(*np.nonzero(np.isfinite(grid))):
        ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=6,
                color="white" if grid[i, j] < 50 else "black")
    figure.colorbar(image, ax=ax, label=colorbar_label)
    ax.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def pareto(panels: Mapping[str, Sequence[dict]], path: str, xlabel: str, ylabel: str) -> None:
    """One panel per title in `panels`, each a scatter of its points (dicts with `x`, `y`, `label`, `marker`,
    `front`): x on a log scale, the points with `front` joined by a line and named."""
    count = max(len(panels), 1)
    columns = min(count, 2)
    rows = -(-count // columns)
    figure, axes = _figure(6.5 * columns, 4.8 * rows, columns, rows)
    for ax, (title, points) in zip(axes.flat, panels.items()):
        for marker in sorted({p["marker"] for p in points}):
            chosen = [p for p in points if p["marker"] == marker]
            ax.scatter([p["x"] for p in chosen], [p["y"] for p in chosen], marker=marker, s=22, alpha=0.7,
                       label={"o": "paper settings", "s": "compute-matched"}.get(marker, marker))
        front = sorted((p for p in points if p["front"]), key=lambda p: p["x"])
        ax.plot([p["x"] for p in front], [p["y"] for p in front], color="black", linewidth=1, label="Pareto front")
        for p in front:
            ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points", xytext=(4, 3), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
