"""What the three examples share: brief training on generated data, and the export a user would write.

`torch.onnx.export(..., dynamo=True)` (needs onnxscript) with a free batch dimension; `external_data=False`
writes one file, True the two-file form (`model.onnx` + `model.onnx.data`) torch writes by default.
`export_pt2`: the torch.export program (`model.pt2`) the server accepts after its pre-check: eval mode, a free
batch dimension, `run_decompositions()` (BatchNorm in its no-training form, no dropout node), no sample inputs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def generated_data(
    count: int, row_shape: tuple[int, ...], classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (count, *row_shape) float32 and labels (count,) int64 from a fixed random linear rule, so that a
    model can learn something in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn((count, *row_shape), generator=generator)
    rule = torch.randn((rows[0].numel(), classes), generator=generator)
    labels = torch.argmax(rows.reshape(count, -1) @ rule, dim=1)
    return rows, labels


def train_briefly(model: nn.Module, rows: torch.Tensor, labels: torch.Tensor, steps: int, seed: int) -> nn.Module:
    """A few Adam steps on batches of 32 in training mode (dropout and BatchNorm statistics live), then eval()."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        start = (step * 32) % max(rows.shape[0] - 32, 1)
        loss = nn.functional.cross_entropy(model(rows[start : start + 32]), labels[start : start + 32])
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()
    return model.eval()


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, external_data: bool = False) -> Path:
    """The export line a user writes: a free batch dimension named 'batch', one file unless asked otherwise."""
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        external_data=external_data,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    return path


def export_pt2(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """The torch.export line a user writes for this server: eval mode, free batch, decomposed to core ATen."""
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program.run_decompositions(), str(path))
    return path
