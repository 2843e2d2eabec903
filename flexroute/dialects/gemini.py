"""Gemini Developer API: ``models/{model}:generateContent`` and ``:streamGenerateContent``.

The tier is the body's ``serviceTier`` (``service_tier`` accepted too); the tier served comes
back in the ``x-gemini-service-tier`` header. *Started* is the first chunk carrying a
non-empty content part. ``usageMetadata`` is cumulative on stream chunks: the last one counts;
``promptTokenCount`` includes cached tokens and thinking tokens are billed as output. A flex
attempt carries ``X-Server-Timeout`` so Google itself stops queueing when the budget ends.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from flexroute.dialects.base import (
    MISSING,
    START_WITHIN_KEYS,
    Dialect,
    ErrorKind,
    JSONDict,
    Observer,
    Pieces,
    RequestFacts,
    ResponseFacts,
    answer_object,
    dumps,
    event_object,
    int_field,
    loads_object,
    objects,
    usage_object,
)
from flexroute.dialects.sse import SSEEvent, encode_event
from flexroute.errors import RequestRejected
from flexroute.usage import Tier, Usage

_PATH = re.compile(r"^/(v1|v1beta)/models/([^/:]+):(generateContent|streamGenerateContent)$")
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 402: "FAILED_PRECONDITION",
                 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 413: "INVALID_ARGUMENT",
                 429: "RESOURCE_EXHAUSTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED"}  # fmt: skip
_TIER_KEYS = ("serviceTier", "service_tier")
TIER_HEADER = "x-gemini-service-tier"


def is_gemini_path(path: str) -> bool:
    return _PATH.match(path) is not None


class GeminiDialect(Dialect):
    provider = "gemini"
    name = "gemini"
    operation = "generate_content"
    sse_comments = False  # google-genai parses every non-empty SSE line as JSON
    wire_tiers: Mapping[Tier, str] = MappingProxyType(
        {Tier.STANDARD: "standard", Tier.FLEX: "flex", Tier.PRIORITY: "priority"}
    )

    def read(self, body: JSONDict, path: str) -> RequestFacts:
        match = _PATH.match(path)
        model = match.group(2) if match else None
        tier = next((body[k] for k in _TIER_KEYS if isinstance(body.get(k), str)), None)
        if tier is not None and tier.lower() == "unspecified":  # the SDK's name for "not set"
            tier = None
        return RequestFacts(
            model=model,
            tier=tier.lower() if tier else None,
            stream=bool(match and match.group(3) == "streamGenerateContent"),
            start_within=body.get("start_within", body.get("startWithin", MISSING)),
            wants_usage=True,
        )

    def tier_from_wire(self, value: object) -> Tier | None:
        return super().tier_from_wire(value.lower() if isinstance(value, str) else value)

    def prepare(self, body: JSONDict, *, tier: Tier | None, stream: bool, ask_usage: bool) -> bytes:
        out = {k: v for k, v in body.items() if k not in START_WITHIN_KEYS}
        if tier is not None:
            key = "service_tier" if "service_tier" in out else "serviceTier"
            out[key] = self.wire_tiers[tier]
        return dumps(out)

    def upstream_target(self, path: str, query: str, stream: bool) -> str:
        method = "streamGenerateContent" if stream else "generateContent"
        # ``path`` is as the client encoded it: its colon may be written %3A.
        path = re.sub(r"(?::|%3[aA])(?:generateContent|streamGenerateContent)$", f":{method}", path)
        params = [p for p in query.split("&") if p and not p.startswith("alt=")]
        if stream:
            params.append("alt=sse")
        return f"{path}?{'&'.join(params)}" if params else path

    def attempt_headers(self, tier: Tier, remaining: float) -> list[tuple[str, str]]:
        if tier is not Tier.FLEX:
            return []
        return [("x-server-timeout", str(max(1, math.ceil(remaining))))]

    def merge_attempt_header(self, name: str, ours: str, client: str | None) -> str:
        """``X-Server-Timeout`` is a deadline in seconds: the smaller of the client's (the
        SDK's own request timeout) and the flex budget left."""
        if name != "x-server-timeout" or client is None:
            return ours
        try:
            theirs = float(client)
        except ValueError:
            return ours
        if not math.isfinite(theirs) or theirs <= 0 or theirs >= float(ours):
            return ours
        return client.strip()

    def read_response(self, body: bytes, headers: Mapping[str, str]) -> ResponseFacts:
        obj = answer_object(body, headers)
        objects(obj.get("candidates"), "candidates")
        return ResponseFacts(gemini_usage(obj.get("usageMetadata")), self._served(headers))

    def _served(self, headers: Mapping[str, str]) -> Tier | None:
        return self.tier_from_wire(headers.get(TIER_HEADER))

    def observer(
        self, *, wants_usage: bool, assemble: bool, headers: Mapping[str, str]
    ) -> Observer:
        return GeminiObserver(self._served(headers), assemble=assemble)

    def classify_error(self, status: int, body: bytes) -> ErrorKind:
        error = (loads_object(body) or {}).get("error")
        name = error.get("status") if isinstance(error, Mapping) else None
        if status in (429, 503) or name in ("UNAVAILABLE", "RESOURCE_EXHAUSTED"):
            return ErrorKind.CAPACITY
        return ErrorKind.OTHER

    def error_body(self, error: RequestRejected) -> bytes:
        payload: dict[str, Any] = {
            "code": error.status,
            "message": error.message,
            "status": _STATUS_NAMES.get(error.status, "INVALID_ARGUMENT"),
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": error.code,
                    "domain": "flexroute",
                    "metadata": {k: str(v) for k, v in
                                 {"param": error.param, **error.extra}.items() if v is not None},
                }
            ],
        }  # fmt: skip
        return dumps({"error": payload})

    def stream_error(self, message: str, code: str) -> bytes:
        error = {"code": 502, "message": message, "status": "UNAVAILABLE", "reason": code}
        return encode_event(dumps({"error": error}).decode())


