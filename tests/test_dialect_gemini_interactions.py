"""The Gemini Interactions dialect against recorded streams: facts, start, usage, assembly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.genai._gaos.errors.createinteraction import CreateInteractionClientErrorData
from google.genai._gaos.types.interactions import Interaction

from flexroute.dialects.base import MISSING, ErrorKind, dumps
from flexroute.dialects.gemini_interactions import PATHS, InteractionsDialect
from flexroute.dialects.sse import SSEDecoder, SSEEvent, encode_event
from flexroute.emulator.capacity import Plan
from flexroute.emulator.capacity import Tier as EmuTier
from flexroute.emulator.content import build_reply
from flexroute.emulator.gemini_interactions import InteractionsWire
from flexroute.emulator.wire import Meta
from flexroute.errors import RequestRejected
from flexroute.usage import Tier, Usage

DIALECT = InteractionsDialect()
PATH = PATHS[1]

# Recorded from the emulator (x-emulator: tokens=2;prompt_tokens=12;cached_tokens=4;
# reasoning_tokens=3), the shapes of google-genai 3.6.1's InteractionSSEEvent.
RECORDED = (
    b"event: interaction.created\n"
    b'data: {"event_type":"interaction.created","interaction":{"id":"int_emu00000001",'
    b'"object":"interaction","model":"gemini-2.5-flash","status":"in_progress",'
    b'"created":"2026-12-02T12:58:20Z","updated":"2026-12-02T12:58:20Z","service_tier":"flex"}}'
    b"\n\n"
    b"event: interaction.status_update\n"
    b'data: {"event_type":"interaction.status_update","interaction_id":"int_emu00000001",'
    b'"status":"in_progress"}\n\n'
    b"event: step.start\n"
    b'data: {"event_type":"step.start","index":0,"step":{"type":"model_output","content":[]}}'
    b"\n\n"
    b"event: step.delta\n"
    b'data: {"event_type":"step.delta","index":0,"delta":{"type":"text","text":"Flex "}}\n\n'
    b"event: step.delta\n"
    b'data: {"event_type":"step.delta","index":0,"delta":{"type":"text","text":"capacity."}}'
    b"\n\n"
    b"event: step.stop\n"
    b'data: {"event_type":"step.stop","index":0}\n\n'
    b"event: interaction.completed\n"
    b'data: {"event_type":"interaction.completed","interaction":{"id":"int_emu00000001",'
    b'"object":"interaction","model":"gemini-2.5-flash","status":"completed",'
    b'"created":"2026-12-02T12:58:20Z","updated":"2026-12-02T12:58:20Z","service_tier":"flex",'
    b'"steps":[],"usage":{"total_input_tokens":12,"total_output_tokens":2,"total_tokens":17,'
    b'"input_tokens_by_modality":[{"modality":"text","tokens":12}],'
    b'"output_tokens_by_modality":[{"modality":"text","tokens":2}],"total_cached_tokens":4,'
    b'"cached_tokens_by_modality":[{"modality":"text","tokens":4}],"total_thought_tokens":3}}}'
    b"\n\n"
)


def events(raw: bytes) -> list[SSEEvent]:
    return list(SSEDecoder().feed(raw))


def event(kind: str, *, named: bool = True, **fields: Any) -> bytes:
    """An event as Google frames it; ``named=False`` without the ``event:`` line."""
    return encode_event(json.dumps({"event_type": kind, **fields}), kind if named else None)


def observe_all(raw: bytes, headers: dict[str, str] | None = None) -> Any:
    observer = DIALECT.observer(wants_usage=True, assemble=True, headers=headers or {})
    for item in events(raw):
        observer.observe(item)
    return observer


class TestRequest:
    def test_reads_model_tier_stream_and_start_within(self) -> None:
        """The model, the tier in either spelling (lower-cased), stream and start_within."""
        body = {"model": "gemini-2.5-flash", "service_tier": "FLEX", "stream": True}
        facts = DIALECT.read({**body, "start_within": "5s"}, PATH)
        assert (facts.model, facts.tier, facts.stream, facts.start_within) == (
            "gemini-2.5-flash",
            "flex",
            True,
            "5s",
        )
        camel = DIALECT.read({"model": "m", "serviceTier": "standard"}, PATHS[0])
        assert (camel.tier, camel.stream, camel.start_within) == ("standard", False, MISSING)

    def test_an_agent_interaction_has_no_model_to_price(self) -> None:
        """``agent`` instead of ``model``: unpriced, so never billed."""
        assert DIALECT.read({"agent": "deep-research-pro", "input": "x"}, PATH).model is None

    def test_prepare_sets_tier_and_stream_and_removes_start_within(self) -> None:
        """The tier goes under the client's spelling; everything else is left as written."""
        body = {
            "model": "m",
            "input": [{"type": "text", "text": "hi"}],
            "start_within": "2s",
            "generation_config": {"temperature": 0.2},
            "previous_interaction_id": "int_1",
        }
        flex = json.loads(DIALECT.prepare(body, tier=Tier.FLEX, stream=True, ask_usage=True))
        assert flex == {
            **{k: v for k, v in body.items() if k != "start_within"},
            "service_tier": "flex",
            "stream": True,
        }
        standard = json.loads(
            DIALECT.prepare(
                {"model": "m", "serviceTier": "flex", "stream": True, "startWithin": 1},
                tier=Tier.STANDARD,
                stream=False,
                ask_usage=False,
            )
        )
        assert standard == {"model": "m", "serviceTier": "standard", "stream": False}
        untouched = json.loads(
            DIALECT.prepare({"model": "m"}, tier=None, stream=False, ask_usage=False)
        )
        assert untouched == {"model": "m"}

    def test_flex_attempts_ask_for_sse_and_carry_a_server_timeout(self) -> None:
        """As on generateContent: X-Server-Timeout, the smaller of the client's and the budget."""
        assert DIALECT.attempt_headers(Tier.FLEX, 2.2) == [
            ("accept", "text/event-stream"),
            ("x-server-timeout", "3"),
        ]
        assert DIALECT.attempt_headers(Tier.STANDARD, 2.2) == []
        assert DIALECT.merge_attempt_header("x-server-timeout", "30", "2") == "2"
        assert DIALECT.merge_attempt_header("accept", "text/event-stream", "application/json") == (
            "text/event-stream"
        )


