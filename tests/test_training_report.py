"""curves.png in every new version, and `python -m training.report` (table and figure, one or two versions)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from training_helpers import manifest_json, train, tree

from training.report import main, summary


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    assert train(root, "--name", "syn", "--epochs", "3") == 0
    assert train(root, "--name", "syn", "--epochs", "2", "--norm", "layer") == 0
    return root


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.parametrize("version", [1, 2])
def test_every_version_holds_curves_png_named_by_its_manifest(repository: Path, version: int) -> None:
    version_dir = repository / "syn" / str(version)
    assert manifest_json(version_dir)["artifacts"] == {"curves": "curves.png"}
    assert png_size(version_dir / "curves.png") == (1000, 400)  # 10 x 4 inches at 100 dpi: two panels


def test_report_prints_the_table_and_writes_the_figure_outside_the_version(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree(repository)
    out = tmp_path / "one.png"
    assert main([str(repository / "syn" / "1"), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "syn v1: mlp 16, norm batch, dropout 0.2, sgd lr 0.05, weight decay 0.0005"
    assert "\n".join(lines[1:7]) == summary(manifest_json(repository / "syn" / "1")["epochs"])
    assert lines[-1] == f"figure: {out}"
    assert png_size(out) == (1000, 400)
    assert tree(repository) == before  # published versions are never modified


def test_report_of_a_model_means_its_latest_version_and_two_are_compared(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([str(repository / "syn")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("syn v2: mlp 16, norm layer")
    assert lines[-1] == f"curves: {repository / 'syn' / '2' / 'curves.png'} (--out FILE.png|DIR to draw)"
    assert tree(tmp_path) == set()  # nothing written into the current directory unasked
    figures = tmp_path / "figures"
    figures.mkdir()
    assert main([str(repository / "syn" / "1"), str(repository / "syn" / "2"), "--out", str(figures)]) == 0
    text = capsys.readouterr().out
    assert text.count("final ") == 2
    assert text.endswith(f"figure: {figures / 'syn-v1-vs-syn-v2-curves.png'}\n")
    assert png_size(figures / "syn-v1-vs-syn-v2-curves.png") == (1000, 400)


def test_report_out_names_a_new_directory_with_a_trailing_slash(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(repository / "syn" / "1"), "--out", f"{tmp_path / 'new'}/"]) == 0
    assert capsys.readouterr().out.endswith(f"figure: {tmp_path / 'new' / 'syn-v1-curves.png'}\n")
    assert png_size(tmp_path / "new" / "syn-v1-curves.png") == (1000, 400)


def test_report_out_in_a_missing_directory_is_one_line_before_any_table(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(repository / "syn" / "1"), "--out", str(tmp_path / "absent" / "x.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    out = tmp_path / "absent" / "x.png"
    assert captured.err == f"python -m training.report: error: --out {out}: no such directory {out.parent}\n"


def test_report_of_nothing_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "is neither a version directory (no manifest.json) nor a model with versions" in err