def gemini_usage(meta: object) -> Usage | None:
    """Usage from ``usageMetadata``, with its per-modality breakdown (``promptTokensDetails``
    and ``toolUsePromptTokensDetails``, ``cacheTokensDetails``, ``candidatesTokensDetails``:
    lists of ``{modality, tokenCount}``) so that audio is priced as audio."""
    meta = usage_object(meta, "usageMetadata")
    if meta is None:
        return None
    prompt = int_field(meta, "promptTokenCount") + int_field(meta, "toolUsePromptTokenCount")
    return Usage(
        input_tokens=prompt,
        output_tokens=int_field(meta, "candidatesTokenCount")
        + int_field(meta, "thoughtsTokenCount"),
        cached_input_tokens=min(prompt, int_field(meta, "cachedContentTokenCount")),
        input_by_modality=_modalities(meta, "promptTokensDetails", "toolUsePromptTokensDetails"),
        cached_by_modality=_modalities(meta, "cacheTokensDetails"),
        output_by_modality=_modalities(meta, "candidatesTokensDetails"),
    )


def _modalities(meta: Mapping[str, Any], *keys: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        entries = meta.get(key)
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("modality"), str):
                continue
            modality = entry["modality"].lower()
            counts[modality] = counts.get(modality, 0) + int_field(entry, "tokenCount")
    return counts


def _has_output(chunk: JSONDict) -> bool:
    for candidate in objects(chunk.get("candidates"), "candidates"):
        if candidate.get("finishReason"):
            return True
        parts = (candidate.get("content") or {}).get("parts") or []
        if any(
            isinstance(p, Mapping) and any(v not in ("", None) for v in p.values()) for p in parts
        ):
            return True
    return False


class GeminiObserver(Observer):
    def __init__(self, tier_served: Tier | None, *, assemble: bool) -> None:
        self.tier_served = tier_served
        self._chunks: list[JSONDict] | None = [] if assemble else None

    def is_terminal(self, event: SSEEvent) -> bool:
        return b'"finishReason"' in event.raw

    def observe(self, event: SSEEvent) -> bytes | None:
        chunk = event_object(event)
        if chunk is None:
            return event.raw
        if "error" in chunk:
            self.failure = chunk["error"] if isinstance(chunk["error"], dict) else {}
            return event.raw
        if "usageMetadata" in chunk:
            self.usage = gemini_usage(chunk["usageMetadata"])
        if not self.started and _has_output(chunk):
            self.started = True
        if any(
            isinstance(c, Mapping) and c.get("finishReason") for c in chunk.get("candidates") or []
        ):
            self.finished = True
        if self._chunks is not None:
            self._chunks.append(chunk)
        return event.raw

    def assemble(self) -> bytes:
        assert self._chunks is not None, "observer was created without assemble=True"
        return dumps(merge_chunks(self._chunks))


def merge_chunks(chunks: list[JSONDict]) -> JSONDict:
    """A ``GenerateContentResponse`` from stream chunks: parts joined, the last metadata kept."""
    body: JSONDict = {}
    candidates: dict[int, JSONDict] = {}
    for chunk in chunks:
        for key, value in chunk.items():
            if key != "candidates":
                body[key] = value
        for candidate in chunk.get("candidates") or []:
            index = candidate.get("index", 0)
            merged = candidates.setdefault(index, {"content": {"parts": [], "role": "model"}})
            for key, value in candidate.items():
                if key == "content":
                    content = value or {}
                    merged["content"]["role"] = content.get("role", "model")
                    _append_parts(merged["content"]["parts"], content.get("parts") or [])
                else:
                    merged[key] = value
    if candidates:
        body = {"candidates": [candidates[i] for i in sorted(candidates)], **body}
    return body


def _append_parts(parts: list[JSONDict], new: list[Any]) -> None:
    """Consecutive text parts of the same kind join, as in a non-streaming answer."""
    for part in new:
        if not isinstance(part, dict):
            continue
        last = parts[-1] if parts else None
        if (
            last is not None
            and set(part) <= {"text", "thought"}
            and set(last) <= {"text", "thought"}
            and isinstance(part.get("text"), str)
            and isinstance(last.get("text"), Pieces)
            and bool(last.get("thought")) == bool(part.get("thought"))
        ):
            last["text"].add(part["text"])  # joined once, when the body is written
        else:
            copied = dict(part)
            if isinstance(copied.get("text"), str):
                copied["text"] = Pieces(copied["text"])
            parts.append(copied)
