"""The start-up self-test: a model is ready only once the probe (service/probe.py) gives identical bits
alone and at every position of batches around C, next to random, zero, huge and NaN co-rows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from service.executor import Executor, Float32Array, Outputs
from service.probe import CO_ROW_KINDS, ProbeReport, run_probe


@dataclass(frozen=True)
class SelfTestReport(ProbeReport):
    # Whether plain `model(batch)` changes the probe's bits with the batch size here: the control that
    # shows the fixed shape is doing work on this machine.
    plain_path_batch_dependent: bool = False


def row_answers(outputs: Outputs) -> list[bytes]:
    """Each row's answer as its exact bits: logits, probabilities and class index."""
    return [
        outputs.logits[i].tobytes() + outputs.probabilities[i].tobytes() + outputs.class_index[i].tobytes()
        for i in range(outputs.class_index.shape[0])
    ]


def run_self_test(executor: Executor, seed: int = 0) -> SelfTestReport:
    report = run_probe(
        lambda rows: row_answers(executor.run(rows)), executor.input_shape, executor.chunk_rows, seed, CO_ROW_KINDS
    )
    plain_differs = _plain_path_differs(executor, np.random.default_rng(seed + 1))
    return SelfTestReport(**dataclasses.asdict(report), plain_path_batch_dependent=plain_differs)


def _plain_path_differs(executor: Executor, rng: np.random.Generator) -> bool:
    probe: Float32Array = rng.standard_normal((1, *executor.input_shape)).astype(np.float32)
    alone = executor.run_plain(probe)[0].tobytes()
    for size in range(2, 2 * executor.chunk_rows + 2):
        batch = rng.standard_normal((size, *executor.input_shape)).astype(np.float32)
        batch[size // 2] = probe[0]
        if executor.run_plain(batch)[size // 2].tobytes() != alone:
            return True
    return False
