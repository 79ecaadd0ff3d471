"""The training loop: pinned numerics, the optimizer (weight decay included), epochs and validation."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the lock files

from training.data import Dataset, Split
from training.distributed import SINGLE, World
from training.errors import TrainingFailed

# One thread: on a 2-core machine shared with other work, a second thread made the MLP 5-20x slower, and a
# fixed count is part of "same seed, same machine -> same bits" (kernels may split work per thread).
TRAIN_THREADS = 1
EVAL_BATCH = 512  # validation rows per forward; eval mode, so the batch only affects speed


HUBER_DELTA = 1.0  # in standardized-target units: one training-split std of the target
_TARGET = "of the standardized target ((y - mean) / std, training-split statistics), mean over the batch"
LOSS_DESCRIPTION = {
    ("classification", "mse"): "cross_entropy, mean over the batch",
    ("regression", "mse"): f"mse {_TARGET}",
    ("regression", "huber"): f"huber (delta {HUBER_DELTA}) {_TARGET}",
}


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch. Regression: the losses are MSE of the standardized target and the accuracy fields hold
    R^2 (train: of the standardized target over the training-mode batches; val: eval mode), written as
    train_r2 / val_r2 beside val_mae / val_rmse (in the target's units)."""

    epoch: int
    train_loss: float  # mean loss over the epoch's training-mode batches (dropout on)
    train_accuracy: float
    val_loss: float  # eval mode: running statistics, no dropout
    val_accuracy: float
    seconds: float
    val_mae: float | None = None  # regression only
    val_rmse: float | None = None

    def to_json(self) -> dict[str, float]:
        values = asdict(self)
        if self.val_mae is None:
            del values["val_mae"], values["val_rmse"]
            return values
        values["train_r2"], values["val_r2"] = values.pop("train_accuracy"), values.pop("val_accuracy")
        return values


@dataclass(frozen=True)
class Objective:
    """What is trained: classes (cross-entropy) or a standardized target (MSE or Huber; mean and std of the
    training split's targets, stored in the manifest so a server returns output * std + mean)."""

    task: str = "classification"
    mean: float = 0.0
    std: float = 1.0
    loss_function: str = "mse"  # regression: "mse" or "huber" (delta HUBER_DELTA)

    @classmethod
    def for_split(cls, split: Split, loss_function: str = "mse") -> Objective:
        if split.train.task != "regression":
            return cls()
        targets = split.train.labels.to(torch.float64)  # (N,)
        std = float(targets.std(unbiased=False))
        return cls("regression", float(targets.mean()), std if std > 0 else 1.0, loss_function)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """outputs (B, K), y (B,) -> the loss."""
        if self.task == "regression":
            scaled = (y - self.mean) / self.std  # (B,) float32
            if self.loss_function == "huber":
                return nn.functional.huber_loss(outputs[:, 0], scaled, reduction=reduction, delta=HUBER_DELTA)
            return nn.functional.mse_loss(outputs[:, 0], scaled, reduction=reduction)
        return nn.functional.cross_entropy(outputs, y, reduction=reduction)

    def tally(self, outputs: torch.Tensor, y: torch.Tensor) -> float:
        """Per batch, summed over the epoch: rows classified right, or (regression) the squared error of the
        standardized target, whatever the loss (train R^2 = 1 - its mean; the Huber loss is not the MSE)."""
        if self.task == "regression":
            scaled = (y - self.mean) / self.std  # (B,)
            return float(((outputs.detach()[:, 0] - scaled) ** 2).sum())
        return int((outputs.argmax(dim=1) == y).sum())


CLASSIFICATION = Objective()


@contextmanager
def pinned_numerics(threads: int = TRAIN_THREADS) -> Iterator[None]:
    """Deterministic algorithms and a fixed thread count inside; the caller's settings and RNG restored after.

    Restoring matters because `main(argv)` also runs in-process (tests, other tools).
    """
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    old_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.use_deterministic_algorithms(old_deterministic, warn_only=old_warn_only)
        torch.set_num_threads(old_threads)


