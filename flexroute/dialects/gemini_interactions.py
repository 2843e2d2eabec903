"""Gemini Interactions API: ``POST /v1beta/interactions`` and ``/v1/interactions``.

What the wire looks like, and where it was read (google-genai 3.6.1, the Speakeasy-generated
``google/genai/_gaos`` package; googleapis/python-genai at 66807187; ai.google.dev pages
``interactions/flex-inference``, ``api-errors``; the Vertex ``InteractionStreamingEvent`` ref):

* **Request** (``_gaos/types/interactions/createmodelinteraction.py``): a JSON body with
  ``model`` (or ``agent`` + ``agent_config``), ``input`` (a string, content list or step list),
  ``stream`` (bool; the SDK then sends ``Accept: text/event-stream``), ``service_tier``
  (``flex`` | ``standard`` | ``priority`` | ``deferred``; absent = standard), ``background``,
  ``store``, ``previous_interaction_id``, ``continuation_token``, ``generation_config``
  (``temperature``, ``max_output_tokens``, ``thinking_level``…), ``system_instruction``,
  ``tools``, ``response_format``. The path is ``/{api_version}/interactions``: google-genai
  3.x defaults to ``v1`` (its README: "Default Gemini Developer API version is now v1"),
  2.x and Google's REST examples use ``v1beta``.
* **Response** (``interaction.py``): the Interaction resource ``{id, status, model, created,
  updated, service_tier, steps: [...], usage}``; ``status`` is ``completed``, ``in_progress``,
  ``requires_action``, ``failed``, ``incomplete``, ``requires_continuation``… A step is
  ``{"type": "model_output", "content": [{"type": "text", "text"}]}``, ``{"type": "thought",
  "signature", "summary"}``, ``{"type": "function_call", "id", "name", "arguments": {}}`` or
  a built-in tool's call/result. ``usage`` (``usage.py``): ``total_input_tokens``,
  ``total_cached_tokens``, ``total_output_tokens``, ``total_thought_tokens``,
  ``total_tool_use_tokens``, ``total_tokens`` and per-modality lists ``{modality, tokens}``.
* **Stream** (``interactionsseevent.py``, discriminated by ``event_type`` in the data):
  ``interaction.created`` (the resource, no steps yet), ``interaction.status_update``
  ``{interaction_id, status}``, ``step.start {index, step}``, ``step.delta {index, delta}``
  (``delta.type``: ``text``, ``thought_summary``, ``thought_signature``, ``arguments_delta``,
  ``image``, a tool's call/result…), ``step.stop {index, usage?}``, ``interaction.completed``
  (the resource with usage and *empty* steps: clients rebuild them from the deltas) and
  ``error {error: {code, message}}``. The legacy names (``interaction.start``,
  ``content.delta``, ``interaction.complete``; "used when steps are disabled") are read too.
* **Tier served**: the resource's ``service_tier`` (in the body and in the created/completed
  events); where it is absent, the ``x-gemini-service-tier`` header generateContent uses.
* **Errors** (``errors/createinteraction.py``, ``types/interactions/error.py``, the api-errors
  page): ``{"error": {"code": "<string>", "message"}}`` with string codes such as
  ``invalid_request``, ``authentication``, ``permission_denied``, ``not_found``,
  ``rate_limit_exceeded``, ``quota_exceeded``; the SDK rejects an integer ``code``. Google's
  front end may still answer in the google.rpc shape (``{"code": 429, "status":
  "RESOURCE_EXHAUSTED"}``), so both are classified.

What flexroute does with it: the tier goes in ``service_tier`` (``serviceTier`` kept where the
client wrote that); a flex attempt is sent with ``"stream": true``, ``Accept:
text/event-stream`` and, as on generateContent, ``X-Server-Timeout``. *Started* is the first
``step.delta`` (thought deltas included: flex is then serving and billing, so falling back
would pay twice), a ``step.start`` that already carries output (a function call's name, a
tool result), or ``interaction.completed``; never ``interaction.created``, a status update or
an empty ``step.start``. ``background: true`` is passed through by
the engine (the job answers at once with its id). Usage maps as generateContent's: input is
``total_input_tokens + total_tool_use_tokens`` (cached tokens are part of it), output is
``total_output_tokens + total_thought_tokens``, with the per-modality lists (so audio is
priced as audio). Where Google's docs are silent (the code for a 503, whether SSE ``event:``
lines are sent) flexroute reads every spelling it knows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

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
)
from flexroute.dialects.gemini import TIER_HEADER, GeminiDialect
from flexroute.dialects.sse import SSEEvent, encode_event
from flexroute.errors import RequestRejected
from flexroute.usage import Tier, Usage

# google-genai 3.x calls /v1/interactions (its default API version is v1), 2.x /v1beta.
PATHS: Final = ("/v1/interactions", "/v1beta/interactions")
_TIER_KEYS = ("service_tier", "serviceTier")
_CREATED = frozenset({"interaction.created", "interaction.start"})
_COMPLETED = frozenset({"interaction.completed", "interaction.complete"})
_DELTAS = frozenset({"step.delta", "content.delta"})
_STARTS = frozenset({"step.start", "content.start"})
# Capacity refusals: Interactions codes and the google.rpc status names, lower-cased.
_CAPACITY_CODES = frozenset(
    {"resource_exhausted", "rate_limit_exceeded", "unavailable", "service_unavailable"}
)
_GENERATE = GeminiDialect()  # X-Server-Timeout: one rule for both Gemini APIs


class InteractionsDialect(Dialect):
    provider = "gemini"
    name = "gemini-interactions"
    sse_comments = True  # the SDK's SSE parser skips ": comment" lines
    wire_tiers: Mapping[Tier, str] = MappingProxyType(
        {Tier.STANDARD: "standard", Tier.FLEX: "flex", Tier.PRIORITY: "priority"}
    )

    def read(self, body: JSONDict, path: str) -> RequestFacts:
        model = body.get("model")
        tier = next((body[k] for k in _TIER_KEYS if isinstance(body.get(k), str)), None)
        return RequestFacts(
            model=model if isinstance(model, str) and model else None,  # agents are unpriced
            tier=tier.lower() if tier else None,
            stream=body.get("stream") is True,
            start_within=next((body[k] for k in START_WITHIN_KEYS if k in body), MISSING),
            wants_usage=True,
        )

    def tier_from_wire(self, value: object) -> Tier | None:
        return super().tier_from_wire(value.lower() if isinstance(value, str) else value)

    def prepare(self, body: JSONDict, *, tier: Tier | None, stream: bool, ask_usage: bool) -> bytes:
        out = {k: v for k, v in body.items() if k not in START_WITHIN_KEYS}
        if tier is not None:
            key = "serviceTier" if "serviceTier" in out else "service_tier"
            out[key] = self.wire_tiers[tier]
        if stream:
            out["stream"] = True
        elif "stream" in out:
            out["stream"] = False
        return dumps(out)

    def attempt_headers(self, tier: Tier, remaining: float) -> list[tuple[str, str]]:
        """A flex attempt is a stream whatever the client asked, so it says so in ``Accept``
        (as the SDK does for ``stream=True``), with generateContent's ``X-Server-Timeout``."""
        if tier is not Tier.FLEX:
            return []
        return [("accept", "text/event-stream"), *_GENERATE.attempt_headers(tier, remaining)]

    def merge_attempt_header(self, name: str, ours: str, client: str | None) -> str:
        return _GENERATE.merge_attempt_header(name, ours, client)

    def read_response(self, body: bytes, headers: Mapping[str, str]) -> ResponseFacts:
        obj = answer_object(body, headers)
        served = self.tier_from_wire(obj.get("service_tier"))
        return ResponseFacts(
            interactions_usage(obj.get("usage")), served or self._header_tier(headers)
        )

    def _header_tier(self, headers: Mapping[str, str]) -> Tier | None:
        return self.tier_from_wire(headers.get(TIER_HEADER))

    def observer(
        self, *, wants_usage: bool, assemble: bool, headers: Mapping[str, str]
    ) -> Observer:
        return InteractionsObserver(self, self._header_tier(headers), assemble=assemble)

    def classify_error(self, status: int, body: bytes) -> ErrorKind:
        error = (loads_object(body) or {}).get("error")
        names = (error.get("code"), error.get("status")) if isinstance(error, Mapping) else ()
        capacity = any(isinstance(n, str) and n.lower() in _CAPACITY_CODES for n in names)
        if status in (429, 503) or capacity:
            return ErrorKind.CAPACITY
        return ErrorKind.OTHER

    def error_body(self, error: RequestRejected) -> bytes:
        """The Interactions error shape; flexroute's own code strings are snake_case like
        Google's (``rate_limit_exceeded``, ``payment_required``), extra facts ride along."""
        extra = {k: str(v) for k, v in {"param": error.param, **error.extra}.items() if v}
        return dumps({"error": {"code": error.code, "message": error.message, **extra}})

    def stream_error(self, message: str, code: str) -> bytes:
        event = {"event_type": "error", "error": {"code": code, "message": message}}
        return encode_event(dumps(event).decode(), event="error")


