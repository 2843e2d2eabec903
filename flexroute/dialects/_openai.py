"""What OpenAI's chat-completions and responses formats share: tiers, errors, usage."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from flexroute.dialects.base import (
    MISSING,
    Dialect,
    ErrorKind,
    JSONDict,
    RequestFacts,
    dumps,
    int_field,
    loads_object,
    usage_object,
)
from flexroute.errors import RequestRejected
from flexroute.usage import Tier, Usage

# 429 codes that are not about capacity: waiting for flex would not help.
_NOT_CAPACITY_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
# Codes that mean "no flex capacity now", on any status, in a body or inside a 200 stream:
# ``resource_unavailable`` (the 429 OpenAI documents for flex) and ``flex_unavailable`` (the
# ``error`` event / ``response.failed`` code OpenAI's Codex client handles as such).
_CAPACITY_CODES = frozenset({"resource_unavailable", "flex_unavailable"})


class OpenAIDialect(Dialect):
    provider = "openai"
    wire_tiers: Mapping[Tier, str] = MappingProxyType(
        {Tier.STANDARD: "default", Tier.FLEX: "flex", Tier.PRIORITY: "priority"}
    )

    def tier_from_wire(self, value: object) -> Tier | None:
        # OpenAI renamed priority "Fast mode" (2026) and reports either name.
        return Tier.PRIORITY if value == "fast" else super().tier_from_wire(value)

    def read(self, body: JSONDict, path: str) -> RequestFacts:
        model = body.get("model")
        tier = body.get("service_tier")
        stream = body.get("stream") is True
        return RequestFacts(
            model=model if isinstance(model, str) else None,
            tier=tier if isinstance(tier, str) else None,
            stream=stream,
            start_within=body.get("start_within", MISSING),
            wants_usage=stream and self._asks_usage(body),
        )

    def _asks_usage(self, body: JSONDict) -> bool:
        return True

    def prepare(self, body: JSONDict, *, tier: Tier | None, stream: bool, ask_usage: bool) -> bytes:
        out = dict(body)
        out.pop("start_within", None)
        if tier is not None:
            out["service_tier"] = self.wire_tiers[tier]
        if stream or "stream" in out:
            out["stream"] = stream
        if stream and ask_usage:
            self._ask_usage(out)
        return dumps(out)

    def _ask_usage(self, body: JSONDict) -> None:
        """Make a streaming request report usage (chat needs ``stream_options``)."""

    def classify_error(self, status: int, body: bytes) -> ErrorKind:
        """By status and ``error.code``, never by message. A flex refusal inside a 200 stream
        is classified as ``classify_error(200, {"error": <the event's error object>})``."""
        error = (loads_object(body) or {}).get("error")
        error = error if isinstance(error, Mapping) else {}
        code = error.get("code")
        if code in _CAPACITY_CODES:
            return ErrorKind.CAPACITY
        if status == 400 and code == "unsupported_value" and error.get("param") == "stream":
            # "Your organization must be verified to stream this model" (or, from older
            # models, "'stream' does not support true with this model"): ask unstreamed.
            return ErrorKind.STREAM_REFUSED
        if status == 503 or (status == 429 and code not in _NOT_CAPACITY_CODES):
            return ErrorKind.CAPACITY
        return ErrorKind.OTHER

    def error_body(self, error: RequestRejected) -> bytes:
        payload: dict[str, Any] = {
            "message": error.message,
            "type": error.error_type,
            "param": error.param,
            "code": error.code,
        }
        payload.update(error.extra)
        return dumps({"error": payload})

    def _error_payload(self, message: str, code: str) -> JSONDict:
        return {"message": message, "type": "server_error", "param": None, "code": code}


def chat_usage(usage: object) -> Usage | None:
    """Usage from a chat-completions ``usage`` object (prompt tokens include cached ones)."""
    usage = usage_object(usage, "usage")
    if usage is None:
        return None
    return _usage(
        int_field(usage, "prompt_tokens"),
        int_field(usage, "completion_tokens"),
        usage.get("prompt_tokens_details"),
    )


def responses_usage(usage: object) -> Usage | None:
    """Usage from a Responses API ``usage`` object."""
    usage = usage_object(usage, "usage")
    if usage is None:
        return None
    return _usage(
        int_field(usage, "input_tokens"),
        int_field(usage, "output_tokens"),
        usage.get("input_tokens_details"),
    )


def _usage(prompt: int, output: int, details: object) -> Usage:
    """Cache reads and writes from ``prompt_tokens_details`` / ``input_tokens_details``.

    GPT-5.6 and later bill cache writes: ``cache_write_tokens`` counts them (part of the prompt)
    and ``cache_write_tokens_details`` splits them into ``ttl_30m_tokens`` and
    ``ttl_12h_tokens``. Writes without that split, or beyond it, have the default 30-minute
    lifetime (the only one chat completions accepts)."""
    details = details if isinstance(details, Mapping) else None
    cached = min(prompt, int_field(details, "cached_tokens"))
    written = int_field(details, "cache_write_tokens")
    split = details.get("cache_write_tokens_details") if details else None
    split = split if isinstance(split, Mapping) else None
    twelve_hours = int_field(split, "ttl_12h_tokens")
    thirty_minutes = max(int_field(split, "ttl_30m_tokens"), written - twelve_hours)
    room = prompt - cached
    twelve_hours = min(twelve_hours, room)
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        cached_input_tokens=cached,
        cache_write_tokens=min(thirty_minutes, room - twelve_hours),
        cache_write_12h_tokens=twelve_hours,
    )
