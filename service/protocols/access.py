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

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from service.errors import BadRequest
from service.keyfile import KeyFile, digest_of
from service.settings import Settings

Access = Literal["public", "inference", "admin"]
PUBLIC: Access = "public"
INFERENCE: Access = "inference"
ADMIN: Access = "admin"

log = logging.getLogger("invariant.auth")


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
        digest = digest_of(token)
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


def single_bearer(values: Sequence[bytes]) -> bytes | None:
    """The token of the caller's one Authorization value (None without one); BadRequest for two or more."""
    if len(values) > 1:
        raise BadRequest("more than one Authorization header: send one")
    return bearer_of(values[0]) if values else None


def auth_enabled(settings: Settings) -> bool:
    return settings.api_keys_file is not None or settings.admin_keys_file is not None
