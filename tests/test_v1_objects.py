"""KServe V1 instances as objects keyed by the model's feature names (the manifest's), through real HTTP
against the shared tiny server (`tiny`: 16 features f0..f15; `tinycnn`: 64 inputs but only 16 names)."""

from __future__ import annotations

import json

import httpx
from bad_input_helpers import NOT_FINITE, ROW, Probe

NAMES = [f"f{i}" for i in range(16)]
OBJECT = dict(zip(NAMES, ROW, strict=True))
FEATURES_HINT = "the model's features are: f0, f1, f2, f3, f4, f5, f6, f7, ... (16 in all)"


def predict(probe: Probe, instances: list[object], model: str = "tiny") -> httpx.Response:
    return probe.http.post(f"/v1/models/{model}:predict", json={"instances": instances})


def test_object_rows_give_the_same_bits_as_list_rows_in_any_key_order(probe: Probe) -> None:
    as_lists = predict(probe, [ROW, ROW[::-1]])
    reordered = dict(reversed(list(OBJECT.items())))
    as_objects = predict(probe, [reordered, dict(zip(NAMES, ROW[::-1], strict=True))])
    mixed = predict(probe, [OBJECT, ROW[::-1]])
    for response in (as_lists, as_objects, mixed):
        assert response.status_code == 200, response.text
    assert as_objects.json() == as_lists.json()  # parsed floats: the exact float32 bits
    assert mixed.json() == as_lists.json()


def test_missing_feature_is_400_naming_it(probe: Probe) -> None:
    row = {name: value for name, value in OBJECT.items() if name not in {"f3", "f9"}}
    probe.expect_error(
        predict(probe, [OBJECT, row]), 400, f"instances row 1: missing feature 'f3' (and 1 more); {FEATURES_HINT}"
    )


def test_unknown_feature_is_400_naming_it(probe: Probe) -> None:
    probe.expect_error(
        predict(probe, [{**OBJECT, "alcohol": 1.0}]),
        400,
        f"instances row 0: unknown feature 'alcohol'; {FEATURES_HINT}",
    )
    renamed = {("F0" if name == "f0" else name): value for name, value in OBJECT.items()}
    probe.expect_error(predict(probe, [renamed]), 400, f"instances row 0: unknown feature 'F0'; {FEATURES_HINT}")
    long_name = {**OBJECT, "x" * 1000: 1.0}
    message = f"instances row 0: unknown feature '{'x' * 56}...; {FEATURES_HINT}"
    probe.expect_error(predict(probe, [long_name]), 400, message)


def test_non_number_feature_value_is_400_naming_the_feature(probe: Probe) -> None:
    for value, shown in [("1.5", "'1.5'"), (True, "True"), (None, "None"), ([1.0], "[1.0]")]:
        response = predict(probe, [{**OBJECT, "f7": value}])
        probe.expect_error(response, 400, f"instances row 0: feature 'f7': {shown} is not a number")


def test_non_finite_feature_value_is_400(probe: Probe) -> None:
    body = json.dumps({"instances": [OBJECT]}).replace('"f2": -1.5', '"f2": NaN').encode()
    assert b"NaN" in body
    probe.expect_error(probe.v1(body), 400, f"instances row 0: {NOT_FINITE}")


def test_model_without_feature_names_for_every_input_refuses_objects(probe: Probe) -> None:
    message = "this model has no feature names for its inputs, so instances must be lists of numbers, not objects"
    probe.expect_error(predict(probe, [OBJECT], model="tinycnn"), 400, message)
