"""The manifest's `architecture` for a model brought as a file (`python -m models.package`): which file holds
the graph, what its signature is, and the sha256 of its external-data file. Torch-free, like models.config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

IMPORTED_FORMATS = ("onnx", "pt2")  # ONNX graphs; torch.export programs (models/pt2_check.py)


@dataclass(frozen=True)
class ImportedConfig:
    """A graph file in the version directory; the manifest's weights_sha256 is the sha256 of `file`."""

    file: str  # "model.onnx" or "model.pt2"
    input_name: str
    input_shape: tuple[int, ...]  # one row, without the batch dimension
    output_name: str
    num_classes: int
    opset: int  # ONNX: the default-domain opset; pt2: the archive's aten opset version
    data_file: str = ""  # the sibling external-data file named by the graph, "" when the model is one file
    data_sha256: str = ""
    arch: Literal["onnx", "pt2"] = "onnx"


def imported_from_dict(data: dict[str, Any]) -> ImportedConfig:
    """Rebuild an ImportedConfig from its JSON form; raises ValueError naming the problem."""
    known = {field.name for field in dataclasses.fields(ImportedConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown imported-model fields: {unknown}")
    if data.get("arch") not in IMPORTED_FORMATS:
        raise ValueError(f"imported format {data.get('arch')!r} is not one of {IMPORTED_FORMATS}")
    try:
        return ImportedConfig(
            file=str(data["file"]),
            input_name=str(data["input_name"]),
            input_shape=tuple(int(n) for n in data["input_shape"]),
            output_name=str(data["output_name"]),
            num_classes=int(data["num_classes"]),
            opset=int(data["opset"]),
            data_file=str(data.get("data_file", "")),
            data_sha256=str(data.get("data_sha256", "")),
            arch=data["arch"],
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"invalid imported-model config: {exc!r}") from exc
