"""One message, one socket write per inference answer (WHOLE_ANSWER, service/http/protocol.py): the bytes on
the wire are the ones uvicorn writes for the same start and body messages, keep-alive and its end behave
the same, and header lines are checked as uvicorn checks each header."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from bad_input_helpers import ROW
from conftest import RunningServer, connect, read_until_closed, start_server, stop_server
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from service.http.protocol import WholeAnswerCycle
from service.protocols.exchange import Reply, header_lines, send_reply

DEFAULT_HEADERS = [(b"date", b"Fri, 04 Dec 2026 07:00:00 GMT"), (b"server", b"uvicorn")]
MODEL_HEADERS = ((b"X-Model-Name", b"tiny"), (b"X-Model-Version", b"1"), (b"X-Replica", b"r-1"))


class Transport:
    """What a cycle writes, and whether it closed the connection."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def cycle(kind: type[RequestResponseCycle], method: str, keep_alive: bool) -> tuple[RequestResponseCycle, Transport]:
    transport = Transport()
    made = kind(
        {"type": "http", "method": method},  # type: ignore[typeddict-item]  # what send() reads of it
        transport,  # type: ignore[arg-type]
        FlowControl(transport),  # type: ignore[arg-type]
        logging.getLogger("test"),
        logging.getLogger("test"),
        False,
        DEFAULT_HEADERS,
        asyncio.Event(),
        False,
        keep_alive,
        lambda: None,
    )
    return made, transport


@pytest.mark.parametrize("method", ["POST", "HEAD"])
@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("reply", [Reply(b'{"predictions":[1]}', 200, headers=MODEL_HEADERS), Reply(b"{}", 503)])
def test_the_whole_answer_is_the_bytes_uvicorn_writes_in_one_write(method: str, keep_alive: bool, reply: Reply) -> None:
    ours, ours_wrote = cycle(WholeAnswerCycle, method, keep_alive)
    uvicorns, uvicorn_wrote = cycle(RequestResponseCycle, method, keep_alive)
    asyncio.run(send_reply(ours.send, reply, "req-1", whole_answer=True))  # type: ignore[arg-type]
    asyncio.run(send_reply(uvicorns.send, reply, "req-1"))  # type: ignore[arg-type]
    assert len(ours_wrote.written) == 1
    assert ours_wrote.written[0] == b"".join(uvicorn_wrote.written)
    assert (ours.response_complete, ours.keep_alive, ours_wrote.closed) == (True, keep_alive, not keep_alive)
    assert ours_wrote.closed == uvicorn_wrote.closed


def test_header_lines_are_checked_as_uvicorn_checks_them_and_encoded_once_per_tuple() -> None:
    assert header_lines(MODEL_HEADERS) == b"x-model-name: tiny\r\nx-model-version: 1\r\nx-replica: r-1\r\n"
    assert header_lines(MODEL_HEADERS) is header_lines(MODEL_HEADERS)  # the version's block, cached
    with pytest.raises(RuntimeError, match="invalid header"):
        header_lines([(b"x-replica", b"r-1\r\nx-injected: 1")])
    with pytest.raises(RuntimeError, match="invalid header"):
        header_lines([(b"x replica", b"r-1")])


# ------------------------------------------------------------------------------- through a real server


@pytest.fixture(scope="module")
def server(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tiny_repository, tmp_path_factory.mktemp("whole-answer"))
    yield running
    stop_server(running)


def predict_request(*extra: str) -> bytes:
    body = json.dumps({"instances": [ROW]}).encode()
    head = ["POST /v1/models/tiny:predict HTTP/1.1", "Host: test", "Content-Type: application/json"]
    head += [f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_pipelined_predictions_are_answered_in_order_on_one_connection(server: RunningServer) -> None:
    ids = [f"pipelined-{n}" for n in range(5)]
    requests = [predict_request(f"X-Request-Id: {one}") for one in ids[:-1]]
    requests.append(predict_request(f"X-Request-Id: {ids[-1]}", "Connection: close"))
    with connect(server) as sock:
        sock.sendall(b"".join(requests))
        answers = read_until_closed(sock)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 5
    assert re.findall(rb"x-request-id: (\S+)\r\n", answers) == [one.encode() for one in ids]
    assert answers.count(b"x-model-name: tiny\r\n") == 5
    assert answers.count(b"connection: close\r\n") == 1  # the last answer's, then the server closed


def test_an_http_1_0_prediction_is_answered_then_the_connection_closes(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(predict_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nconnection: close" in head
    length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    assert len(body) == length
    assert json.loads(body)["predictions"][0]["label"] is not None
