"""Unit tests of the fixed-shape executor, the self-test and the inference-mode checks, in process."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import CNNConfig, MLPConfig, build_model
from service.engine.executor import EagerExecutor, TracedCpuExecutor
from service.engine.types import ChunkResult, Float32Array
from service.engine.variable_shape import VariableShapeExecutor
from service.guarantee.probe import probe_batch_sizes
from service.guarantee.selftest import FRESH_THREAD_CASE, run_on_new_thread, run_self_test
from service.guarantee.verify import ModelRefused, check_inference_mode, check_weights

CONFIG = MLPConfig(in_features=64, num_classes=10, hidden=(256, 256), norm="batch", dropout=0.2)


def trained_model(config: MLPConfig = CONFIG) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, config.in_features) * 2 + 1)  # train mode: updates running stats
    return model.eval()


class BatchMeanShift(nn.Module):
    """Eval-mode batch dependence in its plainest form: each row is shifted by the batch mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :3] - x[:, :3].mean(dim=0, keepdim=True)


class FunctionalDropout(nn.Module):
    """Dropout that survives eval(): F.dropout without training=self.training."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.dropout(x, p=0.5))


class BatchStatsNorm(nn.BatchNorm1d):
    """A BatchNorm that normalizes with batch statistics even in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)


def test_outputs_match_fixed_shape_forward_and_are_row_consistent() -> None:
    executor = TracedCpuExecutor(trained_model(), (64,), 10, chunk_rows=8)
    rows = np.random.default_rng(0).standard_normal((19, 64)).astype(np.float32)  # 3 chunks: 8 + 8 + 3
    outputs = executor.run(rows)
    assert outputs.logits.shape == (19, 10)
    assert outputs.probabilities.shape == (19, 10)
    assert outputs.class_index.tolist() == outputs.logits.argmax(axis=1).tolist()
    with torch.inference_mode():
        padded = torch.zeros(8, 64)
        padded[:3] = torch.from_numpy(rows[16:])
        direct = executor.model(padded)  # (8, 10)
    assert outputs.logits[16:].tobytes() == direct[:3].numpy().tobytes()
    assert outputs.probabilities[16:].tobytes() == torch.softmax(direct, 1)[:3].numpy().tobytes()


def test_self_test_passes_on_fixed_shape_and_reports_the_control() -> None:
    executor = TracedCpuExecutor(trained_model(), (64,), 10, chunk_rows=16)
    report = run_self_test(executor)
    assert report.passed
    assert report.failures == 0
    assert report.batch_sizes == (1, 2, 3, 15, 16, 17, 33)
    # every position, four kinds of co-rows, and the probe alone on a fresh thread
    assert report.cases == 4 * sum(report.batch_sizes) + 1
    assert report.plain_path_batch_dependent  # plain model(batch) differs on this machine


def test_self_test_fails_a_batch_dependent_model() -> None:
    executor = EagerExecutor(BatchMeanShift(), (3,), 3, chunk_rows=4)
    report = run_self_test(executor)
    assert not report.passed
    assert report.failures > 0
    assert report.first_failure.startswith("random co-rows, batch 2, position ")
    assert "failed:" in report.summary()


