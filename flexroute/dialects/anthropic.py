"""Anthropic ``POST /v1/messages``: always passthrough (Claude is proxy-only), cost recorded.

``start_within`` is accepted and removed; ``service_tier`` (``auto``, ``standard_only``) passes
unchanged and the tier served is read from ``usage.service_tier``. Anthropic reports input in
three separate counts (plain, cache writes, cache reads); :class:`~flexroute.usage.Usage`
wants their sum as ``input_tokens``. Streams: ``message_start`` carries the first usage,
``message_delta`` the cumulative counts, ``message_stop`` ends it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from flexroute.dialects.base import (
    MISSING,
    Dialect,
    ErrorKind,
    JSONDict,
    Observer,
    RequestFacts,
    ResponseFacts,
    answer_object,
    check_event_data,
    dumps,
    event_object,
    int_field,
    objects,
    usage_object,
)
from flexroute.dialects.sse import SSEEvent, encode_event
from flexroute.errors import RequestRejected, UpstreamMalformed
from flexroute.usage import Tier, Usage

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                402: "billing_error", 403: "permission_error", 404: "not_found_error",
                413: "request_too_large", 429: "rate_limit_error", 502: "api_error",
                504: "timeout_error"}  # fmt: skip


class AnthropicDialect(Dialect):
    provider = "anthropic"
    name = "anthropic-messages"
    wire_tiers: Mapping[Tier, str] = MappingProxyType(
        {Tier.STANDARD: "standard", Tier.FLEX: "flex", Tier.PRIORITY: "priority"}
    )

    def read(self, body: JSONDict, path: str) -> RequestFacts:
        model = body.get("model")
        tier = body.get("service_tier")
        return RequestFacts(
            model=model if isinstance(model, str) else None,
            tier=tier if isinstance(tier, str) else None,
            stream=body.get("stream") is True,
            start_within=body.get("start_within", MISSING),
            wants_usage=True,
        )

    def prepare(self, body: JSONDict, *, tier: Tier | None, stream: bool, ask_usage: bool) -> bytes:
        return dumps({k: v for k, v in body.items() if k != "start_within"})

    def read_response(self, body: bytes, headers: Mapping[str, str]) -> ResponseFacts:
        obj = answer_object(body, headers)
        objects(obj.get("content"), "content")
        usage = obj.get("usage")
        return ResponseFacts(anthropic_usage(usage), self._tier(usage))

    def _tier(self, usage: object) -> Tier | None:
        return (
            self.tier_from_wire(usage.get("service_tier")) if isinstance(usage, Mapping) else None
        )

    def observer(
        self, *, wants_usage: bool, assemble: bool, headers: Mapping[str, str]
    ) -> Observer:
        return AnthropicObserver(self)

    def classify_error(self, status: int, body: bytes) -> ErrorKind:
        return ErrorKind.CAPACITY if status in (429, 529) else ErrorKind.OTHER

    def error_body(self, error: RequestRejected) -> bytes:
        payload: dict[str, Any] = {
            "type": _ERROR_TYPES.get(error.status, "invalid_request_error"),
            "message": error.message,
            "code": error.code,
        }
        payload.update(error.extra)
        return dumps({"type": "error", "error": payload})

    def stream_error(self, message: str, code: str) -> bytes:
        error = {"type": "api_error", "message": message, "code": code}
        return encode_event(dumps({"type": "error", "error": error}).decode(), event="error")


def anthropic_usage(usage: object, previous: Usage | None = None) -> Usage | None:
    """Usage from an Anthropic ``usage`` object; counts absent here keep ``previous`` values."""
    usage = usage_object(usage, "usage")
    if usage is None:
        return previous
    base = previous or Usage()

    def count(key: str, old: int) -> int:
        return int_field(usage, key) if key in usage and usage[key] is not None else old

    plain = count("input_tokens", base.uncached_input_tokens)
    read = count("cache_read_input_tokens", base.cached_input_tokens)
    written = count(
        "cache_creation_input_tokens", base.cache_write_tokens + base.cache_write_1h_tokens
    )
    detail = usage.get("cache_creation")
    if isinstance(detail, Mapping):
        one_hour = min(written, int_field(detail, "ephemeral_1h_input_tokens"))
    else:
        one_hour = min(written, base.cache_write_1h_tokens)
    return Usage(
        input_tokens=plain + read + written,
        output_tokens=count("output_tokens", base.output_tokens),
        cached_input_tokens=read,
        cache_write_tokens=written - one_hour,
        cache_write_1h_tokens=one_hour,
    )


class AnthropicObserver(Observer):
    """Anthropic streams are only ever relayed; the observer reads usage and tier."""

    def __init__(self, dialect: AnthropicDialect) -> None:
        self._dialect = dialect

    def is_terminal(self, event: SSEEvent) -> bool:
        return event.event == "message_stop"

    def observe(self, event: SSEEvent) -> bytes | None:
        self.started = True
        kind = event.event
        if kind == "message_start":
            message = (event_object(event) or {}).get("message")
            if not isinstance(message, Mapping):
                raise UpstreamMalformed("message_start has no message object")
            objects(message.get("content"), "message.content")
            usage = message.get("usage")
            self.usage = anthropic_usage(usage)
            self.tier_served = self._dialect._tier(usage) or self.tier_served
        elif kind == "message_delta":
            usage = (event_object(event) or {}).get("usage")
            self.usage = anthropic_usage(usage, self.usage)
            self.tier_served = self._dialect._tier(usage) or self.tier_served
        elif kind == "error":
            error = (event_object(event) or {}).get("error")
            self.failure = error if isinstance(error, dict) else {}
        else:
            check_event_data(event)
            self.finished = self.finished or kind == "message_stop"
        return event.raw
