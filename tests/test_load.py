"""The guarantee and the batcher under real concurrent HTTP load, the queue bound (503), timeouts (504)
and the Prometheus series after traffic."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from checkpoints import TINY_CNN, TINY_MLP, write_checkpoint
from conftest import RunningServer, start_server, stop_server
from gated_service import Gate
from prometheus_client.parser import text_string_to_metric_families

from models import MLPConfig

WIDE = MLPConfig(in_features=64, num_classes=10, hidden=(256, 256), norm="batch", dropout=0.2)
GATED_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def audited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("load-repository")
    write_checkpoint(repository, "wide", WIDE, seed=5)
    running = start_server(repository, tmp_path_factory.mktemp("logs"), "--audit-fraction", "1.0")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def gated_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Gate]]:
    """`gated` (a tiny CNN whose forward passes wait while the gate is closed) and `tiny` (never gated)."""
    repository = tmp_path_factory.mktemp("gated-repository")
    write_checkpoint(repository, "gated", TINY_CNN)
    write_checkpoint(repository, "tiny", TINY_MLP)
    gate = Gate(tmp_path_factory.mktemp("gate"))
    flags = ("--chunk-rows", "2", "--max-queue-rows", "40", "--request-timeout-s", str(GATED_TIMEOUT_S))
    running = start_server(repository, tmp_path_factory.mktemp("logs"), *flags, gate=gate)
    yield running, gate
    gate.open()
    stop_server(running)


def metric_samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_every_row_under_random_concurrent_load_equals_the_row_alone(audited_server: RunningServer) -> None:
    rng = np.random.default_rng(21)
    pool = rng.standard_normal((120, 64)).astype(np.float32)
    with audited_server.client() as client:
        alone = [
            client.post("/v1/models/wide:predict", json={"instances": [row.tolist()]}).json()["predictions"][0]
            for row in pool
        ]
    plans = [[rng.choice(len(pool), int(rng.integers(1, 71))).tolist() for _ in range(5)] for _client in range(32)]

    async def one_client(http: httpx.AsyncClient, number: int) -> int:
        delays = random.Random(number)
        for indices in plans[number]:
            await asyncio.sleep(delays.random() / 100)  # random arrival times
            response = await http.post("/v1/models/wide:predict", json={"instances": pool[indices].tolist()})
            assert response.status_code == 200, response.text
            got = response.json()["predictions"]
            assert got == [alone[i] for i in indices], f"client {number} got rows that are not its own"
        return len(plans[number])

    async def run_all() -> int:
        async with httpx.AsyncClient(base_url=audited_server.url, timeout=60) as http:
            return sum(await asyncio.gather(*(one_client(http, n) for n in range(len(plans)))))

    sent = asyncio.run(run_all())
    assert sent == 160
    with audited_server.client() as client:
        samples = metric_samples(client)
    model = (("model", "wide"), ("version", "1"))
    ok = (("model", "wide"), ("protocol", "v1"), ("status", "200"), ("version", "1"))
    assert samples[("invariant_requests_total", ok)] == 120 + 160
    assert samples[("invariant_model_ready", model)] == 1
    assert samples[("invariant_self_test_passed", model)] == 1
    assert samples[("invariant_self_test_cases", model)] > 0
    assert samples[("invariant_queue_rows", model)] == 0
    assert samples[("invariant_chunk_rows_count", model)] >= 120
    assert samples[("invariant_compute_seconds_count", model)] == samples[("invariant_chunk_rows_count", model)]
    assert samples[("invariant_queue_seconds_count", model)] == 120 + 160
    assert samples[("invariant_chunk_padding_fraction_count", model)] > 0
    assert samples[("invariant_request_seconds_count", (*model[:1], ("protocol", "v1"), model[1]))] == 280
    assert samples[("invariant_audit_checks_total", model)] > 0
    assert samples[("invariant_audit_mismatches_total", model)] == 0


GATED_ROW = np.zeros((1, 8, 8), dtype=np.float32).tolist()


def post_gated(http: httpx.AsyncClient, count: int = 2) -> Any:
    return http.post("/v1/models/gated:predict", json={"instances": [GATED_ROW] * count})


async def wait_for_queue_rows(http: httpx.AsyncClient, rows: int, timeout_s: float = 30.0) -> None:
    key = ("invariant_queue_rows", (("model", "gated"), ("version", "1")))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        families = text_string_to_metric_families((await http.get("/metrics")).text)
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
        if samples.get(key) == rows:
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"the gated model's queue never held {rows} rows")


def test_burst_beyond_the_queue_gets_503_and_504_then_the_server_recovers(
    gated_server: tuple[RunningServer, Gate],
) -> None:
    """The closed gate holds the compute thread inside a forward, so the queue states are set by the test, not
    by the machine's speed: one request sits in the forward, twenty 2-row requests fill the 40-row queue, five
    more find it full (503). Nothing can finish while the gate is closed, so all 21 accepted requests time out
    (504). The one time window: the five must arrive within the 2 s timeout of the twenty (they follow at once).
    """
    server, gate = gated_server

    async def burst() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            gate.close()
            held = asyncio.create_task(post_gated(http))
            await asyncio.to_thread(gate.wait_until_blocked)
            queued = [asyncio.create_task(post_gated(http)) for _ in range(20)]
            await wait_for_queue_rows(http, 40)
            refused = [await post_gated(http) for _ in range(5)]
            return [await held, *await asyncio.gather(*queued)], refused

    try:
        timed_out, refused = asyncio.run(burst())
    finally:
        gate.open()
    assert [response.status_code for response in refused] == [503] * 5
    for response in refused:
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"error": "queue full: 40 rows waiting (max_queue_rows=40)"}
    assert [response.status_code for response in timed_out] == [504] * 21
    for response in timed_out:
        assert response.json() == {"error": "no answer within 2 s; the request's rows were dropped"}
    with server.client() as client:
        assert client.post("/v1/models/tiny:predict", json={"instances": [[0.5] * 16]}).status_code == 200
        answer = client.post("/v1/models/gated:predict", json={"instances": [GATED_ROW]})
        assert answer.status_code == 200, answer.text
        samples = metric_samples(client)
    labels = (("model", "gated"), ("protocol", "v1"), ("version", "1"))
    assert samples[("invariant_requests_total", (*labels[:2], ("status", "503"), labels[2]))] == 5
    assert samples[("invariant_requests_total", (*labels[:2], ("status", "504"), labels[2]))] == 21
    assert samples[("invariant_queue_rows", (("model", "gated"), ("version", "1")))] == 0


def test_metrics_render_in_prometheus_text_format(gated_server: tuple[RunningServer, Gate]) -> None:
    with gated_server[0].client() as client:
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "invariant_requests",
        "invariant_request_seconds",
        "invariant_queue_seconds",
        "invariant_compute_seconds",
        "invariant_chunk_rows",
        "invariant_chunk_padding_fraction",
        "invariant_queue_rows",
        "invariant_model_ready",
        "invariant_self_test_passed",
        "invariant_audit_checks",
        "invariant_audit_mismatches",
        "invariant_worker_processes",
        "process_resident_memory_bytes",  # one worker: the standard process series, unlabelled
        "process_cpu_seconds",
    } <= names


def test_two_worker_processes_give_the_same_bits(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each worker has its own model and batcher; the guarantee holds across them (same C, threads, libs)."""
    repository = tmp_path_factory.mktemp("workers-repository")
    write_checkpoint(repository, "wide", WIDE, seed=9)
    rows = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32).tolist()
    logs = tmp_path_factory.mktemp("logs")
    single = start_server(repository, logs)
    try:
        with single.client() as client:
            expected = client.post("/v1/models/wide:predict", json={"instances": rows}).json()
    finally:
        stop_server(single)
    temp = tmp_path_factory.mktemp("server-temp")  # the server's TMPDIR: where its metrics folder goes
    multi = start_server(repository, logs, "--workers", "2", env={"TMPDIR": str(temp)})
    try:
        wait_for_both_workers(multi)
        answers = []
        for _ in range(24):  # a fresh connection each time, so the kernel spreads them over both workers
            with multi.client() as client:
                answers.append(client.post("/v1/models/wide:predict", json={"instances": rows}).json())
        with multi.client() as client:
            samples = metric_samples(client)
        assert [path.name[:18] for path in temp.iterdir()] == ["invariant-metrics-"]
    finally:
        stop_server(multi)
    assert [answer == expected for answer in answers] == [True] * 24, answers
    ok = (("model", "wide"), ("protocol", "v1"), ("status", "200"), ("version", "1"))
    assert samples[("invariant_requests_total", ok)] == 24  # summed over both worker processes
    assert samples[("invariant_worker_processes", ())] == 2
    # process_* series per worker, labelled with the pid (values the server defines), both workers present
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_start_time_seconds"):
        per_worker = {labels: value for (sample, labels), value in samples.items() if sample == name}
        assert len(per_worker) == 2, (name, per_worker)
        assert all(len(labels) == 1 and labels[0][0] == "pid" and value > 0 for labels, value in per_worker.items())
    assert multi.process.returncode == 0  # the supervisor returned from uvicorn.run (and cleaned up)
    assert list(temp.iterdir()) == []  # its metrics folder removed on exit