class OtherThreadsDiffer(EagerExecutor):
    """Every forward on a thread other than the one that built it is nudged by one ulp per logit, as a
    per-thread floating-point setting (flush-to-zero, a thread-local kernel choice) would do."""

    def __init__(self, *args: Any, first_only: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_only = first_only  # nudge only each thread's first forward
        self._builder = threading.get_ident()
        self._forwards = threading.local()

    def _forward(self, piece: Float32Array) -> ChunkResult:
        logits, probabilities, index = super()._forward(piece)
        count = getattr(self._forwards, "count", 0)
        self._forwards.count = count + 1
        if threading.get_ident() != self._builder and (count == 0 or not self.first_only):
            logits = np.nextafter(logits, np.float32(np.inf))
        return logits, probabilities, index


def on_new_thread(executor: EagerExecutor, rows: Float32Array) -> bytes:
    return run_on_new_thread(executor, rows).logits.tobytes()


def test_an_executor_whose_answers_depend_on_the_thread_is_refused() -> None:
    report = run_self_test(OtherThreadsDiffer(trained_model(), (64,), 10, chunk_rows=4))
    assert report.failures == 1
    assert report.first_failure == FRESH_THREAD_CASE


def test_a_threads_first_forward_is_a_warm_up_that_answers_nobody() -> None:
    executor = OtherThreadsDiffer(trained_model(), (64,), 10, chunk_rows=4, first_only=True)
    rows = np.random.default_rng(4).standard_normal((3, 64)).astype(np.float32)
    assert on_new_thread(executor, rows) == executor.run(rows).logits.tobytes()
    assert run_self_test(executor).passed


def test_a_new_thread_gives_the_same_bits_for_a_large_mlp_at_c16() -> None:
    """Measured here (torch 2.13, one thread): an MLP 784-1024-1024-10 at C = 16 computes the first forward
    on each new thread with other bits, traced or eager; the executor's per-thread warm-up absorbs it."""
    model = trained_model(MLPConfig(in_features=784, num_classes=10, hidden=(1024, 1024), norm="batch", dropout=0.2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = np.random.default_rng(5).standard_normal((1, 784)).astype(np.float32)
        for executor in (TracedCpuExecutor(model, (784,), 10, 16), EagerExecutor(model, (784,), 10, 16)):
            here = executor.run(rows).logits.tobytes()
            assert [on_new_thread(executor, rows) for _ in range(3)] == [here] * 3
    finally:
        torch.set_num_threads(threads)


def test_the_bench_variable_shape_executor_fails_its_self_test() -> None:
    """The bench's comparison executor (no padding) is batch-dependent here: why it is no setting."""
    executor = VariableShapeExecutor(trained_model(), (64,), 10, chunk_rows=16)
    assert not run_self_test(executor).passed


def test_traced_and_eager_executors_give_the_same_bits() -> None:
    model = trained_model()
    rows = np.random.default_rng(2).standard_normal((21, 64)).astype(np.float32)
    traced = TracedCpuExecutor(model, (64,), 10, chunk_rows=8)
    eager = EagerExecutor(model, (64,), 10, chunk_rows=8)
    assert traced.run(rows).bitwise_equal(eager.run(rows))
    assert traced.describe() == {"executor": "traced-cpu", "device": "cpu", "dtype": "float32", "chunk_rows": 8}
    assert eager.describe()["executor"] == "eager"


def test_image_models_run_channels_last_with_the_same_bits_traced_and_eager() -> None:
    config = CNNConfig(1, 8, 8, 3, channels=(4, 8), norm="batch", dropout=0.2)
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model(torch.randn(16, 1, 8, 8))  # train mode: updates running stats
    model.eval()
    traced = TracedCpuExecutor(model, (1, 8, 8), 3, chunk_rows=4)
    eager = EagerExecutor(model, (1, 8, 8), 3, chunk_rows=4)
    rows = np.random.default_rng(3).standard_normal((9, 1, 8, 8)).astype(np.float32)
    assert traced.run(rows).bitwise_equal(eager.run(rows))
    assert traced.describe()["memory_format"] == "channels_last"
    conv = traced.model.get_submodule("blocks.4")
    assert isinstance(conv, nn.Conv2d)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert run_self_test(traced).passed


def test_rows_of_the_wrong_shape_are_rejected() -> None:
    executor = EagerExecutor(trained_model(), (64,), 10, chunk_rows=4)
    with pytest.raises(ValueError, match=r"rows have shape \(63,\), expected \(64,\)"):
        executor.run(np.zeros((2, 63), dtype=np.float32))


def test_probe_batch_sizes_for_small_chunks() -> None:
    assert probe_batch_sizes(1) == (1, 2, 3)
    assert probe_batch_sizes(2) == (1, 2, 3, 5)
    assert probe_batch_sizes(32) == (1, 2, 3, 31, 32, 33, 65)


def test_functional_dropout_is_refused() -> None:
    with pytest.raises(ModelRefused, match="consumed the global RNG"):
        check_inference_mode(FunctionalDropout().eval(), (8,), "cpu")


def test_module_left_in_training_mode_is_refused() -> None:
    model = trained_model()
    model.get_submodule("blocks.3").train()  # the first Dropout
    with pytest.raises(ModelRefused, match=r"modules still in training mode: \['blocks.3'\]"):
        check_inference_mode(model, (64,), "cpu")


def test_batch_statistics_in_eval_mode_are_refused() -> None:
    norm = BatchStatsNorm(4)
    model = nn.Sequential(nn.Linear(8, 4), norm).eval()
    with torch.no_grad():
        norm.running_mean.fill_(0.5)  # type: ignore[union-attr]
        norm.num_batches_tracked.fill_(1)  # type: ignore[union-attr]
    with pytest.raises(ModelRefused, match="'1' output differs from the running-statistics formula"):
        check_inference_mode(model, (8,), "cpu")


def test_a_correct_model_passes_every_check() -> None:
    model = trained_model()
    check_weights(model)
    check_inference_mode(model, (64,), "cpu")


def test_untrained_batchnorm_is_refused() -> None:
    with pytest.raises(ModelRefused, match=r"never updated \(num_batches_tracked == 0\)"):
        check_weights(build_model(CONFIG).eval())
