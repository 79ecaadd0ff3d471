"""`invariant-predict predict --url URL --model M --data IN.csv --out OUT.csv` (or `python -m service.client`).

Scores a whole CSV file: the rows are streamed in chunks (at most --rows-per-request rows, and never more
than 4 MiB of float32 per request: within the server's default 8 MiB body limit), --in-flight requests at
once, each chunk retried on 503 after the server's Retry-After; answers are written in input order. Every
chunk goes to the one version the model's metadata named at the start (pinned by number).
`--local REPO` scores in-process instead: the version is verified and self-tested as the server does
(service.lifecycle.loader.verify_version) and run through the same executor at the same C, so the output
file is byte-for-byte the server's. Both print the numerics fingerprint on stderr.
API key: --api-key-file FILE, else the INVARIANT_API_KEY environment variable.
Exit codes: 0 written; 2 bad input; 1 the server failed or could not be reached (one line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, NoReturn

from service.client.remote import ServedVersion, Server
from service.client.table import ClientError, ModelInput, read_chunks, write_answers, write_header
from service.engine.types import Float32Array, Int64Array

PROG = "invariant-predict"
API_KEY_VARIABLE = "INVARIANT_API_KEY"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
Answers = tuple[Int64Array, Float32Array]


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ClientError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    predict = commands.add_parser("predict", help="score a CSV file")
    predict.add_argument("--model", required=True, help="model name")
    predict.add_argument("--data", required=True, type=Path, metavar="IN.csv", help="header line, one row per line")
    predict.add_argument("--out", required=True, type=Path, metavar="OUT.csv", help="label,prob_<class>... per row")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="the server, e.g. http://127.0.0.1:8000")
    source.add_argument("--local", type=Path, metavar="REPO", help="score in-process from this repository")
    predict.add_argument("--version", help="model version (default: what unversioned requests get / labels.json)")
    predict.add_argument("--rows-per-request", type=int, default=2048, metavar="N", help="(default: 2048)")
    predict.add_argument("--in-flight", type=int, default=4, metavar="N", help="requests at once (default: 4)")
    predict.add_argument("--api-key-file", type=Path, metavar="FILE", help=f"(default: ${API_KEY_VARIABLE})")
    predict.add_argument("--chunk-rows", type=int, metavar="C", help="--local: C (default: the server's default)")
    predict.add_argument("--threads", type=int, default=1, metavar="N", help="--local: torch threads (default: 1)")
    predict.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        arguments = build_parser().parse_args(argv)
        for flag in ("rows_per_request", "in_flight"):
            if not 1 <= getattr(arguments, flag) <= 65536:
                raise ClientError(f"--{flag.replace('_', '-')} must be from 1 to 65536")
        if not arguments.data.is_file():
            raise ClientError(f"--data {arguments.data}: no such file")
        score_file(arguments)
    except ClientError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    return 0


def score_file(arguments: argparse.Namespace) -> None:
    if arguments.local is not None:
        from service.client.local import open_local  # imports torch: only for --local

        served, run = open_local(
            arguments.local, arguments.model, arguments.version, arguments.chunk_rows, arguments.threads
        )
        in_flight = 1
    else:
        server = Server(arguments.url, api_key(arguments.api_key_file))
        served = server.metadata(arguments.model, arguments.version)
        run = lambda rows: server.infer(served, rows)  # noqa: E731
        in_flight = arguments.in_flight
    where = "--local" if arguments.local is not None else arguments.url
    print(
        f"{PROG}: {served.name} version {served.version} ({where}), C = {served.chunk_rows}, "
        f"numerics fingerprint {served.fingerprint}",
        file=sys.stderr,
    )
    rows_per_request = min(arguments.rows_per_request, max(1, MAX_REQUEST_BYTES // (4 * served.model.features)))
    started = time.perf_counter()
    with arguments.data.open(newline="") as source, _Output(arguments.out) as sink:
        write_header(sink, served.model.class_labels)
        chunks = read_chunks(source, served.model, rows_per_request, str(arguments.data))
        total = stream(chunks, run, in_flight, sink, served.model, Progress(arguments.quiet, started))
    seconds = time.perf_counter() - started
    print(
        f"{PROG}: {total} rows in {seconds:.2f} s ({total / max(seconds, 1e-9):.0f} rows/s) -> {arguments.out}",
        file=sys.stderr,
    )


def stream(
    chunks: Iterator[Float32Array],
    run: Callable[[Float32Array], Answers],
    in_flight: int,
    sink: IO[str],
    model: ModelInput,
    progress: Progress,
) -> int:
    """Up to `in_flight` chunks scored at once; answers written in input order as the oldest completes."""
    written = 0
    window: deque[Future[Answers]] = deque()
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        for rows in chunks:
            if len(window) == in_flight:
                written += _write_oldest(window, sink, model)
                progress.show(written)
            window.append(pool.submit(run, rows))
        while window:
            written += _write_oldest(window, sink, model)
            progress.show(written)
    progress.done(written)
    return written


def _write_oldest(window: deque[Future[Answers]], sink: IO[str], model: ModelInput) -> int:
    class_index, probabilities = window.popleft().result()  # a ClientError of the chunk is raised here
    write_answers(sink, model.class_labels, class_index, probabilities)
    return int(class_index.shape[0])


class Progress:
    def __init__(self, quiet: bool, started: float) -> None:
        self.quiet, self.started, self.shown = quiet, started, 0.0

    def show(self, rows: int) -> None:
        now = time.perf_counter()
        if self.quiet or now - self.shown < 0.5:
            return
        self.shown = now
        print(f"\r{rows} rows, {rows / max(now - self.started, 1e-9):.0f} rows/s", end="", file=sys.stderr, flush=True)

    def done(self, rows: int) -> None:
        if not self.quiet and self.shown:
            print(f"\r{rows} rows", file=sys.stderr)


def api_key(key_file: Path | None) -> str | None:
    if key_file is None:
        return os.environ.get(API_KEY_VARIABLE) or None
    try:
        lines = [line.strip() for line in key_file.read_text().splitlines()]
    except OSError as exc:
        raise ClientError(f"--api-key-file {key_file}: {exc.strerror or exc}") from None
    keys = [line for line in lines if line and not line.startswith("#")]
    if not keys:
        raise ClientError(f"--api-key-file {key_file}: no key in the file")
    return keys[0]


class _Output:
    """OUT.csv written beside as OUT.csv.partial and renamed when complete: a failed run leaves no
    half-written file under the name asked for."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")

    def __enter__(self) -> IO[str]:
        try:
            self.handle = self.partial.open("w", newline="")
        except OSError as exc:
            raise ClientError(f"--out {self.path}: {exc.strerror or exc}") from None
        return self.handle

    def __exit__(self, kind: object, *_: object) -> None:
        self.handle.close()
        if kind is None:
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)


__all__ = ["ServedVersion", "main"]
