"""Issue 11, defect 3: every numeric setting is finite and in range (refused at start-up, naming the flag),
and a model whose compute thread dies stops being ready, says why, and asks for a fresh process."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from checkpoints import write_checkpoint
from pydantic import ValidationError

from service.cli import main
from service.dataplane import CallRecord, DataPlane, InferRequest, NestedRows
from service.errors import NotReady
from service.http import server
from service.lifecycle.loader import ServedModel
from service.lifecycle.registry import ModelRegistry
from service.lifecycle.snapshot import IndexEntry, NotServing, State
from service.observability.metrics import Metrics
from service.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI reads INVARIANT_* variables: none from the test runner's environment."""
    for key in [key for key in os.environ if key.startswith("INVARIANT_")]:
        monkeypatch.delenv(key)
    yield
    assert not [key for key in os.environ if key.startswith("INVARIANT_")]  # main() writes none


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-queue-delay-ms", "inf"),
        ("--max-queue-delay-ms", "1e300"),
        ("--max-queue-delay-ms", "nan"),
        ("--request-timeout-s", "inf"),
        ("--request-timeout-s", "1e300"),
        ("--read-timeout-s", "0"),
        ("--read-timeout-s", "inf"),
        ("--audit-fraction", "nan"),
        ("--max-body-bytes", "1e30"),
        ("--max-queue-rows", str(10**12)),
        ("--self-test-seed", "-1"),
    ],
)
def test_numeric_flag_out_of_range_is_refused_naming_the_flag(
    flag: str, value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def never_serve(*_args: object, **_kwargs: object) -> None:
        raise AssertionError(f"the server started with {flag} {value}")

    monkeypatch.setattr(server, "serve", never_serve)
    with pytest.raises(SystemExit) as exited:
        main([flag, value, "--repository", "/nonexistent"])
    message = capsys.readouterr().err
    assert exited.value.code == 2
    assert message.count("\n") == 1, message  # one line
    assert message.startswith(f"invariant-serve: error: {flag} must be "), message
    assert "Traceback" not in message


def test_settings_refuse_infinite_timeouts_without_the_cli() -> None:
    for field in ("request_timeout_s", "max_queue_delay_ms", "read_timeout_s", "audit_fraction"):
        with pytest.raises(ValidationError, match=field):
            Settings(**{field: math.inf})  # type: ignore[arg-type]


def test_a_dead_compute_thread_makes_the_model_not_ready_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_checkpoint(tmp_path, "tiny")
    # The thread placement: the fill wait that overflows runs on the compute thread, which dies of it.
    settings = Settings(repository=tmp_path, audit_fraction=0.0, model_control="none", device="cpu", placement="thread")
    metrics = Metrics(32)
    restarts: list[str] = []
    registry = ModelRegistry(settings, metrics, on_fatal=restarts.append)
    plane = DataPlane(registry, settings)
    request = InferRequest("tiny", None, NestedRows(np.full((1, 16), 0.5).tolist()), 64)
    reason = "compute thread died: OverflowError: timestamp out of range for platform time_t"

    async def scenario() -> tuple[NotServing | ServedModel, list[IndexEntry]]:
        await registry.start()
        try:
            served = registry.get_ready("tiny")
            # The fault the unvalidated `--max-queue-delay-ms inf` caused: the fill wait overflows, the thread dies.
            served.batcher.max_queue_delay_s = math.inf
            with pytest.raises(NotReady, match=f"model 'tiny' version 1 is not served: {reason}"):
                await plane.infer(request, CallRecord("v1"))
            await asyncio.sleep(0.1)  # the registry hears of it on the event loop
            with pytest.raises(NotReady, match=f"model 'tiny' version 1 is not served: {reason}"):
                await plane.infer(request, CallRecord("v1"))
            return registry.find("tiny"), await registry.index()
        finally:
            await registry.close()

    with caplog.at_level(logging.CRITICAL):
        found, index = asyncio.run(scenario())
    assert isinstance(found, NotServing)
    assert (found.state, found.reason) == (State.UNAVAILABLE, reason)
    assert [entry.to_json() for entry in index] == [
        {"name": "tiny", "version": "1", "state": "UNAVAILABLE", "reason": reason}
    ]
    assert not registry.any_ready()
    assert restarts == [f"model tiny version 1: {reason}"]
    assert f"model tiny version 1 FAILED: {reason}" in caplog.text
    text = metrics.render().decode()
    assert 'invariant_model_ready{model="tiny",version="1"} 0.0' in text
    assert 'invariant_compute_thread_failures_total{model="tiny",version="1"} 1.0' in text
