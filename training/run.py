"""One training run end to end: data -> split -> model -> fit -> manifest -> checkpoint."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.architectures import build_model
from models.checkpoint import CheckpointError, Manifest, TargetScale, read_manifest, save_checkpoint
from models.config import ARCHITECTURES, ArchConfig, Common, InputSpec
from models.preprocess import Preprocessing
from training.csv_data import CsvOptions
from training.curves import CURVES_FILE, curves_png, curves_title
from training.data import Dataset, Split, TableSettings, load_dataset, split_dataset, standardization_stats
from training.distributed import World, process_group
from training.errors import InputError, TrainingFailed
from training.gate import Decision, hold_stable, judge, settle
from training.loop import (
    LOSS_DESCRIPTION,
    TRAIN_THREADS,
    EpochMetrics,
    FitResult,
    Objective,
    Selection,
    build_optimizer,
    fit,
    pinned_numerics,
)
from training.options import WEIGHT_DECAY_KIND, TrainOptions
from training.preflight import check_repository, checkpoint_bytes
from training.sync_batchnorm import convert_to_sync_batchnorm
from training.tabular import fill_missing


@dataclass(frozen=True)
class RunResult:
    version_dir: Path
    manifest: Manifest
    history: list[EpochMetrics]
    kept_epoch: int
    promotion: Decision | None = None  # --promote-if-better: the comparison and whether `stable` moved


def run_training(options: TrainOptions, progress: bool = True) -> RunResult | None:
    """Train as `options` says and write the next version; raises InputError or TrainingFailed.

    Everything that can be wrong with the input is checked before the first write, so a failed run leaves
    no version directory. Under torchrun every rank trains and rank 0 alone writes, once all ranks have
    finished; the other ranks return None.
    """
    dataset = load_dataset(options.data, options.arch, options.label_column, table_settings(options, progress))
    if progress and dataset.task_reason:
        print(f"task: {dataset.task} ({dataset.task_reason}; --task sets it)", file=sys.stderr)
    if options.loss_function != "mse" and dataset.task != "regression":
        raise InputError(f"--loss {options.loss_function} applies only to regression; this is {dataset.task}")
    source = data_source(options.data, dataset)
    config = architecture(options, dataset)
    # Before training: an unwritable or full repository is found now, not after the last epoch.
    check_repository(options.repository, checkpoint_bytes(config))
    with process_group() as world, pinned_numerics():
        if world.size != options.world_size:
            raise TrainingFailed(f"the process group has {world.size} ranks, WORLD_SIZE said {options.world_size}")
        # One seed drives initialization and dropout (global RNG); a separate generator seeded the same
        # way drives the split (the same on every rank); DistributedSampler shuffles each epoch from it too.
        torch.manual_seed(options.seed)
        generator = torch.Generator().manual_seed(options.seed)
        split = split_dataset(dataset, options.val_fraction, generator)
        check_rows_per_rank(options, len(split.train))
        preprocessing = fit_preprocessing(dataset, split, options.fill_value)
        objective = Objective.for_split(split, options.loss_function)
        model = build_model(config)
        load_standardization(model, split.train.features)
        if options.sync_bn:
            convert_to_sync_batchnorm(model)
        if world.rank > 0:
            # Initialization above is the same on every rank (and DDP broadcasts rank 0's anyway); dropout
            # masks must not be: with one seed everywhere, row i of every rank's batch got the same mask.
            # Rank 0 keeps the one-process stream.
            torch.manual_seed(rank_seed(options.seed, world.rank))
        model.to(world.device)
        split = split.to(world.device)
        optimizer = build_optimizer(model, options.optimizer, options.lr, options.momentum, options.weight_decay)
        selection = Selection(options.keep, options.early_stopping)
        fitted = fit(
            model,
            optimizer,
            split,
            options.epochs,
            options.batch_size,
            options.seed,
            world,
            progress,
            selection,
            objective,
        )
        world.all_finished()
        if not world.writes:
            return None
        written = plain_model(config, model)  # inside: building a model draws from the (forked) global RNG
        decision = None
        if options.promote_if_better is not None:  # the baseline evaluated on this run's validation split
            decision = judge(options.repository / options.name, options.promote_if_better, fitted.kept, split.val)
    record = training_record(options, source, split) | {"distributed": distributed_record(options, world)}
    record |= {"kept_epoch": fitted.kept_epoch, "epochs_run": len(fitted.history)}
    spec = InputSpec(dataset.input_shape, "float32", dataset.feature_names, preprocessing)
    manifest = build_manifest(options, config, dataset, record, fitted, spec, objective)
    figure = curves_png({"": manifest.epochs}, curves_title(manifest))
    try:
        if decision is not None:  # before the new version exists: a server must not give it unversioned traffic
            hold_stable(options.repository / options.name, decision)
        version_dir = save_checkpoint(options.repository, written, manifest, {CURVES_FILE: figure})
        if decision is not None:
            decision = settle(version_dir, decision)
    except (CheckpointError, OSError) as exc:
        raise TrainingFailed(f"could not write the checkpoint to {options.repository}: {exc}") from exc
    # save_checkpoint fills in version, sha256 and time; return what a server will read.
    return RunResult(version_dir, read_manifest(version_dir), fitted.history, fitted.kept_epoch, decision)


def rank_seed(seed: int, rank: int) -> int:
    """A distinct global-RNG seed per rank > 0 (dropout), derived from --seed; within [0, 2**63)."""
    return (seed + rank * 0x9E3779B97F4A7C15) % 2**63


def check_rows_per_rank(options: TrainOptions, train_rows: int) -> None:
    # BatchNorm in training mode needs 2 rows; each rank holds ceil(train_rows / world_size) of them.
    per_rank = -(-train_rows // options.world_size)
    if options.norm == "batch" and per_rank < 2:
        raise InputError(f"{train_rows} training rows over {options.world_size} processes: fewer than 2 per rank")


def plain_model(config: ArchConfig, trained: nn.Module) -> nn.Module:
    """The architecture as `build_model` makes it (plain BatchNorm, CPU) holding `trained`'s state.

    SyncBatchNorm keeps BatchNorm's parameter and buffer names, so its state loads strictly into BatchNorm:
    the checkpoint is the same format whether or not training was distributed.
    """
    model = build_model(config)
    model.load_state_dict(trained.state_dict(), strict=True)
    return model


def distributed_record(options: TrainOptions, world: World) -> dict[str, Any]:
    return world.describe() | {
        "sync_bn": options.sync_bn,
        "batch_size": "global (all ranks together)",
        "rows_per_rank_per_step": options.batch_size // world.size,
    }


def architecture(options: TrainOptions, dataset: Dataset) -> ArchConfig:
    common = Common(norm=options.norm, dropout=options.dropout, bn_momentum=options.bn_momentum)
    config_type = ARCHITECTURES[options.arch].config_type
    outputs = 1 if dataset.task == "regression" else len(dataset.class_labels)
    return config_type.for_input(dataset.input_shape, outputs, options.hidden, common)


def table_settings(options: TrainOptions, progress: bool) -> TableSettings:
    csv = CsvOptions(
        delimiter=options.delimiter,
        decimal=options.decimal,
        thousands=options.thousands,
        drop_columns=options.drop_columns,
        categorical=options.categorical,
        missing_allowed=options.missing != "refuse",
        max_bytes=options.max_data_mb << 20,
        progress=progress,
    )
    return TableSettings(csv, options.missing, options.max_categories, options.task)


def fit_preprocessing(dataset: Dataset, split: Split, fill_value: float) -> Preprocessing | None:
    """A CSV's fills from the training split, written over the missing cells of both splits (in place)."""
    if dataset.preprocessing is None:
        return None
    return fill_missing(dataset.preprocessing, split.train.features, [split.val.features], fill_value)


