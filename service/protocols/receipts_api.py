"""`POST /v2/receipts/verify`: {"receipt": <a receipt>, "input": <the row>} -> {"result": "match"} or
{"result": "mismatch", "reason": ..., "detail": ...}. Route: service/http/routes.py (access: inference).

The row is given as a V1 row (a list of numbers, nested lists, or an object keyed by feature names): the
same decoding as a predict, so the row a client sent for the prediction is the row it sends here.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from service.dataplane import DataPlane, NestedRows
from service.dataplane.offload import OFFLOAD_BYTES, beside_loop_if
from service.errors import BadRequest
from service.protocols.wire import BodyReader, json_response, parse_json_object
from service.receipts import Receipt, ReceiptError, parse_receipt


@dataclass(frozen=True)
class VerifyRequest:
    receipt: Receipt
    row: NestedRows  # one row


class ReceiptsApi:
    def __init__(self, plane: DataPlane, reader: BodyReader) -> None:
        self.plane = plane
        self.reader = reader

    async def verify(self, request: Request) -> Response:
        raw = await self.reader.read(request)
        parsed = await beside_loop_if(len(raw) >= OFFLOAD_BYTES, parse_verify, raw)
        verdict = await self.plane.verify_receipt(parsed.receipt, parsed.row)
        return json_response(verdict.as_json())


def parse_verify(raw: bytes) -> VerifyRequest:
    body = parse_json_object(raw)
    unknown = sorted(str(key)[:64] for key in body.keys() - {"receipt", "input"})
    if unknown or "receipt" not in body or "input" not in body:
        raise BadRequest(f'the body is {{"receipt": <receipt>, "input": <row>}} (unknown fields: {unknown})')
    try:
        receipt = parse_receipt(body["receipt"])
    except ReceiptError as exc:
        raise BadRequest(str(exc)) from None
    row = body["input"]
    if not isinstance(row, list | dict) or not row:
        raise BadRequest('"input" must be one row: a list of numbers, nested lists, or an object of features')
    return VerifyRequest(receipt, NestedRows([row]))
