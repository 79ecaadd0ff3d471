"""Fidelity to the lecture notes (normalization and regularization), checked against hand computations.

- BatchNorm running statistics, eq. (4): mu <- beta*mu + (1-beta)*E[z], var <- beta*var + (1-beta)*Var[z]
  with beta = 1 - momentum (torch's `momentum`, our --bn-momentum).
- LayerNorm, eq. (2): every row has mean 0 and (biased) variance 1.
- Dropout: zero with probability p, survivors scaled by 1/(1-p) in training; the identity in eval.
- Weight decay, eq. (6): one SGD step is W <- (1 - alpha*lambda) W - alpha*grad.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from training_helpers import manifest_json, train

from models.architectures import batchnorm_layers, build_model
from models.checkpoint import load_checkpoint
from models.config import CNNConfig, MLPConfig
from training.loop import build_optimizer

EPS = 1e-5  # torch's default eps for BatchNorm and LayerNorm


def _batches(count: int, shape: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # Far from mean 0 / var 1, so a wrong update cannot hide near the initial values.
    return [torch.randn(shape, generator=generator, dtype=torch.float64) * 3.0 + 2.0 for _ in range(count)]


def _running(layer: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(running_mean, running_var, num_batches_tracked); typed Optional by torch, always set here."""
    assert layer.running_mean is not None
    assert layer.running_var is not None
    assert layer.num_batches_tracked is not None
    return layer.running_mean, layer.running_var, int(layer.num_batches_tracked.item())


