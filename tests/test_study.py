"""`python -m training.study --quick`: the bounded study (tiny grid) writes its report, figures and runs.

The quick grid's accuracies are not the study's (2 epochs of a 16-wide MLP), so only what holds at any
scale is asserted: LayerNorm's outputs have one row norm whatever the input norm, and the service's executor
gives no row a batch-dependent bit while train-mode BatchNorm changes labels.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from models.checkpoint import read_manifest
from models.scan import list_versions
from training.study import DROPOUTS, NORMS, QUICK, WEIGHT_DECAYS, main
from training.study_regression import REGRESSION_GRID


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("study")
    assert main(["--out", str(out), "--quick"]) == 0
    return out, (out / "report.md").read_text()


def test_report_has_every_section_table_figure_and_a_verdict_per_claim(study: tuple[Path, str]) -> None:
    out, report = study
    for heading in ("## Verdicts", "## Norm choice", "## Regularization", "## Minibatch dependence", "## Claims"):
        assert heading in report
    for figure in ("norms.png", "regularization.png"):
        assert f"]({figure})" in report
        with Image.open(out / figure) as image:
            assert image.format == "PNG"
    verdicts = re.findall(r"- Verdict: \*\*(agrees|partly|disagrees)\*\*\.", report)
    assert len(verdicts) == 6
    assert report.count("- Notes predict: ") == report.count("- Measured: ") == 6


def test_every_grid_point_is_an_ordinary_checkpoint_with_curves(study: tuple[Path, str]) -> None:
    out, _ = study
    names = [f"{task}-{norm}" for task in ("digits", "norm-task") for norm in NORMS]
    names += [f"reg-p{p}-wd{decay}" for decay in WEIGHT_DECAYS for p in DROPOUTS]
    for name in names:
        assert list_versions(out / "runs", name) == [1]
        assert (out / "runs" / name / "1" / "curves.png").is_file()


def test_layernorm_row_norms_are_flat_and_the_executor_has_no_batch_dependence(study: tuple[Path, str]) -> None:
    _, report = study
    spreads = re.search(r"first norm layer on the norm task: layer ([0-9.]+), batch ([0-9.]+)", report)
    assert spreads is not None
    assert float(spreads[1]) < 0.5 * float(spreads[2])
    minibatch = re.search(
        r"train mode: (\d+) of (\d+) rows change label .* executor: (\d+) change label, (\d+)", report
    )
    assert minibatch is not None
    assert int(minibatch[2]) == 320  # digits' 359 validation rows, cut to a multiple of the largest batch (64)
    assert int(minibatch[1]) > 0
    assert (int(minibatch[3]), int(minibatch[4])) == (0, 0)
    assert QUICK.batch_sizes == (2, 8, 64)


def test_regression_section_has_a_row_per_run_and_the_ridge_baseline(study: tuple[Path, str]) -> None:
    out, report = study
    assert "## Regression: norm and loss on diabetes" in report
    assert "| model | norm | loss | train R^2 | val R^2 | val MAE | val RMSE |" in report
    rows = re.findall(
        r"^\| MLP \| (\w+) \| (\w+) \| ([-0-9.]+) \| ([-0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|$", report, re.M
    )
    assert [(norm, loss) for norm, loss, *_ in rows] == list(REGRESSION_GRID)
    for *_, mae, rmse in rows:
        assert 0 < float(mae) <= float(rmse)  # RMSE >= MAE for any errors
    ridge = re.search(r"^\| Ridge \(alpha 1.0, baseline\) \| \| squared \| ([-0-9.]+) \| ([-0-9.]+) \|", report, re.M)
    assert ridge is not None
    assert 0.3 < float(ridge[2]) < 0.7  # a linear model explains about half of diabetes' variance
    assert (out / "data" / "diabetes.csv").read_text().splitlines()[0] == "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,target"
    for norm, loss in REGRESSION_GRID:
        manifest = read_manifest(out / "runs" / f"diabetes-{norm}-{loss}" / "1")
        assert (manifest.task, manifest.training["loss_function"]) == ("regression", loss)
        assert manifest.target is not None
        assert manifest.target.name == "target"
