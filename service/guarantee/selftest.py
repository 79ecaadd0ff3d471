"""The start-up self-test: a model is ready only once the probe (service/guarantee/probe.py) gives identical bits
alone and at every position of batches around C, next to random, zero, huge and NaN co-rows, and alone
again on a thread that has never run the model.

Why the last case: requests are answered on the batcher's compute thread, which starts after the self-test,
and a thread's first forward can take another path through the math libraries (torch 2.13, CPU, one
thread: an MLP 784-1024-1024-10 at C = 16 computes each new thread's first forward with other bits, traced or
eager). The executor runs warm-up forwards on every new thread for that (service/engine/executor.py); this case
checks that a fresh thread, warmed up the same way, then gives the self-test's bits, and refuses a model whose
answers still depend on the thread (a per-thread floating-point setting would).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import numpy as np

from service.engine.pair import shapes_of
from service.engine.types import Executor, Float32Array, Outputs
from service.guarantee.probe import CO_ROW_KINDS, ProbeReport, probe_rows, run_probe

FRESH_THREAD_CASE = "the probe alone on a thread that had never run the model"


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
        lambda rows: row_answers(executor.run(rows)), executor.input_shape, shapes_of(executor), seed, CO_ROW_KINDS
    )
    report = _with_fresh_thread_case(report, executor, seed)
    plain_differs = _plain_path_differs(executor, np.random.default_rng(seed + 1))
    return SelfTestReport(**dataclasses.asdict(report), plain_path_batch_dependent=plain_differs)


def run_on_new_thread(executor: Executor, rows: Float32Array) -> Outputs:
    """executor.run(rows) on a thread started for it, which has never run this executor before."""
    outputs: list[Outputs] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outputs.append(executor.run(rows))
        except BaseException as exc:  # re-raised on the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="fresh-thread")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return outputs[0]


def _with_fresh_thread_case(report: ProbeReport, executor: Executor, seed: int) -> ProbeReport:
    """One more case: the probe's lone answer computed on a new thread equals the one computed here."""
    probe = probe_rows(executor.input_shape, 1, seed)  # run_probe's probe: the same seed, the first draw
    here = row_answers(executor.run(probe))[0]
    if row_answers(run_on_new_thread(executor, probe)) == [here]:
        return dataclasses.replace(report, cases=report.cases + 1)
    return dataclasses.replace(
        report,
        cases=report.cases + 1,
        failures=report.failures + 1,
        first_failure=report.first_failure or FRESH_THREAD_CASE,
    )


def _plain_path_differs(executor: Executor, rng: np.random.Generator) -> bool:
    probe: Float32Array = rng.standard_normal((1, *executor.input_shape)).astype(np.float32)
    alone = executor.run_plain(probe)[0].tobytes()
    for size in range(2, 2 * executor.chunk_rows + 2):
        batch = rng.standard_normal((size, *executor.input_shape)).astype(np.float32)
        batch[size // 2] = probe[0]
        if executor.run_plain(batch)[size // 2].tobytes() != alone:
            return True
    return False
