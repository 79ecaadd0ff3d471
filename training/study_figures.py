"""The study's figures (PNG bytes, drawn headless like training/curves.py)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from training.study_runs import NormSpread, Run

_COLORS = {"batch": "tab:blue", "layer": "tab:orange", "none": "tab:gray"}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _grouped_bars(axes: Axes, groups: list[str], series: dict[str, list[float]], colors: dict[str, str]) -> None:
    width = 0.8 / len(series)
    positions = np.arange(len(groups))
    for index, (label, values) in enumerate(series.items()):
        bars = axes.bar(
            positions + (index - (len(series) - 1) / 2) * width, values, width, label=label, color=colors[label]
        )
        axes.bar_label(bars, fmt="%.3f", fontsize=7)
    axes.set_xticks(positions, groups)
    axes.grid(axis="y", alpha=0.3)


def norms_figure(runs: dict[tuple[str, str], Run], spreads: dict[str, NormSpread], norms: tuple[str, ...]) -> bytes:
    """Val accuracy and loss per task and norm; and on the norm task, each row's norm after the first norm
    layer (relative to the mean) against its input norm: flat for LayerNorm, rising for BatchNorm."""
    figure = Figure(figsize=(15, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    accuracy, loss, scatter = figure.subplots(1, 3)
    tasks = sorted({task for task, _ in runs})
    for axes, metric, title in (
        (accuracy, "val_accuracy", "Validation accuracy"),
        (loss, "val_loss", "Validation loss"),
    ):
        series = {norm: [float(getattr(runs[task, norm], metric)) for task in tasks] for norm in norms}
        _grouped_bars(axes, tasks, series, _COLORS)
        axes.set_title(title)
        axes.legend(title="norm", fontsize=8)
    for norm in norms:
        spread = spreads[norm]
        relative = spread.output_norms / spread.output_norms.mean()
        scatter.scatter(
            spread.input_norms,
            relative,
            s=6,
            alpha=0.6,
            color=_COLORS[norm],
            label=f"{norm} ({spread.output_spread:.3f})",
        )
    scatter.set_title("Norm task: row norm after the first norm layer")
    scatter.set_xlabel("||x|| of the input row (the class is its band)")
    scatter.set_ylabel("||h|| / mean ||h||")
    scatter.legend(title="norm (spread std/mean)", fontsize=8)
    scatter.grid(alpha=0.3)
    title = "Norm choice on digits and on the norm task (class = band of ||x||); right: row norms after the layer"
    figure.suptitle(title)
    return _png(figure)


def regularization_figure(
    runs: dict[tuple[str, str], Run], dropouts: tuple[str, ...], decays: tuple[str, ...]
) -> bytes:
    """Generalization gap and validation loss for each dropout (groups) and weight decay (bars)."""
    figure = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    gap, loss = figure.subplots(1, 2)
    colors = {f"weight decay {decay}": color for decay, color in zip(decays, ("tab:gray", "tab:green"), strict=True)}
    groups = [f"dropout {p}" for p in dropouts]
    for axes, metric, title in (
        (gap, "gap", "Generalization gap (train - val accuracy)"),
        (loss, "val_loss", "Validation loss"),
    ):
        series = {
            f"weight decay {decay}": [float(getattr(runs[p, decay], metric)) for p in dropouts] for decay in decays
        }
        _grouped_bars(axes, groups, series, colors)
        axes.set_title(title)
        axes.legend(fontsize=8)
    rows = len(next(iter(runs.values())).split.train)
    figure.suptitle(f"Regularization on a small split ({rows} digits training rows, BatchNorm MLP)")
    return _png(figure)
