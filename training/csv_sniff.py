"""Sniffing a training CSV's dialect from its first lines: delimiter, decimal mark, thousands separator; and
its header."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from training.errors import InputError

DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class CsvFormat:
    delimiter: str
    decimal: str
    thousands: str


def sniff(
    text: str, path: Path, delimiter: str | None, decimal: str | None, thousands: str | None, where: str
) -> CsvFormat:
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    if not lines:
        raise InputError(f"{where} is empty; expected a header row")
    delimiter = delimiter or ("\t" if path.suffix.lower() == ".tsv" else _sniff_delimiter(lines))
    cells = [cell.strip().strip('"').strip() for line in lines[1:] for cell in line.split(delimiter)]
    decimal = decimal or _sniff_decimal(cells, delimiter)
    thousands = thousands if thousands is not None else _sniff_thousands(cells, decimal)
    if decimal == thousands or delimiter in {decimal, thousands}:
        raise InputError(
            f"{where}: delimiter {delimiter!r}, decimal {decimal!r} and thousands {thousands!r} must differ"
        )
    return CsvFormat(delimiter, decimal, thousands)


def _sniff_delimiter(lines: list[str]) -> str:
    """The candidate found in the header that splits the most lines into the header's count of cells."""

    def score(candidate: str) -> tuple[int, int]:
        expected = lines[0].count(candidate)
        return (sum(line.count(candidate) == expected for line in lines) if expected else 0, expected)

    best = max(DELIMITERS, key=score)
    return best if score(best)[1] else ","


_COMMA_DECIMAL = re.compile(r"^[-+]?\d*,\d+$")
_DOT_DECIMAL = re.compile(r"^[-+]?\d*\.\d+([eE][-+]?\d+)?$")


def _sniff_decimal(cells: list[str], delimiter: str) -> str:
    """',' when the delimiter is not a comma, some cells look like 1,5 and none like 1.5."""
    if delimiter == ",":
        return "."
    comma = any(_COMMA_DECIMAL.match(cell) for cell in cells)
    dot = any(_DOT_DECIMAL.match(cell) for cell in cells)
    return "," if comma and not dot else "."


_THOUSANDS = {".": re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$"), ",": re.compile(r"^[-+]?\d{1,3}(\.\d{3})+(,\d+)?$")}


def _sniff_thousands(cells: list[str], decimal: str) -> str:
    """The other mark when a cell groups digits in threes with it (1,234,567.5) and a decimal mark or a
    second group makes that unambiguous; else none."""
    separator = "," if decimal == "." else "."
    pattern = _THOUSANDS[decimal]
    grouped = [cell for cell in cells if pattern.match(cell) and (cell.count(separator) > 1 or decimal in cell)]
    return separator if grouped else ""


def header_names(text: str, delimiter: str, where: str) -> list[str]:
    first = next(csv.reader(io.StringIO(text), delimiter=delimiter), None)
    if first is None:
        raise InputError(f"{where} is empty; expected a header row")
    names = [name.strip() for name in first]
    for index, name in enumerate(names, start=1):
        if not name:
            raise InputError(f"{where} header column {index} has no name")
    # Counted once (linear): names.count per name took 103 s for a 100,000-column header.
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise InputError(f"{where} header repeats column names: {', '.join(duplicates)}")
    if len(names) < 2:
        raise InputError(
            f"{where} needs at least one feature column and a label column, header has {names}; no delimiter "
            "among ',', ';', tab, '|' splits it: name yours with --delimiter"
        )
    return names
