"""Large training CSVs parse in blocks on several threads (training/csv_blocks.py): the same table and hash
as the one hashed stream, every doubt (quotes, parser errors, bad cells, blocks typed differently) falls back
to the stream with its exact messages, and a file written while it is read is refused."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from training_helpers import write_csv

import training.csv_data
from training.csv_blocks import FileHasher, block_bounds, parse_blocks
from training.csv_data import CsvOptions, CsvTable, read_csv
from training.errors import InputError

ROWS = 6_000
STREAM = 1 << 40  # parallel_bytes no file reaches: the one stream
BLOCKS = 1  # every file parses in blocks


@pytest.fixture
def block_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Two block threads even on a one-CPU machine; records whether each block parse was used (not None)."""
    used: list[bool] = []

    def recording(*args: Any) -> Any:
        blocks = parse_blocks(*args)
        used.append(blocks is not None)
        return blocks

    monkeypatch.setattr(training.csv_data, "workers", lambda: 2)
    monkeypatch.setattr(training.csv_data, "parse_blocks", recording)
    return used


def lines_of(rows: int = ROWS) -> list[str]:
    return ["a,b,color,label"] + [f"{i},{i * 0.25},{('red', 'blue', 'NA')[i % 3]},{i % 3}" for i in range(rows)]


def both(path: Path, **options: Any) -> tuple[CsvTable, CsvTable]:
    return (
        read_csv(path, None, CsvOptions(parallel_bytes=BLOCKS, **options)),
        read_csv(path, None, CsvOptions(parallel_bytes=STREAM, **options)),
    )


def assert_same(blocks: CsvTable, stream: CsvTable) -> None:
    assert blocks.numeric.tobytes() == stream.numeric.tobytes()
    assert (blocks.sha256, blocks.size, blocks.labels) == (stream.sha256, stream.size, stream.labels)
    assert blocks.text.keys() == stream.text.keys()
    for name in blocks.text:
        assert blocks.text[name].tolist() == stream.text[name].tolist()
    assert blocks.missing_counts == stream.missing_counts


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_blocks_give_the_streams_table_and_hash(tmp_path: Path, block_calls: list[bool], newline: str) -> None:
    path = write_csv(tmp_path / "t.csv", "\ufeff" + newline.join(lines_of()) + newline)  # with a BOM
    blocks, stream = both(path, categorical=("color",), missing_allowed=True)
    assert block_calls == [True]
    assert_same(blocks, stream)
    assert blocks.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert blocks.numeric.shape == (ROWS, 2)
    assert blocks.text["color"][:3].tolist() == ["red", "blue", None]
    assert blocks.missing_counts["color"] == ROWS // 3


def test_a_quote_after_the_head_falls_back_to_the_stream(tmp_path: Path, block_calls: list[bool]) -> None:
    lines = lines_of()
    at = ROWS * 3 // 4  # past the 64 KiB head (sniffed before the blocks start): only the hasher sees it
    lines[at] = '1,2,"re\nd",0'  # a newline inside a cell, near where a block would be cut
    path = write_csv(tmp_path / "q.csv", "\n".join(lines) + "\n")
    blocks, stream = both(path, categorical=("color",), missing_allowed=True)
    assert block_calls == [False]  # a block reader saw the quote: the stream's table counts
    assert_same(blocks, stream)
    assert blocks.text["color"][at - 1] == "re\nd"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1,zz,red,0", r"column 'b': 1 not a number \(line {line} 'zz'\)"),
        ("1,2,red,0,9", r"Expected 4 fields in line {line}, saw 5"),
    ],
)
def test_bad_lines_deep_in_the_file_are_named_as_the_stream_names_them(
    tmp_path: Path, block_calls: list[bool], line: str, message: str
) -> None:
    lines = lines_of()
    at = ROWS - 10  # in the last block: a block's own line numbers would be wrong
    lines[at] = line
    path = write_csv(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message.format(line=at + 1)):
        read_csv(path, None, CsvOptions(parallel_bytes=BLOCKS, categorical=("color",), missing_allowed=True))
    assert block_calls == [False]


def test_block_bounds_start_at_line_starts_and_cover_the_file(tmp_path: Path) -> None:
    long_line = "9" * 200_000  # longer than several look-ahead reads: the cut moves past its end
    path = write_csv(tmp_path / "b.csv", "h\n" + "1\n" * 1000 + long_line + "\n" + "2\n" * 1000)
    content = path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        bounds = block_bounds(fd, 2, len(content), 4)
    finally:
        os.close(fd)
    assert bounds[0][0] == 2
    assert bounds[-1][1] == len(content)
    assert all(stop == start for (_, stop), (start, _) in itertools.pairwise(bounds))
    assert all(content[start - 1 : start] == b"\n" for start, _ in bounds)
    assert len(bounds) == 2  # all three cuts fell inside the long line: one moved to its end, two dropped


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = write_csv(tmp_path / "h.csv", "\n".join(lines_of(2_000)) + "\n")
    os.utime(path, ns=(10**18, 10**18))  # written long ago: a later write moves mtime even on a coarse clock
    fd = os.open(path, os.O_RDONLY)
    yield path, fd
    os.close(fd)


def hasher_of(fd: int, limit: int = 1 << 30) -> FileHasher:
    return FileHasher(fd, limit, "CSV h.csv")


def test_the_hasher_hashes_every_byte(opened: tuple[Path, int]) -> None:
    path, fd = opened
    hasher = hasher_of(fd)
    hasher.finish()
    content = path.read_bytes()
    assert hasher.digest.hexdigest() == hashlib.sha256(content).hexdigest()
    assert hasher.size == len(content)


