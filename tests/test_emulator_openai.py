"""The emulator's OpenAI chat completions, driven by the real ``openai`` SDK over loopback."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import openai
import pytest

from flexroute.testing import RunningEmulator

MESSAGES: Any = [{"role": "user", "content": "Say something about flex capacity."}]


def controls(value: str) -> dict[str, Any]:
    return {"extra_headers": {"x-emulator": value}}


def sse_data(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


class TestChatCompletions:
    def test_flex_request_reports_flex_tier(self, client: openai.OpenAI) -> None:
        """A non-streaming flex request is answered with service_tier "flex" and text."""
        completion = client.chat.completions.create(
            model="gpt-5-mini", messages=MESSAGES, service_tier="flex"
        )
        assert completion.object == "chat.completion"
        assert completion.service_tier == "flex"
        assert completion.choices[0].message.content
        assert completion.choices[0].finish_reason == "stop"

    @pytest.mark.parametrize(
        ("requested", "served"),
        [(None, "default"), ("auto", "default"), ("default", "default"), ("priority", "priority")],
    )
    def test_other_tiers_reported(self, client: openai.OpenAI, requested: Any, served: str) -> None:
        """Default, auto or absent tiers are served as "default"; priority as "priority"."""
        extra = {} if requested is None else {"service_tier": requested}
        completion = client.chat.completions.create(model="gpt-5", messages=MESSAGES, **extra)
        assert completion.service_tier == served

    def test_serve_tier_overrides_the_request(self, client: openai.OpenAI) -> None:
        """``serve_tier`` makes the emulator report a tier other than the one asked for."""
        completion = client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, service_tier="flex", **controls("serve_tier=default")
        )
        assert completion.service_tier == "default"

    def test_usage_follows_the_controls(self, client: openai.OpenAI) -> None:
        """Prompt, cached and reasoning token figures come from the control header."""
        completion = client.chat.completions.create(
            model="gpt-5",
            messages=MESSAGES,
            **controls("prompt_tokens=1200;cached_tokens=200;reasoning_tokens=30;tokens=5"),
        )
        usage = completion.usage
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens) == (1200, 35)
        assert usage.total_tokens == 1235
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 200
        assert usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == 30

    def test_prompt_tokens_estimated_from_input(self, client: openai.OpenAI) -> None:
        """Without ``prompt_tokens`` the prompt is counted at about four characters a token."""
        text = "x" * 400
        completion = client.chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": text}]
        )
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == 100

    def test_stream_carries_tier_on_every_chunk(self, client: openai.OpenAI) -> None:
        """Every chunk names the tier; the first carries the role, the last a finish reason."""
        chunks = list(
            client.chat.completions.create(
                model="gpt-5-mini",
                messages=MESSAGES,
                service_tier="flex",
                stream=True,
                **controls("tokens=4"),
            )
        )
        assert {chunk.service_tier for chunk in chunks} == {"flex"}
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[0].choices[0].delta.content == ""
        assert [c.choices[0].delta.content for c in chunks[1:5]] == [
            "Flex ",
            "capacity ",
            "is ",
            "cheaper.",
        ]
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert all(chunk.usage is None for chunk in chunks)

    def test_include_usage_adds_a_usage_chunk(self, client: openai.OpenAI) -> None:
        """With include_usage a final chunk has no choices and the usage object."""
        chunks = list(
            client.chat.completions.create(
                model="gpt-5",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                **controls("tokens=3;prompt_tokens=9"),
            )
        )
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 3
        assert chunks[-1].usage.prompt_tokens == 9
        assert all(chunk.usage is None for chunk in chunks[:-1])

    def test_wire_bytes_follow_openai(self, emu: RunningEmulator) -> None:
        """Raw stream: ``data:`` events, ``"usage":null`` only with include_usage, then [DONE]."""
        body = {"model": "gpt-5", "messages": MESSAGES, "stream": True}
        with_usage = {**body, "stream_options": {"include_usage": True}}
        plain = httpx2.post(f"{emu.base_url}/v1/chat/completions", json=body)
        counted = httpx2.post(f"{emu.base_url}/v1/chat/completions", json=with_usage)
        assert plain.headers["content-type"].startswith("text/event-stream")
        assert sse_data(plain.text)[-1] == "[DONE]"
        assert all('"usage"' not in data for data in sse_data(plain.text))
        assert all('"usage":null' in data for data in sse_data(counted.text)[:-2]), (
            "every chunk but the usage chunk carries usage: null"
        )
        assert json.loads(sse_data(counted.text)[-2])["choices"] == []

    def test_tool_call_is_streamed_as_tool_call_deltas(self, client: openai.OpenAI) -> None:
        """``tool_call=1`` streams a function call whose argument pieces join into JSON."""
        stream = client.chat.completions.create(
            model="gpt-5",
            messages=MESSAGES,
            stream=True,
            tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
            **controls("tool_call=1;tokens=3"),
        )
        calls = [c.choices[0].delta.tool_calls for c in stream if c.choices]
        pieces = [call[0] for call in calls if call]
        assert len(pieces) == 3
        assert pieces[0].function is not None
        assert pieces[0].function.name == "lookup"
        assert json.loads("".join(p.function.arguments or "" for p in pieces if p.function))

    def test_tool_call_non_stream(self, client: openai.OpenAI) -> None:
        """A non-streaming tool call ends with finish_reason "tool_calls"."""
        completion = client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, **controls("tool_call=1")
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        assert choice.message.content is None

    def test_refusal(self, client: openai.OpenAI) -> None:
        """``refusal=1`` answers with a refusal message instead of content."""
        completion = client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, **controls("refusal=1")
        )
        assert completion.choices[0].message.refusal
        assert completion.choices[0].message.content is None

    def test_break_after_fails_the_sdk_stream(self, client: openai.OpenAI) -> None:
        """``break_after`` drops the connection midway, and the SDK's iteration raises."""
        stream = client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, stream=True, **controls("break_after=2")
        )
        seen: list[str] = []
        with pytest.raises((openai.APIConnectionError, httpx2.HTTPError)):
            seen.extend(chunk.choices[0].delta.content or "" for chunk in stream)
        assert seen == ["", "Flex ", "capacity "]

    def test_response_headers(self, client: openai.OpenAI) -> None:
        """Responses carry x-request-id, processing time and the rate-limit headers."""
        raw = client.chat.completions.with_raw_response.create(model="gpt-5", messages=MESSAGES)
        for name in (
            "x-request-id",
            "openai-processing-ms",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ):
            assert raw.headers.get(name), name
        assert raw.headers["content-type"] == "application/json"


