"""training.data and training.csv_data: sources, labels, the seeded split, standardization statistics."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from training_helpers import good_csv_text, write_csv

from models.architectures import Standardize
from training.data import Dataset, encode_labels, load_dataset, split_dataset, standardization_stats
from training.distributed import World
from training.errors import InputError
from training.loop import rank_batches


def test_digits_mlp_reads_64_features_with_pixel_names() -> None:
    data = load_dataset("digits", "mlp")
    assert tuple(data.features.shape) == (1797, 64)
    assert data.features.dtype == torch.float32
    assert data.labels.dtype == torch.int64
    assert data.class_labels == tuple(str(digit) for digit in range(10))
    assert data.feature_names == tuple(f"pixel_{index}" for index in range(64))
    bunch = load_digits()
    assert torch.equal(data.features, torch.tensor(bunch.data, dtype=torch.float32))
    assert torch.equal(data.labels, torch.tensor(bunch.target, dtype=torch.int64))


def test_digits_cnn_reads_1x8x8_images_of_the_same_pixels() -> None:
    flat, images = load_dataset("digits", "mlp"), load_dataset("digits", "cnn")
    assert images.input_shape == (1, 8, 8)
    assert torch.equal(images.features.reshape(1797, 64), flat.features)
    assert torch.equal(images.labels, flat.labels)


def test_synthetic_is_fixed_small_and_shaped_per_arch() -> None:
    first, second = load_dataset("synthetic", "mlp"), load_dataset("synthetic", "mlp")
    assert tuple(first.features.shape) == (480, 16)
    assert torch.equal(first.features, second.features)
    assert first.class_labels == ("0", "1", "2")
    assert load_dataset("synthetic", "cnn").input_shape == (1, 4, 4)


def test_csv_label_column_by_name_and_string_classes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "pets.csv", good_csv_text(rows=4))
    data = load_dataset(str(path), "mlp", "label")
    assert data.feature_names == ("a", "b")
    assert data.class_labels == ("cat", "dog")
    assert data.labels.tolist() == [1, 0, 1, 0]  # dog, cat, dog, cat
    expected = torch.tensor([[0.0, 0.0], [0.5, 3.01], [1.0, 0.02], [1.5, 3.03]], dtype=torch.float32)
    assert torch.equal(data.features, expected)


def test_csv_default_label_is_last_column_and_blank_lines_and_bom_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("\ufeffx, y ,class\n1,2,10\n\n3,4,2\n5,6,10\n".encode())
    data = load_dataset(str(path), "mlp")
    assert data.feature_names == ("x", "y")
    # Numeric labels sort as numbers: "2" before "10".
    assert data.class_labels == ("2", "10")
    assert data.labels.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("text", "label_column", "message"),
    [
        ("", None, "is empty; expected a header row"),
        ("a,b\n", None, "has a header but no data rows"),
        ("a,b\n1,x\n2,y\n", "c", "has no label column 'c' (columns: a, b)"),
        ("a,b,label\n1,2,x\n1,abc,y\n", None, "1 cell cannot be used: column 'b': 1 not a number (line 3 'abc')"),
        ("a,b,label\n1,2,x\nnan,2,y\n", None, "1 cell cannot be used: column 'a': 1 blank (line 3)"),
        ("a,b,label\n1,-inf,x\n1,2,y\n", None, "1 cell cannot be used: column 'b': 1 not finite (line 2 -inf)"),
        ("a,b,label\n1,,x\n", None, "1 cell cannot be used: column 'b': 1 blank (line 2)"),
        ("a,b,label\n1,1e39,x\n", None, "column 'b': 1 beyond float32's range (line 2 1e+39)"),
        ("a,b,label\n1,2,x\n1,2\n", None, "column 'label': 1 empty label (line 3)"),  # a short row
        ("a,b,label\n1,2, \n", None, "column 'label': 1 empty label (line 2)"),
        ("a,a,label\n1,2,x\n", None, "header repeats column names: a"),
        ("a,,label\n1,2,x\n", None, "header column 2 has no name"),
        ("label\nx\n", None, "needs at least one feature column and a label column"),
        ("a,label\n1,x\n2,x\n", None, "label column 'label' has a single class 'x'"),
    ],
)
def test_csv_problems_name_file_line_and_column(
    tmp_path: Path, text: str, label_column: str | None, message: str
) -> None:
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(InputError) as info:
        load_dataset(str(path), "mlp", label_column)
    assert str(info.value).startswith(f"CSV {path}")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_csv_missing_directory_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(str(tmp_path / "absent.csv"), "mlp")
    with pytest.raises(InputError, match="is a directory"):
        load_dataset(str(tmp_path), "mlp")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"a,label\n1,caf\xe9\n")
    with pytest.raises(InputError, match="is not UTF-8 text"):
        load_dataset(str(latin), "mlp")


def test_encode_labels_sorts_strings_and_numbers() -> None:
    indices, classes = encode_labels(["b", "a", "b"], "t")
    assert (indices.tolist(), classes) == ([1, 0, 1], ("a", "b"))
    indices, classes = encode_labels(["10", "9", "1.5"], "t")
    assert (indices.tolist(), classes) == ([2, 1, 0], ("1.5", "9", "10"))


def _numbered(rows: int) -> Dataset:
    # Row i holds the value i, so a split can be checked for coverage.
    features = torch.arange(rows, dtype=torch.float32).reshape(rows, 1)
    return Dataset(features, torch.arange(rows) % 2, ("v",), ("0", "1"), "numbered")


def test_split_sizes_cover_every_row_once_and_follow_the_seed() -> None:
    data = _numbered(101)
    split = split_dataset(data, 0.2, torch.Generator().manual_seed(7))
    assert (len(split.train), len(split.val)) == (81, 20)  # round(101 * 0.2) = 20
    rows = torch.cat([split.train.features, split.val.features]).flatten()
    assert sorted(rows.tolist()) == list(range(101))
    again = split_dataset(data, 0.2, torch.Generator().manual_seed(7))
    assert torch.equal(again.val.features, split.val.features)
    other = split_dataset(data, 0.2, torch.Generator().manual_seed(8))
    assert not torch.equal(other.val.features, split.val.features)


@pytest.mark.parametrize(("rows", "fraction"), [(2, 0.2), (3, 0.5), (2, 0.9)])
def test_split_refuses_too_few_rows(rows: int, fraction: float) -> None:
    with pytest.raises(InputError, match="too few for a validation split"):
        split_dataset(_numbered(rows), fraction, torch.Generator().manual_seed(0))


def test_standardization_per_feature_with_constant_feature_std_one() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(50, 3, generator=generator) * torch.tensor([2.0, 0.5, 0.0]) + 4.0
    mean, std = standardization_stats(features)
    wide = features.numpy().astype(np.float64)
    assert torch.equal(mean, torch.tensor(wide.mean(axis=0), dtype=torch.float32))
    expected_std = wide.std(axis=0)
    expected_std[2] = 1.0  # the constant feature
    assert torch.equal(std, torch.tensor(expected_std, dtype=torch.float32))
    assert mean[2].item() == 4.0
    layer = Standardize((3,))
    layer.mean.copy_(mean)
    layer.std.copy_(std)
    out = layer(features).to(torch.float64)
    torch.testing.assert_close(out.mean(dim=0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.std(dim=0, unbiased=False)[:2], torch.ones(2, dtype=torch.float64))


def test_standardization_per_channel_for_images() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(20, 3, 4, 5, generator=generator) + torch.tensor([1.0, -2.0, 5.0]).reshape(1, 3, 1, 1)
    mean, std = standardization_stats(images)
    assert tuple(mean.shape) == tuple(std.shape) == (3, 1, 1)
    wide = images.numpy().astype(np.float64)
    assert torch.equal(mean.flatten(), torch.tensor(wide.mean(axis=(0, 2, 3)), dtype=torch.float32))
    assert torch.equal(std.flatten(), torch.tensor(wide.std(axis=(0, 2, 3)), dtype=torch.float32))


@pytest.mark.parametrize(
    ("count", "sizes"), [(128, [64, 64]), (129, [64, 65]), (130, [64, 64, 2]), (1, [1]), (63, [63])]
)
def test_batches_cover_all_rows_and_never_leave_one_row_alone(count: int, sizes: list[int]) -> None:
    batches = rank_batches(count, 64, seed=0, epoch=1)
    assert [len(batch) for batch in batches] == sizes
    assert sorted(torch.cat(batches).tolist()) == list(range(count))


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_together_see_the_single_process_global_batches(world_size: int) -> None:
    # 384 rows (a multiple of every world size here, so DistributedSampler pads nothing), global batch 96.
    single = rank_batches(384, 96, seed=7, epoch=3)
    per_rank = [
        rank_batches(384, 96, 7, 3, World(rank, world_size, "gloo", torch.device("cpu"))) for rank in range(world_size)
    ]
    assert all(len(batches) == len(single) == 4 for batches in per_rank)
    for step, global_batch in enumerate(single):
        together = torch.cat([batches[step] for batches in per_rank])
        assert sorted(together.tolist()) == sorted(global_batch.tolist())
    assert not torch.equal(single[0], rank_batches(384, 96, seed=7, epoch=4)[0])  # a new shuffle each epoch


def test_csv_non_utf8_deep_in_a_text_column_names_the_file_offset(tmp_path: Path) -> None:
    # The parser's own error gives the place inside one cell ("byte 3"); the message gives the file's.
    rows = b"1,x\n" * 5000
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"a,label\n" + rows + b"2,caf\xe9\n")
    offset = len(b"a,label\n" + rows + b"2,caf")
    with pytest.raises(InputError, match=rf"is not UTF-8 text \(byte {offset}: invalid continuation byte\)$"):
        load_dataset(str(latin), "mlp")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # pandas would take column 1 as the index and shift every value: refused instead.
        ("a,b,label\n1,2,x,7\n3,4,y,8\n", "is not valid CSV: the first data row has more cells than the header's 3"),
        (
            "a,b,label\n1,2,x\n3,4,y,9\n",
            "is not valid CSV: Error tokenizing data. C error: Expected 3 fields in line 3",
        ),
    ],
)
def test_csv_row_longer_than_the_header_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write_csv(tmp_path / "long.csv", text)
    with pytest.raises(InputError, match=re.escape(message)):
        load_dataset(str(path), "mlp")
