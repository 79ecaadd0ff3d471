"""The end-of-run summary table printed to stdout."""

from __future__ import annotations

from training.loop import EpochMetrics

_HEADER = ("epoch", "train loss", "train acc", "val loss", "val acc", "seconds")


def summary(history: list[EpochMetrics]) -> str:
    """One row per epoch, then the final row repeated as `final`, in fixed-width columns."""
    rows = [_row(str(metrics.epoch), metrics) for metrics in history]
    rows.append(_row("final", history[-1]))
    widths = [max(len(row[column]) for row in [_HEADER, *rows]) for column in range(len(_HEADER))]
    lines = [_line(_HEADER, widths), _line(tuple("-" * width for width in widths), widths)]
    lines += [_line(row, widths) for row in rows]
    return "\n".join(lines)


def _row(label: str, metrics: EpochMetrics) -> tuple[str, ...]:
    return (
        label,
        f"{metrics.train_loss:.4f}",
        f"{metrics.train_accuracy:.4f}",
        f"{metrics.val_loss:.4f}",
        f"{metrics.val_accuracy:.4f}",
        f"{metrics.seconds:.2f}",
    )


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))
