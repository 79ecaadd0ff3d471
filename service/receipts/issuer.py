"""Issuing receipts: one signed receipt per answered row, returned to the client when asked (or always), and
handed to the receipts log for every answered row when the server keeps one.

Cost on the request path: a receipt the client gets back is built and signed there (two sha256 of a few
hundred bytes, one HMAC, one small JSON per row); a receipt only the log needs is built on the log's thread
from the rows and outputs the request already holds (nothing copied).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from service.observability.metrics import Metrics
from service.receipts.keys import SigningKeys, sign
from service.receipts.log import ReceiptLog
from service.receipts.receipt import FORMAT, ModelIdentity, canonical, input_digest, output_digest
from service.settings import Settings

Array = npt.NDArray[Any]


class Receipts:
    """The server's receipts: its signing keys (None: it issues and verifies none), whether every answer
    carries receipts, and its log (None: no log)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        path = settings.receipts_key_file
        self.keys = SigningKeys(path) if path is not None else None
        self.always = settings.receipts == "always"
        directory = settings.receipts_log
        self.log = ReceiptLog(directory, settings.receipts_log_max_bytes, metrics) if directory is not None else None
        self._issued = metrics.receipts_issued

    def start(self) -> None:
        if self.log is not None:
            self.log.start()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def returned(self, asked: bool) -> bool:
        """Whether this answer carries receipts."""
        return self.keys is not None and (asked or self.always)

    def logged(self) -> bool:
        return self.keys is not None and self.log is not None

    def issue(
        self, identity: ModelIdentity, rows: Array, logits: Array, probabilities: Array, classes: Array, request_id: str
    ) -> list[dict[str, Any]]:
        """Signed receipts for rows (N, *input_shape) and their outputs (N, K), (N, K), (N,); logged too."""
        receipts = self.build(identity, rows, logits, probabilities, classes, request_id, now())
        self._issued.inc(len(receipts))
        if self.log is not None:
            self.log.submit(len(receipts), lambda: receipts)
        return receipts

    def log_later(
        self, identity: ModelIdentity, rows: Array, logits: Array, probabilities: Array, classes: Array, request_id: str
    ) -> None:
        """Receipts for the log only: built on the log's thread, with the time of the answer."""
        if self.log is None:
            return
        answered_at = now()

        def build() -> list[dict[str, Any]]:
            return self.build(identity, rows, logits, probabilities, classes, request_id, answered_at)

        self.log.submit(int(rows.shape[0]), build)

    def build(
        self,
        identity: ModelIdentity,
        rows: Array,
        logits: Array,
        probabilities: Array,
        classes: Array,
        request_id: str,
        answered_at: str,
    ) -> list[dict[str, Any]]:
        assert self.keys is not None
        key_id, key = self.keys.current()
        common = {
            "format": FORMAT,
            "model": identity.model,
            "version": identity.version,
            "checkpoint_sha256": identity.checkpoint_sha256,
            "fingerprint": identity.fingerprint,
            "numerics": identity.numerics,
            "request_id": request_id,
            "time": answered_at,
            "key_id": key_id,
        }
        receipts = []
        for index, row in enumerate(np.asarray(rows, dtype=np.float32)):
            receipt = {
                **common,
                "row": index,
                "input_sha256": input_digest(row),
                "output_sha256": output_digest(logits[index], probabilities[index], int(classes[index])),
            }
            receipt["signature"] = sign(key, canonical(receipt))
            receipts.append(receipt)
        return receipts


def now() -> str:
    """UTC with microseconds: 2026-12-03T09:15:02.123456Z."""
    seconds = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e6):06d}Z"
