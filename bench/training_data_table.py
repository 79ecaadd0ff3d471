"""The table of issue 25: CSVs as people have them, trained by the CLI and compared with scikit-learn on the
same split and the same encoding.

    python bench/training_data_table.py [--big-rows 200000] [--out DIR]

Writes five CSVs (iris with a text column; breast cancer with 5% blank cells; iris with ';' and decimal
commas; diabetes, a regression; a numeric 200,000 x 50 file), then per CSV in a fresh process: the load
(training.data.load_dataset: seconds and RSS added), the CLI run (`python -m training`, in-process: exit code,
seconds, the kept epoch's validation metric) and the baseline (LogisticRegression or Ridge on the same
training split, the same encoded and filled features, standardized with the training split's statistics).
Peak RSS is the child's ru_maxrss. One run each on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# name -> (extra CLI flags, epochs)
CASES: dict[str, tuple[list[str], int]] = {
    "iris_color": ([], 30),
    "cancer_blanks": (["--missing", "mean"], 30),
    "iris_semicolon": ([], 30),
    "diabetes": ([], 60),
    "big": (["--batch-size", "256"], 2),
}


def write_csvs(directory: Path, big_rows: int) -> None:
    import pandas as pd
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

    rng = np.random.default_rng(0)
    species = np.array(["setosa", "versicolor", "virginica"])
    iris = load_iris(as_frame=True).frame
    iris.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width", "target"]
    colored = iris.drop(columns="target")
    colored["color"] = rng.choice(["red", "green", "blue"], size=len(iris))
    colored["species"] = species[iris["target"]]
    colored.to_csv(directory / "iris_color.csv", index=False)
    plain = iris.drop(columns="target").assign(species=species[iris["target"]])
    plain.to_csv(directory / "iris_semicolon.csv", index=False, sep=";", decimal=",")
    cancer = load_breast_cancer(as_frame=True).frame
    features = cancer.drop(columns="target")
    blanked = features.mask(rng.random(features.shape) < 0.05)
    blanked["diagnosis"] = np.array(["malignant", "benign"])[cancer["target"]]
    blanked.to_csv(directory / "cancer_blanks.csv", index=False)
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(directory / "diabetes.csv", index=False)
    values = rng.standard_normal((big_rows, 50))  # (rows, 50)
    big = pd.DataFrame(values, columns=[f"x{i}" for i in range(50)])
    big["label"] = (values[:, 0] + values[:, 1] > 0).astype(int)
    big.to_csv(directory / "big.csv", index=False, float_format="%.6f")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def child(path: Path, flags: list[str], epochs: int) -> dict[str, Any]:
    from training.cli import build_parser, main
    from training.data import load_dataset
    from training.options import resolve_options
    from training.run import table_settings

    args = ["--data", str(path), "--hidden", "64", "--epochs", str(epochs), *flags]
    options = resolve_options(vars(build_parser().parse_args([*args, "--repository", "unused"])))
    before = _rss_mb()
    started = time.perf_counter()
    dataset = load_dataset(options.data, "mlp", None, table_settings(options, progress=False))
    load_s = time.perf_counter() - started
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    baseline = _baseline(dataset, options.val_fraction, options.seed)
    with tempfile.TemporaryDirectory() as repository:
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = main([*args, "--repository", repository])
        train_s = time.perf_counter() - started
        metrics = {}
        if code == 0:
            manifest = next(Path(repository).glob("*/1/manifest.json"))
            metrics = json.loads(manifest.read_text())["final_metrics"]
    return {
        "exit": code,
        "task": dataset.task,
        "rows": len(dataset),
        "inputs": dataset.input_shape[0],
        "load_s": load_s,
        "load_added_mb": load_peak - before,
        "train_s": train_s,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "metric": metrics.get("val_r2", metrics.get("val_accuracy")),
        "baseline": baseline,
    }


def _baseline(dataset: Any, val_fraction: float, seed: int) -> float:
    """LogisticRegression (accuracy) or Ridge (R^2) on the CLI's split and encoding."""
    import torch
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    from training.data import split_dataset
    from training.run import fit_preprocessing

    split = split_dataset(dataset, val_fraction, torch.Generator().manual_seed(seed))
    fit_preprocessing(dataset, split, 0.0)
    scaler = StandardScaler().fit(split.train.features.numpy())
    train_x, val_x = scaler.transform(split.train.features.numpy()), scaler.transform(split.val.features.numpy())
    model = Ridge() if dataset.task == "regression" else LogisticRegression(max_iter=2000)
    model.fit(train_x, split.train.labels.numpy())
    return float(model.score(val_x, split.val.labels.numpy()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-rows", type=int, default=200_000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        flags, epochs = CASES[arguments.child.stem]
        print(json.dumps(child(arguments.child, flags, epochs)))
        return
    with tempfile.TemporaryDirectory() as directory:
        write_csvs(Path(directory), arguments.big_rows)
        print("| CSV | task | rows x inputs | exit | val metric | sklearn baseline | load s | load adds MB | "
              "train s (CLI, incl. its load) | peak RSS MB | epochs |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, (_, epochs) in CASES.items():
            command = [sys.executable, __file__, "--child", str(Path(directory) / f"{name}.csv")]
            result = json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout)
            kind = "R^2" if result["task"] == "regression" else "accuracy"
            print(
                f"| {name} | {result['task']} | {result['rows']} x {result['inputs']} | {result['exit']} | "
                f"{kind} {result['metric']:.4f} | {result['baseline']:.4f} | {result['load_s']:.2f} | "
                f"{result['load_added_mb']:.0f} | {result['train_s']:.1f} | {result['peak_mb']:.0f} | {epochs} |"
            )


if __name__ == "__main__":
    main()
