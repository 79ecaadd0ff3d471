"""API keys, transport-neutral: who may call what. The HTTP dispatcher (service/http/auth.py) and the gRPC
servicer (service/grpc/) ask the same `Keys.denial` with the Bearer token their transport carried, and turn
its answer into 401/403 or UNAUTHENTICATED/PERMISSION_DENIED.

Keys live in files (one per line, `#` comments), never on the command line, which any local user can read
in /proc/<pid>/cmdline. A file is re-read when it changes (checked at most once a second per process), so a
key is rotated by rewriting the file, without a restart. Only SHA-256 digests of the keys are kept, compared in
constant time; no key is ever logged.

Access levels: `public` needs no key; `inference` takes an API key or an admin key (an admin may do everything
a client may); `admin` takes only an admin key (an API key is refused as forbidden).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.settings import Settings

Access = Literal["public", "inference", "admin"]
PUBLIC: Access = "public"
INFERENCE: Access = "inference"
ADMIN: Access = "admin"

MIN_KEY_CHARS = 16
RECHECK_S = 1.0  # how stale a key file may be: rotation takes effect within this long
log = logging.getLogger("invariant.auth")


class KeyFileError(Exception):
    pass


@dataclass(frozen=True)
class Denial:
    """Why a caller may not go on: `unauthenticated` (no key or an unknown one: HTTP 401) or `forbidden`
    (a valid key of too low a level: HTTP 403)."""

    kind: Literal["unauthenticated", "forbidden"]
    message: str


MISSING_KEY = "missing API key: send the header Authorization: Bearer <key>"


class Keys:
    """The API and admin keys of one process; `denial` decides from the caller's Bearer token alone."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = auth_enabled(settings)
        self.api_keys = KeyFile(settings.api_keys_file)
        self.admin_keys = KeyFile(settings.admin_keys_file)

    def denial(self, token: bytes | None, access: Access | None) -> Denial | None:
        """None to let the call in. access None: nothing is served there (any valid key may learn so; without
        one, nothing is revealed)."""
        if not self.enabled or access == PUBLIC:
            return None
        if token is None:
            return Denial("unauthenticated", MISSING_KEY)
        digest = _digest(token)
        if self.admin_keys.holds(digest):
            return None
        if self.api_keys.holds(digest):
            return Denial("forbidden", "this route needs an admin key") if access == ADMIN else None
        return Denial("unauthenticated", "invalid API key")


def bearer_of(value: bytes) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` value, else None."""
    scheme, _, token = value.strip().partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


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
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        digests.append(_digest(key.encode()))
    return tuple(digests)


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class KeyFile:
    """The keys of one file (none when `path` is None), re-read when its inode, size or mtime changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._digests: tuple[bytes, ...] = ()
        self._stamp: tuple[int, int, int, int] | None = None
        self._checked_at = -RECHECK_S
        self._refresh(time.monotonic())

    def holds(self, digest: bytes) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= RECHECK_S:
            self._refresh(now)
        found = False
        for known in self._digests:  # no early exit: the time taken does not depend on which key matched
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


def auth_enabled(settings: Settings) -> bool:
    return settings.api_keys_file is not None or settings.admin_keys_file is not None
