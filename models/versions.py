"""Model and version names: torch-free, so the server's settings and CLI can parse them before torch is imported
(`--portable-numerics` must set its environment variables first)."""

from __future__ import annotations

import re

VERSION_PATTERN = re.compile(r"[1-9][0-9]*", re.ASCII)
# A model name (also the file names a version directory may hold). Matched whole with fullmatch, never
# `^...$`: `$` also matches before a final "\n", so "nl2\n" would pass and then serve a model no URL reaches.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", re.ASCII)


def is_model_name(text: str) -> bool:
    """True for a valid model name (letters, digits, '_', '.', '-'; at most 128 characters, no newline)."""
    return NAME_PATTERN.fullmatch(text) is not None


def parse_version(text: str) -> int | None:
    """A version number in its one canonical spelling (ASCII digits, no leading zero), else None.

    `'²'.isdigit()` is True and `int('007')` is 7: neither names a version, so a directory or URL
    spelled so can never alias or crash on one.
    """
    # At most 18 digits: more than any version, and int() of over 4,300 digits raises (a 500 from a URL).
    return int(text) if len(text) <= 18 and VERSION_PATTERN.fullmatch(text) else None
