"""How the providers really refuse or fail flex (issue 10, items 5–8), with the real openai SDK
through the proxy and through ``flexroute.wrap()``, against the emulator on loopback.

Item 5: a refusal inside a 200 stream is retried in the budget, then falls back. Item 6: a model
that may not be streamed is asked unstreamed, and that is remembered. Item 7: an attempt that
ends before any output falls back. Item 8: a reasoning phase, and what the ledger says of a
cancelled attempt that may have been billed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import openai
import pytest
from openai.types.responses import ResponseCompletedEvent, ResponseOutputItemAddedEvent

from flexroute import Settings, capture, wrap
from flexroute.dialects.base import ErrorKind
from flexroute.dialects.openai_chat import ChatDialect
from flexroute.dialects.openai_responses import ResponsesDialect
from flexroute.dialects.sse import encode_event, parse_event
from flexroute.ledger import LedgerRecord, open_store
from flexroute.routing.streaming import StreamRefusals
from flexroute.runtime import build_runtime
from tests.conftest import Proxy, attempts

MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


def chat(client: openai.OpenAI, emulator: str, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-5-mini")
    kwargs.setdefault("messages", MESSAGES)
    return client.chat.completions.with_raw_response.create(
        extra_headers={"x-emulator": emulator}, **kwargs
    )


def respond(client: openai.OpenAI, emulator: str, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-5-nano")
    kwargs.setdefault("input", "hi")
    return client.responses.with_raw_response.create(
        extra_headers={"x-emulator": emulator}, **kwargs
    )


def flex_log(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in record["attempt_log"] if e["tier"] == "flex"]


def outcomes_of(log: list[dict[str, Any]]) -> list[str]:
    return [e["outcome"] for e in log]


@pytest.fixture
def wrapped(settings: Settings, emulator: Any) -> Iterator[openai.OpenAI]:
    """The real openai SDK wrapped with a 2 s budget, pointed at the emulator."""
    bare = openai.OpenAI(api_key="sk-test", base_url=f"{emulator.base_url}/v1", max_retries=0)
    client = wrap(bare, start_within="2s", settings=settings)
    yield client
    client.close()


def ledger(settings: Settings, request_id: str) -> LedgerRecord:
    async def get() -> LedgerRecord | None:
        store = open_store(settings.database_url)
        try:
            return await store.get(request_id)
        finally:
            await store.aclose()

    record = anyio.run(get)
    assert record is not None
    return record


class TestRefusedInsideTheStream:
    """Item 5: ``flex_unavailable``/``resource_unavailable`` inside a 200 stream."""

    def test_an_error_event_refusal_is_retried_and_the_client_sees_only_the_flex_answer(
        self, proxy: Proxy, emulator: Any
    ) -> None:
        """A chat ``error`` chunk before any output is a refusal: flex again, then served."""
        controls = "flex_refuse=1;refuse_in_stream=error"
        raw = chat(proxy.client(), controls, extra_body={"start_within": "5s"})
        completion = raw.parse()
        assert completion.service_tier == "flex"
        assert completion.choices[0].message.content
        assert raw.headers["x-flexroute-route"] == "flex"
        request_id = raw.headers["x-flexroute-request-id"]
        seen = attempts(emulator, request_id)
        assert [(e["status"], e["tier_requested"]) for e in seen] == [(200, "flex")] * 2
        log = flex_log(proxy.record(request_id))
        assert outcomes_of(log) == ["refused", "started"]
        assert [e["billed"] for e in log] == [False, True]

    def test_a_streaming_client_never_sees_the_refused_stream(self, proxy: Proxy) -> None:
        """The refused attempt's role chunk and error stay with flexroute; one answer arrives."""
        raw = chat(
            proxy.client(),
            "flex_refuse=1;refuse_in_stream=error;refuse_code=resource_unavailable",
            stream=True,
            extra_body={"start_within": "5s"},
        )
        chunks = list(raw.parse())
        assert len({c.id for c in chunks}) == 1
        assert {c.service_tier for c in chunks} == {"flex"}
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert raw.headers["x-flexroute-route"] == "flex"

    @pytest.mark.parametrize(
        ("kind", "code"), [("failed", "flex_unavailable"), ("error", "resource_unavailable")]
    )
    def test_responses_refusals_inside_the_stream_are_retried(
        self, proxy: Proxy, emulator: Any, kind: str, code: str
    ) -> None:
        """``response.failed`` or an ``error`` event before output: retried, served at flex."""
        raw = respond(
            proxy.client(),
            f"flex_refuse=1;refuse_in_stream={kind};refuse_code={code}",
            stream=True,
            extra_body={"start_within": "5s"},
        )
        events = list(raw.parse())
        types = [e.type for e in events]
        assert types.count("response.created") == 1
        assert "error" not in types
        assert "response.failed" not in types
        assert types[-1] == "response.completed"
        assert events[-1].response.service_tier == "flex"
        request_id = raw.headers["x-flexroute-request-id"]
        assert outcomes_of(flex_log(proxy.record(request_id))) == ["refused", "started"]
        assert len(attempts(emulator, request_id)) == 2

    def test_refused_in_stream_until_the_deadline_falls_back(
        self, proxy: Proxy, emulator: Any
    ) -> None:
        """Flex refused inside every stream: standard answers, reason flex-unavailable."""
        raw = respond(
            proxy.client(),
            "flex_refuse=always;refuse_in_stream=failed",
            extra_body={"start_within": "600ms"},
        )
        assert raw.parse().service_tier == "default"
        assert raw.headers["x-flexroute-route"] == "fallback"
        assert raw.headers["x-flexroute-reason"] == "flex-unavailable"
        request_id = raw.headers["x-flexroute-request-id"]
        log = flex_log(proxy.record(request_id))
        assert log
        assert set(outcomes_of(log)) == {"refused"}
        tiers = [e["tier_requested"] for e in attempts(emulator, request_id)]
        assert tiers == ["flex"] * len(log) + ["default"]

    def test_an_in_stream_error_that_is_not_about_capacity_reaches_the_client(
        self, proxy: Proxy, emulator: Any
    ) -> None:
        """Only capacity codes are retried: any other in-band error goes to the client as is."""
        raw = chat(
            proxy.client(),
            "flex_refuse=1;refuse_in_stream=error;refuse_code=server_error",
            stream=True,
            extra_body={"start_within": "5s"},
        )
        with pytest.raises(openai.APIError, match="Flex capacity unavailable"):
            list(raw.parse())
        assert len(attempts(emulator, raw.headers["x-flexroute-request-id"])) == 1

    def test_wrapped_client_retries_a_response_failed_refusal(
        self, wrapped: openai.OpenAI, settings: Settings, emulator: Any
    ) -> None:
        """The SDK wrapper runs the same engine: refused in-stream, retried, served at flex."""
        with capture() as outcomes:
            response = wrapped.responses.create(
                model="gpt-5-nano",
                input="hi",
                extra_headers={"x-emulator": "flex_refuse=1;refuse_in_stream=failed"},
            )
        assert response.service_tier == "flex"
        assert response.output_text
        [outcome] = outcomes
        assert outcome.route == "flex"
        log = ledger(settings, outcome.request_id).attempt_log
        assert [e["outcome"] for e in log] == ["refused", "started"]


