"""Server-sent events: split a byte stream into events, keeping each event's raw bytes.

The relay forwards ``SSEEvent.raw`` untouched unless a dialect rewrites the event, so the
client sees the provider's bytes. Line endings are normalised to ``\\n`` (the SSE spec allows
``\\r\\n`` and ``\\r``; every provider flexroute speaks uses ``\\n``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    raw: bytes  # the whole event including its terminating blank line
    event: str | None  # the ``event:`` field, if any
    data: str  # the ``data:`` lines joined with "\n"; "" for comment-only events


class SSEDecoder:
    """Incremental decoder: ``feed(chunk)`` yields the events completed by ``chunk``."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            raw = buffer[start : end + 2]
            start = end + 2
            yield parse_event(raw)
        self._buffer = buffer[start:]

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (what a broken stream left behind)."""
        return self._buffer


def parse_event(raw: bytes) -> SSEEvent:
    event: str | None = None
    data: list[str] = []
    for line in raw.decode("utf-8", errors="replace").split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    return SSEEvent(raw=raw, event=event, data="\n".join(data))


def encode_event(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def encode_comment(text: str) -> bytes:
    return f": {text}\n\n".encode()
