"""The per-epoch summary table, and `python -m training.report`: a checkpoint's table and curves again.

    python -m training.report REPO/NAME[/VERSION] [REPO/NAME[/VERSION]] [--out FILE.png | --out DIR]

One checkpoint: its summary table (its curves are the version's own curves.png). Two: both tables, and with
--out one figure comparing them. NAME without a version means its latest version. A figure is written only
when --out is given: to FILE.png, or into DIR (an existing directory, or a path ending in '/') as
NAME-vN-curves.png / NAME-vA-vs-NAME-vB-curves.png. Nothing is written into the current directory unasked,
and published versions are never modified. --out is checked before anything is printed.
Exit codes: 0 done; 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.errors import InputError

_HEADER = ("epoch", "train loss", "train acc", "val loss", "val acc", "seconds")
# Regression records (train_r2, val_r2, val_mae, val_rmse): R^2 where accuracy would be, and the errors.
_REGRESSION_HEADER = ("epoch", "train loss", "train R^2", "val loss", "val R^2", "val MAE", "val RMSE", "seconds")
PROG = "python -m training.report"


def summary(history: Sequence[Any], kept_epoch: int | None = None) -> str:
    """One row per epoch, then the saved epoch's row repeated, in fixed-width columns: as `final` when the
    last epoch was kept, as `kept` when an earlier one was (`--keep best`).

    `history` holds EpochMetrics or the manifest's epoch records (dicts with the same keys).
    """
    records = [_as_record(metrics) for metrics in history]
    rows = [_row(str(record["epoch"]), record) for record in records]
    kept = len(records) if kept_epoch is None else kept_epoch
    rows.append(_row("final" if kept == len(records) else "kept", records[kept - 1]))
    header = _REGRESSION_HEADER if "val_r2" in records[0] else _HEADER
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [_line(header, widths), _line(tuple("-" * width for width in widths), widths)]
    lines += [_line(row, widths) for row in rows]
    return "\n".join(lines)


def _as_record(metrics: Any) -> Mapping[str, Any]:
    return metrics if isinstance(metrics, Mapping) else metrics.to_json()


def _row(label: str, record: Mapping[str, Any]) -> tuple[str, ...]:
    if "val_r2" in record:
        return (
            label,
            f"{record['train_loss']:.4f}",
            f"{record['train_r2']:.4f}",
            f"{record['val_loss']:.4f}",
            f"{record['val_r2']:.4f}",
            f"{record['val_mae']:.4g}",
            f"{record['val_rmse']:.4g}",
            f"{record['seconds']:.2f}",
        )
    return (
        label,
        f"{record['train_loss']:.4f}",
        f"{record['train_accuracy']:.4f}",
        f"{record['val_loss']:.4f}",
        f"{record['val_accuracy']:.4f}",
        f"{record['seconds']:.2f}",
    )


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))


def version_dir_of(target: str) -> Path:
    """REPO/NAME/VERSION as given, or REPO/NAME's latest version; InputError naming what is missing."""
    from models.checkpoint import MANIFEST_FILE
    from models.scan import list_versions

    path = Path(target)
    if (path / MANIFEST_FILE).is_file():
        return path
    versions = list_versions(path.parent, path.name)
    if not versions:
        raise InputError(f"{target} is neither a version directory (no {MANIFEST_FILE}) nor a model with versions")
    return path / str(versions[-1])


def figure_path_of(out: str | None, labels: Sequence[str]) -> Path | None:
    """Where the figure goes: None without --out; inside a directory (existing, or named with a trailing
    '/', then created) under the default name; else the file named. InputError when it cannot be written."""
    if out is None:
        return None
    default_name = f"{'-vs-'.join(labels)}-curves.png"
    path = Path(out)
    if out.endswith(("/", "\\")) or path.is_dir():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--out {out}: cannot create the directory: {exc.strerror or exc}") from None
        return path / default_name
    if not path.parent.is_dir():
        raise InputError(f"--out {out}: no such directory {path.parent}")
    return path


def report(targets: Sequence[str], out: str | None) -> str:
    """The text to print; writes the figure where --out says (figure_path_of), nowhere without it."""
    from models.checkpoint import CheckpointError, read_manifest
    from training.curves import curves_png, curves_title

    try:
        manifests = [read_manifest(version_dir_of(target)) for target in targets]
    except CheckpointError as exc:
        raise InputError(str(exc)) from None
    labels = [f"{manifest.name}-v{manifest.version}" for manifest in manifests]
    blocks = [
        f"{curves_title(manifest)}\n{summary(manifest.epochs, manifest.training.get('kept_epoch'))}"
        for manifest in manifests
    ]
    runs = {label: manifest.epochs for label, manifest in zip(labels, manifests, strict=True)}
    title = curves_title(manifests[0]) if len(manifests) == 1 else " vs ".join(labels)
    figure_path = figure_path_of(out, labels)
    if figure_path is None:
        return "\n\n".join(blocks) + "\n\n" + _own_curves(targets, manifests)
    try:
        figure_path.write_bytes(curves_png(runs if len(runs) > 1 else {"": manifests[0].epochs}, title))
    except OSError as exc:
        raise InputError(f"cannot write {figure_path}: {exc.strerror or exc}") from None
    return "\n\n".join(blocks) + f"\n\nfigure: {figure_path}"


def _own_curves(targets: Sequence[str], manifests: Sequence[Any]) -> str:
    if len(manifests) == 1 and "curves" in manifests[0].artifacts:
        return f"curves: {version_dir_of(targets[0]) / manifests[0].artifacts['curves']} (--out FILE.png|DIR to draw)"
    return "figure: none written (--out FILE.png or --out DIR to draw the comparison)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", metavar="REPO/NAME[/VERSION]", help="one, or two to compare")
    parser.add_argument(
        "--out", metavar="FILE.png|DIR", help="write the figure to this file, or into this directory (default: none)"
    )
    arguments = parser.parse_args(argv)
    if len(arguments.checkpoints) > 2:
        parser.error("give one checkpoint, or two to compare")
    try:
        print(report(arguments.checkpoints, arguments.out))
    except InputError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
