"""What every wire format must tell the engine, and nothing about HTTP plumbing.

A :class:`Dialect` reads request facts, rewrites a request body for a tier, reads usage and the
tier served, classifies provider errors and shapes flexroute's own errors. An
:class:`Observer` watches one upstream attempt's event stream: it says when the attempt has
*started* (first output), collects usage and tier, rewrites events for the client and, for
non-streaming clients, assembles the provider's normal JSON body from the stream.
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from flexroute.dialects.sse import SSEEvent
from flexroute.errors import RequestRejected
from flexroute.usage import Tier, Usage

MISSING: Final = object()
# flexroute's own request field (Gemini clients may write it camelCase): never sent upstream.
START_WITHIN_KEYS: Final = ("start_within", "startWithin")
JSONDict = dict[str, Any]


class ErrorKind(enum.Enum):
    CAPACITY = "capacity"  # flex refused for lack of capacity: retry inside the budget
    STREAM_REFUSED = "stream-refused"  # streaming refused for this model: retry unstreamed
    OTHER = "other"  # anything else: goes back to the client as the provider sent it


@dataclass(frozen=True, slots=True)
class RequestFacts:
    model: str | None
    tier: str | None  # the requested tier exactly as written on the wire
    stream: bool
    start_within: object  # the body's raw value, or MISSING
    wants_usage: bool  # a streaming client asked for the usage chunk itself


@dataclass(frozen=True, slots=True)
class ResponseFacts:
    usage: Usage | None
    tier_served: Tier | None


class Observer(ABC):
    """State of one streamed upstream attempt."""

    started: bool = False
    finished: bool = False  # the terminal event was seen
    usage: Usage | None = None
    tier_served: Tier | None = None
    failure: JSONDict | None = None  # an in-band error event

    @abstractmethod
    def observe(self, event: SSEEvent) -> bytes | None:
        """Update state from ``event``; return the bytes the client should see, or None."""

    def is_terminal(self, event: SSEEvent) -> bool:
        """True for the event after which the stream is complete (held back until recorded)."""
        return False

    def assemble(self) -> bytes:
        """The provider's non-streaming JSON body built from the events observed."""
        raise NotImplementedError


class Dialect(ABC):
    """One provider wire format."""

    provider: str
    name: str
    wire_tiers: Mapping[Tier, str]  # flexroute tier -> the value this API uses
    sse_comments = True  # False where the SDK's SSE parser chokes on ": comment" lines

    @abstractmethod
    def read(self, body: JSONDict, path: str) -> RequestFacts: ...

    @abstractmethod
    def prepare(self, body: JSONDict, *, tier: Tier | None, stream: bool, ask_usage: bool) -> bytes:
        """Body for upstream: ``start_within`` removed, tier set (None: unchanged), stream set."""

    @abstractmethod
    def read_response(self, body: bytes, headers: Mapping[str, str]) -> ResponseFacts: ...

    @abstractmethod
    def observer(
        self, *, wants_usage: bool, assemble: bool, headers: Mapping[str, str]
    ) -> Observer: ...

    @abstractmethod
    def classify_error(self, status: int, body: bytes) -> ErrorKind: ...

    @abstractmethod
    def error_body(self, error: RequestRejected) -> bytes: ...

    @abstractmethod
    def stream_error(self, message: str, code: str) -> bytes:
        """An in-band SSE error event the client SDK raises on."""

    def tier_from_wire(self, value: object) -> Tier | None:
        for tier, wire in self.wire_tiers.items():
            if value == wire:
                return tier
        return None

    def upstream_target(self, path: str, query: str, stream: bool) -> str:
        """Path and query to call upstream (Gemini's streaming is a different method)."""
        return f"{path}?{query}" if query else path

    def attempt_headers(self, tier: Tier, remaining: float) -> list[tuple[str, str]]:
        """Extra request headers for an attempt with ``remaining`` seconds of budget."""
        return []

    def merge_attempt_header(self, name: str, ours: str, client: str | None) -> str:
        """The value sent for attempt header ``name`` when the client set one too (exactly one
        goes upstream): flexroute's, unless the dialect knows better."""
        return ours


class Pieces:
    """Text assembled from a stream's deltas, joined once when the body is serialised.

    ``d[k] = d[k] + delta`` copies the whole text at every delta (the dict keeps a reference,
    so CPython cannot extend in place): quadratic in the answer's length. Assemblers keep a
    ``Pieces`` where the text goes and :func:`dumps` writes it as a JSON string.
    """

    __slots__ = ("_parts",)

    def __init__(self, first: str = "") -> None:
        self._parts = [first]

    def add(self, text: str) -> None:
        self._parts.append(text)

    def __str__(self) -> str:
        text = "".join(self._parts)
        self._parts = [text]
        return text


def _serialise(obj: object) -> str:
    if isinstance(obj, Pieces):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: object) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_serialise)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): escaped, as the client wrote it
        return json.dumps(obj, separators=(",", ":"), default=_serialise).encode()


def loads_object(data: bytes | str) -> JSONDict | None:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def request_object(data: bytes) -> JSONDict:
    """A client's JSON request body, or a 400 saying what is wrong with it."""
    try:
        obj = json.loads(data)
    except RecursionError:
        raise RequestRejected(
            400,
            "The request body is JSON nested too deeply to read: send the provider's usual "
            "JSON request.",
            code="invalid_json",
        ) from None
    except ValueError as error:
        raise RequestRejected(
            400,
            f"The request body is not valid JSON ({error}): send the provider's usual JSON "
            "request.",
            code="invalid_json",
        ) from None
    if not isinstance(obj, dict):
        raise RequestRejected(
            400,
            f"The request body is a JSON {type(obj).__name__}, not an object: send the "
            "provider's usual JSON request.",
            code="invalid_json",
        )
    return obj


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        value = parsed.timestamp() - (time.time() if now is None else now)
    return max(0.0, value) if math.isfinite(value) else None


def int_field(obj: Mapping[str, Any] | None, *path: str) -> int:
    """A non-negative int at ``obj[path...]``, 0 when absent or malformed."""
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return 0
        value = value.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
