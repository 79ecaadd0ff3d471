"""gRPC refusals that need a held compute thread (tests/gated_service.py: a CNN's forward waits while the gate
is closed, so nothing here depends on how fast the machine is): a full queue is UNAVAILABLE with retry-after,
more rows than the queue holds RESOURCE_EXHAUSTED, the server's request timeout and the client's deadline
DEADLINE_EXCEEDED. With --workers 2 one channel stays on one worker (SO_REUSEPORT) and channels spread."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from checkpoints import TINY_CNN, write_checkpoint
from conftest import RunningServer, start_server, stop_server
from gated_service import Gate
from grpc_helpers import call, code_of, grpc_outputs, raw_infer_request
from tritonclient.grpc import service_pb2 as pb

from service.observability.metrics import workers_of

pytestmark = pytest.mark.slow
TIMEOUT_S = 3.0  # --request-timeout-s of the gated server
MAX_QUEUE_ROWS = 6


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Gate]]:
    repository = tmp_path_factory.mktemp("gated-grpc")
    write_checkpoint(repository, "gated", TINY_CNN)
    gate = Gate(tmp_path_factory.mktemp("gate"))
    flags: tuple[str, ...] = (
        "--chunk-rows",
        "2",
        "--max-queue-rows",
        str(MAX_QUEUE_ROWS),
        "--request-timeout-s",
        str(TIMEOUT_S),
    )
    flags += ("--placement", "thread")  # a held forward must hold its compute thread, not the event loop
    running = start_server(repository, tmp_path_factory.mktemp("logs"), *flags, gate=gate, grpc=True)
    yield running, gate
    gate.open()
    stop_server(running)


def cnn_rows(count: int, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal((count, 1, 8, 8)).astype(np.float32)


def infer_future(channel: grpc.Channel, rows: np.ndarray[Any, Any], timeout: float | None = None) -> Any:
    stub = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    return stub.future(raw_infer_request("gated", rows), timeout=timeout)


def test_full_queue_timeouts_and_deadlines_over_grpc(gated: tuple[RunningServer, Gate]) -> None:
    server, gate = gated
    with grpc.insecure_channel(server.grpc_target) as channel:
        alone = grpc_outputs(infer_future(channel, cnn_rows(1)).result(timeout=60))
        gate.close()
        held = infer_future(channel, cnn_rows(1))  # reaches the forward and waits at the gate
        gate.wait_until_blocked()
        with pytest.raises(grpc.RpcError) as too_many:
            infer_future(channel, cnn_rows(MAX_QUEUE_ROWS + 1)).result(timeout=60)
        assert code_of(too_many.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert too_many.value.details() == f"request has 7 rows, more than max_queue_rows={MAX_QUEUE_ROWS}"
        with pytest.raises(grpc.RpcError) as client_deadline:
            infer_future(channel, cnn_rows(1), timeout=0.2).result(timeout=60)
        assert code_of(client_deadline.value) == grpc.StatusCode.DEADLINE_EXCEEDED
        # One row each, more than the queue holds: the ones beyond it are refused at once, the queued ones
        # time out on the server (--request-timeout-s) while the gate holds the forward.
        flood = [infer_future(channel, cnn_rows(1, seed)) for seed in range(MAX_QUEUE_ROWS + 2)]
        outcomes = [_failure(future) for future in [held, *flood]]
        full = [error for error in outcomes if code_of(error) == grpc.StatusCode.UNAVAILABLE]
        timed_out = [error for error in outcomes if code_of(error) == grpc.StatusCode.DEADLINE_EXCEEDED]
        assert len(full) >= 2
        assert len(full) + len(timed_out) == len(outcomes)
        assert all(error.details().startswith("queue full: ") for error in full)
        assert all(dict(error.trailing_metadata())["retry-after"] == "1" for error in full)
        assert all(
            error.details() == f"no answer within {TIMEOUT_S:g} s; the request's rows were dropped"
            for error in timed_out
        )
        gate.open()
        assert grpc_outputs(infer_future(channel, cnn_rows(1)).result(timeout=60)) == alone
    assert "Traceback" not in server.log()


def _failure(future: Any) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        future.result(timeout=60)
    return caught.value


def connection_owners(grpc_port: int, pids: set[int]) -> dict[int, int]:
    """Established server-side TCP connections on the gRPC port -> the worker process holding each."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == grpc_port and fields[3] == "01":  # ESTABLISHED
                inodes[int(fields[9])] = int(fields[2].rsplit(":", 1)[1], 16)  # inode -> the client's port
    owners = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes:
                    owners[inodes[inode]] = pid
    return owners


def test_with_two_workers_a_channel_stays_on_one_worker_and_channels_spread(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_checkpoint(repository, "tiny")
    (tmp_path / "logs").mkdir()
    server = start_server(repository, tmp_path / "logs", "--workers", "2", grpc=True)
    channels: list[grpc.Channel] = []
    try:
        workers = wait_for_workers(server)
        rows = np.random.default_rng(4).standard_normal((3, 16)).astype(np.float32)
        answers: set[bytes] = set()
        for _ in range(24):  # separate connections: no subchannel shared between channels
            channel = grpc.insecure_channel(server.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)])
            channels.append(channel)
            for _ in range(3):
                outputs = grpc_outputs(
                    call(channel, "ModelInfer", raw_infer_request("tiny", rows), pb.ModelInferResponse)
                )
                answers.add(outputs["logits"] + outputs["probabilities"])
        owners = connection_owners(server.grpc_port, workers)
        assert len(owners) == len(channels)  # one connection per channel, each held by one worker
        assert set(owners.values()) == workers  # the kernel spread the connections over both workers
        assert len(answers) == 1  # and both workers answer with the same bits
    finally:
        for channel in channels:
            channel.close()
        stop_server(server)


def wait_for_workers(server: RunningServer) -> set[int]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workers = workers_of(server.process.pid)
        if len(workers) == 2 and server.log().count("gRPC (inference.GRPCInferenceService) listening") == 2:
            return workers
        time.sleep(0.2)
    raise AssertionError(f"two workers with gRPC did not start:\n{server.log()}")
