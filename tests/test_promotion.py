"""Promotion: labels.json decides which version unversioned traffic gets (models/labels.py, the registry's
rule in service/lifecycle/labels.py), `training.promote` moves a label, `--promote-if-better` gates at
training time. The end-to-end test trains a worse v2 into a served repository under load."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import start_server, stop_server
from repository_helpers import entry, until_state, wait_for
from swap_load import ClosedLoopClients, check, solo_answers
from training_helpers import train

from models.labels import MAX_LABELS_BYTES, LabelsError, read_labels, set_label, write_labels
from training.promote import main as promote

# A good run (val accuracy 1.0 on the synthetic set) and a clearly worse one (one epoch at a tiny rate).
GOOD = ("--name", "syn", "--epochs", "3")
WORSE = ("--name", "syn", "--epochs", "1", "--lr", "0.0001", "--seed", "5")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[1, 2]", "must be a JSON object"),
        (b'{"stable": true}', "must name a version"),
        (b'{"stable": 0}', "must name a version"),
        (b'{"stable": "3"}', "must name a version"),
        (b'{"Stable": 3}', "is not valid"),
        (b'{"stable": 3', "is not valid JSON"),
        (b" " * MAX_LABELS_BYTES + b"{}", f"larger than {MAX_LABELS_BYTES} bytes"),
        (json.dumps({f"l{i}": 1 for i in range(17)}).encode(), "17 labels, more than 16"),
    ],
)
def test_a_labels_file_that_cannot_be_used_is_refused_with_its_reason(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    (tmp_path / "labels.json").write_bytes(content)
    with pytest.raises(LabelsError, match=problem):
        read_labels(tmp_path)


def test_labels_are_written_whole_and_a_label_set_keeps_the_others(tmp_path: Path) -> None:
    assert read_labels(tmp_path) is None
    write_labels(tmp_path, {"stable": 3, "canary": 4})
    assert set_label(tmp_path, "stable", 4) == 3
    assert read_labels(tmp_path) == {"stable": 4, "canary": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".labels.lock", "labels.json"]  # no temporary left


def test_promote_cli_refuses_a_version_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "syn" / "1").mkdir(parents=True)
    with pytest.raises(SystemExit) as exited:
        promote([str(tmp_path / "syn"), "2"])
    assert exited.value.code == 2
    error = f"python -m training.promote: error: {tmp_path / 'syn'} has no version 2 (no 2/manifest.json)\n"
    assert capsys.readouterr().err == error
    assert not (tmp_path / "syn" / "labels.json").exists()


@pytest.mark.slow
def test_the_gate_labels_a_better_version_and_publishes_a_worse_one_unlabelled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(tmp_path, *GOOD, "--promote-if-better", "val_accuracy") == 0
    assert read_labels(tmp_path / "syn") == {"stable": 1}  # the first version: nothing to compare with
    assert train(tmp_path, *WORSE, "--promote-if-better", "val_accuracy") == 0
    assert read_labels(tmp_path / "syn") == {"stable": 1}
    assert (tmp_path / "syn" / "2" / "manifest.json").is_file()  # published all the same
    out = capsys.readouterr().out
    assert "promotion: version 2 published, stable not moved (serves by number only): val_accuracy" in out
    # Three more epochs on v1's split (same seed) lower the validation loss: promoted on val_loss.
    assert train(tmp_path, "--name", "syn", "--epochs", "6", "--promote-if-better", "val_loss") == 0
    assert read_labels(tmp_path / "syn") == {"stable": 3}
    assert capsys.readouterr().out.splitlines()[-1].startswith("promotion: version 3 labelled stable: val_loss ")


@pytest.mark.slow
def test_a_worse_v2_gets_no_unversioned_traffic_until_promoted_then_switches_with_no_failure(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    assert train(repository, *GOOD, "--promote-if-better", "val_accuracy") == 0
    (tmp_path / "logs").mkdir()
    server = start_server(repository, tmp_path / "logs", "--poll-interval-s", "0.1", "--no-access-log")
    pool = np.random.default_rng(7).standard_normal((24, 16)).astype(np.float32)
    clients = ClosedLoopClients(server.url, pool, ["/v2/models/syn/infer"] * 4, max_rows=12)
    try:
        solo = {"1": solo_answers(server.url, "syn", "1", pool)}
        with server.client() as http:
            clients.start()
            wait_for("answers from v1", lambda: clients.count("1") >= 10 or None)
            assert train(repository, *WORSE, "--promote-if-better", "val_accuracy") == 0
            wait_for("v2 to serve", until_state(http, "syn", "2", "READY"))
            after_ready = clients.count("1")
            wait_for("more answers after v2 is ready", lambda: clients.count("1") >= after_ready + 20 or None)
            before_promotion = {"1": clients.count("1"), "2": clients.count("2")}
            assert _label_answer(http, "stable") == "1"
            set_label(repository / "syn", "canary", 2)
            wait_for("the canary label", lambda: _label_answer(http, "canary") == "2" or None)

            assert promote([str(repository / "syn"), "2"]) == 0
            wait_for("answers from v2", lambda: clients.count("2") >= 20 or None)
            # A broken labels.json is reported in the index; the labels in force stay (v2 keeps the traffic).
            (repository / "syn" / "labels.json").write_text('{"stable": "two"}')
            wait_for("the labels problem in the index", lambda: entry(http, "syn", "labels.json") or None)
            after_break = clients.count("2")
            wait_for("answers from v2 after the break", lambda: clients.count("2") >= after_break + 10 or None)
            answers = clients.stop()
            solo["2"] = solo_answers(server.url, "syn", "2", pool)
    finally:
        clients.stop()
        stop_server(server)

    assert before_promotion["2"] == 0
    assert "labels.json: label 'stable' must name a version" in server.log()
    result = check(answers, solo)
    assert result.failures == []
    assert result.mismatches == []
    assert result.unchecked == []
    switched = min(a.done_at for a in answers if a.version == "2")
    assert all(a.version == "2" for a in answers if a.sent_at > switched)  # no flapping back to v1
    print(f"\npromotion: {before_promotion} before, {dict(result.by_version)} in all, {len(result.failures)} failed")


def _label_answer(http: httpx.Client, label: str) -> str:
    """The version that answers a request through the V1 label route and the V2 `label` parameter (equal).
    A label that the repository poll brings in between the two requests is asked again: both then see it."""
    body = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]}
    for _ in range(2):
        v1 = http.post(f"/v1/models/syn/labels/{label}:predict", json={"instances": [[0.0] * 16]})
        v2 = http.post("/v2/models/syn/infer", json={**body, "parameters": {"label": label}})
        if v1.status_code == v2.status_code:
            break
    assert v1.status_code == v2.status_code, (v1.text, v2.text)
    if v1.status_code != 200:
        return f"HTTP {v1.status_code}"
    assert v1.json()["model_version"] == v2.json()["model_version"]
    return str(v1.json()["model_version"])
