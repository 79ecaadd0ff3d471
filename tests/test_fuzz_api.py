"""schemathesis against /openapi.json, in-process (the app under its lifespan, through the dispatcher and the
key check): every operation the document lists, schema-valid and schema-violating requests, with a fixed seed.

No answer may be a 5xx, and every answer must match the document (status, content type, headers, body).
`make test` runs a few examples per operation; `make fuzz` sets FUZZ_EXAMPLES high. The model takes ONE
feature, so that generated rows (lists of numbers) are often valid and the answer path is fuzzed too, not only
the refusals.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from checkpoints import write_checkpoint
from conftest import write_keys
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import positive_data_acceptance

from models import MLPConfig
from service.http.app import create_app
from service.settings import Settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
ADMIN_KEY = "fuzz-admin-key-0123456789"
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}  # an admin key may call every route
ONE_FEATURE = MLPConfig(in_features=1, num_classes=3, hidden=(8,), norm="batch", dropout=0.0)
PATH_VALUES = {"name": "one", "version": "1"}
# Loading and unloading a real model takes seconds (self-test included): the repository routes get a name that
# is not in the repository, so that every generated body is still read and checked, and answered at once.
REPOSITORY_PATH_VALUES = {"name": "absent"}
# Schema-valid but refused: the document cannot say that a row must hold exactly the model's feature count.
EXCLUDED_CHECKS = [positive_data_acceptance]
# How an invalid request may be refused: schemathesis's list, plus 413, which a request that declares more rows
# than the queue holds gets before anything else of it is read (so an invalid one may get it too).
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
# derandomize: the same requests on every run (a seed derived from the test); no example database.
FIXED_SEED = settings(
    max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    repository = tmp_path_factory.mktemp("fuzz-repository")
    write_checkpoint(repository, "one", ONE_FEATURE)
    keys = tmp_path_factory.mktemp("fuzz-keys") / "admin.keys"
    write_keys(keys, ADMIN_KEY + "\n")
    app = create_app(Settings(repository=repository, admin_keys_file=keys, model_control="explicit"))
    config = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}})
    yield schemathesis.openapi.from_asgi("/openapi.json", app, config=config)  # starts the app's lifespan
    shutdown_lifespans()  # stops the batchers and the repository poller


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: defaultdict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[str] = field(default_factory=list)


def fuzz(operation: Any, mode: GenerationMode, tally: Tally) -> None:
    """EXAMPLES generated requests to one operation, each answer checked against the document."""
    values = REPOSITORY_PATH_VALUES if operation.path.startswith("/v2/repository/") else PATH_VALUES
    fixed = {p.name: values[p.name] for p in operation.path_parameters if p.name in values}

    @FIXED_SEED
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed or None))
    def exchange(case: Any) -> None:
        response = case.call(headers=HEADERS)
        tally.requests[operation.label] += 1
        tally.statuses[operation.label][response.status_code] += 1
        try:
            case.validate_response(response, headers=HEADERS, excluded_checks=EXCLUDED_CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:
            tally.failures.append(f"{operation.label} ({mode.value}): {exc}")

    try:
        exchange()
    except Unsatisfiable:  # nothing to violate: no parameters, no body
        assert mode is GenerationMode.NEGATIVE


def test_every_documented_operation_survives_generated_requests(api: Any) -> None:
    tally = Tally()
    for result in api.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(result.ok(), mode, tally)
    requests, statuses, failures = tally.requests, tally.statuses, tally.failures
    print(f"\nschemathesis, {EXAMPLES} examples per operation and mode (positive, negative):")
    for label, count in requests.items():
        print(f"  {label}: {count} requests, statuses {dict(sorted(statuses[label].items()))}")
    server_errors = sum(n for counts in statuses.values() for status, n in counts.items() if status >= 500)
    print(f"  total {sum(requests.values())} requests, {server_errors} server errors")
    assert server_errors == 0
    assert not failures, "\n\n".join(failures[:5])
    assert len(requests) == len(list(api.get_all_operations()))


def test_the_document_lists_every_route_of_the_table(api: Any) -> None:
    table = {(route.method, route.path) for route in api.app.routes}
    documented = {(method.upper(), path) for path, item in api.raw_schema["paths"].items() for method in item}
    assert documented == table


def test_a_body_of_whitespace_is_malformed_not_absent(api: Any) -> None:
    """Found by the fuzz test: the repository routes took " " as no body (200) while the document says JSON."""
    with get_client(api.app) as client:
        blank = client.post("/v2/repository/index", data=b" ", headers=HEADERS)
        absent = client.post("/v2/repository/index", headers=HEADERS)
    assert blank.status_code == 400
    assert blank.json() == {"error": "malformed JSON: Expecting value: line 1 column 2 (char 1)"}
    assert absent.status_code == 200
    assert absent.json() == [{"name": "one", "version": "1", "state": "READY", "reason": ""}]
