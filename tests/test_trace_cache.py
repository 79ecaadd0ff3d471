"""One trace per model structure (issue 20 item 4): reloading a model, or loading another of the same
structure, adds nothing to TorchScript's process-global compilation unit (which never frees what a trace
puts there: ~0.85 MB per trace), and each executor computes with its own model's weights, bit for bit."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models import CNNConfig, MLPConfig, build_model
from service.engine.executor import EagerExecutor, TracedCpuExecutor

CONFIG = MLPConfig(in_features=12, num_classes=5, hidden=(24, 24), norm="batch", dropout=0.2)


def _model(config: MLPConfig | CNNConfig, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *config.input_shape) * 2 + 1)  # train mode: running statistics move
    return model.eval().requires_grad_(False)


def _global_functions() -> int:
    functions: list[object] = torch.jit._state._python_cu.get_functions()  # type: ignore[func-returns-value,assignment]  # stub says None
    return len(functions)


def test_reloads_of_one_structure_add_no_traced_graphs_and_answer_with_their_own_weights() -> None:
    rows = np.random.default_rng(0).standard_normal((11, 12)).astype(np.float32)
    TracedCpuExecutor(_model(CONFIG, 0), (12,), 5, chunk_rows=8)  # the structure's one trace
    before = _global_functions()
    answers = []
    for seed in range(1, 6):  # five loads of models with other weights and the same structure
        model = _model(CONFIG, seed)
        traced = TracedCpuExecutor(model, (12,), 5, chunk_rows=8).run(rows)
        assert traced.bitwise_equal(EagerExecutor(model, (12,), 5, chunk_rows=8).run(rows))
        answers.append(traced.logits.tobytes())
    assert _global_functions() == before
    assert len(set(answers)) == 5  # each computed with its own weights, not the template's


def test_another_structure_or_chunk_gets_its_own_trace() -> None:
    TracedCpuExecutor(_model(CONFIG, 0), (12,), 5, chunk_rows=8)
    before = _global_functions()
    TracedCpuExecutor(_model(CONFIG, 0), (12,), 5, chunk_rows=4)  # another C
    after_chunk = _global_functions()
    cnn = CNNConfig(1, 6, 6, 3, channels=(4,), norm="batch", dropout=0.0)
    model = _model(cnn, 0)
    rows = np.random.default_rng(1).standard_normal((5, 1, 6, 6)).astype(np.float32)
    traced = TracedCpuExecutor(model, (1, 6, 6), 3, chunk_rows=4)
    assert traced.run(rows).bitwise_equal(EagerExecutor(model, (1, 6, 6), 3, chunk_rows=4).run(rows))
    assert before < after_chunk < _global_functions()


class ScaledByConstant(nn.Module):
    """Its scale is a plain tensor attribute, not a buffer: a trace bakes it in as a constant, which the
    structure key (state_dict names and shapes) cannot see."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.linear = nn.Linear(12, 5)
        self.scale = torch.tensor(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


def test_a_copy_that_would_compute_another_models_constant_is_traced_afresh() -> None:
    rows = np.random.default_rng(1).standard_normal((6, 12)).astype(np.float32)
    answers = []
    for scale in (1.0, 3.0):  # same structure key, different baked-in constant
        torch.manual_seed(0)
        model = ScaledByConstant(scale).eval().requires_grad_(False)
        traced = TracedCpuExecutor(model, (12,), 5, chunk_rows=8).run(rows)
        assert traced.bitwise_equal(EagerExecutor(model, (12,), 5, chunk_rows=8).run(rows))
        answers.append(traced.logits.tobytes())
    assert answers[0] != answers[1]
