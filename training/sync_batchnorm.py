"""SyncBatchNorm for any device: training-mode statistics of the global batch, summed over every rank.

torch's `nn.SyncBatchNorm` refuses CPU tensors ("expected input tensor to be on GPU"), and gloo on CPU is
how this project runs distributed training and tests it. This layer does the same job with one
autograd-aware all-reduce per layer and step (`_SumOverRanks`, whose backward all-reduces the gradient, so
each rank's input gradient includes every rank's loss through the shared mean and variance).

It subclasses `_BatchNorm`, so parameters and buffers have BatchNorm's names and shapes: a state dict moves
between this layer and `nn.BatchNorm1d/2d` unchanged, which is how the checkpoint stays plain BatchNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.autograd.function import FunctionCtx


class _SumOverRanks(torch.autograd.Function):
    """y = sum over ranks of x, the same on every rank. Every rank's loss depends on y, so the gradient of the
    total loss with respect to this rank's x is the sum over ranks of dL_r/dy: the backward all-reduces too.
    (torch.distributed.nn.functional.all_reduce does the same but is deprecated and untyped.)"""

    @staticmethod
    def forward(ctx: FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(summed)
        return summed

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(summed)
        return summed


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, differentiable."""
    summed: torch.Tensor = _SumOverRanks.apply(tensor)  # type: ignore[no-untyped-call]  # untyped in torch
    return summed


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        synced = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not synced:
            # Eval mode (running statistics) or a single process: exactly BatchNorm.
            return super().forward(input)
        return self._global_batch_norm(input)

    def _global_batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B_rank, C) or (B_rank, C, H, W); statistics per channel over rows (and positions) of all ranks.
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        broadcast = (1, channels) + (1,) * (x.dim() - 2)
        local_count = torch.tensor([x.numel() // channels], dtype=torch.float64, device=x.device)
        # One all-reduce per layer and step (collectives dominate a small model's step time): per-channel sums
        # of x and x^2 and the row count, in float64 so that E[x^2] - E[x]^2 loses nothing that float32 keeps.
        wide = x.double()
        sums = all_reduce(torch.cat([wide.sum(dims), wide.square().sum(dims), local_count]))  # (2C + 1,)
        count = sums[-1].detach()
        mean64 = sums[:channels] / count  # (C,)
        var64 = (sums[channels:-1] / count - mean64.square()).clamp(min=0)  # (C,) biased: what normalization uses
        mean, var = mean64.to(x.dtype), var64.to(x.dtype)
        centered = x - mean.reshape(broadcast)
        out = centered * torch.rsqrt(var + self.eps).reshape(broadcast)
        if self.affine:
            out = out * self.weight.reshape(broadcast) + self.bias.reshape(broadcast)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, biased_var: torch.Tensor, count: torch.Tensor) -> None:
        # The notes' eq. (4) with beta = 1 - momentum; the running variance is unbiased, as in BatchNorm.
        assert self.running_mean is not None
        assert self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = biased_var * count / (count - 1).clamp(min=1)
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


def convert_to_sync_batchnorm(model: nn.Module) -> int:
    """Replace every BatchNorm layer of `model` in place by a SyncBatchNorm holding the same state.

    Returns how many layers were replaced.
    """
    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncBatchNorm):
                synced = SyncBatchNorm(
                    child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
                )
                synced.load_state_dict(child.state_dict())
                synced.train(child.training)
                setattr(parent, child_name, synced)
                replaced += 1
    return replaced