class TestStream:
    def test_created_status_and_empty_step_start_do_not_start(self) -> None:
        """Only the first delta commits the attempt; the events before it are not output."""
        observer = DIALECT.observer(wants_usage=True, assemble=False, headers={})
        recorded = events(RECORDED)
        for item in recorded[:3]:
            assert observer.observe(item) == item.raw
            assert not observer.started
        observer.observe(recorded[3])
        assert observer.started
        assert observer.tier_served is Tier.FLEX
        assert not observer.finished

    def test_usage_and_tier_come_from_the_completed_interaction(self) -> None:
        """Cached tokens are part of the input; thought tokens are billed as output."""
        observer = observe_all(RECORDED)
        assert observer.finished
        assert observer.is_terminal(events(RECORDED)[-1])
        assert not any(observer.is_terminal(e) for e in events(RECORDED)[:-1])
        assert observer.usage == Usage(
            input_tokens=12,
            output_tokens=5,
            cached_input_tokens=4,
            input_by_modality={"text": 12},
            cached_by_modality={"text": 4},
            output_by_modality={"text": 2},
        )
        assert observer.tier_served is Tier.FLEX

    def test_assembles_the_interaction_the_sdk_reads(self) -> None:
        """Deltas are joined into the model_output step; the SDK's output_text reads it."""
        body = json.loads(observe_all(RECORDED).assemble())
        assert body["status"] == "completed"
        assert body["steps"] == [
            {"type": "model_output", "content": [{"type": "text", "text": "Flex capacity."}]}
        ]
        assert body["usage"]["total_thought_tokens"] == 3
        interaction = Interaction.model_validate(body)
        assert interaction.output_text == "Flex capacity."
        assert interaction.service_tier == "flex"

    @pytest.mark.parametrize("answer", ["text", "tool_call"])
    def test_assembly_equals_the_non_streaming_body(self, answer: str) -> None:
        """Text or a function call: the stream rebuilt is the emulator's whole answer."""
        wire = InteractionsWire()
        plan = Plan(EmuTier.FLEX, tokens=4, answer=answer, prompt_tokens=30, reasoning_tokens=2)
        reply = build_reply(plan, {"input": "hello"})
        meta = Meta(seq=7, model="gemini-2.5-flash", created=1_790_000_000, tier=EmuTier.FLEX)
        script = wire.script(reply, meta)
        raw = b"".join(script.preamble + script.steps + script.closing)
        assert json.loads(observe_all(raw).assemble()) == json.loads(wire.body(reply, meta))

    def test_function_call_arguments_are_joined_and_parsed(self) -> None:
        """arguments_delta fragments become the call's arguments object."""
        raw = (
            event("interaction.created", interaction={"id": "i", "status": "in_progress"})
            + event(
                "step.start",
                index=0,
                step={"type": "function_call", "id": "c1", "name": "lookup", "arguments": {}},
            )
            + event("step.delta", index=0, delta={"type": "arguments_delta", "arguments": '{"q"'})
            + event("step.delta", index=0, delta={"type": "arguments_delta", "arguments": ':"x"}'})
            + event("interaction.completed", interaction={"id": "i", "status": "requires_action"})
        )
        observer = observe_all(raw)
        body = json.loads(observer.assemble())
        assert body["steps"] == [
            {"type": "function_call", "id": "c1", "name": "lookup", "arguments": {"q": "x"}}
        ]
        assert body["status"] == "requires_action"
        assert observer.finished

    def test_a_function_call_starts_with_its_name(self) -> None:
        """A step.start that already names the call is output (a tool-call delta)."""
        observer = DIALECT.observer(wants_usage=True, assemble=False, headers={})
        [start] = events(
            event("step.start", index=0, step={"type": "function_call", "id": "c", "name": "f"})
        )
        observer.observe(start)
        assert observer.started

    def test_thought_deltas_start_and_build_the_thought_step(self) -> None:
        """Summaries and the signature are flex serving already; they form a thought step."""
        raw = (
            event("step.start", index=0, step={"type": "thought"}, named=False)
            + event(
                "step.delta",
                index=0,
                delta={"type": "thought_summary", "content": {"type": "text", "text": "Let"}},
                named=False,
            )
            + event(
                "step.delta",
                index=0,
                delta={"type": "thought_summary", "content": {"type": "text", "text": " me"}},
                named=False,
            )
            + event("step.delta", index=0, delta={"type": "thought_signature", "signature": "c2ln"})
            + event("step.delta", index=1, delta={"type": "text", "text": "Hi"}, named=False)
            + event("interaction.completed", interaction={"status": "completed"}, named=False)
        )
        observer = DIALECT.observer(wants_usage=True, assemble=True, headers={})
        decoded = events(raw)
        observer.observe(decoded[0])
        assert not observer.started
        observer.observe(decoded[1])
        assert observer.started
        for item in decoded[2:]:
            observer.observe(item)
        assert observer.is_terminal(decoded[-1])  # found without an ``event:`` line too
        assert json.loads(observer.assemble())["steps"] == [
            {
                "type": "thought",
                "summary": [{"type": "text", "text": "Let me"}],
                "signature": "c2ln",
            },
            {"type": "model_output", "content": [{"type": "text", "text": "Hi"}]},
        ]

    def test_legacy_content_events_are_read(self) -> None:
        """interaction.start/content.delta/interaction.complete ("steps disabled") work too."""
        raw = (
            event("interaction.start", interaction={"id": "i", "status": "in_progress"})
            + event("content.start", index=0, content={"type": "text"})
            + event("content.delta", index=0, delta={"type": "text", "text": "Hel"})
            + event("content.delta", index=0, delta={"type": "text", "text": "lo"})
            + event(
                "interaction.complete",
                interaction={
                    "id": "i",
                    "status": "completed",
                    "outputs": [],
                    "usage": {"total_input_tokens": 3, "total_output_tokens": 2},
                },
            )
        )
        observer = observe_all(raw)
        assert observer.started
        assert observer.finished
        assert observer.usage == Usage(input_tokens=3, output_tokens=2)
        assert json.loads(observer.assemble())["outputs"] == [{"type": "text", "text": "Hello"}]

    def test_the_header_names_the_tier_when_the_body_does_not(self) -> None:
        """x-gemini-service-tier (generateContent's report) is the fallback; the body wins."""
        bare = event("interaction.completed", interaction={"status": "completed"})
        assert observe_all(bare, {"x-gemini-service-tier": "flex"}).tier_served is Tier.FLEX
        assert observe_all(RECORDED, {"x-gemini-service-tier": "standard"}).tier_served is Tier.FLEX


