"""Bounds on slow clients: request headers within ``FLEXROUTE_CLIENT_HEADER_TIMEOUT``, and
request heads of at most ``MAX_HEAD_BYTES``.

uvicorn bounds the idle time between two requests of a kept-alive connection
(``timeout_keep_alive``) and the size of an unfinished head (``h11_max_incomplete_event_size``,
h11 only), but not the time a request's head takes to arrive: a client that opens a connection
and sends its headers a byte every few seconds (slowloris) holds it for ever. The protocol
classes here arm one timer per request, from the connection's opening or the request's first
byte to the end of its headers; when it fires the client gets a 408 and the connection is
closed. A head that grows past ``MAX_HEAD_BYTES`` gets a 431 and is closed before the rest of
it is read (h11 has that bound already; httptools, uvicorn's default, has none). The body's
own bound (``FLEXROUTE_CLIENT_BODY_TIMEOUT``) is the ASGI app's, in
:func:`flexroute.proxy.http.read_body`.

:func:`server_config` builds the ``uvicorn.Config`` that ``serve`` uses, with or without
workers: the bound travels on the config, so worker processes have it too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from flexroute.config import Settings

__all__ = ["BoundedH11", "server_config"]

DEFAULT_HEADER_TIMEOUT = 20.0
# A request head larger than this is refused before it is all read (the app refuses heads over
# 32 KiB with a 431 in the endpoint's dialect; this bounds what reaches it). uvicorn's httptools
# protocol has no bound of its own: 187 MiB of headers went into memory.
MAX_HEAD_BYTES = 64 * 1024


def _refusal(status: bytes, code: str, message: str) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "code": code, "param": None}
    body = json.dumps({"error": error}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


_408 = _refusal(
    b"408 Request Timeout",
    "request_timeout",
    "The request headers did not arrive in time; send them at once.",
)
_431 = _refusal(
    b"431 Request Header Fields Too Large",
    "headers_too_large",
    f"The request head is larger than {MAX_HEAD_BYTES} bytes.",
)


class _HeaderTimer:
    """One connection's header timer: armed while a request's head is awaited."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: uvicorn.Config) -> None:
        self._loop = loop
        self._seconds: float = getattr(config, "client_header_timeout", DEFAULT_HEADER_TIMEOUT)
        self._handle: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._head_bytes = 0  # of the awaited head, counted while it is awaited

    def arm(self, transport: asyncio.Transport) -> None:
        """Start the clock, unless it already runs for this request."""
        if self._handle is None:
            self._transport = transport
            self._handle = self._loop.call_later(self._seconds, self._expire)

    @property
    def armed(self) -> bool:
        return self._handle is not None

    def disarm(self) -> None:
        self._head_bytes = 0
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def count(self, size: int) -> None:
        """``size`` more bytes of the awaited head: over ``MAX_HEAD_BYTES``, a 431 and close."""
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(_431)

    def _expire(self) -> None:
        self._refuse(_408)

    def _refuse(self, answer: bytes) -> None:
        self.disarm()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(answer)
            transport.close()


class _HeadBound(asyncio.Protocol):
    """The header bound, mixed in before one of uvicorn's HTTP protocols."""

    config: uvicorn.Config
    _head_timer: _HeaderTimer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer = _HeaderTimer(asyncio.get_running_loop(), self.config)
        super().connection_made(transport)
        self._head_timer.arm(cast(asyncio.Transport, transport))  # uvloop's: the same methods

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer.disarm()
        super().connection_lost(exc)


class BoundedH11(_HeadBound, H11Protocol):
    """uvicorn's h11 protocol with the header bound."""

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # these bytes begin the next request
            self._head_timer.arm(self.transport)
        super().data_received(data)
        if self.cycle is not cycle:  # a new request's head was parsed
            self._head_timer.disarm()


def _bounded_httptools() -> type[asyncio.Protocol] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is optional in uvicorn: h11 serves then
        return None

    class BoundedHttpTools(_HeadBound, HttpToolsProtocol):
        """uvicorn's httptools protocol (its default when installed) with the header bound."""

        def data_received(self, data: bytes) -> None:
            awaiting = self._head_timer.armed
            super().data_received(data)
            if awaiting and self._head_timer.armed:  # all of it was head, and it goes on
                self._head_timer.count(len(data))

        def on_message_begin(self) -> None:
            self._head_timer.arm(self.transport)
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._head_timer.disarm()
            super().on_headers_complete()

    BoundedHttpTools.__qualname__ = "BoundedHttpTools"
    return BoundedHttpTools


BoundedHttpTools = _bounded_httptools()
# What uvicorn's "auto" would pick, bounded.
PROTOCOL: type[asyncio.Protocol] = BoundedHttpTools or BoundedH11


class BoundedConfig(uvicorn.Config):
    """``uvicorn.Config`` carrying the header bound to the protocol (and to worker processes,
    which receive the config pickled)."""

    def __init__(self, app: Any, *, client_header_timeout: float, **kwargs: Any) -> None:
        kwargs.setdefault("http", PROTOCOL)
        kwargs.setdefault("h11_max_incomplete_event_size", MAX_HEAD_BYTES)  # h11's own bound
        super().__init__(app, **kwargs)
        self.client_header_timeout = client_header_timeout


def server_config(app: Any, settings: Settings, **kwargs: Any) -> uvicorn.Config:
    """The config ``serve`` runs uvicorn with: slow clients bounded, drain as configured."""
    return BoundedConfig(
        app,
        client_header_timeout=settings.client_header_timeout,
        **kwargs,
    )
