"""A ResNet-like CNN on 3x32x32 images (Conv, BatchNorm2d, residual blocks, dropout), trained briefly on
generated data and exported to ONNX: `python examples/resnet_cnn.py --out DIR [--steps N] [--width W]`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from export_common import export_onnx, export_pt2, generated_data, train_briefly
from torch import nn

IMAGE, CLASSES = (3, 32, 32), 10


class Block(nn.Module):
    """conv-bn-relu-conv-bn plus the input (a 1x1 projection when the shape changes), then relu."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            projection = nn.Conv2d(channels_in, channels_out, 1, stride, bias=False)
            self.skip = nn.Sequential(projection, nn.BatchNorm2d(channels_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


class ResNetLike(nn.Module):
    """(N, 3, 32, 32) -> (N, 10): stem, three stages of blocks (stride 1, 2, 2), global pool, dropout, linear."""

    def __init__(self, width: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stages = nn.Sequential(Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * width, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.stages(self.stem(images)).mean(dim=(2, 3))  # (N, 4 * width)
        return self.head(self.dropout(features))


def build(width: int = 16, steps: int = 100, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The trained model (eval mode) and an example batch (4, 3, 32, 32)."""
    torch.manual_seed(seed)
    rows, labels = generated_data(1024, IMAGE, CLASSES, seed)
    return train_briefly(ResNetLike(width), rows, labels, steps, seed), rows[:4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, example = build(args.width, args.steps)
    print(export_onnx(model, example, args.out / "model.onnx"))
    print(export_pt2(model, example, args.out / "model.pt2"))


if __name__ == "__main__":
    main()
