"""API keys over HTTP: the dispatcher (dispatch.py) asks `Guard.refusal` before every request. The keys and the
decision are transport-neutral (service/protocols/access.py, shared with gRPC); this module reads the
Authorization header and answers 401/403, and checks the key settings at start-up.
"""

from __future__ import annotations

import ipaddress

import orjson
from starlette.responses import Response
from starlette.types import Scope

from service.errors import BadRequest
from service.keyfile import MIN_KEY_CHARS, RECHECK_S, KeyFile, KeyFileError, read_keys
from service.protocols.access import ADMIN, INFERENCE, PUBLIC, Access, Keys, auth_enabled, single_bearer
from service.settings import Settings

__all__ = [
    "ADMIN",
    "INFERENCE",
    "MIN_KEY_CHARS",
    "PUBLIC",
    "RECHECK_S",
    "Access",
    "Guard",
    "KeyFile",
    "KeyFileError",
    "auth_enabled",
    "bearer_token",
    "is_loopback",
    "read_keys",
    "startup_problem",
]

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="invariant-serve"'}


class Guard:
    """Decides, from the Authorization header alone, whether a request may reach a route of given access."""

    def __init__(self, settings: Settings) -> None:
        self.keys = Keys(settings)
        self.enabled = self.keys.enabled

    def refusal(self, scope: Scope, access: Access | None) -> Response | None:
        """None to let the request in, else the 401/403 answer. access None: a path no route serves (any valid
        key may learn that it is 404; without one, nothing is revealed)."""
        if not self.enabled or access == PUBLIC:
            return None
        try:
            token = bearer_token(scope)
        except BadRequest as exc:
            return _refused(400, exc.message)
        denial = self.keys.denial(token, access)
        if denial is None:
            return None
        if denial.kind == "forbidden":
            return _refused(403, denial.message)
        return _refused(401, denial.message, CHALLENGE)


def _refused(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    # Built here rather than with http.json_response: the CLI imports this module, and must not import torch.
    return Response(orjson.dumps({"error": message}), status, headers, media_type="application/json")


def bearer_token(scope: Scope) -> bytes | None:
    """The Bearer token of the one Authorization header; BadRequest when there are two (which one a proxy
    or a framework would read differs: the first, the last, or both joined)."""
    return single_bearer([value for name, value in scope["headers"] if name == b"authorization"])


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