class TestStreamingRefused:
    """Item 6: OpenAI's 400 ``unsupported_value`` on ``stream`` for unverified organisations."""

    def test_a_non_streaming_client_is_served_unstreamed_and_never_sees_the_400(
        self, proxy: Proxy, emulator: Any
    ) -> None:
        """Streaming refused: the flex attempt is made again without streaming, at flex."""
        raw = chat(proxy.client(), "refuse_stream=1", extra_body={"start_within": "5s"})
        completion = raw.parse()
        assert completion.service_tier == "flex"
        assert completion.choices[0].message.content
        assert raw.headers["x-flexroute-route"] == "flex"
        assert raw.headers["x-flexroute-tier"] == "flex"
        request_id = raw.headers["x-flexroute-request-id"]
        refused, served = attempts(emulator, request_id)
        assert (refused["stream"], refused["status"]) == (True, 400)
        assert (served["stream"], served["status"]) == (False, 200)
        assert json.loads(served["raw_body"])["service_tier"] == "flex"
        record = proxy.record(request_id)
        assert record["fee_usd"] != "0.000000000"
        first, second = flex_log(record)
        assert (first["outcome"], first["status"], first["stream"]) == ("stream-refused", 400, True)
        assert (second["outcome"], second["stream"], second["why"]) == (
            "started",
            False,
            "stream-refused",
        )

    def test_the_refusal_is_remembered_for_that_model_only(
        self, proxy: Proxy, emulator: Any
    ) -> None:
        """The next request for the model goes unstreamed at once; another model still streams."""
        chat(proxy.client(), "refuse_stream=1", extra_body={"start_within": "5s"})
        again = chat(proxy.client(), "refuse_stream=1", extra_body={"start_within": "5s"})
        assert again.parse().service_tier == "flex"
        request_id = again.headers["x-flexroute-request-id"]
        [only] = attempts(emulator, request_id)
        assert (only["stream"], only["status"]) == (False, 200)
        [entry] = flex_log(proxy.record(request_id))
        assert entry["why"] == "stream-refused-earlier"
        other = chat(proxy.client(), "", model="gpt-5-nano", extra_body={"start_within": "5s"})
        [streamed] = attempts(emulator, other.headers["x-flexroute-request-id"])
        assert streamed["stream"] is True

    def test_an_unstreamed_answer_not_ready_by_the_deadline_falls_back(
        self, proxy: Proxy, emulator: Any
    ) -> None:
        """Unstreamed, started means the whole answer arrived in time; else cancel, standard."""
        raw = chat(
            proxy.client(), "refuse_stream=1;flex_queue=5", extra_body={"start_within": "500ms"}
        )
        assert raw.parse().service_tier == "default"
        assert raw.headers["x-flexroute-route"] == "fallback"
        assert raw.headers["x-flexroute-reason"] == "flex-not-started-in-time"
        request_id = raw.headers["x-flexroute-request-id"]
        _refused, cancelled, standard = attempts(emulator, request_id)
        assert cancelled["closed_early"]
        assert standard["tier_requested"] == "default"
        log = flex_log(proxy.record(request_id))
        assert outcomes_of(log) == ["stream-refused", "cancelled-at-deadline"]
        assert log[1]["billed"] == "unknown"  # the provider was working on it

    def test_a_streaming_client_gets_the_providers_400_as_is(
        self, proxy: Proxy, emulator: Any
    ) -> None:
        """A streaming client whose stream is refused gets what it would get directly."""
        with pytest.raises(openai.BadRequestError) as caught:
            chat(proxy.client(), "refuse_stream=1", stream=True, extra_body={"start_within": "5s"})
        error = caught.value
        assert error.param == "stream"
        assert error.code == "unsupported_value"
        assert "must be verified to stream" in error.message
        assert error.response.headers["x-flexroute-route"] == "flex"
        assert len(emulator.log()) == 1

    def test_wrapped_responses_call_is_served_unstreamed(
        self, wrapped: openai.OpenAI, settings: Settings, emulator: Any
    ) -> None:
        """Through wrap() on the Responses API: refused stream, unstreamed flex answer."""
        with capture() as outcomes:
            response = wrapped.responses.create(
                model="gpt-5-nano", input="hi", extra_headers={"x-emulator": "refuse_stream=1"}
            )
        assert response.service_tier == "flex"
        assert response.output_text
        [outcome] = outcomes
        assert (outcome.route, outcome.tier_served) == ("flex", "flex")
        assert [e["stream"] for e in emulator.log()] == [True, False]
        log = ledger(settings, outcome.request_id).attempt_log
        assert [e["outcome"] for e in log] == ["stream-refused", "started"]


