"""Dispatcher.match remembers its answers per (method, path): the same answers as walking the table, fresh
objects for every caller, and never more than MATCHES_KEPT remembered."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.http.app import create_app
from service.http.dispatch import MATCHED_PATH_CHARS, MATCHES_KEPT, Dispatcher
from service.settings import Settings


@pytest.fixture(scope="module")
def dispatcher(tmp_path_factory: pytest.TempPathFactory) -> Dispatcher:
    repository = tmp_path_factory.mktemp("empty-repository")
    return create_app(Settings(repository=Path(repository))).dispatcher


CASES = [
    ("POST", "/v1/models/tiny:predict"),
    ("GET", "/v1/models/tiny:predict"),  # the predict template owns the path: 405, not model status
    ("HEAD", "/v2/health/ready"),
    ("GET", "/v2/models/tiny/versions/3"),
    ("POST", "/nowhere"),
    ("GET", "/v1/models/tiny"),
]


@pytest.mark.parametrize(("method", "path"), CASES)
def test_a_remembered_match_is_the_walk_of_the_table(dispatcher: Dispatcher, method: str, path: str) -> None:
    walked = dispatcher._walk(method, path)
    first = dispatcher.match(method, path)
    second = dispatcher.match(method, path)
    assert first == walked
    assert second == walked
    assert first[1] is not second[1]
    assert first[2] is not second[2]


def test_a_caller_changing_its_answer_does_not_change_the_next(dispatcher: Dispatcher) -> None:
    route, params, allowed = dispatcher.match("POST", "/v1/models/tiny:predict")
    assert route is not None
    assert params == {"name": "tiny"}
    assert allowed == []
    params["name"] = "other"
    allowed.append("GET")
    assert dispatcher.match("POST", "/v1/models/tiny:predict")[1:] == ({"name": "tiny"}, [])
    assert dispatcher.match("GET", "/v1/models/tiny:predict")[2] == ["POST"]


def test_remembered_matches_are_bounded(dispatcher: Dispatcher) -> None:
    for index in range(3 * MATCHES_KEPT):
        route, params, _ = dispatcher.match("POST", f"/v1/models/m{index}:predict")
        assert route is not None
        assert params == {"name": f"m{index}"}
        assert len(dispatcher._matches) <= MATCHES_KEPT
    assert dispatcher.match("POST", "/v1/models/m7:predict")[1] == {"name": "m7"}


def test_a_long_path_is_matched_and_not_remembered(dispatcher: Dispatcher) -> None:
    dispatcher._matches.clear()
    name = "m" * MATCHED_PATH_CHARS
    route, params, _ = dispatcher.match("POST", f"/v1/models/{name}:predict")
    assert route is not None
    assert params == {"name": name}
    assert dispatcher._matches == {}
