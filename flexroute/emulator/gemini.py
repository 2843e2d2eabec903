"""Gemini Developer API: ``models/{model}:generateContent`` and ``:streamGenerateContent``
(``?alt=sse``), under ``/v1beta/`` and ``/v1/``.

The tier comes in the body's ``serviceTier`` (or ``service_tier``, any case: ``flex``,
``FLEX``, ``standard``, ``priority``) and the tier served goes back in the
``x-gemini-service-tier`` response header. Streams are ``data: {json}`` events separated by
``\\r\\n\\r\\n`` as Google sends them, with nothing before the first chunk (so the response
headers wait for it too), and ``usageMetadata`` cumulative on every chunk. Errors are
``{"error": {"code", "message", "status"}}``; ``X-Server-Timeout`` bounds the queue (504).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flexroute.emulator.capacity import Tier
from flexroute.emulator.content import Reply, dumps
from flexroute.emulator.wire import BadRequestError, Call, Meta, Problem, Script

PATH = (
    r"/(?P<version>v1|v1beta)/models/(?P<model>[^/:]+)"
    r":(?P<method>generateContent|streamGenerateContent)"
)
TIER_HEADER = "x-gemini-service-tier"
TIERS = {"flex": Tier.FLEX, "priority": Tier.PRIORITY}
TIER_NAMES = {Tier.STANDARD: "standard", Tier.FLEX: "flex", Tier.PRIORITY: "priority"}
_ERRORS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report it."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
FLEX_BUSY = "Flex capacity is temporarily unavailable for this model. Please try again later."


def tier_of(value: object) -> Tier:
    """The tier a Gemini request asks for (``flex``, ``SERVICE_TIER_FLEX``…); standard else."""
    if not isinstance(value, str):
        return Tier.STANDARD
    name = value.lower().removeprefix("service_tier_")
    return TIERS.get(name, Tier.STANDARD)


def _usage(reply: Reply, pieces: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": reply.prompt_tokens,
        "candidatesTokenCount": pieces,
        "totalTokenCount": reply.prompt_tokens + pieces + reply.reasoning_tokens,
        "promptTokensDetails": _prompt_details(reply),
    }
    if reply.cached_tokens:
        usage["cachedContentTokenCount"] = reply.cached_tokens
    if reply.reasoning_tokens:
        usage["thoughtsTokenCount"] = reply.reasoning_tokens
    return usage


def _prompt_details(reply: Reply) -> list[dict[str, Any]]:
    """``promptTokensDetails``: the prompt by modality (``audio_tokens`` of it as AUDIO)."""
    parts = [("TEXT", reply.prompt_tokens - reply.audio_tokens), ("AUDIO", reply.audio_tokens)]
    details = [{"modality": m, "tokenCount": n} for m, n in parts if n]
    return details or [{"modality": "TEXT", "tokenCount": 0}]


class GeminiWire:
    """The ``generateContent`` wire format."""

    refuse_status = 503
    overload_status = 503

    def read(
        self, body: Mapping[str, Any], params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Call:
        if not isinstance(body.get("contents"), list | dict | str):
            raise BadRequestError("* GenerateContentRequest.contents: contents is not specified")
        raw = body.get("serviceTier", body.get("service_tier"))
        timeout = headers.get("x-server-timeout")
        try:
            seconds = float(timeout) if timeout else None
        except ValueError:
            raise BadRequestError(f"Invalid X-Server-Timeout: {timeout!r}") from None
        return Call(
            model=params["model"],
            tier_requested=raw if isinstance(raw, str) else None,
            tier=tier_of(raw),
            stream=params["method"] == "streamGenerateContent",
            timeout=seconds,
        )

    def tier_name(self, tier: Tier) -> str:
        return TIER_NAMES[tier]

    def headers(self, meta: Meta, *, elapsed_ms: int, error: bool) -> list[tuple[str, str]]:
        headers = [("server-timing", f"gfet4t7; dur={elapsed_ms}"), ("vary", "Origin")]
        if not error:
            headers.append((TIER_HEADER, TIER_NAMES[meta.tier]))
        return headers

    def error(self, status: int, problem: Problem, message: str) -> bytes:
        name, text = _ERRORS.get(status, ("UNKNOWN", "Unknown error."))
        if problem is Problem.INVALID:
            text = message
        elif problem is Problem.CAPACITY and status in (429, 503):
            text = FLEX_BUSY
        return json.dumps(
            {"error": {"code": status, "message": text, "status": name}}, indent=2
        ).encode()

    def body(self, reply: Reply, meta: Meta) -> bytes:
        return dumps(self._chunk(reply, meta, self._parts(reply), reply.visible_tokens, True))

    def script(self, reply: Reply, meta: Meta) -> Script:
        if reply.kind == "tool_call" or not reply.pieces:
            whole = self._chunk(reply, meta, self._parts(reply), reply.visible_tokens, True)
            return Script(preamble=(), steps=(self._event(whole),), closing=())
        last = len(reply.pieces) - 1
        steps = tuple(
            self._event(self._chunk(reply, meta, [{"text": piece}], i + 1, i == last))
            for i, piece in enumerate(reply.pieces)
        )
        return Script(preamble=(), steps=steps, closing=())

    @staticmethod
    def _event(chunk: dict[str, Any]) -> bytes:
        return b"data: " + dumps(chunk) + b"\r\n\r\n"

    @staticmethod
    def _parts(reply: Reply) -> list[dict[str, Any]]:
        if reply.kind == "tool_call":
            return [{"functionCall": {"name": reply.tool_name, "args": json.loads(reply.text)}}]
        return [{"text": reply.text}]

    @staticmethod
    def _chunk(
        reply: Reply, meta: Meta, parts: list[dict[str, Any]], pieces: int, last: bool
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if last:
            candidate["finishReason"] = "STOP"
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": _usage(reply, pieces),
            "modelVersion": meta.model,
            "responseId": f"emu{meta.seq:08d}",
        }
