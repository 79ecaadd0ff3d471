"""What `python -m training.study` trains and measures: the generated norm task, one grid run, and the
three measurements (eval-mode fit, the norm layer's row-norm spread, minibatch dependence).

Every run goes through the ordinary training path (`run_training`, a real checkpoint with its curves.png)
and every measurement reads the checkpoint back, so the study shows what this code does, not a copy of it.
"""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.checkpoint import Manifest, load_checkpoint
from training.cli import build_parser
from training.data import Split, load_dataset, split_dataset
from training.loop import evaluate, pinned_numerics
from training.options import resolve_options
from training.run import run_training

if TYPE_CHECKING:
    from service.engine.types import Executor

NORM_TASK_DIM = 8
NORM_TASK_CLASSES = ("small", "medium", "large")
NORM_TASK_EDGES = (1.0, 2.0, 3.0, 4.0)  # class c has ||x|| uniform in [edges[c], edges[c + 1])


def write_norm_task(path: Path, rows: int, seed: int) -> Path:
    """A CSV whose class depends only on the norm of the row: direction uniform on the sphere, radius from
    the class's band. Nothing but a row's norm tells its class, which is what LayerNorm normalizes away."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.arange(rows) % len(NORM_TASK_CLASSES)  # (rows,) balanced
    directions = torch.randn(rows, NORM_TASK_DIM, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=1, keepdim=True)  # (rows, D) unit vectors
    edges = torch.tensor(NORM_TASK_EDGES, dtype=torch.float64)
    radius = edges[classes] + torch.rand(rows, generator=generator, dtype=torch.float64) * (
        edges[classes + 1] - edges[classes]
    )
    features = directions * radius[:, None]  # (rows, D)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"x{index}" for index in range(NORM_TASK_DIM)] + ["label"])
        for row, label in zip(features.tolist(), classes.tolist(), strict=True):
            writer.writerow([f"{value:.6f}" for value in row] + [NORM_TASK_CLASSES[label]])
    return path


@dataclass(frozen=True)
class Run:
    name: str
    version_dir: Path
    manifest: Manifest
    model: nn.Module  # eval mode, as loaded from the checkpoint
    split: Split  # the run's own seeded split, rebuilt
    train_accuracy: float  # eval mode on the training split (no dropout, running statistics)
    train_loss: float
    val_accuracy: float
    val_loss: float

    @property
    def gap(self) -> float:
        """Generalization gap: training minus validation accuracy, both in eval mode."""
        return self.train_accuracy - self.val_accuracy


def train_run(repository: Path, name: str, data: str, args: list[str], seed: int) -> Run:
    """Train one configuration through the ordinary CLI options and measure its checkpoint."""
    argv = ["--data", data, "--name", name, "--repository", str(repository), "--seed", str(seed), *args]
    options = resolve_options(vars(build_parser().parse_args(argv)))
    result = run_training(options, progress=False)
    assert result is not None  # one process: rank 0 writes
    model, manifest = load_checkpoint(result.version_dir)
    model.eval()
    dataset = load_dataset(options.data, options.arch, options.label_column)
    split = split_dataset(dataset, options.val_fraction, torch.Generator().manual_seed(options.seed))
    with pinned_numerics():
        train_loss, train_accuracy = evaluate(model, split.train)
        val_loss, val_accuracy = evaluate(model, split.val)
    return Run(name, result.version_dir, manifest, model, split, train_accuracy, train_loss, val_accuracy, val_loss)


@dataclass(frozen=True)
class NormSpread:
    """Relative spread (std / mean) of row norms: of the inputs, and of the first norm layer's outputs."""

    input_spread: float
    output_spread: float
    correlation: float  # Pearson correlation of input and output row norms: how much of ||x|| survives in ||h||
    input_norms: npt.NDArray[np.float64]  # (N,) for the figure
    output_norms: npt.NDArray[np.float64]  # (N,)


@torch.no_grad()
def first_norm_layer_spread(run: Run) -> NormSpread:
    """Row norms before the model and after its first norm layer (blocks.1: BatchNorm, LayerNorm or none)."""
    captured: list[torch.Tensor] = []
    layer = run.model.get_submodule("blocks.1")
    handle = layer.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        run.model(run.split.val.features)
    finally:
        handle.remove()
    inputs = run.split.val.features.double().norm(dim=1).numpy()  # (N,)
    outputs = captured[0].double().norm(dim=1).numpy()  # (N,) rows of (N, width)
    correlation = float(np.corrcoef(inputs, outputs)[0, 1])
    return NormSpread(_spread(inputs), _spread(outputs), correlation, inputs, outputs)


