"""The JSON half of the .pt2 pre-check (models/pt2_check.py): `models/model.json` and the weights/constants
configs of a torch.export archive (torch 2.13, schema 8.x), validated field by field against what the
deserializer does with each field, and rewritten without anything that was not validated.

What each refusal closes (torch/_export/serde/serialize.py and torch/export/pt2_archive/_package.py, 2.13):
- `use_pickle` entries and custom/opaque constants go to `torch.load(weights_only=False)` / `pickle.loads`.
- `expr_str` of symbolic sizes goes to `sympy.sympify` (eval of a Python expression): only the exact forms
  torch writes for a free batch dimension are accepted (`Symbol('s7', positive=True, integer=True)`, an
  `Integer(n)` and `Mul(Integer(n), Symbol(...))`), each matched whole by a regex.
- `guards_code` is executed by `.module()`: it must be empty.
- Node targets resolve by `getattr` on torch/operator/math: an allowlist of ATen overloads and four
  `_operator` symbolic-size ops. Node names and tensor names become FX generated code: Python identifiers only.
- Node metadata (stack traces, module stacks, source maps) is not needed to run a graph: dropped, not parsed.
"""

from __future__ import annotations

import re
from typing import Any

from models.onnx_check import ImportRefused
from models.pt2_ops import ALLOWED_TARGETS, SYM_TARGETS, train_mode_reason

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
# A module path: segments may start with a digit ("0.weight", nn.Sequential's names); no dunder (checked apart).
DOTTED = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_]{0,99}(\.[A-Za-z0-9_][A-Za-z0-9_]{0,99}){0,31}")
SYMBOL = r"Symbol\('(s[0-9]{1,9})', positive=True, integer=True\)"
SYMBOL_NAME = re.compile(r"s[0-9]{1,9}")
# The exact expression strings torch 2.13 writes for sizes that follow a free batch dimension.
EXPRESSIONS = (
    re.compile(SYMBOL),
    re.compile(r"Integer\(([0-9]{1,12})\)"),
    re.compile(rf"Mul\(Integer\(([0-9]{{1,12}})\), {SYMBOL}\)"),
)
ARCHIVE_DTYPES = {  # schema ScalarType -> name: real and integer dtypes only (no complex, no float8)
    1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32", 8: "float64", 12: "bool",
    13: "bfloat16",
}  # fmt: skip
ELEMENT_BYTES = {5: 8, 6: 2, 7: 4, 8: 8, 12: 1, 13: 2, 4: 4, 1: 1, 2: 1, 3: 2}
STRIDED = 7  # schema Layout.Strided
MAX_INT = 2**40
MAX_STRING = re.compile(r"[A-Za-z0-9_.\-]{0,64}")
_SCALARS = {"as_int", "as_float", "as_bool", "as_scalar_type", "as_memory_format", "as_layout"}


def _refuse(reason: str) -> ImportRefused:
    return ImportRefused(f"torch.export archive refused: {reason}")


