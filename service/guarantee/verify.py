"""Checks that a loaded model really runs in inference mode; each failure is a refusal reason.

`model.eval()` is necessary and not sufficient: BatchNorm with track_running_stats=False normalizes with
batch statistics even in eval mode, and functional dropout ignores `eval()`. Each check here catches one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models import batchnorm_layers
from service.engine.executor import DTYPES


class ModelRefused(Exception):
    """The model must not be served; the message is the reason shown to operators and clients."""


def check_fingerprint(fingerprint: str, parts: dict[str, object], expected: str) -> None:
    """Refuse a model whose numerics fingerprint is not one of the comma-separated `expected` (if any)."""
    allowed = [value.strip() for value in expected.split(",") if value.strip()]
    if allowed and fingerprint not in allowed:
        raise ModelRefused(
            f"numerics fingerprint {fingerprint} is not the expected {' or '.join(allowed)}: this replica would "
            f"compute different bits (its numerics: {parts})"
        )


def check_weights(model: nn.Module) -> None:
    """Refuse models whose BatchNorm layers would use batch statistics, or whose tensors are non-finite."""
    for name, layer in batchnorm_layers(model).items():
        if not layer.track_running_stats or layer.running_mean is None or layer.running_var is None:
            raise ModelRefused(
                f"BatchNorm layer {name!r} has no running statistics (track_running_stats=False): "
                "it would normalize with batch statistics, so a prediction would depend on its batch"
            )
        if not (torch.isfinite(layer.running_mean).all() and torch.isfinite(layer.running_var).all()):
            raise ModelRefused(f"BatchNorm layer {name!r} has non-finite running statistics")
        if layer.num_batches_tracked is not None and int(layer.num_batches_tracked) == 0:
            raise ModelRefused(
                f"BatchNorm layer {name!r} running statistics were never updated (num_batches_tracked == 0)"
            )
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelRefused(f"weight {name!r} has non-finite values")


def check_inference_mode(
    model: nn.Module, input_shape: tuple[int, ...], device: str, dtype: str = "float32", seed: int = 0
) -> None:
    """After `eval()`, on the device and in the dtype the model serves in: no module in training mode; the
    same input twice gives the same bytes and leaves the global RNG untouched; BatchNorm outputs equal the
    running-statistics formula."""
    training = [name or "<root>" for name, module in model.named_modules() if module.training]
    if training:
        raise ModelRefused(f"modules still in training mode: {training[:5]}")
    generator = torch.Generator().manual_seed(seed)
    probe = torch.randn((2, *input_shape), generator=generator).to(device, DTYPES[dtype])  # (2, *input_shape)
    rng_before = torch.get_rng_state()
    with torch.inference_mode():
        first = model(probe)
        second = model(probe)
    if not torch.equal(torch.get_rng_state(), rng_before):
        raise ModelRefused("a forward pass consumed the global RNG (stochastic layer active in eval mode)")
    if _bytes(first) != _bytes(second):
        raise ModelRefused("the same input twice gave different outputs (stochastic layer active in eval mode)")
    _check_batchnorm_formula(model, probe)


def _check_batchnorm_formula(model: nn.Module, probe: torch.Tensor) -> None:
    """Each BatchNorm output must be (x - running_mean) / sqrt(running_var + eps) * weight + bias.

    Compared with a tolerance of a few ulps of the model's dtype (our formula may round differently from the
    kernel); batch statistics of a 2-row probe would be off by orders of magnitude more.
    """
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    layers = batchnorm_layers(model)
    handles = [
        layer.register_forward_hook(
            lambda _m, args, out, name=name: captured.__setitem__(name, (args[0].detach(), out.detach()))
        )
        for name, layer in layers.items()
    ]
    try:
        with torch.inference_mode():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    for name, layer in layers.items():
        if name not in captured:
            raise ModelRefused(f"BatchNorm layer {name!r} was not used in a forward pass")
        inputs, output = captured[name]
        expected = _batchnorm_formula(layer, inputs)
        error = float((output.float() - expected).abs().max())
        scale = float(expected.abs().max()) + 1.0
        if not math.isfinite(error) or error > _ulps(output.dtype) * scale:
            raise ModelRefused(
                f"BatchNorm layer {name!r} output differs from the running-statistics formula by {error:.3g}"
            )


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.float().cpu().numpy().tobytes()  # bfloat16 widens to float32 exactly (numpy has no bf16)


def _ulps(dtype: torch.dtype) -> float:
    """The formula check's relative tolerance: 1e-5 in float32 (about 80 ulps), 4 ulps in bfloat16 (3%)."""
    return max(1e-5, 4 * torch.finfo(dtype).eps)


@torch.no_grad()
def _batchnorm_formula(layer: nn.modules.batchnorm._BatchNorm, inputs: torch.Tensor) -> torch.Tensor:
    # Statistics are per channel (dim 1); broadcast them over (N, C) or (N, C, H, W).
    # Computed in float32 whatever the model's dtype, so the formula adds no rounding of its own.
    view = (1, -1) + (1,) * (inputs.dim() - 2)
    assert layer.running_mean is not None
    assert layer.running_var is not None
    mean, var = layer.running_mean.float().view(view), layer.running_var.float().view(view)
    result = (inputs.float() - mean) / torch.sqrt(var + layer.eps)
    if layer.affine:
        result = result * layer.weight.float().view(view) + layer.bias.float().view(view)
    return result