def build_optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD (coupled decay, the notes' eq. 6) or AdamW (decoupled decay).

    As in the notes' eq. (5), which penalizes the weight matrices W_i, decay applies to weights with two or
    more dimensions (Linear matrices, conv kernels); biases and the norms' scale/shift are not decayed.
    """
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    plain = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    if name == "sgd":
        # torch adds weight_decay * W to the gradient, then steps: W - lr * (grad + lambda W).
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    # AdamW first multiplies W by (1 - lr * lambda), then takes the Adam step of the loss gradient.
    return torch.optim.AdamW(groups, lr=lr)


class _Rows(torch.utils.data.Dataset[int]):
    """Row indices 0..count-1: all DistributedSampler needs to know of the training split is its length."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> int:
        return index


def rank_batches(count: int, batch_size: int, seed: int, epoch: int, world: World = SINGLE) -> list[torch.Tensor]:
    """This rank's batches of one epoch: `batch_size` is the global batch, `batch_size // world.size` per rank.

    DistributedSampler shuffles range(count) with a generator seeded `seed + epoch` (the same permutation on
    every rank), pads it to a multiple of the world size, and gives rank r every world.size-th row from r.
    Cut into per-rank batches, batch k of all ranks together is rows [k * batch_size, (k + 1) * batch_size)
    of that permutation: the same global batches a single process sees with the same --batch-size (without
    padding, i.e. when count is a multiple of the world size).

    A last batch of a single row is merged into the one before it: BatchNorm cannot normalize one row in
    training mode (its batch variance is 0). Every rank holds the same number of rows, so all ranks take
    the same number of steps (DDP needs that).
    """
    sampler: DistributedSampler[int] = DistributedSampler(
        _Rows(count), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed
    )
    sampler.set_epoch(epoch)
    order = torch.tensor(list(sampler), dtype=torch.int64)  # (ceil(count / world.size),)
    batches = list(torch.split(order, batch_size // world.size))
    if len(batches) > 1 and batches[-1].numel() == 1:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


def train_epoch(
    trained: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[torch.Tensor],
    data: Dataset,
    bar: tqdm,
    objective: Objective = CLASSIFICATION,
) -> tuple[float, float, int]:
    """One pass of this rank's batches in training mode; returns (loss sum, tally, rows) over its rows
    (tally: rows classified right, or for regression the summed squared error, Objective.tally).

    `trained` is the model, or its DistributedDataParallel wrapper (which averages gradients over ranks).
    """
    trained.train()
    loss_sum, correct, seen = 0.0, 0.0, 0
    for rows in batches:
        x, y = data.features[rows], data.labels[rows]  # (B, *input_shape), (B,)
        logits = trained(x)  # (B, num_classes)
        loss = objective.loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingFailed(f"training diverged: the loss became {value} (try a smaller --lr)")
        loss_sum += value * len(rows)
        correct += objective.tally(logits, y)
        seen += len(rows)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False)
    return loss_sum, correct, seen


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset) -> tuple[float, float]:
    """(mean loss, accuracy) in eval mode: BatchNorm uses its running statistics, dropout is off."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(data), EVAL_BATCH):
        x = data.features[start : start + EVAL_BATCH]
        y = data.labels[start : start + EVAL_BATCH]
        logits = model(x)  # (B, num_classes)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == y).sum())
    return loss_sum / len(data), correct / len(data)


@torch.no_grad()
def evaluate_regression(model: nn.Module, data: Dataset, objective: Objective) -> tuple[float, float, float, float]:
    """(mean loss, R^2, MAE, RMSE) in eval mode; R^2, MAE and RMSE of output * std + mean in target units."""
    model.eval()
    loss_sum = 0.0
    predictions = []
    for start in range(0, len(data), EVAL_BATCH):
        outputs = model(data.features[start : start + EVAL_BATCH])  # (B, 1)
        loss_sum += objective.loss(outputs, data.labels[start : start + EVAL_BATCH], reduction="sum").item()
        predictions.append(outputs[:, 0].to(torch.float64) * objective.std + objective.mean)
    predicted, actual = torch.cat(predictions), data.labels.to(torch.float64)  # (N,), (N,)
    errors = predicted - actual
    total = float(((actual - actual.mean()) ** 2).sum())
    r2 = 1.0 - float((errors**2).sum()) / total if total > 0 else 0.0
    return loss_sum / len(data), r2, float(errors.abs().mean()), float(errors.pow(2).mean().sqrt())


def _validate(model: nn.Module, val: Dataset, objective: Objective, world: World) -> list[float]:
    """[loss, accuracy] or, for regression, [loss, R^2, MAE, RMSE]: rank 0's, shared with every rank."""
    if objective.task == "regression":
        figures = list(evaluate_regression(model, val, objective)) if world.writes else [0.0] * 4
    else:
        figures = list(evaluate(model, val)) if world.writes else [0.0] * 2
    return world.from_rank0(figures)


@dataclass
class Selection:
    """Which epoch's weights the model ends with, and when training stops early.

    keep "last": the final epoch's weights; "best": those of the epoch with the lowest validation loss (the
    earliest on a tie), copied when it happens and restored at the end. `patience`: stop once that many
    epochs in a row have not lowered the best validation loss (None: run every epoch). Validation numbers
    are rank 0's, shared with every rank, so all ranks stop at the same epoch.
    """

    keep: str = "last"
    patience: int | None = None
    best_epoch: int = 0
    best_loss: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None

    def after_epoch(self, model: nn.Module, metrics: EpochMetrics) -> bool:
        """Record the epoch; True when training should stop."""
        if metrics.val_loss < self.best_loss:
            self.best_loss, self.best_epoch = metrics.val_loss, metrics.epoch
            if self.keep == "best":
                self.best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        return self.patience is not None and metrics.epoch - self.best_epoch >= self.patience

    def finish(self, model: nn.Module, epochs_run: int) -> int:
        """Load the kept weights into `model`; returns the kept epoch."""
        if self.keep == "best" and self.best_state is not None:
            model.load_state_dict(self.best_state, strict=True)
            return self.best_epoch
        return epochs_run


@dataclass(frozen=True)
class FitResult:
    history: list[EpochMetrics]  # every epoch run (fewer than asked when stopped early)
    kept_epoch: int  # whose weights the model holds now (1-based)

    @property
    def kept(self) -> EpochMetrics:
        return self.history[self.kept_epoch - 1]


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Split,
    epochs: int,
    batch_size: int,
    seed: int,
    world: World = SINGLE,
    progress: bool = True,
    selection: Selection | None = None,
    objective: Objective = CLASSIFICATION,
) -> FitResult:
    """Train for up to `epochs` epochs of global batches of `batch_size` rows, validating after each; the
    model ends with the weights `selection` keeps (default: the last epoch's, every epoch run).

    With several ranks the model is wrapped in DistributedDataParallel (gradients averaged over ranks:
    each rank's loss is the mean over its batch_size / world.size rows, so the average is the mean over the
    global batch). Training metrics are summed over all ranks; validation runs on rank 0, whose model is
    the one written, and its numbers are shared so every rank's history is the same. A progress bar per
    epoch on stderr, rank 0 only.
    """
    selection = selection or Selection()
    trained = nn.parallel.DistributedDataParallel(model) if world.size > 1 else model
    history: list[EpochMetrics] = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        batches = rank_batches(len(split.train), batch_size, seed, epoch, world)
        show = progress and world.writes
        try:
            bar = tqdm(
                total=len(batches),
                desc=f"epoch {epoch}/{epochs}",
                unit="batch",
                file=sys.stderr,
                disable=not show,
                dynamic_ncols=True,
            )
            with bar:
                loss_sum, correct, seen = world.sum(
                    list(map(float, train_epoch(trained, optimizer, batches, split.train, bar, objective)))
                )
                train_loss, train_accuracy = loss_sum / seen, correct / seen
                if objective.task == "regression":
                    train_accuracy = 1.0 - train_accuracy  # mean squared error -> R^2
                val = _validate(model, split.val, objective, world)
                bar.set_postfix(loss=f"{train_loss:.4f}", val_loss=f"{val[0]:.4f}", val=f"{val[1]:.4f}")
        except KeyboardInterrupt:
            if show:  # an interrupted bar ends without a newline: the CLI's one line goes below it
                print(file=sys.stderr)
            raise
        seconds = time.perf_counter() - started
        if objective.task == "regression":  # R^2 of the standardized training target: 1 - its MSE
            metrics = EpochMetrics(epoch, train_loss, train_accuracy, val[0], val[1], seconds, val[2], val[3])
        else:
            metrics = EpochMetrics(epoch, train_loss, train_accuracy, val[0], val[1], seconds)
        history.append(metrics)
        if selection.after_epoch(model, history[-1]):
            break
    return FitResult(history, selection.finish(model, len(history)))
