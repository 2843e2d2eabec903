"""The Gemini and Anthropic dialects: facts, targets, start detection, usage, assembly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flexroute.dialects.anthropic import AnthropicDialect, anthropic_usage
from flexroute.dialects.base import ErrorKind
from flexroute.dialects.gemini import GeminiDialect
from flexroute.dialects.sse import SSEDecoder, encode_event
from flexroute.usage import Tier, Usage

GEMINI = GeminiDialect()
ANTHROPIC = AnthropicDialect()
PATH = "/v1beta/models/gemini-2.5-flash:generateContent"


def gchunk(parts: list[dict[str, Any]], finish: str | None = None, **usage: int) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-2.5-flash"}
    if usage:
        body["usageMetadata"] = usage
    return encode_event(json.dumps(body))


class TestGemini:
    def test_reads_the_model_from_the_path_and_tier_from_either_spelling(self) -> None:
        """The SDK sends serviceTier; service_tier is accepted too."""
        facts = GEMINI.read({"serviceTier": "FLEX", "start_within": "5s"}, PATH)
        assert (facts.model, facts.tier, facts.stream, facts.start_within) == (
            "gemini-2.5-flash",
            "flex",
            False,
            "5s",
        )
        stream = GEMINI.read(
            {"service_tier": "standard"}, PATH.replace(":generate", ":streamGenerate")
        )
        assert stream.tier == "standard"
        assert stream.stream

    def test_streams_a_non_streaming_call_through_the_sse_method(self) -> None:
        """A flex attempt for generateContent goes to streamGenerateContent?alt=sse."""
        assert GEMINI.upstream_target(PATH, "", True).endswith(":streamGenerateContent?alt=sse")
        assert GEMINI.upstream_target(PATH, "key=k", False) == f"{PATH}?key=k"

    def test_prepare_keeps_the_clients_spelling(self) -> None:
        """The tier is written under the key the client used; start_within is removed."""
        out = json.loads(
            GEMINI.prepare(
                {"service_tier": "flex", "start_within": 1, "contents": []},
                tier=Tier.STANDARD,
                stream=False,
                ask_usage=True,
            )
        )
        assert out == {"service_tier": "standard", "contents": []}

    def test_flex_attempts_carry_a_server_timeout(self) -> None:
        """X-Server-Timeout tells Google to stop queueing when the budget ends."""
        assert GEMINI.attempt_headers(Tier.FLEX, 2.2) == [("x-server-timeout", "3")]
        assert GEMINI.attempt_headers(Tier.STANDARD, 2.2) == []

    def test_empty_parts_do_not_start_and_usage_is_cumulative(self) -> None:
        """An empty text part is not output; the last usageMetadata counts."""
        observer = GEMINI.observer(
            wants_usage=True, assemble=True, headers={"x-gemini-service-tier": "flex"}
        )
        events = list(
            SSEDecoder().feed(
                gchunk([{"text": ""}], promptTokenCount=50, cachedContentTokenCount=10)
                + gchunk([{"text": "Hel"}], promptTokenCount=50, candidatesTokenCount=1)
                + gchunk(
                    [{"text": "lo"}],
                    "STOP",
                    promptTokenCount=50,
                    cachedContentTokenCount=10,
                    candidatesTokenCount=2,
                    thoughtsTokenCount=7,
                )
            )
        )
        observer.observe(events[0])
        assert not observer.started
        observer.observe(events[1])
        assert observer.started
        assert observer.is_terminal(events[2])
        observer.observe(events[2])
        assert observer.finished
        assert observer.tier_served is Tier.FLEX
        assert observer.usage == Usage(input_tokens=50, output_tokens=9, cached_input_tokens=10)
        body = json.loads(observer.assemble())
        assert body["candidates"][0]["content"]["parts"] == [{"text": "Hello"}]
        assert body["candidates"][0]["finishReason"] == "STOP"
        assert body["usageMetadata"]["thoughtsTokenCount"] == 7

    @pytest.mark.parametrize(
        ("status", "kind"),
        [(503, ErrorKind.CAPACITY), (429, ErrorKind.CAPACITY), (400, ErrorKind.OTHER)],
    )
    def test_unavailable_and_resource_exhausted_are_capacity(
        self, status: int, kind: ErrorKind
    ) -> None:
        """Both flex refusals are retried inside the budget."""
        assert GEMINI.classify_error(status, b"{}") is kind


class TestAnthropic:
    def test_usage_adds_cache_counts_into_input(self) -> None:
        """Plain, cache-read and cache-write tokens sum to input; 1h writes are split out."""
        usage = anthropic_usage(
            {
                "input_tokens": 10,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 30,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 20,
                    "ephemeral_1h_input_tokens": 10,
                },
                "output_tokens": 5,
                "service_tier": "standard",
            }
        )
        assert usage == Usage(
            input_tokens=140,
            output_tokens=5,
            cached_input_tokens=100,
            cache_write_tokens=20,
            cache_write_1h_tokens=10,
        )

    def test_stream_usage_is_message_start_plus_the_last_delta(self) -> None:
        """message_delta's cumulative output replaces the start's; input stays."""
        start = {
            "type": "message_start",
            "message": {
                "usage": {
                    "input_tokens": 12,
                    "cache_read_input_tokens": 3,
                    "output_tokens": 1,
                    "service_tier": "standard",
                }
            },
        }
        delta = {"type": "message_delta", "usage": {"output_tokens": 40}}
        stream = (
            encode_event(json.dumps(start), "message_start")
            + encode_event(json.dumps(delta), "message_delta")
            + encode_event('{"type":"message_stop"}', "message_stop")
        )
        observer = ANTHROPIC.observer(wants_usage=True, assemble=False, headers={})
        for event in SSEDecoder().feed(stream):
            observer.observe(event)
        assert observer.usage == Usage(input_tokens=15, output_tokens=40, cached_input_tokens=3)
        assert observer.tier_served is Tier.STANDARD
        assert observer.finished

    def test_prepare_removes_only_start_within(self) -> None:
        """Claude requests go upstream unchanged but for start_within."""
        body = {"model": "claude-sonnet-4-5", "service_tier": "standard_only", "start_within": "5s"}
        out = json.loads(ANTHROPIC.prepare(body, tier=None, stream=False, ask_usage=False))
        assert out == {"model": "claude-sonnet-4-5", "service_tier": "standard_only"}