class TestStreamRefusals:
    """The memory of refused streaming: per (provider, model), an hour, bounded."""

    def test_a_refusal_lapses_after_the_ttl(self) -> None:
        """Remembered until the hour is over, then streaming is tried again."""
        now = [1000.0]
        memory = StreamRefusals(clock=lambda: now[0])
        memory.remember("openai", "o3")
        assert memory.refused("openai", "o3")
        assert not memory.refused("openai", "gpt-5")
        assert not memory.refused("gemini", "o3")
        now[0] += 3599.0
        assert memory.refused("openai", "o3")
        now[0] += 1.0
        assert not memory.refused("openai", "o3")
        assert memory.statistics()["remembered"] == 0

    def test_it_keeps_at_most_max_entries_dropping_the_oldest(self) -> None:
        """A flood of models cannot grow it: the least recently refused go first."""
        memory = StreamRefusals(max_entries=2, clock=lambda: 0.0)
        for model in ("a", "b", "c"):
            memory.remember("openai", model)
        assert [memory.refused("openai", m) for m in ("a", "b", "c")] == [False, True, True]
        memory.remember("openai", "b")  # refreshed: now the newest
        memory.remember("openai", "d")
        assert [memory.refused("openai", m) for m in ("b", "c", "d")] == [True, False, True]

    def test_each_engine_has_its_own_memory(self, tmp_path: Path) -> None:
        """Two proxies never share what one of them learned."""
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'l.sqlite3'}")

        async def main() -> tuple[bool, bool]:
            one, two = build_runtime(settings), build_runtime(settings)
            try:
                one.engine.stream_refusals.remember("openai", "o3")
                refusals = (one.engine.stream_refusals, two.engine.stream_refusals)
                return refusals[0].refused("openai", "o3"), refusals[1].refused("openai", "o3")
            finally:
                await one.aclose()
                await two.aclose()

        assert anyio.run(main) == (True, False)

    def test_a_bound_below_one_is_refused(self) -> None:
        """A memory that could hold nothing is a configuration mistake."""
        with pytest.raises(ValueError, match="max_entries"):
            StreamRefusals(max_entries=0)


