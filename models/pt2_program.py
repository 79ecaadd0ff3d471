"""The program-level half of the .pt2 JSON check: `models/model.json`'s top level, graph signature (no mutated
buffers, one float input with a free batch dimension, one (batch, K) output), module call graph (only the
tree specs torch writes for `forward(x) -> tensor`), and the weights/constants payload configs (no pickle)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from models.pt2_graph import (
    DOTTED,
    ELEMENT_BYTES,
    SYMBOL_NAME,
    _ident,
    _int,
    _keys,
    _refuse,
    check_argument,
    check_expression,
    check_node,
    sym_int,
    tensor_meta,
)

SCHEMA_MAJOR = 8  # torch 2.13 writes schema 8.20
MAX_NODES = 100_000
_LEAF: dict[str, Any] = {"type": None, "context": None, "children_spec": []}
IN_SPEC = [1, {"type": "builtins.tuple", "context": "null", "children_spec": [
    {"type": "builtins.tuple", "context": "null", "children_spec": [_LEAF]},
    {"type": "builtins.dict", "context": "[]", "children_spec": []}]}]  # fmt: skip
OUT_SPECS = ([1, _LEAF], [1, {"type": "builtins.tuple", "context": "null", "children_spec": [_LEAF]}])
WEIGHT_FILE = re.compile(r"weight_[0-9]{1,9}")
CONSTANT_FILE = re.compile(r"tensor_constant_?[0-9]{1,9}")


@dataclass(frozen=True)
class Pt2Signature:
    """What the graph says about its one input and one output. input_shape excludes the free batch dim."""

    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    num_classes: int
    opset: int  # the archive's aten opset version


def check_program(program: Any) -> tuple[dict[str, Any], Pt2Signature]:
    """model.json parsed: the rewritten program (metadata dropped) and its signature, or ImportRefused."""
    top = _keys(program, {"graph_module", "opset_version", "range_constraints", "schema_version", "verifiers",
                          "torch_version", "guards_code"}, "program")  # fmt: skip
    missing = sorted({"graph_module", "schema_version", "verifiers", "guards_code", "opset_version"} - set(top))
    if missing:
        raise _refuse(f"the program is missing fields {missing[:3]}")
    if top.get("guards_code") != []:
        raise _refuse("the program carries guards code (Python that .module() would execute)")
    if top.get("verifiers") not in (["ATEN"], []):
        raise _refuse(
            f"verifier dialect {str(top.get('verifiers'))[:40]} is not ATEN: save ep.run_decompositions() instead"
        )
    version = _keys(top.get("schema_version"), {"major", "minor"}, "schema_version")
    if version.get("major") != SCHEMA_MAJOR:
        raise _refuse(f"schema version {str(version)[:40]} is not {SCHEMA_MAJOR}.x (torch 2.13)")
    _int(version.get("minor"), "schema_version.minor", 0)
    opset = _keys(top.get("opset_version"), {"aten"}, "opset_version")
    if not isinstance(top.get("torch_version"), str) or len(top["torch_version"]) > 64:
        raise _refuse("torch_version is not a short string")
    ranges = top.get("range_constraints")
    if not isinstance(ranges, dict) or len(ranges) > 1024:
        raise _refuse("range_constraints is not a short object")
    for name, bounds in ranges.items():
        _ident(name, "range constraint", SYMBOL_NAME)
        for value in _keys(bounds, {"min_val", "max_val"}, "range constraint").values():
            if value is not None:
                _int(value, "range bound")
    module = _keys(top.get("graph_module"), {"graph", "signature", "module_call_graph", "metadata",
                                              "treespec_namedtuple_fields"}, "graph_module")  # fmt: skip
    if module.get("metadata") != {} or module.get("treespec_namedtuple_fields") not in ({}, None):
        raise _refuse("graph_module metadata or namedtuple fields are not empty")
    graph = _check_graph(module.get("graph"))
    signature = _signature(module.get("signature"), graph, _int(opset.get("aten"), "aten opset", 0))
    call_graph = _call_graph(module.get("module_call_graph"))
    rewritten = {**top, "graph_module": {**module, "graph": graph, "module_call_graph": call_graph}}
    return rewritten, signature


def _check_graph(graph: Any) -> dict[str, Any]:
    graph = _keys(graph, {"inputs", "outputs", "nodes", "tensor_values", "sym_int_values", "sym_bool_values",
                          "is_single_tensor_return", "custom_obj_values", "sym_float_values"}, "graph")  # fmt: skip
    for empty in ("sym_bool_values", "custom_obj_values", "sym_float_values"):
        if graph.get(empty) not in ({}, None):
            raise _refuse(f"graph.{empty} is not empty (custom objects or symbolic floats/booleans)")
    if not isinstance(graph.get("is_single_tensor_return"), (bool, type(None))):
        raise _refuse("graph.is_single_tensor_return is not a boolean")
    nodes = graph.get("nodes")
    if not isinstance(nodes, list) or not 0 < len(nodes) <= MAX_NODES:
        raise _refuse("graph.nodes is not a list of 1 to 100000 nodes")
    values, sym_values = graph.get("tensor_values"), graph.get("sym_int_values")
    if not isinstance(values, dict) or not isinstance(sym_values, dict):
        raise _refuse("graph tensor_values or sym_int_values is not an object")
    for name, meta in values.items():
        tensor_meta(meta, f"tensor {_ident(name, 'tensor name')}")
    for name, value in sym_values.items():
        sym_int(value, f"size {_ident(name, 'size name')}")
    for field in ("inputs", "outputs"):
        if not isinstance(graph.get(field), list) or len(graph[field]) > 100_000:
            raise _refuse(f"graph.{field} is not a list")
        for item in graph[field]:
            check_argument(item, f"graph {field[:-1]}")
    return {**graph, "nodes": [check_node(node, index) for index, node in enumerate(nodes)]}


def _signature(signature: Any, graph: dict[str, Any], opset: int) -> Pt2Signature:
    signature = _keys(signature, {"input_specs", "output_specs"}, "signature")
    inputs, outputs = signature.get("input_specs"), signature.get("output_specs")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise _refuse("signature specs are not lists")
    user_inputs = []
    for item in inputs:
        spec = _keys(item, {"parameter", "buffer", "tensor_constant", "user_input"}, "input spec")
        ((kind, body),) = spec.items() if len(spec) == 1 else ((None, None),)
        body = _keys(body, {"arg", "parameter_name", "buffer_name", "persistent", "tensor_constant_name"}, "spec")
        if kind == "user_input":
            tensor = _keys(body.get("arg"), {"as_tensor"}, "user input").get("as_tensor")
            user_inputs.append(_ident(_keys(tensor, {"name"}, "user input").get("name"), "input"))
        else:
            _ident(_keys(body.get("arg"), {"name"}, "lifted input").get("name"), "lifted input")
            _ident(body.get(f"{kind}_name"), f"{kind} name", DOTTED)
            if kind == "buffer" and not isinstance(body.get("persistent"), bool):
                raise _refuse("a buffer's persistent flag is not a boolean")
    if len(user_inputs) != 1:
        raise _refuse(f"the program takes {len(user_inputs)} inputs; one float tensor is served")
    kinds = [next(iter(spec)) if isinstance(spec, dict) and len(spec) == 1 else "?" for spec in outputs]
    if kinds != ["user_output"]:
        raise _refuse(f"the program's outputs are {kinds[:4]}: mutated buffers or inputs, or more than one output")
    arg = _keys(_keys(outputs[0]["user_output"], {"arg"}, "output").get("arg"), {"as_tensor"}, "output")
    output = _ident(_keys(arg.get("as_tensor"), {"name"}, "output").get("name"), "output")
    return _shapes(graph["tensor_values"], user_inputs[0], output, opset)


def _shapes(values: dict[str, Any], input_name: str, output_name: str, opset: int) -> Pt2Signature:
    if input_name not in values or output_name not in values:
        raise _refuse("the input or output tensor has no shape in the graph")
    in_dtype, in_sizes = tensor_meta(values[input_name], "input")
    out_dtype, out_sizes = tensor_meta(values[output_name], "output")
    if in_dtype != 7 or out_dtype != 7:
        raise _refuse("the input and output must be float32")
    if not in_sizes or in_sizes[0] is not None or any(size is None or size < 1 for size in in_sizes[1:]):
        raise _refuse(
            "the input needs a free batch dimension first (dynamic_shapes={0: Dim('batch')}) and fixed others"
        )
    if len(out_sizes) != 2 or out_sizes[0] is not None or out_sizes[1] is None or out_sizes[1] < 1:
        raise _refuse("the output is not (batch, K)")
    shape = tuple(int(size) for size in in_sizes[1:] if size is not None)
    return Pt2Signature(input_name, shape, output_name, int(out_sizes[1]), opset)


def _call_graph(entries: Any) -> list[dict[str, Any]]:
    """Only the root entry is kept, with the exact tree specs of forward(x) -> tensor (pytree JSON)."""
    if not isinstance(entries, list) or not entries or len(entries) > 100_000:
        raise _refuse("module_call_graph is not a list")
    root = _keys(entries[0], {"fqn", "signature"}, "module_call_graph[0]")
    body = _keys(root.get("signature"), {"inputs", "outputs", "in_spec", "out_spec", "forward_arg_names"}, "root call")
    if root.get("fqn") != "" or body.get("inputs") != [] or body.get("outputs") != []:
        raise _refuse("the module call graph's root entry is not forward(x)")
    try:
        in_spec, out_spec = json.loads(body["in_spec"]), json.loads(body["out_spec"])
    except (KeyError, TypeError, ValueError):
        raise _refuse("the call graph's tree specs are not JSON") from None
    if in_spec != IN_SPEC or out_spec not in OUT_SPECS:
        raise _refuse("the call graph's tree specs are not forward(x) -> tensor")
    names = body.get("forward_arg_names")
    if not isinstance(names, list) or len(names) != 1:
        raise _refuse("forward takes other than one argument")
    _ident(names[0], "forward argument")
    return [{"fqn": "", "signature": {**body, "in_spec": json.dumps(in_spec), "out_spec": json.dumps(out_spec)}}]


def check_payload_config(config: Any, kind: str) -> dict[str, tuple[str, int, int]]:
    """A weights or constants config: path_name -> (fqn, dtype, bytes the strided view needs), no pickle."""
    pattern = WEIGHT_FILE if kind == "weights" else CONSTANT_FILE
    entries = _keys(config, {"config"}, f"{kind} config").get("config")
    if not isinstance(entries, dict) or len(entries) > 100_000:
        raise _refuse(f"{kind} config is not an object")
    files: dict[str, tuple[str, int, int]] = {}
    for fqn, item in entries.items():
        _ident(fqn, f"{kind} name", DOTTED)
        entry = _keys(item, {"path_name", "is_param", "use_pickle", "tensor_meta"}, f"{kind} {fqn}")
        if entry.get("use_pickle") is not False:
            raise _refuse(f"{kind} {fqn} is pickled (use_pickle): it would be loaded with weights_only=False")
        path_name = entry.get("path_name")
        if not isinstance(path_name, str) or not pattern.fullmatch(path_name):
            raise _refuse(f"{kind} {fqn} is stored as {str(path_name)[:40]!r} (custom object, opaque or pickled)")
        if not isinstance(entry.get("is_param"), bool):
            raise _refuse(f"{kind} {fqn}.is_param is not a boolean")
        dtype, need_bytes = _storage_bytes(entry.get("tensor_meta"), f"{kind} {fqn}")
        previous = files.get(path_name)
        if previous is not None and previous[1] != dtype:
            raise _refuse(f"{kind} file {path_name} is shared by tensors of different dtypes")
        files[path_name] = (fqn, dtype, max(need_bytes, previous[2] if previous else 0))
    return files


def _storage_bytes(meta: Any, where: str) -> tuple[int, int]:
    """A stored tensor's dtype and the bytes its strided view reads: sizes, strides, offset all plain >= 0."""
    dtype, sizes = tensor_meta(meta, where)
    strides = [sym_int(stride, where) for stride in meta["strides"]]
    offset = sym_int(meta["storage_offset"], where)
    plain = [value for value in (*sizes, *strides, offset) if value is not None and value >= 0]
    if len(plain) != 2 * len(sizes) + 1:
        raise _refuse(f"{where} has a symbolic or negative size, stride or offset")
    shape, steps, start = plain[: len(sizes)], plain[len(sizes) : 2 * len(sizes)], plain[-1]
    elements = 0 if 0 in shape else 1 + start + sum((size - 1) * step for size, step in zip(shape, steps, strict=True))
    return dtype, elements * ELEMENT_BYTES[dtype]


__all__ = ["Pt2Signature", "check_expression", "check_payload_config", "check_program"]