def wait_for_both_workers(server: RunningServer) -> None:
    """Readiness is answered by whichever worker is up; on a busy machine the second may still be importing
    torch. Wait (bounded) until both have registered their metrics, so the test does not depend on speed."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with server.client() as client:
            if metric_samples(client).get(("invariant_worker_processes", ())) == 2:
                return
        time.sleep(0.2)
    pytest.fail("the second worker process never started")


def test_sigterm_drains_in_flight_requests(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A request being computed when SIGTERM arrives is answered in full before the process exits. The gate
    holds its first chunk in the forward until the server has logged the signal, so the request is provably
    in flight (not finished, not yet arrived) when the signal lands."""
    repository = tmp_path_factory.mktemp("drain-repository")
    write_checkpoint(repository, "gated", TINY_CNN)
    gate = Gate(tmp_path_factory.mktemp("gate"))
    running = start_server(repository, tmp_path_factory.mktemp("logs"), "--chunk-rows", "2", gate=gate)

    async def request_then_sigterm() -> httpx.Response:
        async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
            gate.close()
            answer = asyncio.create_task(post_gated(http, 16))  # 8 chunks
            await asyncio.to_thread(gate.wait_until_blocked)
            running.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(wait_for_log, running, "Shutting down")
            gate.open()
            return await answer

    try:
        response = asyncio.run(request_then_sigterm())
        # uvicorn re-raises the signal once its graceful shutdown is done: exit by SIGTERM, after the drain.
        assert running.process.wait(timeout=30) == -signal.SIGTERM
    finally:
        gate.open()
        stop_server(running)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 16


def wait_for_log(server: RunningServer, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in server.log():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not in the server log after {timeout_s} s:\n{server.log()}")
        time.sleep(0.01)
