"""What OpenAI's chat-completions and Responses formats share: tiers, headers, error bodies."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from flexroute.emulator.capacity import Tier
from flexroute.emulator.content import dumps
from flexroute.emulator.wire import BadRequestError, Call, Meta, Problem

REQUEST_LIMIT = 10_000
TOKEN_LIMIT = 30_000_000

_TIERS = {"flex": Tier.FLEX, "priority": Tier.PRIORITY}
_MESSAGES = {
    400: ("invalid_request_error", None, "The request was rejected by the emulator."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}
_CAPACITY_MESSAGE = (
    "Resource unavailable: flex processing capacity is temporarily exhausted. "
    "Please try again later or use the default service tier."
)


# What OpenAI answers a streaming request for a model an unverified organisation may not stream
# (o3, gpt-5 and later for some organisations), byte for byte but for the compact JSON.
_STREAM_REFUSAL_MESSAGE = (
    "Your organization must be verified to stream this model. Please go to: "
    "https://platform.openai.com/settings/organization/general and click on Verify "
    "Organization. If you just verified, it can take up to 15 minutes for access to propagate."
)
STREAM_REFUSAL_BODY = dumps(
    {
        "error": {
            "message": _STREAM_REFUSAL_MESSAGE,
            "type": "invalid_request_error",
            "param": "stream",
            "code": "unsupported_value",
        }
    }
)
# The message of a flex refusal inside a stream when the scripted code is the default.
IN_STREAM_REFUSAL_MESSAGE = "Flex capacity unavailable."


def read_call(body: Mapping[str, Any], *, stream_usage: bool) -> Call:
    """Model, tier and stream flag of a chat-completions or Responses request."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("you must provide a model parameter")
    tier = body.get("service_tier")
    if tier is not None and not isinstance(tier, str):
        raise BadRequestError(f"Invalid type for 'service_tier': expected a string, got {tier!r}.")
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = (
        stream_usage
        and stream
        and isinstance(options, Mapping)
        and options.get("include_usage") is True
    )
    return Call(
        model=model,
        tier_requested=tier,
        tier=_TIERS.get(tier or "", Tier.STANDARD),
        stream=stream,
        include_usage=include_usage,
    )


def tier_name(tier: Tier) -> str:
    return tier.value  # "default" | "flex" | "priority", OpenAI's own words


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.0f}s"


def headers(meta: Meta, elapsed_ms: int) -> list[tuple[str, str]]:
    """``x-request-id``, processing time and the ``x-ratelimit-*`` family, as OpenAI sends them."""
    used_requests, used_tokens = meta.window_requests, meta.window_tokens
    remaining_requests = max(0, REQUEST_LIMIT - used_requests)
    remaining_tokens = max(0, TOKEN_LIMIT - used_tokens)
    return [
        ("x-request-id", f"req_{uuid.uuid4().hex}"),
        ("openai-processing-ms", str(elapsed_ms)),
        ("openai-version", "2020-10-01"),
        ("openai-organization", "emulator-org"),
        ("x-ratelimit-limit-requests", str(REQUEST_LIMIT)),
        ("x-ratelimit-remaining-requests", str(remaining_requests)),
        ("x-ratelimit-reset-requests", _duration(used_requests * 60 / REQUEST_LIMIT)),
        ("x-ratelimit-limit-tokens", str(TOKEN_LIMIT)),
        ("x-ratelimit-remaining-tokens", str(remaining_tokens)),
        ("x-ratelimit-reset-tokens", _duration(used_tokens * 60 / TOKEN_LIMIT)),
    ]


def error_body(status: int, problem: Problem, message: str) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}``."""
    if problem is Problem.CAPACITY:
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        return _error(_CAPACITY_MESSAGE, kind, "resource_unavailable")
    if problem is Problem.INVALID:
        return _error(message, "invalid_request_error", None)
    kind, code, text = _MESSAGES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, message)
    )
    return _error(f"{text} (emulated status {status})", kind, code)


def _error(message: str, kind: str, code: str | None) -> bytes:
    return dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})
