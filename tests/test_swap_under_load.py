"""Versions arrive, break and go while clients keep sending (a bounded version of the lifecycle bench).

Four closed-loop clients on the unversioned route while v2 is written, a garbage v3 appears, v1's
directory is deleted and v2's files are touched (a reload swaps its serving copy): no request fails, every
answered row equals (bitwise) the row answered alone by the version named in `X-Model-Version`, and v3 never
answers. Each step waits on a condition, never a sleep.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from checkpoints import write_checkpoint
from conftest import start_server, stop_server
from repository_helpers import entry, until_state, wait_for, write_garbage_version
from swap_load import ClosedLoopClients, check, solo_answers

PATH = "/v2/models/tiny/infer"


def test_versions_swap_under_load_with_no_failed_request(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_checkpoint(repository, "tiny", seed=0)
    (tmp_path / "logs").mkdir()
    server = start_server(repository, tmp_path / "logs", "--poll-interval-s", "0.1")
    pool = np.random.default_rng(7).standard_normal((24, 16)).astype(np.float32)
    clients = ClosedLoopClients(server.url, pool, [PATH] * 4, max_rows=12)
    try:
        solo = {"1": solo_answers(server.url, "tiny", "1", pool)}
        with server.client() as http:
            clients.start()
            wait_for("answers from v1", lambda: clients.count("1") >= 10 or None)

            write_checkpoint(repository, "tiny", seed=1)  # v2, written as training writes it
            wait_for("answers from v2", lambda: clients.count("2") >= 10 or None)

            v3 = write_garbage_version(repository, "tiny", repository / "tiny" / "2", 3)
            wait_for("v3 to be refused", until_state(http, "tiny", "3", "UNAVAILABLE"))
            refused = entry(http, "tiny", "3")
            assert refused is not None
            assert refused["reason"].startswith("checksum mismatch: model.safetensors has sha256 ")

            shutil.rmtree(repository / "tiny" / "1")
            wait_for("v1 to be unloaded", until_state(http, "tiny", "1", None))

            # v2's manifest rewritten in place (same meaning, other bytes): reloaded, and the new copy replaces
            # the old one under load. (A touch alone, no content changed, reloads nothing: test_loader_io.py.)
            manifest = repository / "tiny" / "2" / "manifest.json"
            manifest.write_text(json.dumps(json.loads(manifest.read_text()), indent=1))
            wait_for("v2 to be reloaded", lambda: server.log().count("model tiny version 2 ready") == 2 or None)
            after = clients.count("2")
            wait_for("more answers from v2", lambda: clients.count("2") >= after + 10 or None)
            answers = clients.stop()
            assert v3.is_dir()
            solo["2"] = solo_answers(server.url, "tiny", "2", pool)
    finally:
        clients.stop()
        stop_server(server)

    result = check(answers, solo)
    assert result.failures == []
    assert result.mismatches == []
    assert result.unchecked == []
    assert set(result.by_version) == {"1", "2"}  # v3 never answered
    assert "Traceback" not in server.log()
