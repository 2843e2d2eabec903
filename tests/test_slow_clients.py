"""Issue 11 item 7: a client that sends its request slowly cannot hold a connection.

Raw loopback sockets against ``flexroute serve`` (uvicorn's default httptools protocol) and
against uvicorn's h11 protocol in a thread: a connection whose headers (or body) have not all
arrived within the bound gets a 408 and is closed; a prompt client is not affected.
"""

from __future__ import annotations

import asyncio
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import uvicorn

from flexroute.asgi import Receive, Scope, Send
from flexroute.proxy.slow_clients import PROTOCOL, BoundedConfig, BoundedH11
from tests.fault_upstream import fault_upstream
from tests.serve_process import serve

BOUND = 2.0  # seconds: header and body timeouts of the servers under test
SLACK = 25.0  # a loaded 2-core machine closes 500 connections late, but not this late
PARTIAL_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
HALF_A_FORM = (  # the dashboard reads its forms itself
    b"POST /dashboard/signin HTTP/1.1\r\nhost: x\r\n"
    b"content-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n\r\nkey="
)
HEAD_THEN_PART_OF_BODY = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"content-length: 1000\r\n\r\n" + b'{"model": "gpt-5-mini", '
)


def closed_within(sockets: list[socket.socket], seconds: float) -> tuple[float, list[bytes]]:
    """Wait until every socket reads EOF (or a reset); the time it took and what each got.
    The sockets are closed at the end, however it ends."""
    with ExitStack() as stack:
        for sock in sockets:
            stack.enter_context(sock)
        return _wait_closed(sockets, seconds)


def _wait_closed(sockets: list[socket.socket], seconds: float) -> tuple[float, list[bytes]]:
    began = time.monotonic()
    got = {s.fileno(): b"" for s in sockets}
    selector = selectors.DefaultSelector()
    for s in sockets:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
    open_ = len(sockets)
    while open_:
        left = seconds - (time.monotonic() - began)
        assert left > 0, f"{open_} of {len(sockets)} connections still open after {seconds} s"
        for key, _ in selector.select(timeout=left):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                got[sock.fileno()] += data
            else:
                selector.unregister(sock)
                open_ -= 1
    selector.close()
    return time.monotonic() - began, [got[s.fileno()] for s in sockets]


def read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer (chunked, or with a content-length) from ``sock``."""
    data = b""
    while True:
        data += sock.recv(65536)
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            continue
        lengths = [
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ]
        if lengths and len(body) >= int(lengths[0].split(b":")[1]):
            return data
        if not lengths and body.endswith(b"0\r\n\r\n"):
            return data


def connect(port: int, send: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if send:
        sock.sendall(send)
    return sock


class TestSlowClientsAreCutOff:
    def test_500_slowloris_connections_are_closed_within_the_bounds(self, tmp_path: Path) -> None:
        """Silent connections, half-sent headers, half-sent bodies and half-sent dashboard forms
        are all closed soon after the header or body timeout; the server still answers."""
        with (
            fault_upstream() as upstream,
            serve(
                upstream.url, tmp_path / "ledger.sqlite3",
                client_header_timeout=str(BOUND), client_body_timeout=str(BOUND),
            ) as served,
        ):  # fmt: skip
            kinds = [b"", PARTIAL_HEAD, HEAD_THEN_PART_OF_BODY, HALF_A_FORM]
            sockets = [connect(served.port, kinds[i % 4]) for i in range(500)]
            took, got = closed_within(sockets, BOUND + SLACK)
            assert took >= BOUND * 0.9
            for i, data in enumerate(got):
                assert data.startswith(b"HTTP/1.1 408 "), (i % 4, data[:80])
            raw = got[2]  # a chunked body: the JSON between its first and last brace
            body = json.loads(raw[raw.index(b"{") : raw.rindex(b"}") + 1])
            assert body["error"]["code"] == "request_timeout"
            assert "FLEXROUTE_CLIENT_BODY_TIMEOUT" in body["error"]["message"]
            assert served.healthy()
            assert upstream.seen == []  # nothing half-sent went to the provider

    def test_a_prompt_client_keeps_its_connection_across_requests(self, tmp_path: Path) -> None:
        """The header clock runs per request: a kept-alive connection idle for longer than the
        header bound (but within keep-alive) serves its next request."""
        with (
            fault_upstream() as upstream,
            serve(upstream.url, tmp_path / "ledger.sqlite3", client_header_timeout="1") as served,
        ):
            sock = connect(served.port, b"")
            with sock:
                for _ in range(2):
                    sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
                    head = read_answer(sock)
                    assert head.startswith(b"HTTP/1.1 200 "), head[:80]
                    time.sleep(1.5)
            assert len(upstream.seen) == 2


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def bounded_server(protocol: type[asyncio.Protocol] = BoundedH11) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = BoundedConfig(
        _echo, client_header_timeout=BOUND, http=protocol, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class TestTheH11ProtocolIsBoundedToo:
    def test_silent_and_half_sent_heads_are_closed(self) -> None:
        """With uvicorn's h11 protocol (no httptools) a slowloris is closed at the bound too."""
        with bounded_server() as port:
            sockets = [connect(port, b"" if i % 2 else PARTIAL_HEAD) for i in range(50)]
            took, got = closed_within(sockets, BOUND + SLACK)
            assert took >= BOUND * 0.9
            assert all(data.startswith(b"HTTP/1.1 408 ") for data in got)

    def test_a_whole_request_is_answered(self) -> None:
        """A request sent at once is served, its connection kept for the next one."""
        with bounded_server() as port, connect(port, b"") as sock:
            for _ in range(2):
                sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                assert read_answer(sock).startswith(b"HTTP/1.1 200 ")
                time.sleep(BOUND * 1.25)


class TestAHugeHead:
    def test_a_head_that_never_ends_is_cut_off_before_it_is_read(self) -> None:
        """Header lines sent as fast as the socket takes them: the server stops reading after
        ``MAX_HEAD_BYTES`` and closes (with a 431 where the client still reads it), instead of
        holding them all (uvicorn's httptools took 187 MiB)."""
        with bounded_server(PROTOCOL) as port, connect(port, PARTIAL_HEAD) as sock:
            line = b"x-big: " + b"a" * 1000 + b"\r\n"
            sent, began = 0, time.monotonic()
            try:
                while sent < 64 * 1024 * 1024:
                    sock.sendall(line * 64)
                    sent += len(line) * 64
            except OSError:
                pass  # closed by the server: what the test wants
            assert sent < 8 * 1024 * 1024, f"the server took {sent} bytes of head"
            assert time.monotonic() - began < SLACK
            try:
                answer = sock.recv(65536)
            except ConnectionResetError:
                answer = b""  # the unread head turned the close into a reset
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:80]

    @pytest.mark.parametrize("protocol", [PROTOCOL, BoundedH11], ids=["default", "h11"])
    def test_a_big_body_sent_with_its_head_is_not_taken_for_head(
        self, protocol: type[asyncio.Protocol]
    ) -> None:
        """A small head and a 1 MiB body in one write is a request like any other."""
        with bounded_server(protocol) as port:
            body = b"x" * (1024 * 1024)
            head = f"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
            with connect(port, head.encode() + body) as sock:
                assert read_answer(sock).startswith(b"HTTP/1.1 200 ")