FAULTS = [
    ("empty", "empty-body"),
    ("html", "not-a-stream"),
    ("close", "ended-before-output"),
    ("drop", "broken"),
]


class TestEndedBeforeOutput:
    """Item 7: a flex attempt that ends before any output falls back; nothing reached the
    client yet."""

    @pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
    @pytest.mark.parametrize(("fault", "outcome"), FAULTS, ids=[f for f, _ in FAULTS])
    def test_the_request_falls_back_to_standard(
        self, proxy: Proxy, emulator: Any, fault: str, outcome: str, stream: bool
    ) -> None:
        """Empty 200, HTML 200, a stream closed or dropped first: standard answers at once."""
        raw = chat(
            proxy.client(), f"flex_fault={fault}", stream=stream, extra_body={"start_within": "5s"}
        )
        if stream:
            chunks = list(raw.parse())
            assert {c.service_tier for c in chunks} == {"default"}
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            assert raw.parse().service_tier == "default"
            assert raw.parse().choices[0].message.content
        assert raw.headers["x-flexroute-route"] == "fallback"
        assert raw.headers["x-flexroute-reason"] == "flex-error"
        assert int(raw.headers["x-flexroute-flex-wait-ms"]) < 2500  # no wait for the deadline
        request_id = raw.headers["x-flexroute-request-id"]
        record = proxy.record(request_id)
        [entry] = flex_log(record)
        assert (entry["outcome"], entry["status"], entry["billed"]) == (outcome, 200, False)
        assert record["status"] == "ok"
        flex, standard = attempts(emulator, request_id)
        assert (flex["tier_requested"], standard["tier_requested"]) == ("flex", "default")

    def test_an_unstreamed_attempt_answered_with_html_falls_back(
        self, proxy: Proxy, emulator: Any
    ) -> None:
        """Unstreamed (streaming refused), a 200 that is not JSON is no answer either."""
        raw = chat(
            proxy.client(), "refuse_stream=1;flex_fault=html", extra_body={"start_within": "5s"}
        )
        assert raw.parse().service_tier == "default"
        assert raw.headers["x-flexroute-reason"] == "flex-error"
        log = flex_log(proxy.record(raw.headers["x-flexroute-request-id"]))
        assert outcomes_of(log) == ["stream-refused", "not-json"]

    def test_wrapped_client_falls_back_from_an_empty_200(
        self, wrapped: openai.OpenAI, emulator: Any
    ) -> None:
        """The wrapper's client gets the standard answer, never an empty body."""
        with capture() as outcomes:
            completion = wrapped.chat.completions.create(
                model="gpt-5-mini",
                messages=MESSAGES,
                extra_headers={"x-emulator": "flex_fault=empty"},
            )
        assert completion.service_tier == "default"
        assert completion.choices[0].message.content
        [outcome] = outcomes
        assert (outcome.route, outcome.reason) == ("fallback", "flex-error")


