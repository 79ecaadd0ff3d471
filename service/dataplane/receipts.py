"""Receipts on the data plane: issuing them for an answer, and checking one by recomputing its row alone.

The signing, the log and the checks live below (service/receipts/); here they meet the served models.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from service.dataplane.offload import OFFLOAD_ROWS, beside_loop_if
from service.dataplane.requests import InferRequest, NestedRows
from service.engine.types import Float32Array, Outputs
from service.errors import BadRequest, NotFound
from service.lifecycle.loader import ServedModel
from service.lifecycle.registry import ModelRegistry
from service.receipts import ModelIdentity, Receipt, Receipts, Verdict
from service.receipts.receipt import input_digest, output_digest
from service.receipts.verdict import (
    bits_verdict,
    checkpoint_verdict,
    fingerprint_verdict,
    input_verdict,
    not_served,
    signature_verdict,
)

NO_KEYS = "this server has no receipts key: start it with --receipts-key-file PATH to issue and verify receipts"


def identity_of(served: ServedModel) -> ModelIdentity:
    numerics = served.numerics
    return ModelIdentity(served.name, str(served.version), served.sha256, numerics.fingerprint, numerics.parts)


def refuse_unless_issued(receipts: Receipts, request: InferRequest) -> None:
    """Before any work: a request asking for receipts a server cannot sign is refused, not answered without."""
    if request.receipts and receipts.keys is None:
        raise BadRequest(NO_KEYS)


async def issue(
    receipts: Receipts, served: ServedModel, request: InferRequest, rows: Float32Array, outputs: Outputs
) -> list[dict[str, Any]] | None:
    """The answer's receipts when it carries them (else None); every answered row's go to the log if kept."""
    returned = receipts.returned(request.receipts)
    if not returned and not receipts.logged():
        return None
    parts = (identity_of(served), rows, outputs.logits, outputs.probabilities, outputs.class_index)
    request_id = request.request_id or uuid.uuid4().hex
    if not returned:
        receipts.log_later(*parts, request_id)
        return None
    large = rows.shape[0] >= OFFLOAD_ROWS
    issued: list[dict[str, Any]] = await beside_loop_if(large, receipts.issue, *parts, request_id)
    return issued


async def verify(receipts: Receipts, registry: ModelRegistry, receipt: Receipt, row: NestedRows) -> Verdict:
    """Signature, checkpoint, fingerprint, input, then the row recomputed alone (one C-row forward beside the
    event loop, through the executor that serves the model) and its output bits."""
    if receipts.keys is None:
        raise BadRequest(NO_KEYS)
    verdict = signature_verdict(receipt, receipts.keys)
    if verdict is not None:
        return verdict
    served, why = _served(registry, receipt)
    if served is None:
        return not_served(receipt, why)
    verdict = checkpoint_verdict(receipt, identity_of(served)) or fingerprint_verdict(receipt, identity_of(served))
    if verdict is not None:
        return verdict
    decoded = row.decode(served.manifest.input)  # (1, *input_shape); a bad row is a 400 naming it
    verdict = input_verdict(receipt, input_digest(decoded[0]))
    if verdict is not None:
        return verdict
    outputs = await asyncio.to_thread(served.batcher.executor.run, decoded)
    return bits_verdict(
        receipt, output_digest(outputs.logits[0], outputs.probabilities[0], int(outputs.class_index[0]))
    )


def _served(registry: ModelRegistry, receipt: Receipt) -> tuple[ServedModel | None, str]:
    try:
        found = registry.find(receipt.model, receipt.version)
    except NotFound:
        return None, ""
    if isinstance(found, ServedModel):
        return found, ""
    return None, f" ({found.reason or 'still loading'})"
