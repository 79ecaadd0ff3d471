"""The study's regression section: scikit-learn's bundled diabetes set (442 rows, 10 features, a continuous
target) written as a CSV and trained through the ordinary CLI path as a regression, per norm and loss,
beside a Ridge baseline on the same split with the same standardization.

Every run is a real checkpoint read back; R^2, MAE and RMSE are measured on it in eval mode (running
statistics, no dropout), in the target's units.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from models.checkpoint import load_checkpoint
from training.cli import build_parser
from training.data import Split, load_dataset, split_dataset, standardization_stats
from training.loop import Objective, evaluate_regression, pinned_numerics
from training.options import resolve_options
from training.run import run_training

REGRESSION_GRID = (("batch", "mse"), ("layer", "mse"), ("none", "mse"), ("batch", "huber"))
RIDGE_ALPHA = 1.0


@dataclass(frozen=True)
class Fit:
    """R^2 on the training and validation splits, MAE and RMSE on validation (target units)."""

    train_r2: float
    val_r2: float
    val_mae: float
    val_rmse: float


@dataclass(frozen=True)
class RegressionRun:
    name: str
    norm: str
    loss: str
    version_dir: Path
    val_rows: int
    fit: Fit


def write_diabetes(path: Path) -> Path:
    """Unscaled features (age in years, sex 1/2, bmi, ...) and the target, as a user would have them."""
    bunch = load_diabetes(scaled=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*bunch.feature_names, "target"])
        for row, target in zip(bunch.data.tolist(), bunch.target.tolist(), strict=True):
            writer.writerow([repr(value) for value in row] + [repr(target)])
    return path


def train_regression_run(
    repository: Path, data: Path, norm: str, loss: str, common: list[str], seed: int
) -> RegressionRun:
    name = f"diabetes-{norm}-{loss}"
    args = [*common, "--task", "regression", "--norm", norm, "--loss", loss, "--dropout", "0"]
    argv = ["--data", str(data), "--name", name, "--repository", str(repository), "--seed", str(seed), *args]
    options = resolve_options(vars(build_parser().parse_args(argv)))
    result = run_training(options, progress=False)
    assert result is not None  # one process: rank 0 writes
    model, _ = load_checkpoint(result.version_dir)
    model.eval()
    split = _split(data, seed, options.val_fraction)
    objective = Objective.for_split(split, loss)
    with pinned_numerics():
        _, train_r2, _, _ = evaluate_regression(model, split.train, objective)
        _, val_r2, val_mae, val_rmse = evaluate_regression(model, split.val, objective)
    fit = Fit(train_r2, val_r2, val_mae, val_rmse)
    return RegressionRun(name, norm, loss, result.version_dir, len(split.val), fit)


def ridge_baseline(data: Path, seed: int, val_fraction: float = 0.2) -> Fit:
    """scikit-learn's Ridge on the runs' own split, features standardized with the training split's mean and
    std (what the MLP's Standardize layer does)."""
    split = _split(data, seed, val_fraction)
    mean, std = standardization_stats(split.train.features)  # (F,), (F,)
    train_x = ((split.train.features - mean) / std).double().numpy()  # (N, F)
    val_x = ((split.val.features - mean) / std).double().numpy()
    train_y, val_y = split.train.labels.double().numpy(), split.val.labels.double().numpy()
    model = Ridge(alpha=RIDGE_ALPHA).fit(train_x, train_y)
    predicted = model.predict(val_x)  # (M,)
    return Fit(_r2(model.predict(train_x), train_y), _r2(predicted, val_y), *_mae_rmse(predicted - val_y))


def _split(data: Path, seed: int, val_fraction: float) -> Split:
    dataset = load_dataset(str(data), "mlp", None)
    assert dataset.task == "regression", dataset.task_reason
    return split_dataset(dataset, val_fraction, torch.Generator().manual_seed(seed))


def _r2(predicted: np.ndarray, actual: np.ndarray) -> float:
    return 1.0 - float(((predicted - actual) ** 2).sum()) / float(((actual - actual.mean()) ** 2).sum())


def _mae_rmse(errors: np.ndarray) -> tuple[float, float]:
    return float(np.abs(errors).mean()), float(np.sqrt((errors**2).mean()))


def regression_table(runs: list[RegressionRun], ridge: Fit) -> str:
    lines = [
        f"Diabetes (scikit-learn's bundled set as a CSV, unscaled), {runs[0].val_rows} validation rows; R^2 in "
        "eval mode, MAE and RMSE in the target's units.\n",
        "| model | norm | loss | train R^2 | val R^2 | val MAE | val RMSE |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(f"| MLP | {run.norm} | {run.loss} | {_figures(run.fit)} |")
    lines.append(f"| Ridge (alpha {RIDGE_ALPHA}, baseline) | | squared | {_figures(ridge)} |")
    return "\n".join(lines)


def _figures(fit: Fit) -> str:
    return f"{fit.train_r2:.4f} | {fit.val_r2:.4f} | {fit.val_mae:.2f} | {fit.val_rmse:.2f}"