class TestReasoning:
    """Item 8: a silent reasoning phase, the Responses API's reasoning item, and the ledger's
    word on a cancelled attempt the provider may bill."""

    def test_the_emulator_streams_a_reasoning_item_then_silence_then_the_message(
        self, client: openai.OpenAI, emu: Any
    ) -> None:
        """As the real API: reasoning item added at once, done after the thinking, message at 1.

        The SDK parses the stream; the timing is read off the raw bytes (the SDK's SSE decoder
        may hold an event back until the next chunk arrives)."""
        headers = {"x-emulator": "reasoning_time=0.4;reasoning_tokens=64"}
        events = list(
            client.responses.create(
                model="o4-mini", input="think", stream=True, extra_headers=headers
            )
        )
        assert [e.type for e in events[:5]] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.output_item.done",
            "response.output_item.added",
        ]
        added = [e for e in events if isinstance(e, ResponseOutputItemAddedEvent)]
        assert [(e.item.type, e.output_index) for e in added] == [("reasoning", 0), ("message", 1)]
        final = events[-1]
        assert isinstance(final, ResponseCompletedEvent)
        assert [item.type for item in final.response.output] == ["reasoning", "message"]
        arrivals: dict[str, float] = {}
        body = {"model": "o4-mini", "input": "think", "stream": True}
        with (
            httpx2.Client(timeout=10) as http,
            http.stream("POST", f"{emu.base_url}/v1/responses", json=body, headers=headers) as r,
        ):
            for chunk in r.iter_raw():
                for line in chunk.decode().splitlines():
                    if line.startswith("event: "):
                        arrivals.setdefault(line[7:], time.monotonic())
        thinking = arrivals["response.output_item.done"] - arrivals["response.output_item.added"]
        assert thinking >= 0.35
        assert arrivals["response.output_text.delta"] >= arrivals["response.output_item.done"]
        whole = client.responses.create(
            model="o4-mini", input="think", extra_headers={"x-emulator": "reasoning_time=0"}
        )
        assert [item.type for item in whole.output] == ["reasoning", "message"]
        assert whole.output_text

    def test_chat_thinking_past_the_deadline_falls_back_and_says_billed_unknown(
        self, proxy: Proxy
    ) -> None:
        """Chat shows nothing while it thinks: cancelled after HTTP 200, billed "unknown"."""
        raw = chat(
            proxy.client(),
            "flex_queue=0.05;reasoning_time=1.2",  # the standard call thinks as long
            model="o4-mini",
            extra_body={"start_within": "500ms"},
        )
        assert raw.parse().service_tier == "default"
        assert raw.headers["x-flexroute-reason"] == "flex-not-started-in-time"
        [entry] = flex_log(proxy.record(raw.headers["x-flexroute-request-id"]))
        assert (entry["outcome"], entry["status"]) == ("cancelled-at-deadline", 200)
        assert entry["billed"] == "unknown"
        assert 450 <= entry["elapsed_ms"] <= 1500

    def test_a_responses_reasoning_item_is_the_start(self, proxy: Proxy, emulator: Any) -> None:
        """On the Responses API the reasoning item commits flex: served at flex after a think
        longer than the budget, one attempt."""
        raw = respond(
            proxy.client(),
            "flex_queue=0.05;reasoning_time=1",
            model="o4-mini",
            extra_body={"start_within": "500ms"},
        )
        response = raw.parse()
        assert response.service_tier == "flex"
        assert [item.type for item in response.output] == ["reasoning", "message"]
        assert raw.headers["x-flexroute-route"] == "flex"
        assert int(raw.headers["x-flexroute-flex-wait-ms"]) < 500
        request_id = raw.headers["x-flexroute-request-id"]
        [entry] = flex_log(proxy.record(request_id))
        assert (entry["outcome"], entry["billed"]) == ("started", True)
        assert len(attempts(emulator, request_id)) == 1

    def test_a_flex_attempt_refused_before_acceptance_is_recorded_unbilled(
        self, proxy: Proxy
    ) -> None:
        """A 429 refusal is never billed: the entry says so explicitly, never by omission."""
        controls = "flex_refuse=1;retry_after=0.01"
        raw = chat(proxy.client(), controls, extra_body={"start_within": "5s"})
        log = flex_log(proxy.record(raw.headers["x-flexroute-request-id"]))
        assert [(e["outcome"], e["billed"]) for e in log] == [("refused", False), ("started", True)]

    def test_wrapped_chat_that_thinks_inside_the_budget_is_served_at_flex(
        self, wrapped: openai.OpenAI
    ) -> None:
        """A think shorter than the budget starts in time: flex."""
        with capture() as outcomes:
            completion = wrapped.chat.completions.create(
                model="o4-mini",
                messages=MESSAGES,
                extra_headers={"x-emulator": "reasoning_time=0.2;reasoning_tokens=32"},
            )
        assert completion.service_tier == "flex"
        assert completion.usage is not None
        assert completion.usage.completion_tokens_details is not None
        assert completion.usage.completion_tokens_details.reasoning_tokens == 32
        [outcome] = outcomes
        assert outcome.route == "flex"


