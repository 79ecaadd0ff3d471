"""The start-up self-test: a model is ready only once a probe row gives identical bits alone and at every
position of batches around C, next to random, zero, huge and NaN co-rows."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from service.executor import FixedShapeExecutor, Float32Array

CO_ROW_KINDS = ("random", "zero", "huge", "nan")


@dataclass(frozen=True)
class SelfTestReport:
    passed: bool
    cases: int
    failures: int
    batch_sizes: tuple[int, ...]
    seconds: float
    first_failure: str = ""
    # Whether plain `model(batch)` changes the probe's bits with the batch size here: the control that
    # shows the fixed shape is doing work on this machine.
    plain_path_batch_dependent: bool = False

    def summary(self) -> str:
        if self.passed:
            return f"passed: {self.cases} cases bitwise identical"
        return f"failed: {self.failures}/{self.cases} cases differ; first: {self.first_failure}"


def self_test_batch_sizes(chunk_rows: int) -> tuple[int, ...]:
    sizes = {2, 3, chunk_rows - 1, chunk_rows, chunk_rows + 1, 2 * chunk_rows + 1}
    return tuple(sorted(size for size in sizes if size >= 2))


def run_self_test(executor: FixedShapeExecutor, seed: int = 0) -> SelfTestReport:
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    shape = executor.input_shape
    probe = rng.standard_normal((1, *shape)).astype(np.float32)  # (1, *input_shape)
    reference = executor.run(probe)
    sizes = self_test_batch_sizes(executor.chunk_rows)
    cases = failures = 0
    first_failure = ""
    for kind in CO_ROW_KINDS:
        for size in sizes:
            batch = _co_rows(kind, size, shape, rng)  # (size, *input_shape)
            for position in range(size):
                trial = batch.copy()
                trial[position] = probe[0]
                cases += 1
                if not executor.run(trial).row(position).bitwise_equal(reference):
                    failures += 1
                    first_failure = first_failure or f"{kind} co-rows, batch {size}, position {position}"
    return SelfTestReport(
        passed=failures == 0,
        cases=cases,
        failures=failures,
        batch_sizes=sizes,
        seconds=time.perf_counter() - started,
        first_failure=first_failure,
        plain_path_batch_dependent=_plain_path_differs(executor, probe, rng),
    )


def _co_rows(kind: str, size: int, shape: tuple[int, ...], rng: np.random.Generator) -> Float32Array:
    if kind == "random":
        return rng.standard_normal((size, *shape)).astype(np.float32)
    fill = {"zero": 0.0, "huge": 1e30, "nan": np.nan}[kind]
    return np.full((size, *shape), fill, dtype=np.float32)


def _plain_path_differs(executor: FixedShapeExecutor, probe: Float32Array, rng: np.random.Generator) -> bool:
    alone = executor.run_plain(probe)[0].tobytes()
    for size in range(2, 2 * executor.chunk_rows + 2):
        batch = rng.standard_normal((size, *executor.input_shape)).astype(np.float32)
        batch[size // 2] = probe[0]
        if executor.run_plain(batch)[size // 2].tobytes() != alone:
            return True
    return False
