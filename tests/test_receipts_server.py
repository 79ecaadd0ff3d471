"""Receipts end to end through a real server: issued under concurrent load, each verified by
POST /v2/receipts/verify and by the offline replay; tampering caught with its reason; the log through a
SIGKILL and a full disk (a file-size rlimit on the server process)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from conftest import ROOT, RunningServer, start_server, stop_server, write_keys

from service.receipts import LogReading, SigningKeys, read_log
from service.receipts.keys import sign
from service.receipts.receipt import canonical, output_digest

KEY = "receipts-key-0123456789abcdef"
REQUESTS = 1000
CONNECTIONS = 64
pytestmark = pytest.mark.slow

Pair = tuple[dict[str, Any], list[float]]  # (receipt, the row it covers)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "receipt-keys"
    write_keys(path, f"# receipts\n{KEY}\n")
    return path


def rows_for(request: int) -> list[list[float]]:
    """1 or 2 rows of 16 float32 values, as JSON numbers that read back to the same float32."""
    generator = np.random.default_rng(request)
    rows: list[list[float]] = generator.standard_normal((1 + request % 2, 16)).astype(np.float32).tolist()
    return rows


async def one_request(http: httpx.AsyncClient, request: int) -> list[Pair]:
    """V1 with the header, V1 with the query flag, V2 with the parameter, in turn; each answer's receipts
    checked against the answer it came with."""
    rows = rows_for(request)
    kind = request % 3
    if kind < 2:
        headers, params = ({"X-Receipts": "true"}, None) if kind == 0 else ({}, {"receipts": "true"})
        answer = await http.post("/v1/models/tiny:predict", json={"instances": rows}, headers=headers, params=params)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        receipts = [p["receipt"] for p in predictions]
        outputs = [(p["logits"], p["probabilities"], int(p["label"].split("-")[1])) for p in predictions]
    else:
        body = {
            "id": f"request-{request}",
            "parameters": {"receipts": True},
            "inputs": [{"name": "input", "shape": [len(rows), 16], "datatype": "FP32", "data": rows}],
        }
        answer = await http.post("/v2/models/tiny/infer", json=body)
        assert answer.status_code == 200, answer.text
        reply = answer.json()
        receipts = reply["parameters"]["receipts"]
        tensors = {t["name"]: t["data"] for t in reply["outputs"]}
        logits, probabilities = (
            np.reshape(tensors["logits"], (len(rows), 4)),
            np.reshape(tensors["probabilities"], (len(rows), 4)),
        )
        outputs = [(logits[i], probabilities[i], tensors["class_index"][i]) for i in range(len(rows))]
        assert {r["request_id"] for r in receipts} == {f"request-{request}"}
    assert [r["row"] for r in receipts] == list(range(len(rows)))
    for receipt, row, (logits_row, probabilities_row, index) in zip(receipts, rows, outputs, strict=True):
        assert receipt["input_sha256"] == hashlib.sha256(np.asarray(row, "<f4").tobytes()).hexdigest()
        expected = output_digest(np.asarray(logits_row, np.float32), np.asarray(probabilities_row, np.float32), index)
        assert receipt["output_sha256"] == expected
    return list(zip(receipts, rows, strict=True))


async def under_load(url: str, requests: range) -> list[Pair]:
    limits = httpx.Limits(max_connections=CONNECTIONS)
    gate = asyncio.Semaphore(CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:

        async def bounded(request: int) -> list[Pair]:
            async with gate:
                return await one_request(http, request)

        answers = await asyncio.gather(*(bounded(i) for i in requests))
    return [pair for pairs in answers for pair in pairs]


async def verify_all(url: str, pairs: list[Pair]) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def verify(receipt: dict[str, Any], row: list[float]) -> dict[str, Any]:
            async with gate:
                answer = await http.post("/v2/receipts/verify", json={"receipt": receipt, "input": row})
                assert answer.status_code == 200, answer.text
                verdict: dict[str, Any] = answer.json()
                return verdict

        return await asyncio.gather(*(verify(r, row) for r, row in pairs))


def resigned(receipt: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The receipt with fields changed and signed again with the server's key: what a forger holding the key,
    or a different computation, would produce. Only the checks after the signature can catch it."""
    changed = {**receipt, **changes}
    del changed["signature"]
    return {**changed, "signature": sign(hashlib.sha256(KEY.encode()).digest(), canonical(changed))}


