"""Issue 28, training CLI: an unwritable or full repository is refused before training (one line, exit 2,
nothing written); a failed checkpoint write leaves no directory behind; Ctrl-C is one line and exit 130 with
nothing written; control characters in labels are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkpoints import write_checkpoint
from training_helpers import ROOT, assert_one_line_error, good_csv_text, tree, write_csv

from models import MLPConfig
from models.checkpoint import CheckpointError
from training.data import encode_labels
from training.errors import InputError
from training.preflight import HEADROOM_BYTES, check_repository

BIG = ["--data", "synthetic", "--hidden", "512,512", "--epochs", "100000"]  # hours of training if it started


def run_training(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[object]:
    """mount_tmpfs(size, read_only) -> a fresh tmpfs directory (root only; skipped where mount is refused)."""
    mounted: list[Path] = []

    def mount(size: str, read_only: bool = False) -> Path:
        target = tmp_path / f"tmpfs{len(mounted)}"
        target.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)]
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], check=False)


@pytest.mark.slow
def test_a_read_only_repository_is_refused_before_training(mount_tmpfs: object) -> None:
    read_only = mount_tmpfs("1m", True)  # type: ignore[operator]
    done = run_training(*BIG, "--repository", str(read_only / "repo"))
    assert done.returncode == 2
    assert_one_line_error(  # one line: no progress bar, training never started
        done.stderr, f"repository {read_only / 'repo'} is not writable: Read-only file system; nothing was trained"
    )
    assert tree(read_only) == set()


@pytest.mark.slow
def test_a_64_kib_repository_is_refused_before_training(mount_tmpfs: object) -> None:
    small = mount_tmpfs("64k")  # type: ignore[operator]
    done = run_training(*BIG, "--repository", str(small))
    assert done.returncode == 2
    assert_one_line_error(done.stderr, f"repository {small} has 64 KiB free, the checkpoint needs about ")
    assert done.stderr.endswith(" KiB; nothing was trained\n")
    assert tree(small) == set()


@pytest.mark.slow
def test_a_repository_under_a_file_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    done = run_training(*BIG, "--repository", str(tmp_path / "file" / "repo"))
    assert done.returncode == 2
    assert_one_line_error(
        done.stderr, f"repository {tmp_path / 'file' / 'repo'}: {tmp_path / 'file'} is not a directory"
    )


def test_the_free_space_check_counts_the_weights_and_the_headroom(mount_tmpfs: object) -> None:
    small = mount_tmpfs("4m")  # type: ignore[operator]
    free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
    check_repository(small / "new" / "repo", free - HEADROOM_BYTES)  # fits exactly; creates nothing
    with pytest.raises(InputError, match=r"has 4096 KiB free, the checkpoint needs about 4097 KiB"):
        check_repository(small, free - HEADROOM_BYTES + 1024)
    assert tree(small) == set()


def test_a_full_disk_during_the_write_leaves_no_directory_behind(mount_tmpfs: object) -> None:
    """ENOSPC on a real 64 KiB tmpfs: no version, no staging directory, no empty model directory."""
    small = mount_tmpfs("64k")  # type: ignore[operator]
    config = MLPConfig(in_features=16, num_classes=4, hidden=(256, 256))  # ~290 KB of float32 weights
    with pytest.raises(CheckpointError, match=r"No space left on device"):
        write_checkpoint(small / "repo", "wide", config)
    assert tree(small) == set()


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_and_nothing_written(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    process = subprocess.Popen(
        [sys.executable, "-m", "training", *BIG, "--repository", str(repository)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        # Ctrl-C's disposition as a terminal gives it: a test run started in the background (`make test &`)
        # has SIGINT ignored, which the child would inherit, and Python then installs no KeyboardInterrupt.
        preexec_fn=_sigint_default,  # noqa: PLW1509 (only signal.signal runs in the child, no lock)
    )
    assert process.stderr is not None
    seen = b""
    deadline = time.monotonic() + 240
    while b"epoch 1/" not in seen:  # the first progress bar: training is under way
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, seen[-500:]
        assert time.monotonic() < deadline, seen[-500:]
        seen += chunk
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=120)[1]
    assert process.returncode == 130
    stderr = (seen + rest).decode()
    assert "Traceback" not in stderr
    # The progress bar's lines, then exactly the one line (on a line of its own).
    assert stderr.split("\n")[-2:] == ["invariant-train: interrupted; no version was written", ""]
    assert tree(repository) == set()


@pytest.mark.parametrize(
    ("label", "code"),
    [("a\x00", "0000"), ("line\nbreak", "000A"), ("esc\x1b[31m", "001B"), ("del\x7f", "007F"), ("para\u2029", "2029")],
)
def test_control_characters_in_labels_are_refused(label: str, code: str) -> None:
    with pytest.raises(InputError) as refused:
        encode_labels([label, "b", "b"], "CSV x")
    assert str(refused.value) == f"CSV x: label {label!r} holds the control character U+{code}"


@pytest.mark.slow
def test_a_nul_byte_in_a_csv_label_is_one_line_exit_2(tmp_path: Path) -> None:
    text = good_csv_text().replace(",cat,", ",c\x00at,", 1)
    path = write_csv(tmp_path / "nul.csv", text)
    done = run_training(
        "--data", str(path), "--label-column", "label", "--epochs", "1", "--repository", str(tmp_path / "repo")
    )
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "label 'c\\x00at' holds the control character U+0000")
    assert not (tmp_path / "repo").exists()
