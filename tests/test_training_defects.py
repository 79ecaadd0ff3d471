"""Training mistakes a careless or hostile user can make, each refused or handled with one clear line:
continuous label columns, respelled numeric labels, Unicode look-alike labels, a huge header-only CSV, a
full disk while writing the weights, staging directories of killed jobs; and --keep / --early-stopping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import torch
from training_helpers import ROOT, assert_one_line_error, manifest_json, train, weights, write_csv

from models import list_versions
from models.staging import staging_prefix
from training.data import encode_labels, load_dataset
from training.errors import InputError

# lr 0.5 on the synthetic set: the validation loss is lowest at epoch 2 of 10, then bounces (seed 0).
BOUNCING = ["--hidden", "16", "--lr", "0.5", "--epochs", "10"]


def regression_csv(path: Path, rows: int, target: str) -> Path:
    """Two features and a last column `target` given per row by the format string (i = row index)."""
    lines = ["x1,x2,target"] + [f"{i * 0.1},{(i % 7) * 1.5},{target.format(i=i)}" for i in range(rows)]
    return write_csv(path, "\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("{i}.5", "'0.5' is not a whole number"),
        ("{i}", "60 distinct numbers in 60 rows"),
    ],
)
def test_continuous_label_column_trains_a_regression_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, why: str
) -> None:
    path = regression_csv(tmp_path / "house.csv", 60, target)
    assert train(tmp_path / "repo", "--data", str(path)) == 0
    err = capsys.readouterr().err
    assert f"task: regression (label column 'target': {why}; --task sets it)" in err
    manifest = manifest_json(tmp_path / "repo" / "house" / "1")
    assert (manifest["task"], manifest["class_labels"], manifest["architecture"]["num_classes"]) == (
        "regression",
        [],
        1,
    )
    # Asked for by name, a classifier trains anyway (one class per value).
    assert train(tmp_path / "repo", "--data", str(path), "--task", "classification", "--epochs", "1") == 0
    assert len(manifest_json(tmp_path / "repo" / "house" / "2")["class_labels"]) == 60


def test_unnamed_integer_label_column_with_few_classes_trains(tmp_path: Path) -> None:
    lines = ["x1,x2,grade"] + [f"{i * 0.1},{(i % 3) * 2.0},{i % 3 + 1}" for i in range(60)]
    path = write_csv(tmp_path / "grades.csv", "\n".join(lines) + "\n")
    assert train(tmp_path / "repo", "--data", str(path)) == 0
    assert manifest_json(tmp_path / "repo" / "grades" / "1")["class_labels"] == ["1", "2", "3"]


def test_one_number_spelled_two_ways_is_refused() -> None:
    with pytest.raises(InputError) as refused:
        encode_labels(["1", "2", "1.0", "01", "2"], "CSV d.csv label column 'y'")
    assert str(refused.value) == (
        "CSV d.csv label column 'y': labels '01' and '1' and '1.0' are the same number written differently; "
        "write each class one way (as text they would be separate classes, as numbers one)"
    )


def test_labels_differing_only_in_unicode_normalization_are_one_class() -> None:
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert nfc != nfd
    assert unicodedata.normalize("NFC", nfd) == nfc
    indices, classes = encode_labels([nfd, "tea", nfc, "tea"], "t")
    assert classes == (nfc, "tea")
    assert indices.tolist() == [0, 1, 0, 1]


def test_class_order_is_the_same_in_every_process_whatever_the_hash_seed() -> None:
    script = (
        "from training.data import encode_labels\n"
        "labels = ['10', '2', '1', '2.5', '-3'] * 3\n"
        "print(encode_labels(labels, 't')[1], encode_labels(['b', 'é', 'a', 'B', 'e\\u0301'], 't')[1])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert outputs == {"('-3', '1', '2', '2.5', '10') ('B', 'a', 'b', 'é')\n"}


def test_header_only_csv_with_100000_columns_says_no_data_rows(tmp_path: Path) -> None:
    """The duplicate-name check is linear now (it was quadratic: 103 s for this header)."""
    path = write_csv(tmp_path / "wide.csv", ",".join(f"c{i}" for i in range(100_000)) + "\n")
    with pytest.raises(InputError, match=r"has a header but no data rows$"):
        load_dataset(str(path), "mlp")


def test_full_disk_while_writing_the_weights_is_one_line_exit_1(tmp_path: Path) -> None:
    """A file-size limit makes the weights write fail like a full disk does (EFBIG instead of ENOSPC)."""
    limited = (
        "import resource, runpy, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing the process\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))\n"
        "sys.argv = ['training', *sys.argv[1:]]\n"
        "runpy.run_module('training', run_name='__main__')\n"
    )
    repo = tmp_path / "repo"
    flags = ["--data", "synthetic", "--hidden", "1024,1024", "--epochs", "1", "--repository", str(repo)]
    result = subprocess.run(
        [sys.executable, "-c", limited, *flags],
        cwd=ROOT,
        env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last_line = result.stderr.splitlines()[-1]  # after the progress bars of the epoch
    assert last_line == (
        f"invariant-train: error: could not write the checkpoint to {repo}: could not write model.safetensors: "
        "Error while serializing: I/O error: File too large (os error 27)"
    )
    assert not repo.exists()  # no version, no staging directory, no empty model directory (issue 28)


def test_staging_directory_of_a_dead_writer_is_removed_by_the_next_write(tmp_path: Path) -> None:
    model_dir = tmp_path / "synthetic"
    model_dir.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "from models.staging import staging_prefix; print(staging_prefix())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert dead.count("-") == 5  # .staging-<pid>-<start>-<pidns>-<boot>-
    (model_dir / f"{dead}abandoned").mkdir()
    (model_dir / f"{dead}abandoned" / "model.safetensors").write_bytes(b"\0" * 1000)
    (model_dir / f"{staging_prefix()}running").mkdir()  # this process: still alive, kept
    (model_dir / ".staging-unknown-writer").mkdir()  # nothing proves it abandoned: kept
    assert train(tmp_path) == 0
    assert sorted(entry.name for entry in model_dir.iterdir()) == [
        f"{staging_prefix()}running",
        ".staging-unknown-writer",
        "1",
    ]


def test_keep_best_saves_the_lowest_validation_loss_epoch(tmp_path: Path) -> None:
    assert train(tmp_path, *BOUNCING, "--keep", "best") == 0
    best = manifest_json(tmp_path / "synthetic" / "1")
    losses = [epoch["val_loss"] for epoch in best["epochs"]]
    kept = losses.index(min(losses)) + 1
    assert (len(losses), best["training"]["keep"], best["training"]["kept_epoch"]) == (10, "best", kept)
    assert kept < 10  # the scenario this test needs: a later epoch was worse
    assert best["final_metrics"] == {
        key: best["epochs"][kept - 1][key] for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    }
    # The saved weights are exactly those of epoch `kept`: a run that stops there writes the same bits.
    assert train(tmp_path, *BOUNCING, "--epochs", str(kept)) == 0
    stopped = manifest_json(tmp_path / "synthetic" / "2")
    assert (stopped["training"]["keep"], stopped["training"]["kept_epoch"]) == ("last", kept)
    assert stopped["weights_sha256"] == best["weights_sha256"]
    first, second = weights(tmp_path / "synthetic" / "1"), weights(tmp_path / "synthetic" / "2")
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path: Path) -> None:
    assert train(tmp_path, *BOUNCING, "--early-stopping", "3", "--keep", "best") == 0
    manifest = manifest_json(tmp_path / "synthetic" / "1")
    losses = [epoch["val_loss"] for epoch in manifest["epochs"]]
    best = losses.index(min(losses)) + 1
    assert len(losses) == best + 3 < 10
    assert manifest["training"]["early_stopping"] == 3
    assert (manifest["training"]["kept_epoch"], manifest["training"]["epochs_run"]) == (best, best + 3)
    assert list_versions(tmp_path, "synthetic") == [1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--early-stopping", "0"], "--early-stopping must be >= 1, got 0"),
        (["--keep", "first"], "argument --keep: invalid choice: 'first' (choose from 'best', 'last')"),
    ],
)
def test_bad_keep_flags_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert train(tmp_path, *args) == 2
    assert_one_line_error(capsys.readouterr().err, message)


def test_manifest_keep_fields_are_json(tmp_path: Path) -> None:
    assert train(tmp_path) == 0
    record = json.loads((tmp_path / "synthetic" / "1" / "manifest.json").read_text())["training"]
    assert (record["keep"], record["kept_epoch"], record["epochs_run"], record["early_stopping"]) == (
        "last",
        2,
        2,
        None,
    )


def test_help_says_what_the_updates_are_without_citing_the_notes() -> None:
    from training.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "notes" not in text
    assert "eq." not in text
    assert "running_mean <- (1 - M) running_mean + M batch_mean" in text
    assert "sgd: coupled (lambda*W added to the gradient), adamw: decoupled (W shrunk by lr*lambda each step)" in text
    assert "W <- (1 - lr*lambda) W - lr*grad" in text  # the epilog's SGD step
    assert "--keep {best,last}" in text
    assert "--early-stopping PATIENCE" in text
