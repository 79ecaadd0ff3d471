"""The guarantee and the batcher under real concurrent HTTP load, the queue bound (503), timeouts (504)
and the Prometheus series after traffic."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from checkpoints import TINY_MLP, write_checkpoint
from conftest import RunningServer, start_server, stop_server
from prometheus_client.parser import text_string_to_metric_families

from models import CNNConfig, MLPConfig

WIDE = MLPConfig(in_features=64, num_classes=10, hidden=(256, 256), norm="batch", dropout=0.2)
# ~40-80 ms per 2-row chunk on one thread: slow enough that a burst of requests must queue.
SLOW = CNNConfig(in_channels=1, height=128, width=128, num_classes=2, channels=(48, 48), norm="batch")


@pytest.fixture(scope="module")
def audited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("load-repository")
    write_checkpoint(repository, "wide", WIDE, seed=5)
    running = start_server(repository, tmp_path_factory.mktemp("logs"), "--audit-fraction", "1.0")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("slow-repository")
    write_checkpoint(repository, "slow", SLOW)
    write_checkpoint(repository, "tiny", TINY_MLP)
    flags = ("--chunk-rows", "2", "--max-queue-rows", "40", "--request-timeout-s", "0.5")
    running = start_server(repository, tmp_path_factory.mktemp("logs"), *flags)
    yield running
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


def post_slow(http: httpx.AsyncClient, row: list[Any]) -> Any:
    return http.post("/v1/models/slow:predict", json={"instances": [row, row]})


def test_burst_beyond_the_queue_gets_503_and_504_then_the_server_recovers(slow_server: RunningServer) -> None:
    row = np.zeros((1, 128, 128), dtype=np.float32).tolist()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=slow_server.url, timeout=30) as http:
            return list(await asyncio.gather(*(post_slow(http, row) for _ in range(30))))

    responses = asyncio.run(burst())
    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) == {200, 503, 504}, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            assert "queue full" in response.json()["error"]
        if response.status_code == 504:
            assert response.json() == {"error": "no answer within 0.5 s; the request's rows were dropped"}
    with slow_server.client() as client:
        assert client.post("/v1/models/tiny:predict", json={"instances": [[0.5] * 16]}).status_code == 200
        assert client.post("/v1/models/slow:predict", json={"instances": [row]}).status_code == 200
        samples = metric_samples(client)
    labels = (("model", "slow"), ("protocol", "v1"), ("version", "1"))
    assert samples[("invariant_requests_total", (*labels[:2], ("status", "503"), labels[2]))] == statuses[503]
    assert samples[("invariant_requests_total", (*labels[:2], ("status", "504"), labels[2]))] == statuses[504]
    assert samples[("invariant_queue_rows", (("model", "slow"), ("version", "1")))] == 0


def test_metrics_render_in_prometheus_text_format(slow_server: RunningServer) -> None:
    with slow_server.client() as client:
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
    multi = start_server(repository, logs, "--workers", "2")
    try:
        answers = []
        for _ in range(24):  # a fresh connection each time, so the kernel spreads them over both workers
            with multi.client() as client:
                answers.append(client.post("/v1/models/wide:predict", json={"instances": rows}).json())
        with multi.client() as client:
            samples = metric_samples(client)
    finally:
        stop_server(multi)
    assert [answer == expected for answer in answers] == [True] * 24, answers
    ok = (("model", "wide"), ("protocol", "v1"), ("status", "200"), ("version", "1"))
    assert samples[("invariant_requests_total", ok)] == 24  # summed over both worker processes


def test_sigterm_drains_in_flight_requests(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A request being computed when SIGTERM arrives is answered in full before the process exits."""
    repository = tmp_path_factory.mktemp("drain-repository")
    write_checkpoint(repository, "slow", SLOW)
    running = start_server(repository, tmp_path_factory.mktemp("logs"), "--chunk-rows", "2")
    rows = np.zeros((16, 1, 128, 128), dtype=np.float32).tolist()  # 8 chunks of a slow model

    async def request_then_sigterm() -> httpx.Response:
        async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
            answer = asyncio.create_task(http.post("/v1/models/slow:predict", json={"instances": rows}))
            await asyncio.sleep(0.15)  # the request is in flight
            running.process.send_signal(signal.SIGTERM)
            return await answer

    try:
        response = asyncio.run(request_then_sigterm())
        # uvicorn re-raises the signal once its graceful shutdown is done: exit by SIGTERM, after the drain.
        assert running.process.wait(timeout=30) == -signal.SIGTERM
    finally:
        stop_server(running)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 16
    assert "Shutting down" in running.log()
