"""What every wire format module provides, and the plain data passed between them and the app.

A wire module reads a request (``Call``), renders a ``Reply`` as a non-streaming body or as a
``Script`` of SSE events, and shapes errors in its provider's format. It never waits: the app
owns the clock, the queue delays and the connection.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from flexroute.emulator.capacity import Tier
from flexroute.emulator.content import Reply

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"


class Problem(enum.Enum):
    """Why the emulator answers with an error."""

    CAPACITY = "capacity"  # flex refused / tier overloaded (429, 503, 529)
    SCRIPTED = "scripted"  # ``status=CODE`` control
    INVALID = "invalid"  # malformed body or control header
    DEADLINE = "deadline"  # Gemini ``X-Server-Timeout`` expired while queueing


class BadRequestError(Exception):
    """The request cannot be read; answered with 400 in the dialect's format."""


@dataclass(frozen=True, slots=True)
class Call:
    """The facts the emulator needs from a request."""

    model: str
    tier_requested: str | None  # the raw wire value, for the log
    tier: Tier
    stream: bool
    include_usage: bool = False
    timeout: float | None = None  # seconds from arrival (Gemini ``X-Server-Timeout``)


@dataclass(frozen=True, slots=True)
class Meta:
    """Per-response facts shared by a body and every event of a stream."""

    seq: int
    model: str
    created: int
    tier: Tier  # the tier served
    include_usage: bool = False
    window_requests: int = 1  # requests seen this minute, for rate-limit headers
    window_tokens: int = 0
    reasoning: bool = False  # a reasoning phase precedes the output (``reasoning_time``)


@dataclass(frozen=True, slots=True)
class Script:
    """A stream: ``preamble`` goes out at once, then the queue, then one step per piece.

    An empty preamble means the response headers wait for the first step too (Gemini sends
    nothing before its first chunk). ``thinking`` goes out after the queue when a reasoning
    phase follows (the Responses API's ``reasoning`` output item), before its silence.
    """

    preamble: tuple[bytes, ...]
    steps: tuple[bytes, ...]
    closing: tuple[bytes, ...]
    thinking: tuple[bytes, ...] = ()


class Wire(Protocol):
    refuse_status: int  # how this provider refuses flex for lack of capacity
    overload_status: int  # how it says the whole service is overloaded

    def read(
        self, body: Mapping[str, Any], params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Call: ...

    def tier_name(self, tier: Tier) -> str:
        """The tier in this provider's own words, as it reports the tier served."""
        ...

    def headers(self, meta: Meta, *, elapsed_ms: int, error: bool) -> list[tuple[str, str]]: ...

    def body(self, reply: Reply, meta: Meta) -> bytes: ...

    def script(self, reply: Reply, meta: Meta) -> Script: ...

    def error(self, status: int, problem: Problem, message: str) -> bytes: ...


def sse(data: bytes, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + data + b"\n\n"
