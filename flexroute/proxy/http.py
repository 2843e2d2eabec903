"""Reading requests from and writing replies to ASGI, with size limits."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from typing import BinaryIO

import anyio
import anyio.to_thread

from flexroute.asgi import Receive, Scope, Send
from flexroute.engine import Reply
from flexroute.errors import RequestRejected, UpstreamError

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_HEADER_BYTES = 32 * 1024
SLICE = 64 * 1024  # bytes of a whole body per send: uvicorn's write buffer high-water mark
SPILL_BYTES = 4 * 1024 * 1024  # a bigger whole body is sent from a temporary file
BODY_TIMEOUT = 60.0  # seconds; the proxy passes FLEXROUTE_CLIENT_BODY_TIMEOUT


class ClientGone(Exception):  # noqa: N818 -- a condition, not a failure
    """The client disconnected before its request body arrived."""


async def read_body(
    receive: Receive, limit: int = MAX_BODY_BYTES, within: float = BODY_TIMEOUT
) -> bytes:
    """The request's body: 413 over ``limit`` bytes; 408 (and the connection closed) when it
    has not all arrived ``within`` seconds after its headers, so a client sending it a byte
    at a time cannot hold a connection (``FLEXROUTE_CLIENT_BODY_TIMEOUT``)."""
    try:
        async with asyncio.timeout(within):  # anyio's fail_after: 8 µs more on every request
            return await _read(receive, limit)
    except TimeoutError:
        raise RequestRejected(
            408,
            f"The request body did not arrive within {within:g} s of its headers; "
            "send it at once (FLEXROUTE_CLIENT_BODY_TIMEOUT).",
            code="request_timeout",
            headers={"connection": "close"},
        ) from None


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestRejected(
                413,
                f"The request body is larger than {limit} bytes; send a smaller request.",
                code="request_too_large",
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def request_headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]


def checked_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The request's end-to-end headers: 431 over ``MAX_HEADER_BYTES`` in total, 400 for a
    CR, LF or NUL in a value, and headers the ``Connection`` header names dropped (RFC 9110
    §7.6.1; the engine drops the standard hop-by-hop ones)."""
    if sum(len(k) + len(v) + 4 for k, v in headers) > MAX_HEADER_BYTES:
        raise RequestRejected(
            431,
            f"The request headers are larger than {MAX_HEADER_BYTES} bytes in total.",
            code="headers_too_large",
        )
    for name, value in headers:
        if "\r" in value or "\n" in value or "\0" in value:
            raise RequestRejected(
                400,
                f"The value of request header {name!r} contains a line break or NUL.",
                code="invalid_header",
                param=name,
            )
    named = {
        token.strip().lower() for k, v in headers if k == "connection" for token in v.split(",")
    }
    return [(k, v) for k, v in headers if k not in named] if named else headers


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def _present() -> bool:
    return True


async def send_reply(send: Send, reply: Reply, present: Callable[[], bool] = _present) -> None:
    """Send ``reply``; a whole answer's record is written just before its last slice goes out,
    ``ok`` if ``present()`` says the client is still there, else ``client_closed``."""
    await send(
        {"type": "http.response.start", "status": reply.status, "headers": _encode(reply.headers)}
    )
    if reply.stream is None:
        await _send_body(send, reply, present)
        return
    stream = reply.stream
    try:
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except UpstreamError:
        # The provider's body broke off: leave the response incomplete, so the server closes
        # the connection and the client sees a cut transfer, never a clean truncated success.
        return
    finally:
        await stream.aclose()
    await send({"type": "http.response.body", "body": b""})


async def deliver(reply: Reply, received: bool) -> None:
    """``reply.delivered(received)``; no-op once delivered. The client present, its watcher
    has stopped (``CancelOnDisconnect.still_there``) and nothing cancels the write; one that
    has left may have cancelled the request already, so its write runs in a task of its own
    to the end: the record is written either way."""
    if reply.deliver is None:
        return
    if received:
        await reply.delivered(True)
        return
    task = asyncio.ensure_future(reply.delivered(received))
    _DELIVERING.add(task)  # a strong reference while it runs
    task.add_done_callback(_DELIVERING.discard)
    await asyncio.shield(task)


_DELIVERING: set[asyncio.Task[None]] = set()


async def _send_body(send: Send, reply: Reply, present: Callable[[], bool]) -> None:
    """A whole body, with backpressure: sent in slices, each once the client has taken the one
    before (uvicorn's ``send`` waits while the socket's buffer is full), so a client that stops
    reading holds about one slice in flexroute. A body over ``SPILL_BYTES`` first goes to an
    unnamed temporary file and its memory is released: twenty clients that never read 64 MiB
    answers hold 64 KiB each, not 64 MiB (issue 11 item 7). With no room on disk it is sent
    from memory. Its record, if it has one to write, is written before the last slice."""
    body, reply.body = reply.body, b""  # this function holds the body's last reference
    size = len(body)
    if size <= SLICE:
        if reply.deliver is not None:
            await deliver(reply, present())
        await send({"type": "http.response.body", "body": body})
        return
    spilled = await _spill(body) if size > SPILL_BYTES else None
    if spilled is None:
        for at in range(0, size, SLICE):
            await _slice(send, body[at : at + SLICE], at + SLICE >= size, reply, present)
    else:
        del body
        with spilled:
            sent = 0
            while piece := await anyio.to_thread.run_sync(spilled.read, SLICE):
                sent += len(piece)
                await _slice(send, piece, sent >= size, reply, present)
    await send({"type": "http.response.body", "body": b""})


async def _slice(
    send: Send, piece: bytes, last: bool, reply: Reply, present: Callable[[], bool]
) -> None:
    if last and reply.deliver is not None:
        await deliver(reply, present())
    await send({"type": "http.response.body", "body": piece, "more_body": True})


async def _spill(body: bytes) -> BinaryIO | None:
    def write() -> BinaryIO:
        file = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by the caller, once sent
        try:
            file.write(body)
            file.seek(0)
        except BaseException:
            file.close()
            raise
        return file

    try:
        return await anyio.to_thread.run_sync(write)
    except OSError:  # a full or read-only temporary directory
        return None


async def send_json(
    send: Send, status: int, body: bytes, extra: list[tuple[str, str]] | None = None
) -> None:
    headers = [("content-type", "application/json"), *(extra or [])]
    await send_reply(send, Reply(status, headers, body))
