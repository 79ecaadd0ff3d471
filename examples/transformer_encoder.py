"""A transformer-encoder classifier over float features (LayerNorm, attention, dropout), trained briefly on
generated data and exported to ONNX: `python examples/transformer_encoder.py --out DIR [--steps N]`.

A row of 32 floats is read as 8 tokens of 4 features, embedded, encoded and mean-pooled over its tokens.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from export_common import export_onnx, export_pt2, generated_data, train_briefly
from torch import nn

TOKENS, TOKEN_FEATURES, CLASSES = 8, 4, 4


class EncoderClassifier(nn.Module):
    """(N, 32) -> (N, 4)."""

    def __init__(self, dim: int = 32, heads: int = 4, layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Linear(TOKEN_FEATURES, dim)
        self.position = nn.Parameter(torch.zeros(TOKENS, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(rows.reshape(-1, TOKENS, TOKEN_FEATURES)) + self.position  # (N, 8, dim)
        return self.head(self.norm(self.encoder(tokens).mean(dim=1)))


def build(dim: int = 32, layers: int = 2, steps: int = 100, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The trained model (eval mode) and an example batch (4, 32)."""
    torch.manual_seed(seed)
    rows, labels = generated_data(2048, (TOKENS * TOKEN_FEATURES,), CLASSES, seed)
    return train_briefly(EncoderClassifier(dim, layers=layers), rows, labels, steps, seed), rows[:4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, example = build(steps=args.steps)
    print(export_onnx(model, example, args.out / "model.onnx"))
    print(export_pt2(model, example, args.out / "model.pt2"))


if __name__ == "__main__":
    main()
