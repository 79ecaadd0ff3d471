"""`--loss {mse,huber}` for regression: the Huber loss on the standardized target (delta 1.0), what the
manifest records, train R^2 computed from the squared error whatever the loss, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import assert_one_line_error, manifest_json, train, tree, write_csv

from training.loop import Objective


def _house(path: Path) -> Path:
    # A linear target with every 10th row far off: where MSE and Huber disagree.
    lines = ["x1,x2,price"] + [
        f"{i * 0.1:.1f},{(i % 7) * 1.5},{2.0 * i + 0.5 + (300.0 if i % 10 == 3 else 0.0)}" for i in range(80)
    ]
    return write_csv(path, "\n".join(lines) + "\n")


def test_huber_is_quadratic_within_delta_and_linear_beyond() -> None:
    objective = Objective("regression", mean=0.0, std=1.0, loss_function="huber")
    outputs = torch.zeros(3, 1)
    y = torch.tensor([0.5, -2.0, 3.0])
    # 0.5 * 0.5^2, 1.0 * (2.0 - 0.5), 1.0 * (3.0 - 0.5): all exact in float32.
    assert objective.loss(outputs, y, reduction="sum").item() == 0.125 + 1.5 + 2.5
    assert objective.loss(outputs, y).item() == 1.375
    assert objective.tally(outputs, y) == 0.25 + 4.0 + 9.0  # squared error, for train R^2
    scaled = Objective("regression", mean=1.0, std=2.0, loss_function="huber")
    assert scaled.loss(torch.zeros(1, 1), torch.tensor([5.0]), reduction="sum").item() == 1.5  # |(5 - 1) / 2| = 2


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_loss_flag_is_recorded_and_train_r2_is_one_minus_the_mse(tmp_path: Path, loss: str) -> None:
    repository = tmp_path / "repo"
    path = _house(tmp_path / "house.csv")
    assert train(repository, "--data", str(path), "--task", "regression", "--loss", loss) == 0
    manifest = manifest_json(repository / "house" / "1")
    training = manifest["training"]
    assert training["loss_function"] == loss
    expected = "huber (delta 1.0) of the standardized target" if loss == "huber" else "mse of the standardized"
    assert training["loss"].startswith(expected)
    for epoch in manifest["epochs"]:
        gap = abs(epoch["train_r2"] - (1.0 - epoch["train_loss"]))
        if loss == "mse":
            assert gap < 1e-5  # the same mean, summed in another order
        else:
            assert gap > 1e-3  # the Huber loss is not the squared error


def test_default_loss_is_mse(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    assert train(repository, "--data", str(_house(tmp_path / "house.csv")), "--task", "regression") == 0
    assert manifest_json(repository / "house" / "1")["training"]["loss_function"] == "mse"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "huber"], "--loss huber applies only to CSV data, not --data synthetic"),
        (["--loss", "l1"], "argument --loss: invalid choice: 'l1'"),
    ],
)
def test_huber_needs_csv_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    repository = tmp_path / "repo"
    assert train(repository, *args) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert tree(repository) == set()


def test_huber_on_a_classification_csv_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["a,b,kind"] + [f"{i},{i % 5},{'xy'[i % 2]}" for i in range(60)]
    path = write_csv(tmp_path / "kinds.csv", "\n".join(lines) + "\n")
    repository = tmp_path / "repo"
    assert train(repository, "--data", str(path), "--loss", "huber") == 2
    assert_one_line_error(capsys.readouterr().err, "--loss huber applies only to regression; this is classification")
    assert tree(repository) == set()
