"""The one probe of the guarantee: a probe row alone, then at EVERY position of batches around C, next to
co-rows of several kinds; every answer for the probe must have the bits of its lone answer.

Used by the start-up self-test (in process, on the executor), the endpoint tests and
`deploy/invariance_check.py` (over HTTP, through service/guarantee/probe_http.py), the replica comparison of the
scaled deployment, and bench/gpu_check.py. torch-free: a caller supplies `answer`, which maps rows
(N, *input_shape) float32 to each row's answer as bytes (its exact bits), so the same rule and comparison
serve an executor, a server and a plain `model(batch)` control alike.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]
# rows (N, *input_shape) -> N answers, each the exact bits of that row's outputs
RowAnswers = Callable[[Float32Array], Sequence[bytes]]

CO_ROW_KINDS = ("random", "zero", "huge", "nan")
# What a client can send over JSON: the server refuses non-finite values (400), so no NaN co-rows.
FINITE_CO_ROW_KINDS = ("random", "zero", "huge")
HUGE = 1e30


def probe_batch_sizes(*chunk_rows: int) -> tuple[int, ...]:
    """The batch sizes, for a server whose every forward runs on C = chunk_rows rows: 1 (alone again, which
    catches dropout or batch statistics left on), 2 and 3 (a mostly empty chunk), C-1, C and C+1 (a chunk
    one short of full, exactly full, and spilling one row into a second chunk), 2C+1 (two full chunks and
    one row). The probe goes at every position of each. Two C's (a shape pair): the sizes of both."""
    sizes: set[int] = set()
    for c in chunk_rows:
        if c < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {c}")
        sizes |= {n for n in (1, 2, 3, c - 1, c, c + 1, 2 * c + 1) if n >= 1}
    return tuple(sorted(sizes))


@dataclass(frozen=True)
class ProbeCase:
    kind: str  # of the co-rows around the probe
    size: int  # rows in the batch
    position: int  # of the probe in the batch

    def describe(self) -> str:
        return f"{self.kind} co-rows, batch {self.size}, position {self.position}"


def probe_cases(chunk_rows: int, kinds: Sequence[str] = CO_ROW_KINDS) -> list[ProbeCase]:
    """Every kind x every batch size x every position."""
    sizes = probe_batch_sizes(chunk_rows)
    return [ProbeCase(kind, size, position) for kind in _known(kinds) for size in sizes for position in range(size)]


def _known(kinds: Sequence[str]) -> Sequence[str]:
    unknown = sorted(set(kinds) - set(CO_ROW_KINDS))
    if unknown:
        raise ValueError(f"unknown co-row kinds {unknown}; known: {list(CO_ROW_KINDS)}")
    return kinds


def probe_rows(input_shape: Sequence[int], count: int = 1, seed: int = 0) -> Float32Array:
    """`count` deterministic probe rows, (count, *input_shape): the same on every machine and replica."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, *input_shape)).astype(np.float32)


def co_rows(kind: str, size: int, input_shape: Sequence[int], rng: np.random.Generator) -> Float32Array:
    """(size, *input_shape) rows of one kind, to surround the probe with."""
    shape = (size, *input_shape)
    if kind == "random":
        return rng.standard_normal(shape).astype(np.float32)
    fills = {"zero": 0.0, "huge": HUGE, "nan": np.nan}
    if kind not in fills:
        raise ValueError(f"unknown co-row kind {kind!r}; known: {list(CO_ROW_KINDS)}")
    return np.full(shape, fills[kind], dtype=np.float32)


@dataclass(frozen=True)
class ProbeReport:
    cases: int
    failures: int
    batch_sizes: tuple[int, ...]
    seconds: float
    first_failure: str = ""

    @property
    def passed(self) -> bool:
        return self.failures == 0

    def summary(self) -> str:
        if self.passed:
            return f"passed: {self.cases} cases bitwise identical"
        return f"failed: {self.failures}/{self.cases} cases differ; first: {self.first_failure}"


def run_probe(
    answer: RowAnswers,
    input_shape: Sequence[int],
    chunk_rows: int | tuple[int, ...],
    seed: int = 0,
    kinds: Sequence[str] = CO_ROW_KINDS,
) -> ProbeReport:
    """Runs every probe case through `answer` and compares each probe answer's bytes with the lone one."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    probe = rng.standard_normal((1, *input_shape)).astype(np.float32)  # (1, *input_shape)
    reference = _single(answer(probe))
    cases = failures = 0
    first_failure = ""
    sizes = probe_batch_sizes(*chunk_rows) if isinstance(chunk_rows, tuple) else probe_batch_sizes(chunk_rows)
    for kind in _known(kinds):
        for size in sizes:
            batch = co_rows(kind, size, input_shape, rng)  # (size, *input_shape), new for each size
            for position in range(size):
                trial = batch.copy()
                trial[position] = probe[0]
                cases += 1
                if answer(trial)[position] != reference:
                    failures += 1
                    first_failure = first_failure or ProbeCase(kind, size, position).describe()
    return ProbeReport(cases, failures, sizes, time.perf_counter() - started, first_failure)


def _single(answers: Sequence[bytes]) -> bytes:
    if len(answers) != 1:
        raise ValueError(f"one row sent, {len(answers)} answers")
    return answers[0]


def answers_digest(answers: Iterable[bytes]) -> str:
    """A short hash of a sequence of row answers: equal digests mean bitwise-equal answers."""
    digest = hashlib.sha256()
    for bits in answers:
        digest.update(len(bits).to_bytes(8, "little"))
        digest.update(bits)
    return digest.hexdigest()[:16]


def group_by_digest(digests: dict[str, str]) -> dict[str, list[str]]:
    """Groups the sources (replicas, machines) by the digest of their answers; one group means agreement."""
    groups: dict[str, list[str]] = {}
    for source, digest in sorted(digests.items()):
        groups.setdefault(digest, []).append(source)
    return groups
