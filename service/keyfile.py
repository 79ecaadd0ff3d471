"""Key files: secrets kept in files (one per line, `#` comments), never on the command line, which any local
user can read in /proc/<pid>/cmdline. A file is re-read when it changes (checked at most once a second per
process), so a key is rotated by rewriting the file, without a restart. Only SHA-256 digests of the keys are
kept; no key is ever logged.

Two readers: the API keys (service/http/auth.py compares a caller's key with the digests) and the receipts
signing keys (service/receipts/keys.py signs with the first key's digest and verifies with any of them).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import time
from pathlib import Path

MIN_KEY_CHARS = 16
# A key's entropy is estimated as its length times the Shannon entropy of its own character frequencies (bits).
# secrets.token_urlsafe(32) scores >= 180 and token_hex(16) >= 92; a placeholder sentence scores well too,
# hence the list of the words the documentation's examples use.
MIN_KEY_BITS = 80
PLACEHOLDER_WORDS = (
    "replace-me",
    "replace_me",
    "replaceme",
    "changeme",
    "change-me",
    "change_me",
    "placeholder",
    "example",
)
GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
RECHECK_S = 1.0  # how stale a key file may be: rotation takes effect within this long
log = logging.getLogger("invariant.auth")


class KeyFileError(Exception):
    pass


def read_keys(path: Path) -> tuple[bytes, ...]:
    """SHA-256 digests of the keys in `path`. Errors name the file and line, never the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read keys file {path}: {exc}") from None
    digests = []
    for number, line in enumerate(text.splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if any(char.isspace() for char in key) or len(key) < MIN_KEY_CHARS or not key.isascii():
            raise KeyFileError(
                f"{path} line {number}: a key is one word of at least {MIN_KEY_CHARS} ASCII characters "
                f"(e.g. {GENERATE})"
            )
        weakness = key_weakness(key)
        if weakness is not None:
            raise KeyFileError(f"{path} line {number}: {weakness}; generate a key with {GENERATE}")
        digests.append(digest_of(key.encode()))
    return tuple(digests)


def key_weakness(key: str) -> str | None:
    """Why `key` is guessable (never quoting it), or None: a documented placeholder, or under MIN_KEY_BITS."""
    if any(word in key.lower() for word in PLACEHOLDER_WORDS):
        return "a key is a documented placeholder, publicly known"
    if estimated_bits(key) < MIN_KEY_BITS:
        return f"a key has too little entropy (under {MIN_KEY_BITS} bits: length x Shannon entropy of its characters)"
    return None


def estimated_bits(key: str) -> float:
    counts = [key.count(char) for char in set(key)]
    return -sum(count * math.log2(count / len(key)) for count in counts)


def digest_of(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class KeyFile:
    """The keys of one file (none when `path` is None), re-read when its inode, size or mtime changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._digests: tuple[bytes, ...] = ()
        self._stamp: tuple[int, int, int, int] | None = None
        self._checked_at = -RECHECK_S
        self._refresh(time.monotonic())

    def digests(self) -> tuple[bytes, ...]:
        """The keys' digests in file order, re-read first if the file may have changed."""
        now = time.monotonic()
        if now - self._checked_at >= RECHECK_S:
            self._refresh(now)
        return self._digests

    def holds(self, digest: bytes) -> bool:
        found = False
        for known in self.digests():  # no early exit: the time taken does not depend on which key matched
            found |= hmac.compare_digest(known, digest)
        return found

    def _refresh(self, now: float) -> None:
        self._checked_at = now
        if self.path is None:
            return
        try:
            status = os.stat(self.path)
        except OSError as exc:
            self._fail(f"cannot read keys file {self.path}: {exc.strerror}")
            return
        stamp = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            self._digests = read_keys(self.path)
        except KeyFileError as exc:
            self._fail(str(exc))
            return
        self._stamp = stamp
        log.info("keys file %s: %d keys", self.path, len(self._digests))

    def _fail(self, reason: str) -> None:
        # Closed, not open: a key file that cannot be read lets no one in until it can be read again.
        if self._digests or self._stamp is not None:
            log.warning("%s; its keys are refused until it can be read", reason)
        self._digests, self._stamp = (), None
