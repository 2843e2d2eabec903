"""The OpenAI dialects: request facts, body rewriting, start detection, usage, assembly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flexroute.dialects.base import MISSING, ErrorKind, Observer, retry_after_seconds
from flexroute.dialects.openai_chat import ChatDialect
from flexroute.dialects.openai_responses import ResponsesDialect
from flexroute.dialects.sse import SSEDecoder, encode_event
from flexroute.errors import UpstreamMalformed
from flexroute.usage import Tier, Usage

CHAT = ChatDialect()
RESPONSES = ResponsesDialect()


def chunk(delta: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-5-mini",
        "service_tier": "flex",
        "system_fingerprint": "fp",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": None}],
    }
    body.update(extra)
    return body


def sse(*objects: dict[str, Any] | str) -> bytes:
    return b"".join(
        encode_event(o if isinstance(o, str) else json.dumps(o, separators=(",", ":")))
        for o in objects
    )


USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 20,
    "total_tokens": 120,
    "prompt_tokens_details": {"cached_tokens": 40},
    "completion_tokens_details": {"reasoning_tokens": 5},
}


class TestChatRequest:
    def test_reads_facts_from_the_body(self) -> None:
        """Model, tier, stream flag, start_within and the usage request are read as sent."""
        body = {
            "model": "gpt-5",
            "service_tier": "flex",
            "stream": True,
            "stream_options": {"include_usage": True},
            "start_within": "30s",
        }
        facts = CHAT.read(body, "/v1/chat/completions")
        assert (facts.model, facts.tier, facts.stream, facts.start_within) == (
            "gpt-5",
            "flex",
            True,
            "30s",
        )
        assert facts.wants_usage
        bare = CHAT.read({"model": "gpt-5"}, "/v1/chat/completions")
        assert bare.start_within is MISSING
        assert not bare.stream
        assert not bare.wants_usage

    def test_prepare_sets_tier_and_asks_usage_without_losing_fields(self) -> None:
        """start_within is removed, the tier set, usage asked, unknown fields kept."""
        body = {"model": "gpt-5", "start_within": "1s", "x_custom": [1, 2], "stream_options": {}}
        out = json.loads(CHAT.prepare(body, tier=Tier.FLEX, stream=True, ask_usage=True))
        assert out == {
            "model": "gpt-5",
            "x_custom": [1, 2],
            "service_tier": "flex",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        standard = json.loads(CHAT.prepare(body, tier=Tier.STANDARD, stream=False, ask_usage=True))
        assert standard["service_tier"] == "default"
        assert "stream" not in standard
        assert "start_within" not in standard
        assert body["start_within"] == "1s"  # the caller's dict is not mutated

    @pytest.mark.parametrize(
        ("status", "body", "kind"),
        [
            (429, {"error": {"code": "resource_unavailable"}}, ErrorKind.CAPACITY),
            (429, {"error": {"code": "rate_limit_exceeded"}}, ErrorKind.CAPACITY),
            (503, {"error": {"code": None}}, ErrorKind.CAPACITY),
            (429, {"error": {"code": "insufficient_quota"}}, ErrorKind.OTHER),
            (400, {"error": {"code": "invalid_value"}}, ErrorKind.OTHER),
            (500, {"error": {}}, ErrorKind.OTHER),
        ],
    )
    def test_classifies_capacity_refusals(
        self, status: int, body: dict[str, Any], kind: ErrorKind
    ) -> None:
        """429/503 and resource_unavailable are capacity; quota and client errors are not."""
        assert CHAT.classify_error(status, json.dumps(body).encode()) is kind


class TestChatStream:
    def test_role_chunk_is_not_a_start_but_content_is(self) -> None:
        """The first role-only chunk does not start flex; the first content delta does."""
        observer = CHAT.observer(wants_usage=True, assemble=False, headers={})
        [role, content] = SSEDecoder().feed(
            sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}))
        )
        observer.observe(role)
        assert not observer.started
        observer.observe(content)
        assert observer.started
        assert observer.tier_served is Tier.FLEX

    @pytest.mark.parametrize(
        "delta",
        [
            {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]},
            {"refusal": "No."},
        ],
    )
    def test_tool_calls_and_refusals_start(self, delta: dict[str, Any]) -> None:
        """Tool-call and refusal deltas count as first output."""
        observer = CHAT.observer(wants_usage=True, assemble=False, headers={})
        [event] = SSEDecoder().feed(sse(chunk(delta)))
        observer.observe(event)
        assert observer.started

    def test_usage_chunk_is_hidden_from_clients_that_did_not_ask(self) -> None:
        """The usage chunk and the usage:null fields vanish; usage is still read."""
        stream = sse(
            chunk({"content": "Hi"}, usage=None),
            {**chunk(), "choices": [], "usage": USAGE},
            "[DONE]",
        )
        observer = CHAT.observer(wants_usage=False, assemble=False, headers={})
        out = [observer.observe(e) for e in SSEDecoder().feed(stream)]
        assert out[1] is None
        first = json.loads(out[0][len(b"data: ") :])  # type: ignore[index]
        assert "usage" not in first
        assert first["choices"][0]["delta"] == {"content": "Hi"}
        assert out[2] == b"data: [DONE]\n\n"
        assert observer.usage == Usage(input_tokens=100, output_tokens=20, cached_input_tokens=40)
        assert observer.finished

    def test_usage_chunk_is_kept_for_clients_that_asked(self) -> None:
        """A client that asked for usage sees the provider's bytes unchanged."""
        stream = sse(
            chunk({"content": "Hi"}, usage=None), {**chunk(), "choices": [], "usage": USAGE}
        )
        observer = CHAT.observer(wants_usage=True, assemble=False, headers={})
        events = list(SSEDecoder().feed(stream))
        assert [observer.observe(e) for e in events] == [e.raw for e in events]

    def test_assembles_a_faithful_completion(self) -> None:
        """Content, tool calls, finish reason, usage and tier are assembled as non-stream."""
        call = {"index": 0, "id": "call_1", "type": "function"}
        stream = sse(
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({"tool_calls": [{**call, "function": {"name": "get", "arguments": '{"a"'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            {**chunk(), "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            {**chunk(), "choices": [], "usage": USAGE},
            "[DONE]",
        )
        observer = CHAT.observer(wants_usage=False, assemble=True, headers={})
        for event in SSEDecoder().feed(stream):
            observer.observe(event)
        body = json.loads(observer.assemble())
        assert body["object"] == "chat.completion"
        assert body["id"] == "chatcmpl-1"
        assert body["service_tier"] == "flex"
        assert body["usage"] == USAGE
        [choice] = body["choices"]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] == "Hello"
        assert choice["message"]["tool_calls"] == [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get", "arguments": '{"a":1}'},
            }
        ]

    def test_stream_error_is_an_event_the_sdk_raises_on(self) -> None:
        """The in-band error carries an ``error`` object with message and code."""
        [event] = SSEDecoder().feed(CHAT.stream_error("broke", "upstream_stream_broken"))
        assert json.loads(event.data)["error"]["code"] == "upstream_stream_broken"


def rev(kind: str, **data: Any) -> bytes:
    return encode_event(json.dumps({"type": kind, **data}), event=kind)


class TestChatStreamAfterStart:
    """After the first output, chunks are relayed without parsing unless they may carry
    usage or an error (the relay's hot path); the outcome is as if each had been parsed."""

    def started(self, wants_usage: bool) -> Observer:
        observer = CHAT.observer(wants_usage=wants_usage, assemble=False, headers={})
        [first] = SSEDecoder().feed(sse(chunk({"content": "Hi"}, usage=None)))
        observer.observe(first)
        assert observer.started
        return observer

    def test_content_chunks_keep_their_bytes_and_lose_only_usage_null(self) -> None:
        """A client that asked for usage sees the bytes as sent; one that did not, without
        the ``"usage":null`` flexroute's stream_options added."""
        events = list(SSEDecoder().feed(sse(chunk({"content": " there"}, usage=None))))
        assert [self.started(True).observe(e) for e in events] == [e.raw for e in events]
        [out] = [self.started(False).observe(e) for e in events]
        assert out == events[0].raw.replace(b',"usage":null', b"")

    def test_the_usage_chunk_is_still_read_and_hidden(self) -> None:
        """The last chunk's usage is priced; a client that did not ask never sees it."""
        observer = self.started(False)
        stream = sse({**chunk(), "choices": [], "usage": USAGE}, "[DONE]")
        out = [observer.observe(e) for e in SSEDecoder().feed(stream)]
        assert out == [None, b"data: [DONE]\n\n"]
        assert observer.usage == Usage(input_tokens=100, output_tokens=20, cached_input_tokens=40)

    def test_a_word_usage_in_the_text_is_parsed_not_mistaken(self) -> None:
        """A delta whose text is the word "usage" goes the slow way and comes out intact."""
        observer = self.started(False)
        [event] = SSEDecoder().feed(sse(chunk({"content": "usage"}, usage=None)))
        out = observer.observe(event)
        assert json.loads(out[len(b"data: ") :])["choices"][0]["delta"] == {"content": "usage"}  # type: ignore[index]
        assert observer.usage is None

    def test_an_error_after_the_start_is_seen(self) -> None:
        """An in-band error event mid-stream is read, as before the start."""
        observer = self.started(True)
        [event] = SSEDecoder().feed(sse({"error": {"message": "boom", "code": "server_error"}}))
        observer.observe(event)
        assert observer.failure == {"message": "boom", "code": "server_error"}

    def test_garbage_after_the_start_is_the_providers_malformed_stream(self) -> None:
        """Data that is not a JSON object never reaches the client's SDK."""
        observer = self.started(True)
        [event] = SSEDecoder().feed(b"data: <html>oops</html>\n\n")
        with pytest.raises(UpstreamMalformed):
            observer.observe(event)


class TestResponsesStream:
    def test_created_and_in_progress_are_not_a_start(self) -> None:
        """Only an output event starts the attempt; the completed event is terminal."""
        response = {
            "id": "resp_1",
            "status": "completed",
            "service_tier": "flex",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 3,
                "input_tokens_details": {"cached_tokens": 2},
            },
        }
        stream = (
            rev("response.created", response={"id": "resp_1", "status": "in_progress"})
            + rev("response.in_progress", response={"id": "resp_1"})
            + rev("response.output_item.added", item={})
            + rev("response.completed", response=response)
        )
        observer = RESPONSES.observer(wants_usage=False, assemble=True, headers={})
        events = list(SSEDecoder().feed(stream))
        observer.observe(events[0])
        observer.observe(events[1])
        assert not observer.started
        observer.observe(events[2])
        assert observer.started
        assert observer.is_terminal(events[3])
        observer.observe(events[3])
        assert observer.finished
        assert observer.tier_served is Tier.FLEX
        assert observer.usage == Usage(input_tokens=10, output_tokens=3, cached_input_tokens=2)
        assert json.loads(observer.assemble()) == response


class TestRetryAfter:
    def test_reads_seconds_milliseconds_and_dates(self) -> None:
        """retry-after-ms wins, then retry-after as seconds or an HTTP date."""
        assert retry_after_seconds({"retry-after": "2"}) == 2.0
        assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
        assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
        assert retry_after_seconds({"retry-after": "soon"}) is None
        assert retry_after_seconds({}) is None