class TestNonStreaming:
    def test_usage_and_tier_of_a_whole_body(self) -> None:
        """A non-streaming Interaction: usage (tool-use prompt included), each modality
        summed (so audio is priced as audio), and service_tier."""
        body = {
            "id": "i",
            "status": "completed",
            "service_tier": "standard",
            "usage": {
                "total_input_tokens": 100,
                "total_tool_use_tokens": 20,
                "total_cached_tokens": 50,
                "total_output_tokens": 7,
                "total_thought_tokens": 5,
                "input_tokens_by_modality": [
                    {"modality": "text", "tokens": 60},
                    {"modality": "audio", "tokens": 40},
                ],
                "tool_use_tokens_by_modality": [{"modality": "text", "tokens": 20}],
                "cached_tokens_by_modality": [{"modality": "audio", "tokens": 50}],
                "output_tokens_by_modality": [{"modality": "text", "tokens": 7}],
            },
        }
        facts = DIALECT.read_response(dumps(body), {})
        assert facts.usage == Usage(
            input_tokens=120,
            output_tokens=12,
            cached_input_tokens=50,
            input_by_modality={"text": 80, "audio": 40},
            cached_by_modality={"audio": 50},
            output_by_modality={"text": 7},
        )
        assert facts.tier_served is Tier.STANDARD
        assert DIALECT.read_response(b"{}", {"x-gemini-service-tier": "flex"}).tier_served is (
            Tier.FLEX
        )


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "body", "kind"),
        [
            (429, {"error": {"code": "rate_limit_exceeded", "message": "m"}}, ErrorKind.CAPACITY),
            (503, {"error": {"code": "service_unavailable", "message": "m"}}, ErrorKind.CAPACITY),
            (503, {}, ErrorKind.CAPACITY),
            (200, {"error": {"code": "resource_exhausted", "message": "m"}}, ErrorKind.CAPACITY),
            (500, {"error": {"code": 503, "status": "UNAVAILABLE"}}, ErrorKind.CAPACITY),
            (400, {"error": {"code": "invalid_request", "message": "m"}}, ErrorKind.OTHER),
            (404, {"error": {"code": 404, "status": "NOT_FOUND"}}, ErrorKind.OTHER),
        ],
    )
    def test_capacity_refusals_in_both_error_shapes(
        self, status: int, body: dict[str, Any], kind: ErrorKind
    ) -> None:
        """429/503 and RESOURCE_EXHAUSTED/UNAVAILABLE codes, as strings or rpc status names."""
        assert DIALECT.classify_error(status, dumps(body)) is kind

    def test_an_in_band_error_before_output_is_a_retryable_failure(self) -> None:
        """The error event (as in the SDK's own tests) is read as the attempt's failure."""
        raw = event("interaction.created", interaction={"id": "i", "status": "in_progress"}) + (
            event("error", error={"code": "resource_exhausted", "message": "quota exceeded"})
        )
        observer = observe_all(raw)
        assert not observer.started
        assert observer.failure == {"code": "resource_exhausted", "message": "quota exceeded"}
        assert DIALECT.classify_error(200, dumps({"error": observer.failure})) is (
            ErrorKind.CAPACITY
        )

    def test_a_failed_interaction_before_output_is_a_failure(self) -> None:
        """interaction.completed with status failed and nothing produced: not a start."""
        failed = {"status": "failed", "errors": [{"code": "unavailable", "message": "busy"}]}
        observer = observe_all(event("interaction.completed", interaction=failed))
        assert not observer.started
        assert observer.failure == {"code": "unavailable", "message": "busy"}

    def test_flexroutes_errors_are_the_shape_the_sdk_parses(self) -> None:
        """A string code and a message; the 402's facts ride along as extra fields."""
        error = RequestRejected(
            402,
            "Billable flex requests are paused.",
            code="payment_required",
            extra={"reason": "card_declined", "amount_due_usd": "23.400000000"},
        )
        body = json.loads(DIALECT.error_body(error))
        assert body == {
            "error": {
                "code": "payment_required",
                "message": "Billable flex requests are paused.",
                "reason": "card_declined",
                "amount_due_usd": "23.400000000",
            }
        }
        parsed = CreateInteractionClientErrorData.model_validate(body)
        assert parsed.error.code == "payment_required"

    def test_a_broken_stream_ends_with_an_error_event(self) -> None:
        """The in-band error is an ``error`` event with Google's error object."""
        [item] = events(DIALECT.stream_error("broke off", "upstream_stream_broken"))
        assert item.event == "error"
        assert json.loads(item.data) == {
            "event_type": "error",
            "error": {"code": "upstream_stream_broken", "message": "broke off"},
        }