def interactions_usage(usage: object) -> Usage | None:
    """:class:`Usage` from an Interaction's ``usage`` (see the module docstring)."""
    if not isinstance(usage, Mapping):
        return None
    prompt = int_field(usage, "total_input_tokens") + int_field(usage, "total_tool_use_tokens")
    return Usage(
        input_tokens=prompt,
        output_tokens=int_field(usage, "total_output_tokens")
        + int_field(usage, "total_thought_tokens"),
        cached_input_tokens=min(prompt, int_field(usage, "total_cached_tokens")),
        input_by_modality=_modalities(
            usage, "input_tokens_by_modality", "tool_use_tokens_by_modality"
        ),
        cached_by_modality=_modalities(usage, "cached_tokens_by_modality"),
        output_by_modality=_modalities(usage, "output_tokens_by_modality"),
    )


def _modalities(usage: Mapping[str, Any], *keys: str) -> dict[str, int]:
    """The ``[{modality, tokens}]`` lists summed per (lower-case) modality."""
    counts: dict[str, int] = {}
    for key in keys:
        entries = usage.get(key)
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, Mapping) and isinstance(entry.get("modality"), str):
                modality = entry["modality"].lower()
                counts[modality] = counts.get(modality, 0) + int_field(entry, "tokens")
    return counts