class TestQueues:
    def test_stream_sends_the_preamble_before_the_queue(self, emu: RunningEmulator) -> None:
        """A queued flex stream sends headers and the role chunk at once, content later."""
        body = {"model": "gpt-5", "messages": MESSAGES, "stream": True, "service_tier": "flex"}
        started = time.monotonic()
        with httpx2.stream(
            "POST",
            f"{emu.base_url}/v1/chat/completions",
            json=body,
            headers={"x-emulator": "flex_queue=0.4"},
        ) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line)
            first_at = time.monotonic() - started
            second = next(line for line in lines if line)
            second_at = time.monotonic() - started
        assert '"role":"assistant"' in first
        assert '"content":"Flex "' in second
        assert first_at < 0.3 <= 0.4 <= second_at + 0.05

    def test_non_stream_waits_for_the_queue(self, client: openai.OpenAI) -> None:
        """A non-streaming request is answered after its tier's queue delay."""
        started = time.monotonic()
        client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, **controls("standard_queue=0.3")
        )
        assert time.monotonic() - started >= 0.3

    def test_queue_applies_to_its_own_tier(self, client: openai.OpenAI) -> None:
        """``flex_queue`` leaves a standard request alone."""
        started = time.monotonic()
        client.chat.completions.create(model="gpt-5", messages=MESSAGES, **controls("flex_queue=5"))
        assert time.monotonic() - started < 2


