"""The server's command line: a bad flag or INVARIANT_* value is one line naming it and its allowed values,
exit 2 (never pydantic's multi-line report); the help lists every choice; a missing repository exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, start_server, stop_server

from service.cli import load_settings


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., Outcome]]:
    """The CLI's settings step in process (each subprocess would import torch): flags and INVARIANT_*
    variables -> Settings, or the exit and its output. os.environ is restored afterwards."""
    for key in [k for k in os.environ if k.startswith("INVARIANT_")]:
        monkeypatch.delenv(key)
    saved = dict(os.environ)

    def run(*args: str, env: dict[str, str] | None = None) -> Outcome:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        try:
            load_settings(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    yield run
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chunk-rows", "0"], "--chunk-rows must be an integer from 1 to 4096 or auto, got '0'"),
        (["--chunk-rows", "many"], "--chunk-rows must be an integer from 1 to 4096 or auto, got 'many'"),
        (["--request-timeout-s", "0"], "--request-timeout-s must be a number > 0 and <= 3600, got '0'"),
        (["--request-timeout-s", "nan"], "--request-timeout-s must be a number > 0 and <= 3600, got 'nan'"),
        (["--audit-fraction", "2"], "--audit-fraction must be a number from 0 to 1, got '2'"),
        (["--max-queue-rows", "0"], "--max-queue-rows must be an integer from 1 to 10000000, got '0'"),
        (
            ["--port", "70000", "--workers", "0"],
            "--port must be an integer from 0 to 65535, got '70000'; "
            "--workers must be an integer from 1 to 64, got '0'",
        ),
        (["--device", "gpu"], "argument --device: invalid choice: 'gpu' (choose from 'cpu', 'cuda', 'auto')"),
        (
            ["--log-level", "loud"],
            "argument --log-level: invalid choice: 'loud' (choose from 'critical', 'error', 'warning', 'info', "
            "'debug')",
        ),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (
            ["--model-control", "explicit", "--workers", "2"],
            "--model-control explicit needs --workers 1 (got 2): a repository API call reaches one worker process "
            "only; use --model-control poll to serve with several workers",
        ),
    ],
)
def test_bad_flag_is_one_line_naming_the_flag_and_its_allowed_values(
    serve: Callable[..., Outcome], tmp_path: Path, args: list[str], message: str
) -> None:
    result = serve("--repository", str(tmp_path), *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"invariant-serve: error: {message}\n"


def test_bad_environment_value_names_the_variable(serve: Callable[..., Outcome], tmp_path: Path) -> None:
    result = serve("--repository", str(tmp_path), env={"INVARIANT_THREADS": "0"})
    assert (result.returncode, result.stderr) == (2, "invariant-serve: error: INVARIANT_THREADS must be an integer "
                                                   "from 1 to 256, got '0'\n")  # fmt: skip


def test_missing_repository_exits_2_with_one_line(serve: Callable[..., Outcome]) -> None:
    result = serve("--repository", "/nonexistent/models")
    assert result.returncode == 2
    assert result.stderr == (
        "invariant-serve: error: --repository /nonexistent/models: no such directory "
        "(create it, even empty, to serve models added later)\n"
    )
    from_env = serve(env={"INVARIANT_REPOSITORY": "/nonexistent/models"})
    assert from_env.returncode == 2
    assert from_env.stderr.startswith("invariant-serve: error: INVARIANT_REPOSITORY /nonexistent/models: no such")


def test_repository_that_is_a_file_exits_2(serve: Callable[..., Outcome], tmp_path: Path) -> None:
    (tmp_path / "models").write_text("")
    result = serve("--repository", str(tmp_path / "models"))
    assert (result.returncode, result.stderr) == (
        2,
        f"invariant-serve: error: --repository {tmp_path / 'models'}: not a directory\n",
    )


def test_the_real_entry_point_exits_2_with_one_line(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INVARIANT_")}
    command = [sys.executable, "-m", "service", "--repository", str(tmp_path), "--chunk-rows", "0"]
    result = subprocess.run(command, check=False, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "invariant-serve: error: --chunk-rows must be an integer from 1 to 4096 or auto, got '0'\n"


def test_empty_repository_still_starts(tmp_path: Path) -> None:
    """An empty repository is not an error (a training job may fill it): live, not ready."""
    (tmp_path / "empty").mkdir()
    running = start_server(tmp_path / "empty", tmp_path, wait_ready=False)
    try:
        with running.client() as client:
            assert client.get("/v2/health/live").status_code == 200
            assert client.get("/v2/health/ready").status_code == 503
    finally:
        stop_server(running)


def test_help_lists_choices_ranges_and_defaults_and_no_bench_switch(serve: Callable[..., Outcome]) -> None:
    result = serve("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps to the terminal width
    assert "--device {cpu,cuda,auto}" in text
    assert "--log-level {critical,error,warning,info,debug}" in text
    assert (
        "Server log verbosity (uvicorn and invariant-serve loggers) (one of critical, error, warning, info, "
        "debug; default: info)"
    ) in text
    assert "(an integer from 1 to 4096 or auto; default: unset)" in text
    assert "--self-test-seed" in text
    assert "log_level" not in text
    assert "unsafe" not in text


def test_the_cli_and_its_settings_import_no_torch() -> None:
    """--portable-numerics sets MKL_CBWR, ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA in the CLI, which only
    works while torch is not imported yet (it reads them at import)."""
    probe = "import sys, service.cli, service.settings, service.http.auth; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
