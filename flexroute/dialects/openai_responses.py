"""OpenAI ``POST /v1/responses``.

*Started* is the first output event: any typed event but ``response.created``,
``response.queued``, ``response.in_progress`` and ``error`` (an SSE comment or an untyped
keep-alive is not output either). The terminal event (``response.completed``, ``.incomplete``,
``.failed``) carries the whole response object, usage and tier served included, which is also
the non-streaming body. Before the start, an ``error`` event or a ``response.failed`` is the
attempt's ``failure`` (its error object: the event itself when the code is top-level, as the
API reference shows it, or the nested ``error`` object, as Codex reads it).

**A reasoning item counts as the start.** A reasoning model first emits
``response.output_item.added`` with an item of type ``reasoning`` (``{"id": "rs_…", "type":
"reasoning", "summary": []}``) and then may stay silent for minutes while it thinks, before
the message item. flexroute takes that reasoning item as the start, for three reasons: it is
an output item (it lands in ``response.output``), so SPEC §2's rule already names it; the
provider emits it once the request has left the flex queue and the model is generating, so
from then on flex is serving and the reasoning tokens are being billed; and for a streaming
client the event is relayed, so bytes have reached the client and a second call would
duplicate the response. Falling back after it would pay for the thinking twice. Chat
completions has no such signal (its reasoning is invisible until the first content delta), so
there a long think can still hit the deadline: see ``docs/reasoning.md`` on sizing
``start_within``.
"""

from __future__ import annotations

from collections.abc import Mapping

from flexroute.dialects._openai import OpenAIDialect, responses_usage
from flexroute.dialects.base import (
    JSONDict,
    Observer,
    ResponseFacts,
    answer_object,
    check_event_data,
    dumps,
    event_object,
    objects,
)
from flexroute.dialects.sse import SSEEvent, encode_event
from flexroute.errors import UpstreamMalformed

_BEFORE_OUTPUT = frozenset(
    {"response.created", "response.queued", "response.in_progress", "error", None}
)
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesDialect(OpenAIDialect):
    name = "openai-responses"

    def read_response(self, body: bytes, headers: Mapping[str, str]) -> ResponseFacts:
        obj = answer_object(body, headers)
        objects(obj.get("output"), "output")
        return ResponseFacts(
            responses_usage(obj.get("usage")), self.tier_from_wire(obj.get("service_tier"))
        )

    def observer(
        self, *, wants_usage: bool, assemble: bool, headers: Mapping[str, str]
    ) -> Observer:
        return ResponsesObserver(self)

    def stream_error(self, message: str, code: str) -> bytes:
        payload = self._error_payload(message, code)
        event = {"type": "error", "code": code, "message": message, "param": None, "error": payload}
        return encode_event(dumps(event).decode(), event="error")


class ResponsesObserver(Observer):
    def __init__(self, dialect: ResponsesDialect) -> None:
        self._dialect = dialect
        self._response: JSONDict | None = None

    def is_terminal(self, event: SSEEvent) -> bool:
        return event.event in _TERMINAL

    def observe(self, event: SSEEvent) -> bytes | None:
        kind = event.event
        if kind is None or kind in _TERMINAL or kind == "error" or not self.started:
            data = event_object(event) or {}
            kind = kind or data.get("type")
            if kind == "error":
                nested = data.get("error")
                self.failure = nested if isinstance(nested, dict) else data
                return event.raw
            response = data.get("response")
            if response is not None and not isinstance(response, dict):
                raise UpstreamMalformed(f"a {kind} event's response is not an object")
            if isinstance(response, dict):
                objects(response.get("output"), "response.output")
                self._response = response
                tier = self._dialect.tier_from_wire(response.get("service_tier"))
                if tier is not None:
                    self.tier_served = tier
                if response.get("usage") is not None:
                    self.usage = responses_usage(response["usage"])
            if kind == "response.failed" and not self.started:
                error = (response or {}).get("error")
                self.failure = error if isinstance(error, dict) else {}
                return event.raw
        else:
            check_event_data(event)
        if kind in _TERMINAL:
            self.finished = True
        if kind not in _BEFORE_OUTPUT:
            self.started = True
        return event.raw

    def assemble(self) -> bytes:
        if self._response is None:
            return dumps({})
        return dumps(self._response)
