"""Fuzzing the .pt2 pre-check with mutated archives of a real export: random bytes of the archive, random
bytes of its JSON members (the zip rebuilt so that its checksums hold), and random JSON values put at random
places of model.json and the weights config. Each is refused by the pre-check, refused by torch (the loader's
CheckpointError), or loads and runs a C-row batch; never another exception, never a hang."""

from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pt2_helpers import LinearBatchNorm, exported, write_archive
from test_fuzz_import import mutated

from models.checkpoint import CheckpointError
from models.onnx_check import ImportRefused
from models.pt2_check import check_pt2, model_format
from service.engine.executor_pt2 import load_program

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6")) * 25
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=timedelta(seconds=20),  # a hang bound, far above the tens of milliseconds one check and load take
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
OUTCOMES = {"refused by the pre-check", "refused by torch", "loaded and ran", "loaded, failed at run"}
MODEL, WEIGHTS = "m/models/model.json", "m/data/weights/model_weights_config.json"
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return exported(LinearBatchNorm(), tmp_path_factory.mktemp("fuzz"))


def outcome(path: Path) -> str:
    try:
        if model_format(path) != "pt2":
            return "refused by the pre-check"
        checked = check_pt2(path)
    except ImportRefused:
        return "refused by the pre-check"
    try:
        module = load_program(checked.archive_bytes)
    except CheckpointError:
        return "refused by torch"
    try:
        with torch.inference_mode():
            module(torch.zeros((4, *checked.signature.input_shape)))
    except Exception:  # the self-test's first forward would refuse it (service/guarantee/selftest.py)
        return "loaded, failed at run"
    return "loaded and ran"


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (dict keys and list indexes), the root excluded."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


def _put(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


def _run(tmp_path: Path, strategy: st.SearchStrategy[dict[str, bytes]]) -> Counter[str]:
    outcomes: Counter[str] = Counter()

    @FUZZ
    @given(strategy)
    def run(archive: dict[str, bytes]) -> None:
        outcomes[outcome(write_archive(tmp_path / "model.pt2", archive))] += 1

    run()
    print(f"outcomes: {dict(outcomes)}")
    assert set(outcomes) <= OUTCOMES, outcomes
    assert outcomes["refused by the pre-check"] > 0
    return outcomes


def test_mutated_archive_bytes(members: dict[str, bytes], tmp_path: Path) -> None:
    original = write_archive(tmp_path / "original.pt2", members).read_bytes()
    outcomes: Counter[str] = Counter()

    @FUZZ
    @given(mutated(original))
    def run(data: bytes) -> None:
        path = tmp_path / "model.pt2"
        path.write_bytes(data)
        outcomes[outcome(path)] += 1

    run()
    print(f"outcomes: {dict(outcomes)}")
    assert set(outcomes) <= OUTCOMES, outcomes


@pytest.mark.parametrize("member", [MODEL, WEIGHTS])
def test_mutated_json_bytes(member: str, members: dict[str, bytes], tmp_path: Path) -> None:
    _run(tmp_path, mutated(members[member]).map(lambda data: {**members, member: data}))


@pytest.mark.parametrize("member", [MODEL, WEIGHTS])
def test_random_json_values_at_random_places(member: str, members: dict[str, bytes], tmp_path: Path) -> None:
    document = json.loads(members[member])
    places = _paths(document)

    @st.composite
    def edited(draw: st.DrawFn) -> dict[str, bytes]:
        copy = json.loads(members[member])
        for _ in range(draw(st.integers(1, 3))):
            try:  # an earlier edit may have replaced a parent of this place
                _put(copy, draw(st.sampled_from(places)), draw(JSON_VALUES))
            except (TypeError, KeyError, IndexError):
                continue
        return {**members, member: json.dumps(copy).encode()}

    _run(tmp_path, edited())


def test_the_unmutated_archive_loads_and_runs(members: dict[str, bytes], tmp_path: Path) -> None:
    assert outcome(write_archive(tmp_path / "model.pt2", members)) == "loaded and ran"
    with zipfile.ZipFile(tmp_path / "model.pt2") as archive:
        assert MODEL in archive.namelist()