@pytest.mark.parametrize("mode", ["ab", "r+b"])  # appended; rewritten in place at the same size
def test_a_file_written_while_it_is_read_is_refused(opened: tuple[Path, int], mode: str) -> None:
    path, fd = opened
    hasher = hasher_of(fd)
    with path.open(mode) as writing:
        writing.write(b"b")
    with pytest.raises(InputError, match=r"^CSV h.csv was written to while it was read; train again once"):
        hasher.finish()


def test_a_file_past_the_bound_is_refused_by_the_hasher(opened: tuple[Path, int]) -> None:
    hasher = hasher_of(opened[1], limit=1000)
    with pytest.raises(InputError, match="grew past the size bound of 0 MiB"):
        hasher.finish()


def test_cells_checked_after_a_block_parse_are_named_by_their_lines(tmp_path: Path, block_calls: list[bool]) -> None:
    lines = lines_of()
    lines[ROWS - 5] = ",1.5,red,0"  # a blank feature cell: parsed fine, refused by the cell check
    path = write_csv(tmp_path / "blank.csv", "\r\n".join(lines) + "\r\n")
    messages = []
    for parallel_bytes in (BLOCKS, STREAM):
        with pytest.raises(InputError) as refused:
            read_csv(path, None, CsvOptions(parallel_bytes=parallel_bytes, categorical=("color",)))
        messages.append(str(refused.value))
    assert block_calls == [True]
    assert messages[0] == messages[1]
    assert f"column 'a': 1 blank (line {ROWS - 4})" in messages[0]


def test_rows_dropped_and_cells_refused_in_several_blocks_read_as_the_stream_reads_them(
    tmp_path: Path, block_calls: list[bool]
) -> None:
    """Every block has rows the check drops (lines with no cell) or refuses (infinite cells): the matrix is
    copied block by block, so the kept rows of each block must land in order, and the refused cells of
    several blocks must be one entry per column, named by their lines."""
    lines = lines_of()
    empty_at = [1, ROWS // 3, ROWS // 2 + 7, ROWS - 1]  # a line with no cell in each quarter
    for at in empty_at:
        lines[at] = ",,,"
    path = write_csv(tmp_path / "dropped.csv", "\n".join(lines) + "\n")
    blocks, stream = both(path, categorical=("color",), missing_allowed=True)
    assert block_calls == [True]
    assert_same(blocks, stream)
    assert blocks.numeric.shape == (ROWS - len(empty_at), 2)
    # lines[i] holds data row i - 1: the last two kept rows straddle the dropped row ROWS - 2
    assert blocks.numeric[-2:].tolist() == [[ROWS - 3, (ROWS - 3) * 0.25], [ROWS - 1, (ROWS - 1) * 0.25]]
    for at in (ROWS // 5, ROWS - 3):
        lines[at] = f"{at - 1},inf,red,0"
    path = write_csv(tmp_path / "infinite.csv", "\n".join(lines) + "\n")
    messages = []
    for parallel_bytes in (BLOCKS, STREAM):
        with pytest.raises(InputError) as refused:
            read_csv(
                path, None, CsvOptions(parallel_bytes=parallel_bytes, categorical=("color",), missing_allowed=True)
            )
        messages.append(str(refused.value))
    assert block_calls == [True, True]
    assert messages[0] == messages[1]
    assert f"column 'b': 2 not finite (line {ROWS // 5 + 1} inf, line {ROWS - 2} inf)" in messages[0]


def test_semicolons_decimal_commas_and_dropped_columns_parse_alike(tmp_path: Path, block_calls: list[bool]) -> None:
    lines = ["id;a;b;label"] + [f"{i};{i},5;{i * 3},25;{('x', 'y')[i % 2]}" for i in range(ROWS)]
    path = write_csv(tmp_path / "semi.csv", "\n".join(lines) + "\n")
    blocks, stream = both(path, drop_columns=("id",))
    assert block_calls == [True]
    assert_same(blocks, stream)
    assert (blocks.delimiter, blocks.decimal, blocks.numeric_names) == (";", ",", ("a", "b"))
    assert blocks.numeric[3].tolist() == [3.5, 9.25]


def test_the_progress_line_reaches_the_whole_file_in_blocks(
    tmp_path: Path, block_calls: list[bool], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "p.csv", "\n".join(lines_of()) + "\n")
    read_csv(path, None, CsvOptions(parallel_bytes=BLOCKS, progress=True, progress_bytes=1, missing_allowed=True))
    assert block_calls == [True]
    err = capsys.readouterr().err
    assert "reading p.csv: 100%" in err, err


def test_an_interrupted_block_parse_leaves_no_hashing_thread_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hasher reads the descriptor read_csv closes on the way out: it is joined first."""

    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(training.csv_data, "workers", lambda: 2)
    monkeypatch.setattr(training.csv_data, "parse_blocks", interrupted)
    path = write_csv(tmp_path / "i.csv", "a,label\n" + "1.5,0\n" * 3_000_000)  # 18 MB: hashed for ~30 ms
    with pytest.raises(KeyboardInterrupt):
        read_csv(path, None, CsvOptions(parallel_bytes=BLOCKS))
    assert [thread.name for thread in threading.enumerate() if thread.name == "csv-hash"] == []


def test_a_header_without_a_line_end_is_refused_as_the_stream_refuses_it(
    tmp_path: Path, block_calls: list[bool]
) -> None:
    path = write_csv(tmp_path / "n.csv", "a,label")
    with pytest.raises(InputError, match=r"n.csv has a header but no data rows$"):
        read_csv(path, None, CsvOptions(parallel_bytes=BLOCKS))
    assert block_calls == []  # no block parse was tried
