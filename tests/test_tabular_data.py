"""Training CSVs as people have them (training/csv_data.py, training/tabular.py, models/preprocess.py):
delimiters and decimal marks, NA spellings, text categories, missing values, every bad cell at once, the
regular-file rule and size bound, and the per-row transform a server applies giving training's bits."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from training_helpers import write_csv

from models.preprocess import ColumnSpec, PreprocessError, Preprocessing
from training.csv_data import CsvOptions, read_csv
from training.data import Split, TableSettings, choose_task, load_dataset, split_dataset
from training.errors import InputError
from training.tabular import fill_missing

LOOSE = TableSettings(CsvOptions(missing_allowed=True), missing="mean")


def load(path: Path, settings: TableSettings | None = None, label: str | None = None) -> torch.Tensor:
    return load_dataset(str(path), "mlp", label, settings).features


def test_semicolons_and_decimal_commas_are_sniffed(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "eu.csv", "a;b;label\n1,5;-2,25;x\n3;0,5;y\n")
    data = load_dataset(str(path), "mlp")
    assert data.feature_names == ("a", "b")
    assert torch.equal(data.features, torch.tensor([[1.5, -2.25], [3.0, 0.5]]))


def test_tsv_quoted_cells_crlf_and_thousands_separators(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_bytes(b'a\tb\tlabel\r\n"1,234.5"\t2\tx\r\n"12,000,000"\t"3"\ty\r\n')
    assert torch.equal(load(path), torch.tensor([[1234.5, 2.0], [12_000_000.0, 3.0]]))


def test_delimiter_and_decimal_flags_override_the_sniffing(tmp_path: Path) -> None:
    # Sniffed, ';' splits nothing here and '|' does; given explicitly, ',' is the decimal mark.
    path = write_csv(tmp_path / "p.csv", "a|b|label\n1,5|2|x\n3|4,75|y\n")
    settings = TableSettings(CsvOptions(delimiter="|", decimal=","))
    assert torch.equal(load(path, settings), torch.tensor([[1.5, 2.0], [3.0, 4.75]]))


def test_single_column_header_hints_at_the_delimiter(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "colon.csv", "a:b:label\n1:2:x\n")
    with pytest.raises(
        InputError, match=re.escape("no delimiter among ',', ';', tab, '|' splits it: name yours with --delimiter")
    ):
        load(path)


def test_every_blank_and_invalid_cell_is_reported_at_once(tmp_path: Path) -> None:
    rows = ["a,b,c,label", "1,2,3,x", ",2,3,y", "NA,zz,3,x", "null,2,NaN,y", "?,qq,3,", "1,2,-inf,x"]
    path = write_csv(tmp_path / "bad.csv", "\n".join(rows) + "\n")
    with pytest.raises(InputError) as info:
        load(path)
    assert str(info.value) == (
        f"CSV {path}: 9 cells cannot be used: column 'a': 4 blank (line 3, line 4, line 5, ...); "
        "column 'b': 2 not numbers (line 4 'zz', line 6 'qq'); column 'c': 1 not finite (line 7 -inf); "
        "column 'c': 1 blank (line 5); column 'label': 1 empty label (line 6) "
        "(--missing mean, median or constant fills blank feature cells; --categorical NAME reads a column as "
        "text categories)"
    )


def test_text_column_becomes_one_hot_over_its_sorted_vocabulary(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", "x,color,label\n1,red,a\n2, blue ,b\n3,red,a\n4,green,b\n")
    data = load_dataset(str(path), "mlp")
    assert data.feature_names == ("x", "color=blue", "color=green", "color=red")
    expected = [[1, 0, 0, 1], [2, 1, 0, 0], [3, 0, 0, 1], [4, 0, 1, 0]]
    assert torch.equal(data.features, torch.tensor(expected, dtype=torch.float32))
    assert data.preprocessing is not None
    assert data.preprocessing.columns[1] == ColumnSpec("color", "categorical", ("blue", "green", "red"))


def test_categorical_flag_keeps_numeric_looking_codes_as_text(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "z.csv", "zip,x,label\n02134,1,a\n00501,2,b\n02134,3,a\n")
    data = load_dataset(str(path), "mlp", None, TableSettings(CsvOptions(categorical=("zip",))))
    assert data.feature_names == ("zip=00501", "zip=02134", "x")


def test_drop_columns_and_unknown_names(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "id,x,note,label\n1,1.5,hello there,a\n2,2.5,n/a,b\n")
    data = load_dataset(str(path), "mlp", None, TableSettings(CsvOptions(drop_columns=("id", "note"))))
    assert data.feature_names == ("x",)
    with pytest.raises(InputError, match=r"has no column 'nope' \(--drop-columns; columns: id, x, note, label\)"):
        load_dataset(str(path), "mlp", None, TableSettings(CsvOptions(drop_columns=("nope",))))
    with pytest.raises(InputError, match="--categorical names the label column 'label'"):
        load_dataset(str(path), "mlp", None, TableSettings(CsvOptions(categorical=("label",))))


def test_too_many_categories_is_refused_naming_the_column(tmp_path: Path) -> None:
    lines = ["name,x,label"] + [f"n{i},{i},{i % 2}" for i in range(12)]
    path = write_csv(tmp_path / "n.csv", "\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        load_dataset(str(path), "mlp", None, TableSettings(max_categories=10))
    assert "column 'name' has 12 distinct text values, more than --max-categories 10" in str(info.value)
    assert "--drop-columns name" in str(info.value)


def _missing_table(tmp_path: Path) -> Path:
    rows = ["x,color,label"] + [
        f"{'' if i % 5 == 0 else i},{'' if i % 7 == 0 else ('red' if i % 2 else 'blue')},{i % 2}" for i in range(40)
    ]
    return write_csv(tmp_path / "m.csv", "\n".join(rows) + "\n")


@pytest.mark.parametrize("missing", ["mean", "median", "constant"])
def test_fills_come_from_the_training_split_only_with_indicators(tmp_path: Path, missing: str) -> None:
    settings = TableSettings(CsvOptions(missing_allowed=True), missing=missing)  # type: ignore[arg-type]
    data = load_dataset(str(_missing_table(tmp_path)), "mlp", None, settings)
    assert data.feature_names == ("x", "x:missing", "color=blue", "color=red", "color:missing")
    split = split_dataset(data, 0.25, torch.Generator().manual_seed(0))
    train_x = split.train.features[:, 0].numpy().copy()
    assert data.preprocessing is not None
    filled = fill_missing(data.preprocessing, split.train.features, [split.val.features], fill_value=-7.0)
    present = train_x[~np.isnan(train_x)].astype(np.float64)
    expected = {"mean": present.mean(), "median": np.median(present), "constant": -7.0}[missing]
    assert filled.columns[0].fill == float(np.float32(expected))
    for part in (split.train, split.val):
        column, indicator = part.features[:, 0], part.features[:, 1]
        assert not torch.isnan(part.features).any()
        assert torch.equal(column[indicator == 1], torch.full_like(column[indicator == 1], filled.columns[0].fill))


def test_encode_row_gives_the_training_bits_for_every_row(tmp_path: Path) -> None:
    """The server's per-row transform against training's vectorized encoding, on raw CSV rows."""
    path = _missing_table(tmp_path)
    data = load_dataset(str(path), "mlp", None, LOOSE)
    assert data.preprocessing is not None
    features = data.features.clone()
    plan = fill_missing(data.preprocessing, features, [], fill_value=0.0)
    raw_rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    for index, (x, color, _) in enumerate(raw_rows):
        row = {"x": float(x) if x else None, "color": color or None}
        encoded = np.asarray(plan.encode_row(row), dtype=np.float32)
        assert encoded.tobytes() == features[index].numpy().tobytes(), index
        as_text = np.asarray(plan.encode_row({"x": x or "NA", "color": color or "null"}), dtype=np.float32)
        assert as_text.tobytes() == encoded.tobytes()  # numbers as strings, NA spellings as missing


def test_encode_row_refusals_name_the_feature() -> None:
    plan = Preprocessing(
        (ColumnSpec("x", "numeric", fill=None), ColumnSpec("c", "categorical", ("a", "b"))), "refuse", ",", ""
    )
    assert plan.encode_row({"x": "1,5", "c": "b"}) == [1.5, 0.0, 1.0]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"x": 1.0, "c": "z"}, "feature 'c': unknown category 'z' (the model knows 'a', 'b')"),
        ({"x": None, "c": "a"}, "feature 'x' is missing and this model was trained with --missing refuse"),
        ({"x": "abc", "c": "a"}, "feature 'x': 'abc' is not a number"),
        ({"x": 1e39, "c": "a"}, "feature 'x': 1e+39 is not a finite float32 number"),
        ({"x": 1.0, "c": 3.5}, "feature 'c' is categorical: send its value as a string"),
        ({"x": True, "c": "a"}, "feature 'x': True is not a number, a string or null"),
        ({"x": 1.0}, "missing feature 'c'; the model's features are: x, c"),
        ({"x": 1.0, "c": "a", "d": 1}, "unknown feature 'd'; the model's features are: x, c"),
    ]
    for row, message in cases:
        with pytest.raises(PreprocessError) as info:
            plan.encode_row(row)
        assert str(info.value) == message


def _plan_json() -> dict[str, Any]:
    return Preprocessing(
        (ColumnSpec("x", "numeric", fill=1.5), ColumnSpec("c", "categorical", ("a",))), "mean"
    ).to_json()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(kind="python"), '"kind": "tabular"'),
        (lambda d: d.update(missing="guess"), "missing must be one of"),
        (lambda d: d.update(columns=[]), "columns must be a list of 1 to 10000"),
        (lambda d: d["columns"][1].update(categories=[f"v{i}" for i in range(1001)]), "1 to 1000"),
        (lambda d: d["columns"][1].update(categories=["a", "a"]), "categories repeat"),
        (lambda d: d["columns"][1].update(categories=[" a"]), "not a stripped, non-missing string"),
        (lambda d: d["columns"][0].update(fill=None), "invalid fill None"),
        (lambda d: d["columns"][0].update(fill=1e39), "invalid fill"),
        (lambda d: d["columns"][0].update(name="x" * 257), "1 to 256 characters"),
        (lambda d: d["columns"][1].update(name="x"), "column names repeat"),
    ],
)
def test_manifest_preprocessing_is_validated(change: Callable[[dict[str, Any]], None], message: str) -> None:
    data = _plan_json()
    assert Preprocessing.from_json(data).feature_names() == ("x", "c=a")
    change(data)
    with pytest.raises(PreprocessError) as info:
        Preprocessing.from_json(data)
    assert message in str(info.value)


def test_fifo_device_and_oversized_files_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(InputError, match="is not a regular file"):
        read_csv(fifo, None)
    with pytest.raises(InputError, match="is not a regular file"):
        read_csv(Path("/dev/zero"), None)
    assert time.monotonic() - started < 10  # it used to wait for a writer, or grow without bound
    big = write_csv(tmp_path / "big.csv", "a,label\n" + "1.0,x\n" * 200_000)
    with pytest.raises(InputError, match=r"is 1 MiB, over the size bound of 1 MiB|over the size bound of 1 MiB"):
        read_csv(big, None, CsvOptions(max_bytes=1 << 20))


def test_hash_is_of_the_bytes_parsed_and_progress_line_for_large_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["a,b,label"] + [f"{i},{i * 0.5},{i % 3}" for i in range(30_000)]  # > 64 KiB: head plus stream
    path = write_csv(tmp_path / "h.csv", "\n".join(lines) + "\n")
    table = read_csv(path, None, CsvOptions(progress=True, progress_bytes=1))
    assert table.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert table.numeric.shape == (30_000, 2)
    assert f"reading {path.name}" in capsys.readouterr().err


def test_a_late_non_number_in_a_column_that_starts_numeric_is_found(tmp_path: Path) -> None:
    lines = ["a,b,label"] + [f"{i},{i},{i % 2}" for i in range(20_000)] + ["5,oops,1", "6,1e39,0"]
    path = write_csv(tmp_path / "late.csv", "\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        read_csv(path, None)
    assert "column 'b': 1 not a number (line 20002 'oops'); column 'b': 1 beyond float32's range (line 20003" in str(
        info.value
    )


def test_task_detection_and_the_many_classes_rule() -> None:
    numbers = tuple(str(i) for i in range(100))
    assert choose_task(numbers, "y", None, "CSV t") == (
        "regression",
        "label column 'y': 100 distinct numbers in 100 rows",
    )
    assert choose_task(("1.5", "2"), "y", None, "CSV t")[0] == "regression"
    assert choose_task(("1", "2") * 50, "y", None, "CSV t") == ("classification", "")
    names = tuple(f"n{i}" for i in range(100))
    with pytest.raises(InputError, match="has 100 classes in 100 rows \\(more than 20\\); --task classification"):
        choose_task(names, "y", None, "CSV t")
    assert choose_task(names, "y", "classification", "CSV t") == ("classification", "")


def test_regression_labels_must_be_numbers(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", "x,y\n1,2.5\n2,abc\n3,4\n")
    with pytest.raises(InputError, match="1 labels are not finite numbers, needed for regression \\('abc'\\)"):
        load_dataset(str(path), "mlp", None, TableSettings(task="regression"))


def test_split_keeps_the_preprocessing_and_task(tmp_path: Path) -> None:
    data = load_dataset(str(_missing_table(tmp_path)), "mlp", None, LOOSE)
    split = split_dataset(data, 0.25, torch.Generator().manual_seed(0))
    assert isinstance(split, Split)
    assert split.train.preprocessing is data.preprocessing
    assert split.val.task == "classification"
