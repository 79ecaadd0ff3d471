"""Training curves as a PNG: loss and accuracy per epoch, training and validation, one or more runs.

Drawn with matplotlib's object API on an Agg canvas (no display, no global pyplot state), from the epoch
records a manifest holds, so a figure can be redrawn from any checkpoint.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from models.checkpoint import Manifest
from models.imported import ImportedConfig

CURVES_FILE = "curves.png"
# (metric key prefix, panel title, y label)
_PANELS = (("loss", "Cross-entropy loss", "loss"), ("accuracy", "Accuracy", "accuracy"))


def curves_png(runs: Mapping[str, Sequence[Mapping[str, Any]]], title: str) -> bytes:
    """PNG bytes: one panel for loss, one for accuracy; per run a solid train line and a dashed val line.

    `runs` maps a legend label (e.g. "v3", or "" for a single run) to its epoch records: dicts with epoch, train_loss,
    train_accuracy, val_loss, val_accuracy (the manifest's "epochs").
    """
    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for (label, epochs), color in zip(runs.items(), colors * len(runs), strict=False):
        steps = [record["epoch"] for record in epochs]
        for panel, (metric, _, _) in zip(axes, _PANELS, strict=True):
            prefix = f"{label} " if label else ""
            panel.plot(steps, [r[f"train_{metric}"] for r in epochs], color=color, label=f"{prefix}train")
            panel.plot(steps, [r[f"val_{metric}"] for r in epochs], color=color, linestyle="--", label=f"{prefix}val")
    for panel, (_, panel_title, y_label) in zip(axes, _PANELS, strict=True):
        panel.set_title(panel_title)
        panel.set_xlabel("epoch")
        panel.set_ylabel(y_label)
        panel.grid(alpha=0.3)
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.legend()
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def curves_title(manifest: Manifest) -> str:
    """'digits v3: mlp 256,256, norm batch, dropout 0.2, sgd lr 0.05, weight decay 0.0005, 2 processes'."""
    config, training = manifest.architecture, manifest.training
    if isinstance(config, ImportedConfig):  # not trained here: no widths or training record to name
        return f"{manifest.name}: imported {config.arch} model"
    version = f" v{manifest.version}" if manifest.version else ""
    parts = [
        f"{config.arch} {','.join(map(str, config.widths))}",
        f"norm {config.norm}",
        f"dropout {config.dropout:g}",
    ]
    if "optimizer" in training:
        parts.append(f"{training['optimizer']} lr {training['lr']:g}, weight decay {training['weight_decay']:g}")
    world = training.get("distributed", {}).get("world_size", 1)
    if world > 1:
        sync = "SyncBatchNorm" if training["distributed"].get("sync_bn") else "no SyncBatchNorm"
        parts.append(f"{world} processes, {sync}")
    return f"{manifest.name}{version}: " + ", ".join(parts)
