"""`torchrun --nproc-per-node 2 -m training` on CPU (gloo): the checkpoint serves, SyncBatchNorm's running
statistics match one process over the same global batches, and a failing rank writes nothing.

Tolerance: running statistics agree with the single-process run within ABS_TOLERANCE, not bitwise. The
global batch's sums are formed in another order and precision (each rank sums its half in float64, gloo
adds the halves; one process runs torch's float32 BatchNorm kernel over all rows), so the results differ in
the last float32 bits, and those differences pass through the gradients into the next steps. Measured on
this machine: max abs difference 6.0e-8 with SyncBatchNorm, 4.5e-2 without (each rank normalizes its own
half-batch, and rank 0's half-batch statistics are what is written).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from conftest import ROOT, start_server, stop_server
from training_helpers import assert_one_line_error, manifest_json, weights

from models.architectures import batchnorm_layers, build_model
from models.checkpoint import load_checkpoint
from models.config import config_from_dict
from models.scan import list_versions
from training.cli import main
from training.run import rank_seed

ABS_TOLERANCE = 1e-5
# Dropout 0: its masks are random per rank, and the comparison is about BatchNorm. 384 training rows, a
# multiple of 2, so DistributedSampler pads nothing and both runs see the same 6 global batches per epoch.
RUN = ["--data", "synthetic", "--hidden", "16,16", "--epochs", "2", "--dropout", "0", "--batch-size", "64"]


def torchrun(*args: str, stderr_path: Path | None = None) -> subprocess.Popen[str]:
    """`python -m torch.distributed.run --standalone --nproc-per-node 2 -m training ARGS` (a free port)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stderr = stderr_path.open("w") if stderr_path else subprocess.PIPE
    return subprocess.Popen(
        [*command, "-m", "training", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr or ""


def running_stats(version_dir: Path) -> dict[str, torch.Tensor]:
    saved = weights(version_dir)
    return {key: value for key, value in saved.items() if key.endswith(("running_mean", "running_var"))}


def max_abs_difference(first: Path, second: Path) -> float:
    a, b = running_stats(first), running_stats(second)
    assert sorted(a) == sorted(b)
    assert len(a) == 4  # two BatchNorm layers, mean and variance each
    return max(float((a[key] - b[key]).abs().max()) for key in a)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """syn/1: one process; syn/2: two processes with SyncBatchNorm; syn/3: two processes without."""
    root = tmp_path_factory.mktemp("repo")
    assert main([*RUN, "--name", "syn", "--repository", str(root)]) == 0
    for extra in ([], ["--no-sync-bn"]):
        code, stdout, stderr = finish(torchrun(*RUN, *extra, "--name", "syn", "--repository", str(root)))
        assert code == 0, stderr
        assert stdout.count("checkpoint: ") == 1  # rank 0 alone prints (and writes)
    assert list_versions(root, "syn") == [1, 2, 3]
    return root


def test_manifest_records_world_size_backend_and_sync_bn(repository: Path) -> None:
    single, synced, unsynced = (manifest_json(repository / "syn" / str(v))["training"] for v in (1, 2, 3))
    assert single["distributed"] == {
        "world_size": 1,
        "backend": None,
        "sync_bn": False,
        "batch_size": "global (all ranks together)",
        "rows_per_rank_per_step": 64,
    }
    two = {"world_size": 2, "backend": "gloo", "rows_per_rank_per_step": 32}
    assert synced["distributed"] == {**single["distributed"], **two, "sync_bn": True}
    assert unsynced["distributed"]["sync_bn"] is False


def test_sync_bn_running_stats_match_one_process_and_without_it_they_do_not(repository: Path) -> None:
    synced = max_abs_difference(repository / "syn" / "1", repository / "syn" / "2")
    unsynced = max_abs_difference(repository / "syn" / "1", repository / "syn" / "3")
    print(f"running stats max abs diff vs 1 process: sync_bn {synced:.3g}, no sync_bn {unsynced:.3g}")
    assert synced <= ABS_TOLERANCE
    assert unsynced > 100 * ABS_TOLERANCE


def test_checkpoint_is_plain_batchnorm_and_serves(repository: Path, tmp_path: Path) -> None:
    version_dir = repository / "syn" / "2"
    model, manifest = load_checkpoint(version_dir)
    layers = batchnorm_layers(model)
    assert {type(layer) for layer in layers.values()} == {torch.nn.BatchNorm1d}
    assert layers.keys() == batchnorm_layers(build_model(config_from_dict(manifest.architecture.__dict__))).keys()
    server = start_server(repository, tmp_path)  # ready only after every version passed its self-test
    try:
        rows = torch.randn(5, 16).tolist()
        response = httpx.post(f"{server.url}/v1/models/syn/versions/2:predict", json={"instances": rows})
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 5
    finally:
        stop_server(server)


def test_a_failing_rank_fails_the_job_and_writes_no_version(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    log = tmp_path / "stderr.log"
    # Far more epochs than the test waits for: the job can only end through the kill below.
    process = torchrun(*RUN, "--epochs", "100000", "--name", "f", "--repository", str(root), stderr_path=log)
    rank1 = wait_for_rank(process.pid, rank=1, started=log)
    os.kill(rank1, signal.SIGKILL)
    code, _, _ = finish(process)
    assert code != 0
    assert list_versions(root, "f") == []
    assert not (root / "f").exists() or list((root / "f").iterdir()) == []  # no staging directory left


def wait_for_rank(launcher: int, rank: int, started: Path, timeout_s: float = 120.0) -> int:
    """The pid of torchrun's worker with RANK=`rank`, once rank 0's progress bar shows epoch 2 (training)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "epoch 2/" in started.read_text(errors="replace"):
            for child in children(launcher):
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                if f"RANK={rank}".encode() in environ:
                    return child
        time.sleep(0.1)
    raise AssertionError(f"rank {rank} did not start training:\n{started.read_text(errors='replace')}")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_flags_that_cannot_work_on_this_world_size_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    repository = ["--repository", str(tmp_path)]
    assert main([*RUN, "--batch-size", "63", *repository]) == 2
    assert_one_line_error(capsys.readouterr().err, "--batch-size is the global batch and must be a multiple of")
    assert main([*RUN, "--norm", "layer", "--sync-bn", *repository]) == 2
    assert_one_line_error(capsys.readouterr().err, "--sync-bn applies only to --norm batch, not --norm layer")
    assert list(tmp_path.iterdir()) == []


def test_ranks_draw_distinct_dropout_seeds_from_the_run_seed() -> None:
    for seed in (0, 7, 2**63 - 1):
        seeds = [rank_seed(seed, rank) for rank in range(1, 9)]
        assert len(set(seeds)) == 8
        assert seed not in seeds  # rank 0 keeps --seed itself
        assert all(0 <= value < 2**63 for value in seeds)
