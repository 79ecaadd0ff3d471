"""The execution shape is proven on the host, not assumed: the self-test runs at the preferred C, and when it
fails there (BLAS kernels handle rows in blocks per instruction set; the rows left over at the end of a chunk
can take another path, so a row's bits may depend on its position), the candidates below are tried in a
fixed order and the first that passes serves. `--strict-chunk-rows` refuses instead, as before.

Candidate order (measured table: docs/numerics.md, bench/shape_table.py): multiples of 24 first, then of 12,
8 and 4, each group nearest the preferred C first, within [1, 2 x preferred]. Measured here (digits MLP,
C = 1..64): under portable numerics every C that is not a multiple of 4 (above 8) fails, every multiple of 4
passes; native, AVX2- and SSE4.2-capped all pass; the AVX2 failure reported at C = 32 (rows 30-31) passed at
24, 30 and 36, i.e. multiples of 6. Multiples of 24 and 12 are whole blocks of both. At most MAX_CANDIDATES
are tried, so a model that mixes rows (which no shape fixes) is refused after a bounded number of self-tests.

Then the lone-latency pair (`--small-chunk-rows`, service/engine/pair.py): C_small below the chosen C serves
chunks of at most C_small rows only if the self-test, run through the pair at the batch sizes of both shapes,
finds every row's bits equal to its lone answer (so equal at both shapes); otherwise one shape, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.engine.pair import PairedExecutor
from service.engine.types import Executor
from service.guarantee.selftest import SelfTestReport, run_self_test

MAX_CANDIDATES = 6


@dataclass(frozen=True)
class ShapeProof:
    executor: Executor
    self_test: SelfTestReport  # of the chosen C (or, when none passed, of the preferred C)
    preferred: int
    tried: tuple[tuple[int, str], ...]  # (C, self-test summary) of every C tried, in order

    @property
    def passed(self) -> bool:
        return self.self_test.passed

    @property
    def chosen(self) -> int:
        return self.executor.chunk_rows

    @property
    def reason(self) -> str:
        """Why this C serves, in one line (metadata, repository index, start-up log)."""
        if self.chosen == self.preferred:
            return f"the preferred C = {self.preferred} passed its self-test"
        first = self.tried[0][1]
        return f"C = {self.preferred} failed its self-test on this host ({first}); C = {self.chosen} passed"


def candidate_chunk_rows(preferred: int) -> list[int]:
    """The C's tried after the preferred one, in the documented order."""
    limit = max(2 * preferred, 8)
    ordered: list[int] = []
    for block in (24, 12, 8, 4):
        multiples = [c for c in range(block, limit + 1, block) if c != preferred and c not in ordered]
        ordered += sorted(multiples, key=lambda c: (abs(c - preferred), c))
    return ordered[:MAX_CANDIDATES]


def prove_shape(build: Callable[[int], Executor], preferred: int, strict: bool, seed: int) -> ShapeProof:
    """build(C) -> an executor at C. The executor at the first C whose self-test passes, preferred first."""
    executor = build(preferred)
    first = run_self_test(executor, seed)
    tried = [(preferred, first.summary())]
    if first.passed or strict:
        return ShapeProof(executor, first, preferred, tuple(tried))
    for chunk_rows in candidate_chunk_rows(preferred):
        candidate = build(chunk_rows)
        report = run_self_test(candidate, seed)
        tried.append((chunk_rows, report.summary()))
        if report.passed:
            return ShapeProof(candidate, report, preferred, tuple(tried))
    return ShapeProof(executor, first, preferred, tuple(tried))


@dataclass(frozen=True)
class PairProof:
    executor: Executor  # the pair when proven, else the chosen C's executor alone
    small: int  # C_small asked for (0: off)
    reason: str
    self_test: SelfTestReport | None  # through the pair; None when no pair was tried

    @property
    def proven(self) -> bool:
        return isinstance(self.executor, PairedExecutor)

    def describe(self) -> dict[str, object]:
        """The metadata's and the repository index's view."""
        return {"small_chunk_rows": self.small if self.proven else None, "small_chunk_rows_reason": self.reason}


def prove_pair(build: Callable[[int], Executor], chosen: Executor, small: int, seed: int) -> PairProof:
    """chosen: the executor at the proven C. The pair (small, C) when the self-test through it passes."""
    large = chosen.chunk_rows
    if small == 0:
        return PairProof(chosen, 0, "off (--small-chunk-rows 0)", None)
    if small >= large:
        return PairProof(chosen, small, f"C_small = {small} is not below C = {large}: one shape", None)
    pair = PairedExecutor(build(small), chosen)
    report = run_self_test(pair, seed)
    if not report.passed:
        reason = f"C = {small} and C = {large} differ on this host ({report.summary()}): one shape"
        return PairProof(chosen, small, reason, report)
    reason = f"C = {small} and C = {large} give every row the same bits ({report.summary()})"
    return PairProof(pair, small, reason, report)
