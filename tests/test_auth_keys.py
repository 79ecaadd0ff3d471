"""Key files: rotation without a restart, and the start-up refusals (non-loopback without keys, bad key files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port, start_server, stop_server, write_keys
from waiting import wait_until

from service.http.auth import is_loopback, startup_problem
from service.keyfile import KeyFile, KeyFileError, digest_of, read_keys
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
    write_keys(keys, OLD_KEY + "\n")
    server = start_server(tiny_repository, tmp_path, "--api-keys-file", str(keys))
    try:
        pid = server.process.pid
        assert status_with(server.url, OLD_KEY) == 200
        assert status_with(server.url, NEW_KEY) == 401
        # Both keys during the change-over, written in place (same inode).
        write_keys(keys, f"{OLD_KEY}\n{NEW_KEY}\n")
        wait_for(server.url, NEW_KEY, 200)
        assert status_with(server.url, OLD_KEY) == 200
        # Then the old key retired by an atomic rename (a new inode).
        staged = tmp_path / "api.keys.new"
        write_keys(staged, f"# rotated\n{NEW_KEY}\n")
        os.replace(staged, keys)
        wait_for(server.url, OLD_KEY, 401)
        assert status_with(server.url, NEW_KEY) == 200
        # A file that cannot be read lets no one in (closed, not open) until it is back.
        keys.unlink()
        wait_for(server.url, NEW_KEY, 401)
        write_keys(keys, NEW_KEY + "\n")
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
        write_keys(keys, content)
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
    write_keys(keys, f"# comment\n\n   {OLD_KEY}   \n  # indented comment\n{NEW_KEY}\n")
    assert len(read_keys(keys)) == 2
    write_keys(keys, "")
    assert read_keys(keys) == ()


# ----------------------------------------------------------------------------------- issue 20, item 10

THIRD_KEY = "third-key-0123456789abcdef"


def test_a_rewrite_in_place_keeps_the_previous_keys_until_the_new_file_is_whole(tmp_path: Path) -> None:
    """The states a reader sees while `open(path, "w").write(...)` runs: empty, then a cut last line. Before,
    each gave valid keys 401s (6,345 of 34,329 requests while rewriting every 20 ms); now they hold the old
    keys until the file reads whole or reads the same on the next check (recheck_s=0: every call checks)."""
    path = write_keys(tmp_path / "keys", f"{OLD_KEY}\n")
    keys = KeyFile(path, recheck_s=0)
    old, new, third = (digest_of(key.encode()) for key in (OLD_KEY, NEW_KEY, THIRD_KEY))
    assert keys.digests() == (old,)
    path.write_text("")  # truncated: the first state of an in-place rewrite
    assert keys.digests() == (old,)
    path.write_text(NEW_KEY[:10])  # part of the new key, no newline: a parse error
    assert keys.digests() == (old,)
    path.write_text(f"{NEW_KEY}\n{THIRD_KEY}")  # whole keys, the last line not ended yet
    assert keys.digests() == (old,)
    path.write_text(f"{NEW_KEY}\n{THIRD_KEY}\n")  # whole: taken at once
    assert keys.digests() == (new, third)
    path.write_text(f"{NEW_KEY}\n")
    assert keys.digests() == (new,)


def test_an_unfinished_looking_file_is_taken_when_it_reads_the_same_twice(tmp_path: Path) -> None:
    """So that emptying the file revokes every key, and a file without a final newline still loads."""
    path = write_keys(tmp_path / "keys", f"{OLD_KEY}\n")
    keys = KeyFile(path, recheck_s=0)
    path.write_text(NEW_KEY)  # no final newline
    assert keys.digests() == (digest_of(OLD_KEY.encode()),)
    assert keys.digests() == (digest_of(NEW_KEY.encode()),)
    path.write_text("")
    assert keys.digests() == (digest_of(NEW_KEY.encode()),)
    assert keys.digests() == ()
    path.write_text("short")  # an error that stays: closed on the second look
    assert keys.digests() == ()


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        (0o644, "is readable by others (mode 0644): chmod 600, 400 or 440"),
        (0o604, "is readable by others (mode 0604): chmod 600, 400 or 440"),
        (0o620, "is writable by group or others (mode 0620): chmod 600 or 400"),
        (0o602, "is writable by group or others (mode 0602): chmod 600 or 400"),
    ],
)
def test_key_files_others_may_read_or_write_are_refused(tmp_path: Path, mode: int, problem: str) -> None:
    path = write_keys(tmp_path / "keys", f"{OLD_KEY}\n")
    path.chmod(mode)
    with pytest.raises(KeyFileError) as refused:
        read_keys(path)
    assert str(refused.value) == f"keys file {path} {problem}"
    assert startup_problem(Settings(api_keys_file=path)) == f"--api-keys-file: keys file {path} {problem}"
    path.chmod(0o440)  # group-readable (a Kubernetes secret with fsGroup) is fine
    assert read_keys(path) == (digest_of(OLD_KEY.encode()),)


def test_key_files_that_are_not_regular_or_belong_to_another_user_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyFileError, match=r"is not a regular file$"):
        read_keys(fifo)  # opened without blocking: a FIFO with no writer does not hang the reader
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    with pytest.raises(KeyFileError, match=r"is not a regular file$"):
        read_keys(zero)
    linked = tmp_path / "linked"
    linked.symlink_to(write_keys(tmp_path / "target", f"{OLD_KEY}\n"))  # how Kubernetes mounts secrets
    assert len(read_keys(linked)) == 1
    if os.geteuid() == 0:  # only root can give a file away
        owned = write_keys(tmp_path / "owned", f"{OLD_KEY}\n")
        os.chown(owned, 4242, -1)
        with pytest.raises(KeyFileError, match=r"is owned by uid 4242: it must be the server's user \(0\) or root$"):
            read_keys(owned)
