"""The one probe (service/guarantee/probe.py): its batch-size rule and comparison, and the HTTP check
(deploy/invariance_check.py, the script the docker deployment test runs) against the shared test server."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, RunningServer, pair_of

from service.guarantee.probe import (
    CO_ROW_KINDS,
    FINITE_CO_ROW_KINDS,
    Float32Array,
    answers_digest,
    group_by_digest,
    probe_batch_sizes,
    probe_cases,
    run_probe,
)
from service.guarantee.probe_http import ProbeClient, check_invariance, check_v2_matches_v1, replica_digest

WEIGHTS = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)


def per_row(rows: Float32Array) -> list[bytes]:
    """Each row's answer depends on that row only."""
    return [(row @ WEIGHTS).tobytes() for row in np.nan_to_num(rows.reshape(rows.shape[0], -1))]


def batch_mean_shift(rows: Float32Array) -> list[bytes]:
    """A batch-dependent answer: each row minus the batch mean."""
    return [(row - rows.mean(axis=0)).tobytes() for row in rows]


def test_batch_sizes_surround_c_and_cases_cover_every_position() -> None:
    assert probe_batch_sizes(32) == (1, 2, 3, 31, 32, 33, 65)
    assert probe_batch_sizes(4) == (1, 2, 3, 4, 5, 9)
    assert probe_batch_sizes(32, 8) == (1, 2, 3, 7, 8, 9, 17, 31, 32, 33, 65)  # a shape pair: both edges
    cases = probe_cases(4, ("zero",))
    assert [(c.size, c.position) for c in cases][:4] == [(1, 0), (2, 0), (2, 1), (3, 0)]
    assert len(cases) == 1 + 2 + 3 + 4 + 5 + 9
    with pytest.raises(ValueError, match="unknown co-row kinds"):
        probe_cases(4, ("ones",))


def test_probe_passes_a_per_row_answer_and_fails_a_batch_dependent_one() -> None:
    report = run_probe(per_row, (6,), chunk_rows=4)
    assert report.passed
    assert report.cases == len(CO_ROW_KINDS) * (1 + 2 + 3 + 4 + 5 + 9)
    failed = run_probe(batch_mean_shift, (6,), chunk_rows=4, kinds=("random",))
    assert not failed.passed
    assert failed.failures == 2 + 3 + 4 + 5 + 9  # every case but the lone one
    assert failed.first_failure == "random co-rows, batch 2, position 0"


def test_digests_group_sources_by_their_bits() -> None:
    same = answers_digest([b"a", b"bc"])
    assert same == answers_digest([b"a", b"bc"])
    assert same != answers_digest([b"ab", b"c"])  # lengths are part of the digest
    groups = group_by_digest({"r1": same, "r2": same, "r3": "x"})
    assert groups == {same: ["r1", "r2"], "x": ["r3"]}


@pytest.mark.parametrize("name", ["tiny", "tinycnn"])
def test_http_probe_takes_c_from_the_server_and_passes(server: RunningServer, name: str) -> None:
    client = ProbeClient(server.url)
    model = client.model(name)
    assert model.chunk_rows == 32
    report = check_invariance(client, model, None)
    assert report.passed, report.summary()
    # Both shapes' batch sizes where the default pair (C_small = 8) was proven at load on this host, else one's.
    served = (32, 8) if pair_of(server, name, model.small_chunk_rows) else (32,)
    assert report.cases == len(FINITE_CO_ROW_KINDS) * sum(probe_batch_sizes(*served))
    assert check_v2_matches_v1(client, model, None) == ["logits", "probabilities"]
    digest, answer = replica_digest(client, model, None)
    assert digest == replica_digest(client, model, None)[0]
    assert answer.headers["x-model-name"] == name


def test_invariance_check_script_against_the_server(server: RunningServer) -> None:
    result = subprocess.run(
        [sys.executable, "deploy/invariance_check.py", "--url", server.url, "--model", "tinycnn", "--v2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    pair = pair_of(server, "tinycnn", ProbeClient(server.url).model("tinycnn").small_chunk_rows)
    shapes = "C=32 and C_small=8" if pair else "C=32"
    assert f"tinycnn version 1, {shapes} (from the server's metadata), input shape [1, 8, 8]" in result.stdout
    served = (32, 8) if pair else (32,)
    assert f"passed: {3 * sum(probe_batch_sizes(*served))} cases bitwise identical" in result.stdout
    assert "V2 infer outputs ['logits', 'probabilities'] have V1's bits" in result.stdout


def test_invariance_check_script_reports_an_unknown_model(server: RunningServer) -> None:
    result = subprocess.run(
        [sys.executable, "deploy/invariance_check.py", "--url", server.url, "--model", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invariance check: ERROR: GET /v2/models/nope -> HTTP 404" in result.stderr
