"""Key files: secrets kept in files (one per line, `#` comments), never on the command line, which any local
user can read in /proc/<pid>/cmdline. A file is re-read when it changes (checked at most once a second per
process), so a key is rotated without a restart: best by writing a new file and renaming it over the old one
(atomic). A file rewritten in place is read while it is being written (empty, or its last line cut): a changed
file that holds no key, fails to parse or does not end with a newline is taken only once it reads the same on
the next check; until then the previous keys stay. Only SHA-256 digests of the keys are kept; no key is ever
logged.

As ssh does with private keys, a key file must be a regular file (a symlink to one is fine: Kubernetes mounts
secrets so) owned by the server's user or root, writable by its owner alone and not readable by others:
anyone who can write it can let themselves in, anyone who can read it can call as a client.

Two readers: the API keys (service/http/auth.py compares a caller's key with the digests) and the receipts
signing keys (service/receipts/keys.py signs with the first key's digest and verifies with any of them).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import stat
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
MAX_KEY_FILE_BYTES = 1 << 20  # thousands of keys; a larger file is a mistake (or /dev/zero)
log = logging.getLogger("invariant.auth")


class KeyFileError(Exception):
    pass


def read_keys(path: Path) -> tuple[bytes, ...]:
    """SHA-256 digests of the keys in `path`. Errors name the file and line, never the key."""
    return _read(path)[0]


def _read(path: Path) -> tuple[tuple[bytes, ...], bool]:
    """(digests, whether the text ends with a newline). Opened without blocking (a FIFO never stalls it)
    and checked on the open descriptor, so what is checked is what is read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileError(f"cannot read keys file {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "rb") as file:
        problem = mode_problem(os.fstat(descriptor))
        if problem is not None:
            raise KeyFileError(f"keys file {path} {problem}")
        data = file.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"keys file {path} is over {MAX_KEY_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"cannot read keys file {path}: {exc}") from None
    return _parse(path, text), text.endswith("\n")


def mode_problem(status: os.stat_result) -> str | None:
    """What makes a key file unsafe to trust (its type, owner or mode), or None."""
    if not stat.S_ISREG(status.st_mode):
        return "is not a regular file"
    if status.st_uid not in (os.geteuid(), 0):
        return f"is owned by uid {status.st_uid}: it must be the server's user ({os.geteuid()}) or root"
    if status.st_mode & 0o022:
        return f"is writable by group or others (mode {status.st_mode & 0o777:04o}): chmod 600 or 400"
    if status.st_mode & 0o004:
        return f"is readable by others (mode {status.st_mode & 0o777:04o}): chmod 600, 400 or 440"
    return None


def _parse(path: Path, text: str) -> tuple[bytes, ...]:
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


Stamp = tuple[int, int, int, int] | None  # (device, inode, size, mtime ns); None: the file cannot be stat'ed
_NOTHING_PENDING: object = object()


class KeyFile:
    """The keys of one file (none when `path` is None), re-read when its inode, size or mtime changes."""

    def __init__(self, path: Path | None, recheck_s: float = RECHECK_S) -> None:
        self.path = path
        self.recheck_s = recheck_s
        self._digests: tuple[bytes, ...] = ()
        self._stamp: Stamp = None
        self._pending: object = _NOTHING_PENDING  # the stamp of a suspect read, taken if it reads so again
        self._checked_at = -recheck_s
        self._refresh(time.monotonic())

    def digests(self) -> tuple[bytes, ...]:
        """The keys' digests in file order, re-read first if the file may have changed."""
        now = time.monotonic()
        if now - self._checked_at >= self.recheck_s:
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
            stamp: Stamp = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp is not None and stamp == self._stamp:
            return
        try:
            digests, complete = _read(self.path)
            problem = None
        except KeyFileError as exc:
            digests, complete, problem = (), False, str(exc)
        if self._suspect(stamp, digests, complete):
            return
        self._pending = _NOTHING_PENDING
        if problem is not None:
            self._fail(problem)
            return
        self._digests, self._stamp = digests, stamp
        log.info("keys file %s: %d keys", self.path, len(digests))

    def _suspect(self, stamp: Stamp, digests: tuple[bytes, ...], complete: bool) -> bool:
        """True to keep the previous keys for now: the file changed into something that may be a rewrite in
        progress (no key, an error, no final newline), seen so for the first time."""
        if (digests and complete) or not self._digests or self._pending == stamp:
            return False
        self._pending = stamp
        log.info(
            "keys file %s changed into an unfinished state; its previous keys stay until the next check", self.path
        )
        return True

    def _fail(self, reason: str) -> None:
        # Closed, not open: a key file that cannot be read lets no one in until it can be read again.
        if self._digests or self._stamp is not None:
            log.warning("%s; its keys are refused until it can be read", reason)
        self._digests, self._stamp = (), None
