"""Model files for the import tests: tiny ONNX graphs built with onnx.helper (fast, exact) or exported from the
examples, and crafted hostile files whose payload would write a marker file if anything ran it."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import torch
from export_common import export_onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn


class MarkerPayload:
    """Unpickling this runs `open(marker, 'w').write('pwned')`: the payload of every crafted pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def payload_pickle(marker: Path) -> bytes:
    return pickle.dumps(MarkerPayload(marker), protocol=2)


def linear_graph(
    features: int = 4,
    classes: int = 3,
    *,
    batch: str | int = "batch",
    domain: str = "",
    extra_nodes: tuple[onnx.NodeProto, ...] = (),
    opset: int = 18,
    extra_initializers: tuple[onnx.TensorProto, ...] = (),
    last: str = "logits",
) -> onnx.ModelProto:
    """input (batch, features) float -> MatMul W -> Add b -> [extra nodes] -> `last` (batch, classes)."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((features, classes)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["mm"], domain=domain),
        helper.make_node("Add", ["mm", "b"], ["logits" if not extra_nodes else "pre"]),
        *extra_nodes,
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["batch", classes])],
        [weight, bias, *extra_initializers],
    )
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=imports, ir_version=9)


def dropout_graph(training: bool) -> onnx.ModelProto:
    """linear_graph followed by Dropout whose training_mode input is the constant `training`."""
    flag = numpy_helper.from_array(np.array(training), "training_mode")
    ratio = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "ratio")
    dropout = helper.make_node("Dropout", ["pre", "ratio", "training_mode"], ["logits"])
    return linear_graph(extra_nodes=(dropout,), extra_initializers=(flag, ratio))


def write_model(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def with_external_weight(model: onnx.ModelProto, location: str, offset: int = 0) -> onnx.ModelProto:
    """The same graph with initializer W marked as stored in `location` at `offset`."""
    weight = next(t for t in model.graph.initializer if t.name == "W")
    size = len(weight.raw_data) if weight.raw_data else 4 * len(weight.float_data)
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(size))):
        weight.external_data.add(key=key, value=value)
    return model


class RowMixing(nn.Module):
    """Subtracts the batch mean: every answer depends on the other rows. (N, 4) -> (N, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.linear(rows - rows.mean(dim=0, keepdim=True))


def export_torch(model: nn.Module, example: torch.Tensor, path: Path, external_data: bool = False) -> Path:
    return export_onnx(model, example, path, external_data)


def zip_archive(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


PT2_PROGRAM_CASES = (
    "pt2 pickled weight",
    "pt2 sample-input fallback",
    "pt2 shape expression",
    "pt2 guards code",
    "pt2 non-ATen target",
)


def exported_archive() -> dict[str, bytes]:
    """The members of a real torch.export.save archive of nn.Linear(4, 3) (folder 'm/')."""
    program = torch.export.export(nn.Sequential(nn.Linear(4, 3)), (torch.randn(2, 4),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        names = archive.namelist()
        prefix = names[0].split("/")[0]
        return {"m/" + name.split("/", 1)[1]: archive.read(name) for name in names if name.startswith(prefix)}


def live_pt2_members(marker: Path) -> dict[str, dict[str, bytes]]:
    """Real archives with the payload where torch.export.load unpickles it (both write the marker when that
    loads them: tests/test_import_refusals.py checks it): a weight flagged use_pickle, and sample inputs that
    fail weights_only loading and fall back to weights_only=False."""
    real = exported_archive()
    payload = io.BytesIO()
    torch.save(MarkerPayload(marker), payload)
    config = json.loads(real["m/data/weights/model_weights_config.json"])
    config["config"]["0.weight"]["use_pickle"] = True
    return {
        "pt2 pickled weight": {
            **real,
            "m/data/weights/model_weights_config.json": json.dumps(config).encode(),
            "m/data/weights/weight_0": payload.getvalue(),
        },
        "pt2 sample-input fallback": {**real, "m/data/sample_inputs/model.pt": payload.getvalue()},
    }


def pt2_members(marker: Path) -> dict[str, dict[str, bytes]]:
    """Crafted torch.export archives, one per code path that torch.export.load would run the payload through
    (the first two real archives, see live_pt2_members; the others carry the payload in the JSON fields)."""
    common = {"m/archive_format": b"pt2", "m/archive_version": b"0", "m/byteorder": b"little"}
    shape = b'{"graph_module": {"graph": {"sym_int_values": {"s0": {"as_expr": {"expr_str": "__import__(\'os\')"}}}}}}'
    guards = b'{"graph_module": {}, "guards_code": ["open(\'pwned\', \'w\')"]}'
    target = b'{"graph_module": {"graph": {"nodes": [{"target": "builtins.exec", "inputs": []}]}}}'
    payload = payload_pickle(marker)
    return {
        **live_pt2_members(marker),
        "pt2 shape expression": {**common, "m/models/model.json": shape},
        "pt2 guards code": {**common, "m/models/model.json": guards},
        "pt2 non-ATen target": {**common, "m/models/model.json": target},
        "AOTInductor package": {
            **common,
            "m/data/aotinductor/model/model.wrapper.so": b"\x7fELF" + payload,
            "m/data/aotinductor/model/model.wrapper.cpp": b"",
        },
    }


def torchscript_bytes(marker: Path) -> bytes:
    """A real TorchScript archive whose data.pkl is replaced by the payload."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(nn.Linear(4, 3)), buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in source.namelist():
            archive.writestr(name, payload_pickle(marker) if name.endswith("data.pkl") else source.read(name))
    return out.getvalue()
