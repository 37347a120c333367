"""Plots for the report: matplotlib's Agg canvas directly (no pyplot state, no display),
imported only when a plot is drawn, so importing the report stays cheap."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_loss(path: Path, curve: Sequence[Sequence[float]], task: str) -> None:
    steps = [float(p[0]) for p in curve]
    loss = [float(p[1]) for p in curve]
    fig = _figure(9, 3.6)
    ax = fig.add_subplot()
    ax.plot(steps, loss, color="#1f6feb", linewidth=1.6, marker="o" if len(steps) <= 30 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over the logging window)")
    ax.set_title(f"{task}: training loss")
    ax.grid(alpha=0.3)
    if loss and min(loss) > 0 and max(loss) / min(loss) > 20:
        ax.set_yscale("log")
    fig.savefig(path)


def plot_ranks(path: Path, plan: dict[str, int], scores: dict[str, float] | None) -> None:
    layers = list(plan)
    y = np.arange(len(layers))
    height = max(2.5, 0.22 * len(layers) + 1.2)
    fig = _figure(11 if scores else 8, height)
    axes = fig.subplots(1, 2, sharey=True) if scores else [fig.add_subplot()]
    axes[0].barh(y, [plan[p] for p in layers], color="#1f6feb")
    axes[0].set_xlabel("LoRA rank")
    axes[0].set_yticks(y, layers, fontsize=8, family="monospace")
    axes[0].invert_yaxis()
    axes[0].set_title("rank per layer")
    if scores:
        axes[1].barh(y, [100 * scores.get(p, 0.0) for p in layers], color="#d29922")
        axes[1].set_xlabel("contribution (% of total)")
        axes[1].set_title("measured contribution")
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    fig.savefig(path)