def wait_logged(directory: Path, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """The log's receipts once it holds `count` (the writer runs beside the answers, so it may lag)."""
    deadline = time.monotonic() + timeout_s
    while True:
        logged = [r.as_dict() for r in read_log(directory, LogReading())] if any(directory.iterdir()) else []
        if len(logged) >= count or time.monotonic() > deadline:
            return logged
        time.sleep(0.2)


def replay(repository: Path, log: Path, inputs: Path, key_file: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "service.replay", "--repository", str(repository), "--receipts", str(log)]
    command += ["--inputs", str(inputs), "--receipts-key-file", str(key_file)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def metric(server: RunningServer, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_every_receipt_under_load_verifies_by_the_endpoint_and_the_replay(
    tiny_repository: Path, tmp_path: Path, key_file: Path
) -> None:
    log = tmp_path / "receipts"
    server = start_server(tiny_repository, tmp_path, "--receipts-key-file", str(key_file), "--receipts-log", str(log))
    try:
        pairs = asyncio.run(under_load(server.url, range(REQUESTS)))
        assert len(pairs) == REQUESTS * 3 // 2
        verdicts = asyncio.run(verify_all(server.url, pairs))
        assert [v["result"] for v in verdicts] == ["match"] * len(pairs)
        logged = wait_logged(log, len(pairs))
        assert sorted(r["signature"] for r in logged) == sorted(r["signature"] for r, _ in pairs)
        assert metric(server, "invariant_receipts_issued_total") == len(pairs)
        check_tampering(server, *pairs[0])
    finally:
        stop_server(server)
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_bytes(b"".join(orjson.dumps(row) + b"\n" for _, row in pairs))
    replayed = replay(tiny_repository, log, inputs, key_file)
    print(replayed.stdout)  # the summary table, shown with pytest -s
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f"{len(pairs)}/{len(pairs)} receipts match" in replayed.stdout
    assert re.search(rf"^tiny\s+1\s+{len(pairs)}\s+{len(pairs)}(\s+0){{5}}$", replayed.stdout, re.MULTILINE)
    tampered = tmp_path / "tampered.jsonl"
    receipt = pairs[0][0]
    tampered.write_bytes(
        orjson.dumps(receipt) + b"\n" + orjson.dumps(resigned(receipt, output_sha256="0" * 64)) + b"\n"
    )
    replayed = replay(tiny_repository, tampered, inputs, key_file)
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert re.search(r"^tiny\s+1\s+2\s+1\s+0\s+0\s+0\s+0\s+1$", replayed.stdout, re.MULTILINE), replayed.stdout
    assert "1/2 receipts match: FAILED" in replayed.stdout


def check_tampering(server: RunningServer, receipt: dict[str, Any], row: list[float]) -> None:
    """One tampered field per kind, each caught with its reason."""
    other_row = [*row[:-1], float(np.nextafter(np.float32(row[-1]), np.float32(np.inf)))]  # one ulp away
    flipped = receipt["signature"][:-1] + ("0" if receipt["signature"][-1] != "0" else "1")
    threads = receipt["numerics"]["threads"] + 1
    cases = [
        ("input", receipt, other_row, "other_input"),
        ("output, not re-signed", {**receipt, "output_sha256": "0" * 64}, row, "bad_signature"),
        ("output", resigned(receipt, output_sha256="0" * 64), row, "other_bits"),
        ("version, not re-signed", {**receipt, "version": "2"}, row, "bad_signature"),
        ("version", resigned(receipt, version="2"), row, "unknown_checkpoint"),
        ("checkpoint", resigned(receipt, checkpoint_sha256="0" * 64), row, "unknown_checkpoint"),
        (
            "fingerprint",
            resigned(receipt, numerics={**receipt["numerics"], "threads": threads}),
            row,
            "other_fingerprint",
        ),
        ("signature", {**receipt, "signature": flipped}, row, "bad_signature"),
    ]
    with server.client() as http:
        for kind, sent, sent_row, reason in cases:
            verdict = http.post("/v2/receipts/verify", json={"receipt": sent, "input": sent_row}).json()
            assert (kind, verdict["result"], verdict["reason"]) == (kind, "mismatch", reason), verdict
        verdict = http.post("/v2/receipts/verify", json={"receipt": cases[6][1], "input": row}).json()
        assert verdict["differing_parts"] == {"threads": {"receipt": threads, "here": threads - 1}}
        refused = http.post("/v2/receipts/verify", json={"receipt": {**receipt, "row": "0"}, "input": row})
        assert refused.status_code == 400
        assert refused.json() == {"error": 'receipt "row" must be a non-negative integer'}


def test_receipts_are_refused_when_the_server_has_no_key(server: RunningServer) -> None:
    with server.client() as http:
        answer = http.post("/v1/models/tiny:predict", json={"instances": [[0.0] * 16]}, headers={"X-Receipts": "true"})
        assert answer.status_code == 400
        assert "--receipts-key-file" in answer.json()["error"]
        plain = http.post("/v1/models/tiny:predict", json={"instances": [[0.0] * 16]})
        assert plain.status_code == 200
        assert "receipt" not in plain.json()["predictions"][0]


def test_the_log_survives_sigkill_of_the_server(tiny_repository: Path, tmp_path: Path, key_file: Path) -> None:
    log = tmp_path / "receipts"
    flags = ("--receipts-key-file", str(key_file), "--receipts-log", str(log), "--receipts", "always")
    server = start_server(tiny_repository, tmp_path, *flags)
    try:
        before = asyncio.run(under_load(server.url, range(200)))
        assert len(wait_logged(log, len(before))) == len(before)
        loading = threading.Thread(target=lambda: _quietly(lambda: asyncio.run(under_load(server.url, range(3000)))))
        loading.start()
        wait_logged(log, len(before) + 150)  # mid-load: the log is growing
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
        loading.join(120)
    finally:
        stop_server(server)
    reading = LogReading()
    logged = list(read_log(log, reading))
    assert reading.corrupt == []
    assert reading.torn <= 1
    keys = SigningKeys(key_file)
    assert all(keys.verifies(receipt) for receipt in logged)  # every line read back is a whole, signed receipt
    assert {r["signature"] for r, _ in before} <= {r.signature for r in logged}
    last = sorted(log.iterdir())[-1]
    with last.open("ab") as file:  # a torn tail, as a crash mid-write leaves it
        file.write(orjson.dumps(before[0][0])[:100])
    torn = LogReading()
    assert len(list(read_log(log, torn))) == len(logged)
    assert (torn.torn, torn.corrupt) == (reading.torn + 1, [])


def _quietly(run: Any) -> None:
    with contextlib.suppress(httpx.HTTPError, AssertionError):  # the server died under it: the point of the test
        run()


def test_a_full_disk_degrades_to_answering_without_logging(
    tiny_repository: Path, tmp_path: Path, key_file: Path
) -> None:
    log = tmp_path / "receipts"
    limit = 64 * 1024  # any file this process writes past 64 KiB fails with EFBIG (SIGXFSZ is ignored by Python)

    def file_size_limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    flags = ("--receipts-key-file", str(key_file), "--receipts-log", str(log), "--receipts", "always")
    server = start_server(tiny_repository, tmp_path, *flags, preexec_fn=file_size_limit)
    try:
        pairs = asyncio.run(under_load(server.url, range(300)))  # about 450 receipts of about 1 KiB: past 64 KiB
        assert len(pairs) == 450
        with server.client() as http:  # still answering, with receipts
            answer = http.post("/v1/models/tiny:predict", json={"instances": [[0.5] * 16]})
            assert answer.status_code == 200
            assert "receipt" in answer.json()["predictions"][0]
        answered = len(pairs) + 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the writer has taken every receipt: logged or counted lost
            unlogged = metric(server, 'invariant_receipts_unlogged_total{reason="disk"}')
            logged = metric(server, "invariant_receipts_logged_total")
            if logged + unlogged == answered:
                break
            time.sleep(0.2)
        assert unlogged > 0
        assert logged + unlogged == answered
    finally:
        stop_server(server)
    assert server.log().count("answering without logging receipts") >= 1
    reading = LogReading()
    assert len(list(read_log(log, reading))) == logged
    assert reading.corrupt == []
    assert all(path.stat().st_size <= limit for path in log.iterdir())
