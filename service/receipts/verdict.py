"""Checking a receipt, step by step, the same way in the verify endpoint and in the offline replay:

    signature -> checkpoint (model, version, sha256) -> numerics fingerprint -> input digest -> recompute -> bits

Each step answers a `Verdict` (a mismatch with its reason) or None to go on; the caller recomputes the row
alone (it owns the executor) and asks `bits_verdict` last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from service.receipts.keys import SigningKeys
from service.receipts.receipt import ModelIdentity, Receipt

Reason = Literal["bad_signature", "unknown_checkpoint", "other_fingerprint", "other_input", "other_bits"]
REASONS: tuple[Reason, ...] = ("bad_signature", "unknown_checkpoint", "other_fingerprint", "other_input", "other_bits")


@dataclass(frozen=True)
class Verdict:
    result: Literal["match", "mismatch"]
    reason: Reason | None = None
    detail: str = ""
    differing: dict[str, dict[str, Any]] = field(default_factory=dict)  # numerics part -> receipt's, this side's

    def as_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"result": self.result, "reason": self.reason, "detail": self.detail}
        if self.reason == "other_fingerprint":
            answer["differing_parts"] = self.differing
        return answer


MATCH = Verdict("match", None, "the row alone gives the receipt's output bits")


def signature_verdict(receipt: Receipt, keys: SigningKeys) -> Verdict | None:
    if keys.verifies(receipt):
        return None
    return Verdict("mismatch", "bad_signature", "no key of this server signed this receipt as it stands")


def not_served(receipt: Receipt, why: str = "") -> Verdict:
    """The receipt's model version is not served on this side (`why`: " (its reason)" or "")."""
    named = f"model {receipt.model!r} version {receipt.version!r}"
    return Verdict("mismatch", "unknown_checkpoint", f"{named} is not served here{why}")


def checkpoint_verdict(receipt: Receipt, identity: ModelIdentity) -> Verdict | None:
    """`identity`: the model this side serves as the receipt's model and version."""
    if identity.checkpoint_sha256 == receipt.checkpoint_sha256:
        return None
    return Verdict(
        "mismatch",
        "unknown_checkpoint",
        f"model {receipt.model!r} version {receipt.version!r} here has checkpoint sha256 "
        f"{identity.checkpoint_sha256}, the receipt names {receipt.checkpoint_sha256}",
    )


def fingerprint_verdict(receipt: Receipt, identity: ModelIdentity) -> Verdict | None:
    if identity.fingerprint == receipt.fingerprint and identity.numerics == receipt.numerics:
        return None
    differing = {
        part: {"receipt": receipt.numerics.get(part), "here": identity.numerics.get(part)}
        for part in sorted(receipt.numerics.keys() | identity.numerics.keys())
        if receipt.numerics.get(part) != identity.numerics.get(part)
    }
    shown = ", ".join(differing) or "none of the parts (the fingerprint itself)"
    return Verdict(
        "mismatch",
        "other_fingerprint",
        f"numerics fingerprint here {identity.fingerprint}, in the receipt {receipt.fingerprint}; differing: {shown}",
        differing,
    )


def input_verdict(receipt: Receipt, digest: str) -> Verdict | None:
    if digest == receipt.input_sha256:
        return None
    return Verdict(
        "mismatch", "other_input", f"the input given hashes to {digest}, the receipt's to {receipt.input_sha256}"
    )


def bits_verdict(receipt: Receipt, digest: str) -> Verdict:
    if digest == receipt.output_sha256:
        return MATCH
    return Verdict(
        "mismatch",
        "other_bits",
        f"the row alone gives outputs hashing to {digest}, the receipt's {receipt.output_sha256}",
    )
