"""One HTTP exchange on raw ASGI: read the body, notice the client leaving, send, or drop.

The handler runs beside a watcher task that waits on ``receive()``: when the client closes the
connection before the response is finished (even while the handler sleeps in a queue delay)
the watcher records ``closed_early`` and ``ended_at`` at that moment and cancels the handler.
A handler raises ``AbruptClose`` to make the server drop the connection mid-response (the
response is chunked, so the client sees an incomplete body, never a clean end).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from flexroute.emulator.log import AttemptRecord

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AbruptClose(Exception):  # noqa: N818 -- a signal to the server, not an error
    """Raised out of the ASGI app so the server closes the connection without finishing."""


class _HideAbruptClose(logging.Filter):
    """Uvicorn logs any exception out of an app; a deliberate drop is not worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, AbruptClose)


def quiet_abrupt_closes() -> None:
    """Install the filter once on uvicorn's error logger (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideAbruptClose) for f in logger.filters):
        logger.addFilter(_HideAbruptClose())


class Exchange:
    """Sends one response and keeps the attempt record's timings."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        record: AttemptRecord,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._receive = receive
        self._send = send
        self.record = record
        self.clock = clock
        self.started = False
        self._finishing = False

    async def run(self, handler: Callable[[Exchange, bytes], Awaitable[None]]) -> None:
        body = await self._read_body()
        if body is None:
            self._closed_early()
            return
        self.record.raw_body = body.decode("utf-8", errors="replace")
        abrupt = False
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch, group.cancel_scope)
            try:
                await handler(self, body)
            except AbruptClose:
                abrupt = True
            except OSError:  # the transport failed under a send: the client left
                self._closed_early()
            group.cancel_scope.cancel()
        if abrupt:
            self.record.ended_at = self.clock()
            raise AbruptClose

    async def _read_body(self) -> bytes | None:
        chunks: list[bytes] = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _watch(self, scope: anyio.CancelScope) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        if not self._finishing:
            self._closed_early()
            scope.cancel()

    def _closed_early(self) -> None:
        if self.record.ended_at is None:
            self.record.closed_early = True
            self.record.ended_at = self.clock()

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.started = True
        self.record.status = status
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def write(self, data: bytes, *, output: bool = False) -> None:
        if output and self.record.first_output_at is None:
            self.record.first_output_at = self.clock()
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, data: bytes = b"", *, output: bool = False) -> None:
        if output and self.record.first_output_at is None:
            self.record.first_output_at = self.clock()
        self._finishing = True
        await self._send({"type": "http.response.body", "body": data, "more_body": False})
        self.record.ended_at = self.clock()

    async def respond(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, output: bool = False
    ) -> None:
        """A whole non-streaming response."""
        await self.start(status, [*headers, ("content-length", str(len(body)))])
        await self.finish(body, output=output)
