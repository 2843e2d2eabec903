"""What every wire format must tell the engine, and nothing about HTTP plumbing.

A :class:`Dialect` reads request facts, rewrites a request body for a tier, reads usage and the
tier served, classifies provider errors and shapes flexroute's own errors. An
:class:`Observer` watches one upstream attempt's event stream: it says when the attempt has
*started* (first output), collects usage and tier, rewrites events for the client and, for
non-streaming clients, assembles the provider's normal JSON body from the stream.

**Hostile content.** Whatever a provider sends is read defensively, in one way: the helpers
here (:func:`answer_object`, :func:`event_object`, :func:`objects`, :func:`int_field`) raise
:class:`~flexroute.errors.UpstreamMalformed` naming the field, its value and what was
expected, and any other error while a dialect reads an answer (``read_response``) or an event
(``Observer.observe``, ``Observer.assemble``) becomes one too: every subclass's methods are
wrapped by :func:`reads_upstream` when the class is defined. The engine then answers with its
own error, never with content it could not read (see :mod:`flexroute.failures`).
"""

from __future__ import annotations

import email.utils
import enum
import functools
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from flexroute import fastjson
from flexroute.dialects.sse import SSEEvent
from flexroute.errors import RequestRejected, UpstreamMalformed
from flexroute.usage import Tier, Usage

MISSING: Final = object()
# flexroute's own request field (Gemini clients may write it camelCase): never sent upstream.
START_WITHIN_KEYS: Final = ("start_within", "startWithin")
JSONDict = dict[str, Any]


# No request consumes a billion tokens: a count beyond is the provider's mistake, not a bill.
MAX_TOKENS: Final = 10**9
# What reading hostile content raises in Python (json, attribute and index access, Usage).
_CONTENT_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    RecursionError,
    ArithmeticError,
)
_F = TypeVar("_F", bound=Callable[..., Any])


def reads_upstream(method: _F) -> _F:
    """``method`` reads provider content: any error it hits is the provider's malformed answer."""

    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except _CONTENT_ERRORS as error:
            raise UpstreamMalformed(f"unreadable: {type(error).__name__}: {error}") from error

    return guarded  # type: ignore[return-value]  # same signature, by functools.wraps


def _guard(cls: type, names: tuple[str, ...]) -> None:
    for name in names:
        if name in cls.__dict__ and not getattr(cls.__dict__[name], "__isabstractmethod__", False):
            setattr(cls, name, reads_upstream(cls.__dict__[name]))


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard(cls, ("observe", "assemble"))

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
    operation = "chat"  # OpenTelemetry's gen_ai.operation.name for this API

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard(cls, ("read_response",))

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
    """Compact UTF-8 JSON (:mod:`flexroute.fastjson`); :class:`Pieces` as strings."""
    return fastjson.dumps(obj, default=_serialise)


def loads_object(data: bytes | str) -> JSONDict | None:
    try:
        obj = fastjson.loads(data)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def request_object(data: bytes) -> JSONDict:
    """A client's JSON request body, or a 400 saying what is wrong with it."""
    try:
        obj = fastjson.loads(data)
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
    """A token count at ``obj[path...]``: 0 when absent or null; a value that is not a whole
    number from 0 to :data:`MAX_TOKENS` is the provider's malformed answer."""
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return 0
        value = value.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TOKENS:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise UpstreamMalformed(
            f"{'.'.join(path)} is {shown}, not a token count (a whole number from 0 to "
            f"{MAX_TOKENS:,})"
        )
    return value


def usage_object(value: object, name: str) -> Mapping[str, Any] | None:
    """A usage block: None when absent or null, else it must be a JSON object."""
    if value is None or isinstance(value, Mapping):
        return value
    raise UpstreamMalformed(f"{name} is a JSON {_kind(value)}, not an object")


def objects(value: object, name: str) -> list[Mapping[str, Any]]:
    """A list of JSON objects (``choices``, ``candidates``, ``output``…); absent or null is
    empty; anything else is the provider's malformed answer."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return value
    raise UpstreamMalformed(f"{name} is a JSON {_kind(value)}, not a list of objects")


def answer_object(body: bytes, headers: Mapping[str, str]) -> JSONDict:
    """A provider's whole (non-streaming) 200 answer: a JSON object, labelled JSON if labelled
    at all. An HTML page from a load balancer, or an event stream, is no answer."""
    content_type = headers.get("content-type", "")
    obj = loads_object(body)
    if obj is None or (content_type and "json" not in content_type.lower()):
        label = content_type.split(";", 1)[0] or "no content type"
        what = "a JSON object" if obj is not None else "not a JSON object"
        raise UpstreamMalformed(f"the answer ({label}) is {what}")
    return obj


def event_object(event: SSEEvent) -> JSONDict | None:
    """An event's JSON object; None for an event with no data (a comment, a keep-alive).
    Data that is not a JSON object is the provider's malformed stream."""
    if not event.data:
        return None
    obj = loads_object(event.data)
    if obj is None:
        raise UpstreamMalformed(f"a {event.event or 'data'} event's data is not a JSON object")
    return obj


def check_event_data(event: SSEEvent) -> None:
    """For an event relayed without parsing it (the hot path): its data at least looks like
    one JSON object. The client's SDK parses it, so garbage must not reach it."""
    data = event.data
    if data and not (data[0] == "{" and data.rstrip()[-1:] == "}"):
        raise UpstreamMalformed(f"a {event.event or 'data'} event's data is not a JSON object")


def _kind(value: object) -> str:
    names = {str: "string", int: "number", float: "number", bool: "boolean", list: "array",
             dict: "object"}  # fmt: skip
    return names.get(type(value), type(value).__name__)
