"""Anthropic ``POST /v1/messages``: the ``message`` object and its event stream
(``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``…,
``content_block_stop``, ``message_delta`` with cumulative usage, ``message_stop``).

Any ``anthropic-version`` is accepted. Claude has no flex tier: every request is served
"standard" unless ``serve_tier`` says otherwise; ``usage.service_tier`` reports it. Input is
reported Anthropic's way: ``input_tokens`` excludes cache reads and writes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from flexroute.emulator.capacity import Tier
from flexroute.emulator.content import Reply, dumps
from flexroute.emulator.wire import BadRequestError, Call, Meta, Problem, Script, sse

_NAMES = {Tier.STANDARD: "standard", Tier.FLEX: "flex", Tier.PRIORITY: "priority"}
_ERRORS = {
    400: ("invalid_request_error", "There was an issue with the format of your request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
REQUEST_LIMIT = 4_000
TOKEN_LIMIT = 2_000_000


def _stop_reason(reply: Reply) -> str:
    return {"tool_call": "tool_use", "refusal": "refusal"}.get(reply.kind, "end_turn")


def usage(reply: Reply, meta: Meta, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": reply.prompt_tokens - reply.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": reply.cached_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": _NAMES[meta.tier],
    }


def _block(reply: Reply, meta: Meta, *, done: bool) -> dict[str, Any]:
    if reply.kind == "tool_call":
        arguments = json.loads(reply.text) if done else {}
        return {
            "type": "tool_use",
            "id": f"toolu_emu{meta.seq:08d}",
            "name": reply.tool_name,
            "input": arguments,
        }
    return {"type": "text", "text": reply.text if done else ""}


def _message(reply: Reply, meta: Meta, *, done: bool) -> dict[str, Any]:
    return {
        "id": f"msg_emu{meta.seq:08d}",
        "type": "message",
        "role": "assistant",
        "model": meta.model,
        "content": [_block(reply, meta, done=True)] if done else [],
        "stop_reason": _stop_reason(reply) if done else None,
        "stop_sequence": None,
        "usage": usage(reply, meta, reply.output_tokens if done else 1),
    }


def _event(kind: str, **fields: Any) -> bytes:
    return sse(dumps({"type": kind, **fields}), event=kind)


class AnthropicWire:
    """The Messages API wire format."""

    refuse_status = 529
    overload_status = 529

    def read(
        self, body: Mapping[str, Any], params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Call:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequestError("model: Field required")
        if not isinstance(body.get("messages"), list):
            raise BadRequestError("messages: Field required")
        if not isinstance(body.get("max_tokens"), int):
            raise BadRequestError("max_tokens: Field required")
        tier = body.get("service_tier")
        return Call(
            model=model,
            tier_requested=tier if isinstance(tier, str) else None,
            tier=Tier.STANDARD,
            stream=body.get("stream") is True,
        )

    def tier_name(self, tier: Tier) -> str:
        return _NAMES[tier]

    def headers(self, meta: Meta, *, elapsed_ms: int, error: bool) -> list[tuple[str, str]]:
        reset = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
        remaining_tokens = max(0, TOKEN_LIMIT - meta.window_tokens)
        return [
            ("request-id", f"req_emu{uuid.uuid4().hex[:24]}"),
            ("anthropic-organization-id", "00000000-0000-4000-8000-000000000000"),
            ("anthropic-ratelimit-requests-limit", str(REQUEST_LIMIT)),
            (
                "anthropic-ratelimit-requests-remaining",
                str(max(0, REQUEST_LIMIT - meta.window_requests)),
            ),
            ("anthropic-ratelimit-requests-reset", reset),
            ("anthropic-ratelimit-tokens-limit", str(TOKEN_LIMIT)),
            ("anthropic-ratelimit-tokens-remaining", str(remaining_tokens)),
            ("anthropic-ratelimit-tokens-reset", reset),
        ]

    def error(self, status: int, problem: Problem, message: str) -> bytes:
        kind, text = _ERRORS.get(status, ("api_error", "Internal server error"))
        if problem is Problem.INVALID:
            text = message
        return dumps(
            {
                "type": "error",
                "error": {"type": kind, "message": text},
                "request_id": f"req_emu{uuid.uuid4().hex[:24]}",
            }
        )

    def body(self, reply: Reply, meta: Meta) -> bytes:
        return dumps(_message(reply, meta, done=True))

    def script(self, reply: Reply, meta: Meta) -> Script:
        preamble = (
            _event("message_start", message=_message(reply, meta, done=False)),
            _event("ping"),
        )
        opening = _event(
            "content_block_start", index=0, content_block=_block(reply, meta, done=False)
        )
        steps = [
            _event("content_block_delta", index=0, delta=self._delta(reply, piece))
            for piece in reply.pieces
        ]
        if steps:
            steps[0] = opening + steps[0]
        final_usage = usage(reply, meta, reply.output_tokens)
        del final_usage["service_tier"], final_usage["cache_creation"]
        closing = [
            *([] if steps else [opening]),
            _event("content_block_stop", index=0),
            _event(
                "message_delta",
                delta={"stop_reason": _stop_reason(reply), "stop_sequence": None},
                usage=final_usage,
            ),
            _event("message_stop"),
        ]
        return Script(preamble=preamble, steps=tuple(steps), closing=tuple(closing))

    @staticmethod
    def _delta(reply: Reply, piece: str) -> dict[str, Any]:
        if reply.kind == "tool_call":
            return {"type": "input_json_delta", "partial_json": piece}
        return {"type": "text_delta", "text": piece}