def load_standardization(model: nn.Module, train_features: torch.Tensor) -> None:
    """Copy the training split's statistics into the model, so the server needs no preprocessing."""
    mean, std = standardization_stats(train_features)
    standardize = model.get_submodule("standardize")
    standardize.get_buffer("mean").copy_(mean)
    standardize.get_buffer("std").copy_(std)


def build_manifest(
    options: TrainOptions,
    config: ArchConfig,
    dataset: Dataset,
    record: dict[str, Any],
    fitted: FitResult,
    spec: InputSpec,
    objective: Objective,
) -> Manifest:
    kept = fitted.kept  # final_metrics describe the weights that were saved
    target = None
    if objective.task == "regression":
        target = TargetScale(dataset.label_column, objective.mean, objective.std)
    return Manifest(
        name=options.name,
        version=0,  # chosen by save_checkpoint
        architecture=config,
        input=spec,
        class_labels=dataset.class_labels,
        training=record,
        epochs=tuple(metrics.to_json() for metrics in fitted.history),
        final_metrics={key: value for key, value in kept.to_json().items() if key not in {"epoch", "seconds"}},
        artifacts={"curves": CURVES_FILE},
        task=objective.task,
        target=target,
    )


def training_record(options: TrainOptions, source: dict[str, str], split: Split) -> dict[str, Any]:
    """Every flag plus what is needed to reproduce or audit the run."""
    record = options.to_json()
    record.update(
        data_source=source,
        train_rows=len(split.train),
        val_rows=len(split.val),
        weight_decay_kind=WEIGHT_DECAY_KIND[options.optimizer],
        weight_decay_applies_to="weights with 2+ dims (Linear matrices, conv kernels); not biases or norms",
        loss=LOSS_DESCRIPTION[split.train.task, options.loss_function],
        task=split.train.task,
        standardization=ARCHITECTURES[options.arch].standardization,
        threads=TRAIN_THREADS,
        deterministic_algorithms=True,
    )
    return record


def data_source(data: str, dataset: Dataset) -> dict[str, str]:
    """Where the data came from; a CSV is identified by its resolved path and the sha256 of the bytes that
    were parsed (hashed as they were read: the file is never opened a second time)."""
    if data == "digits":
        return {"kind": "digits", "description": "sklearn.datasets.load_digits (1797 8x8 images)"}
    if data == "synthetic":
        return {"kind": "synthetic", "description": "3 Gaussian classes in 16 features, 480 rows, fixed seed 0"}
    return {"kind": "csv", "path": str(Path(data).resolve()), "sha256": dataset.sha256}
