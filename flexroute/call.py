"""A request as the engine sees it (:class:`Call`) and what goes back (:class:`Reply`)."""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from flexroute.clock import now
from flexroute.errors import RequestRejected
from flexroute.ledger.base import DEFAULT_ORG, LedgerRecord

__all__ = ["Call", "Gate", "Reply", "new_request_id"]


# Asked before a billable flex request goes out; a RequestRejected refuses it (SPEC §4: 402).
Gate = Callable[["Call"], Awaitable[RequestRejected | None]]


_ID_PREFIX = secrets.token_hex(6)  # unique per process; the counter makes ids unique within it
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """``frq_`` + 12 random hex digits per process + a per-process counter (cheap: no syscall)."""
    return f"frq_{_ID_PREFIX}{next(_ID_COUNTER):012x}"


@dataclass(slots=True)
class Call:
    """A client request as the engine sees it. Header names are lower-case."""

    method: str
    path: str  # percent-decoded: what routing reads
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_path: str = ""  # the path exactly as the client sent it (still encoded): what goes upstream
    received_at: float = field(default_factory=now)
    received_wall: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    request_id: str = field(default_factory=new_request_id)
    org_id: str = DEFAULT_ORG
    key_id: str | None = None
    default_start_within: float | None = None  # SDK wrapper: the client's budget, see _context

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def start_within_header(self) -> str | None:
        """The ``x-flex-start-within`` header; sent twice with different values is a 400."""
        values = {v.strip() for k, v in self.headers if k == "x-flex-start-within"}
        if len(values) > 1:
            shown = ", ".join(sorted(repr(v[:40]) for v in values))
            raise RequestRejected(
                400,
                f"x-flex-start-within was sent more than once with different values ({shown}): "
                "send it once.",
                code="conflicting_start_within",
                param="x-flex-start-within",
            )
        return values.pop() if values else None

    @property
    def upstream_path(self) -> str:
        """The path to send upstream: as the client encoded it, so an encoded ``%3F`` or
        ``%23`` stays part of the path and never becomes a query or a fragment."""
        return self.raw_path or self.path

    @property
    def is_sdk_retry(self) -> bool:
        """The openai and anthropic SDKs number their retries (``x-stainless-retry-count``)."""
        count = self.header("x-stainless-retry-count")
        return count is not None and count.strip().isdigit() and int(count) > 0


@dataclass(slots=True)
class Reply:
    """What goes back to the client: a whole body or a byte stream (``aclose`` it).

    A whole answer from a provider comes with its record not yet written (``pending``, the
    ``ok`` record its headers show) and a ``deliver`` hook: whoever hands the body over calls
    :meth:`delivered` just before the client can have its last byte."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None
    pending: LedgerRecord | None = None
    deliver: Callable[[bool], Awaitable[None]] | None = None

    async def delivered(self, received: bool) -> None:
        """Write the pending record, once: ``ok`` with its fee if the client received the
        answer, else ``client_closed`` without the fee (the provider's cost stays)."""
        deliver, self.deliver = self.deliver, None
        if deliver is not None:
            await deliver(received)
