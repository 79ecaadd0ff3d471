"""What a client may know about one served model version: the one builder behind V2 metadata `parameters`
and the V1 model route (`GET /v1/models/{name}`), so both always say the same.

Sections: serving state (state, reason, checkpoint sha256), how this process runs it (environment,
C, self-test), and what the checkpoint's manifest says (architecture config, classes, features, training
summary). Add new keys here, in the section they belong to.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from models import Manifest, config_to_dict
from service.lifecycle.loader import ServedModel
from service.lifecycle.snapshot import NotServing, State


def model_parameters(found: ServedModel | NotServing) -> dict[str, Any]:
    """The metadata of one version, JSON-ready. A version that does not serve has its state and reason only
    (the repository index lists them all)."""
    if isinstance(found, NotServing):
        return {"version": str(found.version), "state": found.state.value, "reason": found.reason}
    return {
        "version": str(found.version),
        "state": State.READY.value,
        "reason": "",
        "checkpoint_sha256": found.sha256,
        **_execution(found),
        **_from_manifest(found.manifest),
    }


def _execution(served: ServedModel) -> dict[str, Any]:
    """How this process runs the version: numerics environment and fingerprint, executor, chunk rows C, the
    start-up self-test."""
    return {
        **served.environment,
        **served.execution,  # executor kind, device, dtype, C
        "chunk_rows": served.batcher.chunk_rows,
        "numerics_fingerprint": served.numerics.fingerprint,
        "numerics": served.numerics.parts,
        "self_test": {
            **dataclasses.asdict(served.self_test),
            "passed": served.self_test.passed,
            "summary": served.self_test.summary(),
        },
    }


def _from_manifest(manifest: Manifest) -> dict[str, Any]:
    return {
        # The whole config (arch, widths, norm, dropout, ...): a batch-norm model differs from a layer-norm one.
        "architecture": config_to_dict(manifest.architecture),
        "input_shape": list(manifest.input.shape),
        "class_labels": list(manifest.class_labels),
        "feature_names": list(manifest.input.feature_names),
        "created_at": manifest.created_at,
        "final_metrics": manifest.final_metrics,
        "training": training_summary(manifest),
    }


def training_summary(manifest: Manifest) -> dict[str, Any]:
    """How the served weights were obtained: epochs run, the epoch whose weights were kept (the last one for
    checkpoints written before `--keep` existed) and that epoch's validation figures."""
    record = manifest.training
    epochs_run = len(manifest.epochs)
    summary: dict[str, Any] = {
        "epochs_run": epochs_run,
        "kept_epoch": record.get("kept_epoch", epochs_run if epochs_run else None),
        "keep": record.get("keep", "last"),
        "val_accuracy": manifest.final_metrics.get("val_accuracy"),
        "val_loss": manifest.final_metrics.get("val_loss"),
    }
    for key in ("optimizer", "lr", "weight_decay", "batch_size", "seed", "early_stopping"):
        if key in record:
            summary[key] = record[key]
    source = record.get("data_source")
    if isinstance(source, dict) and "kind" in source:
        summary["data"] = source["kind"]
    return summary