class TestSignals:
    """What the OpenAI dialects read off a refusal or an event: by code and type, not message."""

    @pytest.mark.parametrize(
        ("status", "error", "kind"),
        [
            (400, {"param": "stream", "code": "unsupported_value"}, ErrorKind.STREAM_REFUSED),
            (400, {"param": "temperature", "code": "unsupported_value"}, ErrorKind.OTHER),
            (200, {"code": "flex_unavailable"}, ErrorKind.CAPACITY),
            (200, {"code": "resource_unavailable"}, ErrorKind.CAPACITY),
            (200, {"code": "server_error"}, ErrorKind.OTHER),
            (429, {"code": "insufficient_quota"}, ErrorKind.OTHER),
            (429, {"code": "flex_unavailable"}, ErrorKind.CAPACITY),
        ],
    )
    def test_classify_error(self, status: int, error: dict[str, str], kind: ErrorKind) -> None:
        """Streaming refused, capacity (in a body or a stream) and the rest, for both APIs."""
        body = json.dumps({"error": {"message": "whatever it says", **error}}).encode()
        for dialect in (ChatDialect(), ResponsesDialect()):
            assert dialect.classify_error(status, body) is kind

    @pytest.mark.parametrize(
        "data",
        [
            {"type": "error", "code": "flex_unavailable", "message": "m", "param": None},
            {"type": "error", "status": 429, "error": {"code": "flex_unavailable", "message": "m"}},
        ],
        ids=["api-reference", "codex"],
    )
    def test_both_shapes_of_the_error_event_are_read(self, data: dict[str, Any]) -> None:
        """Top-level code (the API reference) or a nested error object (as Codex reads it)."""
        observer = ResponsesDialect().observer(wants_usage=False, assemble=False, headers={})
        observer.observe(parse_event(encode_event(json.dumps(data), event="error")))
        assert observer.failure is not None
        assert observer.failure["code"] == "flex_unavailable"
        assert not observer.started

    def test_a_comment_is_not_output_but_a_reasoning_item_is(self) -> None:
        """A keep-alive comment does not commit flex; the reasoning output item does."""
        observer = ResponsesDialect().observer(wants_usage=False, assemble=False, headers={})
        observer.observe(parse_event(b": keep-alive\n\n"))
        assert not observer.started
        item = {"id": "rs_1", "type": "reasoning", "summary": []}
        kind = "response.output_item.added"
        added = {"type": kind, "output_index": 0, "item": item}
        observer.observe(parse_event(encode_event(json.dumps(added), event=kind)))
        assert observer.started
