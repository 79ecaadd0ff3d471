"""Fuzzing the import pre-checks with mutated files: every mutation of a valid ONNX model (one file or with
its sibling data file) and of a .pt2-like archive is refused with ImportRefused or passes and then loads in
onnxruntime (or is refused by it); never another exception, never a hang."""

from __future__ import annotations

import io
import os
import zipfile
from collections import Counter
from datetime import timedelta
from pathlib import Path

import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from import_helpers import linear_graph, with_external_weight

from models.onnx_check import ImportRefused, check_onnx
from models.pt2_check import model_format
from service.engine.executor_onnx import session_for

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6")) * 25
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=timedelta(seconds=20),  # a hang bound, far above the milliseconds one check takes
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ONE_FILE = linear_graph().SerializeToString()
_TWO = linear_graph()
_WEIGHT = next(t for t in _TWO.graph.initializer if t.name == "W").raw_data
TWO_FILE = with_external_weight(_TWO, "model.onnx.data").SerializeToString()


def _pt2_like() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("m/archive_format", b"pt2")
        archive.writestr("m/models/model.json", b"{}")
        archive.writestr("m/data/weights/weight_0", _WEIGHT)
    return buffer.getvalue()


PT2 = _pt2_like()


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


def check_file(directory: Path, data: bytes, sibling: bytes | None = None) -> str:
    """What became of the file: refused by the pre-check, refused by onnxruntime, or loaded."""
    path = directory / "model.onnx"
    path.write_bytes(data)
    if sibling is not None:
        (directory / "model.onnx.data").write_bytes(sibling)
    try:
        if model_format(path) != "onnx":
            return "refused by the pre-check"  # a torch.export archive: tests/test_fuzz_pt2.py fuzzes that check
        checked = check_onnx(path)
    except ImportRefused:
        return "refused by the pre-check"
    try:
        session_for(checked.model_bytes)
    except Exception as exc:  # the loader turns this into a refusal (service/engine/executor_onnx.py)
        failed_in = type(exc).__module__
        return "refused by onnxruntime" if "onnxruntime" in failed_in or isinstance(exc, RuntimeError) else repr(exc)
    return "loaded"


@pytest.mark.parametrize("original", [ONE_FILE, PT2], ids=["onnx", "pt2"])
def test_mutated_files_are_refused_or_load(original: bytes, tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()

    @FUZZ
    @given(mutated(original))
    def run(data: bytes) -> None:
        outcomes[check_file(tmp_path, data)] += 1

    run()
    print(f"outcomes: {dict(outcomes)}")
    assert set(outcomes) <= {"refused by the pre-check", "refused by onnxruntime", "loaded"}, outcomes
    assert outcomes["refused by the pre-check"] > 0


def test_mutated_external_data_models_are_refused_or_load(tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()

    @FUZZ
    @given(mutated(TWO_FILE), st.binary(max_size=64) | st.just(_WEIGHT))
    def run(data: bytes, sibling: bytes) -> None:
        outcomes[check_file(tmp_path, data, sibling)] += 1

    run()
    print(f"outcomes: {dict(outcomes)}")
    assert set(outcomes) <= {"refused by the pre-check", "refused by onnxruntime", "loaded"}, outcomes
    assert outcomes["refused by the pre-check"] > 0


def test_the_unmutated_files_load(tmp_path: Path) -> None:
    assert check_file(tmp_path, ONE_FILE) == "loaded"
    assert check_onnx(tmp_path / "model.onnx").data_file == ""
    assert check_file(tmp_path, TWO_FILE, _WEIGHT) == "loaded"
    assert check_onnx(tmp_path / "model.onnx").data_file == "model.onnx.data"
    assert isinstance(session_for(check_onnx(tmp_path / "model.onnx").model_bytes), ort.InferenceSession)
