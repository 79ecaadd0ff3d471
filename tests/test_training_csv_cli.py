"""The training CLI on CSVs: data flags, what the manifest records (preprocessing, task, target, metrics),
regression's summary, and inputs that used to hang or eat memory (a FIFO, /dev/zero) refused at once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from training_helpers import FAST, assert_one_line_error, manifest_json, run_module, train, tree, write_csv


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return tmp_path / "repo"


def _mixed(path: Path) -> Path:
    lines = ["size,color,kind"] + [
        f"{'' if i % 6 == 0 else i % 9},{('red', 'blue')[i % 2]},{'ab'[i % 2]}" for i in range(60)
    ]
    return write_csv(path, "\n".join(lines) + "\n")


def test_manifest_records_the_preprocessing_with_training_split_fills(repository: Path, tmp_path: Path) -> None:
    path = _mixed(tmp_path / "mixed.csv")
    assert train(repository, "--data", str(path), "--missing", "median") == 0
    manifest = manifest_json(repository / "mixed" / "1")
    spec = manifest["input"]
    assert spec["shape"] == [4]
    assert spec["feature_names"] == ["size", "size:missing", "color=blue", "color=red"]
    columns = spec["preprocessing"]["columns"]
    assert columns[1] == {"name": "color", "kind": "categorical", "indicator": False, "categories": ["blue", "red"]}
    assert columns[0]["indicator"] is True
    assert isinstance(columns[0]["fill"], float)
    assert manifest["task"] == "classification"
    assert "target" not in manifest
    training = manifest["training"]
    assert (training["missing"], training["categorical"], training["task"]) == ("median", [], "classification")


def test_regression_run_prints_r2_mae_rmse_and_records_the_target(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["x1,x2,price"] + [f"{i * 0.1:.1f},{(i % 7) * 1.5},{2.0 * i + 0.5}" for i in range(80)]
    path = write_csv(tmp_path / "house.csv", "\n".join(lines) + "\n")
    assert train(repository, "--data", str(path), "--task", "regression") == 0
    out = capsys.readouterr().out
    header = "epoch  train loss  train R^2  val loss  val R^2  val MAE  val RMSE  seconds"
    assert " ".join(out.splitlines()[0].split()) == " ".join(header.split())
    manifest = manifest_json(repository / "house" / "1")
    assert set(manifest["final_metrics"]) == {"train_loss", "train_r2", "val_loss", "val_r2", "val_mae", "val_rmse"}
    assert manifest["target"]["name"] == "price"
    assert manifest["target"]["std"] > 0
    assert manifest["training"]["loss"].startswith("mse of the standardized target")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--drop-columns", "a"], "--drop-columns applies only to CSV data, not --data synthetic"),
        (["--task", "regression"], "--task regression applies only to CSV data, not --data synthetic"),
        (
            ["--missing", "mean", "--data", "x.csv", "--fill-value", "1"],
            "--fill-value applies only to --missing constant",
        ),
        (["--data", "x.csv", "--delimiter", "ab"], "--delimiter must be one character (or 'tab')"),
        (["--data", "x.csv", "--decimal", ";"], "--decimal must be one of '.', ','"),
        (["--data", "x.csv", "--max-categories", "5000"], "--max-categories must be in [1, 1000], got 5000"),
    ],
)
def test_bad_data_flags_exit_2_with_one_line(
    repository: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert train(repository, *args) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert tree(repository) == set()


@pytest.mark.slow
@pytest.mark.parametrize("source", ["fifo", "/dev/zero"])
def test_fifo_and_endless_device_exit_2_at_once(tmp_path: Path, source: str) -> None:
    data = source
    if source == "fifo":
        data = str(tmp_path / "pipe.csv")
        os.mkfifo(data)
    repo = tmp_path / "repo"
    started = time.monotonic()
    result = run_module(*FAST, "--data", data, "--repository", str(repo), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, f"CSV {data} is not a regular file (a FIFO, device or socket)")
    assert time.monotonic() - started < 120  # a fresh interpreter importing torch; it used to never end
    assert tree(repo) == set()


def test_csv_over_the_size_bound_is_refused(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "big.csv", "a,label\n" + "1.0,x\n2.0,y\n" * 100_000)  # 1.2 MB
    assert train(repository, "--data", str(path), "--max-data-mb", "1") == 2
    assert_one_line_error(capsys.readouterr().err, "over the size bound of 1 MiB (--max-data-mb)")
    assert tree(repository) == set()