def _keys(obj: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _refuse(f"{where} is not an object")
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _refuse(f"{where} has fields this server does not check: {extra[:3]}")
    return obj


def _int(value: Any, where: str, low: int = -MAX_INT) -> int:
    if type(value) is not int or not low <= value <= MAX_INT:
        raise _refuse(f"{where} is not an integer in range")
    return value


def _ident(value: Any, where: str, pattern: re.Pattern[str] = IDENT) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or value.startswith("__") or ".__" in value:
        raise _refuse(f"{where} {str(value)[:40]!r} is not a plain name")
    return value


def check_expression(text: Any) -> set[str]:
    """A symbolic size as sympy would parse it, matched whole: its symbol names, or ImportRefused."""
    if isinstance(text, str) and len(text) <= 120:
        for pattern in EXPRESSIONS:
            if match := pattern.fullmatch(text):
                return {group for group in match.groups() if group.startswith("s")}
    raise _refuse(f"a shape expression {str(text)[:60]!r} is not a plain integer or size symbol")


def sym_int(value: Any, where: str) -> int | None:
    """A serialized SymInt: its integer, or None for an accepted symbolic size."""
    value = _keys(value, {"as_int", "as_expr"}, where)
    if len(value) != 1:
        raise _refuse(f"{where} is not one SymInt")
    if "as_int" in value:
        return _int(value["as_int"], where)
    expr = _keys(value["as_expr"], {"expr_str", "hint"}, where)
    check_expression(expr.get("expr_str"))
    if expr.get("hint") is not None:
        _int(_keys(expr["hint"], {"as_int"}, where).get("as_int"), where)
    return None


def tensor_meta(meta: Any, where: str) -> tuple[int, list[int | None]]:
    """A TensorMeta: (dtype, sizes with None for symbolic), CPU strided only."""
    meta = _keys(meta, {"dtype", "sizes", "requires_grad", "device", "strides", "storage_offset", "layout"}, where)
    if type(meta.get("dtype")) is not int or meta["dtype"] not in ARCHIVE_DTYPES or meta.get("layout") != STRIDED:
        raise _refuse(f"{where} has a dtype or layout outside {sorted(ARCHIVE_DTYPES.values())} strided")
    device = _keys(meta.get("device"), {"type", "index"}, where)
    if device.get("type") != "cpu" or device.get("index") is not None:
        raise _refuse(f"{where} is not on the CPU")
    if not isinstance(meta.get("requires_grad"), bool):
        raise _refuse(f"{where}.requires_grad is not a boolean")
    sizes, strides = meta.get("sizes"), meta.get("strides")
    if not isinstance(sizes, list) or not isinstance(strides, list) or len(sizes) != len(strides) or len(sizes) > 8:
        raise _refuse(f"{where} has invalid sizes or strides")
    for stride in strides:
        sym_int(stride, where)
    sym_int(meta.get("storage_offset"), where)
    return meta["dtype"], [sym_int(size, where) for size in sizes]


def check_argument(arg: Any, where: str) -> None:
    """One serialized Argument (a union with one key): plain data and tensor/size names only."""
    if not isinstance(arg, dict) or len(arg) != 1:
        raise _refuse(f"{where} is not one argument")
    ((kind, value),) = arg.items()
    if kind in _SCALARS:
        _scalar(kind, value, where)
    elif kind in ("as_ints", "as_floats", "as_bools", "as_tensors", "as_optional_tensors", "as_sym_ints"):
        if not isinstance(value, list) or len(value) > 1024:
            raise _refuse(f"{where} {kind} is not a short list")
        for item in value:
            _list_item(kind, item, where)
    elif kind == "as_none":
        if value is not True and value is not None:
            raise _refuse(f"{where} as_none is not empty")
    elif kind == "as_tensor":
        _ident(_keys(value, {"name"}, where).get("name"), where)
    elif kind == "as_sym_int":
        _sym_ref(value, where)
    elif kind in ("as_string", "as_device"):
        _word_or_device(kind, value, where)
    else:
        raise _refuse(f"{where} is a {kind} argument (not plain data or a tensor)")


def _word_or_device(kind: str, value: Any, where: str) -> None:
    if kind == "as_string":
        if not isinstance(value, str) or not MAX_STRING.fullmatch(value):
            raise _refuse(f"{where} as_string is not a short plain word")
        return
    device = _keys(value, {"type", "index"}, where)
    if device.get("type") != "cpu" or device.get("index") is not None:
        raise _refuse(f"{where} names a device other than the CPU")


def _scalar(kind: str, value: Any, where: str) -> None:
    if kind == "as_float":  # JSON has no infinity: torch writes these three strings
        ok = type(value) in (int, float) or value in ("Infinity", "-Infinity", "NaN")
    elif kind == "as_bool":
        ok = isinstance(value, bool)
    else:
        ok = type(value) is int and abs(value) <= MAX_INT
    if not ok:
        raise _refuse(f"{where} {kind} is not a plain value")


def _list_item(kind: str, item: Any, where: str) -> None:
    if kind in ("as_ints", "as_floats", "as_bools"):
        _scalar(kind[:-1], item, where)
    elif kind == "as_tensors":
        check_argument({"as_tensor": item}, where)
    elif kind == "as_sym_ints":
        _sym_ref(item, where)
    else:
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in ("as_tensor", "as_none"):
            raise _refuse(f"{where} optional tensor is neither a tensor nor none")
        check_argument(item, where)


def _sym_ref(value: Any, where: str) -> None:
    value = _keys(value, {"as_name", "as_int"}, where)
    if len(value) != 1:
        raise _refuse(f"{where} is not one size")
    if "as_int" in value:
        _int(value["as_int"], where)
    else:
        _ident(value["as_name"], where)


def check_node(node: Any, index: int) -> dict[str, Any]:
    """One graph node, checked; returned without its metadata (not parsed, not needed to run)."""
    where = f"node {index}"
    node = _keys(node, {"target", "inputs", "outputs", "metadata", "is_hop_single_tensor_return", "name"}, where)
    target = node.get("target")
    if not isinstance(target, str):
        raise _refuse(f"{where} has no target")
    train = train_mode_reason(target, node.get("inputs"))
    if train:
        raise _refuse(f"train-mode graph: {train}; export model.eval() and call ep.run_decompositions()")
    if target not in ALLOWED_TARGETS and target not in SYM_TARGETS:
        raise _refuse(f"node target {target[:80]!r} is not an allowed ATen op (after run_decompositions())")
    _ident(node.get("name"), where)
    if node.get("is_hop_single_tensor_return") is not None and node["is_hop_single_tensor_return"] is not False:
        raise _refuse(f"{where} is a higher-order op")
    for field in ("inputs", "outputs"):
        if not isinstance(node.get(field), list) or len(node[field]) > 64:
            raise _refuse(f"{where} {field} is not a short list")
    for item in node["inputs"]:
        named = _keys(item, {"name", "arg", "kind"}, where)
        _ident(named.get("name"), where)
        _int(named.get("kind"), where, 0)
        check_argument(named.get("arg"), where)
    for item in node["outputs"]:
        check_argument(item, where)
    return {**node, "metadata": {}}
