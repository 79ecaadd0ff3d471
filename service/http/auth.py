"""API keys: who may call which route. The dispatcher (dispatch.py) asks `Guard.refusal` before every request.

Keys live in files read by service/keyfile.py (one per line, re-read when the file changes, so a key is
rotated by rewriting the file); only their SHA-256 digests are kept, compared here in constant time.

Access levels: `public` routes need no key; `inference` routes take an API key or an admin key (an admin may
do everything a client may); `admin` routes take only an admin key (an API key gets 403).
"""

from __future__ import annotations

import ipaddress
from typing import Literal

import orjson
from starlette.responses import Response
from starlette.types import Scope

from service.keyfile import KeyFile, KeyFileError, digest_of, read_keys
from service.settings import Settings

Access = Literal["public", "inference", "admin"]
PUBLIC: Access = "public"
INFERENCE: Access = "inference"
ADMIN: Access = "admin"

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="invariant-serve"'}


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
        digest = digest_of(token)
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
