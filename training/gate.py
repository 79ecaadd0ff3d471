"""`--promote-if-better METRIC`: the training-time promotion gate.

The new version is always published (loaded, self-tested and addressable by number by a server); it gets
unversioned traffic only if it beats the baseline on the same validation split this run used. Baseline: the
version labelled `stable` in labels.json, else the highest version (what a server without labels.json
serves). Order of writes, so that a polling server never routes unversioned traffic to a worse version:
1. `hold_stable`: labels.json gets `stable` = baseline if it had no `stable` (first use of the gate);
2. the checkpoint is published;
3. `promote`: `stable` = the new version, only if it is better (or there was no baseline).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from models.checkpoint import CheckpointError, load_checkpoint, read_manifest
from models.labels import STABLE, LabelsError, read_labels, set_label
from models.versions import parse_version
from training.data import Dataset
from training.errors import InputError
from training.loop import EpochMetrics, evaluate

# metric -> True when higher is better; both come from training.loop.evaluate on the validation split.
GATE_METRICS = {"val_accuracy": True, "val_loss": False}


@dataclass(frozen=True)
class Decision:
    metric: str
    candidate: float
    baseline_version: int | None  # None: the model had no version yet
    baseline: float | None  # None: no baseline, or it could not be evaluated on this data (reason says why)
    promote: bool
    reason: str
    version: int | None = None  # the new version, once published

    def summary(self) -> str:
        moved = f"labelled {STABLE}" if self.promote else f"published, {STABLE} not moved (serves by number only)"
        verdict = f"version {self.version} {moved}"
        return f"{verdict}: {self.reason}"


def judge(model_dir: Path, metric: str, kept: EpochMetrics, val: Dataset) -> Decision:
    """Compare the new weights' `metric` (from training) with the baseline's on the same split `val`."""
    candidate = float(getattr(kept, metric))
    try:
        baseline_version = _baseline_version(model_dir)
    except LabelsError as exc:  # a broken labels.json: nothing is published until it is fixed
        raise InputError(f"model directory {model_dir}: {exc}") from None
    if baseline_version is None:
        return Decision(metric, candidate, None, None, True, "no earlier version to compare with")
    baseline_dir = model_dir / str(baseline_version)
    try:
        manifest = read_manifest(baseline_dir)
        if manifest.input.shape != val.input_shape or manifest.class_labels != val.class_labels:
            reason = f"version {baseline_version} has another input or other classes: not comparable"
            return Decision(metric, candidate, baseline_version, None, False, reason)
        model, _ = load_checkpoint(baseline_dir)
    except CheckpointError as exc:
        reason = f"version {baseline_version} cannot be evaluated ({exc})"
        return Decision(metric, candidate, baseline_version, None, False, reason)
    loss, accuracy = evaluate(model.to(val.features.device), val)
    baseline = {"val_loss": loss, "val_accuracy": accuracy}[metric]
    better = candidate > baseline if GATE_METRICS[metric] else candidate < baseline
    relation = "better than" if better else "not better than"
    reason = f"{metric} {candidate:.4f} {relation} version {baseline_version}'s {baseline:.4f} on this validation split"
    return Decision(metric, candidate, baseline_version, baseline, better, reason)


def hold_stable(model_dir: Path, decision: Decision) -> None:
    """Pin `stable` to the baseline before the new version appears, when labels.json did not name one."""
    if decision.baseline_version is None or STABLE in (read_labels(model_dir) or {}):
        return
    set_label(model_dir, STABLE, decision.baseline_version)


def settle(version_dir: Path, decision: Decision) -> Decision:
    """After publishing: label the new version `stable` if the decision says so; the decision with it."""
    version = parse_version(version_dir.name)
    assert version is not None  # save_checkpoint names version directories so
    if decision.promote:
        set_label(version_dir.parent, STABLE, version)
    return dataclasses.replace(decision, version=version)


def _baseline_version(model_dir: Path) -> int | None:
    stable = (read_labels(model_dir) or {}).get(STABLE) if model_dir.is_dir() else None
    if stable is not None and (model_dir / str(stable)).is_dir():
        return stable
    numbers = [parse_version(entry.name) for entry in model_dir.iterdir()] if model_dir.is_dir() else []
    versions = [number for number in numbers if number is not None and (model_dir / str(number)).is_dir()]
    return max(versions, default=None)
