"""A user-written tabular MLP (not one of invariant-serve's architectures), trained briefly on generated data
and exported: `python examples/tabular_mlp.py --out DIR [--steps N]` writes DIR/model.onnx and DIR/model.pt2.
Then: `python -m models.package --model DIR/model.onnx --name tabular --repository REPO`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from export_common import export_onnx, export_pt2, generated_data, train_briefly
from torch import nn

FEATURES, CLASSES = 12, 3


class TabularMLP(nn.Module):
    """(N, 12) -> (N, 3): Linear -> BatchNorm1d -> GELU -> Dropout, twice, then a Linear head."""

    def __init__(self, hidden: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = FEATURES
        for _ in range(2):
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(rows))


def build(hidden: int = 64, steps: int = 200, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The trained model (eval mode) and an example batch (4, 12)."""
    torch.manual_seed(seed)
    rows, labels = generated_data(2048, (FEATURES,), CLASSES, seed)
    return train_briefly(TabularMLP(hidden), rows, labels, steps, seed), rows[:4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, example = build(steps=args.steps)
    print(export_onnx(model, example, args.out / "model.onnx"))
    print(export_pt2(model, example, args.out / "model.pt2"))


if __name__ == "__main__":
    main()
