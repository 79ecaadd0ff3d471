"""Which node targets an imported torch.export graph may hold (after `ep.run_decompositions()`, torch 2.13):
deterministic ATen inference ops, and the `_operator` arithmetic torch writes on a free batch size.

Refused with a train-mode reason before the allowlist is consulted: dropout and random ops, BatchNorm in
training form (`_native_batch_norm_legit` with batch statistics, `_native_batch_norm_legit_functional`,
`batch_norm`/`native_batch_norm` with training true) and attention with a non-zero dropout_p.
"""

from __future__ import annotations

import re
from typing import Any

# fmt: off
_ATEN = (
    "_adaptive_avg_pool2d.default", "_log_softmax.default", "_native_batch_norm_legit_no_training.default",
    "_softmax.default", "_to_copy.default", "abs.default", "adaptive_avg_pool2d.default", "add.Scalar",
    "add.Tensor", "addmm.default", "alias.default", "amax.default", "any.dim", "avg_pool2d.default",
    "bmm.default", "cat.default", "clamp.default", "clamp_max.default", "clamp_min.default", "clone.default",
    "constant_pad_nd.default", "convolution.default", "cos.default", "div.Scalar", "div.Tensor", "eq.Scalar",
    "eq.Tensor", "erf.default", "exp.default", "expand.default", "full.default", "full_like.default",
    "ge.Scalar", "gelu.default", "gt.Scalar", "hardtanh.default", "le.Scalar", "leaky_relu.default",
    "log.default", "logical_not.default", "lt.Scalar", "max_pool2d_with_indices.default", "maximum.default",
    "mean.dim", "minimum.default", "mm.default", "mul.Scalar", "mul.Tensor", "native_layer_norm.default",
    "ne.Scalar", "neg.default", "permute.default", "pow.Tensor_Scalar", "reciprocal.default", "relu.default",
    "rsqrt.default", "scalar_tensor.default", "select.int", "sigmoid.default", "silu.default", "sin.default",
    "slice.Tensor", "split_with_sizes.default", "sqrt.default", "squeeze.dim", "squeeze.dims", "sub.Scalar",
    "sub.Tensor", "sum.dim_IntList", "sym_size.int", "tanh.default", "unsqueeze.default", "view.default",
    "where.self", "_scaled_dot_product_flash_attention_for_cpu.default", "hardsigmoid.default",
    "hardswish.default", "max.dim", "argmax.default", "embedding.default", "index_select.default",
)
# fmt: on
ALLOWED_TARGETS = frozenset(f"torch.ops.aten.{name}" for name in _ATEN)
SYM_TARGETS = frozenset({"_operator.mul", "_operator.add", "_operator.sub", "_operator.floordiv"})
_RANDOM = re.compile(r"torch\.ops\.aten\.(native_dropout|dropout|feature_dropout|alpha_dropout|bernoulli|rand|randn"
                     r"|randint|rand_like|randn_like|randint_like|randperm|normal|uniform|multinomial|exponential"
                     r"|geometric|cauchy|log_normal|poisson)[_.]")  # fmt: skip
_TRAIN_BATCH_NORM = ("_native_batch_norm_legit.default", "_native_batch_norm_legit.no_stats",
                     "_native_batch_norm_legit_functional.default", "_native_batch_norm_legit.out")  # fmt: skip


def _argument(inputs: Any, name: str) -> Any:
    """The value of the named input of a node, from its serialized form; None when absent."""
    if isinstance(inputs, list):
        for item in inputs:
            if isinstance(item, dict) and item.get("name") == name and isinstance(item.get("arg"), dict):
                return next(iter(item["arg"].values()), None)
    return None


def train_mode_reason(target: str, inputs: Any) -> str:
    """Why this node is a training-mode node, or "" when it is not one."""
    if _RANDOM.match(target + "."):
        return f"random op {target.removeprefix('torch.ops.aten.')} (dropout in training mode or sampling)"
    op = target.removeprefix("torch.ops.aten.")
    if op in _TRAIN_BATCH_NORM:
        return f"BatchNorm with batch statistics ({op})"
    if op.split(".")[0] in ("batch_norm", "native_batch_norm", "_batch_norm_impl_index", "cudnn_batch_norm"):
        return f"BatchNorm op {op} (training flag {_argument(inputs, 'training')!r})"
    if "attention" in op:
        dropout = _argument(inputs, "dropout_p")
        if dropout not in (None, 0, 0.0):
            return f"attention with dropout_p {dropout!r}"
    return ""
