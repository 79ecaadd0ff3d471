"""Key files: rotation without a restart, and the start-up refusals (non-loopback without keys, bad key files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port, start_server, stop_server
from waiting import wait_until

from service.http.auth import is_loopback, startup_problem
from service.keyfile import read_keys
from service.settings import Settings

OLD_KEY = "old-key-0123456789abcdef"
NEW_KEY = "new-key-0123456789abcdef"


def status_with(url: str, key: str) -> int:
    return httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code


def wait_for(url: str, key: str, status: int, timeout_s: float = 15.0) -> None:
    """The key files are re-checked at most once a second: poll until the answer changes."""
    wait_until(f"{key} answered {status}", lambda: status_with(url, key) == status, timeout_s, every_s=0.1)


@pytest.mark.slow
def test_rotating_the_key_file_takes_effect_without_a_restart(tiny_repository: Path, tmp_path: Path) -> None:
    keys = tmp_path / "api.keys"
    keys.write_text(OLD_KEY + "\n")
    server = start_server(tiny_repository, tmp_path, "--api-keys-file", str(keys))
    try:
        pid = server.process.pid
        assert status_with(server.url, OLD_KEY) == 200
        assert status_with(server.url, NEW_KEY) == 401
        # Both keys during the change-over, written in place (same inode).
        keys.write_text(f"{OLD_KEY}\n{NEW_KEY}\n")
        wait_for(server.url, NEW_KEY, 200)
        assert status_with(server.url, OLD_KEY) == 200
        # Then the old key retired by an atomic rename (a new inode).
        staged = tmp_path / "api.keys.new"
        staged.write_text(f"# rotated\n{NEW_KEY}\n")
        os.replace(staged, keys)
        wait_for(server.url, OLD_KEY, 401)
        assert status_with(server.url, NEW_KEY) == 200
        # A file that cannot be read lets no one in (closed, not open) until it is back.
        keys.unlink()
        wait_for(server.url, NEW_KEY, 401)
        keys.write_text(NEW_KEY + "\n")
        wait_for(server.url, NEW_KEY, 200)
        assert server.process.pid == pid
        assert server.process.poll() is None
    finally:
        stop_server(server)
    log = server.log()
    assert OLD_KEY not in log
    assert NEW_KEY not in log
    assert "keys file" in log


def run_cli(*flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")}
    command = [sys.executable, "-m", "service", "--port", str(free_port()), *flags]
    return subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_a_non_loopback_bind_without_keys_exits_2(tmp_path: Path) -> None:
    done = run_cli("--repository", str(tmp_path), "--host", "0.0.0.0")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "invariant-serve: error: refusing to serve on 0.0.0.0 without API keys: pass --api-keys-file PATH "
        "(one key per line), or --allow-unauthenticated if anyone who can reach this address may use the server\n"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read keys file"),
        ("short\n", "line 1: a key is one word of at least 16 ASCII characters"),
        (f"# ok\n{OLD_KEY} {NEW_KEY}\n", "line 2: a key is one word of at least 16 ASCII characters"),
        # Issue 28: the documented placeholders, and keys long enough but guessable.
        ("replace-me-with-a-long-random-inference-key\n", "line 1: a key is a documented placeholder"),
        (f"{OLD_KEY}\nCHANGEME-0123456789abcdefghijkl\n", "line 2: a key is a documented placeholder"),
        ("a" * 40 + "\n", "line 1: a key has too little entropy (under 80 bits"),
        ("0123456789abcdef\n", "line 1: a key has too little entropy (under 80 bits"),
        ("password1234567890\n", "line 1: a key has too little entropy (under 80 bits"),
    ],
)
def test_a_bad_keys_file_exits_2_without_echoing_the_key(tmp_path: Path, content: str | None, problem: str) -> None:
    keys = tmp_path / "api.keys"
    if content is not None:
        keys.write_text(content)
    done = run_cli("--repository", str(tmp_path), "--api-keys-file", str(keys))
    assert done.returncode == 2
    assert done.stderr.startswith("invariant-serve: error: --api-keys-file: ")
    assert problem in done.stderr
    assert done.stderr.count("\n") == 1
    assert OLD_KEY not in done.stderr
    assert "short" not in done.stderr.replace("invariant-serve", "")
    assert all(secret not in done.stderr for secret in ("replace-me-with", "CHANGEME", "a" * 20, "password1"))


def test_startup_rules() -> None:
    assert startup_problem(Settings(host="127.0.0.1")) is None  # loopback without keys: as before
    assert startup_problem(Settings(host="0.0.0.0", allow_unauthenticated=True)) is None
    assert startup_problem(Settings(host="::")) is not None
    assert startup_problem(Settings(protect_metrics=True)) == (
        "--protect-metrics needs --admin-keys-file PATH (the keys that may read /metrics)"
    )
    assert [is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost")] == [True] * 5
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org", "")] == [False] * 5


def test_keys_file_syntax(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# comment\n\n   {OLD_KEY}   \n  # indented comment\n{NEW_KEY}\n")
    assert len(read_keys(keys)) == 2
    keys.write_text("")
    assert read_keys(keys) == ()
