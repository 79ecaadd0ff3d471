"""`python -m training` end to end: versions, manifest, BatchNorm statistics, determinism, bad input.

Must-show items of issue 2: (2) versions 1 then 2 and val accuracy >= 0.95 on digits for mlp and cnn,
(3) BatchNorm running statistics in the safetensors file, (4) same seed -> same weights sha256,
(5) every bad input -> exit code 2, one line on stderr, no new version directory.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from training_helpers import (
    FAST,
    assert_one_line_error,
    good_csv_text,
    manifest_json,
    run_module,
    train,
    tree,
    weights,
    write_csv,
)

from models.architectures import batchnorm_layers, build_model
from models.checkpoint import load_checkpoint
from models.config import config_from_dict
from models.scan import list_versions
from training.cli import main
from training.data import load_dataset, split_dataset, standardization_stats
from training.loop import rank_batches

# The command; the mlp test adds `--arch mlp --hidden 256,256`, the cnn test `--arch cnn` (channels
# default to 32,64).
DIGITS = ["--data", "digits", "--norm", "batch", "--dropout", "0.2", "--weight-decay", "5e-4"]
DIGITS += ["--epochs", "20", "--name", "digits"]


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return tmp_path / "repo"


def test_module_writes_version_1_then_2_and_never_touches_1(repository: Path) -> None:
    first = run_module(*FAST, "--name", "syn", "--repository", str(repository))
    assert first.returncode == 0, first.stderr
    v1 = repository / "syn" / "1"
    assert sorted(path.name for path in v1.iterdir()) == ["curves.png", "manifest.json", "model.safetensors"]
    header = ["epoch", "train", "loss", "train", "acc", "val", "loss", "val", "acc", "seconds"]
    assert first.stdout.splitlines()[0].split() == header
    assert first.stdout.splitlines()[-1] == f"checkpoint: {v1}"
    assert "epoch 2/2" in first.stderr  # the progress bars, with the live loss
    assert "loss=" in first.stderr
    before = (v1 / "model.safetensors").read_bytes(), (v1 / "manifest.json").read_bytes()

    # The second run in-process (a fresh interpreter costs seconds; the entry point is the same).
    assert train(repository, "--name", "syn", "--seed", "1") == 0
    assert list_versions(repository, "syn") == [1, 2]
    assert before == ((v1 / "model.safetensors").read_bytes(), (v1 / "manifest.json").read_bytes())
    assert manifest_json(repository / "syn" / "2")["version"] == 2


def test_manifest_records_architecture_input_labels_training_and_metrics(repository: Path) -> None:
    args = ["--name", "m", "--norm", "layer", "--dropout", "0.1", "--optimizer", "adamw", "--epochs", "3"]
    assert train(repository, *args) == 0
    manifest = manifest_json(repository / "m" / "1")
    assert manifest["architecture"] == {
        "in_features": 16,
        "num_classes": 3,
        "hidden": [16],
        "norm": "layer",
        "dropout": 0.1,
        "bn_momentum": 0.1,
        "track_running_stats": True,
        "arch": "mlp",
    }
    assert manifest["input"] == {
        "shape": [16],
        "dtype": "float32",
        "feature_names": [f"x{index}" for index in range(16)],
    }
    assert manifest["class_labels"] == ["0", "1", "2"]
    training = manifest["training"]
    assert training["optimizer"] == "adamw"
    assert training["lr"] == 0.003  # the adamw default
    assert training["weight_decay"] == 0.0005
    assert training["weight_decay_kind"].startswith("decoupled")
    assert training["seed"] == 0
    assert training["data_source"]["kind"] == "synthetic"
    assert (training["train_rows"], training["val_rows"]) == (384, 96)
    assert [epoch["epoch"] for epoch in manifest["epochs"]] == [1, 2, 3]
    keys = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"}
    assert all(set(epoch) == keys for epoch in manifest["epochs"])
    last = manifest["epochs"][-1]
    assert manifest["final_metrics"] == {key: last[key] for key in keys - {"epoch", "seconds"}}
    model, loaded = load_checkpoint(repository / "m" / "1")
    assert loaded.weights_sha256 == manifest["weights_sha256"]
    assert isinstance(model, torch.nn.Module)


def test_csv_run_records_header_names_string_labels_and_file_hash(repository: Path, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "pets.csv", good_csv_text(rows=40))
    assert train(repository, "--data", str(path), "--label-column", "label") == 0
    manifest = manifest_json(repository / "pets" / "1")  # --name defaults to the file's stem
    assert manifest["input"]["feature_names"] == ["a", "b"]
    assert manifest["class_labels"] == ["cat", "dog"]
    source = manifest["training"]["data_source"]
    assert source["kind"] == "csv"
    assert source["path"] == str(path.resolve())
    assert len(source["sha256"]) == 64


def test_standardization_buffers_hold_the_training_split_statistics(repository: Path) -> None:
    assert train(repository, "--name", "s", "--seed", "5") == 0
    saved = weights(repository / "s" / "1")
    data = load_dataset("synthetic", "mlp")
    split = split_dataset(data, 0.2, torch.Generator().manual_seed(5))
    mean, std = standardization_stats(split.train.features)
    assert torch.equal(saved["standardize.mean"], mean)
    assert torch.equal(saved["standardize.std"], std)
    full_mean, _ = standardization_stats(data.features)
    assert not torch.equal(saved["standardize.mean"], full_mean)  # fitted on the training split only


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_safetensors_holds_updated_running_statistics_of_every_batchnorm(repository: Path, arch: str) -> None:
    assert train(repository, "--arch", "cnn" if arch == "cnn" else "mlp", "--hidden", "8,8", "--name", arch) == 0
    version = repository / arch / "1"
    saved = weights(version)
    layers = batchnorm_layers(build_model(config_from_dict(manifest_json(version)["architecture"])))
    assert len(layers) == 2
    # 384 training rows in batches of 64: 6 steps per epoch, 2 epochs.
    steps = 2 * len(rank_batches(384, 64, seed=0, epoch=1))
    assert steps == 12
    for name in layers:
        assert saved[f"{name}.num_batches_tracked"].item() == steps
        assert (saved[f"{name}.running_mean"] != 0).all(), name  # initial value 0
        assert (saved[f"{name}.running_var"] != 1).all(), name  # initial value 1
        assert saved[f"{name}.running_var"].min() > 0


def test_same_seed_gives_identical_weights_and_another_seed_does_not(repository: Path) -> None:
    for seed in ("3", "3", "4"):
        assert train(repository, "--name", "d", "--seed", seed, "--dropout", "0.3") == 0
    sha = [manifest_json(repository / "d" / str(version))["weights_sha256"] for version in (1, 2, 3)]
    assert sha[0] == sha[1]
    assert sha[2] != sha[0]
    assert (repository / "d" / "1" / "model.safetensors").read_bytes() == (
        repository / "d" / "2" / "model.safetensors"
    ).read_bytes()


def test_training_restores_the_callers_thread_count_and_determinism_flag(repository: Path) -> None:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng = torch.get_rng_state()
    assert train(repository) == 0
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)
    assert torch.equal(torch.get_rng_state(), rng)


def test_help_documents_weight_decay_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "sgd: coupled" in text
    assert "W <- (1 - lr*lambda) W - lr*grad" in text
    assert "adamw: decoupled" in text


def test_divergence_exits_1_with_one_line_and_writes_nothing(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(repository, "--lr", "1e6", "--epochs", "3") == 1
    assert_one_line_error(capsys.readouterr().err.splitlines()[-1] + "\n", "training diverged")
    assert tree(repository) == set()


# --- bad input: exit 2, one line, no new version --------------------------------------------------------

BAD_FLAGS: list[tuple[list[str], str]] = [
    (["--dropout", "1.0"], "--dropout must be in [0, 1), got 1"),
    (["--dropout", "-0.1"], "--dropout must be in [0, 1), got -0.1"),
    (["--dropout", "nan"], "--dropout must be a finite number"),
    (["--weight-decay", "-0.0001"], "--weight-decay must be >= 0, got -0.0001"),
    (["--weight-decay=-1e-4"], "--weight-decay must be >= 0, got -0.0001"),
    # argparse reads "-1e-4" as an option (no exponent in its negative-number pattern); still one line.
    (["--weight-decay", "-1e-4"], "argument --weight-decay: expected one argument"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number"),
    (["--lr", "0"], "--lr must be > 0, got 0"),
    (["--lr", "-0.1"], "--lr must be > 0"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["--hidden", ""], "--hidden must be comma-separated positive integers"),
    (["--hidden", "256,abc"], "--hidden must be comma-separated positive integers such as 256,256, got '256,abc'"),
    (["--hidden", "256,,256"], "--hidden must be comma-separated positive integers"),
    (["--hidden", "0"], "--hidden widths must be between 1 and 16384, got '0'"),
    (["--val-fraction", "0"], "--val-fraction must be in (0, 1), got 0"),
    (["--val-fraction", "1"], "--val-fraction must be in (0, 1), got 1"),
    (["--batch-size", "1"], "--batch-size must be >= 2, got 1"),
    (["--norm", "none", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--momentum", "1"], "--momentum must be in [0, 1), got 1"),
    (["--optimizer", "adamw", "--momentum", "0.9"], "--momentum applies only to --optimizer sgd"),
    (["--bn-momentum", "0"], "--bn-momentum must be in (0, 1], got 0"),
    (["--norm", "layer", "--bn-momentum", "0.1"], "--bn-momentum applies only to --norm batch"),
    (["--seed", "-1"], "--seed must be in [0, 2**63 - 1], got -1"),
    (["--arch", "rnn"], "argument --arch: invalid choice: 'rnn'"),
    (["--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--name", "bad name"], "--name 'bad name' is not a valid model name"),
    (["--label-column", "y"], "--label-column applies only to CSV data, not --data synthetic"),
    (["--val-fraction", "0.001"], "synthetic has 480 rows: too few for a validation split"),
]


@pytest.mark.parametrize(("args", "message"), BAD_FLAGS, ids=[" ".join(args) for args, _ in BAD_FLAGS])
def test_bad_flag_exits_2_with_one_line_and_writes_nothing(
    repository: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert train(repository, *args) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, message)
    assert captured.out == ""
    assert tree(repository) == set()


BAD_CSV: list[tuple[str | None, list[str], str]] = [
    # (file text or None for no file, extra flags, message)
    (None, [], "does not exist"),
    ("", [], "is empty; expected a header row"),
    ("a,b,label\n", [], "has a header but no data rows"),
    ("a,b,label\n1,2,x\n3,4,y\n", ["--label-column", "kind"], "has no label column 'kind'"),
    ("a,b,label\n1,2,x\n3,zz,y\n", [], "column 'b': 1 not a number (line 3 'zz')"),
    ("a,b,label\n1,2,x\nNaN,4,y\n", [], "column 'a': 1 blank (line 3)"),
    ("a,label\n" + "1,x\n" * 10, [], "has a single class 'x'"),
    ("a,label\n1,x\n2,y\n", [], "has 2 rows: too few for a validation split"),
    ("a,b,label\n1,2,x\n3,4,y\n", ["--arch", "cnn"], "--arch cnn needs image-shaped data"),
]


@pytest.mark.parametrize(
    ("text", "args", "message"), BAD_CSV, ids=[message.split(":")[-1].strip() for _, _, message in BAD_CSV]
)
def test_bad_csv_exits_2_with_one_line_and_writes_nothing(
    repository: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str | None,
    args: list[str],
    message: str,
) -> None:
    path = tmp_path / "data.csv"
    if text is not None:
        write_csv(path, text)
    assert train(repository, "--data", str(path), *args) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert tree(repository) == set()


def test_bad_input_leaves_existing_versions_alone(repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(repository, "--name", "keep") == 0
    before = tree(repository)
    capsys.readouterr()
    assert train(repository, "--name", "keep", "--dropout", "1.5") == 2
    assert train(repository, "--name", "keep", "--data", str(repository / "none.csv")) == 2
    assert tree(repository) == before
    assert list_versions(repository, "keep") == [1]


def test_repository_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert train(blocker) == 2
    assert_one_line_error(capsys.readouterr().err, "exists and is not a directory")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dropout", "1"], "--dropout must be in [0, 1), got 1"),
        (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),  # argparse's own error, one line
        (["--data", "missing.csv"], "CSV missing.csv does not exist"),
        (["--weight-decay", "-1"], "--weight-decay must be >= 0, got -1"),
    ],
)
def test_module_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    repo = tmp_path / "repo"
    result = run_module(*FAST, "--repository", str(repo), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_error(result.stderr, message)
    assert tree(repo) == set()


# --- the digits commands (slow: real training, still part of `make test`) ------------------------


@pytest.mark.slow
def test_digits_mlp_twice_versions_1_and_2_accuracy_and_identical_weights(repository: Path) -> None:
    for _ in range(2):
        assert main([*DIGITS, "--arch", "mlp", "--hidden", "256,256", "--repository", str(repository)]) == 0
    assert list_versions(repository, "digits") == [1, 2]
    first, second = (manifest_json(repository / "digits" / str(version)) for version in (1, 2))
    assert first["final_metrics"]["val_accuracy"] >= 0.95
    assert first["weights_sha256"] == second["weights_sha256"]
    saved = weights(repository / "digits" / "1")
    steps = 20 * math.ceil(1438 / 64)  # 1438 training rows, the last batch of 30 rows kept
    assert saved["blocks.1.num_batches_tracked"].item() == steps


@pytest.mark.slow
def test_digits_cnn_reaches_95_percent(repository: Path) -> None:
    assert main([*DIGITS, "--arch", "cnn", "--repository", str(repository)]) == 0
    manifest = manifest_json(repository / "digits" / "1")
    assert manifest["final_metrics"]["val_accuracy"] >= 0.95
    assert manifest["architecture"]["channels"] == [32, 64]
    assert manifest["input"]["shape"] == [1, 8, 8]