class TestRefusals:
    def test_flex_refused_n_times_then_served(self, client: openai.OpenAI) -> None:
        """``flex_refuse=2`` refuses two attempts of one request id, then serves the third."""
        headers = {"x-emulator": "flex_refuse=2", "x-client-request-id": "req-a"}
        for _ in range(2):
            with pytest.raises(openai.RateLimitError) as caught:
                client.chat.completions.create(
                    model="gpt-5", messages=MESSAGES, service_tier="flex", extra_headers=headers
                )
            assert caught.value.code == "resource_unavailable"
        completion = client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, service_tier="flex", extra_headers=headers
        )
        assert completion.service_tier == "flex"

    def test_refusals_count_per_request_id(self, client: openai.OpenAI) -> None:
        """Another request id starts its own count."""
        for request_id in ("req-b", "req-c"):
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(
                    model="gpt-5",
                    messages=MESSAGES,
                    service_tier="flex",
                    extra_headers={
                        "x-emulator": "flex_refuse=1",
                        "x-client-request-id": request_id,
                    },
                )

    def test_refuse_always_with_retry_after(self, client: openai.OpenAI) -> None:
        """``flex_refuse=always;retry_after=`` sets retry-after on every refusal."""
        for _ in range(3):
            with pytest.raises(openai.RateLimitError) as caught:
                client.chat.completions.create(
                    model="gpt-5",
                    messages=MESSAGES,
                    service_tier="flex",
                    **controls("flex_refuse=always;retry_after=0.25"),
                )
            assert caught.value.response.headers["retry-after"] == "0.25"
            body = caught.value.body
            assert isinstance(body, dict)
            assert body["type"] == "rate_limit_exceeded"
            assert (body["param"], body["code"]) == (None, "resource_unavailable")

    def test_refuse_status_503(self, client: openai.OpenAI) -> None:
        """``refuse_status=503`` refuses with a 503 the SDK raises as InternalServerError."""
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(
                model="gpt-5",
                messages=MESSAGES,
                service_tier="flex",
                **controls("flex_refuse=1;refuse_status=503"),
            )
        assert caught.value.status_code == 503
        assert caught.value.code == "resource_unavailable"

    def test_standard_requests_are_not_refused(self, client: openai.OpenAI) -> None:
        """Flex refusals never touch the standard tier."""
        completion = client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, **controls("flex_refuse=always")
        )
        assert completion.service_tier == "default"

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (400, openai.BadRequestError),
            (401, openai.AuthenticationError),
            (404, openai.NotFoundError),
            (500, openai.InternalServerError),
        ],
    )
    def test_status_control_raises_the_sdk_error(
        self, client: openai.OpenAI, status: int, error: type[openai.APIStatusError]
    ) -> None:
        """``status=CODE`` answers that error in OpenAI's format."""
        with pytest.raises(error) as caught:
            client.chat.completions.create(
                model="gpt-5", messages=MESSAGES, **controls(f"status={status}")
            )
        assert caught.value.status_code == status
        assert isinstance(caught.value.body, dict)
        assert set(caught.value.body) == {"message", "type", "param", "code"}

    def test_bad_control_header_is_a_400(self, client: openai.OpenAI) -> None:
        """An unknown control key is rejected with a message naming it."""
        with pytest.raises(openai.BadRequestError, match="flex_queu"):
            client.chat.completions.create(
                model="gpt-5", messages=MESSAGES, **controls("flex_queu=1")
            )

    def test_malformed_body_is_a_400(self, emu: RunningEmulator) -> None:
        """A body that is not a JSON object gets OpenAI's invalid_request_error."""
        response = httpx2.post(f"{emu.base_url}/v1/chat/completions", content=b"{not json")
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
