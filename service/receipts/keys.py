"""Receipt signing keys: HMAC-SHA256 with keys kept in a file read like the API keys (service/keyfile.py).

Why HMAC and not Ed25519: HMAC needs nothing beyond the standard library and is what the API keys already
use; its cost is that whoever verifies holds the key (the server, an auditor with the key file), so a third
party cannot check a receipt without it. Ed25519 (via `cryptography`) would fix that and is the upgrade
path; the receipt's `format` names the scheme.

Rotation works as for the API keys, without a restart: the first key in the file signs, every key in the file
verifies. Put the new key on the first line and keep the old ones below for as long as their receipts must
verify. The HMAC key is the SHA-256 digest of the key line (the file reader keeps only digests).
"""

from __future__ import annotations

import functools
import hmac
import os
from pathlib import Path

from service.errors import NotReady
from service.keyfile import KeyFile, KeyFileError, read_keys
from service.receipts.receipt import FORMAT, Receipt
from service.settings import Settings

_DOMAIN = FORMAT.encode() + b"\n"  # a receipt signature is never a valid HMAC of anything else this server signs


@functools.lru_cache(maxsize=64)
def key_id(digest: bytes) -> str:
    """Names a key in a receipt without revealing it: an HMAC of a constant under the key, 16 hex digits."""
    return hmac.digest(digest, b"invariant-receipt-key-id", "sha256").hex()[:16]


def sign(digest: bytes, signed_part: bytes) -> str:
    return hmac.digest(digest, _DOMAIN + signed_part, "sha256").hex()


class SigningKeys:
    def __init__(self, path: Path) -> None:
        self.file = KeyFile(path)

    def current(self) -> tuple[str, bytes]:
        """(key id, key) of the key that signs now: the file's first."""
        digests = self.file.digests()
        if not digests:
            raise NotReady(f"the receipts key file {self.file.path} cannot be read or holds no key")
        return key_id(digests[0]), digests[0]

    def verifies(self, receipt: Receipt) -> bool:
        """Whether a key of the file signed this receipt (the key named by its key id; compared in constant time)."""
        for digest in self.file.digests():
            if hmac.compare_digest(key_id(digest), receipt.key_id):
                return hmac.compare_digest(sign(digest, receipt.signed_part()), receipt.signature)
        return False


def receipts_problem(settings: Settings) -> str | None:
    """Why the server must not start with these receipt settings (one line naming the fix), or None."""
    path = settings.receipts_key_file
    if path is None:
        if settings.receipts == "always" or settings.receipts_log is not None:
            flag = "--receipts always" if settings.receipts == "always" else "--receipts-log"
            return f"{flag} needs --receipts-key-file PATH (the keys that sign receipts)"
        return None
    try:
        if not read_keys(path):
            return f"--receipts-key-file: {path} holds no key"
    except KeyFileError as exc:
        return f"--receipts-key-file: {exc}"
    directory = settings.receipts_log
    if directory is not None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"--receipts-log {directory}: cannot create the directory ({exc.strerror})"
        if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
            return f"--receipts-log {directory}: not a writable directory"
    return None
