"""The ONNX pre-check: an untrusted `model.onnx` (and at most its one sibling external-data file) becomes either
the model's bytes with every weight inline plus its signature, or an `ImportRefused` naming the reason.

ONNX is protobuf: parsing runs no code. What can still hurt is in the data: external-data locations that
point outside the model directory (the known ONNX advisories), sizes that allocate without bound, ops in
other domains (custom kernels), subgraphs, and training-mode nodes. Everything is checked here, from the
bytes, before onnxruntime sees the model; onnxruntime then gets the bytes (never a path), so it opens no file.

Inference mode is proven from the graph (never from the optimizer, which removes training-mode Dropout only at
some levels): no Dropout whose training_mode input is other than absent or a constant false, no
BatchNormalization with training_mode=1, no random ops. Cross-row math passes this check; the start-up
self-test catches it. Torch-free: the server and `python -m models.package` use it before torch runs.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx import AttributeProto, TensorProto

from models.files import open_regular

# protobuf caps one message at 2 GiB; the inlined model must fit in one.
MAX_MODEL_BYTES = 2**31 - 1
MAX_EXTERNAL_BYTES = 2**31 - 1 - 2**24  # inlined weights plus at most 16 MiB of graph under the cap
MAX_NODES = 100_000
MAX_CLASSES = 100_000
MAX_ROW_ELEMENTS = 2**24  # one input row
OPSET_RANGE = (13, 23)  # default-domain opsets accepted (torch 2.13's exporter writes 18)
DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
REEXPORT = (
    "re-export as one file: torch.onnx.export(model, (example,), 'model.onnx', dynamo=True, "
    "external_data=False, dynamic_shapes=({0: torch.export.Dim('batch')},))"
)
# Deterministic inference ops in the default domain. Not here: random ops, control flow (subgraphs), ops
# that only exist for training, sequence/optional types, and anything stateful.
# fmt: off
ALLOWED_OPS = frozenset((
    "Abs", "Acos", "Add", "And", "ArgMax", "ArgMin", "Asin", "Atan", "AveragePool", "BatchNormalization",
    "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf",
    "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GroupNormalization", "HardSigmoid",
    "HardSwish", "Identity", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu",
    "Less", "LessOrEqual", "Log", "LogSoftmax", "LpNormalization", "MatMul", "Max", "MaxPool", "Mean", "Min",
    "Mish", "Mod", "Mul", "Neg", "Not", "Or", "Pad", "Pow", "PRelu", "Range", "Reciprocal", "ReduceL1",
    "ReduceL2", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "Round", "Selu", "Shape", "Sigmoid", "Sign", "Sin", "Sinh",
    "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub",
    "Sum", "Tan", "Tanh", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
))
# fmt: on
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial"}
)
# Subgraphs (control flow) and sparse tensors (whose values could name external data) are refused.
REFUSED_ATTRIBUTES = {
    AttributeProto.GRAPH: "subgraph (control flow)",
    AttributeProto.GRAPHS: "subgraph (control flow)",
    AttributeProto.SPARSE_TENSOR: "sparse tensor",
    AttributeProto.SPARSE_TENSORS: "sparse tensor",
}
_ELEMENT_BYTES: dict[int, int] = {
    TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2,
    TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.INT16: 2, TensorProto.UINT16: 2, TensorProto.INT32: 4,
    TensorProto.UINT32: 4, TensorProto.INT64: 8, TensorProto.UINT64: 8, TensorProto.BOOL: 1,
}  # fmt: skip


class ImportRefused(Exception):
    """A model file that must not be served or packaged; the message is the one-line reason."""


@dataclass(frozen=True)
class OnnxSignature:
    """What the graph says about its one input and one output. input_shape excludes the free batch dim."""

    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    num_classes: int
    opset: int


@dataclass(frozen=True)
class CheckedOnnx:
    """A model that passed: its bytes with every weight inline (what onnxruntime gets) and its signature."""

    model_bytes: bytes
    signature: OnnxSignature
    data_file: str  # the sibling external-data file's name, "" when the model is one file


def check_onnx(path: Path, max_model_bytes: int = MAX_MODEL_BYTES) -> CheckedOnnx:
    """The pre-check of `path` (see the module docstring); raises ImportRefused with the reason."""
    model = parse_model(_read_bounded(path, max_model_bytes, "model file"))
    _check_opsets(model)
    _check_graph(model.graph)
    data_file = _inline_external_data(model, path.parent)
    if _external_left(model):  # onnxruntime would resolve such a location against its working directory
        raise ImportRefused("a tensor outside the graph's initializers and constants names external data")
    _check_names(model.graph)
    try:  # onnx's own structural checks (defined inputs, attribute types); no shape inference, no files opened
        onnx.checker.check_model(model, full_check=False)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise ImportRefused(f"invalid ONNX graph: {_first_line(exc)}") from None
    signature = _signature(model)
    return CheckedOnnx(model.SerializeToString(), signature, data_file)


def parse_model(data: bytes) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ImportRefused(f"not a valid ONNX model (protobuf parse failed: {exc})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ImportRefused("not a valid ONNX model: no graph")
    if not _strings_are_text(model):
        raise ImportRefused("not a valid ONNX model: a string field is not valid UTF-8")
    return model


def _strings_are_text(message: Message) -> bool:
    """Every string field, at any depth, a str that encodes as UTF-8: protobuf hands invalid UTF-8 in ONNX's
    proto2 string fields over as bytes, which every later check (and onnxruntime's messages) would trip on.
    Depth is bounded by protobuf's parse recursion limit (100)."""
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_STRING and not all(isinstance(v, str) and _utf8(v) for v in values):
            return False
        if field.type == FieldDescriptor.TYPE_MESSAGE and not all(_strings_are_text(v) for v in values):
            return False
    return True


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The whole file, after proving it is a regular file (not a link, device or fifo) of at most `limit` bytes."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise ImportRefused(f"cannot read {what} {path.name}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ImportRefused(f"{what} {path.name} is not a regular file (links are refused)")
    if info.st_size > limit:
        raise ImportRefused(f"{what} {path.name} has {info.st_size} bytes, over the limit of {limit}")
    with open_regular(path) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ImportRefused(f"{what} {path.name} grew past the limit of {limit} bytes while read")
    return data


def _check_opsets(model: onnx.ModelProto) -> None:
    if model.training_info:
        raise ImportRefused("the model carries training_info (training algorithms): export the inference graph only")
    if model.functions:
        raise ImportRefused(f"model-local functions are refused ({model.functions[0].name!r}): only default-domain ops")
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    custom = sorted(domain for domain in opsets if domain not in DEFAULT_DOMAINS)
    if custom:
        raise ImportRefused(f"custom op domain {custom[0]!r}: only the default ONNX domain is served")
    version = opsets.get("", opsets.get("ai.onnx"))
    low, high = OPSET_RANGE
    if version is None or not low <= version <= high:
        raise ImportRefused(f"default-domain opset {version} is outside the served range {low}..{high}")


def _check_graph(graph: onnx.GraphProto) -> None:
    if len(graph.node) > MAX_NODES:
        raise ImportRefused(f"graph has {len(graph.node)} nodes, over the limit of {MAX_NODES}")
    if graph.sparse_initializer:
        raise ImportRefused("sparse initializers are refused")
    constants = _constant_values(graph)
    for node in graph.node:
        _check_node(node, constants)


def _check_node(node: onnx.NodeProto, constants: dict[str, bool | None]) -> None:
    where = f"node {node.name or node.op_type!r}"
    if node.domain not in DEFAULT_DOMAINS:
        raise ImportRefused(f"{where}: custom op domain {node.domain!r}: only the default ONNX domain is served")
    if node.op_type in RANDOM_OPS:
        raise ImportRefused(f"{where}: random op {node.op_type} (a prediction would not be a function of its row)")
    if node.op_type not in ALLOWED_OPS:
        raise ImportRefused(f"{where}: op {node.op_type} is not on the allowlist of deterministic inference ops")
    for attribute in node.attribute:
        if attribute.type in REFUSED_ATTRIBUTES:
            kind = REFUSED_ATTRIBUTES[attribute.type]
            raise ImportRefused(f"{where}: {kind} attribute {attribute.name!r} is refused")
    training_input = node.input[2] if node.op_type == "Dropout" and len(node.input) > 2 else ""
    if training_input and constants.get(training_input) is not False:
        raise ImportRefused(
            f"{where}: Dropout in training mode (training_mode is not a constant false): "
            "export the model after model.eval()"
        )
    if node.op_type == "BatchNormalization":
        training = next((a.i for a in node.attribute if a.name == "training_mode"), 0)
        if training != 0 or len(node.output) > 1:
            raise ImportRefused(
                f"{where}: BatchNormalization in training mode (batch statistics): export after model.eval()"
            )


def _check_names(graph: onnx.GraphProto) -> None:
    """Every name printable (UTF-8 already proven at parse): names reach onnxruntime's messages and metadata."""
    names = [graph.name, *(v.name for v in (*graph.input, *graph.output)), *(t.name for t in graph.initializer)]
    for node in graph.node:
        names.extend((node.name, node.op_type, *node.input, *node.output, *(a.name for a in node.attribute)))
    for name in names:
        if len(name) > 4096 or not name.isprintable():
            raise ImportRefused(f"a name in the graph is not printable or over 4096 characters: {name[:64]!r}")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeError:
        return False
    return True


def _external_left(message: Message) -> bool:
    """Whether any TensorProto anywhere in the message still says its data is external (after inlining)."""
    if isinstance(message, onnx.TensorProto) and message.data_location == TensorProto.EXTERNAL:
        return True
    for field, value in message.ListFields():
        items = value if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_MESSAGE and any(_external_left(item) for item in items):
            return True
    return False


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _constant_values(graph: onnx.GraphProto) -> dict[str, bool | None]:
    """Scalar booleans the graph holds as initializers or Constant nodes (Dropout's training_mode): name ->
    value, None when the tensor is not one inline scalar boolean."""
    values: dict[str, bool | None] = {tensor.name: _scalar_bool(tensor) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            tensor = next((a.t for a in node.attribute if a.name == "value" and a.type == AttributeProto.TENSOR), None)
            values[node.output[0]] = None if tensor is None else _scalar_bool(tensor)
    return values


def _scalar_bool(tensor: onnx.TensorProto) -> bool | None:
    if tensor.data_type != TensorProto.BOOL or list(tensor.dims) not in ([], [1]):
        return None
    if tensor.data_location == TensorProto.EXTERNAL:
        return None
    if len(tensor.raw_data) == 1:
        return tensor.raw_data != b"\x00"
    if len(tensor.int32_data) == 1:
        return tensor.int32_data[0] != 0
    return None


def _all_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    tensors = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                tensors.append(attribute.t)
            tensors.extend(attribute.tensors)
    return tensors


def _inline_external_data(model: onnx.ModelProto, directory: Path) -> str:
    """Every external tensor's bytes read from the one sibling data file at its checked offset and length,
    then stored inline. Returns the data file's name ("" when no tensor is external)."""
    external = [t for t in _all_tensors(model.graph) if t.data_location == TensorProto.EXTERNAL]
    if not external:
        return ""
    entries = [_external_entry(tensor) for tensor in external]
    names = {location for location, _, _ in entries}
    if len(names) != 1:
        raise ImportRefused(f"external data in {len(names)} files {sorted(names)}: only one sibling file; {REEXPORT}")
    (name,) = names
    total = sum(length for _, _, length in entries)
    if total > MAX_EXTERNAL_BYTES:
        raise ImportRefused(f"external data of {total} bytes is over the limit of {MAX_EXTERNAL_BYTES}; {REEXPORT}")
    data = _read_bounded(directory / name, MAX_EXTERNAL_BYTES, "external-data file")
    for tensor, (_, offset, length) in zip(external, entries, strict=True):
        if offset + length > len(data):
            raise ImportRefused(
                f"tensor {tensor.name!r}: external bytes {offset}..{offset + length} lie outside {name} "
                f"({len(data)} bytes)"
            )
        tensor.raw_data = data[offset : offset + length]
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT
    return name


def _external_entry(tensor: onnx.TensorProto) -> tuple[str, int, int]:
    """(location, offset, length) of one external tensor, each checked; length must be the tensor's size."""
    fields: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key in fields or entry.key not in {"location", "offset", "length", "checksum"}:
            raise ImportRefused(f"tensor {tensor.name!r}: unexpected external-data key {entry.key!r}")
        fields[entry.key] = entry.value
    location = fields.get("location", "")
    if not _plain_file_name(location):
        raise ImportRefused(
            f"tensor {tensor.name!r}: external-data location {location!r} is not a plain file name beside the "
            f"model (absolute paths, '..' and directories are refused); {REEXPORT}"
        )
    offset, length = _non_negative(fields.get("offset", "0")), _non_negative(fields.get("length", ""))
    expected = _tensor_bytes(tensor)
    if offset is None or length is None or length != expected:
        raise ImportRefused(
            f"tensor {tensor.name!r}: external-data offset {fields.get('offset')!r} / length "
            f"{fields.get('length')!r} invalid (expected a length of {expected} bytes)"
        )
    return location, offset, length


def _plain_file_name(name: str) -> bool:
    return (
        bool(name)
        and len(name) <= 255
        and name not in {".", ".."}
        and not any(char in name for char in "/\\\x00:")
        and name.isprintable()
    )


def _non_negative(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def _tensor_bytes(tensor: onnx.TensorProto) -> int | None:
    size = _ELEMENT_BYTES.get(tensor.data_type)
    if size is None or any(dim < 0 for dim in tensor.dims):
        return None
    for dim in tensor.dims:
        size *= dim
        if size > MAX_EXTERNAL_BYTES:
            return None
    return size


def _signature(model: onnx.ModelProto) -> OnnxSignature:
    graph = model.graph
    initialized = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initialized]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ImportRefused(
            f"the graph has {len(inputs)} inputs and {len(graph.output)} outputs: exactly one of each is served"
        )
    input_shape = _batched_shape(inputs[0], "input")
    output_shape = _batched_shape(graph.output[0], "output")
    if len(output_shape) != 1 or not 2 <= output_shape[0] <= MAX_CLASSES:
        raise ImportRefused(
            f"output {graph.output[0].name!r} has shape [batch, *{list(output_shape)}]: "
            f"expected [batch, K] with 2 <= K <= {MAX_CLASSES}"
        )
    elements = 1
    for dim in input_shape:
        elements *= dim
    if elements > MAX_ROW_ELEMENTS:
        raise ImportRefused(f"one input row has {elements} elements, over the limit of {MAX_ROW_ELEMENTS}")
    opset = next(entry.version for entry in model.opset_import if entry.domain in DEFAULT_DOMAINS)
    return OnnxSignature(inputs[0].name, input_shape, graph.output[0].name, output_shape[0], opset)


def _batched_shape(value: onnx.ValueInfoProto, role: str) -> tuple[int, ...]:
    """The shape after the batch dimension, which must be free (symbolic); every other dimension fixed."""
    tensor_type = value.type.tensor_type if value.type.HasField("tensor_type") else None
    if tensor_type is None or tensor_type.elem_type != TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(tensor_type.elem_type) if tensor_type else value.type.WhichOneof("value")
        raise ImportRefused(f"{role} {value.name!r} is {kind}, not a float32 tensor")
    if not tensor_type.HasField("shape") or not tensor_type.shape.dim:
        raise ImportRefused(f"{role} {value.name!r} has no shape in the graph")
    batch, *rest = tensor_type.shape.dim
    if batch.HasField("dim_value"):
        raise ImportRefused(
            f"{role} {value.name!r} has a fixed batch dimension of {batch.dim_value}: re-export with a dynamic batch "
            "(dynamic_shapes=({0: torch.export.Dim('batch')},))"
        )
    if any(not dim.HasField("dim_value") or dim.dim_value < 1 for dim in rest):
        raise ImportRefused(f"{role} {value.name!r}: every dimension after the batch must be fixed and positive")
    return tuple(dim.dim_value for dim in rest)
