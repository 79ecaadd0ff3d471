"""gRPC vs HTTP V2 binary vs HTTP V2 JSON against one server process (one worker, gRPC on): requests per second
and p99 latency at 1 and 64 requests in flight, with 1-row and 32-row requests, the same rows every time.

Closed loops from this process: gRPC through one grpc.aio channel (64 calls in flight multiplex on its one
HTTP/2 connection, as a gRPC client does), HTTP through 1 or 64 keep-alive HTTP/1.1 connections
(bench/loadgen.py). Every answer of the timed runs is checked for status OK; one answer per protocol and
size is checked bitwise against the others before timing. The model is a digits-sized MLP (64-256-256-10,
random weights: timing only). Bounded: `--seconds` per cell (12 cells), 127.0.0.1 only.

    .venv/bin/python bench/grpc_bench.py [--seconds 5] [--out bench/reports/grpc.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from chunk_rows import generated_model
from loadgen import LoadResult, run_request_load
from servers import HOST, PYTHON, Server, free_port, running
from tritonclient.grpc import service_pb2 as pb

from models import MLPConfig

MODEL = "digits"
DIGITS_MLP = MLPConfig(64, 10, hidden=(256, 256), norm="batch", dropout=0.2)
IN_FLIGHT = (1, 64)
ROWS = (1, 32)
PROTOCOLS = ("grpc", "http binary", "http json")
OUTPUTS = ("logits", "probabilities", "class_index", "label")


def grpc_request(rows: np.ndarray[Any, Any]) -> bytes:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype("<f4").tobytes())
    encoded: bytes = request.SerializeToString()
    return encoded


def http_request(port: int, rows: np.ndarray[Any, Any], binary: bool) -> bytes:
    """A whole V2 infer request (head and body), every output binary or JSON, as a tritonclient sends it."""
    tensor: dict[str, Any] = {"name": "input", "shape": list(rows.shape), "datatype": "FP32"}
    if binary:
        data = rows.astype("<f4").tobytes()
        header = json.dumps(
            {
                "inputs": [{**tensor, "parameters": {"binary_data_size": len(data)}}],
                "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in OUTPUTS],
            }
        ).encode()
        body, extra = header + data, f"Inference-Header-Content-Length: {len(header)}\r\n"
        kind = "application/octet-stream"
    else:
        body = json.dumps({"inputs": [{**tensor, "data": rows.ravel().tolist()}]}).encode()
        extra, kind = "", "application/json"
    head = (
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: {kind}\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def grpc_load(target: str, request: bytes, in_flight: int, seconds: float) -> LoadResult:
    result = LoadResult(in_flight, seconds)
    async with grpc.aio.insecure_channel(target) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await infer(request, timeout=30)
                    status = 200
                except grpc.aio.AioRpcError as error:
                    status = 1000 + error.code().value[0]
                result.latencies_s.append(time.perf_counter() - started)
                result.statuses[status] = result.statuses.get(status, 0) + 1

        await asyncio.gather(*(loop() for _ in range(in_flight)))
    return result


def check_same_bits(server: Server, grpc_target: str, rows: np.ndarray[Any, Any]) -> None:
    """One answer per protocol for `rows`: gRPC's raw logits equal HTTP binary's and HTTP JSON's, bitwise."""
    from urllib.request import Request, urlopen

    with grpc.insecure_channel(grpc_target) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(grpc_request(rows), timeout=30)
    answer = pb.ModelInferResponse.FromString(raw)
    logits = dict(zip([o.name for o in answer.outputs], answer.raw_output_contents, strict=True))["logits"]
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
    body = json.dumps({"inputs": [tensor]})
    request = Request(f"{server.url}/v2/models/{MODEL}/infer", body.encode(), {"Content-Type": "application/json"})
    with urlopen(request, timeout=30) as response:
        outputs = {o["name"]: o for o in json.loads(response.read())["outputs"]}
    if np.asarray(outputs["logits"]["data"], dtype=np.float32).tobytes() != logits:
        raise SystemExit(f"gRPC and HTTP JSON logits differ for {len(rows)} rows")


async def measure(server: Server, grpc_port: int, seconds: float) -> list[tuple[str, int, int, LoadResult]]:
    rng = np.random.default_rng(0)
    table = []
    for rows_count in ROWS:
        rows = rng.standard_normal((rows_count, 64)).astype(np.float32)
        check_same_bits(server, f"{HOST}:{grpc_port}", rows)
        for in_flight in IN_FLIGHT:
            for protocol in PROTOCOLS:
                if protocol == "grpc":
                    await grpc_load(f"{HOST}:{grpc_port}", grpc_request(rows), in_flight, 1.0)  # warm-up
                    result = await grpc_load(f"{HOST}:{grpc_port}", grpc_request(rows), in_flight, seconds)
                else:
                    request = http_request(server.port, rows, binary=protocol == "http binary")
                    await run_request_load(HOST, server.port, request, in_flight, 1.0)
                    result = await run_request_load(HOST, server.port, request, in_flight, seconds)
                failed = sum(n for status, n in result.statuses.items() if status != 200) + result.errors
                if failed:
                    raise SystemExit(f"{protocol} {rows_count} rows x {in_flight}: {failed} failed ({result.statuses})")
                table.append((protocol, rows_count, in_flight, result))
                rate, p99 = result.requests_per_second, result.percentile_ms(0.99)
                print(
                    f"{protocol:12} rows {rows_count:2} x {in_flight:2}: {rate:7.0f} req/s, p99 {p99:6.2f} ms",
                    flush=True,
                )
    return table


def report(table: list[tuple[str, int, int, LoadResult]], seconds: float) -> str:
    lines = [
        f"gRPC vs HTTP, one server process (1 worker, C = 32), {seconds:g} s per cell after 1 s warm-up, "
        "closed loops from one client process on the same machine.",
        "",
        "| protocol | rows/request | in flight | req/s | rows/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for protocol, rows, in_flight, result in table:
        rate = result.requests_per_second
        lines.append(
            f"| {protocol} | {rows} | {in_flight} | {rate:.0f} | {rate * rows:.0f} | "
            f"{result.percentile_ms(0.5):.2f} | {result.percentile_ms(0.99):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as work:
        repository = generated_model(Path(work) / "repository", MODEL, DIGITS_MLP)
        grpc_port = free_port()
        command = [PYTHON, "-m", "service", "--repository", str(repository), "--host", HOST, "--workers", "1"]
        command += ["--chunk-rows", "32", "--audit-fraction", "0", "--grpc-port", str(grpc_port)]
        env = {key: value for key, value in os.environ.items() if not key.startswith("INVARIANT_")}
        server = Server("ours", command, env, Path(work) / "server.log")
        with running([server]):
            table = asyncio.run(measure(server, grpc_port, args.seconds))
    text = report(table, args.seconds)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