class InteractionsObserver(Observer):
    """Reads one Interactions stream; rebuilds the resource for a non-streaming client."""

    def __init__(
        self, dialect: InteractionsDialect, header_tier: Tier | None, *, assemble: bool
    ) -> None:
        self._dialect = dialect
        self.tier_served = header_tier
        self._assemble = assemble
        self._interaction: JSONDict = {}
        self._steps: dict[int, JSONDict] = {}
        self._arguments: dict[int, Pieces] = {}  # function-call arguments streamed as JSON
        self._legacy = False  # content.* events: the resource's ``outputs``, not ``steps``

    def is_terminal(self, event: SSEEvent) -> bool:
        if event.event is not None:
            return event.event in _COMPLETED
        return b'"interaction.complete' in event.raw

    def observe(self, event: SSEEvent) -> bytes | None:
        data = event_object(event)
        if data is None:
            return event.raw
        kind = data.get("event_type", event.event)
        if kind == "error":
            error = data.get("error")
            self.failure = error if isinstance(error, dict) else {}
            return event.raw
        if kind in _CREATED or kind in _COMPLETED:
            self._take_interaction(data.get("interaction"), completed=kind in _COMPLETED)
        elif kind in _STARTS:
            self._start_step(data)
        elif kind in _DELTAS:
            self._legacy = self._legacy or kind == "content.delta"
            self._apply_delta(data)
        elif kind == "step.stop" or kind == "interaction.status_update":
            self._take_usage(data.get("usage"))
        return event.raw

    def _take_interaction(self, interaction: object, *, completed: bool) -> None:
        if not isinstance(interaction, Mapping):
            return
        self._interaction.update(interaction)
        tier = self._dialect.tier_from_wire(interaction.get("service_tier"))
        if tier is not None:
            self.tier_served = tier
        self._take_usage(interaction.get("usage"))
        if not completed:
            return
        self.finished = True
        if interaction.get("status") == "failed" and not self.started:
            errors = interaction.get("errors")
            first = errors[0] if isinstance(errors, list) and errors else None
            self.failure = dict(first) if isinstance(first, Mapping) else {"code": "failed"}
        else:
            self.started = True  # a complete answer, even an empty one

    def _take_usage(self, usage: object) -> None:
        parsed = interactions_usage(usage)
        if parsed is not None:
            self.usage = parsed

    def _start_step(self, data: JSONDict) -> None:
        index = data.get("index")
        step = data.get("step", data.get("content"))  # content.start carries ``content``
        self._legacy = self._legacy or ("content" in data and "step" not in data)
        if not isinstance(index, int) or not isinstance(step, Mapping):
            return
        if any(v not in (None, "", [], {}) for k, v in step.items() if k not in ("type", "id")):
            self.started = True  # a step that carries output: a call's name, a tool result
        if self._assemble:
            self._steps[index] = json.loads(dumps(step))  # a deep copy of plain JSON

    def _apply_delta(self, data: JSONDict) -> None:
        index, delta = data.get("index"), data.get("delta")
        if not isinstance(index, int) or not isinstance(delta, Mapping):
            return
        self.started = True
        if not self._assemble:
            return
        step = self._steps.setdefault(index, _step_for(delta, legacy=self._legacy))
        kind = delta.get("type")
        if kind == "arguments_delta":
            self._arguments.setdefault(index, Pieces()).add(str(delta.get("arguments") or ""))
        elif self._legacy and kind == "text":
            _merge_text(step, delta)
        elif self._legacy:
            step.update(_fields(delta))
        elif kind == "thought_summary":
            summary = step.setdefault("summary", [])
            content = delta.get("content")
            if isinstance(content, Mapping):
                _append_content(summary, dict(content))
        elif kind == "thought_signature":
            step["signature"] = delta.get("signature")
        elif step.get("type") == "model_output":
            _append_content(step.setdefault("content", []), dict(delta))
        else:  # a built-in tool's call or result: the delta carries the step's fields
            step.update(_fields(delta))

    def assemble(self) -> bytes:
        assert self._assemble, "observer was created without assemble=True"
        for index, pieces in self._arguments.items():
            text = str(pieces)
            try:
                self._steps[index]["arguments"] = json.loads(text) if text else {}
            except ValueError:
                self._steps[index]["arguments"] = text  # as streamed: never invented
        body = dict(self._interaction)
        built = [self._steps[i] for i in sorted(self._steps)]
        if self._legacy:
            body["outputs"] = built
        elif built or "steps" not in body:
            body["steps"] = built
        return dumps(body)


