"""Receipts without a server: signing and key rotation, the canonical encoding an auditor can reproduce with
the standard library alone, the log writer (rotation, batches) and the reader (torn tail, damaged lines)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_keys as write_key_file

from service.cli import load_settings
from service.errors import BadRequest
from service.observability.metrics import Metrics
from service.protocols.v1 import receipts_asked
from service.receipts import LogReading, ModelIdentity, ReceiptLog, Receipts, parse_receipt, read_log
from service.receipts.receipt import ReceiptError
from service.settings import Settings

OLD_KEY = "receipt-key-old-0123456789abcdef"
NEW_KEY = "receipt-key-new-0123456789abcdef"
IDENTITY = ModelIdentity(
    "tiny", "1", "ab" * 32, "0123456789abcdef", {"chunk_rows": 32, "threads": 1, "dtype": "float32"}
)


def receipts_with(key_file: Path, metrics: Metrics | None = None) -> Receipts:
    return Receipts(Settings(receipts_key_file=key_file), metrics or Metrics())


def some_receipts(receipts: Receipts, rows: int = 3) -> list[dict[str, object]]:
    generator = np.random.default_rng(0)
    inputs = generator.standard_normal((rows, 16)).astype(np.float32)
    logits = generator.standard_normal((rows, 4)).astype(np.float32)
    probabilities = np.full((rows, 4), 0.25, dtype=np.float32)
    classes = logits.argmax(axis=1).astype(np.int64)
    return receipts.build(IDENTITY, inputs, logits, probabilities, classes, "request-1", "2026-12-03T09:00:00.000000Z")


def write_keys(path: Path, *keys: str) -> None:
    write_key_file(path, "".join(f"{key}\n" for key in keys))
    stamp = time.time_ns() + 2_000_000_000  # a new mtime, and re-read at once: the reader re-checks each second
    os.utime(path, ns=(stamp, stamp))


def test_receipts_verify_and_carry_digests_not_inputs(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, OLD_KEY)
    receipts = receipts_with(keys)
    built = some_receipts(receipts)
    assert [r["row"] for r in built] == [0, 1, 2]
    inputs = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    assert built[1]["input_sha256"] == hashlib.sha256(inputs[1].astype("<f4").tobytes()).hexdigest()
    assert receipts.keys is not None
    assert all(receipts.keys.verifies(parse_receipt(r)) for r in built)
    tampered = parse_receipt({**built[0], "output_sha256": "0" * 64})
    assert not receipts.keys.verifies(tampered)


def test_an_auditor_checks_a_signature_with_the_standard_library(tmp_path: Path) -> None:
    """The encoding docs/receipts.md states: HMAC-SHA256, key sha256(key line), over a domain line and the
    receipt without its signature as sorted, compact JSON."""
    keys = tmp_path / "keys"
    write_keys(keys, OLD_KEY)
    receipt = dict(some_receipts(receipts_with(keys), rows=1)[0])
    signature = receipt.pop("signature")
    message = b"invariant-receipt/1\n" + json.dumps(receipt, sort_keys=True, separators=(",", ":")).encode()
    key = hashlib.sha256(OLD_KEY.encode()).digest()
    assert hmac.new(key, message, hashlib.sha256).hexdigest() == signature


def test_rotation_signs_with_the_first_key_and_verifies_with_every_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, OLD_KEY)
    receipts = receipts_with(keys)
    old = [parse_receipt(r) for r in some_receipts(receipts)]
    write_keys(keys, NEW_KEY, OLD_KEY)
    receipts.keys.file._checked_at = -1e9  # type: ignore[union-attr]  # re-read now, not within a second
    new = [parse_receipt(r) for r in some_receipts(receipts)]
    assert receipts.keys is not None
    assert new[0].key_id != old[0].key_id
    assert all(receipts.keys.verifies(r) for r in old + new)
    write_keys(keys, NEW_KEY)  # the old key retired: its receipts no longer verify
    receipts.keys.file._checked_at = -1e9
    assert not any(receipts.keys.verifies(r) for r in old)
    assert all(receipts.keys.verifies(r) for r in new)


def test_a_receipt_from_untrusted_json_is_checked_field_by_field(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, OLD_KEY)
    receipt = some_receipts(receipts_with(keys), rows=1)[0]
    for broken, message in (
        ({**receipt, "extra": 1}, "unknown \\['extra'\\]"),
        ({k: v for k, v in receipt.items() if k != "row"}, "missing \\['row'\\]"),
        ({**receipt, "row": -1}, '"row"'),
        ({**receipt, "input_sha256": "AB" * 32}, '"input_sha256"'),
        ({**receipt, "model": "m" * 2000}, '"model"'),
        ({**receipt, "format": "other/1"}, '"format"'),
    ):
        with pytest.raises(ReceiptError, match=message):
            parse_receipt(broken)


def test_the_v1_receipts_flag_is_true_or_false() -> None:
    assert receipts_asked(None, None) is False
    assert receipts_asked("true", None) is True
    assert receipts_asked(None, "TRUE") is True
    assert receipts_asked("false", "false") is False
    with pytest.raises(BadRequest, match="X-Receipts must be true or false"):
        receipts_asked("yes", None)


def test_the_log_rotates_by_size_and_reads_back_every_receipt(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, OLD_KEY)
    receipts = receipts_with(keys)
    metrics = Metrics()
    log = ReceiptLog(tmp_path / "log", 8192, metrics)
    (tmp_path / "log").mkdir()
    log.start()
    written = [r for _ in range(20) for r in some_receipts(receipts)]
    for start in range(0, len(written), 3):
        log.submit(3, functools.partial(list, written[start : start + 3]))
    log.close()
    reading = LogReading()
    assert [r.as_dict() for r in read_log(tmp_path / "log", reading)] == written
    assert reading.files == len(list((tmp_path / "log").iterdir())) > 1
    assert (reading.torn, reading.corrupt) == (0, [])
    assert all(path.stat().st_size <= 8192 for path in (tmp_path / "log").iterdir())
    assert metrics.receipts_logged._value.get() == len(written)


def test_the_reader_skips_a_torn_last_line_and_reports_damaged_ones(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, OLD_KEY)
    lines = [json.dumps(r).encode() + b"\n" for r in some_receipts(receipts_with(keys))]
    log = tmp_path / "receipts-20261203T090000Z-1-0001.jsonl"
    log.write_bytes(lines[0] + b'{"format": "invariant-receipt/1"}\n' + lines[1] + lines[2][:40])
    reading = LogReading()
    assert [r.row for r in read_log(tmp_path, reading)] == [0, 1]
    assert reading.torn == 1
    assert len(reading.corrupt) == 1
    assert reading.corrupt[0].startswith(f"{log.name}:2: receipt fields: missing")


def test_receipt_flags_without_a_key_file_stop_the_server_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for flags, named in ((["--receipts", "always"], "--receipts always"), (["--receipts-log", "x"], "--receipts-log")):
        with pytest.raises(SystemExit) as stopped:
            load_settings(["--repository", str(tmp_path), *flags])
        assert stopped.value.code == 2
        expected = f"invariant-serve: error: {named} needs --receipts-key-file PATH (the keys that sign receipts)\n"
        assert capsys.readouterr().err == expected
    write_keys((tmp_path / "empty.keys"), "# none yet\n")
    with pytest.raises(SystemExit):
        load_settings(["--repository", str(tmp_path), "--receipts-key-file", str(tmp_path / "empty.keys")])
    assert (
        capsys.readouterr().err == f"invariant-serve: error: --receipts-key-file: {tmp_path}/empty.keys holds no key\n"
    )
