"""torch.export archives for the .pt2 tests: real ones written by torch.export.save (a free batch dimension,
decomposed), and crafted ones: a real archive with one member or JSON field replaced by a payload that would
write a marker file if torch.export.load or .module() ran it."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from export_common import export_pt2
from import_helpers import MarkerPayload, payload_pickle
from torch import nn

Members = dict[str, bytes]


class LinearBatchNorm(nn.Module):
    """(N, 4) -> (N, 3): Linear, BatchNorm1d, Dropout (the last two are train-mode ops unless in eval)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.norm, self.drop = nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Dropout(0.5)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.linear(rows)))


class Counting(nn.Module):
    """Mutates a buffer on every forward (a mutated buffer in the exported graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.calls: torch.Tensor
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return self.linear(rows)


def members_of(path: Path) -> Members:
    """An archive's members renamed under the folder 'm/'."""
    with zipfile.ZipFile(path) as archive:
        return {"m/" + name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}


def write_archive(path: Path, members: Members) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def exported(model: nn.Module, directory: Path, train: bool = False, decompose: bool = True) -> Members:
    """The members of a real archive of `model` at (N, 4) rows, in eval mode unless `train`."""
    path = directory / "exported.pt2"
    if train or not decompose:
        program = torch.export.export(
            model.train(train), (torch.randn(4, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
        torch.export.save(program.run_decompositions() if decompose else program, str(path))
    else:
        export_pt2(model, torch.randn(4, 4), path)
    return members_of(path)


def _edit_json(members: Members, name: str, edit: Callable[[Any], None]) -> Members:
    data = json.loads(members[name])
    edit(data)
    return {**members, name: json.dumps(data).encode()}


def _python(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')"


def _input_size(program: Any, marker: Path) -> None:
    values = program["graph_module"]["graph"]["tensor_values"]
    sized = next(v for v in values.values() if v["sizes"] and "as_expr" in v["sizes"][0])
    sized["sizes"][0]["as_expr"]["expr_str"] = _python(marker)


def _first_target(target: str) -> Callable[[Any], None]:
    def edit(program: Any) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = target

    return edit


def crafted(marker: Path, directory: Path) -> dict[str, Members]:
    """One crafted archive per closed path (name -> members)."""
    real = exported(LinearBatchNorm(), directory)
    pickled = io.BytesIO()
    torch.save(MarkerPayload(marker), pickled)
    model_json, weights = "m/models/model.json", "m/data/weights/model_weights_config.json"

    def use_pickle(config: Any) -> None:
        config["config"]["linear.weight"]["use_pickle"] = True

    def opaque_object(config: Any) -> None:  # torch.export.load: pickle.loads of the member
        config["config"]["evil"] = {
            "path_name": "opaque_obj_0",
            "is_param": False,
            "use_pickle": True,
            "tensor_meta": None,
        }

    return {
        "pickled weight (use_pickle)": {
            **_edit_json(real, weights, use_pickle),
            "m/data/weights/weight_0": pickled.getvalue(),
        },
        "pickle member (.pkl)": {**real, "m/data/weights/weights.pkl": payload_pickle(marker)},
        "opaque-object constant": _edit_json(real, "m/data/constants/model_constants_config.json", opaque_object)
        | {"m/data/constants/opaque_obj_0": payload_pickle(marker)},
        "shape expression": _edit_json(real, model_json, lambda p: _input_size(p, marker)),
        "guards code": _edit_json(real, model_json, lambda p: p.__setitem__("guards_code", [_python(marker)])),
        "non-ATen target (builtins.exec)": _edit_json(real, model_json, _first_target("builtins.exec")),
        "non-ATen target (custom op)": _edit_json(real, model_json, _first_target("torch.ops.evil.run.default")),
        "AOTInductor package": {
            **real,
            "m/data/aotinductor/model/model.wrapper.so": b"\x7fELF" + payload_pickle(marker),
        },
        "legacy pickled member": {**real, "m/version": b"0", "m/serialized_state_dict.pt": pickled.getvalue()},
        "second model": {**real, "m/models/other.json": real[model_json]},
        "extra file": {**real, "m/extra/module_info.json": b"{}"},
        "train-mode dropout": exported(nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)), directory, train=True),
        "train-mode BatchNorm": exported(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), directory, train=True),
        "mutated buffer": exported(Counting(), directory),
    }
