"""`invariant-predict predict`: a CSV scored through a real server in chunks, several in flight, equals
byte for byte the same file scored in-process (`--local`, same executor, same C), and each row equals
(bitwise) the row sent alone."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import RunningServer, start_server, stop_server
from gated_service import Gate
from repository_helpers import wait_for

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


@pytest.mark.slow
def test_a_full_queue_is_retried_after_retry_after_and_the_file_still_equals_local_scoring(
    tiny_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gate holds the CNN's forward passes (on the batcher's thread, not the event loop), so the queue
    (40 rows) is full and a 503 certain; once it opens, the retried chunks are answered and the file equals
    the in-process scoring."""
    rows = np.random.default_rng(4).standard_normal((120, 64)).astype(np.float32)
    data = tmp_path / "in.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"c{i}" for i in range(64)])  # positional: tinycnn names fewer features than it takes
        writer.writerows([[repr(float(v)) for v in row] for row in rows])
    (tmp_path / "gate").mkdir()
    gate = Gate(tmp_path / "gate")
    (tmp_path / "logs").mkdir()
    server = start_server(
        tiny_repository, tmp_path / "logs", "--max-queue-rows", "40", "--placement", "thread", gate=gate
    )
    remote, local = tmp_path / "remote.csv", tmp_path / "local.csv"
    common = ["predict", "--model", "tinycnn", "--data", str(data), "--quiet"]
    exit_codes: list[int] = []
    remote_args = [*common, "--url", server.url, "--out", str(remote), "--rows-per-request", "30", "--in-flight", "3"]
    client = threading.Thread(target=lambda: exit_codes.append(main(remote_args)))
    try:
        gate.close()
        client.start()
        gate.wait_until_blocked()
        with server.client() as http:
            wait_for("a 503", lambda: 'status="503"' in http.get("/metrics").text or None)
        gate.open()
        client.join(timeout=120)
    finally:
        gate.open()
        stop_server(server)
    assert exit_codes == [0]
    assert main([*common, "--local", str(tiny_repository), "--out", str(local)]) == 0
    assert remote.read_bytes() == local.read_bytes()