def _fields(delta: Mapping[str, Any]) -> JSONDict:
    return {k: v for k, v in delta.items() if k != "type"}


def _step_for(delta: Mapping[str, Any], *, legacy: bool) -> JSONDict:
    """The step a delta belongs to when its ``step.start`` was not seen."""
    kind = delta.get("type")
    if legacy:
        return {"type": kind}
    if kind in ("thought_summary", "thought_signature"):
        return {"type": "thought"}
    if kind == "arguments_delta":
        return {"type": "function_call"}
    if kind in ("text", "image", "audio", "video", "document", "text_annotation_delta"):
        return {"type": "model_output", "content": []}
    return {"type": kind}


def _merge_text(item: JSONDict, delta: Mapping[str, Any]) -> None:
    """Join a text delta to ``item``'s text, in linear time (see :class:`Pieces`)."""
    text = item.get("text")
    if not isinstance(text, Pieces):
        item["text"] = text = Pieces(str(text or ""))
    text.add(str(delta.get("text") or ""))


def _append_content(content: list[Any], delta: JSONDict) -> None:
    """Text deltas join the text before them, as in a non-streaming answer; annotations
    attach to it; any other content (an image, audio) is an item of its own."""
    last = content[-1] if content and isinstance(content[-1], dict) else None
    kind = delta.get("type")
    if kind == "text_annotation_delta":
        if last is not None:
            last.setdefault("annotations", []).extend(delta.get("annotations") or [])
        return
    if kind == "text" and last is not None and last.get("type") == "text":
        _merge_text(last, delta)
        return
    content.append(delta)
