"""Bounds on slow clients: request headers within ``FLEXROUTE_CLIENT_HEADER_TIMEOUT``.

uvicorn bounds the idle time between two requests of a kept-alive connection
(``timeout_keep_alive``) and the size of an unfinished head (``h11_max_incomplete_event_size``,
h11 only), but not the time a request's head takes to arrive: a client that opens a connection
and sends its headers a byte every few seconds (slowloris) holds it for ever. The protocol
classes here arm one timer per request, from the connection's opening or the request's first
byte to the end of its headers; when it fires the client gets a 408 and the connection is
closed. The body's own bound (``FLEXROUTE_CLIENT_BODY_TIMEOUT``) is the ASGI app's, in
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
_TIMED_OUT = json.dumps(
    {
        "error": {
            "message": "The request headers did not arrive in time; send them at once.",
            "type": "invalid_request_error",
            "code": "request_timeout",
            "param": None,
        }
    }
).encode()
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMED_OUT)).encode() + b"\r\n\r\n" + _TIMED_OUT
)


class _HeaderTimer:
    """One connection's header timer: armed while a request's head is awaited."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: uvicorn.Config) -> None:
        self._loop = loop
        self._seconds: float = getattr(config, "client_header_timeout", DEFAULT_HEADER_TIMEOUT)
        self._handle: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def arm(self, transport: asyncio.Transport) -> None:
        """Start the clock, unless it already runs for this request."""
        if self._handle is None:
            self._transport = transport
            self._handle = self._loop.call_later(self._seconds, self._expire)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expire(self) -> None:
        self._handle = None
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(_408)
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
        super().__init__(app, **kwargs)
        self.client_header_timeout = client_header_timeout


def server_config(app: Any, settings: Settings, **kwargs: Any) -> uvicorn.Config:
    """The config ``serve`` runs uvicorn with: slow clients bounded, drain as configured."""
    return BoundedConfig(
        app,
        client_header_timeout=settings.client_header_timeout,
        **kwargs,
    )