def _spread(norms: npt.NDArray[np.float64]) -> float:
    return float(norms.std() / norms.mean())


@dataclass(frozen=True)
class MinibatchCounts:
    rows: int
    batch_sizes: tuple[int, ...]
    train_mode_changed: int  # rows whose label is not the same at every batch size (train mode)
    eval_changed: int  # the same through the service's executor (eval, fixed execution shape)
    eval_bits_changed: int  # rows whose logits bits differ across batch sizes there
    plain_eval_bits_changed: int  # control: eval-mode model(batch) without the fixed shape


def minibatch_dependence(run: Run, batch_sizes: tuple[int, ...], chunk_rows: int) -> MinibatchCounts:
    """Label each validation row at every batch size, in train mode and through the service's executor."""
    # The server's own executor: eval mode on the fixed execution shape (imported here, not at module level:
    # training does not otherwise depend on the service).
    from service.engine.executor_factory import build_executor
    from service.settings import Settings

    # Every batch size divides the largest and N: no batch of one row (train-mode BatchNorm refuses it).
    largest = max(batch_sizes)
    assert all(largest % size == 0 for size in batch_sizes), batch_sizes
    count = len(run.split.val) - len(run.split.val) % largest
    assert count > 0, f"{len(run.split.val)} validation rows: fewer than the largest batch size {largest}"
    rows = run.split.val.features[:count]  # (N, *input_shape)
    train_labels = [_train_mode_labels(run.model, rows, size) for size in batch_sizes]  # each (N,)
    settings = Settings(repository=run.version_dir.parent.parent, chunk_rows=chunk_rows, device="cpu")
    executor = build_executor(copy.deepcopy(run.model), run.manifest, settings)
    array = rows.numpy()
    outputs = [_executor_labels_and_logits(executor, array, size) for size in batch_sizes]
    plain = [_plain_logits(executor, array, size) for size in batch_sizes]
    return MinibatchCounts(
        rows=len(rows),
        batch_sizes=batch_sizes,
        train_mode_changed=_rows_not_all_equal([labels.numpy() for labels in train_labels]),
        eval_changed=_rows_not_all_equal([labels for labels, _ in outputs]),
        eval_bits_changed=_rows_not_all_equal([logits for _, logits in outputs]),
        plain_eval_bits_changed=_rows_not_all_equal(plain),
    )


@torch.no_grad()
def _train_mode_labels(model: nn.Module, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    # Study only (the server never runs train mode): BatchNorm normalizes with each batch's own statistics.
    # A copy, because train-mode forwards also move the running statistics.
    trained = copy.deepcopy(model).train()
    return torch.cat(
        [trained(rows[start : start + batch_size]).argmax(dim=1) for start in range(0, len(rows), batch_size)]
    )


def _executor_labels_and_logits(
    executor: Executor, array: npt.NDArray[Any], size: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """(labels (N,), logits (N, K)) of `array` sent to the executor in consecutive batches of `size` rows."""
    pieces = [executor.run(array[start : start + size]) for start in range(0, len(array), size)]
    return np.concatenate([p.class_index for p in pieces]), np.concatenate([p.logits for p in pieces])


def _plain_logits(executor: Executor, array: npt.NDArray[Any], size: int) -> npt.NDArray[Any]:
    """Logits (N, K) of eval-mode `model(batch)` on batches of `size` rows: no fixed execution shape."""
    return np.concatenate([executor.run_plain(array[start : start + size]) for start in range(0, len(array), size)])


def _rows_not_all_equal(per_size: list[npt.NDArray[Any]]) -> int:
    """How many rows (axis 0) are not bitwise identical across every entry of `per_size`."""
    rows = [np.ascontiguousarray(entry).view(np.uint8).reshape(len(entry), -1) for entry in per_size]  # bytes
    differs = np.zeros(len(rows[0]), dtype=bool)
    for other in rows[1:]:
        differs |= (rows[0] != other).any(axis=1)
    return int(differs.sum())
