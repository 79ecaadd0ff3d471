"""`--chunk-rows auto`: the choice rule on injected timings, the timing loop on an injected clock, and the
factory's calibrated executor (its choice checked against its own recorded timings, never machine speed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from checkpoints import write_checkpoint
from torch import nn

from models import load_checkpoint
from service.engine.calibration import CANDIDATE_CHUNK_ROWS, ChunkTiming, calibrate, choose_chunk_rows
from service.engine.executor import EagerExecutor
from service.engine.executor_factory import build_executor
from service.engine.types import Executor, Float32Array, Outputs
from service.guarantee.selftest import run_self_test
from service.settings import Settings


def timings(milliseconds: dict[int, float]) -> tuple[ChunkTiming, ...]:
    return tuple(ChunkTiming(chunk, ms / 1000) for chunk, ms in milliseconds.items())


# Shaped like the digits MLP on this CPU: rows/s keeps rising with C, latency too.
SMALL_MODEL = timings({1: 0.05, 2: 0.05, 4: 0.05, 8: 0.06, 16: 0.08, 32: 0.10, 64: 0.15, 128: 0.25, 256: 0.45})


def test_the_most_rows_per_second_within_the_bound_wins() -> None:
    assert choose_chunk_rows(SMALL_MODEL, 0.10e-3) == 32
    assert choose_chunk_rows(SMALL_MODEL, 0.30e-3) == 128
    assert choose_chunk_rows(SMALL_MODEL, 1.0) == 256


def test_throughput_not_size_decides() -> None:
    # A CNN-like model whose rows/s peaks at C=8 and falls after: a larger C within the bound loses.
    cnn = timings({1: 0.25, 2: 0.50, 4: 0.98, 8: 1.9, 16: 7.6, 32: 19.5})
    assert choose_chunk_rows(cnn, 50e-3) == 8


def test_equal_throughput_prefers_the_smaller_chunk() -> None:
    assert choose_chunk_rows(timings({1: 0.1, 2: 0.2, 4: 0.4}), 1.0) == 1


def test_nothing_within_the_bound_takes_the_fastest_chunk() -> None:
    assert choose_chunk_rows(timings({1: 0.4, 2: 0.41, 4: 0.68}), 0.1e-3) == 1
    with pytest.raises(ValueError, match="no chunk timings"):
        choose_chunk_rows((), 1.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ClockedExecutor(EagerExecutor):
    """A real executor whose every run advances an injected clock by a cost fixed per C."""

    def __init__(self, chunk_rows: int, clock: FakeClock, cost_ms: dict[int, float]) -> None:
        super().__init__(nn.Linear(4, 2).eval(), (4,), 2, chunk_rows)
        self.clock, self.cost_s = clock, cost_ms[chunk_rows] / 1000

    def run(self, rows: Float32Array) -> Outputs:
        self.clock.now += self.cost_s
        return super().run(rows)


def test_calibrate_times_each_candidate_until_one_exceeds_the_bound() -> None:
    clock = FakeClock()
    cost_ms = {1: 0.05, 2: 0.05, 4: 0.05, 8: 0.05, 16: 0.06, 32: 0.08, 64: 0.2, 128: 0.3, 256: 0.6}
    assert tuple(cost_ms) == CANDIDATE_CHUNK_ROWS
    made: list[int] = []

    def make(chunk_rows: int) -> Executor:
        made.append(chunk_rows)
        return ClockedExecutor(chunk_rows, clock, cost_ms)

    calibration = calibrate(make, bound_ms=0.15, clock=clock)
    assert made == [1, 2, 4, 8, 16, 32, 64]  # 64 (0.2 ms) is past the bound: 128 and 256 are not timed
    assert [t.chunk_rows for t in calibration.timings] == made
    assert calibration.timings[-1].seconds == pytest.approx(0.2e-3)
    assert calibration.chunk_rows == 32  # 0.08 ms: 400k rows/s, the most within 0.15 ms
    described = calibration.describe()
    assert described["chunk_rows_choice"] == "auto"
    assert described["chunk_latency_bound_ms"] == 0.15
    assert described["chunk_timings_ms"] == {
        "1": 0.05,
        "2": 0.05,
        "4": 0.05,
        "8": 0.05,
        "16": 0.06,
        "32": 0.08,
        "64": 0.2,
    }


@pytest.mark.slow  # times every candidate C, then self-tests the chosen one
def test_auto_builds_the_chosen_chunk_and_its_self_test_uses_it(tmp_path: Path) -> None:
    model, manifest = load_checkpoint(write_checkpoint(tmp_path, "tiny"))
    settings = Settings(repository=tmp_path, device="cpu", chunk_rows="auto", chunk_latency_bound_ms=2.0)
    executor = build_executor(model, manifest, settings)
    described = executor.describe()
    recorded = timings({int(chunk): ms for chunk, ms in described["chunk_timings_ms"].items()})
    assert described["chunk_rows_choice"] == "auto"
    assert executor.chunk_rows == described["chunk_rows"] == choose_chunk_rows(recorded, 2.0e-3)
    report = run_self_test(executor)
    assert report.passed
    assert executor.chunk_rows in report.batch_sizes


def test_auto_and_numbers_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVARIANT_CHUNK_ROWS", "auto")
    assert Settings.from_environment().chunk_rows == "auto"
    monkeypatch.setenv("INVARIANT_CHUNK_ROWS", "48")
    assert Settings.from_environment().chunk_rows == 48
    monkeypatch.setenv("INVARIANT_CHUNK_ROWS", "fast")
    with pytest.raises(ValueError, match="chunk_rows"):
        Settings.from_environment()
    assert Settings().chunk_rows is None  # a plain Settings(...) never reads the environment


def test_a_calibrated_executor_answers_like_a_fixed_one_of_the_same_chunk(tmp_path: Path) -> None:
    model, manifest = load_checkpoint(write_checkpoint(tmp_path, "tiny"))
    auto = build_executor(model, manifest, Settings(repository=tmp_path, device="cpu", chunk_rows="auto"))
    fixed = build_executor(model, manifest, Settings(repository=tmp_path, device="cpu", chunk_rows=auto.chunk_rows))
    rows = np.random.default_rng(3).standard_normal((70, 16)).astype(np.float32)
    assert auto.run(rows).bitwise_equal(fixed.run(rows))
