"""`make serve` end to end: trains the demo model into an empty repository, serves it, and the README's curl
example answers. Uses the real Makefile, the real training run and curl."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port

pytestmark = pytest.mark.slow


def readme_v1_curl() -> str:
    """The README's V1 predict example: the `curl ... :predict` command with its continuation lines."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^curl -s -X POST localhost:8000/v1/models/digits:predict.*?\}'$", readme, re.S | re.M)
    assert match, "README has no V1 curl example"
    return match.group(0).replace("\\\n", " ")


def test_make_serve_trains_the_demo_model_and_the_readme_example_answers(tmp_path: Path) -> None:
    port = free_port()
    repository = tmp_path / "repository"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVARIANT_", "MAKE"))}
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["make", "serve", f"REPOSITORY={repository}", f"PORT={port}", f"GRPC_PORT={free_port()}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("make serve did not become ready:\n" + log_path.read_text())
        assert sorted(p.name for p in (repository / "digits").iterdir()) == ["1"]
        command = readme_v1_curl().replace("localhost:8000", f"127.0.0.1:{port}")
        answer = json.loads(subprocess.run(command, shell=True, capture_output=True, check=True).stdout)
        assert answer["model_name"] == "digits"
        assert answer["model_version"] == "1"
        assert answer["predictions"][0]["label"] == "0"  # the README row is the first digits image, a zero
        assert len(answer["predictions"][0]["probabilities"]) == 10
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
