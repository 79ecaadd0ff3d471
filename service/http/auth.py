"""API keys: who may call which route. The dispatcher (dispatch.py) asks `Guard.refusal` before every request.

Keys live in files (one per line, `#` comments), never on the command line, which any local user can read
in /proc/<pid>/cmdline. A file is re-read when it changes (checked at most once a second per process), so a
key is rotated by rewriting the file, without a restart. Only SHA-256 digests of the keys are kept, compared in
constant time; no key is ever logged.

Access levels: `public` routes need no key; `inference` routes take an API key or an admin key (an admin may
do everything a client may); `admin` routes take only an admin key (an API key gets 403).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import time
from pathlib import Path
from typing import Literal

import orjson
from starlette.responses import Response
from starlette.types import Scope

from service.settings import Settings

Access = Literal["public", "inference", "admin"]
PUBLIC: Access = "public"
INFERENCE: Access = "inference"
ADMIN: Access = "admin"

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="invariant-serve"'}
MIN_KEY_CHARS = 16
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


class Guard:
    """Decides, from the Authorization header alone, whether a request may reach a route of given access."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = auth_enabled(settings)
        self.api_keys = KeyFile(settings.api_keys_file)
        self.admin_keys = KeyFile(settings.admin_keys_file)

    def refusal(self, scope: Scope, access: Access | None) -> Response | None:
        """None to let the request in, else the 401/403 answer. access None: a path no route serves (any valid
        key may learn that it is 404; without one, nothing is revealed)."""
        if not self.enabled or access == PUBLIC:
            return None
        token = bearer_token(scope)
        if token is None:
            return _unauthorized("missing API key: send the header Authorization: Bearer <key>")
        digest = _digest(token)
        if self.admin_keys.holds(digest):
            return None
        if self.api_keys.holds(digest):
            return _refused(403, "this route needs an admin key") if access == ADMIN else None
        return _unauthorized("invalid API key")


def _unauthorized(message: str) -> Response:
    return _refused(401, message, CHALLENGE)


def _refused(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    # Built here rather than with http.json_response: the CLI imports this module, and must not import torch.
    return Response(orjson.dumps({"error": message}), status, headers, media_type="application/json")


def bearer_token(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            token = token.strip()
            return token if scheme.lower() == b"bearer" and token else None
    return None


def auth_enabled(settings: Settings) -> bool:
    return settings.api_keys_file is not None or settings.admin_keys_file is not None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def startup_problem(settings: Settings) -> str | None:
    """Why the server must not start with these settings (one line naming the fix), or None."""
    for flag, path in (("--api-keys-file", settings.api_keys_file), ("--admin-keys-file", settings.admin_keys_file)):
        if path is not None:
            try:
                read_keys(path)
            except KeyFileError as exc:
                return f"{flag}: {exc}"
    if settings.protect_metrics and settings.admin_keys_file is None:
        return "--protect-metrics needs --admin-keys-file PATH (the keys that may read /metrics)"
    if not auth_enabled(settings) and not is_loopback(settings.host) and not settings.allow_unauthenticated:
        return (
            f"refusing to serve on {settings.host} without API keys: pass --api-keys-file PATH (one key per line), "
            "or --allow-unauthenticated if anyone who can reach this address may use the server"
        )
    return None
