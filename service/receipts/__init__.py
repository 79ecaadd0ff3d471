"""Prediction receipts, protocol-neutral: a signed record per answered row that lets an auditor show, later,
that a decision is the one the model gives for that input alone (docs/receipts.md).

receipt.py: the fields, digests and canonical encoding; keys.py: HMAC signing keys from a key file;
issuer.py: building receipts for an answer; log.py: the append-only JSON-lines log (its own thread) and its
reader; verdict.py: the checks, shared by POST /v2/receipts/verify and `python -m service.replay`.
Free of torch and of every floor above the observability one: the data plane and the protocols use it.
"""

from service.receipts.issuer import Receipts
from service.receipts.keys import SigningKeys, receipts_problem
from service.receipts.log import LogReading, ReceiptLog, read_log
from service.receipts.receipt import ModelIdentity, Receipt, ReceiptError, parse_receipt
from service.receipts.verdict import Verdict

__all__ = [
    "LogReading",
    "ModelIdentity",
    "Receipt",
    "ReceiptError",
    "ReceiptLog",
    "Receipts",
    "SigningKeys",
    "Verdict",
    "parse_receipt",
    "read_log",
    "receipts_problem",
]
