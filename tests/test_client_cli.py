"""`invariant-predict predict`: a CSV scored through a real server in chunks, several in flight, equals
byte for byte the same file scored in-process (`--local`, same executor, same C), and each row equals
(bitwise) the row sent alone."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import RunningServer

from service.client.cli import main

ROWS = 300


def write_rows(path: Path, rows: np.ndarray) -> None:
    """Columns by name, in another order than the model's, plus a column the model does not take."""
    order = list(range(15, -1, -1))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["note", *(f"f{i}" for i in order)])
        for row in rows:
            writer.writerow(["x", *(repr(float(row[i])) for i in order)])


@pytest.mark.slow
def test_server_and_local_scoring_give_the_same_bytes_and_equal_single_row_answers(
    server: RunningServer, tiny_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = np.random.default_rng(3).standard_normal((ROWS, 16)).astype(np.float32) * 3
    data = tmp_path / "in.csv"
    write_rows(data, rows)
    remote, local = tmp_path / "remote.csv", tmp_path / "local.csv"
    common = ["predict", "--model", "tiny", "--data", str(data), "--quiet"]
    chunking = ["--rows-per-request", "37", "--in-flight", "3"]
    assert main([*common, "--url", server.url, "--out", str(remote), *chunking]) == 0
    remote_err = capsys.readouterr().err
    assert main([*common, "--local", str(tiny_repository), "--out", str(local)]) == 0
    local_err = capsys.readouterr().err
    fingerprint = remote_err.split("numerics fingerprint ")[1].split()[0]
    assert f"numerics fingerprint {fingerprint}\n" in local_err  # the same numerics in both
    assert remote.read_bytes() == local.read_bytes()
    assert not list(tmp_path.glob("*.partial"))

    with remote.open() as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["label", "prob_class-0", "prob_class-1", "prob_class-2", "prob_class-3"]
    assert len(table) == ROWS + 1
    written = np.asarray([[float(v) for v in line[1:]] for line in table[1:]]).astype(np.float32)
    with server.client() as http:
        for index in range(0, ROWS, 29):  # a sample, each row sent alone
            body = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": rows[index].tolist()}]}
            answer = http.post("/v2/models/tiny/versions/1/infer", json=body).json()
            outputs = {output["name"]: output["data"] for output in answer["outputs"]}
            alone = np.asarray(outputs["probabilities"], dtype=np.float64).astype(np.float32)
            assert alone.tobytes() == written[index].tobytes()
            assert table[index + 1][0] == outputs["label"][0]


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["predict", "--model", "tiny", "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "o.csv")]
    assert main([*args, "--data", str(tmp_path / "absent.csv")]) == 2
    assert capsys.readouterr().err == f"invariant-predict: error: --data {tmp_path / 'absent.csv'}: no such file\n"
    assert main([*args, "--data", str(tmp_path), "--in-flight", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