def test_batchnorm1d_running_statistics_follow_eq4_and_keep_the_unbiased_variance() -> None:
    """Hand computation of eq. (4) over five steps, in float64 so only rounding order differs.

    torch keeps the UNBIASED batch variance (sum of squares / (n - 1)) in `running_var`, while the batch
    itself is normalized with the BIASED one (/ n). The notes' Var[z] is therefore the unbiased estimate in
    the running update and the biased one inside the training-mode normalization.
    """
    momentum = 0.3
    beta = 1.0 - momentum
    layer = nn.BatchNorm1d(4, momentum=momentum, dtype=torch.float64)
    mu, var = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    biased_var_track = var.clone()
    for z in _batches(5, (8, 4), seed=0):  # z: (n=8, features=4)
        out = layer(z)
        n = z.shape[0]
        mean = z.sum(dim=0) / n
        square_sum = ((z - mean) ** 2).sum(dim=0)
        mu = beta * mu + (1 - beta) * mean
        var = beta * var + (1 - beta) * square_sum / (n - 1)
        biased_var_track = beta * biased_var_track + (1 - beta) * square_sum / n
        running_mean, running_var, _ = _running(layer)
        torch.testing.assert_close(running_mean, mu, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(running_var, var, rtol=1e-13, atol=1e-13)
        # Training mode normalizes the batch with its own mean and BIASED variance (weight 1, bias 0).
        torch.testing.assert_close(out, (z - mean) / torch.sqrt(square_sum / n + EPS), rtol=1e-12, atol=1e-12)
    _, running_var, steps = _running(layer)
    assert steps == 5
    # The biased variance would not reproduce torch's running_var.
    assert not torch.allclose(running_var, biased_var_track, rtol=1e-6, atol=0)


def test_batchnorm2d_running_statistics_are_per_channel_over_n_h_w() -> None:
    momentum = 0.1
    beta = 1.0 - momentum
    layer = nn.BatchNorm2d(3, momentum=momentum, dtype=torch.float64)
    mu, var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for z in _batches(4, (5, 3, 2, 2), seed=1):  # (N, C, H, W): 5 * 2 * 2 = 20 values per channel
        layer(z)
        values = z.permute(1, 0, 2, 3).reshape(3, -1)  # (C, N*H*W)
        count = values.shape[1]
        mean = values.sum(dim=1) / count
        mu = beta * mu + (1 - beta) * mean
        var = beta * var + (1 - beta) * ((values - mean[:, None]) ** 2).sum(dim=1) / (count - 1)
    running_mean, running_var, _ = _running(layer)
    torch.testing.assert_close(running_mean, mu, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(running_var, var, rtol=1e-13, atol=1e-13)


def test_batchnorm_eval_mode_uses_the_running_statistics() -> None:
    layer = nn.BatchNorm1d(4, momentum=0.5, dtype=torch.float64)
    for z in _batches(3, (16, 4), seed=2):
        layer(z)
    layer.eval()
    (x,) = _batches(1, (6, 4), seed=3)
    running_mean, running_var, _ = _running(layer)
    expected = (x - running_mean) / torch.sqrt(running_var + EPS)
    torch.testing.assert_close(layer(x), expected, rtol=1e-13, atol=1e-13)


def test_bn_momentum_flag_reaches_every_batchnorm_layer(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    assert train(repository, "--hidden", "8,8", "--bn-momentum", "0.25", "--name", "bn") == 0
    assert manifest_json(repository / "bn" / "1")["architecture"]["bn_momentum"] == 0.25
    model, _ = load_checkpoint(repository / "bn" / "1")
    layers = batchnorm_layers(model)
    assert len(layers) == 2
    assert all(layer.momentum == 0.25 for layer in layers.values())


def test_layernorm_gives_every_row_mean_0_and_biased_variance_1() -> None:
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(32, 64, generator=generator, dtype=torch.float64) * 7.0 + 5.0  # (rows, features)
    out = nn.LayerNorm(64, dtype=torch.float64)(z)
    row_var = z.var(dim=1, unbiased=False)  # the notes' Var over the row's features, biased (/ n)
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(32, dtype=torch.float64), rtol=0, atol=1e-14)
    # Exactly Var/(Var + eps) by eq. (2); within eps/Var (< 1e-6 here) of 1.
    expected = row_var / (row_var + EPS)
    torch.testing.assert_close(out.var(dim=1, unbiased=False), expected, rtol=1e-13, atol=0)
    assert (out.var(dim=1, unbiased=False) - 1).abs().max().item() < 1e-6


def test_model_layer_norms_normalize_each_sample() -> None:
    torch.manual_seed(0)
    mlp = build_model(MLPConfig(in_features=10, num_classes=3, hidden=(32,), norm="layer"))
    cnn = build_model(CNNConfig(in_channels=1, height=4, width=4, num_classes=3, channels=(6,), norm="layer"))
    x = torch.randn(8, 10) * 4 + 3
    hidden = mlp.get_submodule("blocks.1")(mlp.get_submodule("blocks.0")(x))  # Linear -> LayerNorm: (8, 32)
    torch.testing.assert_close(hidden.mean(dim=1), torch.zeros(8), rtol=0, atol=1e-5)
    torch.testing.assert_close(hidden.var(dim=1, unbiased=False), torch.ones(8), rtol=0, atol=1e-4)
    images = torch.randn(8, 1, 4, 4) * 4 + 3
    conv, norm = cnn.get_submodule("blocks.0"), cnn.get_submodule("blocks.1")
    maps = norm(conv(images)).reshape(8, -1)  # Conv -> GroupNorm(1, C), normalized over (C, H, W)
    torch.testing.assert_close(maps.mean(dim=1), torch.zeros(8), rtol=0, atol=1e-5)
    torch.testing.assert_close(maps.var(dim=1, unbiased=False), torch.ones(8), rtol=0, atol=1e-4)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_dropout_zeroes_with_probability_p_and_scales_survivors(p: float) -> None:
    """Survivors are multiplied by 1/(1-p) rounded once to float32 (torch scales its float32 mask).

    With n = 2,000,000 draws the zero fraction has standard deviation sqrt(p(1-p)/n) <= 0.00036; the bound
    is 5 of those (seeded, so the test is also reproducible).
    """
    n = 2_000_000
    torch.manual_seed(1234)
    x = torch.rand(n) + 0.5  # no zeros of its own: (n,)
    layer = nn.Dropout(p)
    y = layer(x)
    dropped = y == 0
    bound = 5 * math.sqrt(p * (1 - p) / n)
    assert abs(dropped.double().mean().item() - p) < bound
    scale = torch.tensor(1.0 / (1.0 - p), dtype=torch.float32)
    assert torch.equal(y[~dropped], x[~dropped] * scale)
    layer.eval()
    assert torch.equal(layer(x), x)


def test_model_dropout_is_active_in_train_and_the_identity_in_eval() -> None:
    torch.manual_seed(0)
    model = build_model(MLPConfig(in_features=10, num_classes=3, hidden=(64, 64), norm="none", dropout=0.5))
    x = torch.randn(4, 10)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
        no_dropout = build_model(MLPConfig(in_features=10, num_classes=3, hidden=(64, 64), norm="none"))
        no_dropout.load_state_dict(model.state_dict())
        no_dropout.eval()
        assert torch.equal(first, second)
        assert torch.equal(first, no_dropout(x))


def _mlp_without_norm() -> nn.Module:
    torch.manual_seed(0)
    return build_model(MLPConfig(in_features=32, num_classes=4, hidden=(64,), norm="none"))


def test_sgd_weight_decay_step_is_eq6_exactly_on_dyadic_values() -> None:
    """With values whose products and sums are exact in float32 (small multiples of powers of two, lr and
    lambda powers of two) no rounding happens, so the literal eq. (6) must match bit for bit. Biases are
    not decayed (the notes' eq. 5 penalizes the weight matrices W_i): b <- b - alpha*grad."""
    model = _mlp_without_norm()
    lr, lam = 0.125, 0.5
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randint(-64, 64, param.shape, generator=generator) / 64)
            param.grad = torch.randint(-64, 64, param.shape, generator=generator) / 16
    before = {name: (p.detach().clone(), p.grad.clone()) for name, p in model.named_parameters() if p.grad is not None}
    build_optimizer(model, "sgd", lr=lr, momentum=0.0, weight_decay=lam).step()
    for name, param in model.named_parameters():
        weight, grad = before[name]
        expected = (1 - lr * lam) * weight - lr * grad if param.dim() >= 2 else weight - lr * grad
        assert torch.equal(param.detach(), expected), name


def test_sgd_weight_decay_step_is_eq6_to_rounding_on_real_gradients() -> None:
    """A real step (lr 0.05, lambda 5e-4, gradients from a loss). torch evaluates eq. (6) as
    W - alpha*(grad + lambda*W), algebraically the same; that order is matched bit for bit. Against eq. (6)
    evaluated in float64, the three float32 roundings (lambda*W, the sum, the step) each cost at most half
    an ulp of the largest operand, so the result is within 2 ulp of max(|W|, |alpha*grad|, |W'|)."""
    model = _mlp_without_norm()
    lr, lam = 0.05, 5e-4
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 32, generator=generator), torch.randint(0, 4, (16,), generator=generator)
    torch.autograd.backward(nn.functional.cross_entropy(model(x), y))
    before = {name: (p.detach().clone(), p.grad.clone()) for name, p in model.named_parameters() if p.grad is not None}
    build_optimizer(model, "sgd", lr=lr, momentum=0.0, weight_decay=lam).step()
    for name, param in model.named_parameters():
        weight, grad = before[name]
        new = param.detach()
        if param.dim() < 2:
            assert torch.equal(new, weight.add(grad, alpha=-lr)), name
            continue
        assert torch.equal(new, weight.add(grad.add(weight, alpha=lam), alpha=-lr)), name
        ideal = (1 - lr * lam) * weight.double() - lr * grad.double()
        scale = torch.maximum(torch.maximum(weight.abs(), new.abs()), (lr * grad).abs())
        ulp = (torch.nextafter(scale, torch.tensor(math.inf)) - scale).double()
        assert ((new.double() - ideal).abs() <= 2 * ulp).all(), name
        assert not torch.equal(new, weight.add(grad, alpha=-lr))  # the decay did act


def test_adamw_decay_is_decoupled_from_the_adaptive_step() -> None:
    """With a zero loss gradient Adam's own step is 0, so AdamW leaves exactly W * (1 - lr*lambda): the
    decay bypasses the adaptive scaling. (Coupled L2 in Adam would instead normalize lambda*W and move
    every weight by about lr.)"""
    model = _mlp_without_norm()
    lr, lam = 0.01, 0.1
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    build_optimizer(model, "adamw", lr=lr, momentum=0.0, weight_decay=lam).step()
    for name, param in model.named_parameters():
        expected = before[name] * (1 - lr * lam) if param.dim() >= 2 else before[name]
        assert torch.equal(param.detach(), expected), name
    coupled = _mlp_without_norm()
    for param in coupled.parameters():
        param.grad = torch.zeros_like(param)
    torch.optim.Adam(coupled.parameters(), lr=lr, weight_decay=lam).step()
    moved = (coupled.get_parameter("head.weight").detach() - before["head.weight"]).abs()
    torch.testing.assert_close(moved, torch.full_like(moved, lr), rtol=1e-3, atol=0)
