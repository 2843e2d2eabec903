"""Gemini Interactions API: ``POST /v1/interactions`` and ``/v1beta/interactions``, whole or
streamed (``"stream": true``).

The shapes follow google-genai's generated types (see ``flexroute.dialects.gemini_interactions``
for the sources): the tier comes in the body's ``service_tier`` and the tier served goes back
in the resource's ``service_tier``; a stream is ``event: <type>`` + ``data: {json}`` events,
``interaction.created`` and an ``in_progress`` status update at once (before any queue), then
``step.start``/``step.delta``/``step.stop`` per output piece, then ``interaction.completed``
with the usage and empty ``steps``. Errors are ``{"error": {"code": "<string>", "message"}}``;
``X-Server-Timeout`` bounds the queue as on generateContent.

The emulator keeps no interactions: ``background: true`` is answered like any other request
(the completed resource, after the queue) and ``GET /v1beta/interactions/{id}`` is not served.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from flexroute.emulator.capacity import Tier
from flexroute.emulator.content import Reply, dumps
from flexroute.emulator.gemini import FLEX_BUSY, TIER_NAMES, tier_of
from flexroute.emulator.wire import BadRequestError, Call, Meta, Problem, Script, sse

# The SDK calls /v1 since google-genai 3.0 (its default API version), /v1beta before.
PATHS = ("/v1/interactions", "/v1beta/interactions")
# Codes from ai.google.dev/gemini-api/docs/api-errors; 500/503/504 are not listed there.
_ERRORS = {
    400: ("invalid_request", "Request contains an invalid argument."),
    401: ("authentication", "The API key is missing or invalid."),
    403: ("permission_denied", "The caller does not have permission."),
    404: ("not_found", "Requested entity was not found."),
    429: ("rate_limit_exceeded", "Resource has been exhausted (e.g. check quota)."),
    500: ("internal_error", "An internal error has occurred. Please retry or report it."),
    503: ("service_unavailable", "The model is overloaded. Please try again later."),
    504: ("deadline_exceeded", "Deadline expired before operation could complete."),
}


def _timestamp(meta: Meta) -> str:
    return dt.datetime.fromtimestamp(meta.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def usage(reply: Reply) -> dict[str, Any]:
    """The resource's ``usage``: totals, and the prompt (``audio_tokens`` of it as audio),
    the cached part and the output by modality."""
    out: dict[str, Any] = {
        "total_input_tokens": reply.prompt_tokens,
        "total_output_tokens": reply.visible_tokens,
        "total_tokens": reply.total_tokens,
        "input_tokens_by_modality": _prompt_modalities(reply),
        "output_tokens_by_modality": [{"modality": "text", "tokens": reply.visible_tokens}],
    }
    if reply.cached_tokens:
        out["total_cached_tokens"] = reply.cached_tokens
        out["cached_tokens_by_modality"] = [{"modality": "text", "tokens": reply.cached_tokens}]
    if reply.reasoning_tokens:
        out["total_thought_tokens"] = reply.reasoning_tokens
    return out


def _prompt_modalities(reply: Reply) -> list[dict[str, Any]]:
    """The prompt by modality (``audio_tokens`` of it as audio)."""
    parts = [("text", reply.prompt_tokens - reply.audio_tokens), ("audio", reply.audio_tokens)]
    return [{"modality": m, "tokens": n} for m, n in parts if n] or [
        {"modality": "text", "tokens": 0}
    ]


class InteractionsWire:
    """The Interactions wire format."""

    refuse_status = 503
    overload_status = 503

    def read(
        self, body: Mapping[str, Any], params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Call:
        model = body.get("model", body.get("agent"))
        if not isinstance(model, str) or not model:
            raise BadRequestError("Either 'model' or 'agent' must be specified.")
        resumes = ("previous_interaction_id", "continuation_token")
        if "input" not in body and not any(k in body for k in resumes):
            raise BadRequestError("'input' is required.")
        raw = body.get("service_tier", body.get("serviceTier"))
        timeout = headers.get("x-server-timeout")
        try:
            seconds = float(timeout) if timeout else None
        except ValueError:
            raise BadRequestError(f"Invalid X-Server-Timeout: {timeout!r}") from None
        return Call(
            model=model,
            tier_requested=raw if isinstance(raw, str) else None,
            tier=tier_of(raw),
            stream=body.get("stream") is True,
            timeout=seconds,
        )

    def tier_name(self, tier: Tier) -> str:
        return TIER_NAMES[tier]

    def headers(self, meta: Meta, *, elapsed_ms: int, error: bool) -> list[tuple[str, str]]:
        return [("server-timing", f"gfet4t7; dur={elapsed_ms}"), ("vary", "Origin")]

    def error(self, status: int, problem: Problem, message: str) -> bytes:
        code, text = _ERRORS.get(status, ("unknown", "Unknown error."))
        if problem is Problem.INVALID:
            text = message
        elif problem is Problem.CAPACITY and status in (429, 503):
            text = FLEX_BUSY
        return json.dumps({"error": {"code": code, "message": text}}, indent=2).encode()

    def body(self, reply: Reply, meta: Meta) -> bytes:
        return dumps(_interaction(reply, meta, done=True, steps=_steps(reply, meta)))

    def script(self, reply: Reply, meta: Meta) -> Script:
        created = _interaction(reply, meta, done=False, steps=None)
        preamble = (
            _event("interaction.created", interaction=created),
            _event("interaction.status_update", interaction_id=created["id"], status="in_progress"),
        )
        [step] = _steps(reply, meta)
        opening = {**step, "content": []} if "content" in step else {**step, "arguments": {}}
        kind = "arguments_delta" if reply.kind == "tool_call" else "text"
        field = "arguments" if reply.kind == "tool_call" else "text"
        steps = [
            _event("step.delta", index=0, delta={"type": kind, field: piece})
            for piece in reply.pieces
        ]
        start = _event("step.start", index=0, step=opening)
        if steps:
            steps[0] = start + steps[0]
        closing = [] if steps else [start]
        closing.append(_event("step.stop", index=0))
        done = _interaction(reply, meta, done=True, steps=[])
        closing.append(_event("interaction.completed", interaction=done))
        return Script(preamble=preamble, steps=tuple(steps), closing=tuple(closing))


def _event(kind: str, **fields: Any) -> bytes:
    return sse(dumps({"event_type": kind, **fields}), event=kind)


def _steps(reply: Reply, meta: Meta) -> list[dict[str, Any]]:
    if reply.kind == "tool_call":
        return [
            {
                "type": "function_call",
                "id": f"call_emu{meta.seq:08d}",
                "name": reply.tool_name,
                "arguments": json.loads(reply.text),
            }
        ]
    return [{"type": "model_output", "content": [{"type": "text", "text": reply.text}]}]


def _interaction(
    reply: Reply, meta: Meta, *, done: bool, steps: list[dict[str, Any]] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"int_emu{meta.seq:08d}",
        "object": "interaction",
        "model": meta.model,
        "status": "completed" if done else "in_progress",
        "created": _timestamp(meta),
        "updated": _timestamp(meta),
        "service_tier": TIER_NAMES[meta.tier],
    }
    if steps is not None:
        body["steps"] = steps
    if done:
        body["usage"] = usage(reply)
    return body
